"""Reading an ONNX model into an ir.Graph.

The importer walks the ONNX nodes in order and hands each to the converter of its op type
(the ops_* modules), which emits registry ops. Shapes are static: a node whose inputs are
all constants (initialisers kept as constants, `Shape` of a static value, `Constant`) is
evaluated at import time with the registry's reference implementations, so `Shape`-driven
subgraphs (Shape -> Gather -> Concat -> Reshape) fold to constants and never reach the
compiled graph.

Every node gets `Loc("<file>[<node name>]", <node index>)`, so errors, the text IR and dumps
point into the model file. Problems that are about graphc's coverage (an op type, attribute
value or dtype graphc does not import) are collected over the whole model and reported in
one `UnsupportedOnnxError`; a broken model (missing or truncated file, failing the ONNX
checker, inconsistent shapes) is an `OnnxError` or the registry's own error at the node.
"""
from __future__ import annotations

import os
import re
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from ..args import as_shape
from ..ir.emitter import Emitter
from ..ir.errors import BuildError, GraphcError
from ..ir.graph import Graph, Value
from ..ir.loc import Loc
from ..ir.reference import run_node
from ..ir.types import TensorType
from ..logconfig import log_onnx_import
from .context import (CONVERTERS, MAX_CONSTANT_ELEMENTS, MIN_OPSET, NeedsValue, NodeContext,
                      Unsupported, converter_for, graphc_dtype, supported_at)
from .errors import OnnxError, UnsupportedOnnxError

_DEFAULT_DOMAINS = ("", "ai.onnx")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise OnnxError("ONNX import needs the onnx package: pip install 'graphc-compiler[onnx]'") from None
    return onnx


def supported_ops(opset: int | None = None) -> list[str]:
    """The ONNX op types (default domain) graphc imports: at some opset, or in a model of
    the given default-domain opset."""
    _load_converters()
    if opset is not None:
        return supported_at(opset)
    return sorted(op for op, regs in CONVERTERS.items() if any(r.usable() for r in regs))


def _load_converters() -> None:
    from . import ops_elementwise, ops_nn, ops_reduce, ops_rnn, ops_shape  # noqa: F401
    from . import ops_activation, ops_attention, ops_einsum, ops_index, ops_layout_extra  # noqa: F401
    from . import ops_loss, ops_math, ops_norm, ops_resize  # noqa: F401


def read_model(model: Any) -> tuple[Any, str]:
    """A checked ModelProto and a short name for locations, from `model`: a path, bytes or a
    proto.

    Whatever the onnx package raises while reading or checking (protobuf's DecodeError on
    damaged bytes, the checker's ValidationError, a missing external-data file, ...) is an
    OnnxError naming the file: the onnx library is the boundary, its exceptions stop here."""
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        proto, source = model, model.graph.name or "model"
    elif isinstance(model, (bytes, bytearray)):
        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception as e:  # noqa: BLE001  (the onnx package's exceptions, see above)
            raise OnnxError(f"malformed ONNX model bytes: {type(e).__name__}: {_first_line(e)}") from None
        source = proto.graph.name or "model"
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not isinstance(path, str) or not os.path.isfile(path):
            raise OnnxError(f"no such ONNX file: {path!r}")
        try:
            proto = onnx.load(path)
        except Exception as e:  # noqa: BLE001
            what = ("its external data cannot be read" if _external_data_error(e)
                    else "it is not a readable ONNX model (malformed or truncated file)")
            raise OnnxError(f"{path}: {what}: {type(e).__name__}: {_first_line(e)}") from None
        source = os.path.basename(path)
    else:
        raise OnnxError(f"cannot load an ONNX model from a {type(model).__name__}; give a path, "
                        "bytes or an onnx.ModelProto")
    if not isinstance(source, str):  # a damaged name: see _undecodable
        source = "model"
    try:
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001  (ValidationError, and what protobuf raises)
        raise OnnxError(f"{source} is not a valid ONNX model: {_first_line(e) or 'invalid model'}") from None
    bad = _undecodable(proto)
    if bad:
        raise OnnxError(f"{source} is not a valid ONNX model: {bad} is not valid UTF-8 text "
                        "(a damaged file?)")
    return proto, source


