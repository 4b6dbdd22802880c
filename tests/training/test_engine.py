"""The training loop on digits with LocalSession: learning, metrics, divergence and exact resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from skd_ray.errors import TrainingDiverged
from skd_ray.methods import FINAL, build_method
from skd_ray.methods.byot import Byot
from skd_ray.models import StagedResNet
from skd_ray.training import engine
from skd_ray.training.checkpoint import CHECKPOINT_FILE, load_state
from skd_ray.training.engine import evaluate, fit, lr_factor
from skd_ray.training.resolve import resolve_config
from skd_ray.training.session import LocalSession
from tests.helpers.interrupting_session import Interrupted, StopAfter
from tests.helpers.tiny_byot import tiny_byot_eval

TIME_KEYS = ("time_epoch_s", "time_data_frac")




def digits_cfg(**overrides: Any):
    flat = {"method": "byot", "data.name": "digits", "data.val_fraction": 0.2, "train.device": "cpu",
            "model.width": 4, "train.epochs": 4, "train.batch_size": 64, **overrides}
    return resolve_config(flat)


def session(checkpoint_dir: Path | None = None) -> LocalSession:
    return LocalSession("cpu", checkpoint_dir=checkpoint_dir, echo=False)


def without_time(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k not in TIME_KEYS}


# --- learning and metrics -------------------------------------------------------------------

def test_byot_learns_digits_and_reports_every_exit() -> None:
    cfg = digits_cfg(**{"train.epochs": 6, "model.width": 8})
    s = session()
    final = fit(cfg, s)
    assert final["val_acc"] > 0.9
    assert [m["epoch"] for m in s.history] == list(range(1, 7))
    assert s.history[-1] is final
    assert final["train_loss"] < s.history[0]["train_loss"]
    for name in ("exit1", "exit2", "exit3", "ensemble"):
        assert 0.5 < final[f"val_acc.{name}"] <= 1.0, name
    for t in ("0.8", "0.9", "0.95", "0.98"):
        assert 0.5 < final[f"val_acc.dynamic_t{t}"] <= 1.0
        assert final["val_compute.exit1"] <= final[f"val_compute.dynamic_t{t}"] < 1.5
    # compute is cheaper the shallower the exit; the backbone alone is the unit
    assert final["val_compute.exit1"] < final["val_compute.exit2"] < final["val_compute.exit3"] < 1.0
    assert final["val_compute.final"] == 1.0
    # a lower threshold exits earlier on average
    assert final["val_compute.dynamic_t0.8"] <= final["val_compute.dynamic_t0.98"]
    for key in ("train_ce_final", "train_ce_exit1", "train_kd_exit2", "train_hint_exit2", "val_loss"):
        assert math.isfinite(final[key]) and final[key] >= 0
    assert final["best_val_acc"] == max(m["val_acc"] for m in s.history)
    # cosine schedule: the reported lr is the one used in that epoch
    lrs = [m["lr"] for m in s.history]
    assert lrs[0] == pytest.approx(0.05) and lrs == sorted(lrs, reverse=True)
    best_epoch = max(s.history, key=lambda m: m["val_acc"])["epoch"]
    assert s.best_state is not None and s.best_state["epoch"] == next(
        m["epoch"] for m in s.history if m["val_acc"] == final["best_val_acc"]) <= best_epoch
    # Every epoch names the epoch of the best checkpoint so far: readers need no metric history.
    assert final["best_epoch"] == s.best_state["epoch"]
    assert [m["best_epoch"] for m in s.history] == [
        next(e["epoch"] for e in s.history if e["val_acc"] == m["best_val_acc"]) for m in s.history]


def test_vanilla_reports_single_exit() -> None:
    s = session()
    final = fit(digits_cfg(method="vanilla", **{"train.epochs": 1}), s)
    assert "val_acc" in final and "train_ce" in final
    assert not [k for k in final if "ensemble" in k or "dynamic" in k or "compute" in k or "exit" in k]


# --- divergence -----------------------------------------------------------------------------

def test_nan_loss_raises_training_diverged(monkeypatch: pytest.MonkeyPatch) -> None:
    forward = Byot.forward

    def nan_forward(self, x, y, index=None):
        out = forward(self, x, y, index)
        return out._replace(loss=out.loss * float("nan"))

    monkeypatch.setattr(Byot, "forward", nan_forward)
    s = session()
    with pytest.raises(TrainingDiverged) as info:
        fit(digits_cfg(**{"train.epochs": 3}), s)
    assert "nan" in info.value.problem and "epoch 1" in info.value.problem
    assert "optim.lr" in info.value.fix
    assert s.history == []  # nothing is reported from a diverged epoch


def test_huge_learning_rate_diverges() -> None:
    with pytest.raises(TrainingDiverged):
        fit(digits_cfg(method="vanilla", **{"train.epochs": 2, "optim.lr": 1e12}), session())


# --- checkpoints and exact resume -----------------------------------------------------------



@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted 4-epoch run, checkpointing every epoch into its own directory."""
    directory = tmp_path_factory.mktemp("straight")
    s = session(directory)
    final = fit(digits_cfg(), s)
    return {"dir": directory, "final": final, "history": s.history}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same configuration, killed after epoch 2; its checkpoint directory is kept."""
    directory = tmp_path_factory.mktemp("interrupted")
    s = StopAfter(2, directory)
    with pytest.raises(Interrupted):
        fit(digits_cfg(), s)
    return {"dir": directory, "history": s.history,
            "state": torch.load(directory / CHECKPOINT_FILE, map_location="cpu", weights_only=True)}


def test_checkpoint_loads_with_weights_only(straight: dict[str, Any]) -> None:
    state = torch.load(straight["dir"] / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert set(state) == {"model", "optimizer", "scheduler", "scaler", "epoch", "best", "rng", "metrics"}
    assert state["epoch"] == 4
    assert state["metrics"] == straight["final"]
    assert state["best"]["best_val_acc"] == max(m["val_acc"] for m in straight["history"])
    assert any(k.startswith("heads.exit1.") for k in state["model"])
    assert state["scheduler"]["last_epoch"] == 4
    assert not list(straight["dir"].glob("*.tmp"))  # atomic write leaves no temporary file


def test_a_run_resumed_after_its_last_epoch_returns_the_stored_metrics(straight: dict[str, Any]) -> None:
    """What a trial restored from its final checkpoint hands back to the search (no training)."""
    s = session(straight["dir"])
    assert fit(digits_cfg(), s) == straight["final"]
    assert s.history == []


def test_startup_time_is_reported_on_the_first_epoch_a_process_trains(tmp_path: Path) -> None:
    import time

    s = session()
    s.started_at = time.time() - 5.0  # the trial began 5 s before fit was called
    fit(digits_cfg(**{"train.epochs": 2}), s)
    first, second = s.history
    assert 5.0 < first["time_startup_s"] < 5.0 + first["time_epoch_s"]
    assert "time_startup_s" not in second and "time_first_step_s" not in first


def test_same_seed_gives_identical_metrics(straight: dict[str, Any], interrupted: dict[str, Any]) -> None:
    """The interrupted run is a second run of the same config: its first two epochs must agree."""
    assert [without_time(m) for m in interrupted["history"]] == \
        [without_time(m) for m in straight["history"][:2]]


def test_other_seed_gives_other_metrics(straight: dict[str, Any]) -> None:
    s = session()
    fit(digits_cfg(**{"train.epochs": 1, "train.seed": 1}), s)
    assert s.history[0]["train_loss"] != straight["history"][0]["train_loss"]


def test_resume_is_exact(straight: dict[str, Any], interrupted: dict[str, Any],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    saved = interrupted["state"]
    assert saved["epoch"] == 2
    momentum = {i: s["momentum_buffer"] for i, s in saved["optimizer"]["state"].items()}
    assert momentum and all(float(b.abs().sum()) > 0 for b in momentum.values())

    optimizers: list[torch.optim.Optimizer] = []
    real_build = engine.build_optimizer

    def spy_build(cfg, params):
        optimizers.append(real_build(cfg, params))
        return optimizers[-1]

    monkeypatch.setattr(engine, "build_optimizer", spy_build)
    restored: dict[int, torch.Tensor] = {}

    class Resume(LocalSession):
        def prepare_model(self, model):
            # called after the checkpoint is loaded, before the first resumed step
            restored.update({i: s["momentum_buffer"].clone()
                             for i, s in optimizers[-1].state_dict()["state"].items()})
            return model

    s = Resume("cpu", checkpoint_dir=interrupted["dir"], echo=False)
    final = fit(digits_cfg(), s)

    assert set(restored) == set(momentum)
    assert all(torch.equal(restored[i], momentum[i]) for i in momentum)
    assert [m["epoch"] for m in s.history] == [3, 4]
    assert [without_time(m) for m in s.history] == [without_time(m) for m in straight["history"][2:]]
    assert without_time(final) == without_time(straight["final"])

    a = load_state(straight["dir"] / CHECKPOINT_FILE)
    b = load_state(interrupted["dir"] / CHECKPOINT_FILE)
    assert b["epoch"] == 4
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for i, st in a["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
    assert a["best"] == b["best"]


def test_resume_without_momentum_is_not_exact(straight: dict[str, Any], interrupted: dict[str, Any],
                                              tmp_path: Path) -> None:
    """Shows the exactness check above is sensitive to the optimizer state."""
    state = dict(interrupted["state"])
    state["optimizer"] = {**state["optimizer"], "state": {}}
    torch.save(state, tmp_path / CHECKPOINT_FILE)
    s = session(tmp_path)
    final = fit(digits_cfg(), s)
    assert [m["epoch"] for m in s.history] == [3, 4]
    assert final["train_loss"] != straight["final"]["train_loss"]


def test_finished_run_resumes_to_nothing(straight: dict[str, Any], tmp_path: Path) -> None:
    state = load_state(straight["dir"] / CHECKPOINT_FILE)
    torch.save(state, tmp_path / CHECKPOINT_FILE)
    s = session(tmp_path)
    fit(digits_cfg(), s)
    assert s.history == []


# --- evaluate and the LR schedule -----------------------------------------------------------

def test_evaluate_averages_over_uneven_batches() -> None:
    method, split, loader = tiny_byot_eval(samples=20, batch_size=7)
    cfg = resolve_config({"eval.thresholds": [0.5, 1.0]})
    metrics = evaluate(method, loader, cfg, torch.device("cpu"))
    with torch.no_grad():
        preds = method.predict(split.images)
    y = split.labels
    assert metrics["val_acc"] == pytest.approx(float((preds[FINAL].argmax(1) == y).float().mean()))
    assert metrics["val_acc.exit1"] == pytest.approx(float((preds["exit1"].argmax(1) == y).float().mean()))
    ens = torch.stack([p.softmax(1) for p in preds.values()]).mean(0)
    assert metrics["val_acc.ensemble"] == pytest.approx(float((ens.argmax(1) == y).float().mean()))
    assert metrics["val_acc.dynamic_t1"] == metrics["val_acc.ensemble"]
    ce = torch.nn.functional.cross_entropy(preds[FINAL], y)
    assert metrics["val_loss"] == pytest.approx(float(ce), rel=1e-5)
    costs = method.exit_costs(split.images)
    assert metrics["val_compute.dynamic_t1"] == pytest.approx(costs[FINAL].cumulative)
    # compute sums are float32
    assert costs["exit1"].cumulative - 1e-6 <= metrics["val_compute.dynamic_t0.5"] <= costs[FINAL].cumulative + 1e-6
    assert metrics["val_compute.exit3"] == pytest.approx(costs["exit3"].standalone)


def test_lr_factor_schedules() -> None:
    method = build_method("vanilla", StagedResNet([1, 1, 1, 1], 2, 1, 3), resolve_config(
        {"method": "vanilla"}).method_params)
    cosine = resolve_config({"train.epochs": 4})
    assert [lr_factor(cosine, method, e) for e in range(4)] == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])
    step = resolve_config({"train.epochs": 8, "sched.name": "step", "sched.milestones": [0.5, 0.75],
                           "sched.gamma": 0.1})
    assert [lr_factor(step, method, e) for e in range(8)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    warm = resolve_config({"train.epochs": 8, "sched.name": "none", "sched.warmup_epochs": 2})
    assert [lr_factor(warm, method, e) for e in range(4)] == pytest.approx([1 / 3, 2 / 3, 1, 1])


def test_local_session_best_state_is_a_snapshot_not_the_live_weights() -> None:
    import torch

    session = LocalSession("cpu", echo=False)
    weight = torch.zeros(2)
    session.report({"epoch": 1, "val_acc": 0.9, "train_loss": 0.1, "time_epoch_s": 0.0},
                   {"model": {"w": weight}, "epoch": 1}, True)
    weight.add_(1.0)  # training goes on in place
    assert torch.equal(session.best_state["model"]["w"], torch.zeros(2))


def _ranks_average_their_training_metrics(rank: int) -> None:
    from skd_ray.training.engine import mean_over_ranks

    mine = {"train_loss": 1.0 + 2.0 * rank, "train_ce_final": 10.0 * rank}
    assert mean_over_ranks(mine, torch.device("cpu")) == {"train_loss": 2.0, "train_ce_final": 5.0}


def test_ddp_training_metrics_are_averaged_over_ranks() -> None:

    from tests.helpers.handcalc import run_two_ranks

    run_two_ranks(_ranks_average_their_training_metrics)


def test_a_single_process_keeps_its_training_metrics() -> None:
    from skd_ray.training.engine import mean_over_ranks

    assert mean_over_ranks({"train_loss": 0.5}, torch.device("cpu")) == {"train_loss": 0.5}


@pytest.mark.slow
def test_compiled_training_matches_the_eager_loss_trajectory() -> None:
    """train.compile wraps the training forward in torch.compile (inductor compiles C++ on CPU).

    Width 8: inductor picks channels_last for convolutions, and torch 2.14.1's CPU backward of
    a 1x1 stride-2 convolution from 4 to 8 channels in channels_last with one thread (width 4's
    first shortcut) corrupts the heap (a torch bug, reproducible with a bare nn.Conv2d).
    """
    eager, compiled = session(), session()
    cfg = {"method": "vanilla", "train.epochs": 1, "train.threads": 1, "model.width": 8}
    fit(digits_cfg(**cfg), eager)
    fit(digits_cfg(**cfg, **{"train.compile": "default"}), compiled)
    (a,), (b,) = eager.history, compiled.history
    # Fused kernels round differently and an epoch of SGD amplifies it: close, not equal. An
    # untrained model would sit near ln(10) = 2.30.
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.02)
    assert b["train_loss"] < 1.5
    assert b["val_acc"] == pytest.approx(a["val_acc"], abs=0.03)


def test_unknown_compile_mode_is_a_config_error() -> None:
    from skd_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="train.compile"):
        digits_cfg(**{"train.compile": "fast"})


def test_an_objective_to_minimise_keeps_the_epoch_of_the_lowest_value() -> None:
    # A high learning rate without momentum: validation loss goes up and down over the epochs.
    cfg = digits_cfg(method="vanilla", **{"train.epochs": 5, "optim.lr": 0.4, "eval.objective": "val_loss",
                                          "eval.objective_mode": "min"})
    s = session()
    final = fit(cfg, s)
    losses = [m["val_loss"] for m in s.history]
    assert final["best_val_loss"] == min(losses)
    assert [m["best_val_loss"] for m in s.history] == [min(losses[:i + 1]) for i in range(len(losses))]
    assert s.best_state is not None and s.best_state["epoch"] == losses.index(min(losses)) + 1
    assert final["best_epoch"] == s.best_state["epoch"]
    # Accuracies keep their own best too (the leaderboard shows them beside the loss).
    assert final["best_val_acc"] == max(m["val_acc"] for m in s.history)
