"""Random valid graphs built from registry ops, for round-trip, verifier and pass tests.

Used by the differential fuzzer (graphc/fuzz) and by the tests:

    from graphc.fuzz.graphs import random_graphs, build_random_graph, op_example

    @given(random_graphs(max_nodes=10))          # a hypothesis strategy of Graphs
    def test_pass_keeps_meaning(g): ...

    g = build_random_graph(seed)                 # the same from an int seed / random.Random
    g = op_example("matmul")                     # a small graph with one node of that op

Every node goes through `Graph.add_node`, so graphs are valid by construction, and they
can be evaluated: index operands (gather, scatter_add, one_hot, cross-entropy labels, any
op's `nondiff_inputs` of integer type) are constants with in-range values. Ops come
from `graphc.ir.all_ops()`: an op with a recipe below (`RECIPES`) gets operands and
attributes that fit it; any other op is tried with generic proposals (operand types
derived from the first operand, attributes guessed from their kind and name) and kept
when the registry accepts one. Register a recipe for a new op with `@recipe("name")`
from any module, before drawing graphs. Index operands (gather, scatter_add) are constants
whose values are in range, so the graphs can be evaluated.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from graphc.ir import Graph, GraphcError, Loc, TensorType, Value, all_ops, dtypes
from graphc.ir.init import Fill, GlorotUniform, HeNormal, Normal, Ones, Uniform, Zeros

__all__ = ["random_graphs", "build_random_graph", "op_example", "Options", "Chooser",
           "RandomChooser", "DrawChooser", "Ctx", "recipe", "RECIPES", "REGISTRY_CRASHES",
           "ops_without_examples"]


# --- sources of randomness ------------------------------------------------------------

class Chooser:
    """The random choices a builder makes; backed by random.Random or hypothesis draws."""

    def randint(self, lo: int, hi: int) -> int:  # inclusive
        raise NotImplementedError

    def choice(self, seq: Sequence[Any]) -> Any:
        seq = list(seq)
        return seq[self.randint(0, len(seq) - 1)]

    def coin(self, p: float = 0.5) -> bool:
        return self.randint(0, 999) < int(p * 1000)

    def seed(self) -> int:
        return self.randint(0, 2**32 - 1)

    def subset(self, seq: Sequence[Any], min_size: int = 0) -> list[Any]:
        """A random sub-sequence, order kept."""
        out = [x for x in seq if self.coin()]
        while len(out) < min(min_size, len(seq)):
            out = [x for x in seq if self.coin()]
        return out

    def permutation(self, n: int) -> list[int]:
        rest = list(range(n))
        out = []
        while rest:
            out.append(rest.pop(self.randint(0, len(rest) - 1)))
        return out


class RandomChooser(Chooser):
    def __init__(self, rnd: random.Random | int) -> None:
        self.rnd = rnd if isinstance(rnd, random.Random) else random.Random(rnd)

    def randint(self, lo: int, hi: int) -> int:
        return self.rnd.randint(lo, hi)


class DrawChooser(Chooser):
    """Choices drawn through hypothesis (so failing graphs shrink)."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        from hypothesis import strategies  # only tests need hypothesis; the fuzzer does not
        self.draw = draw
        self.st = strategies

    def randint(self, lo: int, hi: int) -> int:
        return self.draw(self.st.integers(lo, hi))

    def choice(self, seq: Sequence[Any]) -> Any:
        return self.draw(self.st.sampled_from(list(seq)))

    def coin(self, p: float = 0.5) -> bool:
        if p >= 1:
            return True
        if p <= 0:
            return False
        return self.draw(self.st.integers(0, 999)) < int(p * 1000)


def _chooser(source: Any) -> Chooser:
    if isinstance(source, Chooser):
        return source
    if isinstance(source, (int, random.Random)):
        return RandomChooser(source)
    if callable(source):  # a hypothesis draw function
        return DrawChooser(source)
    raise TypeError(f"expected a seed, random.Random, Chooser or hypothesis draw, not {source!r}")


# --- options ----------------------------------------------------------------------------

_FILES = ("model.py", "/home/user/project/model.py", "layers/block.py")
_FANCY_FILES = ('we"ird\\dir/m o d.py', "ünïcode/ß.py", "tab\there.py", "<stdin>")
_FANCY_INPUT_NAMES = ("x", "_h", "layer.0.in", "c0", "c12", "x_1.2", "Input")
_FANCY_PARAM_NAMES = ("w", "layer.0.weight", "_b", "c3", "bn.running_mean", "W")
_FANCY_CONST_NAMES = ("k", "c0", "c1", "onnx::Add_3", "0", "a b", "scale.0", "")
_FANCY_OUT_NAMES = ("loss", "h.1", "c2", "7", "out put", "y")