def _undecodable(msg: Any, path: str = "model") -> str | None:
    """The first string field that protobuf could not decode (it hands those over as bytes,
    and onnx's checker does not look), as a field path; None when every string is text."""
    for field, value in msg.ListFields():
        where = f"{path}.{field.name}"
        repeated = getattr(field, "is_repeated", None)  # protobuf >= 6; `label` before
        if repeated is None:
            repeated = field.label == field.LABEL_REPEATED
        if field.type == field.TYPE_STRING:
            items = value if repeated else [value]
            if any(isinstance(v, bytes) for v in items):
                return where
        elif field.type == field.TYPE_MESSAGE:
            items = value if repeated else [value]
            for i, item in enumerate(items):
                found = _undecodable(item, f"{where}[{i}]")
                if found:
                    return found
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def _external_data_error(e: BaseException) -> bool:
    text = str(e)
    return "external" in text.lower() or "should be stored in" in text


def _opset(proto: Any, source: str) -> int | None:
    """The model's default-domain opset; None when it imports none (only other domains)."""
    onnx = _onnx()
    version = next((o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    newest = onnx.defs.onnx_opset_version()
    if version is not None and not 1 <= version <= newest:
        raise UnsupportedOnnxError(
            f"{source} uses opset {version}; the installed onnx package knows opsets 1 to "
            f"{newest} (graphc converts each op from opset {MIN_OPSET}, some from older ones)")
    return version


def _why_not(node: Any, opset: int | None) -> str | None:
    """Why graphc cannot convert this node (op type, domain, opset), or None."""
    if node.domain not in _DEFAULT_DOMAINS:
        return f"op type {node.op_type} (domain {node.domain}) is not supported"
    if opset is None:
        return ("the model imports no default-domain opset, so its default-domain ops have no "
                "meaning")
    if node.op_type not in CONVERTERS:
        return f"op type {node.op_type} is not supported"
    if converter_for(node.op_type, opset) is None:
        waiting = [n for r in CONVERTERS[node.op_type] if r.covers(opset) for n in r.needs]
        if waiting:
            return (f"op type {node.op_type} at opset {opset} converts as "
                    f"{', '.join(sorted(set(waiting)))}, which graphc does not import")
        spans = ", ".join(sorted(f"{r.since}" + (f" to {r.until}" if r.until else " on")
                                 for r in CONVERTERS[node.op_type]))
        return (f"op type {node.op_type} at opset {opset} is not supported (graphc converts it "
                f"at opsets {spans})")
    return None


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.]")


def _identifier(name: str, taken: set[str]) -> str:
    """An ir-valid name for an ONNX input or parameter name ('input.1' stays, 'x:0' -> 'x_0')."""
    out = _NAME_BAD.sub("_", name) or "v"
    if not (out[0].isalpha() or out[0] == "_"):
        out = "_" + out
    base, i = out, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


def _value_info_type(vi: Any, shapes: Mapping[str, Sequence[int]], what: str) -> TensorType:
    if not vi.type.HasField("tensor_type"):
        raise Unsupported(f"{what} {vi.name!r} is not a tensor (sequences and maps are not "
                          "supported)")
    tt = vi.type.tensor_type
    dt = graphc_dtype(tt.elem_type, f"{what} {vi.name!r}")
    if vi.name in shapes:
        return TensorType(tuple(int(d) for d in shapes[vi.name]), dt)
    dims = declared_dims(vi)
    if dims is None or any(not isinstance(d, int) for d in dims):
        raise _Symbolic(dims)
    return TensorType(tuple(dims), dt)


def declared_dims(vi: Any) -> list[int | str] | None:
    """A value's declared shape: sizes, and a dim_param name (or '?') for each symbolic
    dimension; None when even the rank is unknown."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else
            (d.dim_param or "?") for d in tt.shape.dim]


class _Symbolic(Exception):
    """An input whose shape is not all sizes: it is specialised on the first call's shape."""

    def __init__(self, dims: list[int | str] | None) -> None:
        self.dims = dims


class Specialise(Exception):
    """The model compiles only once some inputs' shapes (`symbolic`: name -> declared dims)
    or values (`values`: names) are known: load() returns a DynamicModel instead."""

    def __init__(self, symbolic: dict[str, list[int | str] | None], values: set[str]) -> None:
        self.symbolic, self.values = symbolic, values


class _Importer:
    def __init__(self, proto: Any, source: str, initializers: str,
                 input_shapes: Mapping[str, Sequence[int]],
                 constant_inputs: Mapping[str, Any]) -> None:
        self.proto = proto
        self.source = source
        self.initializers = initializers
        self.input_shapes = dict(input_shapes)
        self.constant_inputs = dict(constant_inputs)
        name = _NAME_BAD.sub("_", proto.graph.name or "model") or "model"
        self.graph = Graph(name)
        self.env: dict[str, Value | None] = {}  # ONNX value name -> graph value (None: failed)
        self.problems: list[tuple[int, str, str, str]] = []
        self.names: set[str] = set()
        self.opset: int | None = None
        self.symbolic: dict[str, list[int | str] | None] = {}  # inputs without static shapes
        self.needs_values: set[str] = set()  # inputs that feed shapes, axes, sizes, pads...
        self.input_name: dict[Value, str] = {}  # graph input -> its ONNX name

    def problem(self, index: int, op: str, name: str, why: str) -> None:
        self.problems.append((index, op, name, why))

    def run(self) -> Graph:
        """The graph; raises Specialise when input shapes or values must be known first."""
        _load_converters()
        g = self.proto.graph
        self.opset = _opset(self.proto, self.source)
        self._initializers(g)
        self._inputs(g)
        for i, node in enumerate(g.node):
            why = _why_not(node, self.opset)
            if why:
                self.problem(i, node.op_type, node.name, why)
        listed = {p[0] for p in self.problems}
        for i, node in enumerate(g.node):
            if i not in listed:
                self._node(i, node)
            else:
                for o in node.output:
                    self.env[o] = None
        self._outputs(g)
        if self.problems:
            self._raise_unsupported()
        if self.symbolic or self.needs_values:
            raise Specialise(self.symbolic, self.needs_values)
        self._drop_unused_constants()
        # Names the model's callers use: every declared input, by its ONNX name (and its
        # graph name); an executable accepts those it does not need, and ignores them.
        declared = {v.name: v.name for v in self.input_name}
        declared.update((onnx_name, v.name) for v, onnx_name in self.input_name.items())
        self.graph.declared_inputs = declared
        log_onnx_import(self.proto, self.source, self.opset or 0, self.graph)
        return self.graph

    def _raise_unsupported(self) -> None:
        rows = sorted(self.problems)
        lines = [(f"  node {i} {op}" if i >= 0 else f"  {op}") + (f" {name!r}" if name else "")
                 + f": {why}" for i, op, name, why in rows]
        nodes = sum(1 for r in rows if r[0] >= 0)
        head = (f"{self.source}: {nodes} node(s) cannot be imported" if nodes else
                f"{self.source} cannot be imported")
        if self.opset is None:
            domains = sorted({o.domain for o in self.proto.opset_import} - set(_DEFAULT_DOMAINS))
            lines.append(f"  (the model imports the opsets of {', '.join(domains) or 'no domain'} "
                         "but none of the default domain ai.onnx, whose ops graphc imports)")
        raise UnsupportedOnnxError(head + "\n" + "\n".join(lines), rows)

    # -- graph boundary -------------------------------------------------------------
    def _initializers(self, g: Any) -> None:
        from onnx import numpy_helper
        for t in g.initializer:
            try:
                dt = graphc_dtype(t.data_type, f"initializer {t.name!r}")
            except Unsupported as e:
                self.problem(-1, "initializer", t.name, str(e))
                self.env[t.name] = None
                continue
            try:
                arr = numpy_helper.to_array(t).astype(dt.np_dtype)
            except Exception as e:  # noqa: BLE001  (the onnx package reading damaged data)
                raise OnnxError(f"{self.source}: initializer {t.name!r} cannot be read: "
                                f"{type(e).__name__}: {_first_line(e)}") from None
            if self.initializers == "params" and dt.is_float:
                name = _identifier(t.name, self.names)
                self.env[t.name] = self.graph.add_param(name, TensorType(arr.shape, dt), value=arr)
            else:
                self.env[t.name] = self.graph.add_constant(arr, dt, name=self._const_name(t.name))
        for t in g.sparse_initializer:
            self.problem(-1, "initializer", t.values.name, "sparse initializers are not supported")
            self.env[t.values.name] = None

    def _const_name(self, name: str) -> str | None:
        if not name or name in self.names:
            return None
        self.names.add(name)
        return name

    def _inputs(self, g: Any) -> None:
        for vi in g.input:
            if vi.name in self.env:  # IR < 4 lists initialisers among the inputs too
                continue
            shapes = dict(self.input_shapes)
            if vi.name in self.constant_inputs:
                shapes[vi.name] = np.shape(self.constant_inputs[vi.name])
            try:
                t = _value_info_type(vi, shapes, "input")
            except _Symbolic as e:
                self.symbolic[vi.name] = e.dims
                self.env[vi.name] = None
                continue
            except Unsupported as e:
                self.problem(-1, "input", vi.name, str(e))
                self.env[vi.name] = None
                continue
            if vi.name in self.constant_inputs:
                data = np.asarray(self.constant_inputs[vi.name]).astype(t.dtype.np_dtype)
                self.env[vi.name] = self.graph.add_constant(data, t.dtype,
                                                            name=self._const_name(vi.name))
            else:
                v = self.graph.add_input(_identifier(vi.name, self.names), t)
                self.env[vi.name] = v
                self.input_name[v] = vi.name
        for what, given in (("input_shapes", self.input_shapes),
                            ("constant_inputs", self.constant_inputs)):
            unknown = set(given) - {vi.name for vi in g.input}
            if unknown:
                raise OnnxError(f"{what} names {sorted(unknown)}, which are not inputs of "
                                f"{self.source}; its inputs are {[vi.name for vi in g.input]}")

    def _outputs(self, g: Any) -> None:
        outs = []
        for vi in g.output:
            v = self.env.get(vi.name)
            if v is None:
                if vi.name not in self.env:
                    raise OnnxError(f"{self.source}: graph output {vi.name!r} is produced by no node")
                continue  # its producer failed, or waits for a shape or value
            self._check_declared(vi, v)
            outs.append(self._named(v, vi.name, outs))
        self.graph.set_outputs(outs)

    def _named(self, v: Value, name: str, earlier: list[Value]) -> Value:
        """The output value, carrying the model's output name (exe.output_names, the text
        IR): an unnamed result takes it; an input, a named constant or a value returned
        twice is first copied (a reshape to its own shape, which simplification drops)."""
        if v.name == name:
            return v
        taken = set(self.graph.named_values()) | {o.name for o in earlier if o.name}
        if name in taken:
            return v
        if v.name is None and v.kind == "node" and v not in earlier:
            v.name = name
            return v
        copy = Emitter(self.graph, v.producer.loc if v.producer is not None else None)
        out = copy.op("reshape", v, shape=v.shape)  # a fresh value (Emitter.reshape elides it)
        out.name = name
        return out

    def _check_declared(self, vi: Any, v: Value) -> None:
        """A declared output type that disagrees with the import would be a wrong answer."""
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type == 0:
            return
        try:
            dt = graphc_dtype(tt.elem_type, f"output {vi.name!r}")
        except Unsupported as e:
            self.problem(-1, "output", vi.name, str(e))
            return
        declared = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] \
            if tt.HasField("shape") else None
        shape_ok = declared is None or (len(declared) == v.type.rank and all(
            d is None or d == s for d, s in zip(declared, v.shape)))
        if dt != v.dtype or not shape_ok:
            raise OnnxError(f"{self.source}: output {vi.name!r} is declared "
                            f"{dt}{declared if declared is not None else ''} but computes "
                            f"{v.type}")

    # -- nodes ----------------------------------------------------------------------
    def _node(self, index: int, node: Any) -> None:
        ins = []
        for name in node.input:
            if not name:
                ins.append(None)
                continue
            if name not in self.env:
                raise OnnxError(f"{self.source}: node {index} {node.op_type} {node.name!r} reads "
                                f"{name!r}, which no earlier node, input or initializer defines")
            if self.env[name] is None:  # downstream of a node that could not be imported
                for o in node.output:
                    self.env[o] = None
                return
            ins.append(self.env[name])
        loc = Loc(f"{self.source}[{node.name}]" if node.name else self.source, index)
        for _ in range(len(ins) + 1):  # each retry has one more operand folded
            ctx = NodeContext(self.graph, node, loc, ins, self.opset or 0)
            start = len(self.graph.nodes)
            try:
                outs = list(converter_for(node.op_type, self.opset or 0)(ctx))
                if all(v is None or v.kind == "const" for v in ins) and len(self.graph.nodes) > start:
                    outs = self._fold(start, outs)
                break
            except NeedsValue as e:
                del self.graph.nodes[start:]
                data = self._evaluate(e.value) if any(v is e.value for v in ins) else None
                if data is not None:  # computed from constants only (its node had another input)
                    c = self.graph.add_constant(data, e.value.dtype)
                    ins = [c if v is e.value else v for v in ins]
                    continue
                self._needs_value(index, node, e)
                return
            except Unsupported as e:
                del self.graph.nodes[start:]
                self.problem(index, node.op_type, node.name, str(e))
                for o in node.output:
                    self.env[o] = None
                return
            except GraphcError as e:
                raise e.attach(loc=loc)
            except MemoryError:  # a size attribute or operand asks for more than exists
                raise OnnxError(f"{self.source}: node {index} {node.op_type} {node.name!r}: its "
                                "attributes or constant operands ask for more memory than this "
                                "machine has").attach(loc=loc) from None
        else:
            raise OnnxError(f"{self.source}: node {index} {node.op_type}: its operands do not "
                            "fold (an internal error: please report it)")
        for i, name in enumerate(node.output):
            if name:
                if i >= len(outs) or outs[i] is None:
                    self.problem(index, node.op_type, node.name, f"output {i} is not supported")
                    self.env[name] = None
                else:
                    self.env[name] = outs[i]

    def _needs_value(self, index: int, node: Any, e: NeedsValue) -> None:
        """A shape-like operand computed at run time: from graph inputs, they are then
        specialised by value; from parameters, a clear refusal."""
        sources = _sources(e.value)
        inputs = [self.input_name[v] for v in sources if v.kind == "input"]
        if inputs and len(inputs) == len(sources):
            self.needs_values.update(inputs)  # specialised on their values at call time
        else:
            params = sorted(v.name for v in sources if v.kind == "param")
            self.problem(index, node.op_type, node.name, f"{e}: it is computed from "
                         f"parameter(s) {', '.join(params)}; import with "
                         "initializers='constants' (or pass constant_inputs={...} for inputs)")
        for o in node.output:
            self.env[o] = None

    def _evaluate(self, v: Value) -> np.ndarray | None:
        """v's data when it is computed from constants only (and small enough), else None."""
        needed: set[Any] = set()
        stack = [v]
        while stack:
            u = stack.pop()
            if u.kind in ("input", "param"):
                return None
            if u.kind == "node" and u.producer not in needed:
                if any(o.type.size > MAX_CONSTANT_ELEMENTS for o in u.producer.outputs):
                    return None
                needed.add(u.producer)
                stack.extend(u.producer.inputs)
        env: dict[Value, np.ndarray] = {}
        for n in self.graph.nodes:
            if n in needed:
                args = [env[a] if a.kind == "node" else a.data for a in n.inputs]
                env.update(zip(n.outputs, run_node(n, args)))
        return env[v] if v.kind == "node" else v.data

    def _fold(self, start: int, outs: list[Value | None]) -> list[Value | None]:
        """Evaluate the nodes a constant-only ONNX node produced; they become constants."""
        new = self.graph.nodes[start:]
        if any(v.type.size > MAX_CONSTANT_ELEMENTS for n in new for v in n.outputs):
            return outs  # too large to compute here: it stays a computation in the graph
        env: dict[Value, np.ndarray] = {}
        for n in new:
            args = [env[v] if v.kind == "node" else v.data for v in n.inputs]
            env.update(zip(n.outputs, run_node(n, args)))
        del self.graph.nodes[start:]
        return [v if v is None or v.kind != "node" else self.graph.add_constant(env[v], v.dtype)
                for v in outs]

    def _drop_unused_constants(self) -> None:
        used = {v for n in self.graph.nodes for v in n.inputs} | set(self.graph.outputs)
        self.graph.constants = [c for c in self.graph.constants if c in used]


