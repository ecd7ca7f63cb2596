"""`graphc compile`, `graphc run` and `graphc dump` on artifacts, in-process through main()."""
from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import pytest

import graphc as gc
from graphc.cli import main

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="AOT export links with the system C compiler")

MODEL = textwrap.dedent("""
    import numpy as np
    import graphc as gc

    def build():
        g = gc.Graph("clitiny")
        with g:
            x = gc.placeholder("x", (3, 4), "f32")
            w = gc.param("w", (4, 2), init=gc.init.normal(0.5, seed=1))
            y = gc.tanh(x @ w)
            loss = (y * y).mean()
            g.set_outputs([y, loss], updates=gc.optim.SGD(0.1).updates(loss))
        return g
""")


def test_compile_run_and_dump_an_artifact(tmp_path, capsys):
    (tmp_path / "model.py").write_text(MODEL)
    art = str(tmp_path / "out" / "tiny")
    assert main(["compile", f"{tmp_path / 'model.py'}:build", "-o", art, "-O2"]) == 0
    assert "compiled in" in capsys.readouterr().out
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", art, "--inputs", str(tmp_path / "in.npz"), "--out", str(tmp_path / "o.npz"),
                 "--steps", "2"]) == 0
    assert "loaded" in capsys.readouterr().out
    ns = {}
    exec(MODEL, ns)
    ref = gc.compile(ns["build"](), backend="reference")
    for _ in range(2):
        want = ref(x)
    with np.load(tmp_path / "o.npz") as got:
        names = [o["name"] for o in json.load(open(art + ".json"))["outputs"]]
        for name, w in zip(names, want):
            np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-6)
    # dump prints the stored IR (which parses back) and the manifest
    assert main(["dump", art]) == 0
    out = capsys.readouterr().out
    ir_text, _, manifest = out.partition("// manifest")
    assert gc.parse(ir_text).name == "clitiny"
    assert json.loads(manifest.split("\n// tensors")[0])["format_version"] == gc.aot.FORMAT_VERSION


def test_cli_errors_are_messages(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing")]) == 1
    assert "not a graphc artifact" in capsys.readouterr().err
    (tmp_path / "model.py").write_text(MODEL)
    assert main(["compile", f"{tmp_path / 'model.py'}:build", "-o", str(tmp_path / "a"),
                 "--backend", "reference"]) == 1
    assert "llvm backend" in capsys.readouterr().err
