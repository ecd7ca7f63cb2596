"""Tensor: the builder's handle on a graph value, with numpy-like operators."""
from __future__ import annotations

from typing import Any

from .args import is_int
from .ir.dtypes import DType
from .ir.errors import BuildError, ConcretizationError
from .ir.graph import Graph, Value
from .ir.loc import capture_loc
from .ir.types import TensorType


class Tensor:
    """A symbolic value in a graph. Operators build nodes; nothing is computed here."""

    __slots__ = ("value", "graph")
    __array_priority__ = 1000  # numpy defers `ndarray + Tensor` to Tensor.__radd__

    def __init__(self, value: Value, graph: Graph) -> None:
        self.value = value
        self.graph = graph

    # -- type -------------------------------------------------------------------------
    @property
    def type(self) -> TensorType:
        """The value's TensorType (shape and dtype)."""
        return self.value.type

    @property
    def shape(self) -> tuple[int, ...]:
        """The static shape, a tuple of ints."""
        return self.value.shape

    @property
    def dtype(self) -> DType:
        """The element type (gc.f32, gc.i32, ...)."""
        return self.value.dtype

    @property
    def ndim(self) -> int:
        """The rank."""
        return self.value.type.rank

    @property
    def size(self) -> int:
        """The number of elements."""
        return self.value.type.size

    @property
    def name(self) -> str | None:
        """The input's or parameter's name (None for op results)."""
        return self.value.name

    def __len__(self) -> int:
        if not self.shape:
            raise BuildError("len() of a rank-0 tensor", loc=capture_loc())
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Tensor({self.value.ref()}: {self.type}, graph={self.graph.name!r})"

    # -- symbolic values have no concrete truth or data ---------------------------------
    def _concrete(self, what: str) -> ConcretizationError:
        return ConcretizationError(
            f"{what} of symbolic tensor {self.value.ref()}: {self.type} is not known while the "
            "graph is built or traced (it depends on data). Data-dependent Python control flow "
            "cannot be traced: compute both branches and select with gc.where(cond, a, b) (or "
            "np.where), or make the value static (a Python number, or a static_argnames "
            "argument of @gc.jit)", loc=capture_loc())

    def __bool__(self) -> bool:
        raise self._concrete("the truth value")

    def __float__(self) -> float:
        raise self._concrete("float()")

    def __int__(self) -> int:
        raise self._concrete("int()")

    def __index__(self) -> int:
        raise self._concrete("the integer value (used as an index or size)")

    def item(self) -> Any:
        """Refused: a symbolic tensor has no value while the graph is built or traced."""
        raise self._concrete(".item()")

    def __array__(self, *args: Any, **kwargs: Any):
        raise ConcretizationError(
            f"symbolic tensor {self.value.ref()} has no data until the graph runs; compile the "
            "graph and call it (inside @gc.jit: use numpy functions graphc traces, or gc ops, "
            "instead of converting to an array)", loc=capture_loc())

    # numpy functions on tensors build graph ops (graphc/numpy_api.py)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import numpy_api
        return numpy_api.array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import numpy_api
        return numpy_api.array_function(func, args, kwargs)

    def __iter__(self):
        raise BuildError("iterating over a symbolic tensor is not supported; index it "
                         "(t[i]) or slice it instead", loc=capture_loc())

    __hash__ = object.__hash__  # == builds a node, so identity hashing keeps Tensors usable as keys

    # -- operators --------------------------------------------------------------------
    def __add__(self, o): return ops.add(self, o)
    def __radd__(self, o): return ops.add(o, self)
    def __sub__(self, o): return ops.sub(self, o)
    def __rsub__(self, o): return ops.sub(o, self)
    def __mul__(self, o): return ops.mul(self, o)
    def __rmul__(self, o): return ops.mul(o, self)
    def __truediv__(self, o): return ops.div(self, o)
    def __rtruediv__(self, o): return ops.div(o, self)
    def __pow__(self, o): return ops.pow(self, o)
    def __rpow__(self, o): return ops.pow(o, self)
    def __matmul__(self, o): return ops.matmul(self, o)
    def __rmatmul__(self, o): return ops.matmul(o, self)
    def __neg__(self): return ops.neg(self)
    def __pos__(self): return self
    def __abs__(self): return ops.abs(self)
    def __lt__(self, o): return ops.less(self, o)
    def __le__(self, o): return ops.less_equal(self, o)
    def __gt__(self, o): return ops.greater(self, o)
    def __ge__(self, o): return ops.greater_equal(self, o)
    def __eq__(self, o): return ops.equal(self, o)  # type: ignore[override]
    def __ne__(self, o): return ops.not_equal(self, o)  # type: ignore[override]
    def __and__(self, o): return ops.logical_and(self, o)
    def __or__(self, o): return ops.logical_or(self, o)
    def __invert__(self): return ops.logical_not(self)
    def __getitem__(self, key): return ops.getitem(self, key)

    # -- methods ----------------------------------------------------------------------
    @property
    def T(self) -> "Tensor":
        """The tensor with its axes reversed (gc.transpose)."""
        return ops.transpose(self)

    def reshape(self, *shape: Any) -> "Tensor":
        """t.reshape(2, 3) or t.reshape((2, 3)), as numpy."""
        return ops.reshape(self, shape[0] if len(shape) == 1 and not is_int(shape[0]) else shape)

    def transpose(self, *axes: Any) -> "Tensor":
        """t.transpose(), t.transpose(1, 0) or t.transpose((1, 0)), as numpy."""
        if len(axes) == 1 and not is_int(axes[0]):
            return ops.transpose(self, axes[0])
        return ops.transpose(self, axes or None)

    def astype(self, dtype) -> "Tensor":
        """gc.cast(self, dtype)."""
        return ops.cast(self, dtype)

    def sum(self, axis=None, keepdims=False) -> "Tensor":
        """gc.sum(self, axis, keepdims)."""
        return ops.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False) -> "Tensor":
        """gc.mean(self, axis, keepdims)."""
        return ops.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False) -> "Tensor":
        """gc.max(self, axis, keepdims)."""
        return ops.max(self, axis, keepdims)

    def min(self, axis=None, keepdims=False) -> "Tensor":
        """gc.min(self, axis, keepdims)."""
        return ops.min(self, axis, keepdims)

    def argmax(self, axis=None, keepdims=False) -> "Tensor":
        """gc.argmax(self, axis, keepdims)."""
        return ops.argmax(self, axis, keepdims)

    def exp(self) -> "Tensor":
        """gc.exp(self)."""
        return ops.exp(self)

    def log(self) -> "Tensor":
        """gc.log(self)."""
        return ops.log(self)

    def sqrt(self) -> "Tensor":
        """gc.sqrt(self)."""
        return ops.sqrt(self)

    def tanh(self) -> "Tensor":
        """gc.tanh(self)."""
        return ops.tanh(self)

    def relu(self) -> "Tensor":
        """gc.relu(self)."""
        return ops.relu(self)

    def squeeze(self, axis=None) -> "Tensor":
        """gc.squeeze(self, axis)."""
        return ops.squeeze(self, axis)


from . import ops  # noqa: E402  (ops imports Tensor; bound after the class exists)
