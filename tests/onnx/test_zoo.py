"""The classic model-zoo CNNs at the opsets they shipped with (issue 17): each rebuilt in
tests/onnx/zoo.py with its real topology at small widths, imported as a user would
(`gc.onnx.load(bytes)`, no extra arguments), compiled for llvm and compared with ONNX
Runtime's CPU provider on a seeded input.

Tolerance: 1e-4 relative to the output's largest magnitude (max |got - want| <= 1e-4 *
max |want|): float32 sums of up to a few thousand terms in another order differ by ~1e-6
of the output's scale, and the outputs are softmax probabilities or logits whose
individual small entries carry no meaning of their own. The builders keep the outputs
away from a saturated softmax (one class near 1), which would hide errors upstream; a test
checks that too.
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import graphc as gc  # noqa: E402
from graphc.backends import available_backends  # noqa: E402
from graphc.ir.graph import Graph  # noqa: E402
from tests.onnx import zoo  # noqa: E402

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")

RTOL = 1e-4
# the zoo's opset for each file, as the builders must keep it
OPSETS = {"alexnet": 9, "zfnet512": 8, "vgg16": 9, "resnet50_v1": 7, "resnet50_v2": 7,
          "inception_v1": 9, "inception_v2": 8, "densenet121": 7, "shufflenet": 8,
          "squeezenet1.1": 7}


@pytest.fixture(scope="module")
def built():
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            model, feed = zoo.BUILDERS[name]()
            data = model.SerializeToString()
            sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            cache[name] = (model, data, feed, sess.run(None, feed))
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(zoo.BUILDERS))
def test_zoo_model_matches_onnxruntime(name, built):
    model, data, feed, want = built(name)
    g = gc.onnx.load(data)
    assert isinstance(g, Graph), "a static zoo model should import without specialising"
    exe = gc.compile(g, backend="llvm")
    got = exe(**feed)  # the model's own input name (`gpu_0/data_0` included)
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    assert list(exe.output_names) == [o.name for o in model.graph.output]
    assert len(got) == len(want) == 1
    (g_out,), (w_out,) = got, want
    assert g_out.shape == w_out.shape and g_out.dtype == w_out.dtype == np.float32
    scale = float(np.abs(w_out).max())
    err = float(np.abs(g_out - w_out).max())
    assert err <= RTOL * scale, f"{name}: max error {err:.3g} vs {RTOL} x {scale:.3g}"


@pytest.mark.parametrize("name", list(zoo.BUILDERS))
def test_zoo_model_is_as_shipped(name, built):
    """The rebuilt file keeps what makes the zoo's files old: its opset, IR version 3 with
    the initializers listed as graph inputs, and an output that is not degenerate (a
    saturated softmax or a constant output would match anything upstream)."""
    model, _, _, (want,) = built(name)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSETS[name])]
    assert model.ir_version == 3
    names = {i.name for i in model.graph.input}
    assert {t.name for t in model.graph.initializer} <= names
    flat = want.reshape(-1)
    assert np.isfinite(flat).all() and flat.std() > 1e-3 * np.abs(flat).max()
    if model.graph.node[-1].op_type == "Softmax":
        assert flat.max() < 0.99 and abs(flat.sum() - 1.0) < 1e-4


def test_zoo_set_covers_the_old_op_forms(built):
    """Across the set, the op forms of opsets 7-9 that the zoo's files use appear."""
    seen: set[tuple[str, str]] = set()
    for name in zoo.BUILDERS:
        model = built(name)[0]
        for node in model.graph.node:
            seen.add((node.op_type, ""))
            seen.update((node.op_type, a.name) for a in node.attribute)
            if node.op_type == "Dropout" and len(node.output) > 1:
                seen.add(("Dropout", "mask"))
    want = {("BatchNormalization", "spatial"), ("Reshape", ""), ("Dropout", "mask"),
            ("LRN", "size"), ("Sum", ""), ("Concat", "axis"), ("MaxPool", "pads"),
            ("AveragePool", "pads"), ("GlobalAveragePool", ""), ("Gemm", "transB"),
            ("Softmax", "axis"), ("Transpose", "perm"), ("Flatten", "axis"), ("Add", ""),
            ("Conv", "group")}
    assert want <= seen, want - seen
