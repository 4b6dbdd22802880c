#!/usr/bin/env bash
# The project's checks: lint, then the whole test suite (end-to-end Ray/Optuna/MLflow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/python -m pytest -q --durations=40 "$@"
