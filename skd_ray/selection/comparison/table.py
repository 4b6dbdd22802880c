"""A finished comparison as numbers and as what people read: the printed table, Markdown,
CSV and the accuracy-against-cost plot. Everything is computed from the per-method results a
comparison records (`comparison.json` on its MLflow run), so the report of an old comparison
shows exactly what its run printed."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skd_ray.results.leaderboard import format_table
from skd_ray.results.markdown import table as markdown_table
from skd_ray.selection.comparison.stats import CONFIDENCE, Interval, PairedTest, paired_test, t_interval
from skd_ray.selection.final_summary import param_cell


@dataclass
class MethodRow:
    """One method's line of the comparison."""

    method: str
    result: dict[str, Any]  # what the comparison recorded for the method (see compare.method_result)
    test: Interval
    vs_reference: PairedTest | None  # None for the reference itself
    time_ratio: float  # training seconds per epoch relative to the reference
    macs_ratio: float  # inference MACs of the deployable network relative to the reference

    @property
    def accuracies(self) -> dict[int, float]:
        return {int(s): float(a) for s, a in self.result.get("test_acc", {}).items()}


def comparison_rows(results: list[dict[str, Any]]) -> list[MethodRow]:
    """Rows in the comparison's order; the first result is the reference (vanilla)."""
    if not results:
        return []
    ref = results[0]
    ref_acc = {int(s): float(a) for s, a in ref.get("test_acc", {}).items()}
    rows = []
    for i, res in enumerate(results):
        acc = {int(s): float(a) for s, a in res.get("test_acc", {}).items()}
        rows.append(MethodRow(res["method"], res, t_interval(list(acc.values())),
                              None if i == 0 else paired_test(acc, ref_acc),
                              ratio(res.get("time_epoch_s"), ref.get("time_epoch_s")),
                              ratio(res.get("macs"), ref.get("macs"))))
    return rows


def ratio(value: Any, reference: Any) -> float:
    try:
        return float(value) / float(reference)
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan


HEADER = ["method", "best trial", "search val_acc", "seeds", "test acc (mean ± std)", f"{CONFIDENCE:.0%} CI",
          "Δ vs vanilla [95% CI]", "p (paired t)", "s/epoch (× vanilla)", "MACs (× vanilla)", "best values"]


def table_cells(rows: list[MethodRow]) -> list[list[str]]:
    """Header and one row of cells per method, shared by text, Markdown and CSV."""
    out = [HEADER]
    for r in rows:
        res = r.result
        d = r.vs_reference
        diff = "(reference)" if d is None else f"{signed(d.diff.mean)} [{signed(d.diff.low)}, {signed(d.diff.high)}]"
        p_text = "" if r.vs_reference is None else num(r.vs_reference.p, ".3g")
        values = " ".join(f"{k.removeprefix('method.')}={param_cell(str(v))}" for k, v in res.get("params", {}).items())
        out.append([r.method, str(res.get("best_trial", "-")), num(res.get("search_val_acc"), ".4f"),
                    f"{r.test.n}/{len(res.get('seeds', []) or res.get('test_acc', {}))}",
                    "-" if math.isnan(r.test.mean) else f"{r.test.mean:.4f} ± {num(r.test.std, '.4f')}",
                    f"[{num(r.test.low, '.4f')}, {num(r.test.high, '.4f')}]", diff, p_text,
                    f"{num(res.get('time_epoch_s'), '.2f')} ({num(r.time_ratio, '.2f')}×)",
                    f"{num(res.get('macs'), '.3g')} ({num(r.macs_ratio, '.2f')}×)", values])
    return out


def num(value: Any, spec: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(v) else format(v, spec)


def signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.4f}"


def format_text(rows: list[MethodRow]) -> str:
    return format_table(table_cells(rows))


def format_markdown(rows: list[MethodRow]) -> str:
    cells = table_cells(rows)
    return markdown_table(cells[0], cells[1:])


# The columns of the run's description: MLflow's description pane is narrow, the artifacts hold the rest.
BRIEF = ("method", "test acc (mean ± std)", "Δ vs vanilla [95% CI]", "p (paired t)", "s/epoch (× vanilla)")


def format_markdown_brief(rows: list[MethodRow]) -> str:
    cells = table_cells(rows)
    keep = [HEADER.index(c) for c in BRIEF]
    return markdown_table([cells[0][i] for i in keep], [[r[i] for i in keep] for r in cells[1:]])


def format_csv(rows: list[MethodRow]) -> str:
    """Machine-readable numbers (no ± strings): one line per method."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "best_trial", "search_val_acc", "seeds_finished", "test_acc_mean", "test_acc_std",
                "ci95_low", "ci95_high", "diff_vs_vanilla", "diff_ci95_low", "diff_ci95_high", "paired_t", "p_value",
                "time_epoch_s", "time_ratio", "macs", "macs_ratio", "test_acc_per_seed", "best_values"])
    for r in rows:
        d = r.vs_reference
        w.writerow([r.method, r.result.get("best_trial", ""), r.result.get("search_val_acc", ""), r.test.n,
                    r.test.mean, r.test.std, r.test.low, r.test.high,
                    "" if d is None else d.diff.mean, "" if d is None else d.diff.low, "" if d is None else d.diff.high,
                    "" if d is None else d.t, "" if d is None else d.p,
                    r.result.get("time_epoch_s", ""), r.time_ratio, r.result.get("macs", ""), r.macs_ratio,
                    " ".join(f"{s}:{a:.6f}" for s, a in sorted(r.accuracies.items())),
                    " ".join(f"{k}={v}" for k, v in r.result.get("params", {}).items())])
    return buf.getvalue()


def draw_plot(rows: list[MethodRow], path: Path) -> Path | None:
    """Test accuracy (mean, 95% CI as error bars) against training seconds per epoch; None
    when no method has both numbers."""
    points = [r for r in rows if not math.isnan(r.test.mean) and isinstance(r.result.get("time_epoch_s"), int | float)]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in points:
        err = 0.0 if math.isnan(r.test.half_width) else r.test.half_width
        ax.errorbar(r.result["time_epoch_s"], r.test.mean, yerr=err, fmt="o", capsize=4,
                    color="black" if r.vs_reference is None else None)
        ax.annotate(r.method, (r.result["time_epoch_s"], r.test.mean), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("training time per epoch (s, mean over the final retrainings)")
    ax.set_ylabel(f"test accuracy (mean, {CONFIDENCE:.0%} CI)")
    ax.set_title("self-KD methods: test accuracy against training cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