@dataclass
class Options:
    max_nodes: int = 8
    min_nodes: int = 1
    ops: tuple[str, ...] | None = None  # None: every registry op
    dtypes: tuple[str, ...] = ("f32",)  # dtypes of the data flowing through the graph
    max_rank: int = 3
    max_dim: int = 4
    max_inputs: int = 3
    params: bool = True
    constants: bool = True
    updates: bool = False
    locs: bool = True
    special_values: bool = False  # NaN, +-inf, -0.0 and subnormals in constants
    fancy_names: bool = False  # dots, quotes-needing names, names like c0 or 7
    name: str = "random"
    graph_type: type = Graph  # graphc.builder.Graph when the graph is built on with Tensors
    op_weights: dict[str, float] | None = None  # relative odds per op (default: uniform)
    # Chains: odds that a node's first operand is the last result (its other operands then
    # fresh sources, so the chain's values have one reader each, as fusion wants them)
    chain: float = 0.0
    follow_ops: tuple[str, ...] = ()  # ops that continue a chain
    chain_heads: tuple[str, ...] = ()  # ops after which a run of 1-4 follow_ops is likely


# --- building ---------------------------------------------------------------------------

class Ctx:
    """What a recipe sees: the graph under construction, the chooser, and helpers."""

    def __init__(self, g: Graph, ch: Chooser, opts: Options, *, fresh_only: bool = False) -> None:
        self.g = g
        self.ch = ch
        self.opts = opts
        self.fresh_only = fresh_only  # op examples: every operand is a new source
        self.picks = 0  # operands picked for the node being proposed
        self.chaining = False  # this node continues the chain
        self.counts = {"input": 0, "param": 0, "const": 0}
        self.rng = np.random.default_rng(ch.seed())

    # -- random types ---------------------------------------------------------------
    def rand_dtype(self) -> dtypes.DType:
        return dtypes.dtype(self.ch.choice(self.opts.dtypes))

    def rand_shape(self, rank: int | None = None, min_rank: int = 0,
                   min_dim: int = 1) -> tuple[int, ...]:
        if rank is None:
            rank = self.ch.randint(min(min_rank, self.opts.max_rank), self.opts.max_rank)
        return tuple(self.ch.randint(min_dim, max(min_dim, self.opts.max_dim))
                     for _ in range(rank))

    def rand_type(self, *, dtype: Any = None, min_rank: int = 0, rank: int | None = None
                  ) -> TensorType:
        return TensorType(self.rand_shape(rank, min_rank),
                          dtypes.dtype(dtype) if dtype is not None else self.rand_dtype())

    # -- values ---------------------------------------------------------------------
    def pool(self) -> list[Value]:
        return list(self.g.all_values())

    def pick(self, pred: Callable[[Value], bool] | None = None, *, make: Callable[[], TensorType]
             | None = None, prefer_nodes: float = 0.7) -> Value:
        """An existing value satisfying pred (node outputs preferred), else a fresh source
        of type make() (default: a random type of the graph's dtypes)."""
        if not self.fresh_only:
            cands = [v for v in self.pool() if pred is None or pred(v)]
            nodes = [v for v in cands if v.kind == "node"]
            self.picks += 1
            if self.chaining:
                last = self.g.nodes[-1].outputs[0] if self.g.nodes else None
                if self.picks == 1 and last is not None and last in cands:
                    return last
                if self.picks > 1 and self.ch.coin(0.8):
                    return self.fresh(make() if make is not None else self.rand_type())
            if nodes and self.ch.coin(prefer_nodes):
                return self.ch.choice(nodes)
            if cands and self.ch.coin(0.6):
                return self.ch.choice(cands)
        t = make() if make is not None else self.rand_type()
        return self.fresh(t)

    def like(self, t: TensorType) -> Value:
        """A value of exactly type t: an existing one, or a fresh source."""
        return self.pick(lambda v: v.type == t, make=lambda: t, prefer_nodes=0.5)

    def fresh(self, t: TensorType, kind: str | None = None) -> Value:
        """A new input, parameter or constant of type t."""
        o = self.opts
        kinds = ["input"] * 3 + ["param"] * (2 if o.params else 0) + \
            ["const"] * (2 if o.constants else 0)
        if kind is None:
            kind = self.ch.choice(kinds)
        if kind == "input" and len(self.g.inputs) >= o.max_inputs and len(kinds) > 3:
            kind = self.ch.choice([k for k in kinds if k != "input"])
        if kind == "input":
            return self.g.add_input(self._name("input", _FANCY_INPUT_NAMES, "x"), t)
        if kind == "param":
            return self._param(t)
        return self.const(self.rand_data(t), t.dtype)

    def const(self, data: np.ndarray, dt: Any) -> Value:
        name = None
        if self.opts.fancy_names and self.ch.coin(0.5):
            name = self.ch.choice(_FANCY_CONST_NAMES) + ("" if self.ch.coin() else
                                                         str(self.counts["const"]))
            if name in self.g.named_values():
                name = None
        self.counts["const"] += 1
        return self.g.add_constant(data, dt, name=name)

    def index_const(self, shape: tuple[int, ...], high: int, dtype: Any = None) -> Value:
        """An integer constant with every value in [0, high) (high >= 1)."""
        dt = dtype if dtype is not None else self.ch.choice(["i32", "i64"])
        return self.const(self.rng.integers(0, high, size=shape), dt)

    def _name(self, kind: str, fancy: Sequence[str], prefix: str) -> str:
        taken = self.g.named_values()
        k = self.counts[kind]
        self.counts[kind] += 1
        if self.opts.fancy_names and self.ch.coin(0.6):
            base = self.ch.choice(fancy)
            for cand in (base, f"{base}{k}", f"{base}_{k}"):
                if cand not in taken:
                    return cand
        name = f"{prefix}{k}"
        while name in taken:
            k += 1
            name = f"{prefix}{k}"
        return name

    def _param(self, t: TensorType) -> Value:
        name = self._name("param", _FANCY_PARAM_NAMES, "w")
        trainable = self.ch.coin(0.8)
        which = self.ch.randint(0, 7)
        value = None
        init: Any
        if which == 0:
            init, value = None, self.rand_data(t)
        elif which == 1:
            init = Zeros()
        elif which == 2:
            init = Ones()
        elif which == 3:
            init = Fill(self.ch.choice([0.5, -1.25, 3.0, 1e-3]))
        elif which == 4:
            init = Normal(self.ch.choice([0.0, 0.1]), self.ch.choice([1.0, 0.05]), self.ch.randint(0, 9))
        elif which == 5:
            init = Uniform(-0.5, self.ch.choice([0.5, 1.0]), self.ch.randint(0, 9))
        elif which == 6:
            init = HeNormal(self.ch.randint(0, 9))
        else:
            init = GlorotUniform(self.ch.randint(0, 9))
        if not t.dtype.is_float and init is not None and which >= 3:
            init = Zeros()
        return self.g.add_param(name, t, init=init, value=value, trainable=trainable)

    def rand_data(self, t: TensorType) -> np.ndarray:
        dt = t.dtype
        if dt.is_bool:
            return self.rng.random(t.shape) < 0.5
        if dt.is_int:
            return self.rng.integers(-3, 4, size=t.shape).astype(dt.np_dtype)
        data = self.rng.normal(size=t.shape).astype(dt.np_dtype)
        if self.opts.special_values and data.size:
            flat = data.reshape(-1)
            specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0,
                                 np.finfo(dt.np_dtype).smallest_subnormal,
                                 np.finfo(dt.np_dtype).max], dtype=dt.np_dtype)
            for i in range(flat.size):
                if self.ch.coin(0.3):
                    flat[i] = specials[self.ch.randint(0, len(specials) - 1)]
        return data

    # -- derived operand types for the generic proposal ------------------------------
    def related_type(self, t: TensorType) -> TensorType:
        s = t.shape
        options: list[Callable[[], TensorType]] = [
            lambda: t,
            lambda: t,
            lambda: TensorType(s[:-2] + (s[-1], s[-2]), t.dtype) if len(s) >= 2 else t,
            lambda: TensorType(s[self.ch.randint(0, len(s)):], t.dtype),  # trailing dims
            lambda: TensorType(tuple(1 if self.ch.coin(0.4) else d for d in s), t.dtype),
            lambda: t.with_dtype(dtypes.bool_),
            lambda: t.with_dtype(self.ch.choice(["i32", "i64"])),
            lambda: TensorType((), t.dtype),
            lambda: self.rand_type(dtype=t.dtype),
        ]
        return self.ch.choice(options)()

    def operand_like(self, t: TensorType) -> Value:
        if t.dtype.is_int:
            return self.index_const(t.shape, 1, t.dtype)  # zeros: in range for any index
        return self.like(t)


