"""`@gc.jit`: trace a Python/numpy function into a graph on first call, compile, cache.

    @gc.jit
    def f(x, w):
        return np.tanh(x @ w).sum(axis=1)

    f(x, w)                    # traces with symbolic x, w; compiles (llvm); runs
    f(x, w)                    # same shapes and dtypes: runs the cached executable
    f.lower(x, w).as_text("fusion")   # the IR after any pass, "kernel" or "llvm"

Arguments are pytrees (tuples, lists, dicts, None) whose leaves are arrays or Python values.
Array leaves (numpy arrays and numpy scalars, and other libraries' arrays: anything with
`__dlpack__`, `__array__` or `__cuda_array_interface__`, such as torch, JAX and CuPy arrays,
viewed without a copy) become symbolic tensors; other leaves (Python
numbers, strings...) and arguments named in `static_argnames` are static: they are part of
the cache key and the function sees their real value, so Python control flow on them, and
on shapes, just runs. Control flow on a traced value raises ConcretizationError at the
user's line; numpy functions without a graphc equivalent raise UntraceableError.

Compiled executables are cached per function by (argument structure, shapes, dtypes,
static values), least recently used first out beyond `cache_size`. A retrace is logged on
the `graphc.jit` logger (INFO) with the reason; `GRAPHC_LOG=recompile` prints those
messages to stderr.
"""
from __future__ import annotations

import functools
import inspect
import io
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .backends.interop import host_array, is_array_like
from .builder import Graph, constant, placeholder
from .ir.errors import BuildError, GraphcError
from .ir.loc import Loc
from .logconfig import configure as configure_logging
from .tensor import Tensor

logger = logging.getLogger("graphc.jit")


# --- pytrees --------------------------------------------------------------------------------

class Leaf:
    """A dynamic (traced) leaf: its type is part of the tree's identity, its data is not.
    (A slotted class, not a dataclass: one is built per array per call.)"""
    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self.dtype = dtype

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Leaf) and self.shape == other.shape and self.dtype == other.dtype

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype))

    def __str__(self) -> str:
        return f"{self.dtype}{list(self.shape)}"


def flatten(tree: Any, path: str, leaves: list, paths: list, device_ok: bool = False) -> Any:
    """The structure of `tree` (hashable) with array leaves replaced by Leaf(type); the
    arrays go to `leaves` and their access paths to `paths`. Other libraries' arrays
    (torch, JAX, CuPy: DLPack, `__array__`) are array leaves too, viewed as numpy arrays
    without a copy; device arrays stay as they are when `device_ok` (the cuda backend takes
    them) and are an InputError otherwise."""
    if isinstance(tree, (np.ndarray, np.generic)):  # the common case first: runs every call
        arr = tree if type(tree) is np.ndarray else np.asarray(tree)
        if arr.dtype.kind not in "fiub":
            raise BuildError(f"{path}: arrays of dtype {arr.dtype} cannot be traced")
        leaves.append(arr)
        paths.append(path)
        return Leaf(arr.shape, arr.dtype)
    if isinstance(tree, tuple) and not hasattr(tree, "_fields"):
        return ("tuple", tuple(flatten(v, f"{path}[{i}]", leaves, paths, device_ok)
                               for i, v in enumerate(tree)))
    if isinstance(tree, tuple):  # namedtuple
        return ("namedtuple", type(tree), tuple(flatten(v, f"{path}.{k}", leaves, paths, device_ok)
                                                for k, v in zip(tree._fields, tree)))
    if isinstance(tree, list):
        return ("list", tuple(flatten(v, f"{path}[{i}]", leaves, paths, device_ok)
                              for i, v in enumerate(tree)))
    if isinstance(tree, dict):
        try:
            keys = sorted(tree)
        except TypeError:
            raise BuildError(f"{path}: dict keys must be sortable to trace it") from None
        return ("dict", tuple(keys), tuple(flatten(tree[k], f"{path}[{k!r}]", leaves, paths, device_ok)
                                           for k in keys))
    if isinstance(tree, Tensor):
        leaves.append(tree)
        paths.append(path)
        return Leaf(tuple(tree.shape), tree.dtype.np_dtype)
    if is_array_like(tree):
        return _foreign_leaf(tree, path, leaves, paths, device_ok)
    try:
        hash(tree)
    except TypeError:
        raise BuildError(f"{path}: a {type(tree).__name__} is neither an array nor hashable, so "
                         "it can be neither traced nor used as a static value") from None
    return ("static", tree)


