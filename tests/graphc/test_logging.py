"""Logging on the standard `logging` module: GRAPHC_LOG topics -> loggers (graphc/logconfig.py),
what gc.compile, the pass manager, the compile cache and the ONNX importer log, and the
progress report of slow compiles (ir/observe.py)."""
from __future__ import annotations

import io
import logging
import pathlib
import re
import subprocess
import sys
from collections import Counter

import pytest

import graphc as gc
from graphc import logconfig as gclog
from graphc.backends.llvm.cache import CompileCache
from graphc.ir import observe

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOGGERS = [name for name, _ in gclog.TOPICS.values()]


@pytest.fixture
def clean_loggers():
    """Undo what configure() attaches, so tests do not leak stderr handlers."""
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level) for n in LOGGERS}
    yield
    for n, (handlers, level) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers[:] = handlers
        lg.setLevel(level)


def _ours(name: str) -> list[logging.Handler]:
    return [h for h in logging.getLogger(name).handlers if getattr(h, "_graphc", False)]


def _mlp():
    g = gc.Graph("logmlp")
    with g:
        x = gc.placeholder("x", (8, 16), "f32")
        w = gc.param("w", (16, 4), init=gc.init.normal(0.1, seed=0))
        loss = gc.mean(gc.relu(x @ w) * 2.0 + 0.0)
        (gw,) = gc.grad(loss, [w])
    return g, loss, {w: w - 0.1 * gw}


def test_topics_attach_handlers_to_their_loggers_only(clean_loggers, capfd):
    assert gclog.configure("compile, cache") == ["compile", "cache"]
    assert len(_ours("graphc.compile")) == 1 and len(_ours("graphc.cache")) == 1
    assert not _ours("graphc.passes") and not _ours("graphc.llvm")
    assert logging.getLogger("graphc.cache").getEffectiveLevel() == logging.DEBUG
    gclog.configure("compile")  # again: no second handler
    assert len(_ours("graphc.compile")) == 1
    assert gclog.configure("all") == list(gclog.TOPICS)
    assert all(len(_ours(n)) == 1 for n in LOGGERS)
    assert logging.getLogger("graphc.jit").getEffectiveLevel() == logging.INFO  # recompile: INFO
    assert capfd.readouterr().err == ""
    gclog.configure("compile,nosuchtopic")
    err = capfd.readouterr().err
    assert "unknown topic 'nosuchtopic'" in err and all(t in err for t in gclog.TOPICS)


def test_nothing_is_printed_unless_asked():
    """No handler of ours, no last-resort output: even a WARNING on a graphc logger is silent."""
    code = ("import logging, graphc\nlogging.getLogger('graphc.cache').warning('not shown')\n"
            "logging.getLogger('graphc.compile').info('not shown')")
    r = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == ""


def test_compile_and_pass_records(caplog):
    g, loss, updates = _mlp()
    with caplog.at_level(logging.DEBUG, logger="graphc"):
        exe = gc.compile(g, outputs=[loss], updates=updates, backend="reference", opt_level=1)
    comp = [r.getMessage() for r in caplog.records if r.name == "graphc.compile"]
    start = f"compile logmlp: {len(g.nodes)} nodes, backend reference, -O1"
    assert comp[0] == start
    done = [m for m in comp if m.startswith("compiled logmlp:")]
    assert len(done) == 1 and f"{len(exe.graph.nodes)} nodes, backend reference, -O1 in " in done[0]
    seconds = float(re.search(r"in ([0-9.]+) s", done[0]).group(1))
    assert 0 < seconds < 60
    passes = [r.getMessage() for r in caplog.records if r.name == "graphc.passes"
              and not r.getMessage().startswith("kernel IR")]
    assert len(passes) == len(exe.ledger)
    for msg, e in zip(passes, exe.ledger):  # one line per ledger entry, its own numbers
        assert msg.startswith(f"{e.name}: {e.seconds * 1e3:.2f} ms, nodes {e.nodes_before} -> "
                              f"{e.nodes_after}")


