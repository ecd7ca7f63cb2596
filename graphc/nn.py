"""Layers that create their own parameters in the active graph and apply registry ops.

Parameter names are `<layer>.<what>` with layer names `linear0`, `conv1`, ... unless given;
initial values come from seeded initialisers, so a rebuilt graph starts identically.
"""
from __future__ import annotations

from typing import Any, Sequence

from . import init as initializers
from . import ops
from .args import as_bool, as_float, as_int, as_shape
from .builder import current_graph, param
from .ir.errors import BuildError
from .ir.init import Init
from .ir.loc import capture_loc
from .tensor import Tensor


def _prefix(name: str | None, kind: str) -> str:
    if name is not None and not isinstance(name, str):
        raise BuildError(f"a layer name is a string, got {name!r}", loc=capture_loc())
    return name if name is not None else current_graph().unique_name(kind)


def _or(init: Init | None, default: Any) -> Init:
    return init if init is not None else default()


def _count(v: Any, what: str, low: int = 0) -> int:
    n = as_int(v, what)
    if n < low:
        raise BuildError(f"{what} must be >= {low}, got {n}", loc=capture_loc())
    return n


class Linear:
    """y = x @ w + b, with w of shape (in_features, out_features).

    bias=False leaves b out. The parameters are `<name>.w` and `<name>.b` (name defaults to
    linear0, linear1, ...); init initialises w (default Glorot uniform, seeded per graph),
    b starts at zero; dtype is theirs.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 name: str | None = None, init: Init | None = None, dtype: str = "f32") -> None:
        g = current_graph()
        in_features, out_features = _count(in_features, "in_features"), _count(out_features,
                                                                               "out_features")
        self.name = _prefix(name, "linear")
        self.weight = param(f"{self.name}.w", (in_features, out_features), dtype,
                            init=_or(init, lambda: initializers.glorot_uniform(seed=g.next_seed())))
        self.bias = param(f"{self.name}.b", (out_features,), dtype, init=initializers.zeros()) \
            if as_bool(bias, "bias") else None

    def __call__(self, x: Tensor) -> Tensor:
        y = ops.matmul(x, self.weight)
        return y + self.bias if self.bias is not None else y


class Conv2d:
    """NCHW convolution with (out, in/groups, kh, kw) weights, He-initialised.

    in_channels and out_channels are C and K; kernel_size, stride, padding, dilation and
    groups mean what they mean for gc.conv2d. bias=False leaves the bias out. The parameters
    are `<name>.w` and `<name>.b` (name defaults to conv0, conv1, ...); init initialises
    the weight (default He normal, seeded per graph); dtype is theirs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: Any = 0, dilation: int | Sequence[int] = 1,
                 groups: int = 1, bias: bool = True, *, name: str | None = None,
                 init: Init | None = None, dtype: str = "f32") -> None:
        g = current_graph()
        kh, kw = ops._pair(kernel_size, "kernel_size")
        groups = _count(groups, "groups", 1)
        in_channels, out_channels = _count(in_channels, "in_channels"), _count(out_channels,
                                                                               "out_channels")
        if in_channels % groups or out_channels % groups:
            raise BuildError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}", loc=capture_loc())
        self.name = _prefix(name, "conv")
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.weight = param(f"{self.name}.w", (out_channels, in_channels // groups, kh, kw),
                            dtype, init=_or(init, lambda: initializers.he_normal(seed=g.next_seed())))
        self.bias = param(f"{self.name}.b", (out_channels,), dtype, init=initializers.zeros()) \
            if as_bool(bias, "bias") else None

    def __call__(self, x: Tensor) -> Tensor:
        return ops.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                          dilation=self.dilation, groups=self.groups)


