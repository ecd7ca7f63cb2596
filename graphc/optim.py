"""Optimisers as graph ops: `opt.updates(loss)` returns {param: new value}, so that a whole
training step (forward, backward, update) compiles into one graph.

Optimiser state (momentum, Adam moments, step count) lives in frozen parameters named
`<param>.<slot>`, owned by the Executable like any other parameter.
"""
from __future__ import annotations

from typing import Sequence

from . import init as initializers
from . import ops
from .args import as_bool, as_float
from .builder import param
from .ir.errors import BuildError
from .ir.loc import capture_loc
from .tensor import Tensor


def _trainable(loss: Tensor, params: Sequence[Tensor] | None) -> list[Tensor]:
    if not isinstance(loss, Tensor):
        raise BuildError(f"updates(loss): loss must be a Tensor, got {type(loss).__name__}",
                         loc=capture_loc())
    if params is not None:
        return list(params)
    found = [Tensor(p, loss.graph) for p in loss.graph.params if p.trainable]
    if not found:
        raise BuildError(f"graph {loss.graph.name!r} has no trainable parameters", loc=capture_loc())
    return found


def _params(params: Sequence[Tensor] | None) -> list[Tensor] | None:
    if params is None:
        return None
    if isinstance(params, Tensor) or not isinstance(params, (list, tuple)):
        raise BuildError(f"params must be a list of parameter Tensors, got {type(params).__name__}",
                         loc=capture_loc())
    for i, p in enumerate(params):
        if not isinstance(p, Tensor) or p.value.kind != "param":
            raise BuildError(f"params[{i}] is not a parameter (gc.param): {p!r:.80}",
                             loc=capture_loc())
    return list(params)


def _lr(lr: float | Tensor) -> float | Tensor:
    return lr if isinstance(lr, Tensor) else as_float(lr, "lr")


def _slot(p: Tensor, slot: str, init=None) -> Tensor:
    return param(f"{p.name}.{slot}", p.shape, p.dtype.name, init=init or initializers.zeros(),
                 trainable=False)


class SGD:
    """SGD with optional (Nesterov) momentum and L2 weight decay, as in PyTorch.

    lr: the learning rate (a number, or a scalar Tensor such as a placeholder for a
    schedule). momentum > 0 keeps a velocity per parameter (`<param>.momentum`); nesterov
    uses Nesterov's form. weight_decay adds weight_decay * p to each gradient. params: the
    parameters to update (default: every trainable parameter of the loss's graph).
    `updates(loss)` returns {param: new value} for gc.compile(..., updates=...).
    """

    def __init__(self, lr: float | Tensor = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, params: Sequence[Tensor] | None = None) -> None:
        momentum, weight_decay = as_float(momentum, "momentum"), as_float(weight_decay, "weight_decay")
        if as_bool(nesterov, "nesterov") and momentum <= 0:
            raise BuildError("Nesterov momentum needs momentum > 0", loc=capture_loc())
        self.lr, self.momentum, self.weight_decay, self.nesterov = _lr(lr), momentum, weight_decay, nesterov
        self.params = _params(params)

    def updates(self, loss: Tensor) -> dict[Tensor, Tensor]:
        """{param: new value} for one SGD step on `loss` (builds its gradients)."""
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
    """Adam (Kingma & Ba 2015); weight_decay is decoupled (AdamW) when decoupled=True.

    lr: the learning rate (a number or a scalar Tensor). betas: the decay rates of the first
    and second moment estimates; eps is added to the denominator. weight_decay: decoupled
    (AdamW: p -= lr * weight_decay * p) or, with decoupled=False, L2 added to the gradient.
    params: the parameters to update (default: every trainable parameter of the loss's
    graph). `updates(loss)` returns {param: new value} for gc.compile(..., updates=...).
    """

    def __init__(self, lr: float | Tensor = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = True,
                 params: Sequence[Tensor] | None = None) -> None:
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise BuildError(f"Adam: betas must be a pair of numbers, got {betas!r}", loc=capture_loc())
        self.lr, self.eps = _lr(lr), as_float(eps, "eps")
        self.betas = (as_float(betas[0], "betas[0]"), as_float(betas[1], "betas[1]"))
        self.weight_decay = as_float(weight_decay, "weight_decay")
        self.decoupled = as_bool(decoupled, "decoupled")
        self.params = _params(params)

    def updates(self, loss: Tensor) -> dict[Tensor, Tensor]:
        """{param: new value} for one Adam step on `loss` (builds its gradients; the moments
        and the step count are frozen parameters updated with it)."""
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
