"""Figures of a finished search, drawn from a `SearchData` into PNG files.

Each plot is a function `SearchData -> Figure` that raises `PlotSkipped` with the reason
when the search has nothing to show (one trial, one method, no early exits). Figures are
built with matplotlib's object API and rendered by the Agg canvas: no pyplot, no global
backend state, no display needed, safe inside the search driver. `draw_search_plots` never
raises for one plot: a plot that fails is reported like a skipped one, so a finished
search always gets every plot that can be drawn.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.cm
import matplotlib.colors
import matplotlib.ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from skd_ray.results.importance import ImportanceUnavailable, param_importances
from skd_ray.results.leaderboard import TrialRow, decode_params, varying_params
from skd_ray.results.search_data import SearchData
from skd_ray.results.statuses import Status
from skd_ray.training.early_exit import TradeoffPoint

DPI = 110
MAX_AXES = 10  # parallel-coordinates axes beyond this are unreadable
TRIAL_NAME = re.compile(r"t(\d+)")  # a trial's name: `t` and its Optuna number (`t03`)
STATUS_COLORS = {Status.COMPLETED: "tab:blue", Status.EARLY_STOPPED: "tab:orange", Status.INTERRUPTED: "tab:gray"}


class PlotSkipped(Exception):
    """This search has nothing for the plot to show; the message says why."""


@dataclass
class PlotSet:
    """What `draw_search_plots` produced: file per drawn plot, reason per plot not drawn."""

    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _figure(width: float = 6.4, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def trial_axis(rows: list[TrialRow]) -> tuple[dict[str, int], dict[int, str]]:
    """Where each trial (by run id) stands on a plot's trial axis, and the tick labels: at its
    number with its name as the label (`t03` at 3, as the console, MLflow and Optuna call it)
    when every trial has one; otherwise at its place in `rows` from 1, with no labels."""
    numbers = {r.run_id: int(m.group(1)) for r in rows if (m := TRIAL_NAME.fullmatch(r.name))}
    if len(numbers) == len(rows) and len(set(numbers.values())) == len(rows):
        return numbers, {numbers[r.run_id]: r.name for r in rows}
    return {r.run_id: i for i, r in enumerate(rows, 1)}, {}


def optimization_history(data: SearchData) -> Figure:
    """Each trial's best value of the search's objective (validation accuracy unless the space
    names another metric) by trial number (`t03`, Optuna's), and the best so far."""
    place, names = trial_axis(data.in_start_order())
    scored = {r.run_id for r in data.scored()}
    ordered = sorted((r for r in data.rows if r.run_id in scored), key=lambda r: place[r.run_id])
    if not ordered:
        raise PlotSkipped("no trial reported a validation accuracy")
    xs = [place[r.run_id] for r in ordered]
    fig = _figure()
    ax = fig.add_subplot()
    for status in sorted({r.status for r in ordered}):
        points = [(x, r.value) for x, r in zip(xs, ordered) if r.status == status]
        ax.scatter(*zip(*points), label=status, color=STATUS_COLORS.get(status, "tab:purple"), zorder=3)
    objective = ordered[0].objective
    best: list[float] = []
    running: float | None = None
    for r in ordered:
        running = objective.better_of(r.value, running)
        best.append(running)
    ax.step(xs, best, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial" if names else "trial (start order)", ylabel=f"best {objective.metric}",
           title=f"Optimisation history: {data.run_name}",
           xlim=(min(place.values()) - 0.5, max(place.values()) + 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if names:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: names.get(round(x), "")))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the axes: covers no point
    return fig


def importances(data: SearchData) -> Figure:
    """fANOVA importance of each searched parameter for the best validation accuracy."""
    try:
        found = param_importances(data.rows)
    except ImportanceUnavailable as err:
        raise PlotSkipped(str(err)) from None
    fig = _figure(6.4, 1.2 + 0.4 * len(found))
    ax = fig.add_subplot()
    names = list(found)[::-1]
    ax.barh(names, [found[n] for n in names], color="tab:blue")
    for y, name in enumerate(names):
        ax.text(found[name], y, f" {found[name]:.2f}", va="center")
    n = sum(r.is_scored for r in data.rows)
    ax.set(xlabel="importance (fANOVA, sums to 1)", xlim=(0, 1.15), title=f"Parameter importances (n = {n} trials)")
    return fig


def parallel_coordinates(data: SearchData) -> Figure:
    """One line per trial through every searched parameter to its validation accuracy.

    Numbers are scaled to their observed range (log scale when they span a factor of 10 or
    more and are positive); other values are evenly spaced categories. A parameter a trial
    does not have (conditional on another choice) leaves a gap in its line.
    """
    rows = data.scored()
    if len(rows) < 2:
        raise PlotSkipped(f"needs at least 2 finished trials, the search has {len(rows)}")
    params = sorted(varying_params(rows), key=lambda k: (-sum(k in r.params for r in rows), k))[:MAX_AXES]
    if not params:
        raise PlotSkipped("no searched parameter varies between the finished trials")
    values = [decode_params(r.params) for r in rows]
    axes = [_Axis.of(name, [v.get(name) for v in values], data.log_scale(name)) for name in params]
    axes.append(_Axis.of("val_acc", [r.best_val_acc for r in rows]))
    fig = _figure(max(6.4, 1.25 * len(axes)), 4.6)
    ax = fig.add_subplot()
    # Reversed viridis: the best trials are dark (they stand out on white), the worst pale.
    cmap = matplotlib.colormaps["viridis_r"]
    acc = axes[-1]
    # Every trial but the best as one collection of lines and one of points, worst first (the
    # better drawn over the worse): one artist each instead of one per trial, for large searches.
    lines, line_colors, points, point_colors = [], [], [], []
    for i in sorted(range(1, len(rows)), key=lambda i: rows[i].best_val_acc):
        color = cmap(acc.position(rows[i].best_val_acc))
        for piece in _unbroken(_trial_line(axes, acc, values[i], rows[i])):
            lines.append(piece)
            line_colors.append(color)
            points += piece
            point_colors += [color] * len(piece)
    ax.add_collection(LineCollection(lines, colors=line_colors, linewidths=1.2, alpha=0.75, zorder=2))
    if points:
        ax.scatter(*zip(*points), c=point_colors, s=9, alpha=0.75, zorder=2)
    ax.plot(range(len(axes)), [y for _, y in _trial_line(axes, acc, values[0], rows[0])],
            color=cmap(acc.position(rows[0].best_val_acc)), linewidth=3.0, marker="o", markersize=3, zorder=3)
    norm = matplotlib.colors.Normalize(acc.low, acc.high if acc.high > acc.low else acc.low + 1e-9)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="best val_acc", pad=0.01)
    for x, a in enumerate(axes):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, label in a.ticks():
            ax.text(x + 0.04, y, label, fontsize=7, va="center")
    ax.set_xticks(range(len(axes)), [a.name for a in axes], rotation=30, ha="right", fontsize=8)
    ax.set(yticks=[], ylim=(-0.05, 1.05), xlim=(-0.2, len(axes) - 0.4),
           title="Parallel coordinates (colour: best val_acc, thick: best trial)")
    return fig


