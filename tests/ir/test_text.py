"""The text IR: printing, parsing, exact round trips, parse errors, and graph comparison."""
from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from graphc.ir import (Graph, GraphcError, Loc, ParseError, TensorType, all_ops, assert_same_graph,
                       parse, print_graph, same_graph, verify)
from graphc.ir.init import (BY_NAME as INIT_BY_NAME, Fill, GlorotUniform, HeNormal, Normal, Ones,
                            Uniform, Zeros)
from graphc.ir.text import DENSE_DECIMAL_MAX, quote, value_names
from tests.ir import random_graphs as rg
from tests.ir.random_graphs import build_random_graph, op_example, random_graphs

ALL_OPS = sorted(all_ops())
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def round_trip(g: Graph) -> Graph:
    """parse(print(g)) is the same graph, printing it again gives the same text, and the
    parsed graph verifies."""
    text = print_graph(g)
    g2 = parse(text)
    diff = same_graph(g, g2, check_names=True)
    assert diff is None, f"{diff}\n{text}"
    assert print_graph(g2) == text
    verify(g2)
    return g2


def t(shape, dt="f32") -> TensorType:
    return TensorType(tuple(shape), dt)


# --- readable syntax (the literal lines are the spec) -------------------------------------

def spec_graph() -> Graph:
    g = Graph("mlp")
    x = g.add_input("x", t((64, 784)))
    g.add_input("t", t((64,), "i32"))
    w1 = g.add_param("w1", t((784, 256)), init=Normal(0.0, 0.05, 0))
    g.add_param("rm", t((16,)), init=Zeros(), trainable=False)
    g.add_param("w2", t((3,)), value=np.ones(3, np.float32))
    g.add_constant(np.float32(2.0))
    g.add_constant(np.arange(40, dtype=np.float32))
    mm = g.add_node("matmul", [x, w1], {}, Loc("mlp.py", 14)).output
    s = g.add_node("sum", [mm], {"axes": (0, 1)}).output
    ge = g.add_node("gelu", [mm], {"approximate": "tanh"}).output
    lr = g.add_node("leaky_relu", [ge], {"alpha": 0.01}).output
    lr2 = g.add_node("leaky_relu", [lr], {"alpha": 0.2}).output
    c = g.add_node("cast", [lr2], {"to": "f16"}).output
    g.set_outputs([s, c])
    g.updates = {"w1": g.add_node("matmul", [x, mm], {"transpose_a": True}).output}
    return g


def test_spec_syntax_lines():
    g = spec_graph()
    text = print_graph(g)
    lines = text.splitlines()
    assert lines[0] == ("graph @mlp(%x: f32[64,784], %t: i32[64]) params(%w1: f32[784,256] = "
                        "normal(0.0, 0.05, seed=0), %rm: f32[16] = zeros() frozen, "
                        "%w2: f32[3] = external) {")
    assert lines[1] == "  %c0 = const f32[] dense<2.0>"
    expected_hex = np.arange(40, dtype="<f4").tobytes().hex()
    assert lines[2] == f"  %c1 = const f32[40] dense<0x{expected_hex}>"
    assert lines[3] == '  %0 = matmul(%x, %w1) : f32[64,256]  loc("mlp.py":14)'
    assert lines[4] == "  %1 = sum(%0) {axes=[0, 1]} : f32[]"
    assert lines[5] == '  %2 = gelu(%0) {approximate="tanh"} : f32[64,256]'
    assert lines[6] == "  %3 = leaky_relu(%2) : f32[64,256]"  # the default alpha is left out
    assert lines[7] == "  %4 = leaky_relu(%3) {alpha=0.2} : f32[64,256]"
    assert lines[8] == "  %5 = cast(%4) {to=f16} : f16[64,256]"
    assert lines[9] == "  %6 = matmul(%x, %0) {transpose_a=true} : f32[784,256]"
    assert lines[10] == "  return %1, %5 updates(%w1 = %6)"
    assert lines[11] == "}"
    assert text.endswith("}\n")
    g2 = round_trip(g)
    assert g2.params[2].init is None and g2.params[1].trainable is False