# --- attribute guesses --------------------------------------------------------------------

def guess_attr(ctx: Ctx, name: str, spec: Any, ins: list[Value]) -> Any:
    """A plausible value for an attribute, from its kind, its name and the operands."""
    ch = ctx.ch
    rank = ins[0].type.rank if ins else 0
    shape = ins[0].shape if ins else ()
    kind = spec.kind
    if spec.choices:
        return ch.choice(spec.choices)
    lname = name.lower()
    if kind == "int":
        if "axis" in lname or "dim" in lname:
            return ch.randint(0, max(rank - 1, 0))
        return ch.choice([0, 1, 1, 2, 3])
    if kind == "float":
        return ch.choice([0.0, 0.5, 0.1, 1e-5, 0.9, 2.0, -1.5])
    if kind == "bool":
        return ch.coin()
    if kind == "str":
        return ch.choice(["", "none", "same", "valid"])
    if kind == "dtype":
        return ch.choice(list(dtypes.BY_NAME))
    if kind == "floats":
        return tuple(ch.choice([0.0, 0.5, 1.0]) for _ in range(ch.randint(0, max(rank, 1))))
    # ints
    if "perm" in lname:
        return tuple(ch.permutation(rank))
    if "axes" in lname or "axis" in lname or "dims" in lname:
        return tuple(ch.subset(range(rank)))
    if "shape" in lname or "size" in lname:
        opts = [shape, (int(np.prod(shape)),), shape + (1,), (2,) + shape,
                tuple(reversed(shape)), (1,) + shape]
        return tuple(ch.choice(opts))
    length = ch.choice([rank, 2, max(rank - 2, 0), 1, rank])
    return tuple(ch.choice([0, 1, 1, 1, 2]) for _ in range(length))


