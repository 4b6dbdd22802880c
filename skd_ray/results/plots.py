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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from skd_ray.results.importance import ImportanceUnavailable, param_importances
from skd_ray.results.leaderboard import decode_params, varying_params
from skd_ray.results.search_data import SearchData
from skd_ray.training.early_exit import TradeoffPoint

DPI = 110
MAX_AXES = 10  # parallel-coordinates axes beyond this are unreadable
STATUS_COLORS = {"completed": "tab:blue", "early_stopped": "tab:orange", "interrupted": "tab:gray"}


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


def optimization_history(data: SearchData) -> Figure:
    """Each trial's best validation accuracy in start order, and the best so far."""
    scored = {r.run_id for r in data.scored()}
    numbered = [(i, r) for i, r in enumerate(data.in_start_order(), 1) if r.run_id in scored]
    if not numbered:
        raise PlotSkipped("no trial reported a validation accuracy")
    xs, ordered = [i for i, _ in numbered], [r for _, r in numbered]
    fig = _figure()
    ax = fig.add_subplot()
    for status in sorted({r.status for r in ordered}):
        points = [(x, r.best_val_acc) for x, r in zip(xs, ordered) if r.status == status]
        ax.scatter(*zip(*points), label=status, color=STATUS_COLORS.get(status, "tab:purple"), zorder=3)
    best, running = [], -math.inf
    for r in ordered:
        running = max(running, r.best_val_acc)
        best.append(running)
    ax.step(xs, best, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial (start order)", ylabel="best val_acc", title=f"Optimisation history: {data.run_name}",
           xlim=(0.5, len(data.rows) + 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
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
    ax.set(xlabel="importance (fANOVA, sums to 1)", xlim=(0, 1.15), title="Parameter importances")
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
    axes = [_Axis.of(name, [v.get(name) for v in values]) for name in params]
    axes.append(_Axis.of("val_acc", [r.best_val_acc for r in rows]))
    fig = _figure(max(6.4, 1.25 * len(axes)), 4.6)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"]
    acc = axes[-1]
    for i in sorted(range(len(rows)), key=lambda i: rows[i].best_val_acc):
        ys = [a.position(values[i].get(a.name)) if a is not acc else acc.position(rows[i].best_val_acc)
              for a in axes]
        best = i == 0
        ax.plot(range(len(axes)), ys, color=cmap(acc.position(rows[i].best_val_acc)),
                linewidth=2.6 if best else 1.2, alpha=1.0 if best else 0.75, marker="o", markersize=3)
    for x, a in enumerate(axes):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, label in a.ticks():
            ax.text(x + 0.04, y, label, fontsize=7, va="center")
    ax.set_xticks(range(len(axes)), [a.name for a in axes], rotation=30, ha="right", fontsize=8)
    ax.set(yticks=[], ylim=(-0.05, 1.05), xlim=(-0.2, len(axes) - 0.4),
           title="Parallel coordinates (colour: val_acc, thick: best trial)")
    return fig


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
    def of(cls, name: str, values: list[object]) -> _Axis:
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
            low, high = float(min(present)), float(max(present))  # type: ignore[arg-type]
            log = low > 0 and high / low >= 10
            return cls(name, True, low, high, log)
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
        if self.numeric:
            return [(0.0, f"{self.low:.3g}"), (1.0, f"{self.high:.3g}")] if self.high != self.low \
                else [(0.5, f"{self.low:.3g}")]
        return [(self.position(c), c[:14]) for c in self.categories]


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
    """Validation accuracy per epoch of the best trials."""
    curves = {name: points for name, points in data.curves.items() if points}
    if not curves:
        raise PlotSkipped("no trial logged a per-epoch validation accuracy")
    fig = _figure()
    ax = fig.add_subplot()
    for name, points in curves.items():
        ax.plot(*zip(*points), marker="o", markersize=3, label=name)
    ax.set(xlabel="epoch", ylabel="val_acc", title=f"Learning curves of the {len(curves)} best trials")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
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


def _apart(every: list[TradeoffPoint], candidates: list[TradeoffPoint], gap: float = 0.04) -> list[TradeoffPoint]:
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
    "learning_curves": "Learning curves of the best trials",
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