def test_locs_align_in_one_column():
    g = Graph("m")
    x = g.add_input("x", t((2, 2)))
    a = g.add_node("neg", [x], {}, Loc("a.py", 1)).output
    b = g.add_node("transpose", [a], {"perm": (1, 0)}, Loc("/abs/path/model.py", 20)).output
    g.add_node("neg", [b], {}, None)
    text = print_graph(g)
    cols = {line.index("loc(") for line in text.splitlines() if "loc(" in line}
    assert len(cols) == 1
    assert '  %1 = transpose(%0) {perm=[1, 0]} : f32[2,2]  loc("/abs/path/model.py":20)' in text
    assert "loc(" not in print_graph(g, locs=False)
    round_trip(g)


def test_multi_output_syntax():
    multi = [op for op, d in all_ops().items() if d.num_outputs > 1]
    if not multi:
        pytest.skip("no multi-output op registered")
    for op in multi:
        g = op_example(op)
        assert g is not None, op
        node = g.nodes[0]
        line = next(line for line in print_graph(g).splitlines() if f"= {op}(" in line)
        names = ", ".join(f"%{i}" for i in range(len(node.outputs)))
        types = ", ".join(f"{v.dtype}[{','.join(map(str, v.shape))}]" for v in node.outputs)
        assert line.startswith(f"  {names} = {op}(")
        assert f" : ({types})" in line
        g2 = round_trip(g)
        assert len(g2.nodes[0].outputs) == len(node.outputs)


def test_empty_params_and_updates_are_omitted():
    g = Graph("g")
    x = g.add_input("x", t(()))
    g.set_outputs([g.add_node("exp", [x]).output])
    text = print_graph(g)
    assert text.splitlines()[0] == "graph @g(%x: f32[]) {"
    assert text.splitlines()[-2] == "  return %0"
    round_trip(g)


def test_graph_without_anything():
    g = Graph("empty")
    assert print_graph(g) == "graph @empty() {\n  return\n}\n"
    round_trip(g)


def test_many_arguments_wrap_one_per_line():
    g = Graph("wide")
    for i in range(5):
        g.add_input(f"x{i}", t((2,)))
    for i in range(5):
        g.add_param(f"w{i}", t((2,)), init=Zeros())
    text = print_graph(g)
    assert "\n    %x3: f32[2],\n" in text and "\n    %w4: f32[2] = zeros()\n) {" in text
    round_trip(g)


# --- every op in the registry -----------------------------------------------------------

@pytest.mark.parametrize("op", ALL_OPS)
def test_round_trip_every_op(op):
    g = op_example(op)
    assert g is not None, (f"no valid example found for op {op}: add a recipe in "
                           "graphc/fuzz/graphs.py")
    assert [n.op for n in g.nodes] == [op]
    round_trip(g)


@pytest.mark.parametrize("op", [o for o in ALL_OPS if all_ops()[o].attrs])
def test_every_attribute_round_trips_when_given(op):
    """Examples with attributes set to values other than the defaults, across seeds."""
    seen: set[str] = set()
    for seed in range(12):
        g = op_example(op, seed=seed)
        assert g is not None
        round_trip(g)
        seen |= {k for k, v in g.nodes[0].attrs.items()}
    assert seen == set(all_ops()[op].attrs)


def test_registry_checks_raise_only_graph_errors():
    """Generic, mostly ill-fitting operands and attributes for every op: the registry must
    reject them with a GraphcError (which the parser turns into a ParseError), never crash."""
    crashes: dict[str, str] = {}
    opts = rg.Options(max_rank=4, dtypes=("f32", "f64", "i32", "i64", "bool"))
    for op in ALL_OPS:
        for seed in range(40):
            g = Graph("probe")
            ctx = rg.Ctx(g, rg.RandomChooser(random.Random(f"{op}/{seed}")), opts,
                         fresh_only=seed % 2 == 0)
            ins, attrs = rg.generic_proposal(ctx, op)
            try:
                g.add_node(op, ins, attrs)
            except GraphcError:
                pass
            except Exception as e:  # noqa: BLE001
                types = ", ".join(str(v.type) for v in ins)
                crashes.setdefault(op, f"{op}({types}) {attrs}: {type(e).__name__}: {e}")
    assert not crashes, "registry checks crashed:\n" + "\n".join(crashes.values())


