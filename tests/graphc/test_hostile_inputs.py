"""The hostile-input walk: every public entry point fed bad or unusual input.

The rule under test: whatever the input (call arguments, graphs, text IR, ONNX bytes), the
only exceptions that leave graphc are GraphcError subclasses, and they say where: an op
call's error carries the caller's source line, a call-time error names the argument, an
ONNX error names the file. Each section collects every escape with the input that caused
it and fails once with the list, so a run shows the whole damage rather than one case.

The op walk enumerates `graphc.ops.__all__` and the registry (through `gc.emit`), never a
hand list: a new op or function is walked the day it is added. Inputs come from fixed
seeds, so a failure reproduces.
"""
from __future__ import annotations

import inspect
import math
import os
import pathlib
import random
import traceback
import warnings
from collections import namedtuple
from typing import Any, Callable

import numpy as np
import pytest

import graphc as gc
from graphc import ops as gc_ops
from graphc.backends import available_backends
from graphc.ir.errors import GraphcError, InputError, ParseError
from graphc.ir.registry import all_ops

THIS_FILE = os.path.basename(__file__)
_SCALE = int(os.environ.get("GRAPHC_HOSTILE_SCALE", "3"))  # more: a longer walk, same rules
_SEED = int(os.environ.get("GRAPHC_HOSTILE_SEED", "0"))    # another: other inputs, same rules


# --- the collector ----------------------------------------------------------------------------

