"""Executable: a compiled graph with its parameter state, callable with numpy arrays.

The boundary checks live here, once for every backend: argument names, shapes and dtypes
are checked and converted before any backend code runs, and parameter writes are checked
against the declared types.
"""
from __future__ import annotations

import difflib
import threading
from collections.abc import MutableMapping
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import numpy as np

from ..ir.dtypes import DType
from ..ir.errors import InputError
from ..ir.graph import Graph
from ..ir.types import TensorType, format_shape


def convert_argument(what: str, value: Any, t: TensorType) -> np.ndarray:
    """Check one array against its declared type and convert it where no value changes kind.

    Floats convert to any float width, integers to any integer width when every value fits;
    anything else (floats into an integer input, ints into a float input) is an error.
    Other libraries' host arrays (DLPack, `__array__`) are viewed without a copy when they
    already have the type (backends/interop.py); device arrays are refused.
    """
    if type(value) is np.ndarray:
        arr = value
    else:
        from .interop import host_array
        arr = host_array(what, value)
    want: DType = t.dtype
    if arr.shape != t.shape:
        raise InputError(f"{what}: expected shape {format_shape(t.shape)} ({t}), got "
                         f"{format_shape(arr.shape)}")
    kind = arr.dtype.kind
    ok = ((want.is_float and kind in "f") or (want.is_int and kind in "iu")
          or (want.is_bool and kind == "b"))
    if not ok:
        raise InputError(f"{what}: expected dtype {want} ({t}), got {arr.dtype}; convert it "
                         f"explicitly (e.g. .astype(np.{want.np_dtype.name}))")
    if want.is_int and arr.dtype != want.np_dtype and arr.size:
        info = np.iinfo(want.np_dtype)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise InputError(f"{what}: values {lo}..{hi} do not fit {want}")
    return np.asarray(arr, dtype=want.np_dtype, order="C")


def _owned(arr: np.ndarray, held: list[np.ndarray]) -> np.ndarray:
    """A copy of arr if it views or is memory the caller or the parameter state holds."""
    if not arr.flags.owndata or any(arr is h for h in held):
        return arr.copy()
    return arr