# --- random graphs ------------------------------------------------------------------------

@SETTINGS
@given(random_graphs(max_nodes=10, fancy_names=True, special_values=True, updates=True,
                     dtypes=("f32", "f64", "f16", "i32", "i64", "bool")))
def test_round_trip_random_graphs(g):
    verify(g)
    round_trip(g)


@SETTINGS
@given(random_graphs(max_nodes=6))
def test_round_trip_plain_random_graphs(g):
    round_trip(g)


def test_round_trip_seeded_random_graphs():
    for seed in range(40):
        g = build_random_graph(seed, max_nodes=12, fancy_names=seed % 2 == 0, updates=True,
                               special_values=seed % 3 == 0)
        round_trip(g)


# --- constants ---------------------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1.0, -2.5, np.nan, np.inf, -np.inf, 1e-45, 3.4e38, 0.1, 1 / 3]


@pytest.mark.parametrize("dt", ["f16", "f32", "f64"])
@pytest.mark.parametrize("size", [0, 1, 7, DENSE_DECIMAL_MAX, DENSE_DECIMAL_MAX + 1, 300])
def test_float_constants_exact(dt, size):
    rng = np.random.default_rng(size)
    npdt = np.dtype({"f16": np.float16, "f32": np.float32, "f64": np.float64}[dt])
    with np.errstate(over="ignore"):
        vals = np.array(SPECIAL + list(rng.normal(size=size)), dtype=npdt)[:size]
    g = Graph("c")
    g.add_constant(vals, dt)
    g.add_constant(vals.reshape(-1, 1) if size else vals.reshape(0, 3), dt)
    g.add_constant(npdt.type(-0.0), dt)
    g.add_constant(npdt.type(np.nan), dt)
    g2 = round_trip(g)
    for a, b in zip(g.constants, g2.constants):
        assert a.data.tobytes() == b.data.tobytes()
        assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape
    text = print_graph(g)
    if 0 < size <= DENSE_DECIMAL_MAX:
        assert "dense<[" in text.splitlines()[1]
    elif size > DENSE_DECIMAL_MAX:
        assert "dense<0x" in text.splitlines()[1]
    assert text.splitlines()[3].endswith("dense<-0.0>")
    assert text.splitlines()[4].endswith("dense<nan>")


def test_nan_payloads_and_signs_survive():
    raw = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FC00123], dtype=np.uint32)
    vals = raw.view(np.float32)
    g = Graph("c")
    g.add_constant(vals)
    g2 = round_trip(g)
    assert g2.constants[0].data.view(np.uint32).tolist() == raw.tolist()
    assert "dense<0x" in print_graph(g)  # decimals cannot carry these bits


@pytest.mark.parametrize("dt,values", [
    ("i32", [0, -1, 2**31 - 1, -2**31]),
    ("i64", [0, -1, 2**63 - 1, -2**63]),
    ("bool", [True, False, True]),
])
def test_int_and_bool_constants(dt, values):
    g = Graph("c")
    g.add_constant(np.array(values), dt)
    g.add_constant(np.array(values * 10), dt)
    g.add_constant(np.array(values[0]), dt)
    round_trip(g)
    text = print_graph(g)
    first = text.splitlines()[1]
    if dt == "bool":
        assert first.endswith("dense<[true, false, true]>")
    else:
        assert first.endswith("dense<[" + ", ".join(map(str, values)) + "]>")


def test_nested_decimal_constant():
    g = Graph("c")
    g.add_constant(np.array([[1.5, 2.0], [-3.0, 4.25]], np.float32))
    g.add_constant(np.zeros((2, 0, 3), np.float64))
    lines = print_graph(g).splitlines()
    assert lines[1] == "  %c0 = const f32[2,2] dense<[[1.5, 2.0], [-3.0, 4.25]]>"
    assert lines[2] == "  %c1 = const f64[2,0,3] dense<[[], []]>"
    round_trip(g)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=20),
       st.sampled_from(["f16", "f32", "f64"]))