class Walk:
    """Runs one hostile input at a time; records what escaped and what it was."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.tried = 0
        self.refused = 0  # GraphcErrors: the right answer to most of these inputs
        self.escapes: list[str] = []
        self.sites: dict[str, int] = {}  # exception type and graphc line -> how many

    def attempt(self, what: str, fn: Callable[[], Any], *, names: tuple[str, ...] = (),
                located: bool = False, refuse: bool = False) -> Any:
        """fn() or None. `names`: one of them must appear in a GraphcError's message.
        `located`: the error must point at a line of this file (the caller's). `refuse`:
        the input is wrong, so accepting it (silently truncating, guessing) is a failure."""
        self.tried += 1
        try:
            out = fn()
            if refuse:
                self.escapes.append(f"{what}\n  accepted, but it must be refused")
            return out
        except GraphcError as e:
            self.refused += 1
            text = str(e)
            if names and not any(n in text for n in names):
                self.escapes.append(f"{what}\n  {type(e).__name__} does not name any of "
                                    f"{names}: {text}")
            elif located and THIS_FILE not in text:
                self.escapes.append(f"{what}\n  {type(e).__name__} has no source line: {text}")
            return None
        except Exception as e:  # noqa: BLE001  (catching everything else is the point)
            frames = traceback.extract_tb(e.__traceback__)
            where = " <- ".join(f"{os.path.relpath(f.filename)}:{f.lineno} {f.name}"
                                for f in reversed(frames[-3:]))
            ours = [f for f in frames if "site-packages" not in f.filename
                    and os.path.basename(f.filename) != THIS_FILE]
            site = f"{type(e).__name__} at " + (f"{os.path.relpath(ours[-1].filename)}:"
                                                f"{ours[-1].lineno}" if ours else where)
            self.sites[site] = self.sites.get(site, 0) + 1
            self.escapes.append(f"{what}\n  {type(e).__name__}: {str(e)[:300]}\n  at {where}")
            return None

    def check(self) -> None:
        print(f"{self.section}: {self.tried} inputs, {self.refused} refused with a GraphcError, "
              f"{len(self.escapes)} escapes")
        if self.escapes:
            sites = "".join(f"\n  {n:5d} x {site}" for site, n in sorted(
                self.sites.items(), key=lambda kv: -kv[1]))
            shown = f"escapes by place:{sites}\n\n" + "\n\n".join(self.escapes[:25])
            more = f"\n\n... and {len(self.escapes) - 25} more" if len(self.escapes) > 25 else ""
            pytest.fail(f"{self.section}: {len(self.escapes)} of {self.tried} hostile inputs "
                        f"broke the error rule:\n\n{shown}{more}", pytrace=False)


def _r(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


# --- pools of values --------------------------------------------------------------------------

SHAPES = [(), (3,), (2, 3), (2, 3, 4), (2, 3, 8, 8), (4, 3, 3, 3), (1, 3, 1, 1), (0, 3), (2,)]
DTYPES = ["f32", "f64", "i32", "i64", "bool"]


class _Obj:
    def __repr__(self) -> str:
        return "<object>"


HOSTILE_OPERANDS: list[Any] = [
    None, 1, 2.5, True, float("nan"), 1j, "abc", b"x", [1, 2], [[1, 2], [3]], [], {},
    np.float32(1.5), np.int64(7), np.array([0, 2]), np.array([0.0, 2.0]),
    np.array([True, False, True]), np.array([1 + 2j]), np.array(["a"]), np.array([_Obj()]),
    np.zeros((2, 3)), np.zeros((0,)), np.arange(6, dtype=np.int8).reshape(2, 3),
    np.array([2**40]), np.uint64(2**63), _Obj(), (1, 2), slice(1),
]

HOSTILE_ATTRS: list[Any] = [
    -1, -7, 0, 10**9, 2**63, 2.5, float("nan"), float("inf"), -0.0, True, False, None, "abc",
    "", ((1, 1), (1, 1)), ((1, 2), (3, 4)), ((1, 2), (3, 4), (5, 6)), [[1]], (), (1, 2, 3),
    (1, 2, 3, 4, 5), (1, None), (1.5, 2), (-1, -1), np.int64(2), np.int32(-3), np.float32(2.0),
    np.array([1, 2]), np.array([[1, 1], [1, 1]]), 1j, _Obj(), "same", "valid", b"x",
    [True, False], {"a": 1}, (2**63, 1),
]

PLAUSIBLE_ATTRS: list[Any] = [1, 2, 0, -1, 3, (0,), (1,), (0, 1), (2, 3), (3, 2), (6,), "f32",
                              "i32", True, False, 0.5, ((1, 1), (1, 1)), "same", "mean", "tanh"]


def _annotation(p: inspect.Parameter) -> str:
    return p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")


def _is_operand(p: inspect.Parameter) -> bool:
    """ops.py's convention: operands are unannotated or annotated with Tensor."""
    return p.annotation is inspect.Parameter.empty or "Tensor" in _annotation(p)


def _must_refuse(p: inspect.Parameter, value: Any) -> bool:
    """Whether an attribute value is of a kind the parameter's annotation rules out (a float
    for an int, a string for a number, None where None is not an option...): accepting it
    would be a silent guess (truncating 2.5 to 2, reading None as a default)."""
    ann = _annotation(p)
    if "Any" in ann or not ann:
        return False
    if isinstance(value, (bytes, complex, dict, _Obj)):
        return True
    if value is None:
        return "None" not in ann and p.default is not None
    if isinstance(value, str):
        return "str" not in ann
    if isinstance(value, (bool, np.bool_)):
        return "bool" not in ann
    if isinstance(value, (float, np.floating)):
        return "float" not in ann
    if isinstance(value, (tuple, list)) and any(isinstance(v, (tuple, list)) for v in value):
        return "Sequence[Sequence" not in ann
    if isinstance(value, (tuple, list)) and any(isinstance(v, float) or v is None for v in value):
        return True
    if isinstance(value, (tuple, list, np.ndarray)):
        return "Sequence" not in ann
    return False


def _public_functions() -> list[tuple[str, Callable]]:
    out = []
    for name in gc_ops.__all__:
        fn = getattr(gc_ops, name)
        if callable(fn) and name != "emit":
            out.append((name, fn))
    return out


class Spec:
    """A reproducible operand: a placeholder of a type, or a literal value."""

    def __init__(self, shape: tuple[int, ...] | None = None, dtype: str = "f32",
                 literal: Any = None, many: int = 0) -> None:
        self.shape, self.dtype, self.literal, self.many = shape, dtype, literal, many

    def make(self, i: int) -> Any:
        if self.shape is None:
            return self.literal
        if self.many:
            return [gc.placeholder(f"in{i}_{k}", self.shape, self.dtype) for k in range(self.many)]
        return gc.placeholder(f"in{i}", self.shape, self.dtype)

    def __repr__(self) -> str:
        if self.shape is None:
            return _r(self.literal)
        t = f"{self.dtype}{list(self.shape)}"
        return f"[{t} x{self.many}]" if self.many else t


def _tensor_spec(rnd: random.Random, p: inspect.Parameter, first: Spec | None = None) -> Spec:
    """A random operand type; later operands often follow the first one (same shape, or one
    of its dimensions as a vector, same dtype), so ops with related operands find examples."""
    shape, dtype = rnd.choice(SHAPES), rnd.choice(DTYPES) if rnd.random() < 0.35 else "f32"
    if first is not None and first.shape is not None:
        u = rnd.random()
        if u < 0.3:
            shape = first.shape
        elif u < 0.6 and first.shape:
            shape = (rnd.choice(first.shape),)
        if rnd.random() < 0.6:
            dtype = first.dtype
    if "Sequence" in _annotation(p):
        return Spec(shape, dtype, many=rnd.randint(1, 3))
    return Spec(shape, dtype)


def _call(fn: Callable, params: list[inspect.Parameter], specs: dict[str, Spec],
          attrs: dict[str, Any]) -> Callable[[], Any]:
    def run() -> Any:
        g = gc.Graph("walk")
        with g:
            args = {name: s.make(i) for i, (name, s) in enumerate(specs.items())}
            kwargs = {**args, **attrs}
            positional = [kwargs.pop(p.name) for p in params
                          if p.kind == p.POSITIONAL_OR_KEYWORD and p.name in kwargs
                          and p.default is p.empty]
            return g, fn(*positional, **kwargs)
    return run


def _tensors_of(result: Any) -> list[Any]:
    items = result if isinstance(result, (tuple, list)) else [result]
    return [t for t in items if isinstance(t, gc.Tensor)]


def _feed(v: Any, rnd: np.random.Generator) -> np.ndarray:
    dt = v.dtype
    if dt.is_float:
        return rnd.standard_normal(v.shape).astype(dt.np_dtype)
    if dt.is_int:
        return rnd.integers(0, 2, v.shape).astype(dt.np_dtype)
    return rnd.random(v.shape) < 0.5


def _backend(rnd: random.Random) -> str:
    """Mostly the reference (cheap); now and then llvm, whose lowering has rules of its own."""
    return "llvm" if rnd.random() < 0.08 and "llvm" in available_backends() else "reference"


def _run_small(walk: Walk, what: str, built: Any, backend: str = "reference") -> None:
    """An accepted graph must compile and run (or refuse clearly) on the reference."""
    if built is None:
        return
    g, result = built
    outs = _tensors_of(result)
    if not outs or any(v.type.size > 4096 for v in g.all_values()):
        return
    rnd = np.random.default_rng(0)

    def go():
        exe = gc.compile(g, outs, backend=backend)
        return exe(**{v.name: _feed(v, rnd) for v in exe.graph.inputs})
    walk.attempt(f"{what} -> compile and run ({backend})", go)


# --- builder ----------------------------------------------------------------------------------

BAD_SHAPES = [-1, (2, -1), 2.5, (2.5,), "3", None, [[1]], True, (True, 2), (1, None), 10**30,
              (2**63,), np.array([[2]]), {"a": 1}, 1j, (np.float64(2.0),), _Obj()]
BAD_DTYPES = ["f8x", None, 3, np.complex64, object, "int8", np.dtype("U3"), "", b"f32", [], "uint8",
              np.uint8, str, {"f": 1}]
BAD_NAMES = ["", "1x", "a b", None, 3, "x", "a-b", b"x", ("x",), "%x", "x\n", "a:b"]
BAD_CONSTANT_NAMES = ["", 3, b"x", ("x",), "x"]  # constant names are free-form (ONNX's)
ODD_NAMES = ["é", "a.b", "_", "x1.weight", "ü2"]  # accepted: they must round-trip


def test_builder_entry_points_refuse_bad_shapes_dtypes_and_names():
    walk = Walk("builder")
    for shape in BAD_SHAPES:
        for entry in ("placeholder", "param"):
            def f(shape=shape, entry=entry):
                with gc.Graph("b"):
                    if entry == "param":
                        return gc.param("w", shape, init=gc.init.zeros())
                    return gc.placeholder("x", shape)
            walk.attempt(f"gc.{entry}('x', shape={_r(shape)})", f, located=True, refuse=True)
    for dtype, entry in [(d, e) for d in BAD_DTYPES for e in ("placeholder", "param", "constant")
                         if d is not None or e != "constant"]:  # constant(dtype=None): inferred
        if True:
            def f(dtype=dtype, entry=entry):
                with gc.Graph("b"):
                    if entry == "constant":
                        return gc.constant([1.0, 2.0], dtype)
                    if entry == "param":
                        return gc.param("w", (2,), dtype, init=gc.init.zeros())
                    return gc.placeholder("x", (2,), dtype)
            walk.attempt(f"gc.{entry}(dtype={_r(dtype)})", f, located=True, refuse=True)
    for name, entry in [(n, e) for n in BAD_NAMES for e in ("placeholder", "param")] + [
            (n, "constant") for n in BAD_CONSTANT_NAMES]:
        if True:
            def f(name=name, entry=entry):
                with gc.Graph("b"):
                    gc.placeholder("x", (1,))
                    if entry == "constant":
                        return gc.constant(1.0, name=name)
                    if entry == "param":
                        return gc.param(name, (2,), init=gc.init.zeros())
                    return gc.placeholder(name, (2,))
            walk.attempt(f"gc.{entry}(name={_r(name)})", f, located=True, refuse=True)
    for name in ODD_NAMES + ["a b", "%x", "x\n", "1x", '"', "}"]:
        def f(name=name):
            g = gc.Graph("b")
            with g:
                x = gc.placeholder("x", (2,))
                y = x + gc.constant(1.0, name=name + "c")
                if name.replace(".", "_").isidentifier():
                    y = y + gc.placeholder(name, (2,)) + gc.param(name + "p", (2,),
                                                                  init=gc.init.zeros())
            g.set_outputs([y])
            text = g.to_text()
            if gc.parse(text).to_text() != text:
                raise AssertionError(f"name {name!r} does not round-trip:\n{text}")
        walk.attempt(f"name {name!r} round-trips through the text IR", f)
    values = [None, "abc", np.array(["a"]), np.array([_Obj()]), [[1, 2], [3]], {"a": 1}, 1j,
              np.array([1 + 1j]), 2**70, [2**70], _Obj(), np.zeros((2, 2)), float("nan"), [],
              b"xy", (1, (2, 3))]
    for value in values:
        def f(value=value):
            with gc.Graph("b"):
                return gc.constant(value)
        walk.attempt(f"gc.constant({_r(value)})", f, located=True)

        def f2(value=value):
            with gc.Graph("b"):
                return gc.param("w", (2,), value=value)
        walk.attempt(f"gc.param('w', (2,), value={_r(value)})", f2, located=True)
    for fname in gc.init.__all__:
        fn = getattr(gc.init, fname)
        if fname == "Init":
            continue
        for bad in [-1, float("nan"), float("inf"), "abc", None, 2.5, True, 10**400, 2**70, 1j]:
            params = inspect.signature(fn).parameters.values()
            good = {p.name: 0.5 if p.default is p.empty else p.default for p in params}
            for name in good:
                kw = {**good, name: bad}
                walk.attempt(f"gc.init.{fname}(**{kw})", lambda fn=fn, kw=kw: fn(**kw),
                             located=True)
    for init in ["zeros", 3, None, lambda t: 0]:
        def f(init=init):
            g = gc.Graph("b")
            with g:
                w = gc.param("w", (2, 2), init=init)
            return gc.compile(g, w, backend="reference")()
        walk.attempt(f"gc.param(init={_r(init)}) then compile", f)
    for kwargs in [dict(init=gc.init.zeros(), value=np.zeros(2)), dict(), dict(trainable="yes",
                   init=gc.init.zeros())]:
        def f(kwargs=kwargs):
            with gc.Graph("b"):
                return gc.param("w", (2,), **kwargs)
        walk.attempt(f"gc.param('w', (2,), **{_r(kwargs)})", f, located=True)
    # outside any graph, across graphs
    walk.attempt("gc.placeholder outside a graph", lambda: gc.placeholder("x", (2,)), located=True)
    walk.attempt("gc.relu(3.0) outside a graph", lambda: gc.relu(3.0), located=True)

    def mixed():
        with gc.Graph("a"):
            a = gc.placeholder("x", (2,))
        with gc.Graph("b"):
            b = gc.placeholder("x", (2,))
        return a + b
    walk.attempt("a + b from two graphs", mixed, located=True)
    walk.check()


# --- every public op function, and every registry op through gc.emit --------------------------

def _find_example(walk: Walk, name: str, fn: Callable, params, rnd: random.Random):
    """Plausible operands and attributes that build (searched, fixed seed)."""
    operands = [p for p in params if _is_operand(p)]
    attrs = [p for p in params if not _is_operand(p) and p.kind != p.VAR_KEYWORD]
    for _ in range(150):
        specs: dict[str, Spec] = {}
        for p in operands:
            if p.default is p.empty or rnd.random() < 0.3:
                specs[p.name] = _tensor_spec(rnd, p, next(iter(specs.values()), None))
        chosen = {p.name: rnd.choice(PLAUSIBLE_ATTRS) for p in attrs
                  if p.default is p.empty or rnd.random() < 0.4}
        built = walk.attempt(f"gc.{name}({specs}, {chosen})", _call(fn, params, specs, chosen),
                             located=True)
        if built is not None:
            return specs, chosen, built
    return None


def test_every_op_function_refuses_hostile_operands_and_attributes():
    walk = Walk("gc ops")
    found = []
    for name, fn in _public_functions():
        rnd = random.Random(f"{name}:{_SEED}")
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL,)]
        example = _find_example(walk, name, fn, params, rnd)
        if example is None:
            continue
        found.append(name)
        specs, chosen, built = example
        _run_small(walk, f"gc.{name}({specs}, {chosen})", built)
        attr_params = [p for p in params if not _is_operand(p) and p.kind != p.VAR_KEYWORD]
        for p in attr_params:
            for bad in HOSTILE_ATTRS:
                attrs = {**chosen, p.name: bad}
                what = f"gc.{name}({specs}, {p.name}={_r(bad)}, others {chosen})"
                out = walk.attempt(what, _call(fn, params, specs, attrs), located=True,
                                   refuse=_must_refuse(p, bad))
                if out is not None and rnd.random() < 0.25 * _SCALE:
                    _run_small(walk, what, out, _backend(rnd))
        for p in [p for p in params if _is_operand(p)]:
            pool = [Spec(literal=v) for v in HOSTILE_OPERANDS]
            pool += [Spec(s, d) for s in SHAPES for d in DTYPES if rnd.random() < 0.3]
            for bad in pool:
                what = f"gc.{name}({ {**specs, p.name: bad} }, {chosen})"
                out = walk.attempt(what, _call(fn, params, {**specs, p.name: bad}, chosen),
                                   located=True)
                if out is not None and rnd.random() < 0.2 * _SCALE:
                    _run_small(walk, what, out, _backend(rnd))
    # the example search must not silently walk nothing
    assert len(found) >= len(_public_functions()) - 3, sorted(
        set(n for n, _ in _public_functions()) - set(found))
    walk.check()


