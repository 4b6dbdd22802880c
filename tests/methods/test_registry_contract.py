"""What every registered method must do, parametrised over the registry: a method added to
skd_ray.methods.METHODS is covered here by being registered (add an invalid value below)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from skd_ray.errors import ConfigError
from skd_ray.methods import FINAL, METHODS, MethodContext, build_method
from skd_ray.models import StagedResNet
from skd_ray.training.checkpoint import CHECKPOINT_FILE
from skd_ray.training.engine import fit
from skd_ray.training.resolve import resolve_config
from skd_ray.training.session import LocalSession
from tests.helpers.handcalc import batch
from tests.helpers.interrupting_session import Interrupted, StopAfter

NUM_CLASSES = 5
N = 16

# One impossible parameter value per method (validate_params and resolve_config must reject it).
INVALID: dict[str, dict[str, Any]] = {
    "vanilla": {"label_smoothing": 1.0},
    "byot": {"exits": [4]},
    "srdl": {"snapshot_at": 1.0},
    "tfd": {"pairs": "random"},
    "lightskd": {"aux_stage": 4},
    "teskd": {"num_students": 4},
    "pskd": {"alpha_T": 1.5},
    "tfkd_reg": {"correct_prob": 0.0},
}

NAMES = sorted(METHODS)


def build(name: str, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    backbone = StagedResNet([1, 1, 1, 1], 4, 1, NUM_CLASSES)
    return build_method(name, backbone, METHODS[name].default_params(), MethodContext(num_train_samples=N))


def train_steps(m: Any, epochs: int = 3, steps: int = 2) -> list[Any]:
    """A few epochs of two steps each over disjoint index ranges, as the engine drives them."""
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    outs = []
    for epoch in range(epochs):
        m.train()
        m.on_epoch_start(epoch, epochs)
        for step in range(steps):
            x, y = batch(n=4, seed=10 * epoch + step, num_classes=NUM_CLASSES)
            idx = torch.arange(4) + 4 * step
            out = m(x, y, idx)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            m.on_train_batch_end(out)
            outs.append(out)
    return outs


def test_every_method_has_an_invalid_example():
    assert set(INVALID) == set(METHODS), "add an impossible parameter value for the new method to INVALID"


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_valid(name: str):
    METHODS[name].validate(METHODS[name].default_params(), 4)
    cfg = resolve_config({"method": name})
    assert cfg.method_params == METHODS[name].default_params()


@pytest.mark.parametrize("name", NAMES)
def test_invalid_params_are_rejected(name: str):
    bad = dataclasses.replace(METHODS[name].default_params(), **INVALID[name])
    with pytest.raises(ConfigError):
        METHODS[name].validate(bad, 4)
    key, value = next(iter(INVALID[name].items()))
    with pytest.raises(ConfigError):
        resolve_config({"method": name, f"method.{key}": value})


@pytest.mark.parametrize("name", NAMES)
def test_forward_gives_finite_differentiable_loss_and_named_terms(name: str):
    m = build(name)
    for out in train_steps(m):
        assert out.loss.requires_grad and out.loss.dim() == 0 and torch.isfinite(out.loss)
        assert out.logits.shape == (4, NUM_CLASSES)
        assert out.terms and all(v.dim() == 0 and torch.isfinite(v) for v in out.terms.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_predict_lists_exits_with_final_last(name: str):
    m = build(name)
    train_steps(m, epochs=1)
    m.eval()
    x, _ = batch(n=3)
    with torch.no_grad():
        logits = m.predict(x)
        assert list(logits)[-1] == FINAL
        assert all(z.shape == (3, NUM_CLASSES) for z in logits.values())
        assert torch.allclose(logits[FINAL], m.deployable()(x), atol=1e-6)
        costs = m.exit_costs(x)
    assert list(costs) == list(logits)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_identical_next_step(name: str):
    m = build(name)
    train_steps(m)
    state = m.state_dict()
    fresh = build(name, seed=1)
    fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k
    x, y = batch(n=4, seed=99, num_classes=NUM_CLASSES)
    idx = torch.arange(4) + 8
    outs = []
    for module in (m, fresh):
        module.train()
        module.on_epoch_start(3, 4)
        outs.append(module(x, y, idx).loss)
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_ddp_ignore_list_names_real_tensors(name: str):
    m = build(name)
    names = set(getattr(m, "_ddp_params_and_buffers_to_ignore", []))
    known = {n for n, _ in m.named_parameters()} | {n for n, _ in m.named_buffers()}
    assert names <= known


SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.mark.parametrize("name", NAMES)
def test_search_space_file_loads_with_paper_defaults(name: str):
    from skd_ray.search.space.definition import load_space

    space = load_space(SPACES / f"{name}.yaml")
    assert space.fixed["method"] == name
    assert any(p.key.startswith("method.") for p in space.params)
    resolve_config(space.defaults())


def test_core_imports_no_ray_optuna_mlflow():
    code = ("import sys, skd_ray.methods, skd_ray.models, skd_ray.models.fpn; "
            "bad = [m for m in ('ray', 'optuna', 'mlflow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- exact resume through the engine ---------------------------------------------------------


RESUME_OVERRIDES: dict[str, dict[str, Any]] = {
    "srdl": {"method.snapshot_at": 0.34},  # stage 2 from epoch 1: the checkpoint holds a cache
    "lightskd": {"method.dsr_reset_each_epoch": False},  # the buffer crosses the resume
}


@pytest.mark.parametrize("name", NAMES)
def test_resumed_run_matches_uninterrupted_run(name: str, tmp_path: Path):
    flat = {"method": name, "data.name": "digits", "data.val_fraction": 0.2, "train.device": "cpu",
            "model.width": 2, "train.epochs": 3, "eval.thresholds": [0.9], **RESUME_OVERRIDES.get(name, {})}
    cfg = resolve_config(flat)
    straight = LocalSession("cpu", echo=False)
    fit(cfg, straight)
    with pytest.raises(Interrupted):
        fit(cfg, StopAfter(2, tmp_path))
    resumed = LocalSession("cpu", checkpoint_dir=tmp_path, echo=False)
    fit(cfg, resumed)
    assert [m["epoch"] for m in resumed.history] == [3]
    drop = ("time_epoch_s", "time_data_frac")
    assert {k: v for k, v in resumed.history[0].items() if k not in drop} == \
        {k: v for k, v in straight.history[-1].items() if k not in drop}
    assert (tmp_path / CHECKPOINT_FILE).exists()