@SETTINGS
def test_float_constants_property(vals, dt):
    g = Graph("c")
    with np.errstate(over="ignore"):
        g.add_constant(np.array(vals, dtype=np.float64).astype(dt.replace("f", "float")), dt)
    round_trip(g)


# --- names, locs, params --------------------------------------------------------------------

def test_names_needing_quotes_and_anonymous_clashes():
    g = Graph("my graph/v1")
    x = g.add_input("c0", t((2,)))  # looks like an unnamed constant: prints quoted
    y = g.add_input("layer.0_in", t((2,)))
    p = g.add_param("_w.1", t((2,)), init=Ones())
    k = g.add_constant(np.ones(2, np.float32), name="onnx::Add_3")
    u = g.add_constant(np.ones(2, np.float32))  # unnamed, must not be %c0 (taken)
    v = g.add_constant(np.ones(2, np.float32), name="c1")
    a = g.add_node("add", [x, y]).output
    a.name = "0"  # a node output named like an unnamed one
    b = g.add_node("mul", [a, p]).output
    c = g.add_node("sub", [b, k]).output
    c.name = "loss"
    d = g.add_node("add", [c, u]).output
    e = g.add_node("add", [d, v]).output
    g.set_outputs([c, e])
    text = print_graph(g)
    assert text.startswith('graph @"my graph/v1"(%"c0": f32[2], %layer.0_in: f32[2]) '
                           "params(%_w.1: f32[2] = ones()) {")
    names = value_names(g)
    assert names[k] == '%"onnx::Add_3"'
    assert names[v] == '%"c1"'
    assert names[u] == "%c2"  # c0 and c1 are user names
    assert names[a] == '%"0"'
    assert names[b] == "%1" and names[d] == "%2"
    assert names[c] == "%loss"
    g2 = round_trip(g)
    assert [c.name for c in g2.constants] == ["onnx::Add_3", None, "c1"]
    assert g2.nodes[0].outputs[0].name == "0" and g2.nodes[1].outputs[0].name is None


def test_duplicate_user_names_on_node_outputs_become_anonymous():
    g = Graph("g")
    x = g.add_input("x", t((2,)))
    a = g.add_node("neg", [x]).output
    a.name = "x"  # clashes with the input: printed as an unnamed value
    g.set_outputs([a])
    assert "  %0 = neg(%x)" in print_graph(g)
    g2 = parse(print_graph(g))
    assert same_graph(g, g2) is None
    assert g2.nodes[0].outputs[0].name is None


@pytest.mark.parametrize("path", ['we"ird\\dir/m o d.py', "ünïcode/ß.py", "tab\there\nnl.py",
                                  "ctl\x01\x7f.py", "<stdin>", "emoji\U0001F600.py", ""])
def test_locs_with_awkward_paths(path):
    g = Graph("g")
    x = g.add_input("x", t((2,)))
    g.set_outputs([g.add_node("neg", [x], {}, Loc(path, 7)).output])
    text = print_graph(g)
    assert f"loc({quote(path)}:7)" in text
    assert len(text.splitlines()) == 4  # escapes keep the statement on one line
    g2 = round_trip(g)
    assert g2.nodes[0].loc == Loc(path, 7)