def _trial_line(axes: list[_Axis], acc: _Axis, values: dict[str, object], row: TrialRow) -> list[tuple[int, float]]:
    """A trial's point on every axis of the parallel-coordinates plot (NaN where it has no value)."""
    return [(x, a.position(values.get(a.name)) if a is not acc else acc.position(row.best_val_acc))
            for x, a in enumerate(axes)]


def _unbroken(line: list[tuple[int, float]]) -> list[list[tuple[int, float]]]:
    """The runs of a line between its missing points (NaN), as separate pieces."""
    pieces: list[list[tuple[int, float]]] = [[]]
    for point in line:
        if point[1] == point[1]:
            pieces[-1].append(point)
        elif pieces[-1]:
            pieces.append([])
    return [p for p in pieces if p]


@dataclass
class _Axis:
    """Maps one parameter's values to [0, 1] for the parallel-coordinates plot."""

    name: str
    numeric: bool
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    categories: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, values: list[object], log: bool | None = None) -> _Axis:
        """`log`: the space's `log: true` for this parameter; None (a search that did not
        record it) falls back to the observed range spanning a factor of 10."""
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
            low, high = float(min(present)), float(max(present))  # type: ignore[arg-type]
            scaled = (high / low >= 10) if log is None else log
            return cls(name, True, low, high, bool(scaled and low > 0))
        return cls(name, False, categories=sorted({str(v) for v in present}))

    def position(self, value: object) -> float:
        if value is None:
            return math.nan
        if not self.numeric:
            n = len(self.categories)
            return 0.5 if n == 1 else self.categories.index(str(value)) / (n - 1)
        low, high, v = self.low, self.high, float(value)  # type: ignore[arg-type]
        if self.log:
            low, high, v = math.log10(low), math.log10(high), math.log10(v)
        return 0.5 if high == low else (v - low) / (high - low)

    def ticks(self) -> list[tuple[float, str]]:
        """3-5 labelled values on a numeric axis (round values inside the range, plus its ends
        when too few fall inside), every category on a categorical one."""
        if not self.numeric:
            return [(self.position(c), c[:14]) for c in self.categories]
        if self.high == self.low:
            return [(0.5, f"{self.low:.3g}")]
        if self.log:
            locator = matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0))
        else:
            locator = matplotlib.ticker.MaxNLocator(nbins=4)
        inside = [v for v in locator.tick_values(self.low, self.high) if self.low <= v <= self.high]
        if len(inside) > 5:
            inside = inside[::2]
        values = inside if len(inside) >= 3 else sorted({self.low, *inside, self.high})
        return [(self.position(v), f"{v:.3g}") for v in values]