def generic_proposal(ctx: Ctx, op: str) -> tuple[list[Value], dict[str, Any]]:
    opdef = all_ops()[op]
    arity = opdef.arity if opdef.arity is not None else ctx.ch.randint(1, 3)
    ins: list[Value] = []
    if arity:
        first = ctx.pick(make=lambda: ctx.rand_type(min_rank=ctx.ch.choice([0, 1, 2, 4])))
        ins.append(first)
        for _ in range(arity - 1):
            ins.append(ctx.operand_like(ctx.related_type(first.type)))
    for k in opdef.nondiff_inputs:  # index-like operands: in-range constants (zeros)
        if k < len(ins) and ins[k].dtype.is_int and ins[k].kind != "const":
            ins[k] = ctx.const(np.zeros(ins[k].shape, ins[k].dtype.np_dtype), ins[k].dtype)
    attrs = {}
    for name, spec in opdef.attrs.items():
        if spec.required or ctx.ch.coin(0.4):
            attrs[name] = guess_attr(ctx, name, spec, ins)
    return ins, attrs


# --- recipes for ops that generic proposals rarely fit --------------------------------------

Recipe = Callable[[Ctx], "tuple[list[Value], dict[str, Any]]"]
# (op, exception) for every proposal on which the registry raised something other than a
# GraphcError: a bug in that op's checks (bad input must give a GraphcError, never a crash).
REGISTRY_CRASHES: list[tuple[str, str]] = []
RECIPES: dict[str, Recipe] = {}


def recipe(*names: str) -> Callable[[Callable[[Ctx, str], Any]], Callable[[Ctx, str], Any]]:
    """Register fn(ctx, op) -> (operands, attrs) for the named ops."""
    def deco(fn):
        for n in names:
            RECIPES[n] = fn
        return fn
    return deco


def _float_value(ctx: Ctx, min_rank: int = 0, pred=None) -> Value:
    def ok(v: Value) -> bool:
        return v.dtype.is_float and v.type.rank >= min_rank and (pred is None or pred(v))
    floats = [d for d in ctx.opts.dtypes if dtypes.dtype(d).is_float] or ["f32"]
    return ctx.pick(ok, make=lambda: ctx.rand_type(dtype=ctx.ch.choice(floats), min_rank=min_rank))


def _any_value(ctx: Ctx, min_rank: int = 0, pred=None) -> Value:
    return ctx.pick(lambda v: v.type.rank >= min_rank and (pred is None or pred(v)),
                    make=lambda: ctx.rand_type(min_rank=min_rank))


@recipe("matmul")
def _r_matmul(ctx: Ctx, op: str):
    x = _float_value(ctx, 2)
    ta, tb = ctx.ch.coin(0.3), ctx.ch.coin(0.3)
    m, k = (x.shape[-1], x.shape[-2]) if ta else x.shape[-2:]
    n = ctx.ch.randint(1, ctx.opts.max_dim)
    batch = x.shape[:-2][ctx.ch.randint(0, len(x.shape) - 2):]
    y = ctx.like(TensorType(batch + ((n, k) if tb else (k, n)), x.dtype))
    return [x, y], {"transpose_a": ta, "transpose_b": tb}


@recipe("where")
def _r_where(ctx: Ctx, op: str):
    x = _any_value(ctx)
    cond = ctx.pick(lambda v: v.dtype.is_bool and v.shape == x.shape,
                    make=lambda: x.type.with_dtype(dtypes.bool_))
    y = ctx.like(x.type if ctx.ch.coin(0.7) else TensorType((), x.dtype))
    return [cond, x, y], {}


@recipe("cast")
def _r_cast(ctx: Ctx, op: str):
    return [_any_value(ctx)], {"to": ctx.ch.choice(list(dtypes.BY_NAME))}


@recipe("reshape")
def _r_reshape(ctx: Ctx, op: str):
    x = _any_value(ctx)
    dims = [d for d in x.shape]
    ch = ctx.ch
    choice = ch.randint(0, 3)
    if choice == 0:
        shape = (int(np.prod(dims)),)
    elif choice == 1:
        shape = tuple(reversed(dims))
    elif choice == 2:
        shape = tuple(dims[:1]) + (1,) + tuple(dims[1:])
    else:
        shape = tuple(d for d in dims if d != 1)
    return [x], {"shape": shape}


@recipe("transpose")
def _r_transpose(ctx: Ctx, op: str):
    x = _any_value(ctx)
    return [x], {"perm": tuple(ctx.ch.permutation(x.type.rank))}


@recipe("broadcast_to")
def _r_broadcast(ctx: Ctx, op: str):
    x = _any_value(ctx)
    lead = tuple(ctx.ch.randint(1, 3) for _ in range(ctx.ch.randint(0, 1)))
    shape = lead + tuple(ctx.ch.randint(2, 3) if d == 1 and ctx.ch.coin() else d for d in x.shape)
    return [x], {"shape": shape}


