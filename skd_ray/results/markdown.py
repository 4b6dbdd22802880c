"""A search as one Markdown page: settings, leaderboard, best configuration, early exit, plots.

Pure text from a `SearchData` and the plots drawn beside the page (referenced by relative
paths), so the report directory is self-contained: it can be zipped, committed or opened in
any Markdown viewer without MLflow.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from skd_ray.results.leaderboard import best_config, leaderboard_table, selectable, varying_params
from skd_ray.results.plots import PLOT_TITLES, PLOTS, PlotSet
from skd_ray.results.search_data import SearchData
from skd_ray.training.metrics import VAL_ACC


def render_report(data: SearchData, plots: PlotSet, report_dir: Path) -> str:
    """The Markdown page; plot links are relative to `report_dir` (where report.md goes)."""
    sections = [_summary(data), _best(data), _leaderboard(data), _early_exit(data), _settings(data),
                _plots(plots, report_dir)]
    return "\n\n".join(s.rstrip() for s in sections) + "\n"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; `|` inside cells is escaped."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def _summary(data: SearchData) -> str:
    counts = Counter(r.status for r in data.rows)
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [f"# Search `{data.run_name}`", "",
             f"- MLflow experiment `{data.experiment}`, parent run `{data.run_id}`, status **{data.status}**",
             f"- {len(data.rows)} trials" + (f": {statuses}" if statuses else "")]
    lines += [f"- `{k}`: {v}" for k, v in data.tags.items()]
    return "\n".join(lines)


def _best(data: SearchData) -> str:
    chosen = selectable(data.rows)  # the rule --export-best and --final-top pick by
    if not chosen:
        return "## Best configuration\n\nNo trial finished with a validation accuracy."
    best = chosen[0]
    config = best_config(chosen)
    searched = [k for k in varying_params(data.rows) if k in config]
    ranked = "" if best.objective.metric == VAL_ACC else f"best {best.objective.metric} **{best.value:.4f}**, "
    parts = ["## Best configuration", "",
             f"Trial `{best.name}` ({best.status}, {best.epochs} epochs): {ranked}best validation accuracy "
             f"**{best.best_val_acc:.4f}** (MLflow run `{best.run_id}`)."]
    if searched:
        parts += ["", table(["searched parameter", "value"], [[k, json.dumps(config[k])] for k in searched])]
    parts += ["", "Full configuration (flat keys, usable with `--set KEY=VALUE`):", "", "```json",
              json.dumps(config, indent=2, sort_keys=True), "```"]
    return "\n".join(parts)


def _leaderboard(data: SearchData) -> str:
    if not data.rows:
        return "## Leaderboard\n\n(no trials recorded)"
    header, *rows = leaderboard_table(data.rows)
    return "## Leaderboard\n\nBest validation accuracy of the deployable network and of every exit.\n\n" + \
        table(header, rows)


def _early_exit(data: SearchData) -> str:
    if data.tradeoff is None:
        return "## Early exit\n\nNo finished trial has early exits (single-exit methods only)."
    t = data.tradeoff.tradeoff
    rows = [[p.label, f"{p.accuracy:.4f}", f"{p.compute:.3f}"] for p in t.exits]
    if t.ensemble is not None:
        rows.append(["ensemble of all exits", f"{t.ensemble.accuracy:.4f}", f"{t.ensemble.compute:.3f}"])
    rows += [[f"dynamic early exit, threshold {p.label}", f"{p.accuracy:.4f}", f"{p.compute:.3f}"]
             for p in t.dynamic]
    return "\n".join([
        "## Early exit", "",
        f"Trial `{data.tradeoff.trial}` at its best epoch ({data.tradeoff.epoch}): validation accuracy of every "
        "exit alone, of their ensemble and of the dynamic policy (leave at the first exit whose confidence "
        "reaches the threshold), with compute relative to the full network (MACs).", "",
        table(["answer", "val_acc", "relative compute"], rows)])


def _settings(data: SearchData) -> str:
    if not data.settings:
        return "## Search settings\n\n(none recorded)"
    return "## Search settings\n\n" + table(["setting", "value"], [[k, v] for k, v in sorted(data.settings.items())])


def _plots(plots: PlotSet, report_dir: Path) -> str:
    parts = ["## Plots"]
    for name in PLOTS:
        if name in plots.files:
            rel = plots.files[name].resolve().relative_to(report_dir.resolve()).as_posix()
            parts += ["", f"### {PLOT_TITLES.get(name, name)}", "", f"![{name}]({rel})"]
    if plots.skipped:
        parts += ["", "Not drawn:", ""]
        parts += [f"- {PLOT_TITLES.get(name, name)}: {reason}" for name, reason in plots.skipped.items()]
    return "\n".join(parts)
