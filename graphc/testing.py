"""Testing helpers: gradient checks against central finite differences in float64.

Public so that users adding ops or models can check them the way graphc checks its own.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .ir.emitter import Emitter
from .ir.graph import Graph, Value
from .ir.types import TensorType
from .passes.autodiff import grad
from .backends.reference.interpreter import evaluate


def numeric_grad(f: Callable[[list[np.ndarray]], float], args: list[np.ndarray], i: int,
                 eps: float) -> np.ndarray:
    """Central differences of scalar f with respect to args[i] (float64)."""
    x = args[i]
    out = np.zeros_like(x)
    flat = out.reshape(-1)
    for j in range(x.size):
        orig = x.flat[j]
        x.flat[j] = orig + eps
        hi = f(args)
        x.flat[j] = orig - eps
        lo = f(args)
        x.flat[j] = orig
        flat[j] = (hi - lo) / (2 * eps)
    return out


def check_grads(build: Callable[[Emitter, list[Value]], Value], args: Sequence[np.ndarray], *,
                wrt: Sequence[int] | None = None, eps: float = 1e-6, rtol: float = 1e-5,
                atol: float = 1e-6, seed: int = 0) -> float:
    """Check the autodiff gradient of `build` against finite differences.

    Returns the largest normwise relative error, max|autodiff - numeric| / max|numeric|.

    `build(b, xs)` builds the function from graph inputs xs with Emitter b. Float arrays are
    made float64; the output y is contracted with a fixed random cotangent so the whole
    vector-Jacobian product is checked, not only its sum. Raises AssertionError on mismatch.
    """
    args = [np.array(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else np.array(a)
            for a in args]
    wrt = [i for i, a in enumerate(args) if a.dtype.kind == "f"] if wrt is None else list(wrt)
    g = Graph("gradcheck")
    xs = [g.add_input(f"x{i}", TensorType(a.shape, a.dtype)) for i, a in enumerate(args)]
    b = Emitter(g)
    y = build(b, xs)
    rng = np.random.default_rng(seed)
    proj = b.const(rng.standard_normal(y.shape), y.dtype)
    loss = b.sum(b.mul(y, proj), axes=tuple(range(y.type.rank)), keepdims=False)
    grads = grad(g, loss, [xs[i] for i in wrt])

    def f(vals: list[np.ndarray]) -> float:
        return float(evaluate(g, dict(zip(xs, vals)), [loss])[loss])

    analytic = evaluate(g, dict(zip(xs, args)), grads)
    worst = 0.0
    for i, gv in zip(wrt, grads):
        num = numeric_grad(f, args, i, eps)
        ana = analytic[gv]
        err = np.abs(ana - num)
        bound = atol + rtol * np.abs(num)
        # normwise relative error: max |autodiff - numeric| / max |numeric|
        rel = float(err.max() / max(np.abs(num).max(), atol)) if err.size else 0.0
        worst = max(worst, rel)
        if not np.all(err <= bound):
            k = int(np.argmax(err - bound))
            raise AssertionError(
                f"gradient of input {i} differs from finite differences at flat index {k}: "
                f"autodiff {ana.flat[k]!r}, numeric {num.flat[k]!r} (max abs error {err.max():.3g})")
    return worst


def check_op_grads(op: str, args: Sequence[np.ndarray], attrs: dict[str, Any] | None = None, *,
                   output: int = 0, **kw: Any) -> float:
    """check_grads for a single registry op applied to args."""
    def build(b: Emitter, xs: list[Value]) -> Value:
        out = b.op(op, *xs, **(attrs or {}))
        return out[output] if isinstance(out, tuple) else out
    return check_grads(build, args, **kw)
