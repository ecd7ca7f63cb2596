"""How far a computed value may be from the true one (the graph run in float64):

    eps(dtype) * (8 + budget(v)) * (|truth_i| + max(rms(truth), scale(v)))  +  4 * max|ref32 - truth|

`budget(v)` sums, along v's worst path, the rounding each producer may add in eps units
(elementwise ops a few ulp; reductions, contractions and windows one per term, estimated
from the registry: `rounding_budget`); `scale(v)` is the largest magnitude v is computed
from (`magnitudes`: x - mean(x) is near 0, its rounding error is not); the last term is the
float32 reference's own distance from the truth (a program may be as ill-conditioned for a
candidate as it visibly is for numpy). Integer and bool results must equal the float32
reference's.

Some results hang on a choice rounding can flip: max-pool routing between two tanh values
1e-8 apart (f32 rounds both to 1.0), the sign of a sum near 0, rsqrt or a division of a
value that cancels to near 0 (a conv output, a layer_norm of two elements). A candidate
may land on either side, and no tolerance on the result says so. When a comparison fails,
the truth is re-run with every computed value moved by the rounding its node may add
(`rounding_noise_runs`); elements whose truth then leaves its tolerance are unstable and
not compared (`unstable_elements`), the others still are. Used by the differential fuzzer
(graphc/fuzz) and by translation validation (ir/validate.py), so both judge a result the
same way."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .errors import GraphcError
from .graph import Graph, Value
from .registry import get_op
from .types import TensorType


def _node_rounding(node) -> float:
    """eps-units of error one node may add: the op's own `rounding` hook where it has one,
    elementwise ops a few ulp (vector transcendental functions included), other ops one
    per term they combine (sums, products, windows), estimated from how many input
    elements feed each output."""
    opdef = get_op(node.op)
    if opdef.rounding is not None:  # the op knows better (registry: OpDef.rounding)
        return float(opdef.rounding(node.attrs))
    out = node.outputs[0].type.size if node.outputs else 1
    if opdef.scalar is not None or opdef.view:
        return 4.0
    terms = sum(v.type.size for v in node.inputs) / max(out, 1)
    return 4.0 + 2.0 * max(terms, 1.0)


def rounding_budget(graph: Graph) -> dict[Value, float]:
    """Per value, the eps-units (of the value's own dtype) its producers may add along the
    worst path. An operand of another float dtype brings its budget converted to this
    value's eps: a f64 result of a f32 computation (`cast(softmax_cross_entropy(..), f64)`)
    carries the f32 rounding, 2^29 of its own eps, and a f32 result of a f16 mean the f16
    rounding (or its absence: the LLVM generator keeps f16 values in f32 inside a fused
    kernel, rounding only at stores and casts, as C's FLT_EVAL_METHOD allows), so either
    answer is within one f16 ulp per f16 op. Integer operands bring none (they are exact,
    or judged by equality)."""
    budget: dict[Value, float] = {}
    for n in graph.nodes:
        own = _node_rounding(n)
        for o in n.outputs:
            e = _eps(o.type)
            upstream = max((budget.get(v, 0.0) * _eps(v.type) / e if e and _eps(v.type) else 0.0
                            for v in n.inputs), default=0.0)
            budget[o] = upstream + own
    return budget


def _eps(t: TensorType) -> float:
    return float(np.finfo(t.dtype.np_dtype).eps) if t.dtype.is_float else 0.0


def rms(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64) if np.asarray(a).dtype.kind in "fiub" else np.zeros(0)
    finite = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(finite ** 2))) if finite.size else 0.0


def magnitudes(graph: Graph, env: Mapping[Value, np.ndarray]) -> dict[Value, float]:
    """Per value, the largest rms of it and of every value it is computed from: the scale
    of the terms whose rounding errors it carries (x - mean(x) is near 0, its error is not)."""
    out: dict[Value, float] = {}
    for v in list(graph.inputs) + list(graph.params) + list(graph.constants):
        out[v] = rms(env[v]) if v in env else 0.0
    for n in graph.nodes:
        upstream = max((out.get(u, 0.0) for u in n.inputs), default=0.0)
        for o in n.outputs:
            out[o] = max(upstream, rms(env[o]) if o in env else 0.0)
    return out


@np.errstate(invalid="ignore", over="ignore")
def tolerance(truth: np.ndarray, ref: np.ndarray, t: TensorType, budget: float,
              scale: float = 0.0) -> np.ndarray:
    tr = np.asarray(truth, np.float64)
    finite = np.isfinite(tr)
    own = np.abs(np.asarray(ref, np.float64) - tr)
    own_max = float(own[np.isfinite(own)].max()) if np.isfinite(own).any() else 0.0
    return _eps(t) * (8.0 + budget) * (np.abs(np.where(finite, tr, 0.0)) + max(rms(tr), scale)) \
        + 4.0 * own_max


@np.errstate(invalid="ignore", over="ignore")
def compare(got: np.ndarray, truth: np.ndarray | None, ref: np.ndarray, t: TensorType,
            budget: float, scale: float = 0.0, skip: np.ndarray | None = None) -> str | None:
    """None when `got` is a right answer for a value of type t, else why not. `skip`:
    elements not compared (`unstable_elements`)."""
    got = np.asarray(got)
    if got.shape != t.shape:
        return f"shape {got.shape}, expected {t.shape}"
    if got.dtype != t.dtype.np_dtype:
        return f"dtype {got.dtype}, expected {t.dtype.np_dtype}"
    if not t.dtype.is_float:
        if truth is not None and not np.array_equal(np.asarray(truth).astype(ref.dtype), ref):
            return None  # ill-conditioned: numpy's float32 run already differs from the truth
        bad = got != ref
        if skip is not None:
            bad &= ~skip
        if bad.any():
            i = np.argwhere(bad)[0]
            return f"element {tuple(int(k) for k in i)}: {got[tuple(i)]!r}, expected {ref[tuple(i)]!r}"
        return None
    truth = np.asarray(ref, np.float64) if truth is None else np.asarray(truth, np.float64)
    g = got.astype(np.float64)
    r = np.asarray(ref, np.float64)
    # Non-finite results: where the float32 reference is non-finite too, the candidate must
    # match its class (NaN, +inf, -inf); where only the truth is finite, the float32 range
    # was exceeded and either answer near the truth or the reference's class passes.
    nonfinite = ~np.isfinite(g) | ~np.isfinite(r)
    same_class = (np.isnan(g) & np.isnan(r)) | (g == r)
    tol = tolerance(truth, r, t, budget, scale)
    close = np.abs(g - truth) <= tol
    good = np.where(nonfinite, same_class | (np.isfinite(g) & np.isfinite(truth) & close), close)
    if skip is not None:
        good |= skip
    if good.all():
        return None
    i = tuple(int(k) for k in np.argwhere(~good)[0])
    return (f"element {i}: got {g[i]!r}, truth {truth[i]!r}, float32 reference {r[i]!r}, "
            f"tolerance {tol[i]:.3g} ({int(np.sum(~good))} of {g.size} elements off)")


def unstable_elements(truth: np.ndarray, moved: list[np.ndarray], t: TensorType, budget: float,
                      ref: np.ndarray, scale: float = 0.0) -> np.ndarray:
    """Elements of a value whose truth leaves its tolerance (or changes class: NaN, +-inf)
    in any of the `moved` runs (`rounding_noise_runs`): where a result hangs on a choice
    that rounding can flip, any path may land on either side, so those elements are not
    compared. The rest of the value still is."""
    a = np.asarray(truth, np.float64) if t.dtype.is_float else np.asarray(truth)
    bad = np.zeros(a.shape, bool)
    tol = tolerance(truth, ref, t, budget, scale) if t.dtype.is_float else None
    for m in moved:
        b = np.asarray(m, a.dtype).reshape(a.shape)
        if tol is None:
            bad |= a != b
            continue
        both = np.isfinite(a) & np.isfinite(b)
        with np.errstate(invalid="ignore"):
            same = np.where(both, np.abs(a - b) <= tol, (np.isnan(a) & np.isnan(b)) | (a == b))
        bad |= ~same
    return bad


def _selects(out: np.ndarray, args: list[np.ndarray]) -> bool:
    """Whether every element of out is +-0 or an element of the operands: a view, relu,
    max, gather, concat, pooling's max pick their results and round nothing."""
    vals = [np.ravel(np.asarray(a, np.float64)) for a in args if np.asarray(a).dtype.kind in "fiub"]
    pool = np.concatenate(vals + [np.zeros(1)]) if vals else np.zeros(1)
    o = np.ravel(out)
    return bool(np.all(np.isin(o[~np.isnan(o)], pool)))


def _noisy(a: np.ndarray, eps: float, own: float, local: float, rng: np.random.Generator
           ) -> np.ndarray:
    """a moved by up to own/2 eps: relative for an elementwise op (local 0), and at the
    scale of its terms for one that combines many (local: the rms of its operands), whose
    error is absolute (a sum that cancels to near 0 is off by eps times its terms). Exact
    zeros of an elementwise op stay (IEEE defines them, -0 included); those of a combining
    op move at the scale of its terms with a random sign (terms that cancel exactly in f64
    need not in f32; a vectorised sum of zeros starts from +0, a sequential one may end at
    -0), or only change sign when its operands are all zero."""
    if a.dtype.kind != "f" or not a.size:
        return a
    u = rng.uniform(-1.0, 1.0, a.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        moved = a + 0.5 * own * eps * (np.abs(a) + local) * u
        if local:
            moved = np.where(a == 0, np.copysign(moved, u), moved)
        else:
            moved = np.where(a == 0, a, moved)
    return moved.astype(a.dtype)


def rounding_noise_runs(graph: Graph, feeds: Mapping[str, np.ndarray], seed: int,
                        draws: int = 6, steps: int = 1):
    """The truth (graph widened to float64) re-run `draws` times with every value a node
    computes moved by the rounding that node may add (half its `_node_rounding`, in eps of
    the value's dtype in `graph`, uniform, so a well-conditioned result moves well inside
    its tolerance); values a node only selects (views, relu, max, gather) move with their
    operands and add nothing. Inputs, parameters and constants are exact: every path sees
    the same bits. Yields, per draw, [(outputs, {param: update})] per step (parameters
    carried between steps, as a train step's executable carries them)."""
    from .widen import wide_feeds, widened
    wide = widened(graph) or graph
    narrow = dict(zip(wide.all_values(), graph.all_values()))
    base = wide_feeds(dict(feeds), wide)
    for d in range(draws):
        try:
            yield _noisy_run(wide, narrow, base, np.random.default_rng([seed, d]), steps)
        except GraphcError:
            continue  # noise moved an index out of range: this draw proves nothing


def _noisy_run(wide: Graph, narrow: dict, base: dict, rng: np.random.Generator, steps: int) -> list:
    """One draw of `rounding_noise_runs`."""
    from .reference import run_node  # reference imports the op registry
    current, runs = dict(base), []
    for _ in range(steps):
        env = {v: current[v.name] for v in list(wide.inputs) + list(wide.params)}
        env.update({c: c.data for c in wide.constants})
        with np.errstate(all="ignore"):
            for n in wide.nodes:
                args = [env[v] for v in n.inputs]
                own = _node_rounding(n)
                combining = get_op(n.op).scalar is None
                local = max((rms(a) for a in args), default=0.0) if combining else 0.0
                for o, a in zip(n.outputs, run_node(n, args)):
                    t = narrow[o].type
                    narrower = any(_eps(t) > _eps(narrow[v].type) for v in n.inputs
                                   if v.dtype.is_float)  # a cast to f16/f32 rounds
                    if not narrower and _selects(a, args):
                        env[o] = a
                    else:
                        env[o] = _noisy(a, _eps(t), own, max(local, rms(a)) if combining else 0.0, rng)
        updates = {k: env[v] for k, v in wide.updates.items()}
        runs.append(([env[v] for v in wide.outputs], updates))
        current.update(updates)
    return runs
