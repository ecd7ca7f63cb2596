"""The Executable boundary (argument checks, parameter state, updates, threads) on the
reference backend."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import graphc as gc


def affine_graph():
    g = gc.Graph("affine")
    with g:
        x = gc.placeholder("x", (2, 3), "f32")
        n = gc.placeholder("n", (2,), "i32")
        w = gc.param("w", (3, 4), init=gc.init.normal(0.5, seed=1))
        y = x @ w
        z = y + gc.cast(n, "f32").reshape(2, 1)
    return g, x, n, w, y, z


def test_positional_and_keyword_arguments_agree():
    g, x, n, w, y, z = affine_graph()
    exe = gc.compile(g, [z], backend="reference")
    xv = np.ones((2, 3), np.float32)
    nv = np.array([1, 2], np.int32)
    (a,) = exe(xv, nv)
    (b,) = exe(n=nv, x=xv)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, xv @ exe.params["w"] + nv[:, None], rtol=1e-6)


def test_single_output_is_returned_bare_and_only_needed_inputs_are_asked():
    g, x, n, w, y, z = affine_graph()
    exe = gc.compile(g, y, backend="reference")  # y does not read n
    assert exe.input_names == ["x"]
    out = exe(np.zeros((2, 3), np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (2, 4)
    with pytest.raises(gc.InputError, match="no input 'n'"):
        exe(x=np.zeros((2, 3), np.float32), n=np.zeros(2, np.int32))


@pytest.mark.parametrize("call,match", [
    (lambda e: e(x=np.ones((2, 3))), "missing input n"),
    (lambda e: e(x=np.ones((2, 3)), n=np.ones(2, np.int32), m=1), "no input 'm'"),
    (lambda e: e(np.ones((2, 3)), np.ones(2, np.int32), np.ones(1)), "takes 2 inputs"),
    (lambda e: e(np.ones((2, 3)), x=np.ones((2, 3)), n=np.ones(2, np.int32)), "given twice"),
    (lambda e: e(x=np.ones((3, 2)), n=np.ones(2, np.int32)), r"input 'x': expected shape \(2, 3\)"),
    (lambda e: e(x=np.ones((2, 3)), n=np.ones(2)), "input 'n': expected dtype i32"),
    (lambda e: e(x=np.ones((2, 3), np.int32), n=np.ones(2, np.int32)), "expected dtype f32"),
    (lambda e: e(x=np.ones((2, 3)), n=np.array([1, 2**40])), "do not fit i32"),
    (lambda e: e(x=np.ones((2, 3)), nn=np.ones(2, np.int32)), "did you mean 'n'"),
])
def test_bad_arguments_get_clear_errors(call, match):
    g, *_ = affine_graph()
    exe = gc.compile(g, g.nodes[-1].outputs[0], backend="reference")
    with pytest.raises(gc.InputError, match=match):
        call(exe)


def test_convertible_arguments_are_converted():
    g, x, n, w, y, z = affine_graph()
    exe = gc.compile(g, z, backend="reference")
    xv = np.arange(6, dtype=np.float64).reshape(2, 3)  # f64 data into an f32 input
    nv = [3, 4]                                        # a Python list into an i32 input
    out = exe(xv, nv)
    np.testing.assert_allclose(out, xv.astype(np.float32) @ exe.params["w"] + [[3], [4]], rtol=1e-6)


def test_param_store_checks_assignments_and_outputs_never_alias_state():
    g = gc.Graph("p")
    with g:
        w = gc.param("w", (3,), init=gc.init.zeros())
    exe = gc.compile(g, w, backend="reference")
    exe.params["w"] = [1.0, 2.0, 3.0]
    out = exe()
    np.testing.assert_array_equal(out, [1, 2, 3])
    out[0] = 100.0
    assert exe.params["w"][0] == 1.0
    with pytest.raises(gc.InputError, match="expected shape"):
        exe.params["w"] = np.zeros(4)
    with pytest.raises(gc.InputError, match="no parameter 'v'"):
        exe.params["v"] = np.zeros(3)
    with pytest.raises(gc.InputError, match="no parameter"):
        gc.compile(g, w, params={"v": np.zeros(3)}, backend="reference")


def test_updates_apply_after_each_call():
    g = gc.Graph("counter")
    with g:
        step = gc.placeholder("step", (), "f32")
        acc = gc.param("acc", (), init=gc.init.zeros())
        new = acc + step
    exe = gc.compile(g, [new], updates={acc: new}, backend="reference")
    for k in range(1, 5):
        (v,) = exe(step=np.float32(k))
        assert v == sum(range(1, k + 1)) == exe.params["acc"]


def test_update_type_mismatch_is_rejected():
    g = gc.Graph("bad")
    with g:
        x = gc.placeholder("x", (2,))
        w = gc.param("w", (3,), init=gc.init.zeros())
    with pytest.raises(gc.BuildError, match="new value is f32\\[2\\], parameter is f32\\[3\\]"):
        gc.compile(g, x, updates={w: x}, backend="reference")


def test_concurrent_calls_with_updates_are_serialised():
    g = gc.Graph("counter")
    with g:
        one = gc.placeholder("one", (), "f32")
        acc = gc.param("acc", (), "f64", init=gc.init.zeros())
        new = acc + gc.cast(one, "f64")
    exe = gc.compile(g, [new], updates={acc: new}, backend="reference")
    n_threads, per = 4, 50

    def work():
        for _ in range(per):
            exe(one=np.float32(1))
    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert exe.params["acc"] == n_threads * per


def test_concurrent_pure_calls_return_their_own_results():
    g = gc.Graph("sq")
    with g:
        x = gc.placeholder("x", (100,), "f64")
        y = gc.tanh(x) * x
    exe = gc.compile(g, y, backend="reference")
    results = {}

    def work(k):
        xv = np.full(100, float(k))
        for _ in range(20):
            results[k] = exe(xv)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, r in results.items():
        np.testing.assert_array_equal(r, np.tanh(np.full(100, float(k))) * k)


def test_unknown_backend():
    g, x, *_ = affine_graph()
    with pytest.raises(gc.GraphcError, match="unknown backend 'tpu'"):
        gc.compile(g, x, backend="tpu")


def test_compile_prunes_unused_nodes():
    g, x, n, w, y, z = affine_graph()
    exe = gc.compile(g, y, backend="reference")
    assert [nd.op for nd in exe.graph.nodes] == ["matmul"]