def _sources(v: Value) -> list[Value]:
    """The graph inputs and parameters a value is computed from."""
    seen: set[Value] = set()
    out: list[Value] = []
    stack = [v]
    while stack:
        u = stack.pop()
        if u in seen:
            continue
        seen.add(u)
        if u.kind in ("input", "param"):
            out.append(u)
        elif u.producer is not None:
            stack.extend(u.producer.inputs)
    return out


def load(model: Any, *, input_shapes: Mapping[str, Sequence[int]] | None = None,
         initializers: Literal["constants", "params"] = "constants",
         constant_inputs: Mapping[str, Any] | None = None) -> "Graph | DynamicModel":
    """Import an ONNX model (a path, bytes or an onnx.ModelProto) for gc.compile.

    A model with static shapes gives an ir.Graph. One with symbolic input dimensions (a
    dynamic batch) or with inputs that feed shapes, axes, sizes or pads gives a
    DynamicModel (graphc/onnx/dynamic.py): `gc.compile(model)` then compiles on each call
    for the inputs' shapes and those inputs' values, and caches the result.

    initializers="constants" bakes the weights in (they fold and compile as constants);
    "params" makes float initializers named parameters (their values set, so the graph
    compiles as is, and `exe.params[name]` can read or replace them); integer ones stay
    constants, as shapes and indices must be known when compiling.
    input_shapes={name: shape} fixes symbolic input dimensions once and for all;
    constant_inputs={name: array} replaces graph inputs by constants (their shape then
    comes from the array), so what depends on them folds at import. Executables take the
    model's own input names (graph inputs whose names are not identifiers are renamed,
    '/' and ':' becoming '_', and answer to both) and accept inputs that no output needs,
    ignoring them; outputs carry the model's output names (`exe.output_names`).
    """
    from .dynamic import DynamicModel
    if initializers not in ("constants", "params"):
        raise OnnxError(f"initializers must be 'constants' or 'params', not {initializers!r}")
    shapes = _checked_shapes(input_shapes)
    constants = _checked_constants(constant_inputs)
    proto, source = read_model(model)
    try:
        return _Importer(proto, source, initializers, shapes, constants).run()
    except Specialise as s:
        return DynamicModel(proto, source, initializers, shapes, constants, s.symbolic, s.values)


def _checked_shapes(input_shapes: Any) -> dict[str, tuple[int, ...]]:
    if input_shapes is None:
        return {}
    if not isinstance(input_shapes, Mapping):
        raise OnnxError(f"input_shapes must map input names to shapes, got "
                        f"{type(input_shapes).__name__}")
    out = {}
    for name, shape in input_shapes.items():
        try:  # the builder's shape rule (graphc/args.py), reported as an import error
            out[name] = as_shape(shape, f"input_shapes[{name!r}]")
        except BuildError as e:
            raise OnnxError(str(e).splitlines()[0]) from None
    return out


def _checked_constants(constant_inputs: Any) -> dict[str, np.ndarray]:
    if constant_inputs is None:
        return {}
    if not isinstance(constant_inputs, Mapping):
        raise OnnxError(f"constant_inputs must map input names to arrays, got "
                        f"{type(constant_inputs).__name__}")
    out = {}
    for name, value in constant_inputs.items():
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as e:
            raise OnnxError(f"constant_inputs[{name!r}] cannot be read as an array: {e}") from None
        if arr.dtype.kind not in "fiub":
            raise OnnxError(f"constant_inputs[{name!r}] has dtype {arr.dtype}; give numbers")
        out[name] = arr
    return out
