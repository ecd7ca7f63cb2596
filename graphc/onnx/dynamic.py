"""ONNX models that compile only once their inputs are seen: symbolic dimensions (a
`batch` exported by torch.onnx with dynamic_axes) and inputs that feed shapes, axes,
sizes or pads (Reshape's shape, Slice's starts, TopK's k, Range's bounds...).

graphc compiles static shapes, so `gc.onnx.load` returns a DynamicModel for such a model
instead of a graph, and `gc.compile(model)` a SpecialisingExecutable: each call imports
and compiles the model for its inputs' shapes (symbolic inputs) and values (shape-like
inputs), keeps the executable in a least-recently-used cache keyed by them, like @gc.jit's
shape-keyed cache, and logs a new specialisation after the first on the `graphc.jit`
logger (GRAPHC_LOG=recompile), saying which input changed.
"""
from __future__ import annotations

import difflib
import logging
import threading
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

from ..ir.errors import BuildError, InputError
from ..ir.graph import Graph
from ..logconfig import configure as configure_logging
from .errors import OnnxError

logger = logging.getLogger("graphc.jit")

Key = tuple  # ((input name, shape), ...), ((input name, dtype, shape, bytes), ...)
_GRAPH_ATTRS = frozenset({"nodes", "inputs", "outputs", "params", "constants", "updates",
                          "param_values", "state_updates"})


class NotAGraphError(OnnxError, AttributeError):
    """A DynamicModel used where a graph is needed."""