class BatchNorm:
    """Batch normalisation over every axis but `axis` (channels).

    Called with training=True it normalises with batch statistics and records the running
    statistics' update in the graph (`Graph.state_updates`); gc.compile applies those with
    a training step's updates. training=False uses the running statistics.

    num_features: the number of channels. momentum: the running statistics' update rate
    (new = (1 - momentum) * old + momentum * batch, as in PyTorch). eps is added to the
    variance. The parameters are `<name>.gamma`, `.beta`, `.running_mean` and
    `.running_var` (name defaults to bn0, bn1, ...), of dtype `dtype`.
    """

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
                 axis: int = 1, name: str | None = None, dtype: str = "f32") -> None:
        self.name = _prefix(name, "bn")
        self.momentum, self.eps = as_float(momentum, "momentum"), as_float(eps, "eps")
        self.axis = as_int(axis, "axis")
        c = (_count(num_features, "num_features"),)
        self.gamma = param(f"{self.name}.gamma", c, dtype, init=initializers.ones())
        self.beta = param(f"{self.name}.beta", c, dtype, init=initializers.zeros())
        self.running_mean = param(f"{self.name}.running_mean", c, dtype,
                                  init=initializers.zeros(), trainable=False)
        self.running_var = param(f"{self.name}.running_var", c, dtype,
                                 init=initializers.ones(), trainable=False)

    def __call__(self, x: Tensor, training: bool = True) -> Tensor:
        if not as_bool(training, "training"):
            return ops.batch_norm_inference(x, self.gamma, self.beta, self.running_mean,
                                            self.running_var, eps=self.eps, axis=self.axis)
        y, mean, var = ops.batch_norm(x, self.gamma, self.beta, eps=self.eps, axis=self.axis)
        x = ops._t(x)
        n = x.size // x.shape[self.axis] if x.shape[self.axis] else 0
        m = self.momentum
        unbiased = var * (n / max(n - 1, 1))  # running variance is unbiased, as in PyTorch
        new_mean = self.running_mean * (1.0 - m) + ops.stop_gradient(mean) * m
        new_var = self.running_var * (1.0 - m) + ops.stop_gradient(unbiased) * m
        states = x.graph.state_updates
        states[self.running_mean.name] = new_mean.value
        states[self.running_var.name] = new_var.value
        return y


class LayerNorm:
    """Normalisation over the trailing `shape` axes with learned scale and shift.

    eps is added to the variance; the parameters are `<name>.gamma` and `<name>.beta` (name
    defaults to ln0, ln1, ...), of dtype `dtype`.
    """

    def __init__(self, shape: int | Sequence[int], *, eps: float = 1e-5, name: str | None = None,
                 dtype: str = "f32") -> None:
        self.shape = as_shape(shape, "LayerNorm shape")
        self.name = _prefix(name, "ln")
        self.eps = as_float(eps, "eps")
        self.gamma = param(f"{self.name}.gamma", self.shape, dtype, init=initializers.ones())
        self.beta = param(f"{self.name}.beta", self.shape, dtype, init=initializers.zeros())

    def __call__(self, x: Tensor) -> Tensor:
        k = len(self.shape)
        return ops.layer_norm(x, self.gamma, self.beta, axis=tuple(range(-k, 0)), eps=self.eps)


class Embedding:
    """Rows of a (num_embeddings, dim) table looked up by integer ids.

    The table is the parameter `<name>.w` (name defaults to embedding0, ...), initialised
    by init (default standard normal, seeded per graph), of dtype `dtype`.
    """

    def __init__(self, num_embeddings: int, dim: int, *, name: str | None = None,
                 init: Init | None = None, dtype: str = "f32") -> None:
        g = current_graph()
        num_embeddings, dim = _count(num_embeddings, "num_embeddings"), _count(dim, "dim")
        self.name = _prefix(name, "embedding")
        self.weight = param(f"{self.name}.w", (num_embeddings, dim), dtype,
                            init=_or(init, lambda: initializers.normal(1.0, seed=g.next_seed())))

    def __call__(self, ids: Tensor) -> Tensor:
        return ops.take(self.weight, ids, axis=0)


linear, conv2d, batch_norm, layer_norm, embedding = Linear, Conv2d, BatchNorm, LayerNorm, Embedding
