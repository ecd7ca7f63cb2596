#!/usr/bin/env bash
# Issue 22's device run, as one script: on the GPU machine (offline; .whl from
# .ci/gpu-wheels.sh carried), install graphc and pycuda, run the CUDA conformance suite,
# the example models and training steps on the GPU, and the benchmark beside torch.
# Writes everything under ${OUT:-/tmp/gpu-out}.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_FIND_LINKS="$PWD/.whl"
python3 -m venv --system-site-packages /tmp/gvenv   # keeps the image's torch, numpy, onnx
V=/tmp/gvenv/bin
$V/pip install -q setuptools wheel pytools platformdirs mako siphash24 networkx pytest hypothesis 2>&1 | tee "$OUT/install.log"
$V/pip install -q --no-build-isolation --no-deps -e . 2>&1 | tee -a "$OUT/install.log"
PIP_NO_BUILD_ISOLATION=1 $V/graphc install-cuda 2>&1 | tail -20 | tee -a "$OUT/install.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$V/python -c "import graphc as gc; print(gc.backend_status())" | tee -a "$OUT/gpu.txt"
timeout 300 $V/python -m pytest -q -m cuda tests/backends/test_cuda_runtime.py 2>&1 | tee "$OUT/pytest-cuda.log"
timeout 240 $V/python benchmarks/cuda.py --runs 20 2>&1 | tee "$OUT/bench-cuda.log"
