"""Models that compile per call (issue 17): symbolic dimensions (a dynamic batch) and inputs
that feed shapes, axes, sizes or pads load as a gc.onnx.DynamicModel; gc.compile gives an
executable that specialises on the inputs' shapes and those inputs' values, caches each
specialisation and logs a new one on the `graphc.jit` logger. Outputs are checked against
onnx's ReferenceEvaluator, numpy, and the ONNX Runtime outputs stored with the models."""
from __future__ import annotations

import logging
import pathlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import graphc as gc  # noqa: E402
from graphc.backends import available_backends  # noqa: E402
from graphc.onnx import UnsupportedOnnxError  # noqa: E402

MODELS = pathlib.Path(__file__).resolve().parent / "models"
F32, I64 = TensorProto.FLOAT, TensorProto.INT64
RNG = np.random.default_rng(7)
llvm = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")


def _vi(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def _model(nodes, inputs, outputs, opset, inits=()):
    g = helper.make_graph(nodes, "m", inputs, outputs,
                          [numpy_helper.from_array(a, n) for n, a in dict(inits).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _check(exe, model, feeds, rtol=1e-5):
    got = exe(**feeds)
    want = ReferenceEvaluator(model).run(None, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-5)


def _torch_like(opset):
    """What torch.onnx.export writes for conv -> relu -> x.view(x.size(0), -1) -> linear ->
    softmax with dynamic_axes={'input': {0: 'batch'}}: the batch is a dim_param and the
    view's shape is computed from Shape(x)."""
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = RNG.standard_normal((4 * 6 * 6, 5)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["r", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["output"], axis=-1)]
    inits = {"w": w, "fc": fc, "zero": np.array(0, np.int64), "ax": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64)}
    return _model(nodes, [_vi("input", F32, ["batch", 3, 6, 6])],
                  [_vi("output", F32, ["batch", 5])], opset, inits)


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_a_dynamic_batch_imports_without_arguments_and_runs_at_any_batch(opset):
    m = _torch_like(opset)
    model = gc.onnx.load(m)
    assert isinstance(model, gc.onnx.DynamicModel) and model.symbolic == {
        "input": ["batch", 3, 6, 6]}
    exe = gc.compile(model, backend="reference")
    for batch in (2, 5, 2):
        _check(exe, m, {"input": RNG.standard_normal((batch, 3, 6, 6)).astype(np.float32)})
    assert exe.retraces == 1  # batch 5 compiled a second graph; batch 2 again was cached


@llvm
def test_a_new_shape_is_logged_as_a_re_specialisation(caplog):
    m = _torch_like(17)
    exe = gc.compile(gc.onnx.load(m), backend="llvm")
    with caplog.at_level(logging.INFO, logger="graphc.jit"):
        _check(exe, m, {"input": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)})
        assert not [r for r in caplog.records if r.name == "graphc.jit"]
        _check(exe, m, {"input": RNG.standard_normal((3, 3, 6, 6)).astype(np.float32)})
    msgs = [r.getMessage() for r in caplog.records if r.name == "graphc.jit"]
    assert len(msgs) == 1 and "input 'input' shape [1, 3, 6, 6] -> [3, 3, 6, 6]" in msgs[0]


@llvm
def test_a_pytorch_export_made_dynamic_matches_onnx_runtime_at_other_batches():
    """resnet18.onnx (exported with a fixed batch of 2) with its batch made a dim_param,
    as dynamic_axes would: rows of the stored input must give the stored ORT rows."""
    m = onnx.load(MODELS / "resnet18.onnx")
    for vi in (m.graph.input[0], m.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    del m.graph.value_info[:]
    stored = np.load(MODELS / "resnet18.npz")
    exe = gc.compile(gc.onnx.load(m), backend="llvm")
    for rows in ([1], [1, 0, 1]):
        (y,) = exe(input=stored["input"][rows])
        np.testing.assert_allclose(y, stored["ort"][rows], rtol=1e-4, atol=1e-4)
    assert exe.retraces == 1


def test_a_shape_input_is_specialised_by_value():
    m = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
               [_vi("x", F32, [2, 6]), _vi("shape", I64, [2])], [_vi("y", F32, [None, None])], 14)
    model = gc.onnx.load(m)
    assert model.value_inputs == {"shape"} and not model.symbolic
    exe = gc.compile(model, backend="reference")
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    for shape in ([3, 4], [12, 1], [3, 4], [-1, 2]):
        (y,) = exe(x=x, shape=np.array(shape, np.int64))
        np.testing.assert_array_equal(y, x.reshape(shape))
    assert exe.retraces == 2  # [3, 4] came back from the cache


# One model per shape-like operand, each fed as a graph input (as ONNX's node tests do).
_SHAPE_INPUTS = {
    "Slice": ([helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])],
              {"starts": [1, 0], "ends": [4, 5], "axes": [1, 2], "steps": [2, 2]}, 3),
    "Unsqueeze": ([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], {"axes": [0, -1]}, 5),
    "Squeeze": ([helper.make_node("Unsqueeze", ["x", "one"], ["u"]),
                 helper.make_node("Squeeze", ["u", "axes"], ["y"])], {"axes": [1]}, 3),
    "Pad": ([helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")],
            {"pads": [0, 1, 2, 0, 2, 1]}, 3),
    "Expand": ([helper.make_node("Expand", ["x", "shape"], ["y"])], {"shape": [2, 1, 1, 1]}, 4),
    "Tile": ([helper.make_node("Tile", ["x", "repeats"], ["y"])], {"repeats": [1, 2, 3]}, 3),
    "Split": ([helper.make_node("Split", ["x", "split"], ["y", "z"], axis=2)],
              {"split": [2, 3]}, 3),
    "ReduceSum": ([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
                  {"axes": [0, 2]}, 1),
    "ConstantOfShape": ([helper.make_node("ConstantOfShape", ["shape"], ["c"]),
                         helper.make_node("Add", ["x", "c"], ["y"])], {"shape": [4, 5]}, 3),
    "Range": ([helper.make_node("Range", ["start", "limit", "delta"], ["r"]),
               helper.make_node("Cast", ["r"], ["rf"], to=F32),
               helper.make_node("Add", ["x", "rf"], ["y"])],
              {"start": 0, "limit": 10, "delta": 2}, 3),
    "TopK": ([helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=-1)], {"k": [2]}, 3),
}