def _foreign_leaf(tree: Any, path: str, leaves: list, paths: list, device_ok: bool) -> Leaf:
    """Another library's array as a leaf: a zero-copy numpy view of host memory, or (for
    the cuda backend) the device array itself, typed from its __cuda_array_interface__."""
    iface = getattr(tree, "__cuda_array_interface__", None) if device_ok else None
    if iface is not None:
        arr, shape, dt = tree, tuple(iface["shape"]), np.dtype(iface["typestr"])
    else:
        arr = host_array(path, tree)
        shape, dt = arr.shape, arr.dtype
    if dt.kind not in "fiub":
        raise BuildError(f"{path}: arrays of dtype {dt} cannot be traced")
    leaves.append(arr)
    paths.append(path)
    return Leaf(shape, dt)


def unflatten(struct: Any, leaves: Sequence[Any]) -> Any:
    it = iter(leaves)

    def build(s: Any) -> Any:
        if isinstance(s, Leaf):
            return next(it)
        kind = s[0]
        if kind == "tuple":
            return tuple(build(c) for c in s[1])
        if kind == "namedtuple":
            return s[1](*[build(c) for c in s[2]])
        if kind == "list":
            return [build(c) for c in s[1]]
        if kind == "dict":
            return {k: build(c) for k, c in zip(s[1], s[2])}
        return s[1]  # static
    return build(struct)


def _describe_change(old: tuple, new: tuple) -> str:
    """Why two signatures differ, in the user's terms (argument paths)."""
    (old_struct, old_paths), (new_struct, new_paths) = old, new
    if old_paths != new_paths:
        return f"argument structure changed ({', '.join(old_paths)} -> {', '.join(new_paths)})"
    old_leaves, new_leaves = _input_leaves(old), _input_leaves(new)
    changes = []
    for path, a, b in zip(new_paths, old_leaves, new_leaves):
        if a != b:
            changes.append(f"{path}: {a} -> {b}")
    if not changes:
        for (name, a), (_, b) in zip(old_struct, new_struct):
            if a != b:
                changes.append(f"static value in argument {name!r} changed: {_static_diff(a, b)}")
    return "; ".join(changes)


def _distance(a: tuple, b: tuple) -> int:
    """How many arguments differ between two signatures (to explain a retrace against the
    most similar cached one)."""
    if a[1] != b[1]:
        return 1 << 20
    return sum(x != y for x, y in zip(a[0], b[0])) * 1000 + sum(
        x != y for (_, sa), (_, sb) in zip(a[0], b[0]) for x, y in zip(_leaves_of(sa), _leaves_of(sb)))


def _leaf_types(s: Any, out: list) -> None:
    if isinstance(s, Leaf):
        out.append(s)
    elif s[0] == "static":
        return
    elif s[0] in ("tuple", "list"):
        for c in s[1]:
            _leaf_types(c, out)
    elif s[0] in ("dict", "namedtuple"):
        for c in s[2]:
            _leaf_types(c, out)


def _static_diff(a: Any, b: Any) -> str:
    """The first differing static value of two flattened trees, as 'old -> new'."""
    if isinstance(a, tuple) and isinstance(b, tuple) and a[:1] == b[:1] == ("static",):
        return f"{a[1]!r} -> {b[1]!r}"
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and a[:1] == b[:1]:
        for x, y in zip(a[1:], b[1:]):
            if x != y:
                return _static_diff(x, y)
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and not isinstance(a[0], str):
        for x, y in zip(a, b):
            if x != y:
                return _static_diff(x, y)
    return "the structure differs"


# --- tracing --------------------------------------------------------------------------------

@dataclass
class Traced:
    """One trace: the graph, its outputs, and how to map arrays in and results out."""
    graph: Graph
    outputs: list            # output Tensors (dynamic output leaves)
    out_struct: Any          # output tree with Leaf markers where outputs go
    input_paths: list[str]
    single_leaf: bool        # the function returned one array (not a tree)
    key: tuple               # the signature it was traced for