class ParamStore(MutableMapping):
    """exe.params: the current parameter arrays; assignments are checked and copied.

    The arrays handed out are read-only views of the executable's own state: a train step
    may update that state in place (passes/donate.py), so a view shows the value after the
    latest call; `.copy()` keeps a snapshot."""

    def __init__(self, exe: "Executable") -> None:
        self._exe = exe

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            arr = self._exe._params[name]
        except KeyError:
            raise InputError(self._exe._unknown("parameter", name, self._exe._params)) from None
        view = arr.view()
        view.flags.writeable = False
        return view

    def __setitem__(self, name: str, value: Any) -> None:
        p = self._exe._param_types.get(name)
        if p is None:
            raise InputError(self._exe._unknown("parameter", name, self._exe._params))
        arr = convert_argument(f"parameter {name!r}", value, p).copy()
        with self._exe._lock:
            self._exe._params[name] = arr

    def __delitem__(self, name: str) -> None:
        raise InputError("parameters of a compiled graph cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._exe._params)

    def __len__(self) -> int:
        return len(self._exe._params)

    def __repr__(self) -> str:
        return "ParamStore(" + ", ".join(f"{k}: {self._exe._param_types[k]}" for k in self) + ")"


class Executable:
    """A compiled graph. Call it with arrays (positionally or by input name).

    Backends build it from the optimised graph, the initial params ({name: array}, default
    the graph's initialisers) and single_output (return one array, not a tuple).
    """

    backend_name = "abstract"
    # Names a call may use besides the graph's inputs: {declared name: graph input name},
    # for inputs the source declared; gc.compile sets it (graphc/compile.py).
    declared_inputs: Mapping[str, str] = MappingProxyType({})

    def __init__(self, graph: Graph, params: Mapping[str, Any] | None = None,
                 single_output: bool = False) -> None:
        self.graph = graph
        self.single_output = single_output
        self._lock = threading.RLock()  # re-entered: a profile reads device parameters under it
        self._param_types = {p.name: p.type for p in graph.params}
        given = dict(params or {})
        unknown = set(given) - set(self._param_types)
        if unknown:
            raise InputError(self._unknown("parameter", sorted(unknown)[0], self._param_types))
        self._params: dict[str, np.ndarray] = {}
        for p in graph.params:
            value = given[p.name] if p.name in given else graph.initial_param_value(p)
            self._params[p.name] = convert_argument(f"parameter {p.name!r}", value, p.type).copy()
        self.params = ParamStore(self)

    # -- subclasses implement this ---------------------------------------------------
    def _execute(self, inputs: dict[str, np.ndarray], params: dict[str, np.ndarray]
                 ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        raise NotImplementedError

    # -- calling ----------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        """The graph's input names, in positional order."""
        return [v.name for v in self.graph.inputs]

    def _unknown(self, what: str, name: str, known) -> str:
        close = difflib.get_close_matches(str(name), list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"graph {self.graph.name!r} has no {what} {name!r}{hint} (it has {', '.join(known) or 'none'})"

    def bind(self, args: tuple, kwargs: dict) -> dict[str, np.ndarray]:
        """Each input's array from a call's args and kwargs, checked and converted."""
        spec = self.graph.inputs
        bound = self.match_arguments(args, kwargs)
        return {v.name: convert_argument(f"input {v.name!r}", bound[v.name], v.type) for v in spec}

    def match_arguments(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """The argument given for each input (in args positionally, in kwargs by name),
        unconverted."""
        spec = self.graph.inputs
        if len(args) > len(spec):
            raise InputError(f"graph {self.graph.name!r} takes {len(spec)} inputs "
                             f"({', '.join(self.input_names)}), got {len(args)} positional arguments")
        bound: dict[str, Any] = {}
        for v, a in zip(spec, args):
            bound[v.name] = a
        names = self.input_names
        for k, a in kwargs.items():
            if k not in names:
                # A name the graph's source declared (an ONNX model's own input names): its
                # graph input, or nothing when no output needs that input (then ignored).
                alias = self.declared_inputs.get(k)
                if alias is None:
                    raise InputError(self._unknown("input", k, names))
                if alias not in names:
                    continue
                k = alias
            if k in bound:
                raise InputError(f"input {k!r} given twice (positionally and by name)")
            bound[k] = a
        missing = [v.name for v in spec if v.name not in bound]
        if missing:
            raise InputError(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                             f"for graph {self.graph.name!r}; expected "
                             + ", ".join(f"{v.name}: {v.type}" for v in spec))
        return bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the graph on args (positional, in input order) and kwargs (by input name);
        applies the parameter updates of a training step. Returns the output array, or a
        tuple of them."""
        inputs = self.bind(args, kwargs)
        if self.graph.updates:
            with self._lock:  # read-modify-write of the state is one step
                params = dict(self._params)
                outs, updates = self._execute(inputs, params)
                held = list(inputs.values()) + list(params.values())
                self._params.update({k: _owned(a, held) for k, a in updates.items()})
        else:
            with self._lock:
                params = dict(self._params)
            outs, _ = self._execute(inputs, params)
            held = list(inputs.values()) + list(params.values())
        outs = [_owned(a, held + list(self._params.values())) for a in outs]
        return outs[0] if self.single_output else tuple(outs)

    def profile(self, *args: Any, repeat: int = 10, **kwargs: Any) -> Any:
        """Time the program per kernel: one warm-up call, then `repeat` calls on these
        inputs (as for a call). Returns a backends.profile.Profile: per kernel (or fused
        group) its time, share, GFLOP/s and GB/s against the machine's peaks, ops and
        source lines; print it, or read `.rows` / `.as_dicts()`. The parameters are not
        changed (a training step is profiled on copies of them)."""
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise InputError(f"profile: repeat must be an int >= 1, got {repeat!r}")
        inputs = self.bind(args, kwargs)
        with self._lock:
            params = {k: np.array(v) for k, v in self._params.items()}
        return self._profile(inputs, params, repeat)

    def _profile(self, inputs: dict[str, np.ndarray], params: dict[str, np.ndarray], repeat: int):
        raise InputError(f"backend {self.backend_name} has no profiler")

    def report(self) -> str:
        """What the compiler did: the pass ledger, then what the backend adds."""
        parts = [str(self.ledger)] if getattr(self, "ledger", None) else []
        parts += self._report_lines()
        return "\n".join(parts)

    def _report_lines(self) -> list[str]:
        return []

    def __repr__(self) -> str:
        ins = ", ".join(f"{v.name}: {v.type}" for v in self.graph.inputs)
        outs = ", ".join(str(v.type) for v in self.graph.outputs)
        return f"<{type(self).__name__} {self.graph.name}({ins}) -> ({outs}) backend={self.backend_name}>"
