"""The ONNX importer's contract: locations that point into the model, one error listing
every unsupported node, clear errors for unreadable files, static-shape folding, the
command line. Small models are built with onnx.helper; results are checked against numpy."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphc as gc  # noqa: E402
from graphc.cli import main  # noqa: E402
from graphc.onnx import OnnxError, UnsupportedOnnxError  # noqa: E402

MODELS = pathlib.Path(__file__).resolve().parent / "models"
F32 = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=17, name="m"):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape, dtype=F32):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_unsupported_nodes_are_all_listed_in_one_error():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("Unique", ["a"], ["b"], name="uniq", axis=1),
             helper.make_node("Gelu", ["a"], ["c"], name="gelu_bad", approximate="cubic"),
             helper.make_node("Det", ["x"], ["d"], name="det")]
    m = _model(nodes, [_vi("x", [3, 3])], [_vi("b", [3, 2]), _vi("c", [3, 3]), _vi("d", [])],
               [], opset=20)
    with pytest.raises(UnsupportedOnnxError) as e:
        gc.onnx.load(m)
    text = str(e.value)
    assert "3 node(s)" in text
    for expected in ("node 1 Unique 'uniq'", "node 2 Gelu 'gelu_bad': approximate='cubic'",
                     "node 3 Det 'det'"):
        assert expected in text
    assert [p[1] for p in e.value.problems] == ["Unique", "Gelu", "Det"]


def test_unsupported_dtypes_and_old_opsets_are_refused_clearly():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2], TensorProto.UINT8)],
               [_vi("y", [2], TensorProto.UINT8)])
    with pytest.raises(UnsupportedOnnxError, match="UINT8"):
        gc.onnx.load(m)
    # Opsets from 7 import (tests/onnx/test_opsets.py); Relu-1/6 before that do not.
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])], opset=5)
    with pytest.raises(UnsupportedOnnxError, match="Relu at opset 5 is not supported"):
        gc.onnx.load(m)


def test_unreadable_files_give_a_clear_error(tmp_path):
    good = (MODELS / "lstm.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good[: len(good) // 2])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00not a model" * 10)
    for path in (cut, junk):
        with pytest.raises(OnnxError, match="not a (readable|valid) ONNX model"):
            gc.onnx.load(path)
    with pytest.raises(OnnxError, match="no such ONNX file"):
        gc.onnx.load(tmp_path / "missing.onnx")


def test_nodes_carry_the_model_location_and_errors_point_at_it(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("MatMul", ["a", "w"], ["y"], name="proj")]
    w = numpy_helper.from_array(np.ones((5, 2), np.float32), "w")  # 4 != 5: a broken model
    path = tmp_path / "bad.onnx"
    onnx.save(_model(nodes, [_vi("x", [3, 4])], [_vi("y", [3, 2])], [w]), path)
    with pytest.raises(gc.ShapeError) as e:
        gc.onnx.load(path)
    assert "bad.onnx[proj]:1" in str(e.value)
    g = gc.onnx.load(MODELS / "transformer.onnx")
    assert str(g.nodes[0].loc).startswith("transformer.onnx[/embed/Gather]:")
    assert 'loc("transformer.onnx[' in g.to_text()


def test_shape_driven_subgraphs_fold_to_constants():
    # y = reshape(x, [shape(x)[0], -1]) spelled the way exporters write it.
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "ax"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    g = gc.onnx.load(_model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", [2, 12])], inits))
    assert [n.op for n in g.nodes] == ["reshape"]
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    (y,) = gc.compile(g, backend="llvm")(x=x)
    np.testing.assert_array_equal(y, x.reshape(2, -1))


def test_symbolic_dimensions_fixed_by_input_shapes():
    # Without input_shapes the model specialises per call (tests/onnx/test_specialise.py).
    m = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [_vi("x", ["batch", 4])],
               [_vi("y", ["batch", 4])])
    assert isinstance(gc.onnx.load(m), gc.onnx.DynamicModel)
    g = gc.onnx.load(m, input_shapes={"x": (3, 4)})
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    (y,) = gc.compile(g, backend="llvm")(x=x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    with pytest.raises(OnnxError, match="not inputs"):
        gc.onnx.load(m, input_shapes={"z": (3, 4)})


def test_cli_dumps_an_onnx_model(capsys):
    assert main(["dump", str(MODELS / "lstm.onnx"), "--format", "summary"]) == 0
    out = capsys.readouterr().out
    assert "1 inputs" in out and "matmul" in out
    assert main(["dump", str(MODELS / "mobilenetv2.onnx")]) == 0
    text = capsys.readouterr().out
    g = gc.parse(text)  # the dump is text IR that parses back
    assert len(g.nodes) == len(gc.onnx.load(MODELS / "mobilenetv2.onnx").nodes)
    assert main(["dump", str(MODELS / "missing.onnx")]) == 1
    assert "no such ONNX file" in capsys.readouterr().err


def test_unreadable_models_are_onnx_errors_naming_the_file(tmp_path):
    """Issue 14 c: whatever the onnx package raises while reading (a missing external-data
    file, protobuf's DecodeError, invalid UTF-8 in a name) is an OnnxError."""
    from onnx.external_data_helper import convert_model_to_external_data
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", [2, 3])],
               [_vi("y", [2, 4])], [w])
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location="weights.bin",
                                   size_threshold=0)
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, str(path))
    assert gc.onnx.load(str(path)).name == "m"
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(OnnxError, match="ext.onnx: its external data cannot be read"):
        gc.onnx.load(str(path))
    with pytest.raises(OnnxError, match="malformed ONNX model bytes"):
        gc.onnx.load(b"\x0a\xff\xff\xff\xff\x0f garbage")
    good = _model([helper.make_node("Relu", ["x"], ["y"], name="n0")], [_vi("x", [2])],
                  [_vi("y", [2])]).SerializeToString()
    damaged = good.replace(b"n0", b"n\xf8")  # the node name is no longer UTF-8
    with pytest.raises(OnnxError, match="not valid UTF-8"):
        gc.onnx.load(damaged)
