"""Artifacts keep the user's output names, `graphc run --params-out` saves trained
parameters, and `gc.load` leaves no library copies behind. Values are compared against the
reference interpreter (or numpy) running the same graph."""
from __future__ import annotations

import gc as pygc
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
from graphc.aot import output_names
from graphc.backends.llvm.shared import _private_dir
from graphc.cli import main

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="AOT export links with the system C compiler")


def _train_graph():
    g = gc.Graph("named")
    with g:
        x = gc.placeholder("x", (3, 4), "f32")
        w = gc.param("w", (4, 2), init=gc.init.normal(0.5, seed=1))
        y = gc.tanh(x @ w)
        loss = (y * y).mean()
        g.set_outputs({"pred": y, "loss": loss, "w": w}, updates=gc.optim.SGD(0.1).updates(loss))
    return g


def test_output_names_are_sanitised_and_unique():
    assert output_names(["loss", None, "loss", "a b/c", ""]) == ["loss", "output1", "loss_1", "a_b_c", "output4"]


def test_graph_outputs_named_by_set_outputs_keep_their_names(tmp_path):
    g = _train_graph()
    assert "%pred = " in g.to_text() and "return %pred, %loss, %w" in g.to_text()  # names live in the IR
    info = gc.export(g, None, str(tmp_path / "named"))
    assert [o["name"] for o in info.manifest["outputs"]] == ["pred", "loss", "w"]
    header = (tmp_path / "named.h").read_text()
    assert "0: pred: f32[3, 2]" in header  # the C API's tables use them too
    exe = gc.load(str(tmp_path / "named"))
    assert exe.output_names == ["pred", "loss", "w"] and not exe.output_dict
    ref = gc.compile(g, backend="reference")
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    for _ in range(2):  # a training step: the same state after each step
        got, want = exe(x), ref(x)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # an executable compiled by gc.compile exports under the same names
    info2 = gc.export(gc.compile(g), None, str(tmp_path / "fromexe"))
    assert [o["name"] for o in info2.manifest["outputs"]] == ["pred", "loss", "w"]


def test_set_outputs_refuses_a_name_taken_or_a_renamed_parameter():
    g = gc.Graph("clash")
    with g:
        x = gc.placeholder("x", (2,))
        w = gc.param("w", (2,), init=gc.init.ones())
        y = x * w
        with pytest.raises(gc.BuildError, match="already a name") as e:
            g.set_outputs({"x": y})
        assert "test_aot_names.py" in str(e.value.loc)
        with pytest.raises(gc.BuildError, match="keeps its own name"):
            g.set_outputs({"weights": w})


def test_a_jitted_dict_result_loads_as_the_same_dict(tmp_path):
    @gc.jit
    def f(x, w):
        h = x @ w
        return {"logits": h, "stats": (h.max(), np.tanh(h).sum())}

    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    info = gc.export(f, (x, w), str(tmp_path / "jd"))
    assert [o["name"] for o in info.manifest["outputs"]] == ["logits", "stats.0", "stats.1"]
    exe = gc.load(str(tmp_path / "jd"))
    got = exe(x, w)
    assert list(got) == ["logits", "stats.0", "stats.1"]
    h = x @ w
    np.testing.assert_allclose(got["logits"], h, rtol=1e-5)
    np.testing.assert_allclose(got["stats.0"], h.max(), rtol=1e-5)
    np.testing.assert_allclose(got["stats.1"], np.tanh(h).sum(), rtol=1e-4)
    # a tuple result stays a tuple, its outputs named by position
    tup = gc.export(gc.jit(lambda x: (x + 1, x * 2)), (x,), str(tmp_path / "jt"))
    assert [o["name"] for o in tup.manifest["outputs"]] == ["output0", "output1"]
    a, b = gc.load(str(tmp_path / "jt"))(x)
    np.testing.assert_allclose(a, x + 1)
    np.testing.assert_allclose(b, x * 2)


MODEL = textwrap.dedent("""
    import graphc as gc

    def build():
        g = gc.Graph("trainme")
        with g:
            x = gc.placeholder("x", (3, 4), "f32")
            w = gc.param("w", (4, 2), init=gc.init.normal(0.5, seed=1))
            loss = (gc.tanh(x @ w) ** 2.0).mean()
            g.set_outputs({"loss": loss}, updates=gc.optim.SGD(0.1).updates(loss))
        return g
""")


def test_graphc_run_writes_the_trained_parameters(tmp_path, capsys):
    (tmp_path / "model.py").write_text(MODEL)
    art = str(tmp_path / "trainme")
    assert main(["compile", f"{tmp_path / 'model.py'}:build", "-o", art]) == 0
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", art, "--inputs", str(tmp_path / "in.npz"), "--steps", "3",
                 "--out", str(tmp_path / "o.npz"), "--params-out", str(tmp_path / "p.npz")]) == 0
    assert "loss: float32" in capsys.readouterr().out  # printed under the user's name
    ns: dict = {}
    exec(MODEL, ns)
    ref = gc.compile(ns["build"](), backend="reference")
    for _ in range(3):
        (loss,) = ref(x)
    with np.load(tmp_path / "p.npz") as p, np.load(tmp_path / "o.npz") as o:
        assert sorted(p.files) == sorted(ref.params)
        np.testing.assert_allclose(p["w"], ref.params["w"], rtol=1e-5, atol=1e-6)
        assert not np.allclose(p["w"], gc.compile(ns["build"](), backend="reference").params["w"])
        np.testing.assert_allclose(o["loss"], loss, rtol=1e-5)
    assert main(["run", art, "--inputs", str(tmp_path / "in.npz"),
                 "--params-out", str(tmp_path / "no" / "dir" / "p.npz")]) == 1
    assert "cannot write" in capsys.readouterr().err


def _copies() -> set[str]:
    return {e for e in os.listdir(_private_dir()) if e.endswith(".so")}


def test_load_leaves_no_library_copy(tmp_path):
    g = gc.Graph("clean")
    with g:
        x = gc.placeholder("x", (4,))
        g.set_outputs([x * 3.0 + 1.0])
    gc.export(g, None, str(tmp_path / "clean"))
    before = _copies()
    exe = gc.load(str(tmp_path / "clean"))
    np.testing.assert_allclose(exe(np.arange(4, dtype=np.float32))[0], np.arange(4) * 3 + 1)
    assert _copies() - before == set()  # the verified copy is gone once loaded
    again = gc.load(str(tmp_path / "clean"))  # the same bytes: the cached handle, still runs
    del exe
    pygc.collect()
    np.testing.assert_allclose(again(np.ones(4, np.float32))[0], np.full(4, 4.0))
    assert _copies() - before == set()


def test_a_fresh_process_loading_an_artifact_leaves_nothing(tmp_path):
    g = gc.Graph("proc")
    with g:
        x = gc.placeholder("x", (2,))
        g.set_outputs([x - 1.0])
    gc.export(g, None, str(tmp_path / "proc"))
    before = _copies()
    code = ("import graphc as gc, numpy as np, sys; e = gc.load(sys.argv[1]); "
            "print(e(np.ones(2, np.float32))[0].tolist())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "proc")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [0.0, 0.0]
    assert _copies() - before == set()