def test_quote_escapes():
    assert quote('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    assert quote("\x01") == '"\\x01"'


@pytest.mark.parametrize("init", [Zeros(), Ones(), Fill(-1.5), Fill(float("inf")), Normal(0.1, 2.0, 7),
                                  Uniform(-1.0, 1e-3, 3), HeNormal(4), GlorotUniform(5), None])
@pytest.mark.parametrize("trainable", [True, False])
def test_param_initialisers(init, trainable):
    g = Graph("p")
    g.add_param("w", t((3, 2)), init=init, trainable=trainable)
    text = print_graph(g)
    expected = init.to_text() if init is not None else "external"
    assert f"%w: f32[3,2] = {expected}{'' if trainable else ' frozen'})" in text
    g2 = round_trip(g)
    p = g2.params[0]
    assert (p.init.to_text() if p.init else None) == (init.to_text() if init else None)
    assert p.trainable is trainable


def test_every_initialiser_name_parses():
    for name in INIT_BY_NAME:
        # default arguments: every field of these dataclasses has a default except fill's
        args = "1.0" if name == "fill" else ""
        g = parse(f"graph @g() params(%w: f32[2] = {name}({args})) {{\n  return\n}}\n")
        assert type(g.params[0].init) is INIT_BY_NAME[name]


def test_hand_written_text():
    text = """
    // a comment line
    graph @hand (%x : f32[2, 3] ,%i: i64[2]) params ( %w: f32[3,4], %b: f32[4] = fill(1) ) {
      %k = const f32[] dense<-inf>   // trailing comment
      %h = matmul(%x, %w): f32[2,4]
      %h.b = add(%h, %b) : f32[2,4]  loc("x.py" : 3)
      %7 = gather(%h.b, %i) {} : (f32[2,4])
      return %7
    }"""
    g = parse(text)
    assert g.name == "hand"
    assert g.params[0].init is None and g.params[1].init.to_text() == "fill(1.0)"
    assert g.nodes[1].outputs[0].name == "h.b" and g.nodes[2].outputs[0].name is None
    assert math.isinf(g.constants[0].data) and g.constants[0].name == "k"
    assert g.nodes[1].loc == Loc("x.py", 3)
    verify(g)
    round_trip(g)


# --- parse errors ---------------------------------------------------------------------------

BASE = """graph @m(%x: f32[2,4], %t: i32[2]) params(%w: f32[4,3] = normal(0.0, 0.05, seed=0), %b: f32[3] = zeros() frozen) {
  %c0 = const f32[] dense<2.0>
  %0 = matmul(%x, %w) : f32[2,3]  loc("m.py":3)
  %1 = add(%0, %b) : f32[2,3]
  %2 = sum(%1) {axes=[0, 1]} : f32[]
  return %2 updates(%b = %b)
}
"""

# (text to replace, replacement, regex the message must match, where the error points:
# a substring of the changed text whose first occurrence is at the reported position)
ERRORS = [
    ("matmul(%x", "matmull(%x", r"unknown op 'matmull'; did you mean matmul", "matmull"),
    ("add(%0, %b)", "add(%0, %q)", r"undefined value %q", "%q"),
    ("%1 = add", "%0 = add", r"redefinition of value %0", "%0 = add"),
    ("%c0 = const f32[]", "%x = const f32[]", r"redefinition of value %x", "%x = const"),
    ("%b: f32[3]", "%w: f32[3]", r"redefinition of value %w", "%w: f32[3]"),
    (" : f32[2,3]  loc", " : f33[2,3]  loc", r"unknown dtype 'f33'", "f33"),
    ("%x: f32[2,4]", "%x: f32[2,-4]", r"expected a non-negative dimension", "-4"),
    ("%x: f32[2,4]", "%x: f32(2,4)", r"expected '\['", "(2,4)"),
    ("add(%0, %b)", "add(%0, %b, %b)", r"op add takes 2 inputs, got 3", "add("),
    ("{axes=[0, 1]}", "{axis=[0, 1]}", r"op sum has no attribute axis; its attributes are axes",
     "axis="),
    ("{axes=[0, 1]}", "{axes=[0.5, 1]}", r"sum: attribute axes=.*expected an int", "axes="),
    ("{axes=[0, 1]}", "{axes=[0, 1], keepdims=1}", r"keepdims=1: expected true or false",
     "keepdims"),
    ("{axes=[0, 1]}", "{axes=[0, 1], axes=[0]}", r"attribute axes given twice", "axes=[0]}"),
    ("{axes=[0, 1]}", "{axes=[0, 1], keepdims=maybe}", r"expected an attribute value", "maybe"),
    ("sum(%1) {axes=[0, 1]}", "sum(%1) {axes=[0, 3]}", r"sum: axis 3 is out of range", "sum("),
    ("sum(%1) {axes=[0, 1]}", "sum(%1)", r"op sum needs attribute axes", "sum("),
    ("matmul(%x, %w) : f32[2,3]", "matmul(%x, %w) : f32[3]",
     r"declared f32\[3\] but matmul infers f32\[2,3\]", "f32[3]  loc"),
    ("add(%0, %b) : f32[2,3]", "add(%0, %b) : f64[2,3]",
     r"declared f64\[2,3\] but add infers f32\[2,3\]", "f64"),
    ("%2 = sum", "%2, %3 = sum", r"sum has 1 result but 2 names are bound", "%2, %3"),
    ("}\n", "} extra\n", r"unexpected 'extra' after the end of the graph", "extra"),
    ("}\n", "}\n}\n", r"unexpected '}' after the end", ("}", 1)),
    ('loc("m.py":3)', 'loc("m.py:3)', r"unterminated string", '"m.py:3)'),
    ('loc("m.py":3)', 'loc("m\\q.py":3)', r"bad escape sequence", "\\q"),
    ('loc("m.py":3)', 'loc("m.py":x)', r"expected a line number", "x)"),
    ("dense<2.0>", "dense<[2.0]>", r"expected a number \(f32\)", "[2.0]"),
    ("dense<2.0>", "dense<0x0000>", r"f32\[\] needs 4 bytes \(8 hex digits\), got 4", "0x0000"),
    ("dense<2.0>", "dense<1e999>", r"out of range of a 64-bit float", "1e999"),
    ("dense<2.0>", "dense<2.0.0>", r"malformed number", "2.0.0"),
    ("dense<2.0>", "dense<0x00zz>", r"malformed hexadecimal", "0x00zz"),
    ("%c0 = const f32[] dense<2.0>", "%c0 = const i32[] dense<2.0>", r"expected an integer \(i32\)",
     "2.0"),
    ("%c0 = const f32[] dense<2.0>", "%c0 = const i32[] dense<4294967296>",
     r"4294967296 does not fit i32", "4294967296"),
    ("%c0 = const f32[] dense<2.0>", "%c0 = const f16[] dense<1e6>", r"overflows f16", "1e6"),
    ("%c0 = const f32[] dense<2.0>", "%c0 = const f32[2] dense<[1.0]>",
     r"dimension 0 has size 2 but this list has 1", "[1.0]"),
    ("%c0 = const f32[] dense<2.0>", "%c0 = const f32[1] dense<[1.0, 2.0]>",
     r"too many elements", "2.0]"),
    ("%c0 = const f32[] dense<2.0>", "%c0 = const bool[2] dense<0x0002>",
     r"bool constant bytes must be 00 or 01", "0x0002"),
    ("%c0 = const f32[] dense<2.0>", "%c0, %c1 = const f32[] dense<2.0>",
     r"a constant defines exactly one value", "%c0, %c1"),
    ("updates(%b = %b)", "updates(%x = %b)", r"updates: value %x is not a parameter", "%x = %b"),
    ("updates(%b = %b)", "updates(%b = %0)", r"updates: %b is f32\[3\] but the new value is f32\[2,3\]",
     "%0)"),
    ("updates(%b = %b)", "updates(%b = %b, %b = %b)", r"parameter %b updated twice", "%b = %b)"),
    ("normal(0.0, 0.05, seed=0)", "normal(0.0, 0.05, seed=0.5)",
     r"normal: argument seed must be an integer", "seed=0.5"),
    ("normal(0.0, 0.05, seed=0)", "gauss(0.0)", r"unknown initialiser 'gauss'", "gauss"),
    ("normal(0.0, 0.05, seed=0)", "normal(0.0, 0.05, 0, 1)", r"takes at most 3 arguments",
     "1)"),
    ("normal(0.0, 0.05, seed=0)", "normal(0.0, sd=0.05)", r"normal\(\) has no argument sd",
     "sd="),
    ("normal(0.0, 0.05, seed=0)", "normal(seed=1, 0.0)", r"positional argument after a keyword",
     "0.0)"),
    ("%t: i32[2]", "%1t: i32[2]", r"bad input name", "%1t"),
    ("graph @m", "graf @m", r"expected 'graph'", "graf"),
    ("graph @m", "graph m", r"expected the graph name", "m("),
    ("  return %2", "  %3 = neg(%2) : f32[]\n  retrun %2",
     r"expected a statement \(%name = ...\) or 'return', found 'retrun'", "retrun"),
    ("  return %2 updates(%b = %b)\n", "", r"or 'return', found '}'", "}"),
    ("%0 = matmul", "%0 = const(", r"expected an op name|unknown op 'const'", "const("),
    ("%1 = add(%0, %b)", "%1 = add(%0, %b) # not a comment", r"unexpected character '#'", "#"),
    ("%1 = add(%0, %b)", "%1 = add(%0 %b)", r"expected '\)' to close the operands", "%b)"),
    ("%x: f32[2,4]", "%x: f32[2,4] = zeros()", r"expected '\)' to close the inputs", "= zeros"),
    ("%1 = add", "% = add", r"expected a value name after '%'", "% ="),
]


@pytest.mark.parametrize("old,new,message,where", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_parse_errors(old, new, message, where):
    assert old in BASE
    text = BASE.replace(old, new, 1)
    with pytest.raises(ParseError) as info:
        parse(text)
    e = info.value
    assert re.search(message, e.message), e.message
    where, nth = where if isinstance(where, tuple) else (where, 0)
    pos = BASE.index(old) - 1
    for _ in range(nth + 1):
        pos = text.index(where, pos + 1)
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    assert (e.line, e.col) == (line, col), str(e)
    assert e.source_line == text.split("\n")[line - 1]
    assert f"(line {line}, column {col})" in str(e)
    assert isinstance(e, GraphcError)


def test_base_text_is_valid():
    g = parse(BASE)
    assert print_graph(g) == BASE  # BASE is in canonical form
    verify(g)


def test_every_truncation_is_a_parse_error():
    text = print_graph(spec_graph())
    for n in range(0, len(text) - 1):
        cut = text[:n]
        with pytest.raises(ParseError) as info:
            parse(cut)
        e = info.value
        assert 1 <= e.line <= cut.count("\n") + 1
        assert 1 <= e.col <= len(cut.split("\n")[e.line - 1]) + 1


def test_parse_rejects_non_text():
    with pytest.raises(GraphcError):
        parse(b"graph @g() { return }")  # type: ignore[arg-type]


_FUZZ_TOKENS = ['%', '@', '"', '\\', '(', ')', '[', ']', '{', '}', '<', '>', ',', ':', '=',
                '0x', '-', '.', 'e', '\n', ' ', '//', 'inf', 'nan', 'true', 'f16', 'i64', 'bool',
                'const', 'dense', 'loc', 'return', 'updates', 'params', 'frozen', 'external',
                '%0', '%c0', '%x0', '99999999999999999999', '-1', '1e999', '0.5', 'axes',
                'matmul', 'add', 'normal(', '\x00', 'é', '²', '\\u12', '"a"', '[0, 1]', '%"q"']


@st.composite
def mutated_texts(draw):
    g = build_random_graph(draw(st.integers(0, 60)), max_nodes=5, fancy_names=True,
                           special_values=True, updates=True)
    text = print_graph(g)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 4))
        p = draw(st.integers(0, len(text)))
        q = min(len(text), p + draw(st.integers(0, 8)))
        if kind == 0:
            text = text[:p] + text[q:]
        elif kind == 1:
            text = text[:p] + draw(st.sampled_from(_FUZZ_TOKENS)) + text[p:]
        elif kind == 2:
            text = text[:p] + draw(st.sampled_from(_FUZZ_TOKENS)) + text[q:]
        elif kind == 3:
            text = text[:p] + text[p:q] + text[p:]
        else:
            lines = text.split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_texts())
