"""What a finished search leaves behind besides its runs: plots on its MLflow parent run, and
on request a self-contained Markdown report directory (`--results --report DIR`).

Both read the search back from MLflow (`search_data`), so they show exactly what the
leaderboard shows and work for any search in the store, old or new. Drawing never fails a
search: a plot error becomes a warning.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from skd_ray.errors import ensure_writable_directory
from skd_ray.results.leaderboard import TrialRow
from skd_ray.results.markdown import render_report
from skd_ray.results.names import Artifacts
from skd_ray.results.plots import PLOT_TITLES, PlotSet, draw_search_plots
from skd_ray.results.search_data import load_search_data
from skd_ray.results.store import MlflowStore

REPORT_FILE = "report.md"


def log_search_plots(store: MlflowStore, experiment: str, parent_run_id: str) -> PlotSet | None:
    """Draw the search's plots and log them as artifacts of its parent run (under `plots/`,
    with `skipped.txt` saying why any plot is missing). Prints one line of outcome and returns
    what was logged (files as artifact paths of the parent run).

    Never raises: the search's results are already safe in MLflow, and a plotting problem
    (a broken font cache, an unreachable store) must not turn a finished search into a
    failed one. Any error is printed as one warning line and None is returned.
    """
    try:
        data = load_search_data(store, experiment, parent_run_id)
        with tempfile.TemporaryDirectory(prefix="skd_plots_") as tmp:
            plots = draw_search_plots(data, Path(tmp))
            if plots.skipped:
                (Path(tmp) / "skipped.txt").write_text(skipped_text(plots))
            store.client.log_artifacts(parent_run_id, tmp, Artifacts.PLOTS_DIR)
    except Exception as err:
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        print(f"warning: no plots for this search ({type(err).__name__}: {first_line}); "
              "its results are complete in MLflow")
        return None
    plots.files = {name: Path(Artifacts.PLOTS_DIR) / path.name for name, path in plots.files.items()}
    note = f" (not drawn: {'; '.join(f'{n}: {r}' for n, r in plots.skipped.items())})" if plots.skipped else ""
    print(f"plots: {len(plots.files)} logged to the search's MLflow run under {Artifacts.PLOTS_DIR}/{note}")
    return plots


def skipped_text(plots: PlotSet) -> str:
    """One line per plot not drawn, with the reason."""
    return "".join(f"{PLOT_TITLES.get(name, name)} ({name}): {reason}\n" for name, reason in plots.skipped.items())


def write_report(store: MlflowStore, experiment: str, report_dir: str | Path, parent_run_id: str | None = None,
                 rows: list[TrialRow] | None = None) -> Path:
    """Write `report.md` and its PNG plots into `report_dir` for the given (or latest) search
    of `experiment` (`rows`: its leaderboard rows, when the caller read them already); returns
    the path of report.md."""
    out = ensure_writable_directory(report_dir, "report directory", "--report", (REPORT_FILE,))
    data = load_search_data(store, experiment, parent_run_id, rows=rows)
    plots = draw_search_plots(data, out)
    path = out / REPORT_FILE
    path.write_text(render_report(data, plots, out), encoding="utf-8")
    return path
