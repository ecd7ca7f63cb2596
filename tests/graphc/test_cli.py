"""The graphc command line, run in-process through its main()."""
from __future__ import annotations

import json
import pathlib

import numpy as np

import graphc as gc
from graphc.cli import main
from graphc.ir.compare import same_graph
from graphc.ir.registry import all_ops
from tests.examples import digits_cnn

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = f"{ROOT / 'examples' / 'digits_cnn.py'}:build_train_step"


def test_dump_text_round_trips_to_the_compiled_graph(capsys, tmp_path):
    assert main(["dump", EXAMPLE]) == 0
    text = capsys.readouterr().out
    parsed = gc.parse(text)
    from graphc.compile import prepare
    compiled, _ = prepare(digits_cnn().build_train_step())
    assert same_graph(parsed, compiled) is None
    # the file form, and dumping a text IR file again gives the same text
    out = tmp_path / "step.gcir"
    assert main(["dump", EXAMPLE, "-o", str(out)]) == 0
    assert main(["dump", str(out)]) == 0
    assert capsys.readouterr().out == text


def test_dumped_text_compiles_and_trains_like_the_original(capsys):
    assert main(["dump", EXAMPLE]) == 0
    parsed = gc.parse(capsys.readouterr().out)
    a = gc.compile(parsed, backend="reference")
    ex = digits_cnn()
    b = gc.compile(ex.build_train_step(), backend="reference")
    x = np.random.default_rng(0).random((ex.BATCH, 1, 8, 8), np.float32)
    t = np.arange(ex.BATCH, dtype=np.int32) % 10
    for _ in range(2):
        la, lb = a(x=x, t=t)[0], b(x=x, t=t)[0]
        assert la == lb
    for k in b.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_dump_dot_and_json(capsys):
    assert main(["dump", EXAMPLE, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "digits_cnn_step"
    assert {n["op"] for n in doc["nodes"]} >= {"conv2d", "max_pool2d", "softmax_cross_entropy"}
    assert all(n["loc"]["file"].endswith("digits_cnn.py") for n in doc["nodes"])
    assert main(["dump", EXAMPLE, "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph") and dot.count("conv2d") >= 2
    assert main(["dump", EXAMPLE, "--format", "summary"]) == 0
    assert "conv2d 2" in capsys.readouterr().out


def test_ops_lists_every_registry_op(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    ops = all_ops()
    assert set(lines) == set(ops)
    for name, op in ops.items():
        assert lines[name][1] == op.fusion.value
        assert lines[name][2] == ("yes" if op.differentiable else "no")


def test_errors_are_reported_without_a_traceback(capsys, tmp_path):
    assert main(["dump", "nope.py:f"]) == 1
    assert "no such file: nope.py" in capsys.readouterr().err
    assert main(["dump", f"{ROOT / 'examples' / 'digits_cnn.py'}:missing"]) == 1
    assert "no function 'missing'" in capsys.readouterr().err
    bad = tmp_path / "bad.gcir"
    bad.write_text("graph @g(%x: f32[2]) {\n  %0 = exp(%y) : f32[2]\n  return %0\n}\n")
    assert main(["dump", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "%y" in err
    model = tmp_path / "model.py"
    model.write_text("import graphc as gc\n\ndef build():\n    g = gc.Graph('m')\n    with g:\n"
                     "        x = gc.placeholder('x', (2, 3))\n        y = x @ x\n    return g\n")
    assert main(["dump", f"{model}:build"]) == 1
    err = capsys.readouterr().err
    assert "matmul" in err and f"{model}:7" in err
    numpy_fn = tmp_path / "np_fn.py"  # a function that needs arguments: refused, not a TypeError
    numpy_fn.write_text("import numpy as np\n\ndef f(x, *, scale):\n    return np.tanh(x) * scale\n")
    assert main(["dump", f"{numpy_fn}:f"]) == 1
    err = capsys.readouterr().err
    assert "takes arguments (x, scale)" in err and "Traceback" not in err


def test_help_and_version(capsys):
    import pytest
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "dump" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert gc.__version__ in capsys.readouterr().out