def method_comparison(data: SearchData) -> Figure:
    """Best validation accuracy reached by each method of a cross-method search."""
    best: dict[str, tuple[float, int]] = {}
    for r in data.scored():
        method = str(decode_params(r.params).get("method", "?"))
        acc, count = best.get(method, (-math.inf, 0))
        best[method] = (max(acc, r.best_val_acc), count + 1)
    if len(best) < 2:
        only = f" ({next(iter(best))})" if best else ""
        raise PlotSkipped(f"needs finished trials of at least 2 methods, the search has {len(best)}{only}")
    names = sorted(best, key=lambda m: -best[m][0])
    fig = _figure(max(6.4, 0.9 * len(names)), 4.2)
    ax = fig.add_subplot()
    accs = [best[m][0] for m in names]
    ax.bar(names, accs, color="tab:blue")
    for x, m in enumerate(names):
        ax.text(x, best[m][0], f"{best[m][0]:.3f}\nn={best[m][1]}", ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="best val_acc", ylim=(max(0.0, min(accs) - 0.1), min(1.0, max(accs) + 0.08) + 0.04),
           title="Best validation accuracy per method (n: finished trials)")
    return fig


def learning_curves(data: SearchData) -> Figure:
    """Validation accuracy per epoch of every trial: the best one thick and labelled, the
    others thin and grey, an x where ASHA stopped a trial."""
    curves = {name: points for name, points in data.curves.items() if points}
    if not curves:
        raise PlotSkipped("no trial logged a per-epoch validation accuracy")
    status = {r.name: r.status for r in data.rows}
    best = next((r.name for r in data.scored() if r.name in curves), next(iter(curves)))
    fig = _figure(7.4, 4.4)
    ax = fig.add_subplot()
    others = {name: points for name, points in curves.items() if name != best}
    # One collection for every other trial's line: one artist instead of one per trial.
    ax.add_collection(LineCollection(list(others.values()), colors="0.6", linewidths=1.0, alpha=0.8))
    stopped = [points[-1] for name, points in others.items() if status.get(name) == Status.EARLY_STOPPED]
    if stopped:
        ax.plot(*zip(*stopped), "x", linestyle="none", color="tab:orange", markersize=7, label="stopped by ASHA")
    ends: dict[tuple[int, float], list[str]] = {}  # trials ending at the same point share one label
    for name, points in others.items():
        ends.setdefault((points[-1][0], round(points[-1][1], 3)), []).append(name)
    for (epoch, value), names in ends.items():
        ax.annotate(" ".join(sorted(names)), (epoch, value), textcoords="offset points", xytext=(4, 0), fontsize=7,
                    color="0.35", va="center")
    ax.plot(*zip(*curves[best]), color="tab:blue", linewidth=2.6, marker="o", markersize=3,
            label=f"best: {best}", zorder=3)
    ax.autoscale_view()  # the collection's lines too
    ax.set(xlabel="epoch", ylabel="val_acc", title=f"Learning curves of all {len(curves)} trials")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def early_exit_tradeoff(data: SearchData) -> Figure:
    """Accuracy versus relative compute: every exit alone, their ensemble, and the dynamic
    early-exit policy at each confidence threshold (the best multi-exit trial, best epoch)."""
    if data.tradeoff is None:
        raise PlotSkipped("no finished trial has early exits (single-exit methods only)")
    t = data.tradeoff.tradeoff
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([p.compute for p in t.exits], [p.accuracy for p in t.exits], "o--", color="tab:blue",
            label="single exit")
    for p in t.exits:
        ax.annotate(p.label, (p.compute, p.accuracy), textcoords="offset points", xytext=(4, -10), fontsize=8)
    if t.ensemble is not None:
        ax.plot([t.ensemble.compute], [t.ensemble.accuracy], "s", color="tab:green", label="ensemble")
    if t.dynamic:
        ax.plot([p.compute for p in t.dynamic], [p.accuracy for p in t.dynamic], "^-", color="tab:red",
                label="dynamic early exit")
        for p in _apart([*t.exits, *([t.ensemble] if t.ensemble else []), *t.dynamic], t.dynamic):
            ax.annotate(p.label, (p.compute, p.accuracy), textcoords="offset points", xytext=(3, 4), fontsize=7,
                        color="tab:red")
    ax.set(xlabel="compute relative to the full network", ylabel="val_acc",
           title=f"Early exit: {data.tradeoff.trial} (epoch {data.tradeoff.epoch}); red labels: thresholds")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _apart(every: list[TradeoffPoint], candidates: list[TradeoffPoint], gap: float = 0.09) -> list[TradeoffPoint]:
    """The candidates whose labels do not overlap an earlier one: each is at least `gap` (as a
    fraction of the plotted ranges) from every point labelled before it. Thresholds whose
    points coincide (a model confident everywhere) would otherwise print over each other."""
    xs, ys = [p.compute for p in every], [p.accuracy for p in every]
    sx, sy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    chosen: list[TradeoffPoint] = []
    for p in candidates:
        if all(math.hypot((p.compute - q.compute) / sx, (p.accuracy - q.accuracy) / sy) >= gap for q in chosen):
            chosen.append(p)
    return chosen