def test_fuzz_parser_only_raises_parse_errors(text):
    try:
        g = parse(text)
    except ParseError as e:
        assert 1 <= e.line <= text.count("\n") + 1
        assert e.col >= 1
        return
    verify(g)
    again = print_graph(g)
    assert print_graph(parse(again)) == again


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("%@\"\\()[]{}<>,:=0x-.e \nabcfi32graph_")),
               max_size=60))
def test_fuzz_parser_on_arbitrary_text(text):
    try:
        parse(text)
    except ParseError:
        pass


# --- graph comparison ---------------------------------------------------------------------

def test_same_graph_on_copies():
    g = spec_graph()
    assert same_graph(g, g.copy()) is None
    assert same_graph(g, parse(print_graph(g))) is None
    assert_same_graph(g, g.copy())


def _mutations():
    """(description regex, mutate(graph)) pairs: each makes the copy differ in one way."""
    def node(g, op):
        return next(n for n in g.nodes if n.op == op)

    def retype_input(g):
        g.inputs[1].type = t((64,), "i64")

    def swap_operands(g):
        n = node(g, "matmul")
        n.inputs = n.inputs[::-1]

    def data(g):
        g.constants[1].data = g.constants[1].data + 1

    def dtype(g):
        g.constants[0].type = t((), "f64")

    return [
        ("graph names differ", lambda g: setattr(g, "name", "other")),
        ("input 1: names differ", lambda g: setattr(g.inputs[1], "name", "u")),
        ("input 1 .*types differ", retype_input),
        ("number of inputs differs", lambda g: g.inputs.pop()),
        ("parameter 0 .*initialisers differ", lambda g: setattr(g.params[0], "init", Normal(0.0, 0.05, 1))),
        ("parameter 2 .*initialisers differ: external vs zeros", lambda g: setattr(g.params[2], "init", Zeros())),
        ("parameter 1 .*trainable differs", lambda g: setattr(g.params[1], "trainable", True)),
        ("constant 1 .*data differs", data),
        ("constant 0: types differ", dtype),
        ("node 0 differs: operand 0 differs: input 0 vs parameter 0", swap_operands),
        ("node 2 differs: attribute approximate differs", lambda g: node(g, "gelu").attrs.update(approximate="none")),
        ("node 4 differs: attribute alpha differs: 0.2 vs -0.0", lambda g: g.nodes[4].attrs.update(alpha=-0.0)),
        ("node 0 differs: source locations differ", lambda g: setattr(g.nodes[0], "loc", Loc("mlp.py", 15))),
        ("node 0 differs: source locations differ", lambda g: setattr(g.nodes[0], "loc", None)),
        ("node 5 differs: ops differ", lambda g: setattr(g.nodes[5], "op", "stop_gradient")),
        ("node 1 differs: output 0: types differ", lambda g: setattr(g.nodes[1].outputs[0], "type", t((1,)))),
        ("number of nodes differs", lambda g: g.nodes.pop()),
        ("graph output 1 differs: output 0 of node 5 vs output 0 of node 4", lambda g: g.outputs.__setitem__(1, g.nodes[4].outputs[0])),
        ("number of graph outputs differs", lambda g: g.outputs.pop()),
        ("update of 'w1' differs", lambda g: g.updates.__setitem__("w1", g.nodes[0].outputs[0])),
        ("updated parameters differ", lambda g: g.updates.clear()),
    ]


