"""The model's own names (issue 17): an executable takes the ONNX input names
(`gpu_0/data_0`, `0`, `input.1`), returns outputs under the model's output names
(`exe.output_names`), accepts inputs no output needs (and ignores them), and the text IR
of an imported graph round-trips with its quoted names."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import graphc as gc  # noqa: E402
from graphc.backends import available_backends  # noqa: E402

F32 = TensorProto.FLOAT
RNG = np.random.default_rng(3)
BACKENDS = ["reference"] + (["llvm"] if "llvm" in available_backends() else [])


def _vi(name, dims, elem=F32):
    return helper.make_tensor_value_info(name, elem, dims)


def _zoo_like():
    """Names as the model zoo and exporters spell them: a caffe2 'gpu_0/data_0', torch's
    '0' and 'input.1', TensorFlow's 'out:0', a number '495' for an output."""
    w = RNG.standard_normal((4, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["gpu_0/data_0", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "0"], ["495"]),
             helper.make_node("Mul", ["495", "input.1"], ["out:0"])]
    g = helper.make_graph(nodes, "zoo", [_vi("gpu_0/data_0", [2, 4]), _vi("0", [3]),
                                         _vi("input.1", [2, 3]), _vi("unused", [5])],
                          [_vi("495", [2, 3]), _vi("out:0", [2, 3])],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _feeds():
    return {"gpu_0/data_0": RNG.standard_normal((2, 4)).astype(np.float32),
            "0": RNG.standard_normal(3).astype(np.float32),
            "input.1": RNG.standard_normal((2, 3)).astype(np.float32),
            "unused": np.zeros(5, np.float32)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_model_s_own_names_call_the_executable(backend):
    m = _zoo_like()
    exe = gc.compile(gc.onnx.load(m), backend=backend)
    feeds = _feeds()
    want = ReferenceEvaluator(m).run(None, feeds)
    got = exe(**feeds)  # every declared input, 'unused' included (and ignored)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert exe.output_names == ["495", "out:0"]
    del feeds["unused"]
    np.testing.assert_allclose(exe(**feeds)[1], want[1], rtol=1e-5, atol=1e-6)
    # The graph's own (identifier) names still work; names the model never declared do not.
    graph_names = {"gpu_0_data_0": feeds["gpu_0/data_0"], "_0": feeds["0"],
                   "input.1": feeds["input.1"]}
    np.testing.assert_allclose(exe(**graph_names)[1], want[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(gc.InputError, match="has no input 'gpu_0/data_1'"):
        exe(**{"gpu_0/data_1": feeds["gpu_0/data_0"]}, **{"0": feeds["0"]})
    with pytest.raises(gc.InputError, match="given twice"):
        exe(feeds["gpu_0/data_0"], **{"gpu_0/data_0": feeds["gpu_0/data_0"]})


def test_the_text_ir_of_an_imported_graph_round_trips_with_quoted_names():
    g = gc.onnx.load(_zoo_like())
    text = g.to_text()
    assert '%"out:0"' in text and '%"495"' in text
    again = gc.parse(text)
    assert again.to_text() == text
    feeds = _feeds()
    a = gc.compile(g, backend="reference")(**feeds)
    b = gc.compile(again, backend="reference")(
        **{"gpu_0_data_0": feeds["gpu_0/data_0"], "_0": feeds["0"], "input.1": feeds["input.1"]})
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_an_output_that_is_an_input_or_repeated_keeps_the_model_s_name():
    nodes = [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Identity", ["r"], ["r2"])]
    m = helper.make_model(helper.make_graph(
        nodes, "ids", [_vi("x", [3])], [_vi("y", [3]), _vi("r", [3]), _vi("r2", [3])]),
        opset_imports=[helper.make_opsetid("", 17)])
    exe = gc.compile(gc.onnx.load(m), backend="reference")
    assert exe.output_names == ["y", "r", "r2"]
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    y, r, r2 = exe(x=x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(r, np.maximum(x, 0))
    np.testing.assert_array_equal(r2, np.maximum(x, 0))


def test_a_dynamic_model_takes_the_model_s_names_too():
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["data/0"], ["prob:0"])], "dyn",
        [_vi("data/0", ["batch", 2]), _vi("spare", [1])], [_vi("prob:0", ["batch", 2])]),
        opset_imports=[helper.make_opsetid("", 17)])
    exe = gc.compile(gc.onnx.load(m), backend="reference")
    assert exe.input_names == ["data/0", "spare"] and exe.output_names == ["prob:0"]
    for batch in (1, 3):
        x = RNG.standard_normal((batch, 2)).astype(np.float32)
        (y,) = exe(**{"data/0": x, "spare": np.zeros(1, np.float32)})
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        np.testing.assert_array_equal(exe(x)[0], np.maximum(x, 0))  # positionally
