#!/usr/bin/env bash
# The whole GPU check (benchmarks/gpu.py) for the day a GPU is lent: at most 480 s (the
# script budgets 420 s for itself), its output printed and kept in a file.
#
#   bash benchmarks/gpu_check.sh [OUTPUT_FILE] [gpu.py options...]
#
# OUTPUT_FILE defaults to gpu_check_<date>.txt in the repository root; PYTHON overrides the
# interpreter (default .venv/bin/python). The exit status is gpu.py's (124: the time limit).
set -u
cd "$(dirname "$0")/.."
out="${1:-gpu_check_$(date +%Y%m%d-%H%M%S).txt}"
shift $(( $# > 0 ? 1 : 0 ))
python="${PYTHON:-.venv/bin/python}"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true; } | tee "$out"
timeout 480 "$python" benchmarks/gpu.py "$@" 2>&1 | tee -a "$out"
status=${PIPESTATUS[0]}
echo "gpu_check: exit status $status; output in $out" | tee -a "$out"
exit "$status"
