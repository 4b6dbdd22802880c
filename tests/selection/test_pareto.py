"""Pareto fronts on hand-made points, and the multi-objective search's objectives and checks."""

from __future__ import annotations

import pytest

from skd_ray.errors import SkdError
from skd_ray.methods import METHODS
from skd_ray.search.space.definition import SearchSpace
from skd_ray.selection.multi_objective import check_multi_objective, front_csv, objectives
from skd_ray.selection.pareto import dominates, pareto_front

MAX_MIN = ("max", "min")  # accuracy up, compute down


def test_dominance_needs_one_strictly_better_objective() -> None:
    assert dominates((0.9, 0.5), (0.8, 0.6), MAX_MIN)
    assert dominates((0.9, 0.5), (0.9, 0.6), MAX_MIN)
    assert not dominates((0.9, 0.5), (0.9, 0.5), MAX_MIN)  # equal: neither dominates
    assert not dominates((0.9, 0.7), (0.8, 0.6), MAX_MIN)  # a trade-off


def test_front_of_accuracy_against_compute() -> None:
    points = [
        (0.95, 0.90),  # 0: most accurate
        (0.93, 0.60),  # 1: front
        (0.92, 0.70),  # 2: dominated by 1 (less accurate, more compute)
        (0.80, 0.40),  # 3: cheapest
        (0.80, 0.40),  # 4: same as 3: both kept
        (0.93, 0.65),  # 5: dominated by 1 (same accuracy, more compute)
        (0.70, 0.45),  # 6: dominated by 3
        (float("nan"), 0.1),  # 7: unevaluated: never on the front
    ]
    assert pareto_front(points, MAX_MIN) == [0, 1, 3, 4]


def test_front_with_both_objectives_minimised_and_three_objectives() -> None:
    assert pareto_front([(1, 5), (2, 2), (5, 1), (3, 3), (2, 4)], ("min", "min")) == [0, 1, 2]
    points = [(1, 1, 1), (1, 1, 2), (0, 2, 1), (0, 0, 0)]
    assert pareto_front(points, ("max", "max", "min")) == [0, 2, 3]
    assert pareto_front([], MAX_MIN) == []
    with pytest.raises(ValueError, match="modes"):
        pareto_front([(1, 2)], ("max", "lower"))


def test_objectives_name_the_dynamic_policy_metrics_at_the_threshold() -> None:
    assert objectives(0.95) == [("val_acc.dynamic_t0.95", "max"), ("val_compute.dynamic_t0.95", "min")]


def space(method: str, **fixed: object) -> SearchSpace:
    return SearchSpace("space.yaml", "", {"method": method, **fixed}, [])


def test_only_multi_exit_methods_and_measured_thresholds_are_accepted() -> None:
    check_multi_objective(space("byot"), 0.95)
    with pytest.raises(SkdError, match="needs a method with early exits.*vanilla") as err:
        check_multi_objective(space("vanilla"), 0.95)
    assert "byot" in err.value.fix
    with pytest.raises(SkdError, match="0.97 is not among eval.thresholds"):
        check_multi_objective(space("byot"), 0.97)
    check_multi_objective(space("byot", **{"eval.thresholds": [0.97]}), 0.97)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_multi_exit_flag_matches_what_predict_returns(name: str) -> None:
    """The flag that admits a method to --multi-objective must say the truth about predict."""
    import torch

    from skd_ray.methods import MethodContext, build_method
    from skd_ray.models import StagedResNet

    method = build_method(name, StagedResNet([1, 1, 1, 1], 4, 1, 5), METHODS[name].default_params(),
                          MethodContext(num_train_samples=8)).eval()
    with torch.no_grad():
        exits = method.predict(torch.randn(2, 1, 8, 8))
    assert METHODS[name].cls.multi_exit == (len(exits) > 1)


def test_front_csv_has_one_row_per_trial_with_params_as_json() -> None:
    text = front_csv([{"trial": "t1", "run_id": "r", "acc": 0.9, "params": {"b": "2", "a": "1"}}])
    assert text.splitlines() == ["trial,run_id,acc,params", 't1,r,0.9,"{""a"": ""1"", ""b"": ""2""}"']
    assert front_csv([]) == ""
