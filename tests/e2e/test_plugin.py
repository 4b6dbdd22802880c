"""The example plugin package (examples/skd_ray_example_plugin), installed with pip as a user
would, found through its entry points by the command line and by Ray's workers, and searched
end to end: its method on its backbone and its dataset, with real Ray, Optuna and MLflow.

It is installed into a folder of its own (`pip install --target`) put on PYTHONPATH, which the
search's process and the Ray it starts inherit: the project's environment is never changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.plugin import install_plugin, with_plugin
from tests.helpers.searches import child_runs

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(tmp_path_factory.mktemp("plugin"))


def test_the_installed_plugin_shows_in_the_command_line_choices(cli, plugin_site: Path) -> None:
    cli.env = with_plugin(cli.env, plugin_site)
    out = cli("--help", timeout=120).stdout
    flat = " ".join(out.split())
    assert "dsn" in flat and "vgg_tiny" in flat and "toy_shapes" in flat, out


def test_a_search_of_the_plugin_method_on_its_backbone_and_dataset(cli, plugin_site: Path, tmp_path: Path) -> None:
    cli.env = with_plugin(cli.env, plugin_site)
    res = cli("--method", "dsn", "--num-samples", "2", "--max-epochs", "2", "--storage", str(tmp_path / "results"),
              "--mlflow-uri", cli.mlflow_uri, "--experiment", "plugin", "--seed", "0", timeout=420)
    assert res.returncode == 0, res.stdout[-6000:]
    parent, children = child_runs(cli.mlflow_uri, "plugin")
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children), res.stdout[-3000:]
    fixed = parent.data.params  # a search's constants are logged once, on its parent run
    constants = (fixed["config.method"], fixed["config.model.backbone"], fixed["config.data.name"])
    assert constants == ("dsn", "vgg_tiny", "toy_shapes")
    assert fixed["config.method.exits"] == "[1, 2]"  # the stage-count default on a 3-stage network
    for run in children:
        assert run.data.tags["skd.method"] == "dsn"
        assert any(key.startswith("val/acc") for key in run.data.metrics)
