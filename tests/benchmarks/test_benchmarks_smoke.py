"""The cost benchmark runs end to end in its quick mode and prints one parsable line per method
(no timing is asserted: the numbers depend on the machine)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skd_ray.methods import METHODS

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "method_cost.py"
LINE = re.compile(r"^method=(\S+) backbone=(\S+) time_ratio=(\S+) mac_ratio=(\S+) mem_ratio=(\S+)$")


def method_cost_ratios(*args: str) -> dict[str, tuple[float, float, float]]:
    """(time, MAC, memory) ratio per method of a quick method_cost run with `args`."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", *args], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ratios = {}
    for line in proc.stdout.splitlines():
        match = LINE.match(line)
        if match:
            name = match.group(1)
            assert name not in ratios, f"{name} printed twice"
            ratios[name] = (float(match.group(3)), float(match.group(4)), float(match.group(5)))
    return ratios


def test_method_cost_quick_prints_a_ratio_per_method() -> None:
    ratios = method_cost_ratios()
    assert set(ratios) == set(METHODS), ratios
    assert ratios["vanilla"][:2] == (1.0, 1.0)
    for name, (time_ratio, _mac_ratio, mem_ratio) in ratios.items():
        assert time_ratio > 0 and math.isfinite(time_ratio), name
        # A quick run's CPU memory growth is a few MB, so only its form is checked.
        assert math.isnan(mem_ratio) or mem_ratio >= 0, name
    # TFD and the logit-only methods add no layer; exit heads and students add arithmetic.
    assert all(ratios[m][1] == 1.0 for m in ("tfd", "pskd", "tfkd_reg"))
    assert ratios["byot"][1] > 1.2 and ratios["teskd"][1] > 1.2 and ratios["lightskd"][1] > 1.0


def test_method_cost_runs_on_another_family() -> None:
    ratios = method_cost_ratios("--backbone", "resnet20", "--methods", "byot,teskd")
    assert set(ratios) == {"vanilla", "byot", "teskd"}
    assert ratios["byot"][1] > 1.0 and ratios["teskd"][1] > 1.0


def run_quick(script: str) -> str:
    path = SCRIPT.parent / script
    try:
        proc = subprocess.run([sys.executable, str(path), "--quick"], capture_output=True, text=True,
                              timeout=600, check=False)
    except subprocess.TimeoutExpired as err:  # show where it stood, not only that it ran long
        out = err.stdout or b""  # bytes on POSIX even with text=True
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        pytest.fail(f"{script} --quick ran over 600 s; its last output:\n{out[-4000:]}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_trial_overhead_quick_prints_startup_and_efficiency() -> None:
    last = run_quick("trial_overhead.py").strip().splitlines()[-1]
    match = re.fullmatch(r"startup_1w_s=(\S+) startup_2w_s=(\S+) search_efficiency=(\S+)", last)
    assert match, last
    startup_1w, startup_2w, efficiency = map(float, match.groups())
    assert startup_1w > 0 and startup_2w > 0 and 0 < efficiency <= 1


def test_search_efficiency_quick_prints_an_epochs_ratio() -> None:
    out = run_quick("search_efficiency.py")
    last = out.strip().splitlines()[-1]
    match = re.fullmatch(r"epochs_ratio=(\S+)", last)
    assert match, last
    assert float(match.group(1)) > 0
    assert "tpe_asha: reached" in out and "random_no_stopping: reached" in out


def test_data_pipeline_quick_prints_a_throughput_ratio() -> None:
    out = run_quick("data_pipeline.py")
    match = re.fullmatch(r"in_memory_vs_pil_ratio=(\S+)", out.strip().splitlines()[-1])
    assert match, out
    assert float(match.group(1)) > 0
    assert re.search(r"^in_memory: [\d,]+ images/s$", out, re.M) and re.search(r"^pil_dataloader: ", out, re.M)


def test_gpu_check_quick_measures_on_cpu_and_says_what_it_skips() -> None:
    out = run_quick("gpu.py")
    speeds = {(m.group(1), m.group(2)): float(m.group(3)) for m in re.finditer(
        r"^throughput method=(\S+) setting=(\S+) images_per_s=(\S+) ", out, re.M)}
    assert set(speeds) == {(m, s) for m in ("vanilla", "byot") for s in ("fp32", "bf16")}, out
    assert all(v > 0 and math.isfinite(v) for v in speeds.values()), speeds
    assert re.search(r"^method=byot bf16_ratio=\S+ time_vs_vanilla_bf16=\S+$", out, re.M), out
    wait = re.search(r"^data_wait synced=(\S+) unsynced=(\S+) ", out, re.M)
    assert wait and all(0 <= float(v) <= 1 for v in wait.groups()), out
    for part in ("throughput settings bf16_cl, compiled", "gpu_utilisation", "trials_per_hour"):
        assert re.search(rf"^{part} skipped \(GPU only", out, re.M), part


def test_scale_quick_prints_the_cost_of_one_more_trial() -> None:
    out = run_quick("scale.py")
    last = out.strip().splitlines()[-1]
    match = re.fullmatch(r"per_trial_s=(\S+) results_s=(\S+) report_s=(\S+)", last)
    assert match, out[-3000:]
    assert all(math.isfinite(float(v)) for v in match.groups())
    assert float(match.group(2)) > 0 and float(match.group(3)) > 0
    rows = re.findall(r"^trials=(\d+) runs=(\d+) errors=0 ", out, re.M)
    assert rows == [("2", "2"), ("4", "4")], out[-3000:]