def test_kernel_ir_steps_are_logged(caplog):
    g, loss, updates = _mlp()
    with caplog.at_level(logging.DEBUG, logger="graphc.passes"):
        exe = gc.compile(g, outputs=[loss], updates=updates, backend="llvm")
    steps = [re.match(r"kernel IR (\w+) ", r.getMessage()).group(1) for r in caplog.records
             if r.getMessage().startswith("kernel IR ")]
    assert steps == ["lowered", "donate", "schedule", "memory"]
    memory = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kernel IR memory")]
    assert exe.compiled.program.memory_plan.summary() in memory[0]


def test_cache_hits_and_misses(tmp_path, caplog):
    key = "ab" * 32
    builds = []

    def build() -> bytes:
        builds.append(1)
        return b"object code"

    with caplog.at_level(logging.DEBUG, logger="graphc.cache"):
        CompileCache(tmp_path, enabled=True).get_or_build(key, build)
        c = CompileCache(tmp_path, enabled=True)  # a new process's cache: the disk has it
        c.get_or_build(key, build)
        c.get_or_build(key, build)
        CompileCache(tmp_path, enabled=False).get_or_build(key, build)
    msgs = [r.getMessage() for r in caplog.records if r.name == "graphc.cache"]
    assert len(builds) == 2 and len(msgs) == 4
    assert msgs[0].startswith(f"miss {key[:12]}: built in ")
    assert msgs[1] == f"hit {key[:12]} (disk, {len(b'object code')} bytes)"
    assert msgs[2] == f"hit {key[:12]} (memory, {len(b'object code')} bytes)"
    assert msgs[3].startswith(f"cache off {key[:12]}: built in ")


def test_onnx_import_is_logged(caplog):
    onnx = pytest.importorskip("onnx")
    path = ROOT / "tests" / "onnx" / "models" / "lstm.onnx"
    proto = onnx.load(str(path))
    with caplog.at_level(logging.INFO, logger="graphc.onnx"):
        g = gc.onnx.load(path)
    (msg,) = [r.getMessage() for r in caplog.records if r.name == "graphc.onnx"]
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert f"opset {opset}, {len(proto.graph.node)} ONNX nodes" in msg
    for op, n in Counter(node.op_type for node in proto.graph.node).items():
        assert f"{op} {n}" in msg
    assert f"{len(g.nodes)} nodes" in msg


def test_slow_compiles_report_their_stages(caplog, monkeypatch):
    monkeypatch.setattr(observe, "PROGRESS_AFTER", 0.0)  # every compile counts as slow
    monkeypatch.setenv("GRAPHC_CACHE", "0")  # so that the LLVM stages run
    g, loss, updates = _mlp()
    with caplog.at_level(logging.INFO, logger="graphc.compile"):
        exe = gc.compile(g, outputs=[loss], updates=updates, backend="llvm")
    stages = [m.group(1) for r in caplog.records
              if (m := re.match(r"compiling logmlp: [0-9.]+ s, (.*)$", r.getMessage()))]
    from graphc.passes.manager import PASSES  # (the ledger's kernel-IR rows are not graph passes)
    assert [f"pass {e.name}" for e in exe.ledger if e.name in PASSES] == \
        [s for s in stages if s.startswith("pass ")]
    assert "lower to kernel IR" in stages and any(s.startswith("llvm optimise") for s in stages)
    monkeypatch.setattr(observe, "PROGRESS_AFTER", 3600.0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="graphc.compile"):
        gc.compile(g, outputs=[loss], updates=updates, backend="llvm")
    assert not [r for r in caplog.records if r.getMessage().startswith("compiling ")]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_an_unconfigured_terminal(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(observe, "_configured", lambda logger: False)
    with observe.session("big") as s:
        s.progress_after = 0.0
        s.stage("pass fusion")
        assert term.getvalue().startswith("\rgraphc: compiling big: ") and "pass fusion" in term.getvalue()
    assert term.getvalue().endswith("\r\x1b[K")  # erased when the compile ends
    monkeypatch.setattr(observe, "_configured", lambda logger: True)  # logging set up: no line
    plain = _Terminal()
    monkeypatch.setattr(sys, "stderr", plain)
    with observe.session("big") as s:
        s.progress_after = 0.0
        s.stage("pass fusion")
    assert plain.getvalue() == ""
