"""Recurrent ONNX ops (LSTM, GRU, RNN), unrolled over the static sequence length.

The input projection of every time step is one GEMM over the whole sequence; each step then
adds one (batch, H) x (H, gates*H) GEMM for the recurrence and elementwise gate math, which
the fusion pass merges. Gate orders follow ONNX: LSTM i, o, f, c; GRU z, r, h.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.graph import Value
from .context import NodeContext, converter

_ACTIVATIONS = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu"}


def _part(ctx: NodeContext, v: Value, index: int) -> Value:
    """v[index] along axis 0 (a constant stays a constant)."""
    if v.kind == "const":
        return ctx.b.const(np.ascontiguousarray(v.data[index]), v.dtype)
    r = v.type.rank
    s = ctx.b.slice(v, starts=[index] + [0] * (r - 1), stops=[index + 1] + list(v.shape[1:]),
                    steps=[1] * r)
    return ctx.b.reshape(s, v.shape[1:])


def _cols(ctx: NodeContext, v: Value, k: int, h: int) -> Value:
    """Gate k of a (batch, gates*h) value."""
    r = v.type.rank
    return ctx.b.slice(v, starts=[0] * (r - 1) + [k * h], stops=list(v.shape[:-1]) + [(k + 1) * h],
                       steps=[1] * r)


class _Rnn:
    """What LSTM, GRU and RNN share: inputs, directions, layouts, activations, outputs."""

    def __init__(self, ctx: NodeContext, gates: int, default_acts: list[str]) -> None:
        self.ctx = ctx
        b = ctx.b
        self.layout = int(ctx.attr("layout", 0))
        x = ctx.x(0)
        ctx.expect_shape(x, 3, "X")
        if self.layout:
            x = b.transpose(x, perm=(1, 0, 2))
        self.x = x
        self.seq, self.batch, n_in = x.shape
        ctx.expect_shape(ctx.x(2), 3, "R")
        self.h = int(ctx.attr("hidden_size", ctx.x(2).shape[-1]))
        self.gates = gates
        direction = ctx.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            ctx.unsupported(f"direction={direction!r}")
        self.dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        nd, g = len(self.dirs), gates * self.h
        ctx.expect_shape(ctx.x(1), (nd, g, n_in), "W (directions, gates*hidden, input)")
        ctx.expect_shape(ctx.x(2), (nd, g, self.h), "R (directions, gates*hidden, hidden)")
        if ctx.has_input(3):
            ctx.expect_shape(ctx.x(3), (nd, 2 * g), "B (directions, 2*gates*hidden)")
        for i in (5, 6):  # initial_h, initial_c
            if ctx.has_input(i):
                want = (self.batch, nd, self.h) if self.layout else (nd, self.batch, self.h)
                ctx.expect_shape(ctx.x(i), want, f"input {i} (an initial state)")
        if ctx.has_input(7):  # LSTM peepholes
            ctx.expect_shape(ctx.x(7), (nd, 3 * self.h), "P (directions, 3*hidden)")
        if ctx.has_input(4):
            lens = ctx.const_ints(4, "sequence_lens")
            if any(n != self.seq for n in lens):
                ctx.unsupported(f"sequence_lens {lens} shorter than the sequence ({self.seq})")
        if ctx.has_attr("activation_alpha") or ctx.has_attr("activation_beta"):
            ctx.unsupported("activation_alpha/activation_beta")
        acts = ctx.attr("activations", default_acts * len(self.dirs))
        for a in acts:
            if a not in _ACTIVATIONS:
                ctx.unsupported(f"activation {a!r} (graphc supports {', '.join(_ACTIVATIONS)})")
        self.acts = [acts[i * len(default_acts):(i + 1) * len(default_acts)]
                     for i in range(len(self.dirs))]
        self.clip = ctx.attr("clip", None)

    def act(self, name: str, v: Value) -> Value:
        return self.ctx.b.op(_ACTIVATIONS[name], v)

    def clipped(self, v: Value) -> Value:
        if self.clip is None:
            return v
        c = float(self.clip)
        b = self.ctx.b
        return b.minimum(b.maximum(v, self.ctx.scalar(-c, v)), self.ctx.scalar(c, v))

    def state(self, i: int, d: int) -> Value:
        """Initial state input i for direction d, (batch, H); zeros when absent."""
        ctx = self.ctx
        v = ctx.opt(i)
        if v is None:
            return ctx.b.const(np.zeros((self.batch, self.h)), self.x.dtype)
        if self.layout:
            v = ctx.b.transpose(v, perm=(1, 0, 2))
        return _part(ctx, v, d)

    def projections(self, d: int) -> tuple[list[Value], Value, Value | None]:
        """Per step X_t W^T + Wb (batch, gates*H), in time order; R (gates*H, H); Rb."""
        ctx, b = self.ctx, self.ctx.b
        w, r = _part(ctx, ctx.x(1), d), _part(ctx, ctx.x(2), d)
        flat = b.reshape(self.x, (self.seq * self.batch, self.x.shape[2]))
        xp = b.matmul(flat, w, transpose_b=True)
        rb = None
        if ctx.has_input(3):
            bias = _part(ctx, ctx.x(3), d)  # (2*gates*H,): Wb then Rb
            g = self.gates * self.h
            wb = b.slice(bias, starts=[0], stops=[g], steps=[1])
            rb = b.slice(bias, starts=[g], stops=[2 * g], steps=[1])
            xp = b.add(xp, wb)
        xp = b.reshape(xp, (self.seq, self.batch, self.gates * self.h))
        steps = [_part(ctx, xp, t) for t in range(self.seq)]
        return steps, r, rb

    def run(self, step: Callable[[int, Value, Value, Value | None, list], list[Value]],
            n_state: int) -> list[Value | None]:
        """Run `step(d, x_proj_t, R, Rb, state) -> new state` over time for each direction."""
        ctx, b = self.ctx, self.ctx.b
        ys, finals = [], [[] for _ in range(n_state)]
        for d, direction in enumerate(self.dirs):
            steps, r, rb = self.projections(d)
            state = [self.state(5 + k, d) for k in range(n_state)]
            hs = [None] * self.seq
            order = range(self.seq - 1, -1, -1) if direction == "reverse" else range(self.seq)
            for t in order:
                state = step(d, steps[t], r, rb, state)
                hs[t] = state[0]
            ys.append(b.concat(*[b.reshape(h_, (1, 1, self.batch, self.h)) for h_ in hs], axis=0)
                      if self.seq > 1 else b.reshape(hs[0], (1, 1, self.batch, self.h)))
            for k in range(n_state):
                finals[k].append(b.reshape(state[k], (1, self.batch, self.h)))
        y = ys[0] if len(ys) == 1 else b.concat(*ys, axis=1)  # (seq, dirs, batch, H)
        outs = [y] + [f[0] if len(f) == 1 else b.concat(*f, axis=0) for f in finals]
        if self.layout:
            outs = [b.transpose(outs[0], perm=(2, 0, 1, 3))] + \
                   [b.transpose(o, perm=(1, 0, 2)) for o in outs[1:]]
        return outs

    def recurrent(self, h: Value, r: Value) -> Value:
        return self.ctx.b.matmul(h, r, transpose_b=True)


@converter("LSTM")
def _lstm(ctx: NodeContext):
    rnn = _Rnn(ctx, 4, ["Sigmoid", "Tanh", "Tanh"])
    b, H = ctx.b, rnn.h
    couple = bool(ctx.attr("input_forget", 0))
    peep = [None] * len(rnn.dirs)
    if ctx.has_input(7):
        peep = [_part(ctx, ctx.x(7), d) for d in range(len(rnn.dirs))]

    def step(d, xp, r, rb, state):
        h, c = state
        f_act, g_act, h_act = rnn.acts[d]
        gates = b.add(xp, rnn.recurrent(h, r))
        if rb is not None:
            gates = b.add(gates, rb)
        pi = po = pf = None
        if peep[d] is not None:
            p = peep[d]
            pi, po, pf = (b.slice(p, starts=[k * H], stops=[(k + 1) * H], steps=[1])
                          for k in range(3))
        gi, go, gf, gc = (_cols(ctx, gates, k, H) for k in range(4))
        i = rnn.act(f_act, rnn.clipped(gi if pi is None else b.add(gi, b.mul(pi, c))))
        if couple:
            f = b.sub(ctx.scalar(1.0, i), i)
        else:
            f = rnn.act(f_act, rnn.clipped(gf if pf is None else b.add(gf, b.mul(pf, c))))
        cand = rnn.act(g_act, rnn.clipped(gc))
        c_new = b.add(b.mul(f, c), b.mul(i, cand))
        o = rnn.act(f_act, rnn.clipped(go if po is None else b.add(go, b.mul(po, c_new))))
        return [b.mul(o, rnn.act(h_act, c_new)), c_new]

    return rnn.run(step, 2)


@converter("GRU")
def _gru(ctx: NodeContext):
    rnn = _Rnn(ctx, 3, ["Sigmoid", "Tanh"])
    b, H = ctx.b, rnn.h
    before_reset = bool(ctx.attr("linear_before_reset", 0))

    def step(d, xp, r, rb, state):
        (h,) = state
        f_act, g_act = rnn.acts[d]
        rz_r = b.slice(r, starts=[0, 0], stops=[2 * H, H], steps=[1, 1])
        rh = b.slice(r, starts=[2 * H, 0], stops=[3 * H, H], steps=[1, 1])
        xzr = b.slice(xp, starts=[0, 0], stops=[rnn.batch, 2 * H], steps=[1, 1])
        zr = b.add(xzr, rnn.recurrent(h, rz_r))
        if rb is not None:
            zr = b.add(zr, b.slice(rb, starts=[0], stops=[2 * H], steps=[1]))
        z = rnn.act(f_act, rnn.clipped(_cols(ctx, zr, 0, H)))
        rr = rnn.act(f_act, rnn.clipped(_cols(ctx, zr, 1, H)))
        rbh = None if rb is None else b.slice(rb, starts=[2 * H], stops=[3 * H], steps=[1])
        if before_reset:
            hr = rnn.recurrent(h, rh)
            if rbh is not None:
                hr = b.add(hr, rbh)
            pre = b.add(_cols(ctx, xp, 2, H), b.mul(rr, hr))
        else:
            pre = b.add(_cols(ctx, xp, 2, H), rnn.recurrent(b.mul(rr, h), rh))
            if rbh is not None:
                pre = b.add(pre, rbh)
        cand = rnn.act(g_act, rnn.clipped(pre))
        one = ctx.scalar(1.0, z)
        return [b.add(b.mul(b.sub(one, z), cand), b.mul(z, h))]

    return rnn.run(step, 1)


@converter("RNN")
def _rnn(ctx: NodeContext):
    rnn = _Rnn(ctx, 1, ["Tanh"])
    b = ctx.b

    def step(d, xp, r, rb, state):
        (h,) = state
        pre = b.add(xp, rnn.recurrent(h, r))
        if rb is not None:
            pre = b.add(pre, rb)
        return [rnn.act(rnn.acts[d][0], rnn.clipped(pre))]

    return rnn.run(step, 1)