@pytest.mark.parametrize("expected,mutate", _mutations(), ids=[m[0][:30] for m in _mutations()])
def test_same_graph_finds_each_difference(expected, mutate):
    g = spec_graph()
    h = g.copy()
    mutate(h)
    diff = same_graph(g, h)
    assert diff is not None and re.search(expected, diff), diff
    assert same_graph(h, g) is not None
    with pytest.raises(AssertionError, match="graphs differ"):
        assert_same_graph(g, h)


def test_same_graph_names_of_anonymous_values_are_optional():
    g = spec_graph()
    h = g.copy()
    h.nodes[0].outputs[0].name = "mm"
    h.constants[0].name = "two"
    assert same_graph(g, h) is None
    assert "names differ" in same_graph(g, h, check_names=True)


def test_same_graph_param_values():
    g = spec_graph()
    h = g.copy()
    h.param_values = {"w2": np.zeros(3, np.float32)}
    assert same_graph(g, h) is None
    assert "explicit value of parameter 'w2' differs" in same_graph(g, h, check_param_values=True)


def test_same_graph_attrs_compare_strictly():
    g = Graph("g")
    x = g.add_input("x", t((2,)))
    g.add_node("leaky_relu", [x], {"alpha": 0.5})
    h = g.copy()
    h.nodes[0].attrs["alpha"] = 1  # an int, not a float
    assert "attribute alpha differs" in same_graph(g, h)
    g.nodes[0].attrs["alpha"] = float("nan")
    h.nodes[0].attrs["alpha"] = float("nan")
    assert same_graph(g, h) is None
