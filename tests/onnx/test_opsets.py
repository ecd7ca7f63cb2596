"""Old opsets (issue 17): each op whose meaning changed between opsets 7 and 13 is imported
at the model's opset, through the converter registered for it (graphc/onnx/context.py).

The oracle is onnx's own ReferenceEvaluator, which runs each op at the model's opset;
where it does not follow the old definition (Softmax before 13 is per-axis there,
BatchNormalization-7 runs training mode, Upsample is nearest with integer scales only)
the test says so and uses the definition's formula in numpy instead. Graphs run on the
reference backend: what is tested is the import, and each compile costs milliseconds.
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import graphc as gc  # noqa: E402
from graphc.onnx import OnnxError, UnsupportedOnnxError  # noqa: E402
from graphc.onnx import context  # noqa: E402

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
         np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
         np.dtype(np.bool_): TensorProto.BOOL}
RNG = np.random.default_rng(17)


def _model(nodes, inputs, outputs, opset, consts=None):
    """inputs: {name: array} (graph inputs); consts: {name: array} (initialisers);
    outputs: {name: (dtype, rank)}."""
    ins = [helper.make_tensor_value_info(n, _ELEM[a.dtype], a.shape) for n, a in inputs.items()]
    outs = [helper.make_tensor_value_info(n, _ELEM[np.dtype(dt)], [None] * rank)
            for n, (dt, rank) in outputs.items()]
    inits = [numpy_helper.from_array(a, n) for n, a in (consts or {}).items()]
    graph = helper.make_graph(nodes if isinstance(nodes, list) else [nodes], "m", ins, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _graphc(model, feeds):
    exe = gc.compile(gc.onnx.load(model), backend="reference")
    res = exe(**feeds)
    return list(res) if isinstance(res, tuple) else [res]


def _reference(model, feeds):
    return ReferenceEvaluator(model).run(None, feeds)


def _same(model, feeds, rtol=1e-6):
    got, want = _graphc(model, feeds), _reference(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-6)


def _x(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _out(rank, dt=np.float32):
    return {"y": (dt, rank)}


# -- attributes that became inputs ------------------------------------------------------
@pytest.mark.parametrize("opset", [7, 9])
def test_slice_attributes_before_opset_10(opset):
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, -4, 0], ends=[1000, -1, 2],
                            axes=[0, 2, 1])
    _same(_model(node, {"x": _x(3, 4, 5)}, _out(3), opset), {"x": _x(3, 4, 5)})


@pytest.mark.parametrize("opset", [11, 12])
def test_slice_inputs_with_negative_axes_and_steps(opset):
    node = helper.make_node("Slice", ["x", "s", "e", "a", "p"], ["y"])
    consts = {"s": np.array([-1, 0], np.int64), "e": np.array([-1000, 5], np.int64),
              "a": np.array([-1, 0], np.int64), "p": np.array([-2, 2], np.int64)}
    x = _x(3, 4, 5)
    _same(_model(node, {"x": x}, _out(3), opset, consts), {"x": x})


@pytest.mark.parametrize("opset", [7, 11, 12])
def test_split_sizes_as_an_attribute(opset):
    node = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1 if opset < 11 else -2,
                            split=[1, 3, 2])
    x = _x(2, 6, 3)
    outs = {n: (np.float32, 3) for n in "abc"}
    _same(_model(node, {"x": x}, outs, opset), {"x": x})


@pytest.mark.parametrize("opset", [7, 11, 12])
def test_squeeze_and_unsqueeze_axes_as_attributes(opset):
    neg = opset >= 11  # negative axes from opset 11
    nodes = [helper.make_node("Squeeze", ["x"], ["s"], axes=[-3] if neg else [1]),
             helper.make_node("Unsqueeze", ["s"], ["y"], axes=[0, -1] if neg else [0, 4])]
    x = _x(2, 1, 3, 4)
    _same(_model(nodes, {"x": x}, _out(5), opset), {"x": x})


@pytest.mark.parametrize("opset", [7, 11, 12])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2",
                                "ReduceLogSumExp"])
def test_reduction_axes_as_attributes(opset, op):
    node = helper.make_node(op, ["x"], ["y"], axes=[0, -1] if opset >= 11 else [0, 2],
                            keepdims=0)
    x = _x(3, 4, 5)
    _same(_model(node, {"x": x}, _out(1), opset), {"x": x}, rtol=1e-5)


@pytest.mark.parametrize("opset,mode", [(7, "constant"), (9, "reflect"), (9, "edge")])
def test_pad_attributes_before_opset_11(opset, mode):
    node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 2, 1, 0, 1], mode=mode, value=2.5)
    x = _x(2, 3, 4)
    _same(_model(node, {"x": x}, _out(3), opset), {"x": x})


@pytest.mark.parametrize("opset", [11, 12])
def test_pad_inputs_from_opset_11(opset):
    node = helper.make_node("Pad", ["x", "p", "v"], ["y"])
    consts = {"p": np.array([1, 0, 2, 0, 3, 1], np.int64), "v": np.array(-1.5, np.float32)}
    x = _x(2, 3, 4)
    _same(_model(node, {"x": x}, _out(3), opset, consts), {"x": x})


@pytest.mark.parametrize("opset", [7, 9])
def test_clip_bounds_as_attributes(opset):
    nodes = [helper.make_node("Clip", ["x"], ["a"], min=-0.5, max=0.25),
             helper.make_node("Clip", ["x"], ["b"], min=0.1)]  # no max: unbounded above
    x = _x(4, 5)
    _same(_model(nodes, {"x": x}, {"a": (np.float32, 2), "b": (np.float32, 2)}, opset), {"x": x})


@pytest.mark.parametrize("opset", [11, 12])
def test_clip_bounds_as_inputs(opset):
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["a"]),
             helper.make_node("Clip", ["x", "", "hi"], ["b"])]
    consts = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.3, np.float32)}
    x = _x(4, 5)
    _same(_model(nodes, {"x": x}, {"a": (np.float32, 2), "b": (np.float32, 2)}, opset, consts),
          {"x": x})


# -- semantics that changed ---------------------------------------------------------------
def _coerced_softmax(x, axis, log):
    """Softmax-1/11's definition: flatten to 2-D at `axis`, normalise each row."""
    flat = x.reshape(int(np.prod(x.shape[:axis])), -1).astype(np.float64)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    return (np.log(y) if log else y).reshape(x.shape)