@pytest.mark.parametrize("op", sorted(_SHAPE_INPUTS))
def test_every_shape_like_operand_may_be_a_graph_input(op):
    nodes, values, rank = _SHAPE_INPUTS[op]
    if any(n.op_type not in gc.onnx.supported_ops(18) for n in nodes):
        pytest.skip(f"{op} is not imported yet")
    x = RNG.standard_normal((3, 4, 5)).astype(np.float32)
    feeds = {"x": x} | {k: np.array(v, np.int64) for k, v in values.items()}
    inputs = [_vi("x", F32, [3, 4, 5])] + [_vi(k, I64, list(np.shape(v))) for k, v in values.items()]
    outs = [_vi(o, F32 if o != "i" else I64, [None] * rank) for o in nodes[-1].output]
    m = _model(nodes, inputs, outs, 18, {"one": np.array([1], np.int64)})
    model = gc.onnx.load(m)
    # The import stops at a node's first run-time operand; the call finds the others.
    assert isinstance(model, gc.onnx.DynamicModel) and model.value_inputs <= set(values)
    _check(gc.compile(model, backend="reference"), m, feeds)
    assert model.value_inputs == set(values)


def test_call_errors_name_the_input():
    a, b = _vi("a", F32, ["n", 3]), _vi("b", F32, ["n", 3])
    m = _model([helper.make_node("Add", ["a", "b"], ["y"])], [a, b], [_vi("y", F32, ["n", 3])], 17)
    exe = gc.compile(gc.onnx.load(m), backend="reference")
    one = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(exe(a=one, b=one)[0], one + one)
    with pytest.raises(gc.InputError, match=r"input 'b': dimension 0 \('n'\) is 4, but 'n' is 2"):
        exe(a=one, b=np.ones((4, 3), np.float32))
    with pytest.raises(gc.InputError, match=r"dimension 1 is 3 in the model"):
        exe(a=np.ones((2, 4), np.float32), b=np.ones((2, 4), np.float32))
    with pytest.raises(gc.InputError, match="has no input 'c'"):
        exe(a=one, b=one, c=one)
    with pytest.raises(gc.InputError, match="input 'b' is missing"):
        exe(a=one)


def test_explicit_input_shapes_and_constant_inputs_still_give_a_graph():
    m = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
               [_vi("x", F32, ["n", 6]), _vi("shape", I64, [2])], [_vi("y", F32, [None, None])], 14)
    g = gc.onnx.load(m, input_shapes={"x": (2, 6)}, constant_inputs={"shape": [4, 3]})
    assert isinstance(g, gc.ir.Graph) and [v.name for v in g.inputs] == ["x"]
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_array_equal(gc.compile(g, backend="reference")(x=x)[0], x.reshape(4, 3))


def test_a_shape_computed_from_parameters_names_the_way_out():
    # initializers="params" makes float weights parameters; a shape computed from one
    # cannot be specialised on a call's inputs, and the message says what to do instead.
    m = _model([helper.make_node("Cast", ["w"], ["wi"], to=I64),
                helper.make_node("Reshape", ["x", "wi"], ["y"])],
               [_vi("x", F32, [2, 6])], [_vi("y", F32, [None, None])], 14,
               {"w": np.array([3.0, 4.0], np.float32)})
    with pytest.raises(UnsupportedOnnxError, match="initializers='constants'"):
        gc.onnx.load(m, initializers="params")
    g = gc.onnx.load(m)  # the default bakes the weights in: the shape folds
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_array_equal(gc.compile(g, backend="reference")(x=x)[0], x.reshape(3, 4))


def test_graph_uses_of_a_dynamic_model_say_how_to_fix_its_inputs(tmp_path, capsys):
    from graphc.cli import main
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", F32, ["batch", 2])],
               [_vi("y", F32, ["batch", 2])], 17)
    model = gc.onnx.load(m)
    with pytest.raises(gc.onnx.OnnxError, match=r"input 'x' has shape \[batch,2\].*input_shapes"):
        model.nodes
    assert not hasattr(model, "inputs")
    onnx.save(m, tmp_path / "dyn.onnx")
    assert main(["dump", str(tmp_path / "dyn.onnx")]) == 1
    assert "compiles it per call" in capsys.readouterr().err
    g = model.specialize({"x": np.ones((3, 2), np.float32)})  # the graph for given inputs
    assert [v.type.shape for v in g.inputs] == [(3, 2)]


def test_an_operand_computed_from_constants_folds_even_beside_an_input():
    # CastLike(constant, x) reads x only for its dtype: the pad value is still a constant.
    m = _model([helper.make_node("CastLike", ["v", "x"], ["vx"]),
                helper.make_node("Pad", ["x", "pads", "vx"], ["y"])],
               [_vi("x", F32, [2, 3])], [_vi("y", F32, [None, None])], 18,
               {"v": np.array(-2.5, np.float64), "pads": np.array([0, 1, 1, 0], np.int64)})
    g = gc.onnx.load(m)
    assert isinstance(g, gc.ir.Graph)
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    _check(gc.compile(g, backend="reference"), m, {"x": x})