class DynamicModel:
    """An imported ONNX model whose graph depends on some inputs' shapes or values.

    `symbolic`: input name -> declared dims (a dim_param name, or '?', for each symbolic
    size; None for an unknown rank); `value_inputs`: inputs that feed shape-like operands,
    so their values are compiled in. `specialise(arrays)` gives the graph for one set of
    inputs; `gc.compile(model, ...)` gives an executable that does this per call.
    gc.onnx.load builds it: `proto` and `source` are the model and where it came from,
    `initializers`, `input_shapes` and `constant_inputs` the load() arguments, kept to
    import the model again for each specialisation.
    """

    def __init__(self, proto: Any, source: str, initializers: str,
                 input_shapes: Mapping[str, tuple[int, ...]], constant_inputs: Mapping[str, Any],
                 symbolic: Mapping[str, Any], value_inputs: set[str]) -> None:
        from onnx import helper
        self.proto, self.source, self.initializers = proto, source, initializers
        self.input_shapes = dict(input_shapes)
        self.constant_inputs = dict(constant_inputs)
        self.symbolic = dict(symbolic)
        self.value_inputs = set(value_inputs)
        self.name = proto.graph.name or "model"
        init = {t.name for t in proto.graph.initializer}
        declared = [vi for vi in proto.graph.input if vi.name not in init
                    and vi.name not in self.constant_inputs]
        self.input_names: list[str] = [vi.name for vi in declared]
        self.output_names: list[str] = [vi.name for vi in proto.graph.output]
        self._dtypes: dict[str, np.dtype] = {}  # what a value input is converted to
        for vi in declared:
            try:
                self._dtypes[vi.name] = np.dtype(
                    helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
            except (KeyError, TypeError, ValueError):
                pass  # an element type graphc refuses anyway, when importing
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        """Graph API on a model that has no single graph yet (`graphc dump`, g.nodes): a
        clear error (an AttributeError too, so hasattr() stays False)."""
        if name in _GRAPH_ATTRS or (not name.startswith("_") and hasattr(Graph, name)):
            what = ", ".join([f"input {n!r} has shape {_dims_text(d)}"
                              for n, d in self.__dict__.get("symbolic", {}).items()]
                             + [f"input {n!r} feeds a shape" for n in
                                sorted(self.__dict__.get("value_inputs", ()))])
            raise NotAGraphError(
                f"ONNX model {self.__dict__.get('name', '?')!r} has no graph until its inputs "
                f"are known ({what}): gc.compile(model) compiles it per call, "
                "model.specialize({name: array}) gives the graph for given inputs, and "
                "gc.onnx.load(..., input_shapes={...}, constant_inputs={...}) fixes them")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        parts = [f"{n}: {_dims_text(d)}" for n, d in self.symbolic.items()]
        parts += [f"{n}: by value" for n in sorted(self.value_inputs)]
        return f"<gc.onnx.DynamicModel {self.name} ({', '.join(parts)})>"

    # -- one specialisation ---------------------------------------------------------
    def key(self, arrays: Mapping[str, Any]) -> tuple[Key, dict[str, tuple], dict[str, np.ndarray]]:
        """What a graph is specialised on: the symbolic inputs' shapes and the shape-like
        inputs' values, as a cache key, plus the importer's input_shapes and
        constant_inputs for it. Checks the shapes against the declared ones."""
        with self._lock:
            symbolic, by_value = dict(self.symbolic), set(self.value_inputs)
        shapes: dict[str, tuple] = {}
        sizes: dict[str, tuple[str, int]] = {}  # dim_param -> (where first seen, size)
        for name, dims in symbolic.items():
            if name in by_value:
                continue
            shape = tuple(int(d) for d in np.shape(self._given(arrays, name)))
            _check_dims(name, dims, shape, sizes)
            shapes[name] = shape
        values: dict[str, np.ndarray] = {}
        for name in sorted(by_value):
            arr = np.asarray(self._given(arrays, name))
            if name in self._dtypes and arr.dtype != self._dtypes[name]:
                arr = arr.astype(self._dtypes[name])
            values[name] = np.ascontiguousarray(arr)
        key = (tuple(sorted(shapes.items())),
               tuple((n, a.dtype.str, a.shape, a.tobytes()) for n, a in values.items()))
        return key, shapes, values

    def _given(self, arrays: Mapping[str, Any], name: str) -> Any:
        if name not in arrays:
            why = "its value" if name in self.value_inputs else "its shape"
            raise InputError(f"ONNX model {self.name!r}: input {name!r} is missing; the model "
                             f"is compiled for {why}")
        return arrays[name]

    def specialise(self, arrays: Mapping[str, Any]) -> tuple[Key, Graph, set[str]]:
        """(key, graph, inputs compiled in as constants) for these input arrays (by ONNX
        input name). An input found to feed a shape while importing joins value_inputs."""
        from .importer import Specialise, _Importer
        for _ in range(len(self.input_names) + 1):
            key, shapes, values = self.key(arrays)
            try:
                g = _Importer(self.proto, self.source, self.initializers,
                              {**self.input_shapes, **shapes},
                              {**self.constant_inputs, **values}).run()
                return key, g, set(values)
            except Specialise as s:
                new = (s.values - self.value_inputs) | (set(s.symbolic) - set(shapes))
                if not new or not new <= set(self.input_names):
                    break
                with self._lock:
                    self.value_inputs |= new
        raise OnnxError(f"{self.source}: cannot specialise the model on its inputs' shapes and "
                        "values (an internal error: please report it)")

    def specialize(self, arrays: Mapping[str, Any]) -> Graph:
        """The graph for these inputs (by ONNX input name); see specialise."""
        return self.specialise(arrays)[1]

    def _graphc_compile(self, outputs: Any, options: dict[str, Any]) -> "SpecialisingExecutable":
        """gc.compile(model, ...): outputs and updates are the model's own."""
        if outputs is not None or options.pop("updates", None) is not None:
            raise BuildError(f"ONNX model {self.name!r}: outputs and updates are the model's "
                             "own; compile it without outputs= and updates=")
        return SpecialisingExecutable(self, options)


class SpecialisingExecutable:
    """Runs a DynamicModel: per call, the executable compiled for the inputs' shapes and
    shape-like values (compiled on first sight, cached, least recently used out beyond
    `cache_size`). Call with arrays positionally (model input order) or by ONNX name.
    `options` are gc.compile's keyword arguments, applied to every specialisation."""

    cache_size = 16

    def __init__(self, model: DynamicModel, options: dict[str, Any]) -> None:
        from ..compile import compile as gc_compile
        self.model = model
        self._compile = lambda g: gc_compile(g, **options)
        self._cache: OrderedDict[Key, tuple[Any, set[str]]] = OrderedDict()
        self._lock = threading.RLock()
        self.retraces = 0  # specialisations after the first (tests and users read it)

    @property
    def input_names(self) -> list[str]:
        return list(self.model.input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self.model.output_names)

    def __repr__(self) -> str:
        return (f"<SpecialisingExecutable {self.model.name}({', '.join(self.input_names)}), "
                f"{len(self._cache)} specialisation(s)>")

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        names = self.model.input_names
        if len(args) > len(names):
            raise InputError(f"ONNX model {self.model.name!r} takes {len(names)} inputs "
                             f"({', '.join(names)}), got {len(args)} positional arguments")
        bound = dict(zip(names, args))
        for k, a in kwargs.items():
            if k not in names:
                close = difflib.get_close_matches(k, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InputError(f"ONNX model {self.model.name!r} has no input {k!r}{hint} (it "
                                 f"has {', '.join(names)})")
            if k in bound:
                raise InputError(f"input {k!r} given twice (positionally and by name)")
            bound[k] = a
        return bound

    def executable(self, *args: Any, **kwargs: Any) -> Any:
        """The compiled executable these arguments run on (compiling it if need be)."""
        return self._entry(self.bind(args, kwargs))[0]

    def _entry(self, arrays: dict[str, Any]) -> tuple[Any, set[str]]:
        key = self.model.key(arrays)[0]
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            key, graph, frozen = self.model.specialise(arrays)
            hit = self._cache.get(key)  # a new value input changed the key: look again
            if hit is None:
                self._log(key)
                hit = (self._compile(graph), frozen)
                self._cache[key] = hit
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return hit

    def _log(self, key: Key) -> None:
        configure_logging()
        if not self._cache:
            logger.debug("specialising ONNX model %s: %s", self.model.name, _key_text(key))
            return
        self.retraces += 1
        last = next(reversed(self._cache))
        logger.info("re-specialising ONNX model %s (%s): %s [%d specialisation%s cached]",
                    self.model.name, self.model.source, _key_change(last, key), len(self._cache),
                    "" if len(self._cache) == 1 else "s")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        arrays = self.bind(args, kwargs)
        exe, frozen = self._entry(arrays)
        # The compiled graph takes the rest by ONNX name (and ignores inputs it never reads).
        return exe(**{k: a for k, a in arrays.items() if k not in frozen})

    def report(self) -> str:
        """The report of the most recently compiled specialisation."""
        with self._lock:
            if not self._cache:
                return f"{self.model.name}: not compiled yet (it compiles on the first call)"
            return next(reversed(self._cache.values()))[0].report()


def _dims_text(dims: Any) -> str:
    return "[?...]" if dims is None else "[" + ",".join(str(d) for d in dims) + "]"


def _check_dims(name: str, dims: Any, shape: tuple, sizes: dict[str, tuple[str, int]]) -> None:
    """A call's shape must fit the declared one: its rank, its fixed sizes, and one size
    per dim_param across the inputs."""
    if dims is None:
        return
    if len(shape) != len(dims):
        raise InputError(f"input {name!r}: the model declares rank {len(dims)} "
                         f"{_dims_text(dims)}, got shape {list(shape)}")
    for i, (d, s) in enumerate(zip(dims, shape)):
        if isinstance(d, int) and d != s:
            raise InputError(f"input {name!r}: dimension {i} is {d} in the model "
                             f"{_dims_text(dims)}, got shape {list(shape)}")
        if isinstance(d, str) and d != "?":
            seen = sizes.setdefault(d, (name, s))
            if seen[1] != s:
                raise InputError(f"input {name!r}: dimension {i} ({d!r}) is {s}, but {d!r} is "
                                 f"{seen[1]} in input {seen[0]!r}")


def _key_text(key: Key) -> str:
    shapes, values = key
    parts = [f"{n} shape {list(s)}" for n, s in shapes]
    parts += [f"{n} = {_value_text(dt, sh, b)}" for n, dt, sh, b in values]
    return ", ".join(parts) or "no inputs"


def _value_text(dt: str, shape: tuple, data: bytes) -> str:
    arr = np.frombuffer(data, dtype=np.dtype(dt)).reshape(shape)
    return np.array2string(arr, threshold=8, separator=",")


def _key_change(old: Key, new: Key) -> str:
    """Which inputs differ between two keys, e.g. "x shape [2, 3] -> [5, 3]"."""
    changes = []
    for (a, b), what in ((old[0], new[0]), "shape"), ((old[1], new[1]), "value"):
        olds, news = dict((e[0], e[1:]) for e in a), dict((e[0], e[1:]) for e in b)
        for n in sorted(set(olds) | set(news)):
            if olds.get(n) != news.get(n):
                if what == "shape":
                    fmt = lambda e: "-" if e is None else str(list(e[0]))  # noqa: E731
                else:
                    fmt = lambda e: "-" if e is None else _value_text(*e)  # noqa: E731
                changes.append(f"input {n!r} {what} {fmt(olds.get(n))} -> {fmt(news.get(n))}")
    return "; ".join(changes) or "new signature"
