#!/usr/bin/env bash
# Prepare, on a machine with PyPI, what the offline GPU machine needs to build pycuda:
# its sdist and its dependencies' wheels (for the GPU image's Python 3.12), in .whl/.
# Then run .ci/gpu-check.sh there with .whl carried (issue 22).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
py=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps -d .whl
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download "${py[@]}" pytools platformdirs mako markupsafe typing-extensions siphash24 \
    networkx pytest pluggy iniconfig packaging hypothesis attrs sortedcontainers \
    setuptools wheel   # (numpy: the GPU image has it)
# the pycuda sdist, fetched as a file (pip download would try to build it here)
python3 - <<'PY'
import json, urllib.request
meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/pycuda/json"))
sdist = next(u for u in meta["urls"] if u["packagetype"] == "sdist")
urllib.request.urlretrieve(sdist["url"], ".whl/" + sdist["filename"])
print("pycuda", meta["info"]["version"], sdist["filename"])
PY
ls -la .whl