@pytest.mark.parametrize("opset", [7, 11, 12])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_before_13_normalises_the_flattened_trailing_axes(opset, op):
    x = _x(2, 3, 4, 5)
    attrs = [{}, {"axis": 2}] + ([{"axis": -3}] if opset >= 11 else [])
    nodes = [helper.make_node(op, ["x"], [f"y{i}"], **a) for i, a in enumerate(attrs)]
    m = _model(nodes, {"x": x}, {f"y{i}": (np.float32, 4) for i in range(len(attrs))}, opset)
    got = _graphc(m, {"x": x})
    for g, a in zip(got, attrs):
        axis = a.get("axis", 1) % 4
        want = _coerced_softmax(x, axis, op == "LogSoftmax")
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)
        # ...which is not the per-axis softmax of opset 13 (so this test can tell them apart)
        per_axis = _reference(_model(helper.make_node(op, ["x"], ["y"], axis=axis),
                                     {"x": x}, _out(4), 13), {"x": x})[0]
        assert not np.allclose(g, per_axis, atol=1e-3)


def test_softmax_at_13_is_per_axis():
    x = _x(2, 3, 4)
    _same(_model(helper.make_node("Softmax", ["x"], ["y"], axis=1), {"x": x}, _out(3), 13),
          {"x": x}, rtol=1e-5)


def _bn(x, scale, bias, mean, var, eps, shape):
    r = lambda v: v.reshape(shape).astype(np.float64)  # noqa: E731
    return (r(scale) * (x - r(mean)) / np.sqrt(r(var) + eps) + r(bias))


@pytest.mark.parametrize("opset,spatial", [(7, 1), (7, 0), (8, 0), (9, None)])
def test_batch_normalization_spatial_attribute(opset, spatial):
    # ReferenceEvaluator runs BatchNormalization-7 in training mode (it reads the old
    # is_test): the inference formula in numpy is the oracle here.
    x = _x(2, 3, 4, 5)
    per = (3,) if spatial in (1, None) else (3, 4, 5)
    scale, bias, mean = _x(*per), _x(*per), _x(*per)
    var = RNG.uniform(0.5, 2.0, per).astype(np.float32)
    attrs = {"epsilon": 1e-3} | ({} if spatial is None else {"spatial": spatial})
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], **attrs)
    m = _model(node, {"x": x}, _out(4), opset, {"s": scale, "b": bias, "m": mean, "v": var})
    (got,) = _graphc(m, {"x": x})
    shape = (1, 3, 1, 1) if len(per) == 1 else (1,) + per
    np.testing.assert_allclose(got, _bn(x, scale, bias, mean, var, 1e-3, shape), rtol=1e-5,
                               atol=1e-5)


