"""The printer of the IR's text form (the grammar and the spelling of values: ir/text.py).

Printing is one pure function of the graph, `print_graph`; the helpers (`value_names`,
`format_node`, `format_type`, `format_attr_value`) are shared with the verifier, the
graph comparison and the analyses, which name values and nodes as the text does.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from .dtypes import DType
from .errors import GraphcError
from .graph import Graph, Node, Value, provide_view
from .registry import _coerce, get_op
from .types import TensorType

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_ANON_RE = re.compile(r"c?[0-9]+\Z")
DENSE_DECIMAL_MAX = 16  # constants with at most this many elements print as decimals
_LOC_COLUMN_MAX = 72  # locs align in one column, unless a statement is longer than this
# A header with more arguments than this, or longer than this, prints one argument per line.
_HEADER_WRAP_ARGS = 6
_HEADER_WRAP_CHARS = 240


# ---------------------------------------------------------------------------------------
# printing
# ---------------------------------------------------------------------------------------

def quote(s: str) -> str:
    """A double-quoted string literal of the text IR (Python-like escapes)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def _spell_name(name: str) -> str:
    if _IDENT_RE.match(name) and not _ANON_RE.match(name):
        return "%" + name
    return "%" + quote(name)


def format_type(t: TensorType) -> str:
    return f"{t.dtype.name}[{','.join(str(d) for d in t.shape)}]"


def _fmt_float(x: float) -> str:
    return repr(float(x))


def value_names(g: Graph) -> dict[Value, str]:
    """The spelling (`%x`, `%c0`, `%3`, `%"a b"`) of every value defined in `g`."""
    names: dict[Value, str] = {}
    used: set[str] = set()
    for v in (*g.inputs, *g.params):
        name = v.name if isinstance(v.name, str) and v.name else f"?unnamed.v{v.uid}"
        names.setdefault(v, _spell_name(name))
        used.add(name)
    def named(values) -> list[Value]:
        """Keep each value's own name where free; the rest, in order, get numbers."""
        anonymous = []
        for v in values:
            if v in names:
                continue
            if isinstance(v.name, str) and v.name and v.name not in used:
                names[v] = _spell_name(v.name)
                used.add(v.name)
            else:
                anonymous.append(v)
        return anonymous

    anon_consts = named(g.constants)
    anon_outs = named(v for n in g.nodes for v in n.outputs)
    for prefix, anonymous in (("c", anon_consts), ("", anon_outs)):
        k = 0
        for v in anonymous:
            while f"{prefix}{k}" in used:
                k += 1
            names[v] = f"%{prefix}{k}"
            used.add(f"{prefix}{k}")
    return names


def _ref(v: Any, names: dict[Value, str]) -> str:
    if isinstance(v, Value) and v in names:
        return names[v]
    uid = getattr(v, "uid", None)
    return "%" + quote(f"?undefined.v{uid}" if uid is not None else f"?not-a-value:{v!r}")


def _attr_key(v: Any) -> Any:
    """A strict, hashable identity for attribute values (1 != 1.0 != True, -0.0 != 0.0)."""
    if isinstance(v, (bool, np.bool_)):
        return ("b", bool(v))
    if isinstance(v, (int, np.integer)):
        return ("i", int(v))
    if isinstance(v, (float, np.floating)):
        return ("f", repr(float(v)))
    if isinstance(v, str):
        return ("s", v)
    if isinstance(v, DType):
        return ("d", v.name)
    if isinstance(v, (tuple, list)):
        return ("t", tuple(_attr_key(x) for x in v))
    return ("o", type(v).__name__, repr(v))


def attrs_equal(a: Any, b: Any) -> bool:
    """Attribute values compared strictly (types matter; floats compare by their repr)."""
    return type(a) is type(b) and _attr_key(a) == _attr_key(b)


def format_attr_value(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _fmt_float(v)
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, DType):
        return v.name
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_attr_value(x) for x in v) + "]"
    return quote(repr(v))  # not a valid attribute: printed so that the text shows it


def _canonical_default(name: str, spec: Any) -> Any:
    try:  # the registry's own canonicalisation
        return _coerce(name, spec, spec.default)
    except GraphcError:
        return spec.default


def _format_attrs(node: Node) -> str:
    try:
        schema = get_op(node.op).attrs
    except GraphcError:
        schema = {}
    parts = []
    attrs = node.attrs if isinstance(node.attrs, dict) else {}
    for k, v in attrs.items():
        spec = schema.get(k)
        if spec is not None and not spec.required and attrs_equal(v, _canonical_default(k, spec)):
            continue
        parts.append(f"{k}={format_attr_value(v)}")
    return " {" + ", ".join(parts) + "}" if parts else ""


def _format_loc(loc: Any) -> str:
    if loc is None:
        return ""
    return f"loc({quote(str(loc.file))}:{int(loc.line)})"