@recipe("expand_dims")
def _r_expand(ctx: Ctx, op: str):
    x = _any_value(ctx)
    n = ctx.ch.randint(1, 2)
    out_rank = x.type.rank + n
    axes = sorted(ctx.ch.permutation(out_rank)[:n])
    return [x], {"axes": tuple(axes)}


@recipe("squeeze")
def _r_squeeze(ctx: Ctx, op: str):
    x = ctx.pick(lambda v: 1 in v.shape, make=lambda: TensorType(
        ctx.rand_shape()[:2] + (1,), ctx.rand_dtype()))
    ones = [i for i, d in enumerate(x.shape) if d == 1]
    return [x], {"axes": tuple(ctx.ch.subset(ones, 1))}


@recipe("concat")
def _r_concat(ctx: Ctx, op: str):
    x = _any_value(ctx, 1)
    ax = ctx.ch.randint(0, x.type.rank - 1)
    ins = [x]
    for _ in range(ctx.ch.randint(0, 2)):
        s = list(x.shape)
        s[ax] = ctx.ch.randint(1, ctx.opts.max_dim)
        ins.append(ctx.like(TensorType(tuple(s), x.dtype)))
    return ins, {"axis": ax}


@recipe("slice")
def _r_slice(ctx: Ctx, op: str):
    x = _any_value(ctx)
    starts, stops, steps = [], [], []
    for d in x.shape:
        a = ctx.ch.randint(0, d)
        b = ctx.ch.randint(a, d)
        starts.append(a)
        stops.append(b)
        steps.append(ctx.ch.randint(1, 2))
    return [x], {"starts": tuple(starts), "stops": tuple(stops), "steps": tuple(steps)}


@recipe("pad")
def _r_pad(ctx: Ctx, op: str):
    x = _any_value(ctx)
    r = x.type.rank
    attrs: dict[str, Any] = {"low": tuple(ctx.ch.randint(0, 2) for _ in range(r)),
                             "high": tuple(ctx.ch.randint(0, 2) for _ in range(r))}
    if ctx.ch.coin(0.4):
        attrs["interior"] = tuple(ctx.ch.randint(0, 1) for _ in range(r))
    if ctx.ch.coin(0.4):
        attrs["value"] = ctx.ch.choice([1.0, -0.5, 0.25])
    return [x], attrs


@recipe("gather")
def _r_gather(ctx: Ctx, op: str):
    x = _any_value(ctx, 1, pred=lambda v: 0 not in v.shape)
    ax = ctx.ch.randint(0, x.type.rank - 1)
    idx = ctx.index_const(ctx.rand_shape(max_rank_of(ctx, 2)), x.shape[ax])
    return [x, idx], {"axis": ax}


def max_rank_of(ctx: Ctx, cap: int) -> int:
    return ctx.ch.randint(0, min(cap, ctx.opts.max_rank))


@recipe("scatter_add")
def _r_scatter(ctx: Ctx, op: str):
    shape = ctx.rand_shape(min_rank=1)
    ax = ctx.ch.randint(0, len(shape) - 1)
    idx = ctx.index_const(ctx.rand_shape(max_rank_of(ctx, 1)), shape[ax])
    upd_shape = shape[:ax] + idx.shape + shape[ax + 1:]
    floats = [d for d in ctx.opts.dtypes if dtypes.dtype(d).is_float] or ["f32"]
    upd = ctx.like(TensorType(upd_shape, ctx.ch.choice(floats)))
    return [idx, upd], {"shape": shape, "axis": ax}


@recipe("sum", "mean", "max", "min")
def _r_reduce(ctx: Ctx, op: str):
    pred = (lambda v: 0 not in v.shape) if op in ("max", "min") else None
    x = _float_value(ctx, pred=pred) if op == "mean" else _any_value(ctx, pred=pred)
    return [x], {"axes": tuple(ctx.ch.subset(range(x.type.rank))), "keepdims": ctx.ch.coin(0.3)}


@recipe("argmax")
def _r_argmax(ctx: Ctx, op: str):
    x = _any_value(ctx, 1, pred=lambda v: 0 not in v.shape)
    return [x], {"axis": ctx.ch.randint(0, x.type.rank - 1), "keepdims": ctx.ch.coin(0.3)}


# --- nn ops ---------------------------------------------------------------------------------

