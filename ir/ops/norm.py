"""Normalisation: batch_norm (training statistics), batch_norm_inference (running
statistics) and layer_norm.

Variances are two-pass (centre, then square), in the references and the decompositions.
"""
from __future__ import annotations

from math import prod

import numpy as np

from ..errors import AttrError, ShapeError
from ..registry import Attr, Fusion, OpDef, register
from ..types import TensorType, format_shape as _fs
from ._common import check_axes, require_float, same_dtype
from ._nn_common import _F64, _DIV_FLOPS, _RSQRT_FLOPS, _io_cost, _up, _down

# --- normalisation -----------------------------------------------------------------------------

_NORM_ATTRS = {"axis": Attr("int", 1), "eps": Attr("float", 1e-5)}


def _bshape(rank: int, axis: int, c: int) -> tuple[int, ...]:
    return tuple(c if i == axis else 1 for i in range(rank))


def _other_axes(rank: int, axis: int) -> tuple[int, ...]:
    return tuple(i for i in range(rank) if i != axis)


def _check_norm(op: str, x: TensorType, params, names, a: dict):
    require_float(op, x)
    dt = same_dtype(op, [x, *params])
    ax = a["axis"]
    if not 0 <= ax < x.rank:
        raise ShapeError(f"{op}: channel axis {ax} is out of range for input {x} (axes are "
                         "canonical: 0..rank-1)")
    if a["eps"] < 0:
        raise AttrError(f"{op}: eps={a['eps']} must be >= 0")
    c = x.shape[ax]
    for name, t in zip(names, params):
        if t.shape != (c,):
            raise ShapeError(f"{op}: {name} has shape {_fs(t.shape)} but input {x} has {c} "
                             f"channels on axis {ax}; expected ({c},)")
    return dt, c


def _bn_infer(ts, a):
    x = ts[0]
    dt, c = _check_norm("batch_norm", x, ts[1:], ("gamma", "beta"), a)
    if x.size == 0 and c != 0:
        raise ShapeError(f"batch_norm: input {x} has no elements per channel to take batch "
                         "statistics over")
    return [x, TensorType((c,), dt), TensorType((c,), dt)]


def _bn_ref(x, gamma, beta, axis, eps):
    red = _other_axes(x.ndim, axis)
    bs = _bshape(x.ndim, axis, x.shape[axis])
    xd = x.astype(_F64)
    mean = xd.mean(axis=red, keepdims=True)
    xc = xd - mean
    var = (xc * xc).mean(axis=red, keepdims=True)  # two-pass, biased
    y = xc / np.sqrt(var + eps) * gamma.astype(_F64).reshape(bs) + beta.astype(_F64).reshape(bs)
    return y.astype(x.dtype), mean.reshape(-1).astype(x.dtype), var.reshape(-1).astype(x.dtype)


def _bn_vjp(b, n, gs):
    gy, gmean, gvar = gs
    x, gamma, _ = n.inputs
    ax, eps = n.attrs["axis"], n.attrs["eps"]
    rank, c = x.type.rank, x.shape[ax]
    red = _other_axes(rank, ax)
    count = max(prod(x.shape[i] for i in red), 1)
    bs = _bshape(rank, ax, c)
    xc = b.sub(x, b.reshape(n.outputs[1], bs))
    gx = ggamma = gbeta = None
    if gy is not None:
        rstd = b.rsqrt(b.add(b.reshape(n.outputs[2], bs), b.scalar(eps, x)))
        xhat = b.mul(xc, rstd)
        gbeta = b.sum(gy, axes=red, keepdims=False)
        ggamma = b.sum(b.mul(gy, xhat), axes=red, keepdims=False)
        gxhat = b.mul(gy, b.reshape(gamma, bs))
        # d xhat/dx through the batch mean and variance:
        # gx = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
        centred = b.sub(gxhat, b.mean(gxhat, axes=red, keepdims=True))
        proj = b.mul(xhat, b.mean(b.mul(gxhat, xhat), axes=red, keepdims=True))
        gx = b.mul(rstd, b.sub(centred, proj))
    if gmean is not None:  # mean = sum(x) / count
        t = b.broadcast(b.div(b.reshape(gmean, bs), b.scalar(float(count), gmean)), x.shape)
        gx = t if gx is None else b.add(gx, t)
    if gvar is not None:  # var = mean((x - mean)^2); the path through mean sums to zero
        t = b.mul(xc, b.mul(b.reshape(gvar, bs), b.scalar(2.0 / count, gvar)))
        gx = t if gx is None else b.add(gx, t)
    return [gx, ggamma, gbeta]