def test_every_registry_op_through_emit_refuses_hostile_attributes():
    walk = Walk("registry ops via gc.emit")
    from graphc.fuzz.graphs import op_example
    for op, opdef in all_ops().items():
        example = op_example(op)
        if example is None:
            continue
        node = example.nodes[-1]
        types = [(v.shape, v.dtype.name) for v in node.inputs]
        good = dict(node.attrs)

        def build(attrs, types=types, op=op):
            def run():
                g = gc.Graph("walk")
                with g:
                    args = [gc.placeholder(f"in{i}", s, d) for i, (s, d) in enumerate(types)]
                    return g, gc.emit(op, *args, **attrs)
            return run
        for attr in opdef.attrs:
            for bad in HOSTILE_ATTRS:
                what = f"gc.emit({op!r}, {types}, {attr}={_r(bad)}, others {good})"
                out = walk.attempt(what, build({**good, attr: bad}), located=True)
                if out is not None and random.Random(what).random() < 0.1 * _SCALE:
                    _run_small(walk, what, out)
        walk.attempt(f"gc.emit({op!r}) with an unknown attribute",
                     build({**good, "no_such_attr": 1}), located=True)
        walk.attempt(f"gc.emit({op!r}) with no operands", lambda op=op: gc.emit(op), located=True)
    for op in ["nope", "", None, 3, "Relu"]:
        def f(op=op):
            with gc.Graph("b"):
                return gc.emit(op, gc.placeholder("x", (2,)))
        walk.attempt(f"gc.emit({op!r}, x)", f, located=True)
    walk.check()


def _classes(module: Any) -> list[tuple[str, type]]:
    found = {c: n for n, c in reversed(list(vars(module).items()))  # the first name of each
             if inspect.isclass(c) and c.__module__ == module.__name__ and not n.startswith("_")}
    return [(n, c) for c, n in found.items()]


LAYER_PLAUSIBLE: list[Any] = [3, 2, 1, 4, (3,), (2, 3), 0.1, True, False, None]


def test_layers_and_optimisers_refuse_hostile_arguments():
    """gc.nn layers and gc.optim optimisers (enumerated from the modules): hostile
    constructor arguments, then hostile inputs to a layer that was built."""
    walk = Walk("gc.nn and gc.optim")
    layers = _classes(gc.nn)
    optimisers = _classes(gc.optim)
    assert layers and optimisers
    for name, cls in layers:
        rnd = random.Random(f"{name}:{_SEED}")
        params = [p for p in inspect.signature(cls).parameters.values() if p.name != "self"]
        good = None
        for _ in range(200):
            kw = {p.name: rnd.choice(LAYER_PLAUSIBLE) for p in params
                  if p.default is p.empty or rnd.random() < 0.2}

            def make(kw=kw):
                g = gc.Graph("layer")
                with g:
                    return g, cls(**kw)
            built = walk.attempt(f"gc.nn.{name}(**{kw})", make, located=True)
            if built is not None:
                good = kw, built
                break
        assert good is not None, f"no working arguments found for gc.nn.{name}"
        kw, (g, layer) = good
        for p in params:
            for bad in HOSTILE_ATTRS:
                def make(kw={**kw, p.name: bad}):
                    with gc.Graph("layer"):
                        return cls(**kw)
                walk.attempt(f"gc.nn.{name}(**{ {**kw, p.name: bad} })", make, located=True)
        call_params = [q for q in inspect.signature(layer.__call__).parameters.values()]
        for shape in SHAPES:
            for dtype in ("f32", "i32", "f64"):
                def call(shape=shape, dtype=dtype):
                    with g:
                        return layer(gc.placeholder(g.unique_name("in"), shape, dtype))
                walk.attempt(f"gc.nn.{name}(**{kw})({dtype}{list(shape)})", call, located=True)
        for bad in HOSTILE_OPERANDS:
            def call(bad=bad):
                with g:
                    return layer(bad)
            walk.attempt(f"gc.nn.{name}(**{kw})({_r(bad)})", call, located=True)
        if len(call_params) > 1:  # e.g. BatchNorm(training=...)
            for bad in HOSTILE_ATTRS:
                def call(bad=bad):
                    with g:
                        x = gc.placeholder(g.unique_name("in"), (2, 3, 4, 4))
                        return layer(x, bad)
                walk.attempt(f"gc.nn.{name}(**{kw})(x, {_r(bad)})", call, located=True)
    for name, cls in optimisers:
        params = [p for p in inspect.signature(cls).parameters.values() if p.name != "self"]

        def step(kw, loss_of=lambda g, w, loss: loss):
            g = gc.Graph("train")
            with g:
                w = gc.param("w", (3,), init=gc.init.ones())
                loss = (w * w).sum()
                opt = cls(**kw)
            return gc.compile(g, [loss], updates=opt.updates(loss_of(g, w, loss)), backend="reference")()
        assert walk.attempt(f"gc.optim.{name}()", lambda: step({})) is not None
        for p in params:
            for bad in HOSTILE_ATTRS:
                walk.attempt(f"gc.optim.{name}({p.name}={_r(bad)})",
                             lambda p=p, bad=bad: step({p.name: bad}), located=True)
        for what, loss_of in [("None", lambda g, w, loss: None), ("a number", lambda g, w, l: 1.0),
                              ("a vector", lambda g, w, loss: w * 2),
                              ("no trainable params", lambda g, w, loss: gc.sum(
                                  gc.placeholder("z", (2,))))]:
            walk.attempt(f"gc.optim.{name}().updates({what})",
                         lambda lo=loss_of: step({}, lo), located=True)
    walk.check()


