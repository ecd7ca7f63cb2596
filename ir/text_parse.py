"""The parser of the IR's text form (the grammar: ir/text.py): a hand-written lexer and
recursive-descent parser. It builds the graph only through `Graph.add_input/add_param/
add_constant/add_node`, so the registry checks every attribute and type; every problem is a
`ParseError` with a line, a column and the source line.
"""
from __future__ import annotations

import math
import re
from dataclasses import fields as dc_fields, is_dataclass
from typing import Any, NamedTuple

import numpy as np

from . import dtypes
from .dtypes import DType
from .errors import GraphcError, ParseError
from .graph import Graph, Value
from .init import BY_NAME as INIT_BY_NAME, Init
from .loc import Loc
from .registry import get_op
from .text_print import _ANON_RE, format_type, quote
from .types import TensorType


# ---------------------------------------------------------------------------------------
# lexing
# ---------------------------------------------------------------------------------------

class _Tok(NamedTuple):
    kind: str  # ident value global int float hex string punct eof
    value: Any
    line: int
    col: int
    pos: int


_PUNCT = set("()[]{}<>,:=")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.]+")
_IDENT_TOK = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")
_HEX = re.compile(r"0x[0-9a-fA-F]*")
_MAX_NUMBER_CHARS = 400
_DIGITS = frozenset("0123456789")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")


class _Lexer:
    def __init__(self, text: str, parser: "_Parser") -> None:
        self.text = text
        self.p = parser
        self.pos = 0
        self.line = 1
        self.line_start = 0

    def _err(self, msg: str, pos: int) -> ParseError:
        return self.p.error_at(msg, self.line, pos - self.line_start + 1)

    def _skip(self) -> None:
        t = self.text
        n = len(t)
        while self.pos < n:
            c = t[self.pos]
            if c == "\n":
                self.pos += 1
                self.line += 1
                self.line_start = self.pos
            elif c in " \t\r\f\v":
                self.pos += 1
            elif t.startswith("//", self.pos):
                end = t.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                break

    def next(self) -> _Tok:
        self._skip()
        t = self.text
        start = self.pos
        line, col = self.line, start - self.line_start + 1
        if start >= len(t):
            return _Tok("eof", None, line, col, start)
        c = t[start]

        def tok(kind: str, value: Any, end: int) -> _Tok:
            self.pos = end
            return _Tok(kind, value, line, col, start)

        if c in _PUNCT:
            return tok("punct", c, start + 1)
        if c == '"':
            s, end = self._string(start)
            return tok("string", s, end)
        if c in "%@":
            what = "value" if c == "%" else "graph name"
            if start + 1 < len(t) and t[start + 1] == '"':
                s, end = self._string(start + 1)
                return tok("value" if c == "%" else "global", (s, True) if c == "%" else s, end)
            m = _NAME_CHARS.match(t, start + 1)
            if not m:
                raise self._err(f"expected a {what} name after '{c}'", start)
            name = m.group()
            return tok("value" if c == "%" else "global", (name, False) if c == "%" else name,
                       m.end())
        if c == "-" and t.startswith("inf", start + 1) and not _continues(t, start + 4):
            return tok("float", float("-inf"), start + 4)
        if c in _DIGITS or (c == "-" and start + 1 < len(t) and t[start + 1] in _DIGITS):
            m = _HEX.match(t, start)
            if m and c == "0":
                if _continues(t, m.end()):
                    raise self._err("malformed hexadecimal literal", start)
                return tok("hex", m.group()[2:], m.end())
            m = _NUMBER.match(t, start)
            assert m is not None
            text = m.group()
            if _continues(t, m.end()) or (m.end() < len(t) and t[m.end()] == "."):
                raise self._err("malformed number", start)
            if len(text) > _MAX_NUMBER_CHARS:
                raise self._err("number literal too long", start)
            if "." in text or "e" in text or "E" in text:
                val = float(text)
                if math.isinf(val):
                    raise self._err(f"number {text} is out of range of a 64-bit float (write "
                                    "inf or -inf)", start)
                return tok("float", val, m.end())
            return tok("int", int(text), m.end())
        if c in _IDENT_START:
            m = _IDENT_TOK.match(t, start)
            assert m is not None
            return tok("ident", m.group(), m.end())
        raise self._err(f"unexpected character {c!r}", start)

    def _string(self, start: int) -> tuple[str, int]:
        """A quoted string starting at `start` (the opening quote); returns (value, end)."""
        t = self.text
        i = start + 1
        out: list[str] = []
        while True:
            if i >= len(t) or t[i] == "\n":
                raise self._err("unterminated string", start)
            c = t[i]
            if c == '"':
                return "".join(out), i + 1
            if c != "\\":
                out.append(c)
                i += 1
                continue
            if i + 1 >= len(t):
                raise self._err("unterminated string", start)
            e = t[i + 1]
            simple = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
            if e in simple:
                out.append(simple[e])
                i += 2
                continue
            width = {"x": 2, "u": 4, "U": 8}.get(e)
            digits = t[i + 2:i + 2 + width] if width else ""
            if not width or len(digits) != width or not all(d in "0123456789abcdefABCDEF"
                                                            for d in digits):
                raise self._err(f"bad escape sequence '\\{e}' in string", i)
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise self._err(f"escape '\\{e}{digits}' is not a Unicode code point", i)
            out.append(chr(code))
            i += 2 + width


