"""ONNX Einsum, lowered at import to transposes, reshapes, sums and batched matmuls.

The equation is parsed into one label list per operand (an ellipsis becomes numbered
broadcast labels, right-aligned across operands as numpy does). Each operand first loses
its repeated labels (a diagonal, taken exactly with a gather of the flattened pair of axes)
and the labels no one else needs (summed out); size-1 broadcast dimensions are broadcast.
Operands then combine left to right: the labels both share and later need are batch
dimensions, those only they share are contracted, and the pair becomes one
(batch, M, K) @ (batch, K, N) matmul. A final sum and transpose give the output order.
Summation order is the matmul's and the sum's, not numpy's.
"""
from __future__ import annotations

from math import prod

import numpy as np

from ..ir import dtypes
from ..ir.graph import Value
from .context import NodeContext, converter
from .decompose import move_to_end
from .errors import OnnxError

_ELLIPSIS = "..."


def _split_term(term: str, where: str) -> list[str]:
    out, i = [], 0
    while i < len(term):
        if term.startswith(_ELLIPSIS, i):
            out.append(_ELLIPSIS)
            i += 3
        elif term[i].isalpha():
            out.append(term[i])
            i += 1
        else:
            raise OnnxError(f"Einsum: {where} has the character {term[i]!r}")
    if out.count(_ELLIPSIS) > 1:
        raise OnnxError(f"Einsum: {where} has more than one ellipsis")
    return out


