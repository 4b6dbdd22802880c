"""Drive skd-ray from Python: a small BYOT search, its answer, and the same answer read back.

Run from a checkout (about a minute on 2 CPU cores; Ray is started for the search and stays up
until the script ends):

    .venv/bin/python examples/python_api.py [OUTPUT_DIR]

Ray's results go to OUTPUT_DIR/results and the MLflow store to OUTPUT_DIR/mlflow.db (default
OUTPUT_DIR: python_api_example); browse them with
`.venv/bin/python -m mlflow ui --backend-store-uri sqlite:///$PWD/python_api_example/mlflow.db`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import skd_ray


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "python_api_example").resolve()
    out.mkdir(parents=True, exist_ok=True)
    mlflow_uri = f"sqlite:///{out / 'mlflow.db'}"

    # search_spaces/byot.yaml (the default method's space) on the bundled digits data: 3 trials
    # of 2 epochs, a narrow network (overrides is the command line's --set).
    result = skd_ray.run_search(method="byot", dataset="digits", backbone="resnet_small", overrides={"model.width": 8},
                            num_samples=3, max_epochs=2, seed=0, storage=out / "results", mlflow_uri=mlflow_uri,
                            experiment="python-api-example", quiet=True)
    print(result)
    print(f"best trial {result.best_trial}: {result.metric} {result.best_value:.4f}, MLflow run {result.best_run_id} "
          f"(child of the search's run {result.parent_run_id})")
    print("searched values:", result.best_values)
    print("whole config:", len(result.best_config or {}), "keys, e.g. optim.lr =", (result.best_config or {}).get(
        "optim.lr"))
    for trial in result.trials:
        print(f"  {trial.name}  {trial.status:<13}  {trial.epochs} epochs  {trial.value:.4f}  {trial.run_id}")

    # Later, in another process: the same answer, read from MLflow only (no Ray).
    again = skd_ray.search_results(experiment="python-api-example", search=result.search, mlflow_uri=mlflow_uri,
                            storage=out / "results")
    assert (again.best_run_id, again.best_config) == (result.best_run_id, result.best_config)
    print(f"read back: best {again.best_trial} ({again.best_run_id}); folder {again.directory}")


if __name__ == "__main__":
    main()
