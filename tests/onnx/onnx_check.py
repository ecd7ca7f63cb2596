"""One-node ONNX models run through graphc and through onnx's ReferenceEvaluator (the
oracle for the decomposed-op tests)."""
from __future__ import annotations

from typing import Any

import numpy as np

import graphc as gc

_ELEM = {np.dtype(np.float32): 1, np.dtype(np.float64): 11, np.dtype(np.float16): 10,
         np.dtype(np.int32): 6, np.dtype(np.int64): 7, np.dtype(np.bool_): 9}


def model(op: str, inputs: dict[str, np.ndarray | None], attrs: dict[str, Any] | None = None,
          n_out: int = 1, opset: int = 23, consts: dict[str, np.ndarray] | None = None,
          out_names: list[str] | None = None, out_like: list[np.ndarray] | None = None):
    """A one-node model; `inputs` in the op's input order (None: an omitted optional input),
    `consts` become initialisers (constant inputs such as axes or sizes); outputs are
    declared with the dtype and shape of `out_like` (float and unknown shape without)."""
    from onnx import helper, numpy_helper
    consts = consts or {}
    names = [n if (a is not None or n in consts) else "" for n, a in inputs.items()]
    outs = out_names or [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    vis = [helper.make_tensor_value_info(n, _ELEM[np.asarray(a).dtype], np.shape(a))
           for n, a in inputs.items() if a is not None and n not in consts]
    like = out_like or [np.zeros((), np.float32) for o in outs if o]
    outs_vi = [helper.make_tensor_value_info(o, _ELEM[np.asarray(a).dtype],
                                             np.shape(a) if out_like else None)
               for o, a in zip([o for o in outs if o], like)]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()]
    g = helper.make_graph([node], "t", vis, outs_vi, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    if out_like is None:  # declare the outputs as the ReferenceEvaluator computes them
        feeds = {n: np.asarray(a) for n, a in inputs.items() if a is not None and n not in consts}
        return model(op, inputs, attrs, n_out, opset, consts, out_names, expected(m, feeds))
    return m


def expected(m, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator
    return [np.asarray(o) for o in ReferenceEvaluator(m).run(None, feeds)]


def run(m, feeds: dict[str, np.ndarray], backend: str = "reference") -> list[np.ndarray]:
    g = gc.onnx.load(m)
    exe = gc.compile(g, backend=backend)
    if isinstance(g, gc.ir.Graph):
        res = exe(**{v.name: feeds[v.name] for v in g.inputs})
    else:  # a model specialised on input values (shape-like inputs): called as a user does
        res = exe(**feeds)
    return list(res) if isinstance(res, tuple) else [res]


def check(op: str, inputs: dict[str, np.ndarray | None], attrs: dict[str, Any] | None = None,
          *, n_out: int = 1, opset: int = 23, consts: dict[str, np.ndarray] | None = None,
          rtol: float = 1e-5, atol: float = 1e-6, backend: str = "reference",
          out_names: list[str] | None = None, want: list[np.ndarray] | None = None) -> None:
    """graphc's outputs equal the ReferenceEvaluator's (or `want`): same dtype and shape,
    values to rtol/atol (exactly for integers and bools, NaN where NaN)."""
    consts = consts or {}
    m = model(op, inputs, attrs, n_out, opset, consts, out_names)
    feeds = {n: np.asarray(a) for n, a in inputs.items() if a is not None and n not in consts}
    want = expected(m, feeds) if want is None else want
    got = run(m, feeds, backend)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.dtype, g.shape, w.dtype, w.shape)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        else:
            np.testing.assert_array_equal(g, w)