def format_node(node: Node, names: dict[Value, str] | None = None, *, loc: bool = True) -> str:
    """One statement of the text form: `%3 = add(%1, %2) : f32[4]  loc("m.py":3)`."""
    if names is None:
        names = {}
    if node.outputs:
        lhs = ", ".join(_ref(v, names) for v in node.outputs)
    else:
        lhs = "()"
    args = ", ".join(_ref(v, names) for v in node.inputs)
    types = [format_type(v.type) for v in node.outputs]
    ty = types[0] if len(types) == 1 else "(" + ", ".join(types) + ")"
    s = f"{lhs} = {node.op}({args}){_format_attrs(node)} : {ty}"
    if node.group is not None:
        s += f" group({node.group})"
    if loc and node.loc is not None:
        s += "  " + _format_loc(node.loc)
    return s


def _dense_decimal(arr: np.ndarray, dt: DType) -> str | None:
    if dt.is_bool:
        scalar = lambda x: "true" if x else "false"  # noqa: E731
    elif dt.is_int:
        scalar = lambda x: str(int(x))  # noqa: E731
    else:
        scalar = _fmt_float

    def rec(a: np.ndarray) -> str:
        if a.ndim == 0:
            return scalar(a.item())
        return "[" + ", ".join(rec(a[i]) for i in range(a.shape[0])) + "]"

    text = rec(arr)
    if dt.is_float:  # decimals must give back the same bits (a NaN's sign and payload don't)
        flat = np.array([float(_fmt_float(x)) for x in arr.reshape(-1).tolist()],
                        dtype=np.float64)
        back = flat.astype(dt.np_dtype)
        if back.tobytes() != np.ascontiguousarray(arr, dtype=dt.np_dtype).reshape(-1).tobytes():
            return None
    return text


def _le_bytes(arr: np.ndarray, dt: DType) -> bytes:
    return np.ascontiguousarray(arr, dtype=dt.np_dtype.newbyteorder("<")).tobytes()


def format_dense(arr: np.ndarray, dt: DType) -> str:
    arr = np.asarray(arr)
    if arr.size <= DENSE_DECIMAL_MAX:
        text = _dense_decimal(arr, dt)
        if text is not None:
            return f"dense<{text}>"
    return f"dense<0x{_le_bytes(arr, dt).hex()}>"


def _format_param(v: Value, names: dict[Value, str]) -> str:
    s = f"{names[v]}: {format_type(v.type)} = "
    s += v.init.to_text() if v.init is not None else "external"
    if not v.trainable:
        s += " frozen"
    return s


def print_graph(g: Graph, *, locs: bool = True) -> str:
    """The text form of `g` (see the module doc). `locs=False` leaves source lines out."""
    names = value_names(g)
    gname = g.name if isinstance(g.name, str) else str(g.name)
    gname = gname if _IDENT_RE.match(gname) else quote(gname)
    args = [f"{names[v]}: {format_type(v.type)}" for v in g.inputs]
    params = [_format_param(v, names) for v in g.params]
    header = f"graph @{gname}(" + ", ".join(args) + ")"
    if params:
        header += " params(" + ", ".join(params) + ")"
    header += " {"
    if len(args) + len(params) > _HEADER_WRAP_ARGS or len(header) > _HEADER_WRAP_CHARS:
        header = f"graph @{gname}(" + "".join(f"\n    {a}," for a in args).rstrip(",")
        header += ("\n)" if args else ")")
        if params:
            header += " params(" + "".join(f"\n    {p}," for p in params).rstrip(",") + "\n)"
        header += " {"
    lines = [header]
    for v in g.constants:
        dense = "dense<missing>" if v.data is None else format_dense(v.data, v.type.dtype)
        lines.append(f"  {names[v]} = const {format_type(v.type)} {dense}")
    stmts = [(format_node(n, names, loc=False), _format_loc(n.loc) if locs else "")
             for n in g.nodes]
    width = max([len(s) for s, lc in stmts if lc] + [0])
    width = min(width, _LOC_COLUMN_MAX)
    for s, lc in stmts:
        lines.append(f"  {s.ljust(width)}  {lc}" if lc else f"  {s}")
    ret = "  return"
    if g.outputs:
        ret += " " + ", ".join(_ref(v, names) for v in g.outputs)
    if g.updates:
        by_name = {p.name: p for p in g.params}
        ups = []
        for k, v in g.updates.items():
            key = names[by_name[k]] if k in by_name else _spell_name(str(k))
            ups.append(f"{key} = {_ref(v, names)}")
        ret += " updates(" + ", ".join(ups) + ")"
    lines.append(ret)
    lines.append("}")
    return "\n".join(lines) + "\n"


provide_view("text", print_graph)  # str(g) and g.to_text()