def test_batch_normalization_training_outputs_are_refused_clearly():
    x = _x(2, 3, 4)
    p = {k: np.ones(3, np.float32) for k in "sbmv"}
    outs = ["y", "rm", "rv", "sm", "sv"]  # BatchNormalization-7: 1 or 5 outputs
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], outs, spatial=1)
    m = _model(node, {"x": x}, {o: (np.float32, 3 if o == "y" else 1) for o in outs}, 7, p)
    with pytest.raises(UnsupportedOnnxError, match="training outputs"):
        gc.onnx.load(m)


@pytest.mark.parametrize("opset", [7, 9, 11])
def test_dropout_is_the_identity_and_its_mask_type_follows_the_opset(opset):
    node = helper.make_node("Dropout", ["x"], ["y", "mask"], ratio=0.3)
    x = _x(3, 4)
    mask_type = np.float32 if opset < 10 else np.bool_  # Dropout-7's mask is T, -10's bool
    m = _model(node, {"x": x}, {"y": (np.float32, 2), "mask": (mask_type, 2)}, opset)
    y, mask = _graphc(m, {"x": x})
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == mask_type and mask.shape == x.shape and np.all(mask == 1)
    np.testing.assert_array_equal(y, _reference(m, {"x": x})[0])


@pytest.mark.parametrize("opset", [7, 9])
def test_gemm_broadcasts_c(opset):
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=0.5, beta=2.0, transB=1)
    a, b, c = _x(3, 4), _x(5, 4), _x(5)
    _same(_model(node, {"a": a}, _out(2), opset, {"b": b, "c": c}), {"a": a}, rtol=1e-5)


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic_ops_do_not_broadcast_before_opset_8(op):
    xs = {f"x{i}": _x(3, 4) for i in range(3)}
    node = helper.make_node(op, list(xs), ["y"])
    _same(_model(node, xs, _out(2), 7), xs)
    bad = {"x0": _x(3, 4), "x1": _x(4)}
    with pytest.raises(OnnxError, match="no broadcasting before opset 8"):
        gc.onnx.load(_model(helper.make_node(op, list(bad), ["y"]), bad, _out(2), 7))
    _same(_model(helper.make_node(op, list(bad), ["y"]), bad, _out(2), 8), bad)


@pytest.mark.parametrize("opset", [7, 9])
def test_cast_concat_flatten_at_old_opsets(opset):
    x = _x(2, 3, 4)
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT32),
             helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Concat", ["x", "f"], ["c"], axis=1),
             helper.make_node("Flatten", ["c"], ["y"], axis=2)]
    _same(_model(nodes, {"x": x * 3}, _out(2), opset), {"x": x * 3})


def test_cast_to_a_type_name_and_concat_default_axis_at_opset_1_to_5():
    x = _x(2, 3)
    nodes = [helper.make_node("Cast", ["x"], ["d"], to="DOUBLE"),
             helper.make_node("Concat", ["d", "d"], ["y"])]  # Concat-1: axis 1
    (got,) = _graphc(_model(nodes, {"x": x}, _out(2, np.float64), 3), {"x": x})
    np.testing.assert_array_equal(got, np.concatenate([x, x], axis=1).astype(np.float64))


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical_ops_broadcast_at_opset_7(op):
    feeds = {"a": RNG.random((2, 3, 4)) > 0.5, "b": RNG.random((3, 1)) > 0.5}
    _same(_model(helper.make_node(op, ["a", "b"], ["y"]), feeds, _out(3, np.bool_), 7), feeds)


def test_not_at_opset_1():
    feeds = {"a": RNG.random((3, 4)) > 0.5}
    _same(_model(helper.make_node("Not", ["a"], ["y"]), feeds, _out(2, np.bool_), 1), feeds)


def test_older_forms_of_other_ops_are_refused_by_opset():
    x = _x(3)
    m = _model(helper.make_node("Add", ["x", "x"], ["y"]), {"x": x}, _out(1), 6)
    with pytest.raises(UnsupportedOnnxError, match="Add at opset 6 is not supported.*opsets 7 on"):
        gc.onnx.load(m)