def _input_name(path: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]+", "_", path).strip("_") or "arg"
    if base[0].isdigit():
        base = "a" + base
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _user_loc(fn: Callable) -> Loc | None:
    try:
        return Loc(inspect.getsourcefile(fn) or fn.__code__.co_filename, fn.__code__.co_firstlineno)
    except (TypeError, AttributeError):
        return None


class JittedFunction:
    """A traced-and-compiled version of a Python function (see the module docstring)."""

    def __init__(self, fn: Callable, *, static_argnames: Sequence[str] = (), backend: str = "llvm",
                 opt_level: int = 2, cache_size: int = 64, check_numerics: bool | None = None) -> None:
        if not callable(fn):
            raise BuildError(f"gc.jit wraps a function, not {type(fn).__name__}")
        if not (isinstance(cache_size, int) and not isinstance(cache_size, bool) and cache_size >= 1):
            raise BuildError(f"gc.jit: cache_size must be an int >= 1, got {cache_size!r}")
        self.fn = fn
        self.backend = backend
        self.opt_level = opt_level
        self.check_numerics = check_numerics
        self.cache_size = cache_size
        try:
            self._signature = inspect.signature(fn)
        except (TypeError, ValueError) as e:
            raise BuildError(f"gc.jit cannot read the signature of {fn!r}: {e}") from None
        if isinstance(static_argnames, str) or not all(
                isinstance(n, str) for n in _iterable(static_argnames, "static_argnames")):
            raise BuildError(f"gc.jit: static_argnames must be a list of parameter names, got "
                             f"{static_argnames!r}")
        self.static_argnames = tuple(static_argnames)
        unknown = [n for n in self.static_argnames if n not in self._signature.parameters]
        if unknown:
            raise BuildError(f"static_argnames {unknown} are not parameters of {fn.__qualname__}"
                             f"{self._signature}")
        params = list(self._signature.parameters.values())
        plain = all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        # The common call's fast path binds positionally; other signatures (*args, **kw,
        # keyword-only) always go through inspect's binding rules.
        self._positional: list[str] | None = [p.name for p in params] if plain else None
        self._cache: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.RLock()  # the cache is shared by threads calling the function
        self.retraces = 0  # traces after the first (tests and users read it)
        functools.update_wrapper(self, fn)

    # .. argument handling ..
    def _bind(self, args: tuple, kwargs: dict) -> tuple[tuple, list, list[str], inspect.BoundArguments]:
        if not kwargs and self._positional is not None and len(args) == len(self._positional):
            arguments = dict(zip(self._positional, args))  # the common call: no binding rules
            bound = inspect.BoundArguments(self._signature, arguments)  # type: ignore[arg-type]
        else:
            try:
                bound = self._signature.bind(*args, **kwargs)
            except TypeError as e:
                raise BuildError(f"{self.fn.__qualname__}{self._signature}: {e}") from None
            bound.apply_defaults()
        leaves: list = []
        paths: list[str] = []
        struct = []
        for name, value in bound.arguments.items():
            if name in self.static_argnames:
                try:
                    hash(value)
                except TypeError:
                    raise BuildError(f"static argument {name!r} of {self.fn.__qualname__} must be "
                                     f"hashable, got {type(value).__name__}") from None
                struct.append((name, ("static", value)))
            else:
                struct.append((name, flatten(value, name, leaves, paths, self.backend == "cuda")))
        return (tuple(struct), tuple(paths)), leaves, paths, bound

    def trace(self, *args: Any, **kwargs: Any) -> Traced:
        """Run the function on symbolic tensors; returns the graph without compiling it."""
        key, leaves, paths, bound = self._bind(args, kwargs)
        return self._trace(key, leaves, paths, bound)

    def _trace(self, key: tuple, leaves: list, paths: list[str], bound: inspect.BoundArguments) -> Traced:
        g = Graph(self.fn.__name__ if self.fn.__name__.isidentifier() else "jit")
        taken: set[str] = set()
        with g:
            symbols = [placeholder(_input_name(p, taken), leaf.shape, leaf.dtype.name)
                       for p, leaf in zip(paths, _input_leaves(key))]
            it = iter(symbols)
            call_args = {name: struct[1] if name in self.static_argnames
                         else unflatten(struct, [next(it) for _ in _leaves_of(struct)])
                         for name, struct in key[0]}
            bound.arguments.update(call_args)
            try:
                result = self.fn(*bound.args, **bound.kwargs)
            except GraphcError as e:
                raise e.attach(loc=_user_loc(self.fn))
            out_leaves: list = []
            out_paths: list[str] = []
            out_struct = flatten(result, "result", out_leaves, out_paths)
            outputs = []
            for p, leaf in zip(out_paths, out_leaves):
                if isinstance(leaf, Tensor):
                    if leaf.graph is not g:
                        raise BuildError(f"{self.fn.__qualname__} returned {p}, a tensor of another "
                                         "graph (a tensor leaked from an earlier trace?)",
                                         loc=_user_loc(self.fn))
                    outputs.append(leaf)
                else:
                    outputs.append(constant(leaf))  # arrays computed from static values
        if not outputs:
            raise BuildError(f"{self.fn.__qualname__} returned no arrays to compute "
                             f"(it returned {type(result).__name__})", loc=_user_loc(self.fn))
        return Traced(g, outputs, out_struct, list(paths), isinstance(out_struct, Leaf), key)

    # .. calling ..
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key, leaves, paths, bound = self._bind(args, kwargs)
        if any(isinstance(x, Tensor) for x in leaves):
            return self.fn(*args, **kwargs)  # called inside another trace or graph: inline it
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                entry = self._compile(key, leaves, paths, bound)  # one compilation at a time
            else:
                self._cache.move_to_end(key)
        return entry(leaves)

    def _compile(self, key: tuple, leaves: list, paths: list[str], bound) -> "_Entry":
        configure_logging()  # GRAPHC_LOG (graphc/logconfig.py)
        if self._cache:
            self.retraces += 1
            closest = min(self._cache, key=lambda k: _distance(k, key))
            logger.info("recompiling %s (%s): %s [%d signature%s cached]", self.fn.__qualname__,
                        _user_loc(self.fn), _describe_change(closest, key), len(self._cache),
                        "" if len(self._cache) == 1 else "s")
        traced = self._trace(key, leaves, paths, bound)
        entry = _Entry(traced, self._executable(traced))
        self._cache[key] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def _executable(self, traced: Traced):
        from .compile import compile as gc_compile
        return gc_compile(traced.graph, traced.outputs, backend=self.backend, opt_level=self.opt_level,
                          check_numerics=self.check_numerics)

    def lower(self, *args: Any, **kwargs: Any) -> "Lowered":
        """Trace for these arguments and run the pass pipeline, keeping every stage's IR."""
        key, leaves, paths, bound = self._bind(args, kwargs)
        return Lowered(self, self._trace(key, leaves, paths, bound))

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def __repr__(self) -> str:
        return f"<gc.jit {self.fn.__qualname__}{self._signature} backend={self.backend}>"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:  # methods: bind self statically
        if obj is None:
            return self
        return functools.partial(self, obj)