def _centred(b, x, axes: tuple[int, ...]):
    """(mean, x - mean) over axes, keepdims, accurate to the data's spread, not its size.

    The data is first shifted by each group's first element (exact or nearly so, by
    Sterbenz's lemma, for values of similar size), so the mean is taken of deviations and
    x - mean is (x - x0) - mean(x - x0): the mean is carried in two numbers. With f32 data of
    mean 1e4 and spread 3, a plain mean's rounding (~5e-4) alone would shift every
    normalised value by ~1e-4; this keeps it to a few ulps. (The float64 references take a
    plain mean: on such data they are the less accurate, by ~eps64 * mean / spread.)
    """
    if any(x.shape[a] == 0 for a in axes):
        mean = b.mean(x, axes=axes, keepdims=True)
        return mean, b.sub(x, mean)
    rank = x.type.rank
    first = b.slice(x, starts=(0,) * rank, steps=(1,) * rank,
                    stops=tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    # An infinite or NaN first element would poison every deviation: shift by 0 instead.
    first = b.where(b.less(b.abs(first), b.scalar(np.inf, first)), first, b.scalar(0.0, first))
    shifted = b.sub(x, first)
    mean = b.mean(shifted, axes=axes, keepdims=True)
    return b.add(mean, first), b.sub(shifted, mean)


def _normalize(b, xc, var, eps: float, gamma, beta):
    """xc * (1 / sqrt(var + eps)) * gamma + beta: one division per row or channel, a
    multiplication per element (within an ulp of dividing each element)."""
    inv = b.div(b.scalar(1.0, var), b.sqrt(b.add(var, b.scalar(eps, var))))
    return b.add(b.mul(b.mul(xc, inv), gamma), beta)


def _bn_decompose(b, n):
    x, gamma, beta = n.inputs
    ax, eps = n.attrs["axis"], n.attrs["eps"]
    red, bs, c = _other_axes(x.type.rank, ax), _bshape(x.type.rank, ax, x.shape[ax]), x.shape[ax]
    xu = _up(b, x)
    mean, xc = _centred(b, xu, red)
    var = b.mean(b.mul(xc, xc), axes=red, keepdims=True)  # two-pass, biased
    y = _normalize(b, xc, var, eps, b.reshape(_up(b, gamma), bs), b.reshape(_up(b, beta), bs))
    return [_down(b, y, x.dtype), _down(b, b.reshape(mean, (c,)), x.dtype),
            _down(b, b.reshape(var, (c,)), x.dtype)]


def _bn_cost(ts, outs, a):
    x = ts[0]
    c = x.shape[a["axis"]]
    # Per element: sum for the mean, (sub, square, add) for the variance, (sub, mul) to
    # normalise, (mul, add) for the affine. Per channel: two divisions by the count, an rsqrt.
    return _io_cost(8 * x.size + c * (2 * _DIV_FLOPS + _RSQRT_FLOPS + 1), ts, outs)


register(OpDef(
    "batch_norm", Fusion.REDUCTION, _bn_infer, _bn_ref, 3, dict(_NORM_ATTRS), _bn_vjp, _bn_cost,
    num_outputs=3,
    doc="training-mode batch normalisation over every axis but `axis` (the channel axis): "
        "outputs y = (x - mean) / sqrt(var + eps) * gamma + beta, the batch mean (C,) and the "
        "biased batch variance (C,)",
    decompose=_bn_decompose))


def _bni_infer(ts, a):
    _check_norm("batch_norm_inference", ts[0], ts[1:],
                ("gamma", "beta", "running_mean", "running_var"), a)
    return ts[0]


def _bni_ref(x, gamma, beta, running_mean, running_var, axis, eps):
    bs = _bshape(x.ndim, axis, x.shape[axis])
    f = lambda t: t.astype(_F64).reshape(bs)  # noqa: E731
    y = (x.astype(_F64) - f(running_mean)) / np.sqrt(f(running_var) + eps) * f(gamma) + f(beta)
    return y.astype(x.dtype)


def _bni_decompose(b, n):
    x, gamma, beta, rmean, rvar = n.inputs
    bs = _bshape(x.type.rank, n.attrs["axis"], x.shape[n.attrs["axis"]])
    f = lambda t: b.reshape(_up(b, t), bs)  # noqa: E731
    xc = b.sub(_up(b, x), f(rmean))
    return [_down(b, _normalize(b, xc, f(rvar), n.attrs["eps"], f(gamma), f(beta)), x.dtype)]


def _bni_vjp(b, n, g):
    x, gamma, _, rmean, rvar = n.inputs
    ax, eps = n.attrs["axis"], n.attrs["eps"]
    rank, c = x.type.rank, x.shape[ax]
    red = _other_axes(rank, ax)
    bs = _bshape(rank, ax, c)
    s = b.rsqrt(b.add(b.reshape(rvar, bs), b.scalar(eps, x)))       # (var + eps)^-1/2
    xc = b.sub(x, b.reshape(rmean, bs))
    scale = b.mul(b.reshape(gamma, bs), s)
    gbeta = b.sum(g, axes=red, keepdims=False)
    g_xc = b.sum(b.mul(g, xc), axes=red, keepdims=False)             # sum(g * (x - mean))
    s_c = b.reshape(s, (c,))
    ggamma = b.mul(g_xc, s_c)
    gmean = b.neg(b.mul(gbeta, b.reshape(scale, (c,))))
    s3 = b.mul(s_c, b.mul(s_c, s_c))                                  # d s / d var = -s^3 / 2
    gvar = b.mul(b.mul(g_xc, gamma), b.mul(s3, b.scalar(-0.5, g)))
    return [b.mul(g, scale), ggamma, gbeta, gmean, gvar]


register(OpDef(
    "batch_norm_inference", Fusion.REDUCTION, _bni_infer, _bni_ref, 5, dict(_NORM_ATTRS),
    _bni_vjp,
    # Per element: (sub, mul, mul, add); per channel: add eps and rsqrt.
    lambda ts, outs, a: _io_cost(4 * ts[0].size + ts[1].size * (1 + _RSQRT_FLOPS), ts, outs),
    doc="batch normalisation with given statistics: (x - running_mean) / sqrt(running_var + "
        "eps) * gamma + beta, per channel on `axis`",
    decompose=_bni_decompose))


def _ln_infer(ts, a):
    op = "layer_norm"
    x, gamma, beta = ts
    require_float(op, x)
    same_dtype(op, ts)
    if a["eps"] < 0:
        raise AttrError(f"{op}: eps={a['eps']} must be >= 0")
    axes = check_axes(op, a["axes"], x.rank)
    k = len(axes)
    if k == 0 or axes != tuple(range(x.rank - k, x.rank)):
        raise ShapeError(f"{op}: axes {axes} must be trailing axes of input {x}, e.g. "
                         f"({max(x.rank - 1, 0)},)")
    want = x.shape[x.rank - k:]
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t.shape != want:
            raise ShapeError(f"{op}: {name} has shape {_fs(t.shape)} but the normalised axes "
                             f"{axes} of input {x} have shape {_fs(want)}")
    if prod(want) == 0:
        raise ShapeError(f"{op}: the normalised axes {axes} of input {x} hold no elements")
    return x


def _ln_ref(x, gamma, beta, axes, eps):
    xd = x.astype(_F64)
    mean = xd.mean(axis=axes, keepdims=True)
    xc = xd - mean
    var = (xc * xc).mean(axis=axes, keepdims=True)
    return (xc / np.sqrt(var + eps) * gamma.astype(_F64) + beta.astype(_F64)).astype(x.dtype)


def _ln_vjp(b, n, g):
    x, gamma, _ = n.inputs
    axes, eps = n.attrs["axes"], n.attrs["eps"]
    xc = b.sub(x, b.mean(x, axes=axes, keepdims=True))
    var = b.mean(b.mul(xc, xc), axes=axes, keepdims=True)
    rstd = b.rsqrt(b.add(var, b.scalar(eps, x)))
    xhat = b.mul(xc, rstd)
    gxhat = b.mul(g, gamma)
    centred = b.sub(gxhat, b.mean(gxhat, axes=axes, keepdims=True))
    proj = b.mul(xhat, b.mean(b.mul(gxhat, xhat), axes=axes, keepdims=True))
    gx = b.mul(rstd, b.sub(centred, proj))
    return [gx, b.sum_to(b.mul(g, xhat), gamma.shape), b.sum_to(g, gamma.shape)]


def _ln_decompose(b, n):
    x, gamma, beta = n.inputs
    axes = n.attrs["axes"]
    _, xc = _centred(b, _up(b, x), axes)
    var = b.mean(b.mul(xc, xc), axes=axes, keepdims=True)  # two-pass, biased
    # gamma and beta have the trailing axes' shape: numpy broadcasting lines them up.
    return [_down(b, _normalize(b, xc, var, n.attrs["eps"], _up(b, gamma), _up(b, beta)),
                  x.dtype)]


def _ln_cost(ts, outs, a):
    x = ts[0]
    group = prod(x.shape[i] for i in a["axes"])
    rows = x.size // group if group else 0
    # As batch_norm: 8 per element; per normalised row: two divisions and an rsqrt.
    return _io_cost(8 * x.size + rows * (2 * _DIV_FLOPS + _RSQRT_FLOPS + 1), ts, outs)


register(OpDef(
    "layer_norm", Fusion.REDUCTION, _ln_infer, _ln_ref, 3,
    {"axes": Attr("ints"), "eps": Attr("float", 1e-5)}, _ln_vjp, _ln_cost,
    doc="normalise over the trailing `axes` (biased variance), then scale by gamma and shift "
        "by beta, which have the shape of those axes",
    decompose=_ln_decompose))