# -- Upsample (opsets 7-9) ---------------------------------------------------------------
def _upsample_formula(x, scales, mode):
    """ONNX Runtime's Upsample: out position o reads o / scale (asymmetric)."""
    out = x.astype(np.float64)
    for a, s in enumerate(scales):
        n = out.shape[a]
        pos = np.arange(int(np.floor(n * s))) / s
        if mode == "nearest":
            out = np.take(out, np.minimum(np.floor(pos), n - 1).astype(int), axis=a)
            continue
        pos = np.minimum(pos, n - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        w = (pos - lo).reshape((-1,) + (1,) * (x.ndim - a - 1))
        out = np.take(out, lo, axis=a) * (1 - w) + np.take(out, hi, axis=a) * w
    return out


@pytest.mark.parametrize("opset", [7, 9])
def test_upsample_nearest_with_integer_scales(opset):
    x = _x(1, 2, 3, 4)
    scales = np.array([1, 1, 2, 3], np.float32)
    if opset < 9:
        node = helper.make_node("Upsample", ["x"], ["y"], scales=scales.tolist(), mode="nearest")
        m = _model(node, {"x": x}, _out(4), opset)
        (got,) = _graphc(m, {"x": x})  # ReferenceEvaluator's Upsample reads only Upsample-9
        np.testing.assert_array_equal(got, x.repeat(2, axis=2).repeat(3, axis=3))
    else:
        node = helper.make_node("Upsample", ["x", "s"], ["y"], mode="nearest")
        _same(_model(node, {"x": x}, _out(4), opset, {"s": scales}), {"x": x})


@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize("mode,scales", [("linear", [1, 1, 2, 2.5]), ("nearest", [1, 1, 1.5, 0.5])])
def test_upsample_linear_and_fractional_scales(opset, mode, scales):
    x = _x(1, 2, 3, 4)
    if opset < 9:
        m = _model(helper.make_node("Upsample", ["x"], ["y"], scales=scales, mode=mode),
                   {"x": x}, _out(4), opset)
    else:
        m = _model(helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode), {"x": x},
                   _out(4), opset, {"s": np.array(scales, np.float32)})
    (got,) = _graphc(m, {"x": x})
    want = _upsample_formula(x, scales, mode) if min(scales) >= 1 else None
    if want is None:  # a scale below 1 rounds up: position o reads ceil(o / scale)
        want = x[:, :, np.minimum(np.floor(np.arange(4) / 1.5), 2).astype(int)][..., ::2]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- old forms handed on to the op's new form --------------------------------------------
@pytest.mark.parametrize("opset", [7, 9])
def test_topk_k_attribute_before_opset_10(opset):
    x = _x(3, 6)
    node = helper.make_node("TopK", ["x"], ["v", "i"], k=2, axis=1)
    m = _model(node, {"x": x}, {"v": (np.float32, 2), "i": (np.int64, 2)}, opset)
    if "TopK" not in gc.onnx.supported_ops(10):
        with pytest.raises(UnsupportedOnnxError, match="converts as TopK"):
            gc.onnx.load(m)
        return
    _same(m, {"x": x})


@pytest.mark.parametrize("opset", [9, 10])
def test_scatter_is_scatter_elements(opset):
    data, upd = _x(3, 4), _x(2, 2)
    idx = np.array([[1, 3], [0, 2]], np.int64)
    node = helper.make_node("Scatter", ["d", "i", "u"], ["y"], axis=1)
    m = _model(node, {"d": data, "u": upd}, _out(2), opset, {"i": idx})
    if "ScatterElements" not in gc.onnx.supported_ops(11):
        with pytest.raises(UnsupportedOnnxError, match="converts as ScatterElements"):
            gc.onnx.load(m)
        return
    (got,) = _graphc(m, {"d": data, "u": upd})
    want = data.copy()
    for i in range(2):
        for j in range(2):
            want[i, idx[i, j]] = upd[i, j]  # Scatter-9's definition, axis=1
    np.testing.assert_array_equal(got, want)


# -- the registry and the model's opset --------------------------------------------------
def test_the_narrowest_registered_range_wins_and_ranges_may_not_cross():
    op = "_H4TestOp"
    try:
        context.converter(op)(lambda ctx: "general")
        context.converter(op, until=9)(lambda ctx: "old")
        context.converter(op, since=9, until=9)(lambda ctx: "nine")
        assert [context.converter_for(op, v)(None) for v in (7, 8, 9, 10, 20)] == \
            ["old", "old", "nine", "general", "general"]
        assert context.converter_for(op, 6) is None
        with pytest.raises(AssertionError, match="two converters"):
            context.converter(op, since=8, until=12)(lambda ctx: "crossing")
        with pytest.raises(AssertionError, match="two converters"):
            context.converter(op, until=9)(lambda ctx: "again")
    finally:
        context.CONVERTERS.pop(op, None)


def test_a_model_without_a_default_domain_opset_says_so():
    node = helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml")
    graph = helper.make_graph([node], "ml", [helper.make_tensor_value_info("x", 1, [2])],
                              [helper.make_tensor_value_info("y", 1, [2])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 3)])
    with pytest.raises(UnsupportedOnnxError) as e:
        gc.onnx.load(m)
    text = str(e.value)
    assert "imports the opsets of ai.onnx.ml but none of the default domain ai.onnx" in text
    assert "Binarizer (domain ai.onnx.ml) is not supported" in text