def _input_leaves(key: tuple) -> list[Leaf]:
    return [leaf for _, struct in key[0] for leaf in _leaves_of(struct)]


def _leaves_of(struct: Any) -> list[Leaf]:
    out: list = []
    _leaf_types(struct, out)
    return out


class _Entry:
    """A compiled signature: the executable and how to call it with flattened leaves."""

    def __init__(self, traced: Traced, exe) -> None:
        self.traced = traced
        self.exe = exe
        names = [v.name for v in traced.graph.inputs]
        position = {n: i for i, n in enumerate(names)}
        self.order = [position[n] for n in exe.input_names]  # compile may drop unused inputs

    def __call__(self, leaves: list) -> Any:
        results = self.exe(*[leaves[i] for i in self.order])
        if self.exe.single_output:
            results = (results,)
        return unflatten(self.traced.out_struct, list(results))


class Lowered:
    """A trace and its compilation stages, for inspection: `as_text(stage)`, `report()`."""

    def __init__(self, jitted: JittedFunction, traced: Traced) -> None:
        from .compile import optimize_graph
        self.jitted = jitted
        self.traced = traced
        stream = io.StringIO()
        self.graph, _, self.ledger = optimize_graph(traced.graph, traced.outputs, backend=jitted.backend,
                                                    opt_level=jitted.opt_level, stream=stream)
        self._stages = {"traced": _text(traced.graph, traced.outputs)}
        for chunk in stream.getvalue().split("// IR after ")[1:]:
            name, _, text = chunk.partition("\n")
            self._stages[name] = text
        self._stages["optimized"] = _text(self.graph)

    @property
    def stages(self) -> list[str]:
        extra = ["kernel", "llvm"] if self.jitted.backend == "llvm" else []
        return list(self._stages) + extra

    def as_text(self, stage: str = "optimized") -> str:
        """The IR at `stage`: 'traced', any pass of the pipeline, 'optimized' (what the
        backend receives), and for llvm 'kernel' (kernel IR) and 'llvm' (LLVM IR)."""
        if stage in self._stages:
            return self._stages[stage]
        if stage in ("kernel", "llvm") and self.jitted.backend == "llvm":
            from .backends.numerics import enabled
            from .pipeline import plan
            planned = plan(self.graph, "llvm", opt_level=self.jitted.opt_level,  # what compile runs
                           check_numerics=enabled(self.jitted.check_numerics))
            if stage == "kernel":
                return planned.as_text()
            from .backends.llvm import codegen
            program = planned.program if planned.split is None else planned.split.program
            return codegen.generate(program).text
        raise GraphcError(f"unknown stage {stage!r}; stages: {', '.join(self.stages)}")

    def report(self) -> str:
        return str(self.ledger)

    def compile(self) -> "Compiled":
        return Compiled(self.jitted, _Entry(self.traced, self.jitted._executable(self.traced)))