PLOT_TITLES = {
    "optimization_history": "Optimisation history",
    "param_importances": "Parameter importances",
    "parallel_coordinates": "Parallel coordinates",
    "method_comparison": "Best accuracy per method",
    "learning_curves": "Learning curves of every trial",
    "early_exit_tradeoff": "Early exit: accuracy versus compute",
}
PLOTS: dict[str, Callable[[SearchData], Figure]] = {
    "optimization_history": optimization_history,
    "param_importances": importances,
    "parallel_coordinates": parallel_coordinates,
    "method_comparison": method_comparison,
    "learning_curves": learning_curves,
    "early_exit_tradeoff": early_exit_tradeoff,
}


def draw_search_plots(data: SearchData, out_dir: Path) -> PlotSet:
    """Write `<name>.png` for every plot of `PLOTS` into `out_dir`; plots with nothing to show
    or that fail to draw are listed in `skipped` with the reason instead."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PlotSet()
    for name, draw in PLOTS.items():
        try:
            fig = draw(data)
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=DPI)
            result.files[name] = path
        except PlotSkipped as reason:
            result.skipped[name] = str(reason)
        except Exception as err:  # a drawing bug must not cost the other plots (or the search)
            result.skipped[name] = f"failed to draw: {type(err).__name__}: {err}"
    return result
