"""Reductions over canonical axes (sorted, non-negative), with keepdims."""
from __future__ import annotations

from math import prod

import numpy as np

from .. import dtypes
from ..errors import ShapeError
from ..lowering import lower_argmax, lower_reduction
from ..registry import Attr, Cost, Fusion, OpDef, register
from ..types import TensorType
from ._common import check_axes, normalize_axis, reduced_shape, require_float, require_numeric

_AXES = {"axes": Attr("ints"), "keepdims": Attr("bool", False)}


def _reduce_cost(ts, outs, a) -> Cost:
    return Cost(ts[0].size, ts[0].nbytes + outs[0].nbytes)


def _grad_to_input(b, n, g):
    """Reshape g back to keepdims form and broadcast it over the input's shape."""
    x = n.inputs[0]
    kept = reduced_shape(x.shape, n.attrs["axes"], True)
    return b.broadcast(b.reshape(g, kept), x.shape)


def _reduction(name: str, ref, vjp, kind: str) -> None:
    def infer(ts: list[TensorType], a: dict) -> TensorType:
        (t,) = ts
        (require_float if kind == "float" else require_numeric)(name, t)
        axes = check_axes(name, a["axes"], t.rank)
        if name in ("max", "min"):
            for ax in axes:
                if t.shape[ax] == 0:
                    raise ShapeError(f"{name}: cannot reduce over empty axis {ax} of {t}")
        return TensorType(reduced_shape(t.shape, axes, a["keepdims"]), t.dtype)

    def reference(x, axes, keepdims):
        return np.asarray(ref(x, axis=tuple(axes), keepdims=keepdims)).astype(x.dtype)

    register(OpDef(name, Fusion.REDUCTION, infer, reference, 1, dict(_AXES), vjp, _reduce_cost,
                   lower=lambda ctx, node: lower_reduction(ctx, node, name), combine=name))


def _sum_vjp(b, n, g):
    return [_grad_to_input(b, n, g)]


def _mean_vjp(b, n, g):
    x = n.inputs[0]
    count = prod(x.shape[a] for a in n.attrs["axes"])
    return [b.div(_grad_to_input(b, n, g), b.scalar(float(max(count, 1)), g))]


def _extremum_vjp(b, n, g):
    """Split the gradient evenly among tied extrema (as JAX does)."""
    x = n.inputs[0]
    y = _grad_to_input(b, n, n.outputs[0])
    mask = b.cast(b.equal(x, y), to=x.dtype)
    count = b.sum(mask, axes=n.attrs["axes"], keepdims=True)
    share = b.div(b.reshape(g, count.shape), count)
    return [b.mul(mask, b.broadcast(share, x.shape))]


_reduction("sum", np.sum, _sum_vjp, "numeric")
_reduction("mean", np.mean, _mean_vjp, "float")
_reduction("max", np.max, _extremum_vjp, "numeric")
_reduction("min", np.min, _extremum_vjp, "numeric")


def _argmax_infer(ts: list[TensorType], a: dict) -> TensorType:
    (t,) = ts
    require_numeric("argmax", t)
    if t.rank == 0:
        raise ShapeError(f"argmax needs an operand of rank >= 1, got {t}")
    ax = normalize_axis("argmax", a["axis"], t.rank)
    if ax != a["axis"]:
        raise ShapeError(f"argmax: axis {a['axis']} must be canonical (0..rank-1)")
    if t.shape[ax] == 0:
        raise ShapeError(f"argmax: cannot reduce over empty axis {ax} of {t}")
    return TensorType(reduced_shape(t.shape, (ax,), a["keepdims"]), dtypes.i64)


def _argmax_ref(x, axis, keepdims):
    return np.argmax(x, axis=axis, keepdims=keepdims).astype(np.int64)


register(OpDef("argmax", Fusion.REDUCTION, _argmax_infer, _argmax_ref, 1,
               {"axis": Attr("int"), "keepdims": Attr("bool", False)}, None, _reduce_cost,
               lower=lower_argmax,
               doc="index of the first maximum along one axis (i64)"))