class Compiled:
    """`Lowered.compile()`: callable with arguments of the traced structure and types."""

    def __init__(self, jitted: JittedFunction, entry: _Entry) -> None:
        self._jitted = jitted
        self._entry = entry
        self.executable = entry.exe

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key, leaves, _, _ = self._jitted._bind(args, kwargs)
        if key != self._entry.traced.key:
            raise BuildError(f"{self._jitted.fn.__qualname__} was compiled for other arguments: "
                             f"{_describe_change(self._entry.traced.key, key)}")
        return self._entry(leaves)

    def report(self) -> str:
        return self.executable.report()


def _text(graph, outputs=None) -> str:
    from .ir.text import print_graph
    if outputs is not None and not graph.outputs:
        from .compile import prepare
        graph, _ = prepare(graph, outputs, prune=False)
    return print_graph(graph)


def _iterable(v: Any, what: str) -> tuple:
    try:
        return tuple(v)
    except TypeError:
        raise BuildError(f"gc.jit: {what} must be a list, got {type(v).__name__} {v!r}") from None


def jit(fn: Callable | None = None, *, static_argnames: Sequence[str] | str = (), backend: str = "llvm",
        opt_level: int = 2, cache_size: int = 64, check_numerics: bool | None = None) -> Any:
    """Decorator: `@gc.jit` or `@gc.jit(static_argnames=("n",), backend="reference")`.

    fn: the Python function to trace (its array arguments become graph inputs; see the
    module docstring). static_argnames: parameters whose values are part of the cache key
    instead of traced. backend: "llvm" (default), "reference" or "cuda", as for gc.compile;
    opt_level likewise. cache_size: how many compiled signatures to keep (least recently
    used first out). check_numerics: raise gc.NumericsError at the first op that produces
    NaN/inf, as for gc.compile (None: GRAPHC_CHECK_NUMERICS).
    """
    names = (static_argnames,) if isinstance(static_argnames, str) else _iterable(
        static_argnames, "static_argnames")

    def wrap(f: Callable) -> JittedFunction:
        return JittedFunction(f, static_argnames=names, backend=backend, opt_level=opt_level,
                              cache_size=cache_size, check_numerics=check_numerics)
    return wrap if fn is None else wrap(fn)