def _infer1(op: str, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    from graphc.ir import get_op
    opdef = get_op(op)
    return opdef.infer_types(types, opdef.check_attrs(attrs))[0]


def _nchw(ctx: Ctx) -> Value:
    floats = [d for d in ctx.opts.dtypes if dtypes.dtype(d).is_float] or ["f32"]
    return ctx.pick(lambda v: v.dtype.is_float and v.type.rank == 4 and min(v.shape) > 0,
                    make=lambda: TensorType((ctx.ch.randint(1, 2), ctx.ch.randint(1, 4),
                                             ctx.ch.randint(2, 5), ctx.ch.randint(2, 5)),
                                            ctx.ch.choice(floats)))


def _conv_geometry(ctx: Ctx, x: TensorType) -> tuple[TensorType, dict[str, Any]]:
    ch = ctx.ch
    c = x.shape[1]
    groups = ch.choice([g for g in range(1, c + 1) if c % g == 0])
    k = groups * ch.randint(1, 2)
    kh, kw = ch.randint(1, min(3, x.shape[2])), ch.randint(1, min(3, x.shape[3]))
    w = TensorType((k, c // groups, kh, kw), x.dtype)
    attrs: dict[str, Any] = {}
    if ch.coin(0.5):
        attrs["strides"] = (ch.randint(1, 2), ch.randint(1, 2))
    if ch.coin(0.5):
        attrs["padding"] = tuple(ch.randint(0, 1) for _ in range(4))
    if ch.coin(0.2):
        attrs["dilations"] = (ch.randint(1, 2), ch.randint(1, 2))
    if groups != 1:
        attrs["groups"] = groups
    return w, attrs


@recipe("conv2d")
def _r_conv2d(ctx: Ctx, op: str):
    x = _nchw(ctx)
    w, attrs = _conv_geometry(ctx, x.type)
    return [x, ctx.like(w)], attrs


@recipe("conv2d_grad_input", "conv2d_grad_weight")
def _r_conv2d_grads(ctx: Ctx, op: str):
    xt = _nchw(ctx).type if ctx.ch.coin(0.3) else TensorType(
        (ctx.ch.randint(1, 2), ctx.ch.randint(1, 4), ctx.ch.randint(2, 5), ctx.ch.randint(2, 5)),
        "f32")
    w, attrs = _conv_geometry(ctx, xt)
    gt = _infer1("conv2d", [xt, w], attrs)
    if op == "conv2d_grad_input":
        return [ctx.like(gt), ctx.like(w)], {"input_shape": xt.shape, **attrs}
    return [ctx.like(xt), ctx.like(gt)], {"weight_shape": w.shape, **attrs}


def _wino_dtype(ctx: Ctx) -> str:
    return ctx.ch.choice([d for d in ctx.opts.dtypes if d in ("f32", "f64")] or ["f32"])


@recipe("winograd_filter_transform")
def _r_wino_filter(ctx: Ctx, op: str):
    w = TensorType((ctx.ch.randint(1, 3), ctx.ch.randint(1, 3), 3, 3), _wino_dtype(ctx))
    return [ctx.like(w)], {"tile": ctx.ch.choice([2, 4]), "flip": ctx.ch.coin()}


@recipe("winograd_input_transform")
def _r_wino_input(ctx: Ctx, op: str):
    ch = ctx.ch
    pad = tuple(ch.randint(0, 2) for _ in range(4))
    x = TensorType((ch.randint(1, 2), ch.randint(1, 3), ch.randint(max(1, 3 - pad[0] - pad[1]), 7),
                    ch.randint(max(1, 3 - pad[2] - pad[3]), 7)), _wino_dtype(ctx))
    return [ctx.like(x)], {"tile": ch.choice([2, 4]), "padding": pad}


@recipe("winograd_output_transform")
def _r_wino_output(ctx: Ctx, op: str):
    ch = ctx.ch
    m, dt = ch.choice([2, 4]), _wino_dtype(ctx)
    n, k, oh, ow = ch.randint(1, 2), ch.randint(1, 3), ch.randint(1, 7), ch.randint(1, 7)
    prod = TensorType(((m + 2) ** 2, k, n * -(-oh // m) * -(-ow // m)), dt)
    operands = [ctx.like(prod)] + ([ctx.like(TensorType((k,), dt))] if ch.coin() else [])
    return operands, {"tile": m, "output_shape": (n, k, oh, ow),
                      "activation": ch.choice(["", "relu", "tanh"])}


def _pool_attrs(ctx: Ctx, x: TensorType, avg: bool) -> dict[str, Any]:
    ch = ctx.ch
    kh, kw = ch.randint(1, min(3, x.shape[2])), ch.randint(1, min(3, x.shape[3]))
    attrs: dict[str, Any] = {"kernel": (kh, kw), "strides": (ch.randint(1, 2), ch.randint(1, 2))}
    if ch.coin(0.4):
        attrs["padding"] = (ch.randint(0, kh - 1), ch.randint(0, kh - 1),
                            ch.randint(0, kw - 1), ch.randint(0, kw - 1))
    if avg and ch.coin(0.3):
        attrs["count_include_pad"] = False
    return attrs


@recipe("max_pool2d", "avg_pool2d")
def _r_pool(ctx: Ctx, op: str):
    x = _nchw(ctx)
    return [x], _pool_attrs(ctx, x.type, op == "avg_pool2d")


@recipe("max_pool2d_grad", "max_pool2d_select")
def _r_max_pool_grads(ctx: Ctx, op: str):
    x = _nchw(ctx)
    attrs = _pool_attrs(ctx, x.type, False)
    if op == "max_pool2d_select":
        return [x, ctx.like(x.type)], attrs
    return [x, ctx.like(_infer1("max_pool2d", [x.type], attrs))], attrs


@recipe("avg_pool2d_grad")
def _r_avg_pool_grad(ctx: Ctx, op: str):
    xt = TensorType((ctx.ch.randint(1, 2), ctx.ch.randint(1, 3), ctx.ch.randint(2, 5),
                     ctx.ch.randint(2, 5)), "f32")
    attrs = _pool_attrs(ctx, xt, True)
    return [ctx.like(_infer1("avg_pool2d", [xt], attrs))], {"input_shape": xt.shape, **attrs}


@recipe("softmax", "log_softmax")
def _r_softmax(ctx: Ctx, op: str):
    x = _float_value(ctx, 1)
    return [x], {"axis": ctx.ch.randint(0, x.type.rank - 1)}


@recipe("one_hot")
def _r_one_hot(ctx: Ctx, op: str):
    depth = ctx.ch.randint(1, 4)
    labels = ctx.index_const(ctx.rand_shape(max_rank_of(ctx, 2)), depth)
    attrs: dict[str, Any] = {"depth": depth}
    if ctx.ch.coin(0.5):
        attrs["dtype"] = ctx.ch.choice(list(dtypes.BY_NAME))
    return [labels], attrs


@recipe("im2col", "col2im")
def _r_window(ctx: Ctx, op: str):
    x = _nchw(ctx)
    ch = ctx.ch
    xt = x.type
    attrs: dict[str, Any] = {"kernel": (ch.randint(1, min(3, xt.shape[2])),
                                        ch.randint(1, min(3, xt.shape[3])))}
    if ch.coin(0.5):
        attrs["strides"] = (ch.randint(1, 2), ch.randint(1, 2))
    if ch.coin(0.5):
        attrs["padding"] = tuple(ch.randint(0, 1) for _ in range(4))
    if ch.coin(0.3):
        attrs["dilations"] = (ch.randint(1, 2), ch.randint(1, 2))
    if op == "im2col":
        if ch.coin(0.3):
            attrs["value"] = ch.choice([float("-inf"), 1.5])
        return [x], attrs
    return [ctx.like(_infer1("im2col", [xt], attrs))], {"input_shape": xt.shape, **attrs}


@recipe("softmax_cross_entropy")
def _r_ce(ctx: Ctx, op: str):
    logits = _float_value(ctx, 2, pred=lambda v: v.type.rank == 2 and v.shape[1] > 0)
    if logits.type.rank != 2 or logits.shape[1] == 0:
        logits = ctx.fresh(TensorType((ctx.ch.randint(1, 4), ctx.ch.randint(1, 4)), "f32"))
    labels = ctx.index_const((logits.shape[0],), logits.shape[1])
    attrs = {"reduction": ctx.ch.choice(["mean", "sum", "none"])} if ctx.ch.coin(0.5) else {}
    return [logits, labels], attrs


@recipe("batch_norm", "batch_norm_inference")
def _r_batch_norm(ctx: Ctx, op: str):
    x = _float_value(ctx, 2, pred=lambda v: v.type.size > 0)
    ax = 1 if ctx.ch.coin(0.6) else ctx.ch.randint(0, x.type.rank - 1)
    c = TensorType((x.shape[ax],), x.dtype)
    n = 2 if op == "batch_norm" else 4
    attrs: dict[str, Any] = {} if ax == 1 else {"axis": ax}
    if ctx.ch.coin(0.3):
        attrs["eps"] = ctx.ch.choice([1e-3, 0.1])
    return [x] + [ctx.like(c) for _ in range(n)], attrs


@recipe("layer_norm")
def _r_layer_norm(ctx: Ctx, op: str):
    x = _float_value(ctx, 1, pred=lambda v: v.type.size > 0)
    k = ctx.ch.randint(1, x.type.rank)
    axes = tuple(range(x.type.rank - k, x.type.rank))
    t = TensorType(x.shape[x.type.rank - k:], x.dtype)
    return [x, ctx.like(t), ctx.like(t)], {"axes": axes}


def _propose(ctx: Ctx, op: str) -> tuple[list[Value], dict[str, Any]]:
    fn = RECIPES.get(op)
    if fn is not None and ctx.ch.coin(0.9):
        return fn(ctx, op)
    return generic_proposal(ctx, op)


def _rand_loc(ctx: Ctx) -> Loc | None:
    if not ctx.opts.locs or ctx.ch.coin(0.2):
        return None
    files = _FILES + (_FANCY_FILES if ctx.opts.fancy_names else ())
    return Loc(ctx.ch.choice(files), ctx.ch.randint(1, 400))


def _try_add(ctx: Ctx, op: str, tries: int, force_chain: bool = False) -> bool:
    """Propose operands/attrs for op until the registry accepts one; undo failed sources."""
    g = ctx.g
    for _ in range(tries):
        ins = attrs = None
        mark = (len(g.inputs), len(g.params), len(g.constants), dict(g.param_values))
        node = None
        try:
            ctx.picks = 0
            ctx.chaining = force_chain or (ctx.opts.chain > 0 and ctx.ch.coin(ctx.opts.chain))
            ins, attrs = _propose(ctx, op)
            node = g.add_node(op, ins, attrs, _rand_loc(ctx))
        except GraphcError:
            pass
        except Exception as e:  # noqa: BLE001 - a registry bug: recorded, and not kept
            if ins is None:
                raise  # a bug in the recipe itself, not in the registry
            REGISTRY_CRASHES.append((op, f"{type(e).__name__}: {e}"))
        if node is None:
            g.inputs[mark[0]:] = []
            g.params[mark[1]:] = []
            g.constants[mark[2]:] = []
            g.param_values = mark[3]
            continue
        if ctx.opts.fancy_names and ctx.ch.coin(0.2):
            taken = {v.name for v in g.all_values() if v.name}
            name = ctx.ch.choice(_FANCY_OUT_NAMES)
            if name not in taken:
                node.outputs[0].name = name
        return True
    return False


def _finish(ctx: Ctx) -> Graph:
    g = ctx.g
    ch = ctx.ch
    outs = [v for n in g.nodes for v in n.outputs]
    if not outs:
        outs = list(g.all_values())
    if not outs:
        outs = [ctx.fresh(ctx.rand_type(), "input")]
    users = g.users()
    sinks = [v for v in outs if not users.get(v)]
    chosen = [v for v in sinks if ch.coin(0.8)] + [v for v in outs if ch.coin(0.15)]
    if not chosen:
        chosen = [ch.choice(outs)]
    g.set_outputs(list(dict.fromkeys(chosen))[:4])
    if ctx.opts.updates:
        for p in g.params:
            same = [v for n in g.nodes for v in n.outputs if v.type == p.type]
            if same and ch.coin(0.6):
                g.updates[p.name] = ch.choice(same)
    return g


def _weighted_choice(ch: Chooser, items: list[str], weights: list[float]) -> str:
    total = sum(weights)
    x = ch.randint(0, 10**6 - 1) / 10**6 * total
    for item, w in zip(items, weights):
        x -= w
        if x < 0:
            return item
    return items[-1]


def build_random_graph(source: Any, **options: Any) -> Graph:
    """A random valid graph. `source`: an int seed, random.Random, a Chooser, or a
    hypothesis `draw`. Options: see `Options` (max_nodes, ops, dtypes, max_rank, max_dim,
    max_inputs, params, constants, updates, locs, special_values, fancy_names, name)."""
    opts = Options(**options)
    ch = _chooser(source)
    ops = list(opts.ops) if opts.ops is not None else list(all_ops())
    g = opts.graph_type(opts.name)
    ctx = Ctx(g, ch, opts)
    n_nodes = ch.randint(opts.min_nodes, max(opts.min_nodes, opts.max_nodes))
    budget = 4 * n_nodes + 4
    weights = [opts.op_weights.get(op, 1.0) for op in ops] if opts.op_weights else None
    follow = [op for op in opts.follow_ops if op in ops]
    run = 0  # follow ops still to draw after a chain head
    while len(g.nodes) < n_nodes and budget > 0 and ops:
        budget -= 1
        if follow and g.nodes and (run > 0 or ch.coin(opts.chain / 4)):
            fw = [opts.op_weights.get(o, 1.0) for o in follow] if opts.op_weights else None
            op, run = (_weighted_choice(ch, follow, fw) if fw else ch.choice(follow)), run - 1
        else:
            op = _weighted_choice(ch, ops, weights) if weights else ch.choice(ops)
        if _try_add(ctx, op, 4, force_chain=run >= 0 and op in follow and opts.chain > 0) \
                and op in opts.chain_heads and ch.coin(opts.chain):
            run = ch.randint(1, 4)
    return _finish(ctx)


def random_graphs(**options: Any) -> Any:
    """A hypothesis strategy of random valid graphs (options as for build_random_graph)."""
    from hypothesis import strategies as st
    Options(**options)  # fail early on a misspelt option

    @st.composite
    def graphs(draw) -> Graph:
        return build_random_graph(DrawChooser(draw), **options)
    return graphs()


def op_example(op: str, *, seed: int = 0, tries: int = 300, **options: Any) -> Graph | None:
    """A small graph whose single node applies `op` to fresh sources (inputs, parameters
    or constants), or None when no proposal in `tries` was accepted."""
    opts = Options(**{"max_rank": 4, "dtypes": ("f32",), **options})
    for attempt in range(tries):
        ch = RandomChooser(random.Random(f"{op}:{seed}:{attempt}"))
        if attempt % 3 == 2:
            opts2 = Options(**{**opts.__dict__, "dtypes": ("f32", "f64", "i32", "i64", "bool")})
        else:
            opts2 = opts
        g = Graph(f"example_{op}")
        ctx = Ctx(g, ch, opts2, fresh_only=True)
        if _try_add(ctx, op, 1):
            g.set_outputs(g.nodes[-1].outputs)
            return g
    return None


def ops_without_examples(ops: Iterable[str] | None = None) -> list[str]:
    """Registry ops for which op_example finds nothing (a new op needing a recipe)."""
    return [op for op in (ops or all_ops()) if op_example(op) is None]
