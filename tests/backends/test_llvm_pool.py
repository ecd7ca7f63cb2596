"""Max pooling and its gradient as window scans (ir/ops/pool_lowering.py) against the
reference: ties, NaN, -inf, padding, overlapping windows, dtypes."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="llvmlite missing")

CASES = [  # (shape, kernel, stride, padding)
    ((2, 3, 8, 8), 2, 2, 0),
    ((1, 2, 7, 9), 3, 1, 1),          # overlapping windows, padding
    ((3, 1, 5, 6), (3, 2), (2, 1), (1, 0)),
    ((2, 2, 4, 4), 3, 2, 1),
    ((1, 2, 7, 11), 3, 3, 1),         # stride 3: column groups of 3 and a remainder of 2
]


def _graph(shape, kernel, stride, padding, dtype):
    g = gc.Graph("pool")
    with g:
        x = gc.placeholder("x", shape, dtype)
        y = gc.max_pool2d(x, kernel, stride=stride, padding=padding)
        gy = gc.placeholder("gy", y.shape, dtype)
        (gx,) = gc.grad(gc.sum(y * gy), [x])
        g.set_outputs([y, gx])
    return g


def _special_input(rng, shape, dtype):
    """Ties (values on a coarse grid), -inf, and a few NaNs."""
    x = rng.integers(-3, 3, shape).astype(dtype)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, max(1, flat.size // 20), replace=False)] = -np.inf
    flat[rng.choice(flat.size, max(1, flat.size // 30), replace=False)] = np.nan
    return x


@pytest.mark.parametrize("dtype", ["f32", "f64", "f16"])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("special", [False, True], ids=["random", "ties-nan-inf"])
def test_max_pool_and_its_gradient_equal_the_reference(case, dtype, special):
    shape, kernel, stride, padding = case
    g = _graph(shape, kernel, stride, padding, dtype)
    rng = np.random.default_rng(len(str(case)))
    npdt = g.inputs[0].dtype.np_dtype
    x = _special_input(rng, shape, npdt) if special else rng.standard_normal(shape).astype(npdt)
    gy = rng.standard_normal(g.inputs[1].shape).astype(npdt)
    want = gc.compile(g, backend="reference")(x=x, gy=gy)
    got = gc.compile(g, backend="llvm")(x=x, gy=gy)
    # the forward is a selection: exact, NaN where the reference has NaN
    np.testing.assert_array_equal(got[0], want[0])
    # the gradient routes g to the same positions; overlapping windows add in another
    # order (and, for f16, in f16 rather than through float64)
    tol = {"f16": 4e-3, "f32": 1e-6, "f64": 1e-14}[dtype]
    np.testing.assert_allclose(got[1].astype(np.float64), want[1].astype(np.float64), rtol=tol, atol=tol)
