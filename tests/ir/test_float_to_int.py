"""Float to integer casts are defined everywhere: truncation toward zero, saturation at the
integer range, NaN to 0 (ir.dtypes.float_to_int). The reference, the LLVM code and the
generated CUDA C (on the CPU emulator) agree, so a NaN reaching a cast is not a fuzzer
mismatch nor an x86-only INT_MIN."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.ir import dtypes

SPECIALS = [np.nan, np.inf, -np.inf, 3e9, -3e9, 2.0**31, -(2.0**31), 2.0**31 - 128, 1e19, -1e19,
            2.0**63, -(2.0**63), 2.5, -2.5, 0.99, -0.99, -0.0, 7.0]


def _independent(x: float, bits: int) -> int:
    if np.isnan(x):
        return 0
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if np.isinf(x):
        return hi if x > 0 else lo
    return max(lo, min(hi, int(x)))  # Python's int() truncates toward zero, exactly


@pytest.mark.parametrize("src", ["f32", "f64"])
@pytest.mark.parametrize("dst", ["i32", "i64"])
def test_reference_matches_an_independent_rule(src, dst):
    x = np.array(SPECIALS, dtypes.dtype(src).np_dtype)
    got = dtypes.float_to_int(x, dtypes.dtype(dst))
    want = [_independent(float(v), dtypes.dtype(dst).itemsize * 8) for v in x]
    assert got.tolist() == want


@pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")
@pytest.mark.parametrize("src", ["f32", "f64"])
@pytest.mark.parametrize("dst", ["i32", "i64"])
def test_llvm_and_cuda_c_agree_with_the_reference(src, dst):
    n = len(SPECIALS) * 4  # long enough for the vectorised loop body
    g = gc.Graph("cast")
    with g:
        x = gc.placeholder("x", (n,), src)
        g.set_outputs([gc.cast(x, dst), gc.cast(gc.sqrt(x), dst)])  # sqrt: NaN made in-kernel
    xv = np.resize(np.array(SPECIALS, dtypes.dtype(src).np_dtype), n)
    want = gc.compile(g, backend="reference")(xv)
    got = gc.compile(g, backend="llvm")(xv)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    from graphc.backends.cuda import emulator
    if emulator.available():
        from graphc.fuzz.cases import Case
        from graphc.fuzz.paths import PATHS
        steps = PATHS["cuda-emulator"].run(Case(0, "inference", g, {"x": xv}, {}))
        for a, b in zip(steps[0][0], want):
            np.testing.assert_array_equal(a, b)
