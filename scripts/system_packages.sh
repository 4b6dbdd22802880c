#!/usr/bin/env bash
# Debian packages the tests need, installed only when missing (a machine that has them spends
# no time here): PostgreSQL 15's server binaries, which tests/helpers/postgres.py runs from
# /usr/lib/postgresql/15/bin in a temporary folder of its own. Debian 12; root or sudo.
set -euo pipefail
PACKAGES=(postgresql-15)

installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'; }

missing=()
for package in "${PACKAGES[@]}"; do
    installed "$package" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
# The tests start their own server; no system-wide cluster on port 5432 is made or started.
"${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/skd-ray.conf >/dev/null
echo "installing ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
