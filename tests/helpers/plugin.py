"""The example plugin package installed as a user would (`pip install`), into a folder of its
own put on PYTHONPATH, so tests never change the project's environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "examples" / "skd_ray_example_plugin"


def install_plugin(root: Path) -> Path:
    """`pip install` of the example plugin from a copy of its source (so no build files land in
    the checkout), offline, into `root/site`; returns that folder."""
    source, site = root / "source", root / "site"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, timeout=300,
                   capture_output=True)
    return site


def with_plugin(env: dict[str, str], site: Path) -> dict[str, str]:
    """`env` with the plugin's folder first on PYTHONPATH (Ray's processes inherit it)."""
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)}