def parse(equation: str, ranks: list[int]) -> tuple[list[list[str]], list[str]]:
    """Per-operand label lists and the output's, ellipses expanded into labels '.0', '.1',
    ... (the last broadcast dimension is always '.{E-1}')."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise OnnxError(f"Einsum: equation {equation!r} names {len(terms)} operands, the node "
                        f"has {len(ranks)}")
    parsed = [_split_term(t, f"operand {i} of {equation!r}") for i, t in enumerate(terms)]
    ell = 0
    for p, r in zip(parsed, ranks):
        letters = len([x for x in p if x != _ELLIPSIS])
        if (_ELLIPSIS in p and letters > r) or (_ELLIPSIS not in p and letters != r):
            raise OnnxError(f"Einsum: term {''.join(p)!r} does not fit a rank-{r} operand")
        if _ELLIPSIS in p:
            ell = max(ell, r - letters)

    def expand(p: list[str], width: int) -> list[str]:
        if _ELLIPSIS not in p:
            return p
        i = p.index(_ELLIPSIS)
        return p[:i] + [f".{j}" for j in range(ell - width, ell)] + p[i + 1:]

    labels = [expand(p, r - len([x for x in p if x != _ELLIPSIS])) for p, r in zip(parsed, ranks)]
    if arrow:
        out = _split_term(rhs, f"the output of {equation!r}")
        out = expand(out, ell) if _ELLIPSIS in out else out
        if len(set(out)) != len(out):
            raise OnnxError(f"Einsum: the output of {equation!r} repeats a label")
        known = {x for p in labels for x in p}
        if any(x not in known for x in out):
            raise OnnxError(f"Einsum: the output of {equation!r} has a label no operand has")
    else:  # implicit: broadcast dims, then the labels seen once, alphabetically
        counts: dict[str, int] = {}
        for p in labels:
            for x in p:
                counts[x] = counts.get(x, 0) + 1
        out = [f".{j}" for j in range(ell)] + sorted(x for x, n in counts.items()
                                                      if n == 1 and not x.startswith("."))
    return labels, out


def _diagonal(ctx: NodeContext, x: Value, lab: list[str]) -> tuple[Value, list[str]]:
    """Remove repeated labels by taking diagonals (gathers: exact)."""
    b = ctx.b
    while len(set(lab)) != len(lab):
        first = next(x_ for x_ in lab if lab.count(x_) > 1)
        i = lab.index(first)
        j = lab.index(first, i + 1)
        n = x.shape[i]
        if x.shape[j] != n:
            raise OnnxError(f"Einsum: label {first!r} has sizes {n} and {x.shape[j]} in one operand")
        x = move_to_end(b, x, [i, j])
        rest = [lab[k] for k in range(len(lab)) if k not in (i, j)]
        flat = b.reshape(x, x.shape[:-2] + (n * n,))
        x = b.gather(flat, b.const(np.arange(n, dtype=np.int64) * (n + 1), dtypes.i64),
                     axis=flat.type.rank - 1)
        lab = rest + [first]
    return x, lab


def _sum_out(ctx: NodeContext, x: Value, lab: list[str], drop: set[str]) -> tuple[Value, list[str]]:
    axes = tuple(i for i, l_ in enumerate(lab) if l_ in drop)
    if not axes:
        return x, lab
    return (ctx.b.sum(x, axes=axes, keepdims=False), [l_ for l_ in lab if l_ not in drop])


def _arrange(ctx: NodeContext, x: Value, lab: list[str], order: list[str]) -> Value:
    perm = tuple(lab.index(l_) for l_ in order)
    return x if perm == tuple(range(len(perm))) else ctx.b.transpose(x, perm=perm)


def _contract(ctx: NodeContext, a: Value, la: list[str], c: Value, lc: list[str],
              keep: set[str], size: dict[str, int]) -> tuple[Value, list[str]]:
    b = ctx.b
    batch = [l_ for l_ in la if l_ in lc and l_ in keep]
    inner = [l_ for l_ in la if l_ in lc and l_ not in keep]
    a_only = [l_ for l_ in la if l_ not in lc]
    c_only = [l_ for l_ in lc if l_ not in la]
    bs, m, kk, n = (prod(size[l_] for l_ in g) for g in (batch, a_only, inner, c_only))
    a3 = b.reshape(_arrange(ctx, a, la, batch + a_only + inner), (bs, m, kk))
    c3 = b.reshape(_arrange(ctx, c, lc, batch + inner + c_only), (bs, kk, n))
    y = b.matmul(a3, c3)
    lab = batch + a_only + c_only
    return b.reshape(y, tuple(size[l_] for l_ in lab)), lab


@converter("Einsum")
def _einsum(ctx: NodeContext):
    xs = [ctx.x(i) for i in range(len(ctx.inputs))]
    if not xs:
        raise OnnxError("Einsum: no operands")
    if any(x.dtype != xs[0].dtype for x in xs) or xs[0].dtype.is_bool:
        ctx.unsupported(f"operands of dtypes {[str(x.dtype) for x in xs]}")
    labels, out = parse(str(ctx.attr("equation")), [x.type.rank for x in xs])
    size: dict[str, int] = {}
    for x, lab in zip(xs, labels):
        for l_, d in zip(lab, x.shape):
            if size.get(l_, 1) not in (1, d) and d != 1:
                raise OnnxError(f"Einsum: label {l_!r} has sizes {size[l_]} and {d}")
            size[l_] = max(size.get(l_, 1), d) if l_ in size else d
    b = ctx.b
    ops = []
    for i, (x, lab) in enumerate(zip(xs, labels)):
        x, lab = _diagonal(ctx, x, list(lab))
        want = tuple(size[l_] for l_ in lab)
        if x.shape != want:  # size-1 broadcast dimensions
            x = b.broadcast(x, want)
        others = {l_ for j, lb in enumerate(labels) if j != i for l_ in lb} | set(out)
        x, lab = _sum_out(ctx, x, lab, set(lab) - others)
        ops.append((x, lab))
    acc, lab = ops[0]
    for i in range(1, len(ops)):
        x, lx = ops[i]
        later = {l_ for _, lb in ops[i + 1:] for l_ in lb} | set(out)
        acc, lab = _sum_out(ctx, acc, lab, {l_ for l_ in lab if l_ not in later and l_ not in lx})
        x, lx = _sum_out(ctx, x, lx, {l_ for l_ in lx if l_ not in later and l_ not in lab})
        acc, lab = _contract(ctx, acc, lab, x, lx, later, size)
    acc, lab = _sum_out(ctx, acc, lab, set(lab) - set(out))
    return [_arrange(ctx, acc, lab, out)]