def _continues(t: str, pos: int) -> bool:
    return pos < len(t) and (t[pos].isalnum() or t[pos] == "_")


# ---------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------

def _describe_tok(tok: _Tok) -> str:
    if tok.kind == "eof":
        return "end of input"
    if tok.kind == "value":
        name, quoted = tok.value
        return "value " + (("%" + quote(name)) if quoted else "%" + name)
    if tok.kind == "global":
        return f"'@{tok.value}'"
    if tok.kind == "string":
        return f"string {quote(tok.value)}"
    if tok.kind == "hex":
        return "hexadecimal literal"
    if tok.kind in ("int", "float"):
        return f"number {tok.value!r}"
    return f"'{tok.value}'"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.split("\n")
        self.lex = _Lexer(text, self)
        self.tok = self.lex.next()
        self._peeked: _Tok | None = None
        self.g: Graph | None = None
        self.symbols: dict[str, Value] = {}

    # -- errors -----------------------------------------------------------------------
    def error_at(self, msg: str, line: int, col: int) -> ParseError:
        src = self.lines[line - 1].rstrip("\r") if 0 < line <= len(self.lines) else ""
        return ParseError(msg, line, col, src)

    def error(self, msg: str, tok: _Tok | None = None) -> ParseError:
        tok = tok or self.tok
        return self.error_at(msg, tok.line, tok.col)

    # -- token helpers ---------------------------------------------------------------
    def advance(self) -> _Tok:
        t = self.tok
        if self._peeked is not None:
            self.tok, self._peeked = self._peeked, None
        else:
            self.tok = self.lex.next()
        return t

    def peek(self) -> _Tok:
        """The token after the current one."""
        if self._peeked is None:
            self._peeked = self.lex.next()
        return self._peeked

    def at(self, kind: str, value: Any = None) -> bool:
        return self.tok.kind == kind and (value is None or self.tok.value == value)

    def at_punct(self, p: str) -> bool:
        return self.tok.kind == "punct" and self.tok.value == p

    def accept_punct(self, p: str) -> bool:
        if self.at_punct(p):
            self.advance()
            return True
        return False

    def expect_punct(self, p: str, what: str = "") -> _Tok:
        if not self.at_punct(p):
            raise self.error(f"expected '{p}'{what}, found {_describe_tok(self.tok)}")
        return self.advance()

    def expect_keyword(self, kw: str) -> _Tok:
        if not self.at("ident", kw):
            raise self.error(f"expected '{kw}', found {_describe_tok(self.tok)}")
        return self.advance()

    def expect(self, kind: str, what: str) -> _Tok:
        if self.tok.kind != kind:
            raise self.error(f"expected {what}, found {_describe_tok(self.tok)}")
        return self.advance()

    # -- values ----------------------------------------------------------------------
    @staticmethod
    def spelled(tok: _Tok) -> str:
        name, quoted = tok.value
        return "%" + (quote(name) if quoted else name)

    def check_new(self, tok: _Tok) -> None:
        if tok.value[0] in self.symbols:
            raise self.error(f"redefinition of value {self.spelled(tok)}", tok)

    def define(self, tok: _Tok, v: Value) -> None:
        self.check_new(tok)
        self.symbols[tok.value[0]] = v

    def lookup(self, tok: _Tok) -> Value:
        v = self.symbols.get(tok.value[0])
        if v is None:
            raise self.error(f"undefined value {self.spelled(tok)}", tok)
        return v

    def expect_ref(self) -> Value:
        return self.lookup(self.expect("value", "a value (%name)"))

    @staticmethod
    def name_of(tok: _Tok) -> str | None:
        """The Value.name a defining occurrence gives: None for the unnamed forms %3, %c3."""
        name, quoted = tok.value
        return name if quoted or not _ANON_RE.match(name) else None

    # -- types and literals ----------------------------------------------------------
    def parse_dtype(self) -> DType:
        tok = self.expect("ident", "a dtype")
        dt = dtypes.BY_NAME.get(tok.value)
        if dt is None:
            raise self.error(f"unknown dtype '{tok.value}'; expected one of "
                             f"{', '.join(dtypes.BY_NAME)}", tok)
        return dt

    def parse_type(self) -> TensorType:
        first = self.tok
        if first.kind != "ident":
            raise self.error(f"expected a type like f32[2,3], found {_describe_tok(first)}")
        dt = self.parse_dtype()
        self.expect_punct("[", " after the dtype (a scalar is written f32[])")
        shape: list[int] = []
        if not self.at_punct("]"):
            while True:
                tok = self.tok
                if tok.kind != "int" or tok.value < 0:
                    raise self.error(f"expected a non-negative dimension, found "
                                     f"{_describe_tok(tok)}")
                shape.append(self.advance().value)
                if not self.accept_punct(","):
                    break
        self.expect_punct("]")
        try:
            return TensorType(tuple(shape), dt)
        except GraphcError as e:  # pragma: no cover - dims are checked above
            raise self.error(e.message, first)

    def parse_number(self, what: str = "a number") -> int | float:
        tok = self.tok
        if tok.kind in ("int", "float"):
            self.advance()
            return tok.value
        if tok.kind == "ident" and tok.value in ("inf", "nan"):
            self.advance()
            return float(tok.value)
        raise self.error(f"expected {what}, found {_describe_tok(tok)}")

    def parse_string(self) -> str:
        return self.expect("string", "a string").value

    # -- header ----------------------------------------------------------------------
    def parse_graph(self) -> Graph:
        self.expect_keyword("graph")
        tok = self.expect("global", "the graph name (@name)")
        self.g = g = Graph(tok.value)
        self.expect_punct("(")
        if not self.at_punct(")"):
            while True:
                vtok = self.expect("value", "an input (%name: type)")
                self.expect_punct(":")
                t = self.parse_type()
                v = self.add_source(vtok, lambda name: g.add_input(name, t), "input")
                self.define(vtok, v)
                if not self.accept_punct(","):
                    break
        self.expect_punct(")", " to close the inputs")
        if self.at("ident", "params"):
            self.advance()
            self.expect_punct("(")
            if not self.at_punct(")"):
                while True:
                    self.parse_param()
                    if not self.accept_punct(","):
                        break
            self.expect_punct(")", " to close the parameters")
        self.expect_punct("{", " to open the graph body")
        while not self.at("ident", "return"):
            if self.tok.kind == "eof":
                raise self.error("unexpected end of input: the graph body has no 'return'")
            self.parse_statement()
        self.parse_return()
        self.expect_punct("}", " to close the graph body")
        if self.tok.kind != "eof":
            raise self.error(f"unexpected {_describe_tok(self.tok)} after the end of the graph")
        return g

    def add_source(self, vtok: _Tok, make, what: str) -> Value:
        self.check_new(vtok)
        try:
            return make(vtok.value[0])
        except GraphcError as e:
            raise self.error(f"bad {what} name: {e.message}", vtok)

    def parse_param(self) -> None:
        g = self.g
        assert g is not None
        vtok = self.expect("value", "a parameter (%name: type = init)")
        self.expect_punct(":")
        t = self.parse_type()
        init: Init | None = None
        if self.accept_punct("="):
            if self.at("ident", "external"):
                self.advance()
            else:
                init = self.parse_init()
        trainable = True
        if self.at("ident", "frozen"):
            self.advance()
            trainable = False
        v = self.add_source(vtok, lambda name: g.add_param(name, t, init=init, trainable=trainable),
                            "parameter")
        self.define(vtok, v)

    def parse_init(self) -> Init:
        tok = self.expect("ident", "an initialiser (zeros(), normal(0.0, 1.0, seed=0), ...) "
                                   "or 'external'")
        cls = INIT_BY_NAME.get(tok.value)
        if cls is None:
            raise self.error(f"unknown initialiser '{tok.value}'; expected one of "
                             f"{', '.join(INIT_BY_NAME)} or external", tok)
        field_types: dict[str, str] = {}
        if is_dataclass(cls):
            field_types = {f.name: str(f.type) for f in dc_fields(cls)}
        order = list(field_types)
        self.expect_punct("(")
        pos: list[tuple[_Tok, Any]] = []
        kw: dict[str, tuple[_Tok, Any]] = {}
        if not self.at_punct(")"):
            while True:
                atok = self.tok
                if self.tok.kind == "ident" and self.tok.value not in ("inf", "nan"):
                    key = self.advance().value
                    self.expect_punct("=")
                    if key in kw:
                        raise self.error(f"{tok.value}: argument {key} given twice", atok)
                    kw[key] = (atok, self.parse_number())
                else:
                    if kw:
                        raise self.error("positional argument after a keyword argument", atok)
                    pos.append((atok, self.parse_number()))
                if not self.accept_punct(","):
                    break
        self.expect_punct(")")
        if len(pos) > len(order):
            raise self.error(f"{tok.value}() takes at most {len(order)} arguments, got {len(pos)}",
                             pos[len(order)][0] if len(order) < len(pos) else tok)
        args: dict[str, Any] = {}
        for (atok, val), key in zip(pos, order):
            args[key] = (atok, val)
        for key, (atok, val) in kw.items():
            if key not in field_types:
                raise self.error(f"{tok.value}() has no argument {key}; its arguments are "
                                 f"{', '.join(order) or 'none'}", atok)
            if key in args:
                raise self.error(f"{tok.value}: argument {key} given twice", atok)
            args[key] = (atok, val)
        values: dict[str, Any] = {}
        for key, (atok, val) in args.items():
            ft = field_types[key]
            if ft == "int":
                if not isinstance(val, int):
                    raise self.error(f"{tok.value}: argument {key} must be an integer", atok)
            elif ft == "float":
                val = float(val)
            values[key] = val
        try:
            return cls(**values)
        except Exception as e:  # noqa: BLE001 - an initialiser rejecting its arguments
            raise self.error(f"bad initialiser {tok.value}: {e}", tok)

    # -- body ------------------------------------------------------------------------
    def parse_statement(self) -> None:
        start = self.tok
        lhs: list[_Tok] = []
        if self.at_punct("("):
            self.advance()
            self.expect_punct(")", " (a statement without results is written '() = op(...)')")
        else:
            while True:
                lhs.append(self.expect("value", "a statement (%name = ...) or 'return'"))
                if not self.accept_punct(","):
                    break
        self.expect_punct("=")
        if self.at("ident", "const") and not (self.peek().kind == "punct"
                                               and self.peek().value == "("):
            kw = self.advance()  # 'const(' would be an op named const
            self.parse_const(start, lhs, kw)
            return
        self.parse_node(lhs)

    def parse_const(self, start: _Tok, lhs: list[_Tok], kw: _Tok) -> None:
        g = self.g
        assert g is not None
        if len(lhs) != 1:
            raise self.error("a constant defines exactly one value", start)
        t = self.parse_type()
        dense_tok = self.tok
        self.expect_keyword("dense")
        self.expect_punct("<")
        data = self.parse_dense(t, dense_tok)
        self.expect_punct(">", " to close dense<...>")
        self.check_new(lhs[0])
        v = g.add_constant(data, t.dtype, name=self.name_of(lhs[0]))
        self.define(lhs[0], v)

    def parse_dense(self, t: TensorType, where: _Tok) -> np.ndarray:
        dt = t.dtype
        if self.tok.kind == "hex":
            tok = self.advance()
            digits = tok.value
            want = t.size * dt.itemsize
            if len(digits) != 2 * want:
                raise self.error(f"{format_type(t)} needs {want} bytes ({2 * want} hex digits), "
                                 f"got {len(digits)} hex digits", tok)
            raw = bytes.fromhex(digits)
            if dt.is_bool and any(b > 1 for b in raw):
                raise self.error("bool constant bytes must be 00 or 01", tok)
            arr = np.frombuffer(raw, dtype=dt.np_dtype.newbyteorder("<"))
            return arr.astype(dt.np_dtype).reshape(t.shape)
        flat: list[Any] = []
        first = self.tok
        self.parse_dense_level(t.shape, 0, flat, dt)
        return self.dense_array(flat, t, first)

    def parse_dense_level(self, shape: tuple[int, ...], depth: int, flat: list, dt: DType) -> None:
        if depth == len(shape):
            flat.append(self.parse_scalar(dt))
            return
        open_tok = self.tok
        if not self.at_punct("["):
            if depth == 0 and shape:
                raise self.error(f"expected a nested list of {format_type(TensorType(shape, dt))} "
                                 "elements or a hexadecimal literal, found "
                                 f"{_describe_tok(self.tok)}")
            raise self.error(f"expected '[' (dimension {depth} has size {shape[depth]}), found "
                             f"{_describe_tok(self.tok)}")
        self.advance()
        count = 0
        if not self.at_punct("]"):
            while True:
                if count == shape[depth]:
                    raise self.error(f"too many elements: dimension {depth} has size "
                                     f"{shape[depth]}")
                self.parse_dense_level(shape, depth + 1, flat, dt)
                count += 1
                if not self.accept_punct(","):
                    break
        if not self.at_punct("]"):
            raise self.error(f"expected ',' or ']', found {_describe_tok(self.tok)}")
        if count != shape[depth]:
            raise self.error(f"dimension {depth} has size {shape[depth]} but this list has "
                             f"{count} elements", open_tok)
        self.advance()

    def parse_scalar(self, dt: DType) -> tuple[_Tok, Any]:
        tok = self.tok
        if dt.is_bool:
            if tok.kind == "ident" and tok.value in ("true", "false"):
                self.advance()
                return tok, tok.value == "true"
            raise self.error(f"expected true or false, found {_describe_tok(tok)}")
        if dt.is_int:
            if tok.kind != "int":
                raise self.error(f"expected an integer ({dt.name}), found {_describe_tok(tok)}")
            self.advance()
            info = np.iinfo(dt.np_dtype)
            if not info.min <= tok.value <= info.max:
                raise self.error(f"{tok.value} does not fit {dt.name}", tok)
            return tok, tok.value
        return tok, self.parse_number(f"a number ({dt.name})")

    def dense_array(self, flat: list, t: TensorType, first: _Tok) -> np.ndarray:
        dt = t.dtype
        vals = [v for _, v in flat]
        if dt.is_float:
            arr64 = np.array([float(v) for v in vals], dtype=np.float64)
            with np.errstate(over="ignore", invalid="ignore"):
                arr = arr64.astype(dt.np_dtype)
            bad = np.isinf(arr) & np.isfinite(arr64)
            if bad.any():
                tok = flat[int(np.argmax(bad))][0]
                raise self.error(f"{vals[int(np.argmax(bad))]!r} overflows {dt.name}", tok)
        else:
            arr = np.array(vals, dtype=dt.np_dtype)
        return arr.reshape(t.shape)

    def parse_node(self, lhs: list[_Tok]) -> None:
        g = self.g
        assert g is not None
        op_tok = self.expect("ident", "an op name or 'const'")
        op = op_tok.value
        try:
            opdef = get_op(op)
        except GraphcError as e:
            raise self.error(e.message, op_tok)
        self.expect_punct("(", f" after the op name {op}")
        inputs: list[Value] = []
        if not self.at_punct(")"):
            while True:
                inputs.append(self.expect_ref())
                if not self.accept_punct(","):
                    break
        self.expect_punct(")", " to close the operands")
        attrs: dict[str, Any] = {}
        attr_toks: dict[str, _Tok] = {}
        if self.accept_punct("{"):
            if not self.at_punct("}"):
                while True:
                    atok = self.expect("ident", "an attribute name")
                    if atok.value in attrs:
                        raise self.error(f"attribute {atok.value} given twice", atok)
                    if atok.value not in opdef.attrs:
                        raise self.error(f"op {op} has no attribute {atok.value}; its attributes "
                                         f"are {', '.join(opdef.attrs) or 'none'}", atok)
                    self.expect_punct("=")
                    attr_toks[atok.value] = atok
                    attrs[atok.value] = self.parse_attr_value()
                    if not self.accept_punct(","):
                        break
            self.expect_punct("}", " to close the attributes")
        colon = self.expect_punct(":", " and the result type")
        type_tok = self.tok
        if self.at_punct("("):
            self.advance()
            declared: list[TensorType] = []
            if not self.at_punct(")"):
                while True:
                    declared.append(self.parse_type())
                    if not self.accept_punct(","):
                        break
            self.expect_punct(")")
        else:
            declared = [self.parse_type()]
        group = None
        if self.at("ident", "group"):
            self.advance()
            self.expect_punct("(")
            group = self.expect("int", "a fusion group number").value
            self.expect_punct(")")
        loc = None
        if self.at("ident", "loc"):
            self.advance()
            self.expect_punct("(")
            file = self.parse_string()
            self.expect_punct(":")
            ltok = self.expect("int", "a line number")
            self.expect_punct(")")
            loc = Loc(file, ltok.value)
        seen: set[str] = set()
        for vt in lhs:
            self.check_new(vt)
            if vt.value[0] in seen:
                raise self.error(f"value {self.spelled(vt)} is bound twice", vt)
            seen.add(vt.value[0])
        try:
            node = g.add_node(op, inputs, attrs, loc)
        except GraphcError as e:
            where = op_tok
            for k, atok in attr_toks.items():
                if f"attribute {k}=" in e.message or f"attribute {k} " in e.message:
                    where = atok
            msg = e.message if op in e.message else f"{op}: {e.message}"
            raise self.error(msg, where)
        except Exception as e:  # noqa: BLE001 - a registry function that crashed
            raise self.error(f"{op}: the op's checks failed on these operands and attributes "
                             f"({type(e).__name__}: {e})", op_tok)
        inferred = [v.type for v in node.outputs]
        if len(lhs) != len(inferred):
            g.nodes.pop()
            raise self.error(f"{op} has {len(inferred)} result{'s' * (len(inferred) != 1)} but "
                             f"{len(lhs)} name{'s' * (len(lhs) != 1)} {'are' if len(lhs) != 1 else 'is'}"
                             " bound", lhs[0] if lhs else colon)
        if declared != inferred:
            g.nodes.pop()

            def show(ts: list[TensorType]) -> str:
                return format_type(ts[0]) if len(ts) == 1 else \
                    "(" + ", ".join(format_type(x) for x in ts) + ")"
            raise self.error(f"declared {show(declared)} but {op} infers {show(inferred)}", type_tok)
        node.group = group
        for vt, v in zip(lhs, node.outputs):
            v.name = self.name_of(vt)
            self.define(vt, v)

    def parse_attr_value(self) -> Any:
        tok = self.tok
        if tok.kind in ("int", "float"):
            return self.advance().value
        if tok.kind == "string":
            return self.advance().value
        if tok.kind == "ident":
            self.advance()
            if tok.value == "true":
                return True
            if tok.value == "false":
                return False
            if tok.value in ("inf", "nan"):
                return float(tok.value)
            if tok.value in dtypes.BY_NAME:
                return dtypes.BY_NAME[tok.value]
            raise self.error(f"expected an attribute value (number, true/false, \"string\", "
                             f"[list] or dtype), found '{tok.value}'", tok)
        if self.at_punct("["):
            self.advance()
            items: list[Any] = []
            if not self.at_punct("]"):
                while True:
                    items.append(self.parse_number("a number in the list"))
                    if not self.accept_punct(","):
                        break
            self.expect_punct("]", " to close the list")
            return tuple(items)
        raise self.error(f"expected an attribute value, found {_describe_tok(tok)}")

    def parse_return(self) -> None:
        g = self.g
        assert g is not None
        self.expect_keyword("return")
        outs: list[Value] = []
        if self.tok.kind == "value":
            while True:
                outs.append(self.expect_ref())
                if not self.accept_punct(","):
                    break
        g.set_outputs(outs)
        if self.at("ident", "updates"):
            self.advance()
            self.expect_punct("(")
            updates: dict[str, Value] = {}
            if not self.at_punct(")"):
                while True:
                    ktok = self.expect("value", "a parameter (%name = %value)")
                    p = self.lookup(ktok)
                    if p.kind != "param":
                        raise self.error(f"updates: {_describe_tok(ktok)} is not a parameter",
                                         ktok)
                    if p.name in updates:
                        raise self.error(f"updates: parameter %{p.name} updated twice", ktok)
                    self.expect_punct("=")
                    vtok = self.tok
                    v = self.expect_ref()
                    if v.type != p.type:
                        raise self.error(f"updates: %{p.name} is {format_type(p.type)} but the new "
                                         f"value is {format_type(v.type)}", vtok)
                    updates[p.name] = v
                    if not self.accept_punct(","):
                        break
            self.expect_punct(")", " to close updates")
            g.updates = updates


def parse(text: str) -> Graph:
    """Parse the text form back into a Graph; every problem raises ParseError."""
    if not isinstance(text, str):
        raise GraphcError(f"parse() takes the IR text as a str, not {type(text).__name__}")
    p = _Parser(text)
    try:
        return p.parse_graph()
    except ParseError:
        raise
    except RecursionError:  # pragma: no cover - the grammar nests only as deep as a type's rank
        raise p.error("input nests too deeply")
