"""The verifier: valid graphs pass; each kind of malformed graph is reported clearly."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from graphc.ir import Graph, Loc, TensorType, Value, VerificationError, verify
from graphc.ir.graph import Node
from graphc.ir.verify import problems
from tests.ir.random_graphs import random_graphs


def t(shape, dt="f32") -> TensorType:
    return TensorType(tuple(shape), dt)


def sample() -> Graph:
    """x -> %0 = neg -> %1 = add(%0, w) -> %2 = mul(%1, c) -> %3 = sum; updates w."""
    g = Graph("sample")
    x = g.add_input("x", t((2, 3)))
    w = g.add_param("w", t((2, 3)))
    c = g.add_constant(np.float32(2.0), name="two")
    a = g.add_node("neg", [x], {}, Loc("model.py", 10)).output
    b = g.add_node("add", [a, w], {}, Loc("model.py", 11)).output
    m = g.add_node("mul", [b, c], {}, Loc("model.py", 12)).output
    s = g.add_node("sum", [m], {"axes": (0, 1)}, Loc("model.py", 13)).output
    g.set_outputs([s])
    g.updates = {"w": b}
    return g


def reject(g: Graph, *patterns: str) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        verify(g)
    msg = str(info.value)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in:\n{msg}"
    return info.value


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_sample_is_valid():
    g = sample()
    verify(g)
    g.verify()
    assert problems(g) == []


@SETTINGS
@given(random_graphs(max_nodes=12, updates=True, fancy_names=True,
                     dtypes=("f32", "f64", "i32", "bool")))
def test_random_graphs_verify(g):
    verify(g)
    verify(g.copy())


# --- definitions and uses --------------------------------------------------------------------

def test_operand_from_another_graph():
    g = sample()
    other = Graph("other")
    foreign = other.add_input("x", t((2, 3)))
    g.nodes[1].inputs[0] = foreign
    e = reject(g, r"operand 0 %x: f32\[2,3\] is not defined in this graph \(an input not in this "
                  r"graph\)", r"node 1 `%1 = add\(%\"\?undefined.v\d+\", %w\) : f32\[2,3\]` at model.py:11")
    assert e.node is g.nodes[1] and e.loc == Loc("model.py", 11)


def test_dangling_node_output():
    g = sample()
    stray = Graph("g2")
    sx = stray.add_input("x", t((2, 3)))
    g.nodes[2].inputs[0] = stray.add_node("exp", [sx]).output
    reject(g, r"operand 0 .* is not defined in this graph \(an output of a node \(exp\) not in this graph\)",
           r"model.py:12")


def test_use_before_definition_without_cycle():
    g = sample()
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]  # add now comes before the neg it reads
    e = reject(g, r"used before its definition \(it is produced by node 1, scheduled after this "
                  r"node 0\)", r"model.py:11")
    assert "cycle" not in str(e)


def test_cycle_is_reported_as_a_cycle():
    g = sample()
    neg, mul = g.nodes[0], g.nodes[2]
    neg.inputs[0] = mul.output  # neg -> add -> mul -> neg
    e = reject(g, r"cycle: (%\d = \w+\(.*\) : f32\[.*\] -> ){3}%\d = \w+")
    msg = str(e)
    line = next(ln for ln in msg.splitlines() if "cycle:" in ln)
    for op in ("neg", "add", "mul"):
        assert f"= {op}(" in line
    assert "used before" not in msg  # the cycle explains it


def test_self_loop():
    g = sample()
    n = g.nodes[0]
    n.inputs[0] = n.output
    reject(g, r"cycle: %0 = neg\(%0\) : f32\[2,3\] -> %0 = neg\(%0\)")


def test_node_listed_twice():
    g = sample()
    g.nodes.append(g.nodes[0])
    reject(g, r"listed twice in the schedule \(positions 0 and 4\)")


def test_value_defined_twice():
    g = sample()
    g.inputs.append(g.inputs[0])
    reject(g, r"defined twice: as input 0 and as input 1")
    g = sample()
    g.nodes[1].outputs = [g.nodes[0].output]  # two nodes claim the same value
    reject(g, r"already defined as output 0 of node 0",
           r"not defined in this graph \(its producer, node 1 \(add\), does not list it")
    g = sample()
    g.constants.append(g.inputs[0])
    reject(g, r"defined twice: as input 0 and as constant 1")


def test_producer_and_index_inconsistent():
    g = sample()
    g.nodes[0].output.producer = None
    reject(g, r"output 0 %v\d+: f32\[2,3\] names no producer instead of this node")
    g = sample()
    g.nodes[3].output.index = 2
    reject(g, r"output 0 .* has index 2", r"model.py:13")
    g = sample()
    g.nodes[0].output.kind = "input"
    reject(g, r"output 0 has kind 'input', expected 'node'")
    g = sample()
    g.inputs[0].producer = g.nodes[0]
    reject(g, r"input 0 %x: f32\[2,3\] has a producer node \(neg\)")


# --- ops, attributes, types ------------------------------------------------------------------

def test_unknown_op():
    g = sample()
    g.nodes[0].op = "negg"
    reject(g, r"unknown op 'negg'; did you mean neg", r"model.py:10")


def test_attrs_that_do_not_check():
    g = sample()
    del g.nodes[3].attrs["axes"]
    reject(g, r"bad attributes: op sum needs attribute axes", r"model.py:13")
    g = sample()
    g.nodes[3].attrs["axis"] = 0
    reject(g, r"bad attributes: op sum has no attribute axis")
    g = sample()
    g.nodes[3].attrs["keepdims"] = "yes"
    reject(g, r"bad attributes: attribute keepdims='yes': expected true or false")
    g = sample()
    g.nodes[3].attrs = None
    reject(g, r"attrs is a NoneType, not a dict")


def test_attrs_that_are_not_canonical():
    g = sample()
    g.nodes[3].attrs["axes"] = [0, 1]  # a list, not a tuple
    reject(g, r"attribute axes=\[0, 1\] is not canonical \(expected \(0, 1\)\)")
    g = sample()
    del g.nodes[3].attrs["keepdims"]  # defaults must be filled in
    reject(g, r"attribute keepdims is missing")
    g = Graph("g")
    x = g.add_input("x", t((2,)))
    g.add_node("leaky_relu", [x], {"alpha": 0.5})
    g.nodes[0].attrs["alpha"] = 1  # int where the schema says float
    reject(g, r"attribute alpha=1 is not canonical \(expected 1.0\)")
    g = Graph("g")
    x = g.add_input("x", t((2,)))
    g.add_node("cast", [x], {"to": "i32"})
    g.nodes[0].attrs["to"] = "i32"  # a str, not a DType
    reject(g, r"attribute to='i32' is not canonical")


def test_output_type_differs_from_inference():
    g = sample()
    g.nodes[1].output.type = t((3, 2))
    reject(g, r"output types \(f32\[3,2\]\) differ from inferred \(f32\[2,3\]\)", r"model.py:11")


def test_operands_that_no_longer_fit():
    g = sample()
    g.inputs[0].type = t((5, 7))  # neg still fine (but its output type now differs); add is not
    reject(g, r"differ from inferred \(f32\[5,7\]\)")
    g = sample()
    g.nodes[1].inputs.append(g.inputs[0])
    reject(g, r"operands no longer fit the op: op add takes 2 inputs, got 3")


def test_wrong_number_of_outputs():
    g = sample()
    n = g.nodes[0]
    n.outputs.append(Value(t((2, 3)), "node", producer=n, index=1))
    reject(g, r"output types \(f32\[2,3\], f32\[2,3\]\) differ from inferred \(f32\[2,3\]\)")


def test_bad_loc_and_non_values():
    g = sample()
    g.nodes[0].loc = "model.py:3"
    reject(g, r"loc is a str, not a Loc")
    g = sample()
    g.nodes[0].inputs[0] = np.zeros(3)
    reject(g, r"operand 0 is a ndarray, not a Value")
    g = sample()
    g.nodes.append("neg")
    reject(g, r"schedule entry 4 is a str, not a Node")


# --- graph outputs and updates ----------------------------------------------------------------

def test_output_not_defined():
    g = sample()
    g.outputs.append(Graph("o").add_input("y", t(())))
    reject(g, r"graph output 1 %y: f32\[\] is not defined in this graph")


def test_update_of_non_parameter():
    g = sample()
    g.updates["x"] = g.nodes[0].output
    reject(g, r"update of 'x', which is not a parameter \(parameters: w\)")


def test_update_with_wrong_type():
    g = sample()
    g.updates["w"] = g.nodes[3].output
    reject(g, r"update of parameter 'w': new value is f32\[\], parameter is f32\[2,3\]")


def test_update_value_not_defined():
    g = sample()
    g.updates["w"] = Graph("o").add_input("q", t((2, 3)))
    reject(g, r"update of 'w': value %q: f32\[2,3\] is not defined in this graph")


# --- names and sources -------------------------------------------------------------------------

def test_duplicate_names():
    g = sample()
    g.params[0].name = "x"
    reject(g, r"duplicate name 'x': input 0 and parameter 0")
    g = sample()
    g.constants[0].name = "w"
    reject(g, r"duplicate name 'w': parameter 0 and constant 0")


def test_constant_data_must_match_type():
    g = sample()
    g.constants[0].data = np.zeros((2,), np.float32)
    reject(g, r"constant 0 %two: f32\[\]: data is float32\[2\], type says f32\[\]")
    g = sample()
    g.constants[0].data = None
    reject(g, r"constant 0 .* has no data array")


def test_wrong_source_kind():
    g = sample()
    g.params[0].kind = "input"
    reject(g, r"parameter 0 %w: f32\[2,3\] has kind 'input', expected 'param'")


# --- reporting ------------------------------------------------------------------------------

def test_all_problems_are_collected():
    g = sample()
    g.nodes[0].op = "nope"
    g.nodes[3].attrs["axes"] = [0, 1]
    g.updates["zz"] = g.nodes[0].output
    e = reject(g, r"malformed \(3 problems\)", r"unknown op 'nope'", r"axes=\[0, 1\] is not canonical",
               r"update of 'zz'")
    assert len(e.problems) == 3
    assert e.node is g.nodes[0]


def test_verify_on_copy_of_broken_graph_still_reports():
    g = sample()
    g.nodes[2].op = "div"  # still valid: div has the same signature
    verify(g)
    g.nodes[2].output.type = t((2, 3), "f64")
    reject(g, r"div\(")


def test_node_constructed_by_hand_is_checked():
    g = sample()
    x = g.inputs[0]
    n = Node("exp", [x], {}, None)
    n.outputs = [Value(t((2, 3)), "node", producer=n, index=0)]
    g.nodes.append(n)
    verify(g)  # a correct hand-made node is fine
    n.outputs[0].type = t((2, 3), "f16")
    reject(g, r"differ from inferred")
