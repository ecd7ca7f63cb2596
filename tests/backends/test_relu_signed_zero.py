"""relu(-0) is +0 and relu(NaN) is NaN on every execution path (fuzz seed 7006119:
the kernel IR's max(x, 0) kept -0, so rsqrt after it gave -inf where the reference gave
+inf). The expected bits come from an independent rule (x > 0 ? x : +0, NaN kept), not
from any path under test."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.fuzz.cases import Case
from graphc.fuzz.oracle import as_list
from graphc.fuzz.paths import PATHS, available_paths

SPECIAL = [-0.0, 0.0, -1.5, 2.5, np.nan, -np.inf, np.inf, -1e-30, 1e-30]


def _graph(dt: str, n: int) -> gc.Graph:
    return gc.parse(f"""
graph @relu_zero(%x: {dt}[{n}]) {{
  %0 = relu(%x) : {dt}[{n}]
  %1 = rsqrt(%0) : {dt}[{n}]
  return %0, %1
}}
""")


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(((a == b) & (np.signbit(a) == np.signbit(b))) | (np.isnan(a) & np.isnan(b))))


def _paths() -> list[str]:
    return [p for p in available_paths() if p not in ("aot", "jit")]


@pytest.mark.parametrize("path", _paths())
@pytest.mark.parametrize("dt", ["f16", "f32", "f64"])
def test_relu_of_negative_zero_is_positive_zero(path, dt):
    x = np.array(SPECIAL * 3, dt.replace("f", "float"))  # 27 elements: vector body and tail
    want = np.where(np.isnan(x), x, np.where(x > 0, x, np.zeros((), x.dtype)))
    assert not np.signbit(want[want == 0]).any()
    g = _graph(dt, x.size)
    case = Case(0, "inference", g, {"x": x}, {})
    (outs, _), = PATHS[path].run(case)
    relu, rs = (np.asarray(o) for o in outs)
    assert _same_bits(relu, want), (path, relu)
    assert np.all(np.isposinf(rs[want == 0])), (path, rs)  # rsqrt(+0) = +inf, never -inf


@pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")
def test_fuzz_seed_7006119_relu_of_a_zero_product():
    """The reproduction: relu(0 * negative) = relu(-0), then rsqrt."""
    g = gc.parse("""
graph @fuzz7006119(%w0: f32[4], %w1: f32[4]) {
  %0 = mul(%w0, %w1) : f32[4]
  %1 = relu(%0) : f32[4]
  %2 = rsqrt(%1) : f32[4]
  return %2
}
""")
    w0 = np.zeros(4, np.float32)
    w1 = np.array([-0.3, 1.2, -2.0, 0.5], np.float32)
    want = np.full(4, np.inf, np.float32)  # rsqrt(+0): 0 * anything is a zero
    for level in (0, 2):
        (got,) = as_list(gc.compile(g, backend="llvm", opt_level=level)(w0=w0, w1=w1))
        np.testing.assert_array_equal(got, want)