def test_random_operand_and_attribute_combinations():
    walk = Walk("gc ops random combinations")
    rnd = random.Random(1234 + _SEED)
    functions = _public_functions()
    for _ in range(1500 * _SCALE):
        name, fn = rnd.choice(functions)
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        specs = {}
        attrs = {}
        for p in params:
            if _is_operand(p):
                if p.default is p.empty or rnd.random() < 0.3:
                    specs[p.name] = (_tensor_spec(rnd, p) if rnd.random() < 0.7
                                     else Spec(literal=rnd.choice(HOSTILE_OPERANDS)))
            elif p.default is p.empty or rnd.random() < 0.5:
                attrs[p.name] = rnd.choice(HOSTILE_ATTRS + PLAUSIBLE_ATTRS)
        what = f"gc.{name}({specs}, {attrs})"
        out = walk.attempt(what, _call(fn, params, specs, attrs), located=True)
        if out is not None:
            _run_small(walk, what, out, _backend(rnd))
    walk.check()


# --- numpy operands take the dtype of their role -----------------------------------------------

def test_numpy_operands_take_the_dtype_their_role_needs():
    g = gc.Graph("roles")
    with g:
        x = gc.placeholder("x", (5, 3))
        idx = gc.take(x, np.array([0, 2], dtype=np.int32))       # indices stay integers
        idx64 = gc.take(x, np.array([4, 1]), axis=0)             # numpy's default int64
        labels = gc.softmax_cross_entropy(x, np.array([0, 1, 2, 0, 1], dtype=np.int32))
        masked = gc.where(np.array([True, False, True]), x, 0.0)  # the condition stays bool
        data = gc.take(np.arange(12.0).reshape(4, 3), gc.placeholder("i", (2,), "i32"))
        prod = gc.matmul(np.ones((2, 5)), x)                    # f64 data -> x's f32
    assert idx.value.producer.inputs[1].dtype == gc.i32
    assert idx64.value.producer.inputs[1].dtype == gc.i64
    assert labels.value.producer.inputs[1].dtype == gc.i32
    assert masked.value.producer.inputs[0].dtype == gc.bool_
    assert data.dtype == gc.f64 and prod.dtype == gc.f32
    xv = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    got = gc.compile(g, [idx, idx64, masked, prod, data], backend="reference")(x=xv, i=np.array([3, 0], np.int32))
    np.testing.assert_array_equal(got[0], xv[[0, 2]])
    np.testing.assert_array_equal(got[1], xv[[4, 1]])
    np.testing.assert_array_equal(got[2], np.where([True, False, True], xv, 0))
    np.testing.assert_allclose(got[3], np.ones((2, 5)) @ xv, rtol=1e-6)
    np.testing.assert_array_equal(got[4], np.arange(12.0).reshape(4, 3)[[3, 0]])
    with gc.Graph("bad"):
        x = gc.placeholder("x", (5, 3))
        with pytest.raises(gc.DTypeError, match="integer index"):
            gc.take(x, np.array([0.0, 2.0]))                    # never truncated silently
        with pytest.raises(gc.DTypeError, match="integer label"):
            gc.softmax_cross_entropy(x, np.array([0.0, 1, 2, 0, 1]))

    @gc.jit(backend="reference")
    def f(x):
        return np.take(x, np.array([0, 2]), axis=0) + np.take(x, np.array([1, 1]), axis=0)
    xv = np.arange(15.0, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(f(xv), xv[[0, 2]] + xv[[1, 1]])


# --- gc.compile and calling an Executable ------------------------------------------------------

def _small_graph():
    g = gc.Graph("small")
    with g:
        x = gc.placeholder("x", (2, 3))
        i = gc.placeholder("i", (2,), "i32")
        w = gc.param("w", (3, 3), init=gc.init.normal(0.1, seed=0))
        y = gc.relu(x @ w) + gc.cast(i, "f32")[:, None]
        loss = y.sum()
        (gw,) = gc.grad(loss, [w])
    with gc.Graph("other"):
        other = gc.placeholder("z", (2,))
    return g, x, w, y, loss, gw, other


def test_compile_refuses_bad_outputs_updates_params_and_options():
    walk = Walk("gc.compile")
    g, x, w, y, loss, gw, other = _small_graph()
    outputs = [None, [], "y", 3, [y, None], other, [other], [y, "x"], {"y": y}, (y, 3), x.value,
               [[y]], np.zeros(2)]
    for o in outputs:
        walk.attempt(f"gc.compile(outputs={_r(o)})", lambda o=o: gc.compile(g, o, backend="reference"), located=True)
    updates = [{"nope": gw}, {x: gw}, {w: y}, {w: "abc"}, [(w,)], "abc", 5, {w: gw, "w": gw},
               [(w, gw, 1)], {3: gw}, {None: gw}, {w: other}, {w: np.zeros((3, 3))}]
    for u in updates:
        walk.attempt(f"gc.compile(updates={_r(u)})",
                     lambda u=u: gc.compile(g, [loss], updates=u, backend="reference"), located=True)
    params = [{"w": "abc"}, {"w": np.zeros((2, 2))}, {"nope": np.zeros((3, 3))}, {"w": None},
              [1, 2], "w", {"w": np.zeros((3, 3), complex)}, {"w": [[1, 2, 3]] * 3},
              {"w": np.zeros((3, 3), object)}, {3: 1}]
    for p in params:
        walk.attempt(f"gc.compile(params={_r(p)})", lambda p=p: gc.compile(g, [y], params=p, backend="reference"),
                     located=True)
    for lvl in [-1, 5, "2", None, 2.5, True, 10**9, float("nan")]:
        walk.attempt(f"gc.compile(opt_level={_r(lvl)})",
                     lambda lvl=lvl: gc.compile(g, [y], opt_level=lvl, backend="reference"), located=True)
    for backend in ["nope", None, 3, "", "LLVM", ["llvm"]]:
        walk.attempt(f"gc.compile(backend={_r(backend)})",
                     lambda b=backend: gc.compile(g, [y], backend=b), located=True)
    for kw in [dict(passes=["nope"]), dict(passes=3), dict(passes=[None]), dict(winograd="nope"),
               dict(winograd=None), dict(donate="x"), dict(donate=["nope"]), dict(donate=3),
               dict(state_updates="yes")]:
        walk.attempt(f"gc.compile(**{_r(kw)})", lambda kw=kw: gc.compile(g, [y], **kw, backend="reference"),
                     located=True)
    walk.attempt("gc.compile(not a graph)", lambda: gc.compile("g", [y], backend="reference"), located=True)
    walk.attempt("gc.compile(graph without outputs)", lambda: gc.compile(gc.Graph("e"), backend="reference"),
                 located=True)
    walk.check()


BAD_ARRAYS = [
    ("int where float", np.ones((2, 3), np.int64)), ("complex", np.ones((2, 3), complex)),
    ("object", np.full((2, 3), _Obj(), dtype=object)), ("strings", np.full((2, 3), "a")),
    ("a Python list", [[1.0, 2.0, 3.0]] * 2), ("a scalar", 1.0), ("None", None),
    ("a ragged list", [[1.0], [2.0, 3.0]]), ("zero-size", np.zeros((0, 3), np.float32)),
    ("wrong shape", np.zeros((3, 2), np.float32)), ("rank 0", np.float32(1.0)),
    ("bool", np.ones((2, 3), bool)), ("a dict", {"a": 1}), ("a string", "abc"),
    ("datetime", np.zeros((2, 3), "datetime64[s]")), ("f16", np.ones((2, 3), np.float16)),
    ("non-contiguous", np.ones((3, 6), np.float32)[::-1, ::3][:2]),
    ("Fortran order", np.asfortranarray(np.ones((2, 3), np.float32))),
    ("nan", np.full((2, 3), np.nan, np.float32)), ("a generator", (v for v in [1.0])),
]
BAD_INDEX_ARRAYS = [("float where int", np.zeros(2, np.float32)), ("out of int32 range",
                    np.array([2**40, 0])), ("uint64", np.array([1, 2], np.uint64)),
                    ("bool", np.array([True, False])), ("int8", np.array([1, 0], np.int8)),
                    ("out of range index", np.array([7, -9], np.int32))]


@pytest.mark.parametrize("backend", [b for b in ("reference", "llvm") if b in available_backends()])
def test_calling_an_executable_with_bad_arguments_names_the_argument(backend):
    walk = Walk(f"Executable ({backend})")
    g, x, w, y, loss, gw, other = _small_graph()
    exe = gc.compile(g, [y], backend=backend)
    good = {"x": np.ones((2, 3), np.float32), "i": np.array([0, 1], np.int32)}
    assert exe(**good)[0].shape == (2, 3)
    for what, arr in BAD_ARRAYS:
        out = walk.attempt(f"{backend}: x = {what}", lambda a=arr: exe(**{**good, "x": a}),
                           names=("'x'",))
        if out is not None:  # accepted: it must mean the same as the converted array
            ref = exe(x=np.ascontiguousarray(np.asarray(arr, np.float32)), i=good["i"])
            np.testing.assert_array_equal(out[0], ref[0], err_msg=what)
    for what, arr in BAD_INDEX_ARRAYS:
        walk.attempt(f"{backend}: i = {what}", lambda a=arr: exe(**{**good, "i": a}),
                     names=("'i'", "index", "gather", "range"))
    calls = [((), {}), ((good["x"],), {}), ((), {"x": good["x"]}), ((), {**good, "z": 1}),
             ((), {"X": good["x"], "i": good["i"]}), ((good["x"], good["i"], good["x"]), {}),
             ((good["x"],), {"x": good["x"], "i": good["i"]}), ((), {**good, "w": good["x"]})]
    for args, kwargs in calls:
        walk.attempt(f"{backend}: exe(*{len(args)} args, **{sorted(kwargs)})",
                     lambda a=args, k=kwargs: exe(*a, **k), names=("'x'", "'i'", "'z'", "'X'",
                                                                    "'w'", "inputs", "input"))
    for name, value in [("w", "abc"), ("w", np.zeros((2, 2))), ("nope", np.zeros((3, 3))),
                        ("w", np.zeros((3, 3), complex)), ("w", None), (3, 1)]:
        def assign(name=name, value=value):
            exe.params[name] = value
        walk.attempt(f"{backend}: exe.params[{name!r}] = {_r(value)}", assign,
                     names=(repr(name), str(name)))
    walk.attempt(f"{backend}: exe.params['nope']", lambda: exe.params["nope"], names=("nope",))
    walk.attempt(f"{backend}: del exe.params['w']", lambda: exe.params.__delitem__("w"),
                 names=("parameter",))
    walk.check()


# --- text IR ---------------------------------------------------------------------------------

def _tokens(text: str) -> list[str]:
    import re
    return re.findall(r"\s+|[A-Za-z_][A-Za-z0-9_.]*|%[A-Za-z0-9_.]+|-?\d+(?:\.\d+)?(?:e-?\d+)?|.",
                      text, flags=re.S)


def _mutate_text(text: str, rnd: random.Random) -> tuple[str, str]:
    toks = _tokens(text)
    kind = rnd.choice(["delete", "duplicate", "swap", "number", "truncate", "byte", "line",
                       "token"])
    i = rnd.randrange(len(toks))
    if kind == "delete":
        del toks[i]
    elif kind == "duplicate":
        toks.insert(i, toks[i])
    elif kind == "swap":
        j = rnd.randrange(len(toks))
        toks[i], toks[j] = toks[j], toks[i]
    elif kind == "number":
        nums = [k for k, t in enumerate(toks) if t[:1].isdigit() or t[:2].startswith("-")]
        if nums:
            i = rnd.choice(nums)
        toks[i] = rnd.choice(["0", "-1", "99999999999999999999", "1.5", "nan", "-0", "3", "1e9"])
    elif kind == "truncate":
        return "".join(toks)[:rnd.randrange(len(text))], f"truncate at token {i}"
    elif kind == "byte":
        s = list("".join(toks))
        j = rnd.randrange(len(s))
        s[j] = chr(rnd.choice([0, 10, 34, 37, 40, 41, 44, 58, 61, 91, 93, 123, 125, 0xE9, 0x1F600]))
        return "".join(s), f"byte {j}"
    elif kind == "line":
        lines = "".join(toks).splitlines()
        j = rnd.randrange(len(lines))
        k = rnd.randrange(len(lines))
        lines.insert(k, lines.pop(j)) if rnd.random() < 0.5 else lines.insert(k, lines[j])
        return "\n".join(lines), f"move/copy line {j} to {k}"
    else:
        toks[i] = rnd.choice(["%x", "f32", "i64", "[", "]", "{", "}", "=", ":", "group(1)",
                              "loc(\"a\":1)", "return", "params", "relu", "matmul", "@g", "true"])
    return "".join(toks), f"{kind} token {i}"


def test_parse_refuses_mutated_text_ir():
    from tests.ir.random_graphs import build_random_graph
    walk = Walk("gc.parse")
    rnd = random.Random(99 + _SEED)
    rng = np.random.default_rng(0)
    compiled = 0
    for seed in range(25 * _SCALE):
        g = build_random_graph(seed + 1000 * _SEED, max_nodes=6, params=True, constants=True, updates=True,
                               locs=True)
        text = g.to_text()
        assert gc.parse(text).to_text() == text
        for _ in range(60):
            mutated, how = _mutate_text(text, rnd)
            parsed = walk.attempt(f"random graph {seed}, {how}:\n{mutated}",
                                  lambda m=mutated: gc.parse(m))
            if parsed is not None and compiled < 150 * _SCALE and parsed.outputs and all(
                    v.type.size <= 4096 for v in parsed.all_values()):
                compiled += 1
                backend = "llvm" if compiled % 8 == 0 and "llvm" in available_backends() \
                    else "reference"

                def go(p=parsed, backend=backend):
                    exe = gc.compile(p, backend=backend)
                    return exe(**{v.name: _feed(v, rng) for v in exe.graph.inputs})
                walk.attempt(f"random graph {seed}, {how}, parsed, then compiled:\n{mutated}", go)
    for text in ["", "\0", "graph", "graph @g(", "graph @g() {", "graph @g() { return }",
                 "graph @g(%x: f32[2]) { return %x }" * 2, "graph @g(%x: f32[-1]) { return %x }",
                 "graph @g(%x: f99[2]) { return %x }", "graph @g(%x: f32[2]) { return %y }",
                 "graph @g(%x: f32[99999999999999999999]) { return %x }", "\ufeffgraph",
                 "graph @g(%x: f32[2]) {\n  %0 = relu(%x) : f32[3]\n  return %0\n}",
                 "graph @g(%x: f32[2]) {\n  %0 = nope(%x) : f32[2]\n  return %0\n}",
                 "graph @g(%x: f32[2]) {\n  %0 = relu(%x, %x) : f32[2]\n  return %0\n}",
                 "graph @g(%x: f32[2]) {\n  %0 = relu(%x) {a=1} : f32[2]\n  return %0\n}"]:
        walk.attempt(f"gc.parse({text!r})", lambda t=text: gc.parse(t))
    for not_text in [None, 3, b"graph", ["graph"]]:
        walk.attempt(f"gc.parse({not_text!r})", lambda t=not_text: gc.parse(t))
    walk.check()


def test_lowering_refuses_mutated_fusion_groups_in_text_ir():
    """A dumped, fused graph edited by hand: its group(n) marks are read back and lowered as
    they are (`lower(g, fuse_ops=None)`), so a group that cannot be one kernel must be a
    clear error (FusionGroupError), not a crash inside the lowering."""
    from graphc.passes.fusion import fuse
    from graphc.passes.legalize import legalize
    from graphc.passes.lower import lower
    from tests.ir.random_graphs import build_random_graph
    walk = Walk("lowering of fused text IR")
    rnd = random.Random(7 + _SEED)
    ops = ("matmul", "conv2d", "add", "sub", "mul", "tanh", "relu", "exp", "reshape", "sum",
           "max", "broadcast_to", "transpose", "expand_dims")
    texts = []
    for seed in range(80 * _SCALE):
        g = build_random_graph(seed + 1000 * _SEED, min_nodes=4, max_nodes=9, ops=ops, dtypes=("f32",))
        try:
            work = g.copy()
            legalize(work)
            fuse(work)
        except GraphcError:
            continue
        text = work.to_text()
        if "group(" in text:
            texts.append((seed, text))
    assert len(texts) >= 20, f"too few fused graphs to mutate ({len(texts)})"
    for seed, text in texts:
        groups = sorted(set(int(n) for n in __import__("re").findall(r"group\((\d+)\)", text)))
        for _ in range(12):
            lines = text.splitlines()
            body = [i for i, ln in enumerate(lines) if " = " in ln]
            i = rnd.choice(body)
            how = rnd.choice(["join", "leave", "move"])
            if how == "leave":
                lines[i] = __import__("re").sub(r"\s*group\(\d+\)", "", lines[i])
            else:
                k = rnd.choice(groups + [max(groups) + 1])
                if "group(" in lines[i] and how == "move":
                    lines[i] = __import__("re").sub(r"group\(\d+\)", f"group({k})", lines[i])
                elif "loc(" in lines[i]:
                    lines[i] = lines[i].replace("loc(", f"group({k}) loc(", 1)
                else:
                    lines[i] = lines[i] + f" group({k})"
            mutated = "\n".join(lines)
            parsed = walk.attempt(f"fused random graph {seed}, {how} line {i}:\n{mutated}",
                                  lambda m=mutated: gc.parse(m))
            if parsed is not None:
                walk.attempt(f"fused random graph {seed}, {how} line {i}, lowered:\n{mutated}",
                             lambda p=parsed: lower(p, fuse_ops=None))
    walk.check()


def test_valid_random_graphs_compile_or_refuse_clearly_at_every_opt_level():
    """Valid graphs over every registry op (hypothesis, a fixed derandomised run): lowering
    and code generation may refuse a graph, but only with a GraphcError."""
    hypothesis = pytest.importorskip("hypothesis")
    from tests.ir.random_graphs import random_graphs
    if "llvm" not in available_backends():
        pytest.skip("llvm backend missing")
    walk = Walk("random graphs on llvm")
    rng = np.random.default_rng(3)

    @hypothesis.settings(max_examples=30 * _SCALE, deadline=None, derandomize=True,
                         database=None, suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(random_graphs(max_nodes=6, params=True, constants=True),
                      hypothesis.strategies.sampled_from([0, 1, 2]))
    def run(g, opt_level):
        def go():
            exe = gc.compile(g, backend="llvm", opt_level=opt_level)
            return exe(**{v.name: _feed(v, rng) for v in exe.graph.inputs})
        walk.attempt(f"opt_level={opt_level}:\n{g.to_text()}", go)
    run()
    walk.check()


def test_a_parse_error_points_at_the_line():
    with pytest.raises(ParseError) as e:
        gc.parse("graph @g(%x: f32[2]) {\n  %0 = relu(%x) : f99[2]\n  return %0\n}")
    assert e.value.line == 2


# --- the command line --------------------------------------------------------------------------

def test_the_command_line_refuses_hostile_targets(tmp_path, capsys):
    """`graphc dump/compile/run` on missing, binary, damaged and odd targets: an error
    message and exit status 1 (or argparse's usage error), never a traceback."""
    from graphc.cli import main
    walk = Walk("graphc command line")
    (tmp_path / "garbage.gcir").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "bad.gcir").write_text("graph @g(%x: f32[2]) { return %y }")
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07garbage")
    (tmp_path / "dir.gcir").mkdir()
    (tmp_path / "m.py").write_text("import graphc as gc\n"
                                   "def three():\n    return 3\n"
                                   "def graph():\n"
                                   "    g = gc.Graph('g')\n"
                                   "    with g:\n        x = gc.placeholder('x', (2,))\n"
                                   "    g.set_outputs([gc.relu(x)])\n    return g\n")
    (tmp_path / "syntax.py").write_text("def f(:\n")
    good = tmp_path / "m.py"
    targets = [str(tmp_path / n) for n in ("garbage.gcir", "bad.gcir", "garbage.onnx", "dir.gcir",
                                          "nope.gcir", "nope.onnx", "m.py")]
    targets += [f"{good}:three", f"{good}:nope", f"{good}:", ":", "", f"{tmp_path}/nope.py:f"]
    argvs = [["dump", t] for t in targets]
    argvs += [["dump", f"{good}:graph", "-o", str(tmp_path / "no" / "such" / "dir.txt")],
              ["dump", f"{good}:graph", "--backend", "nope", "--report"],
              ["dump", f"{good}:graph", "--after", "nope"],
              ["dump", f"{good}:graph", "-O", "7"], ["dump", f"{good}:graph", "--format", "x"],
              ["compile", str(tmp_path / "garbage.gcir"), "-o", str(tmp_path / "a" / "b")],
              ["compile", f"{good}:graph", "-o", str(tmp_path / "x"), "--backend", "reference"],
              ["run", str(tmp_path / "nope")], ["run", str(tmp_path / "garbage.gcir")],
              ["run", str(tmp_path / "dir.gcir")], [], ["nope"], ["dump"]]

    def run(argv):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        if code not in (0, 1, 2):
            raise AssertionError(f"exit status {code!r}")
        return code
    for argv in argvs:
        walk.attempt(f"graphc {' '.join(argv)}", lambda a=argv: run(a))
    capsys.readouterr()
    walk.check()


# --- ONNX --------------------------------------------------------------------------------------

MODELS = pathlib.Path(__file__).resolve().parents[1] / "onnx" / "models"


def _small_onnx():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    shape = numpy_helper.from_array(np.array([2, 4], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["y"], name="reshape")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [2, 4])], [w, shape])
    return onnx, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_load_refuses_mutated_models(tmp_path):
    onnx, model = _small_onnx()
    from onnx import TensorProto, helper
    walk = Walk("gc.onnx.load")
    rnd = random.Random(5 + _SEED)
    blobs = [("small", model.SerializeToString())]
    blobs += [(p.stem, p.read_bytes()) for p in sorted(MODELS.glob("*.onnx"))]
    for label, data in blobs:
        for k in range(150 * _SCALE if label == "small" else 10 * _SCALE):
            b = bytearray(data)
            how = rnd.choice(["flip", "truncate", "insert", "zero"])
            j = rnd.randrange(len(b))
            if how == "flip":
                for _ in range(rnd.randint(1, 4)):
                    j = rnd.randrange(len(b))
                    b[j] ^= 1 << rnd.randrange(8)
            elif how == "truncate":
                b = b[:j]
            elif how == "insert":
                b[j:j] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
            else:
                b[j:j + 8] = bytes(8)
            walk.attempt(f"{label}: {how} at byte {j}", lambda b=bytes(b): gc.onnx.load(b))
            if k < 4:
                path = tmp_path / f"{label}_{k}.onnx"
                path.write_bytes(bytes(b))
                walk.attempt(f"{label} file: {how} at byte {j}",
                             lambda p=path: gc.onnx.load(str(p)), names=(path.name,))
    # structural damage, built with onnx.helper
    def variant(edit):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        edit(m)
        return m
    edits = {
        "drop node 0": lambda m: m.graph.node.pop(0),
        "drop every node": lambda m: [m.graph.node.pop() for _ in range(len(m.graph.node))],
        "drop initializer w": lambda m: m.graph.initializer.pop(0),
        "drop initializer shape": lambda m: m.graph.initializer.pop(1),
        "drop the input": lambda m: m.graph.input.pop(0),
        "drop the output": lambda m: m.graph.output.pop(0),
        "input is INT8": lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type",
                                           TensorProto.INT8),
        "input is STRING": lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type",
                                             TensorProto.STRING),
        "input dim -3": lambda m: setattr(m.graph.input[0].type.tensor_type.shape.dim[0],
                                          "dim_value", -3),
        "input dim 0": lambda m: setattr(m.graph.input[0].type.tensor_type.shape.dim[0],
                                         "dim_value", 0),
        "symbolic input dim": lambda m: setattr(m.graph.input[0].type.tensor_type.shape.dim[0],
                                                "dim_param", "N"),
        "weight is INT32": lambda m: setattr(m.graph.initializer[0], "data_type", TensorProto.INT32),
        "weight dims wrong": lambda m: m.graph.initializer[0].dims.__setitem__(0, 5),
        "weight raw data cut": lambda m: setattr(m.graph.initializer[0], "raw_data",
                                                 m.graph.initializer[0].raw_data[:5]),
        "shape initializer is float": lambda m: (m.graph.initializer.pop(1), m.graph.initializer.append(
            onnx.numpy_helper.from_array(np.array([2.0, 4.0], np.float32), "shape"))),
        "reshape to -5": lambda m: (m.graph.initializer.pop(1), m.graph.initializer.append(
            onnx.numpy_helper.from_array(np.array([-5, 4], np.int64), "shape"))),
        "output declared i64": lambda m: setattr(m.graph.output[0].type.tensor_type, "elem_type",
                                                 TensorProto.INT64),
        "output declared [9]": lambda m: setattr(m.graph.output[0].type.tensor_type.shape.dim[0],
                                                 "dim_value", 9),
        "node reads a missing value": lambda m: m.graph.node[1].input.__setitem__(0, "nope"),
        "node with a custom domain": lambda m: setattr(m.graph.node[1], "domain", "com.x"),
        "node with an unknown op": lambda m: setattr(m.graph.node[1], "op_type", "Nope"),
        "opset 7": lambda m: setattr(m.opset_import[0], "version", 7),
        "opset 999": lambda m: setattr(m.opset_import[0], "version", 999),
        "no opset": lambda m: m.opset_import.pop(0),
        "ir_version 0": lambda m: setattr(m, "ir_version", 0),
        "bad attribute": lambda m: m.graph.node[1].attribute.append(helper.make_attribute("alpha", "x")),
        "duplicate output name": lambda m: m.graph.node[1].output.__setitem__(0, "x"),
        "cycle": lambda m: m.graph.node[0].input.__setitem__(0, "y"),
    }
    for label, edit in edits.items():
        m = variant(edit)
        walk.attempt(f"proto: {label}", lambda m=m: gc.onnx.load(m))
        walk.attempt(f"bytes: {label}", lambda m=m: gc.onnx.load(m.SerializeToString()))
        path = tmp_path / "edited.onnx"
        path.write_bytes(m.SerializeToString())
        walk.attempt(f"file: {label}", lambda p=path: gc.onnx.load(str(p)), names=("edited.onnx",))
    # missing external data: the weights live in a file that is not there
    from onnx.external_data_helper import convert_model_to_external_data
    m = variant(lambda m: None)
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location="weights.bin",
                                   size_threshold=0)
    path = tmp_path / "external.onnx"
    onnx.save_model(m, str(path))
    (tmp_path / "weights.bin").write_bytes(b"")                     # empty
    walk.attempt("external data file empty", lambda: gc.onnx.load(str(path)),
                 names=("external.onnx", "weights.bin"))
    (tmp_path / "weights.bin").unlink()                              # gone
    walk.attempt("external data file missing", lambda: gc.onnx.load(str(path)),
                 names=("external.onnx", "weights.bin"))
    walk.attempt("external data, loaded from bytes", lambda: gc.onnx.load(path.read_bytes()))
    for odd in [None, 3, "", str(tmp_path), str(tmp_path / "nope.onnx"), b"", bytearray(b"\x08"),
                ["a.onnx"], pathlib.Path(tmp_path / "nope.onnx")]:
        walk.attempt(f"gc.onnx.load({odd!r})", lambda o=odd: gc.onnx.load(o))
    for kw in [dict(input_shapes={"x": (2, -1)}), dict(input_shapes={"x": "ab"}),
               dict(input_shapes={"nope": (1,)}), dict(input_shapes=3),
               dict(initializers="nope"), dict(constant_inputs={"x": "abc"}),
               dict(constant_inputs={"x": np.zeros((5, 5))}), dict(input_shapes={"x": (2.5, 3)}),
               dict(constant_inputs=[1])]:
        walk.attempt(f"gc.onnx.load(model, **{_r(kw)})", lambda kw=kw: gc.onnx.load(model, **kw))
    walk.check()


