#!/usr/bin/env bash
# The GPU check of issue 17, at most 5 minutes: the CUDA test subset, paper-size iteration times
# (RNN and Transformer; eager and compiled; fp32 and bf16), generation to 800 frames and a
# 4-trial search with --gpus-per-trial 0.25. Prints one table and a JSON line (benchmarks/device_check.py).
#   benchmarks/device_check.sh [--out benchmarks/results/device_check-NAME.json]   # on a CUDA machine
#   benchmarks/device_check.sh --dry-run                                           # on a CPU: tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
limit=300  # the check's own limit; a dry run on a loaded CPU may take longer
case " $* " in *" --dry-run "*) limit=900 ;; esac
exec timeout --kill-after=5 "$limit" "$PY" benchmarks/device_check.py "$@"
