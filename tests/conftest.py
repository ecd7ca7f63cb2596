"""Session-wide test support: report the largest gradient-check error of the run."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import graphc.testing as _testing

# Tests always run the verifier after every pass (production opts in with GRAPHC_VERIFY=1).
os.environ.setdefault("GRAPHC_VERIFY", "1")
# Compiled objects go to a cache of this run's own, not the user's ~/.cache/graphc; it is
# removed when the run ends.
if "GRAPHC_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="graphc-test-cache-")
    os.environ["GRAPHC_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, True)

_worst: list[float] = [0.0]
_count: list[int] = [0]
_check_grads = _testing.check_grads


def _recording_check_grads(*args, **kwargs):
    err = _check_grads(*args, **kwargs)
    _worst[0] = max(_worst[0], err)
    _count[0] += 1
    return err


# Bound before any test module imports it, so every gradient check in the run is counted.
_testing.check_grads = _recording_check_grads


def pytest_terminal_summary(terminalreporter):
    if _count[0]:
        terminalreporter.write_line(
            f"gradient checks: {_count[0]}, largest relative error vs finite differences "
            f"(float64): {_worst[0]:.3g}")