def test_onnx_converters_refuse_hostile_attributes_and_inputs():
    """Every ONNX op type graphc imports (`supported_ops()`), as a one-node model built from
    its ONNX schema: first operands that import, then each attribute the schema lists set to
    hostile values of its type, and each operand swapped for odd shapes, dtypes and constant
    contents. A model that imports must also compile and run on the reference."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, defs, helper, numpy_helper
    A = defs.OpSchema.AttrType
    walk = Walk("ONNX converters")
    rnd = random.Random(11 + _SEED)
    opset = defs.onnx_opset_version()
    hostile = {
        A.INT: [-1, -5, 0, 1, 2, 7, 2**40, -2**40],
        A.FLOAT: [float("nan"), float("inf"), -1.0, 0.0, 1e30],
        A.STRING: ["bogus", "", "SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", "tanh"],
        A.INTS: [[], [-1], [0, 0], [2**40, 2**40], list(range(1, 9)), [-1, -1, -1, -1], [0] * 4,
                 [3, 3], [1, 1, 1, 1], [-7, 9]],
        A.FLOATS: [[], [float("nan")], [1.0] * 9],
        A.TENSOR: [numpy_helper.from_array(np.zeros((0,), np.float32)),
                   numpy_helper.from_array(np.array(np.nan, np.float32)),
                   numpy_helper.from_array(np.ones((2, 2), np.int64)),
                   numpy_helper.from_array(np.array([2**40], np.int64))],
        A.STRINGS: [[], ["bogus"], ["sigmoid", "tanh", "tanh"]],
    }
    plausible = {A.INT: 1, A.FLOAT: 1.0, A.STRING: "", A.INTS: [1], A.FLOATS: [1.0],
                 A.TENSOR: numpy_helper.from_array(np.ones(2, np.float32)), A.STRINGS: []}
    FLOAT_SHAPES = [(2, 3, 4, 4), (2, 3), (3,), (), (1, 3, 5, 5), (0, 3), (2, 4, 6)]
    INT_VALUES = [[0], [1, 1], [2, 3, 4, 4], [-1], [2**40], [], [0, 1, 2, 3], [1], [-1, 3], [0, 0]]

    def operand(k: int, allowed: set[str]):
        """('input', name, type, shape) or ('init', name, array), per the schema's types."""
        if "tensor(float)" in allowed and rnd.random() < 0.7:
            return ("input", f"i{k}", TensorProto.FLOAT, rnd.choice(FLOAT_SHAPES))
        if "tensor(int64)" in allowed:
            return ("init", f"i{k}", np.array(rnd.choice(INT_VALUES), np.int64))
        if "tensor(bool)" in allowed:
            return ("input", f"i{k}", TensorProto.BOOL, rnd.choice(FLOAT_SHAPES))
        if "tensor(int32)" in allowed:
            return ("init", f"i{k}", np.array(rnd.choice(INT_VALUES), np.int64).clip(-9, 9).astype(np.int32))
        return ("init", f"i{k}", np.ones(rnd.choice([(3,), (2, 3)]), np.float32))

    def model(op: str, operands: list, attrs: dict, n_out: int):
        inputs, inits = [], []
        for o in operands:
            if o is None:
                continue
            if o[0] == "input":
                inputs.append(helper.make_tensor_value_info(o[1], o[2], list(o[3])))
            else:
                inits.append(numpy_helper.from_array(o[2], o[1]))
        names = [o[1] if o is not None else "" for o in operands]
        node = helper.make_node(op, names, [f"y{k}" for k in range(n_out)], name="n0")
        schema = defs.get_schema(op, opset)
        node.attribute.extend(helper.make_attribute(k, v, attr_type=schema.attributes[k].type)
                              for k, v in attrs.items())
        outs = [helper.make_tensor_value_info(f"y{k}", TensorProto.UNDEFINED, []) for k in range(n_out)]
        graph = helper.make_graph([node], "walk", inputs, outs, inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])

    def load_and_run(m):
        g = gc.onnx.load(m)
        if all(v.type.size <= 4096 for v in g.all_values()):
            rng = np.random.default_rng(0)
            exe = gc.compile(g, backend="reference")
            exe(**{v.name: _feed(v, rng) for v in exe.graph.inputs})
        return g

    imported = []
    for op in gc.onnx.supported_ops():
        schema = defs.get_schema(op, opset)
        types = {t.type_param_str: set(t.allowed_type_strs) for t in schema.type_constraints}
        opt = defs.OpSchema.FormalParameterOption
        n_out = sum(1 for o in schema.outputs if o.option != opt.Optional) or 1
        required = {a.name: plausible[a.type] for a in schema.attributes.values()
                    if a.required and a.type in plausible}
        if op == "Constant":
            required = {"value": plausible[A.TENSOR]}
        example = None
        for _ in range(60):
            operands = []
            for k, formal in enumerate(schema.inputs):
                allowed = types.get(formal.type_str, {formal.type_str})
                if formal.option == opt.Optional and rnd.random() < 0.5:
                    operands.append(None)
                elif formal.option == opt.Variadic:
                    operands += [operand(10 * k + j, allowed) for j in range(rnd.randint(1, 3))]
                else:
                    operands.append(operand(k, allowed))
            while operands and operands[-1] is None:
                operands.pop()
            m = model(op, operands, required, n_out)
            if walk.attempt(f"{op}{operands}", lambda m=m: load_and_run(m)) is not None:
                example = operands
                break
        if example is None:
            continue
        imported.append(op)
        for a in schema.attributes.values():
            for bad in hostile.get(a.type, []):
                m = model(op, example, {**required, a.name: bad}, n_out)
                walk.attempt(f"{op}{example} {a.name}={_r(bad)}", lambda m=m: load_and_run(m))
        names = [a.name for a in schema.attributes.values() if a.type in hostile]
        for _ in range(4 * _SCALE if len(names) > 1 else 0):  # two hostile attributes at once
            pick = {n: rnd.choice(hostile[schema.attributes[n].type]) for n in rnd.sample(names, 2)}
            m = model(op, example, {**required, **pick}, n_out)
            walk.attempt(f"{op}{example} {pick}", lambda m=m: load_and_run(m))
        for k in range(len(example)):
            for _ in range(3 * _SCALE):
                swapped = list(example)
                swapped[k] = operand(k, {"tensor(float)", "tensor(int64)", "tensor(bool)"})
                m = model(op, swapped, required, n_out)
                walk.attempt(f"{op}{swapped}", lambda m=m: load_and_run(m))
    assert len(imported) >= len(gc.onnx.supported_ops()) * 3 // 4, sorted(
        set(gc.onnx.supported_ops()) - set(imported))
    print(f"ONNX op types walked: {len(imported)} of {len(gc.onnx.supported_ops())}; no importing "
          f"example found for {sorted(set(gc.onnx.supported_ops()) - set(imported))}")
    walk.check()


