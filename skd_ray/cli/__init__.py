"""The command line (`skd-ray COMMAND`, `run_search.py`, `python -m skd_ray`).

Owns: the options, defined once (`options`); the two spellings built from them, one
subcommand per job and the combined form of `run_search.py` (`commands`); dispatch (`main`);
the checks of flags and inputs before Ray starts (`flags`, `preflight`), the commands that
train (`search`, `compare`), the commands that act on a finished search (`after`), how any
failure ends (`failure`: one error line, the traceback in a log file) and what they share
(`common`: exit codes, leaderboard printout).
May import every layer below. Modules that load Ray are imported inside the commands that
use them, so `skd-ray debug` runs without Ray.
"""

from skd_ray.cli.main import main, tool_main

__all__ = ["main", "tool_main"]
