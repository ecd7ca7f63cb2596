"""Optimisers as graph ops: `opt.updates(loss)` returns {param: new value}, so that a whole
training step (forward, backward, update) compiles into one graph.

Optimiser state (momentum, Adam moments, step count) lives in frozen parameters named
`<param>.<slot>`, owned by the Executable like any other parameter.
"""
from __future__ import annotations

from typing import Sequence

from . import init as initializers
from . import ops
from .builder import param
from .ir.errors import BuildError
from .tensor import Tensor


def _trainable(loss: Tensor, params: Sequence[Tensor] | None) -> list[Tensor]:
    if params is not None:
        return list(params)
    found = [Tensor(p, loss.graph) for p in loss.graph.params if p.trainable]
    if not found:
        raise BuildError(f"graph {loss.graph.name!r} has no trainable parameters")
    return found


def _slot(p: Tensor, slot: str, init=None) -> Tensor:
    return param(f"{p.name}.{slot}", p.shape, p.dtype.name, init=init or initializers.zeros(),
                 trainable=False)


class SGD:
    """SGD with optional (Nesterov) momentum and L2 weight decay, as in PyTorch."""

    def __init__(self, lr: float | Tensor = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, params: Sequence[Tensor] | None = None) -> None:
        if nesterov and momentum <= 0:
            raise BuildError("Nesterov momentum needs momentum > 0")
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.params = params

    def updates(self, loss: Tensor) -> dict[Tensor, Tensor]:
        params = _trainable(loss, self.params)
        grads = ops.grad(loss, params)
        out: dict[Tensor, Tensor] = {}
        with loss.graph:
            for p, g in zip(params, grads):
                if self.weight_decay:
                    g = g + p * self.weight_decay
                step = g
                if self.momentum:
                    v = _slot(p, "momentum")
                    v_new = v * self.momentum + g
                    out[v] = v_new
                    step = g + v_new * self.momentum if self.nesterov else v_new
                out[p] = p - step * self.lr
        return out


class Adam:
    """Adam (Kingma & Ba 2015); weight_decay is decoupled (AdamW) when decoupled=True."""

    def __init__(self, lr: float | Tensor = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = True,
                 params: Sequence[Tensor] | None = None) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.params = params

    def updates(self, loss: Tensor) -> dict[Tensor, Tensor]:
        params = _trainable(loss, self.params)
        grads = ops.grad(loss, params)
        b1, b2 = self.betas
        out: dict[Tensor, Tensor] = {}
        with loss.graph:
            step = param(f"{loss.graph.unique_name('adam')}.t", (), "f32", init=initializers.zeros(),
                         trainable=False)
            t = step + 1.0
            out[step] = t
            for p, g in zip(params, grads):
                if self.weight_decay and not self.decoupled:
                    g = g + p * self.weight_decay
                m, v = _slot(p, "adam_m"), _slot(p, "adam_v")
                m_new = m * b1 + g * (1.0 - b1)
                v_new = v * b2 + g * g * (1.0 - b2)
                tt = t if p.dtype.name == "f32" else ops.cast(t, p.dtype.name)
                m_hat = m_new / (1.0 - ops.pow(b1, tt))
                v_hat = v_new / (1.0 - ops.pow(b2, tt))
                new_p = p - m_hat / (ops.sqrt(v_hat) + self.eps) * self.lr
                if self.weight_decay and self.decoupled:
                    new_p = new_p - p * (self.weight_decay * self.lr)
                out[m], out[v], out[p] = m_new, v_new, new_p
        return out