# --- @gc.jit with odd signatures ---------------------------------------------------------------

Pair = namedtuple("Pair", "a b")


def test_jit_with_odd_signatures_and_arguments():
    walk = Walk("@gc.jit")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)

    def jit(fn, **kw):
        return gc.jit(fn, backend="reference", **kw)

    @jit
    def varargs(*xs):
        return xs[0] * 2
    out = walk.attempt("def f(*xs) called with one array", lambda: varargs(x))
    assert out is not None and np.array_equal(out, x * 2), "def f(*xs) must trace"

    @jit
    def kwargs_only(**kw):
        return kw["a"] + kw["b"]
    out = walk.attempt("def f(**kw)", lambda: kwargs_only(a=x, b=x))
    assert out is not None and np.array_equal(out, 2 * x)

    @jit
    def mixed(a, b=1.0, *rest, scale, **extra):
        return a * b * scale + sum(rest) + sum(extra.values())
    out = walk.attempt("def f(a, b=1.0, *rest, scale, **extra)",
                       lambda: mixed(x, 2.0, x, x, scale=3.0, z=x))
    assert out is not None and np.allclose(out, x * 6 + 3 * x)

    @jit
    def tree(p):
        return p["w"][0] * p["w"][1].a + p["w"][1].b if p["none"] is None else p["w"][0]
    out = walk.attempt("nested containers, a None leaf",
                       lambda: tree({"w": [x, Pair(x, x)], "none": None}))
    assert out is not None and np.array_equal(out, x * x + x)

    static = jit(lambda x, cfg: x * len(cfg), static_argnames=("cfg",))
    plain = jit(lambda x, n: x * n)
    returns = jit(lambda x, r: r(x))
    odd_calls = {
        "unhashable static argument": lambda: static(x, [1, 2]),
        "unhashable plain argument": lambda: plain(x, {1, 2}),
        "missing argument": lambda: plain(x),
        "extra argument": lambda: plain(x, 1, 2),
        "unknown keyword": lambda: plain(x, n=1, m=2),
        "dict with unsortable keys": lambda: plain({1: x, "a": x}, 1),
        "complex array": lambda: plain(x.astype(complex), 1),
        "object array": lambda: plain(np.array([_Obj()]), 1),
        "string array": lambda: plain(np.array(["a"]), 1),
        "returns a generator": lambda: returns(x, lambda t: (v for v in [t])),
        "a set": lambda: plain({1, 2}, 1),
        "returns None": lambda: returns(x, lambda t: None),
        "returns a str": lambda: returns(x, lambda t: "abc"),
        "returns an int": lambda: returns(x, lambda t: 3),
        "returns an object": lambda: returns(x, lambda t: _Obj()),
        "returns a set": lambda: returns(x, lambda t: {1}),
        "returns a complex constant": lambda: returns(x, lambda t: np.ones(2, complex)),
        "uses float() on a tensor": lambda: returns(x, lambda t: float(t)),
        "branches on a tensor": lambda: returns(x, lambda t: t if t.sum() > 0 else -t),
        "iterates a tensor": lambda: returns(x, lambda t: [r for r in t]),
        "calls np.linalg.inv": lambda: returns(x, lambda t: np.linalg.inv(t)),
        "np.take with mode='wrap'": lambda: returns(x, lambda t: np.take(t, [0], mode="wrap")),
        "np.take with float indices": lambda: returns(x, lambda t: np.take(t, np.array([0.5]))),
        "np.sum with dtype": lambda: returns(x, lambda t: np.sum(t, dtype=np.float64)),
        "ufunc.reduce": lambda: returns(x, lambda t: np.add.reduce(t)),
        "out= argument": lambda: returns(x, lambda t: np.exp(t, out=np.empty((2, 3)))),
        "np.reshape with a bad shape": lambda: returns(x, lambda t: np.reshape(t, (4, -1))),
        "np.pad with a bad width": lambda: returns(x, lambda t: np.pad(t, ((1, 2, 3),))),
        "np.concatenate on a bad axis": lambda: returns(x, lambda t: np.concatenate([t, t], 5)),
        "np.stack with a bad axis": lambda: returns(x, lambda t: np.stack([t, t], axis=7)),
        "np.swapaxes out of range": lambda: returns(x, lambda t: np.swapaxes(t, 0, 5)),
        "np.size with a bad axis": lambda: returns(x, lambda t: np.size(t, 9)),
        "np.full_like with a str": lambda: returns(x, lambda t: np.full_like(t, "a")),
        "np.dot of rank 3": lambda: returns(x, lambda t: np.dot(t, t.reshape(3, 2, 1))),
        "indexing with a float": lambda: returns(x, lambda t: t[1.5]),
        "indexing with a bool mask": lambda: returns(x, lambda t: t[np.array([True, False])]),
        "indexing with a str": lambda: returns(x, lambda t: t["a"]),
        "indexing too deep": lambda: returns(x, lambda t: t[0, 0, 0]),
        "a negative step": lambda: returns(x, lambda t: t[::-1]),
        "len of a scalar": lambda: returns(x, lambda t: len(t.sum())),
        "an int dtype astype": lambda: returns(x, lambda t: t.astype("int8")),
        "reshape with floats": lambda: returns(x, lambda t: t.reshape(2.0, 3.0)),
        "transpose with a bad perm": lambda: returns(x, lambda t: t.transpose(0, 0)),
        "sum over a float axis": lambda: returns(x, lambda t: t.sum(axis=0.5)),
        "a tensor leaked from another trace": lambda: returns(x, lambda t: _leaked),
    }
    _leaked = None

    @jit
    def leak(t):
        nonlocal _leaked
        _leaked = t
        return t
    leak(x)
    for what, call in odd_calls.items():  # all wrong: each must be refused
        walk.attempt(f"@gc.jit: {what}", call, refuse=True)
    for bad in [dict(static_argnames=("nope",)), dict(static_argnames=3), dict(backend="nope"),
                dict(opt_level="x"), dict(cache_size=-1), dict(static_argnames=[None])]:
        def f(bad=bad):
            return gc.jit(lambda x: x, **bad)(x)
        walk.attempt(f"gc.jit(**{bad})", f)
    with warnings.catch_warnings():  # ddof >= n: numpy's inf (with a warning), not < 0
        warnings.simplefilter("ignore", RuntimeWarning)
        got = returns(x, lambda t: np.var(t, ddof=7))
        np.testing.assert_array_equal(got, np.var(x, ddof=7))
    walk.attempt("gc.jit(3)", lambda: gc.jit(3))
    walk.attempt("gc.jit(a builtin)", lambda: gc.jit(len)(x))
    walk.attempt("lower(...).as_text('nope')", lambda: plain.lower(x, 1).as_text("nope"))
    walk.attempt("compiled for other arguments", lambda: plain.lower(x, 1).compile()(x, 2))
    walk.check()
