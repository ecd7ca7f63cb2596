"""A tensor of one graph used while building another is an error at the user's line."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import graphc as gc


def _line_of(marker: str) -> int:
    """The line of this file holding `marker` (so the test does not hard-code numbers)."""
    src = inspect.getsource(inspect.getmodule(_line_of)).splitlines()
    return next(i for i, line in enumerate(src, 1) if marker in line and "_line_of" not in line)


def _graph_a():
    a = gc.Graph("A")
    with a:
        x = gc.placeholder("x", (3,))
        y = x * 2.0
    return a, x, y


def test_a_tensor_of_graph_a_inside_with_b_is_refused_at_the_users_line():
    a, x, y = _graph_a()
    s = y.sum()  # outside any `with`: still graph A
    n_before = len(a.nodes)
    b = gc.Graph("B")
    with b:
        z = gc.placeholder("z", (3,))
        with pytest.raises(gc.BuildError, match=r"graph 'A' is used while building graph 'B'") as e:
            y + 1.0  # MARK-unary
        assert e.value.loc.line == _line_of("MARK-unary") and e.value.loc.file.endswith("test_cross_graph.py")
        with pytest.raises(gc.BuildError, match="different graphs"):
            z + y  # two graphs' tensors in one op
        with pytest.raises(gc.BuildError, match="used while building"):
            gc.relu(x)
        with pytest.raises(gc.BuildError, match="used while building"):
            gc.grad(s, [x])
    assert len(a.nodes) == n_before  # nothing was silently added to A


def test_outside_any_with_ops_still_go_to_their_tensors_graph():
    a, x, y = _graph_a()
    w = y + 1.0  # no active graph: the operands' graph is the one
    assert w.graph is a
    exe = gc.compile(a, [w], backend="reference")
    np.testing.assert_allclose(exe(np.arange(3, dtype=np.float32))[0], np.arange(3) * 2 + 1)


def test_compiling_or_setting_another_graphs_tensor_as_output_points_at_the_line():
    a, x, y = _graph_a()
    b = gc.Graph("B")
    with b:
        gc.placeholder("z", (3,))
    with pytest.raises(gc.BuildError, match="belongs to graph 'A', not 'B'") as e:
        gc.compile(b, [y], backend="reference")  # MARK-compile
    assert e.value.loc.line == _line_of("MARK-compile")
    with pytest.raises(gc.BuildError, match="belongs to graph 'A'") as e:
        b.set_outputs([y])  # MARK-set
    assert e.value.loc.line == _line_of("MARK-set")


def test_a_layer_built_in_one_graph_cannot_be_applied_in_another():
    a = gc.Graph("A")
    with a:
        layer = gc.nn.Linear(3, 2)
    b = gc.Graph("B")
    with b:
        x = gc.placeholder("x", (4, 3))
        with pytest.raises(gc.BuildError, match="different graphs"):
            layer(x)
