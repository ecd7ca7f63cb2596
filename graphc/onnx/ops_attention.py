"""ONNX Attention (opsets 23-25) from registry ops at import.

softmax((Q*s) (K*s)^T [softcapped] + bias) V with s = sqrt(scale) (scale defaults to
1/sqrt(head size)), as ONNX's reference and function body compute it:

- 3-D inputs (batch, seq, heads*size) are split into heads by q_num_heads/kv_num_heads;
- past_key/past_value are prepended to K/V (and returned as present_key/present_value);
- the bias adds the attention mask (bool: 0 where true, -inf where false; shorter than the
  keys: padded with -inf/false), the causal mask (bottom-right aligned: query i sees key
  j <= i + offset, offset = past length, or nonpad_kv_seqlen[b] - q_len), the sliding
  window (left/right_window_size) and the nonpad_kv_seqlen padding mask; nonpad_kv_seqlen
  may be a graph input (the masks are then compared in the graph);
- grouped-query attention (q heads a multiple of kv heads) groups the query heads of each
  kv head into one matmul instead of repeating K and V;
- a row whose bias is -inf everywhere gets probabilities 0 (so Y = 0), and the softmax of
  a row whose maximum is -inf is 0, not NaN (ONNX's rule);
- qk_matmul_output gives the scores (mode 0; after softcap when one is set, as the
  reference does), after softcap (1), with the bias (2) or the probabilities (3);
- softmax_precision casts the scores before the softmax; f16 inputs are computed in f32
  and rounded once (closer to the exact result than f16 arithmetic op by op).
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import dtypes
from ..ir.graph import Value
from .context import NodeContext, converter, graphc_dtype
from .decompose import k
from .errors import OnnxError


def _heads(ctx: NodeContext, x: Value, heads: int | None, what: str) -> Value:
    """(B, S, H*D) -> (B, H, S, D); 4-D inputs pass."""
    if x.type.rank == 4:
        return x
    if x.type.rank != 3:
        raise OnnxError(f"Attention: {what} {x.type} must have rank 3 or 4")
    if not heads or x.shape[2] % heads:
        raise OnnxError(f"Attention: {what} {x.type} with a 3-D layout needs its num_heads "
                        f"attribute dividing {x.shape[2]}")
    bsz, s, hd = x.shape
    return ctx.b.transpose(ctx.b.reshape(x, (bsz, s, heads, hd // heads)), perm=(0, 2, 1, 3))


def _neg_inf_where_false(ctx: NodeContext, allowed: Value, like: Value) -> Value:
    return ctx.b.where(allowed, k(ctx.b, 0.0, like), k(ctx.b, -np.inf, like))


def _grouped_matmul(ctx: NodeContext, a: Value, c: Value, transpose_b: bool) -> Value:
    """a (B, Hq, S, X) @ c (B, Hk, ...) per kv head: the Hq/Hk query heads of a group go
    through their kv head's matrix in one matmul (as np.repeat of K/V would give)."""
    b = ctx.b
    bsz, hq, s, x = a.shape
    hk = c.shape[1]
    if hq == hk:
        return b.matmul(a, c, transpose_b=transpose_b)
    grouped = b.reshape(a, (bsz, hk, (hq // hk) * s, x))
    y = b.matmul(grouped, c, transpose_b=transpose_b)
    return b.reshape(y, (bsz, hq, s, y.shape[-1]))


@converter("Attention")
def _attention(ctx: NodeContext):
    b = ctx.b
    q0, k0, v0 = ctx.x(0), ctx.x(1), ctx.x(2)
    if not q0.dtype.is_float or k0.dtype != q0.dtype or v0.dtype != q0.dtype:
        raise OnnxError(f"Attention: Q, K, V must share a float dtype, got {q0.type}, "
                        f"{k0.type}, {v0.type}")
    if not q0.type.rank == k0.type.rank == v0.type.rank:
        raise OnnxError("Attention: Q, K and V must have the same rank")
    qh = ctx.attr("q_num_heads", None)
    kvh = ctx.attr("kv_num_heads", None)
    q = _heads(ctx, q0, qh, "Q")
    kk = _heads(ctx, k0, kvh, "K")
    v = _heads(ctx, v0, kvh, "V")
    bsz, hq, sq, dq = q.shape
    mask, past_k, past_v = ctx.opt(3), ctx.opt(4), ctx.opt(5)
    nonpad = ctx.opt(6)
    if (past_k is None) != (past_v is None):
        raise OnnxError("Attention: past_key and past_value come together")
    if nonpad is not None and past_k is not None:
        raise OnnxError("Attention: nonpad_kv_seqlen cannot be combined with a past cache")
    if past_k is not None:
        kk = b.concat(past_k, kk, axis=2)
        v = b.concat(past_v, v, axis=2)
    present_k, present_v = kk, v
    out_dt = q.dtype
    scale_dt = q.dtype.np_dtype  # the scale rounds to the inputs' dtype, as in ONNX's body
    if q.dtype == dtypes.f16:  # f16 works in f32 and rounds once at the end
        q, kk, v = (b.cast(t, to=dtypes.f32) for t in (q, kk, v))
        if mask is not None and mask.dtype == dtypes.f16:
            mask = b.cast(mask, to=dtypes.f32)
    hk, skv = kk.shape[1], kk.shape[2]
    if hq % hk or v.shape[1] != hk:
        raise OnnxError(f"Attention: {hq} query heads do not group over {hk} key/value heads")
    scale = ctx.attr("scale", None)
    scale = 1.0 / math.sqrt(dq) if scale is None else float(scale)
    s = k(b, float(np.asarray(math.sqrt(scale), scale_dt)), q)
    scores = _grouped_matmul(ctx, b.mul(q, s), b.mul(kk, s), transpose_b=True)  # (B,Hq,Sq,Skv)
    softcap = float(ctx.attr("softcap", 0.0))
    if softcap > 0:
        scores = b.mul(b.tanh(b.div(scores, k(b, softcap, scores))), k(b, softcap, scores))
    bias = _bias(ctx, mask, past_k, nonpad, sq, skv, q)
    mode = int(ctx.attr("qk_matmul_output_mode", 0))
    if mode not in (0, 1, 2, 3):
        raise OnnxError(f"Attention: qk_matmul_output_mode={mode}")
    with_bias = scores if bias is None else b.add(scores, bias)
    qk_out = with_bias if mode == 2 else scores
    logits = with_bias
    if ctx.has_attr("softmax_precision"):
        to = graphc_dtype(int(ctx.attr("softmax_precision")), "softmax_precision")
        if to != logits.dtype:
            logits = b.cast(logits, to=to)
    if bias is None:
        probs = b.softmax(logits, axis=3)
    else:
        probs = _guarded_softmax(ctx, logits)
        dead = b.equal(b.max(bias, axes=(bias.type.rank - 1,), keepdims=True),
                       k(b, -np.inf, bias))  # a row that may attend to nothing: 0
        probs = b.where(dead, k(b, 0.0, probs), probs)
    if mode == 3:
        qk_out = probs
    if probs.dtype != q.dtype:
        probs = b.cast(probs, to=q.dtype)
    if qk_out.dtype != out_dt:
        qk_out = b.cast(qk_out, to=out_dt)
    y = _grouped_matmul(ctx, probs, v, transpose_b=False)  # (B, Hq, Sq, Dv)
    if y.dtype != out_dt:
        y = b.cast(y, to=out_dt)
    if q0.type.rank == 3:
        y = b.reshape(b.transpose(y, perm=(0, 2, 1, 3)), (bsz, sq, hq * y.shape[-1]))
    if qk_out.shape != (bsz, hq, sq, skv):
        qk_out = b.broadcast(qk_out, (bsz, hq, sq, skv))
    return [y, present_k, present_v, qk_out]


def _guarded_softmax(ctx: NodeContext, x: Value) -> Value:
    """softmax over the last axis that gives 0, not NaN, for a row of -inf."""
    b = ctx.b
    ax = x.type.rank - 1
    m = b.max(x, axes=(ax,), keepdims=True)
    m = b.where(b.equal(m, k(b, -np.inf, m)), k(b, 0.0, m), m)
    e = b.exp(b.sub(x, m))
    total = b.sum(e, axes=(ax,), keepdims=True)
    total = b.where(b.equal(total, k(b, 0.0, total)), k(b, 1.0, total), total)
    return b.div(e, total)


def _bias(ctx: NodeContext, mask: Value | None, past_k: Value | None, nonpad: Value | None,
          sq: int, skv: int, like: Value) -> Value | None:
    """The additive bias (0 or -inf, plus a float mask's values), right-aligned to
    (B, H, Sq, Skv); None when nothing masks."""
    b = ctx.b
    causal = bool(ctx.attr("is_causal", 0))
    left = int(ctx.attr("left_window_size", -1))
    right = int(ctx.attr("right_window_size", -1))
    if mask is not None and mask.shape[-1] < skv:  # shorter than the keys: pad, masked
        r = mask.type.rank
        high = [0] * (r - 1) + [skv - mask.shape[-1]]
        if mask.dtype.is_bool:
            widened = b.pad(b.cast(mask, to=dtypes.i32), low=[0] * r, high=high,
                            interior=[0] * r, value=0.0)
            mask = b.not_equal(widened, b.const(np.asarray(0), dtypes.i32))
        else:
            mask = b.pad(mask, low=[0] * r, high=high, interior=[0] * r, value=-np.inf)
    if mask is not None and mask.dtype.is_bool:
        mask = _neg_inf_where_false(ctx, mask, like)
    elif mask is not None and mask.dtype != like.dtype:
        mask = b.cast(mask, to=like.dtype)
    bias = mask
    rows = b.const(np.arange(sq, dtype=np.int64).reshape(sq, 1), dtypes.i64)
    cols = b.const(np.arange(skv, dtype=np.int64).reshape(1, skv), dtypes.i64)
    if nonpad is not None:  # per batch: offset[b] = nonpad[b] - q_len, as (B, 1, 1, 1)
        n_b = nonpad if nonpad.dtype == dtypes.i64 else b.cast(nonpad, to=dtypes.i64)
        n_b = b.reshape(n_b, (n_b.type.size, 1, 1, 1))
        offset: Value | int = b.sub(n_b, b.const(np.asarray(sq), dtypes.i64))
    else:
        offset = past_k.shape[2] if past_k is not None else 0

    def shifted_rows() -> Value:  # i + offset, as (Sq, 1) or (B, 1, Sq, 1)
        if isinstance(offset, int):
            return b.const(np.arange(sq, dtype=np.int64).reshape(sq, 1) + offset, dtypes.i64)
        return b.add(rows, offset)

    def add(extra: Value) -> None:
        nonlocal bias
        bias = extra if bias is None else b.add(bias, extra)

    if causal:
        add(_neg_inf_where_false(ctx, b.less_equal(cols, shifted_rows()), like))
    if left >= 0 or right >= 0:
        diff = b.sub(shifted_rows(), cols)  # (i + offset) - j
        allowed = None
        if left >= 0:
            allowed = b.less_equal(diff, b.const(np.asarray(left), dtypes.i64))
        if right >= 0:
            ok = b.less_equal(b.neg(diff), b.const(np.asarray(right), dtypes.i64))
            allowed = ok if allowed is None else b.logical_and(allowed, ok)
        add(_neg_inf_where_false(ctx, allowed, like))
    if nonpad is not None:
        n_b = nonpad if nonpad.dtype == dtypes.i64 else b.cast(nonpad, to=dtypes.i64)
        keep = b.less(cols, b.reshape(n_b, (n_b.type.size, 1, 1, 1)))  # (B, 1, 1, Skv)
        add(_neg_inf_where_false(ctx, keep, like))
    return bias
