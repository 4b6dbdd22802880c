"""Export the best model of a search as files that need only PyTorch to run.

The weights are the best checkpoint logged to the best trial's MLflow run
(`best_checkpoint.pt`, see `tracking.TrialTracker.log_best_state`). By default only the
deployable network is kept (backbone + final classifier: what `predict` calls `final`);
exit heads, auxiliary heads, students and method state are training-time parts. The
program is saved with `torch.export` (TorchScript is deprecated in current PyTorch); it
loads with `torch.export.load(path).module()` in a process that never imports skd_ray.

Files written to the export directory:
    model.pt2         the exported program (dynamic batch size)
    state_dict.pt     the exported module's weights, for `load_state_dict` into skd_ray's model
    config.json       the trial's flat training config
    metadata.json     source run, validation accuracy, input shape, normalisation, classes, outputs
    README.md         how to load and feed the model
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skd_ray.data import build_loader
from skd_ray.errors import SkdError, check_output_folder
from skd_ray.results.leaderboard import decode_params, find_search_run, search_run_id, trial_rows
from skd_ray.results.names import Artifacts
from skd_ray.results.store import MlflowStore, StoreOfRequest
from skd_ray.selection.final_summary import select_top_configs
from skd_ray.training.checkpoint import load_state
from skd_ray.training.resolve import build_run, resolve_config

MODEL_FILE = "model.pt2"
EXPORT_FILES = (MODEL_FILE, "state_dict.pt", "config.json", "metadata.json", "README.md")


class AllExits(nn.Module):
    """Inference module returning every exit's logits (`predict`), for --export-keep-exits."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.method.predict(x)


@dataclass
class ExportRequest(StoreOfRequest):
    tracking_uri: str
    experiment: str
    directory: str
    search: str | None = None  # run name or id of the search; None: the latest
    keep_exits: bool = False



@dataclass
class ExportOutcome:
    directory: Path
    metadata: dict[str, Any]


def load_best_method(store: MlflowStore, run_id: str, flat: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(method with the run's best weights in eval mode, data bundle, checkpoint state)."""
    cfg = resolve_config(flat)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = store.client.download_artifacts(run_id, Artifacts.BEST_CHECKPOINT, tmp)
        except Exception as err:  # mlflow raises its own exception types for missing artifacts
            raise SkdError(f"run {run_id} has no {Artifacts.BEST_CHECKPOINT} artifact ({str(err).splitlines()[0]})",
                           "export a search whose trials finished at least one epoch") from None
        state = load_state(Path(path))
    data, method = build_run(cfg)
    method.load_state_dict(state["model"])
    return method.eval(), data, state


def example_input(data: Any, cfg: Any) -> torch.Tensor:
    """A few normalised test images, as the evaluation loader feeds them to the model."""
    x, _, _ = next(iter(build_loader(data, "test", cfg)))
    return x[:4].float()


def export_program(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Save `module` with torch.export; the batch dimension stays dynamic."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def export_best(req: ExportRequest) -> ExportOutcome:
    """Write the best trial's deployable model of the (latest or named) search to `req.directory`.
    The directory is checked first: an existing file there would otherwise be found only once
    the search is read and its model rebuilt."""
    check_output_folder(req.directory, "export directory", "--export-best", EXPORT_FILES)
    exp_id, search = find_search_run(req.store, req.experiment,
                                     search_run_id(req.store, req.experiment, req.search))
    best = select_top_configs(trial_rows(req.store, exp_id, search.info.run_id), 1)[0]
    flat = decode_params(best.params)
    method, data, state = load_best_method(req.store, best.run_id, flat)
    cfg = resolve_config(flat)
    module = AllExits(method) if req.keep_exits else method.deployable()
    example = example_input(data, cfg)
    with torch.no_grad():
        outputs = list(method.predict(example)) if req.keep_exits else ["final"]
    out = Path(req.directory)
    out.mkdir(parents=True, exist_ok=True)
    export_program(module, example, out / MODEL_FILE)
    torch.save(module.state_dict(), out / "state_dict.pt")
    (out / "config.json").write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    metadata = {
        "format": "torch.export ExportedProgram: torch.export.load('model.pt2').module()(x)",
        "outputs": outputs,
        "output_kind": "dict of logits by exit name" if req.keep_exits else "logits tensor (batch, num_classes)",
        "num_classes": data.num_classes,
        "input_shape": [int(d) for d in example.shape[1:]],
        "input_dtype": "float32",
        "normalisation": {"scale": "pixel values in [0, 1] (uint8 / 255)", "mean": data.mean.tolist(),
                          "std": data.std.tolist(), "formula": "x = (pixels - mean) / std, per channel"},
        "source": {"experiment": req.experiment, "search": search.info.run_name,
                   "search_run_id": search.info.run_id, "trial": best.name, "run_id": best.run_id,
                   "best_val_acc": best.best_val_acc, "objective": best.objective.describe(),
                   "objective_value": best.value,
                   "checkpoint_epoch": int(state.get("epoch", 0)),
                   "method": flat.get("method"), "backbone": flat.get("model.backbone"),
                   "dataset": flat.get("data.name")},
        "torch_version": torch.__version__,
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme_text(metadata), encoding="utf-8")
    return ExportOutcome(out, metadata)


def readme_text(meta: dict[str, Any]) -> str:
    """A short model card: where the model comes from and how to run it with plain PyTorch."""
    src, norm = meta["source"], meta["normalisation"]
    shape = ", ".join(str(d) for d in meta["input_shape"])
    return f"""# {src['method']} / {src['backbone']} on {src['dataset']}

Best trial `{src['trial']}` (MLflow run `{src['run_id']}`) of search `{src['search']}`
(experiment `{src['experiment']}`): best validation accuracy {src['best_val_acc']:.4f}, weights of
epoch {src['checkpoint_epoch']}. Outputs: {', '.join(meta['outputs'])} ({meta['output_kind']}),
{meta['num_classes']} classes.

```python
import torch

model = torch.export.load("model.pt2").module()
mean = torch.tensor({norm['mean']}).view(1, -1, 1, 1)
std = torch.tensor({norm['std']}).view(1, -1, 1, 1)
x = (pixels - mean) / std          # pixels: float tensor (batch, {shape}) with values in [0, 1]
logits = model(x)
```

`state_dict.pt` holds the same weights; `config.json` the training config; `metadata.json`
all of the above as data. Exported with torch {meta['torch_version']}.
"""
