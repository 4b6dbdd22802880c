"""--export-best's library side: the best trial's checkpoint, logged to MLflow exactly as a
trial logs it, exported and run by a fresh Python that never imports skd_ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from skd_ray.data import build_loader
from skd_ray.errors import SkdError
from skd_ray.results.store import MlflowStore
from skd_ray.results.tracking import SearchRuns, TrialTracker
from skd_ray.selection.export import ExportRequest, export_best, load_best_method
from skd_ray.training.engine import evaluate_split, fit
from skd_ray.training.resolve import resolve_config
from skd_ray.training.session import LocalSession
from tests.helpers.plain_torch import run_plain_torch

EXPERIMENT = "export-test"
FLAT = {"method": "byot", "data.name": "digits", "data.val_fraction": 0.2, "train.device": "cpu",
        "model.width": 4, "train.epochs": 2, "method.exits": [1, 3], "eval.thresholds": [0.9]}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A search with one byot trial trained 2 epochs on digits in this process, its best
    checkpoint logged by TrialTracker like every Ray trial's."""
    root = tmp_path_factory.mktemp("export")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = resolve_config(FLAT)
    runs = SearchRuns.start(MlflowStore(uri), EXPERIMENT, "export-test_20250101-000000", {}, {})
    run_id = runs.start_trial("trial-0", "trial-0", cfg.to_flat(),
                              {"skd.trial_name": "trial-0", "skd.method": "byot"})
    final = fit(cfg, LocalSession("cpu", TrialTracker(MlflowStore(uri), run_id), echo=False))
    runs.close(run_id, "completed")
    runs.close(None, "completed")
    return {"root": root, "uri": uri, "run_id": run_id, "cfg": cfg, "final": final}


def test_deployable_model_runs_in_plain_torch_like_predict(tracked: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "best"
    outcome = export_best(ExportRequest(tracked["uri"], EXPERIMENT, str(out)))
    assert {p.name for p in out.iterdir()} == {"model.pt2", "state_dict.pt", "config.json", "metadata.json",
                                               "README.md"}
    meta = json.loads((out / "metadata.json").read_text())
    assert meta == outcome.metadata
    assert meta["input_shape"] == [1, 8, 8] and meta["num_classes"] == 10 and meta["outputs"] == ["final"]
    assert meta["source"]["run_id"] == tracked["run_id"] and meta["source"]["trial"] == "trial-0"
    assert meta["source"]["best_val_acc"] == pytest.approx(tracked["final"]["best_val_acc"])
    assert json.loads((out / "config.json").read_text())["method.exits"] == [1, 3]
    # Exits and hint projections are stripped: the weights are the backbone's only.
    weights = torch.load(out / "state_dict.pt")
    assert weights and not [k for k in weights if "heads" in k or "hint" in k]

    method, data, _ = load_best_method(MlflowStore(tracked["uri"]), tracked["run_id"], tracked["cfg"].to_flat())
    batches = list(build_loader(data, "test", tracked["cfg"]))
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        expected = method.predict(x)["final"]
    got = run_plain_torch(out / "model.pt2", x, tmp_path)
    assert torch.allclose(got, expected, atol=1e-5)
    exported_acc = (got.argmax(1) == y).sum().item() / len(y)
    assert exported_acc == pytest.approx(evaluate_split(tracked["cfg"], method, "test")["test_acc"], abs=1e-12)
    assert (out / "model.pt2").stat().st_size < 2 * (out / "state_dict.pt").stat().st_size + 200_000


def test_keep_exits_exports_every_exit(tracked: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "all"
    outcome = export_best(ExportRequest(tracked["uri"], EXPERIMENT, str(out), keep_exits=True))
    assert outcome.metadata["outputs"] == ["exit1", "exit3", "final"]
    method, data, _ = load_best_method(MlflowStore(tracked["uri"]), tracked["run_id"], tracked["cfg"].to_flat())
    x = next(iter(build_loader(data, "test", tracked["cfg"])))[0][:33]
    with torch.no_grad():
        expected = method.predict(x)
    got = run_plain_torch(out / "model.pt2", x, tmp_path)
    assert list(got) == list(expected)
    assert all(torch.allclose(got[k], expected[k], atol=1e-5) for k in expected)


def test_unknown_search_name_is_one_clear_error(tracked: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(SkdError, match="no search named 'nope'") as err:
        export_best(ExportRequest(tracked["uri"], EXPERIMENT, str(tmp_path / "x"), search="nope"))
    assert "export-test_20250101-000000" in err.value.fix
