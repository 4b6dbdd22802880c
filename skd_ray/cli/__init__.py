"""The command line (`run_search.py`, `python -m skd_ray`, `skd-ray`).

Owns: parsing (`main`), the commands that train (`search`), the commands that act on a
finished search (`after`) and what they share (`common`: exit codes, leaderboard printout).
May import every layer below. Modules that load Ray are imported inside the commands that
use them, so `--debug` runs without Ray.
"""

from skd_ray.cli.main import main

__all__ = ["main"]
