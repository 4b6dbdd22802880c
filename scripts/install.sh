#!/usr/bin/env bash
# Create .venv and install skd-ray with its test tools.
# torch/torchvision are pinned to the CPU-tested pair first so pip does not pick another
# build; on a GPU machine install the CUDA build you need before running this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "installed into .venv ($(.venv/bin/python -c 'import torch, ray, optuna, mlflow; print(f"torch {torch.__version__}, ray {ray.__version__}, optuna {optuna.__version__}, mlflow {mlflow.__version__}")'))"
