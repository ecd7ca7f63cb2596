"""One options object per compile (graphc/options.py): arguments first, then GRAPHC_*
variables; every stage reads it, and `exe.options` says what the compile ran with."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.options import OPT_LEVELS, CompileOptions


def _graph():
    g = gc.Graph("opts")
    with g:
        x = gc.placeholder("x", (4, 3))
        g.set_outputs([gc.relu(x * 2.0)])
    return g


def test_environment_fills_what_the_arguments_leave_open():
    env = {"GRAPHC_VERIFY": "2", "GRAPHC_CHECK_NUMERICS": "1", "GRAPHC_DUMP_DIR": "/tmp/d",
           "GRAPHC_NUM_THREADS": "3"}
    o = CompileOptions.resolve(env=env)
    assert (o.verify, o.check_numerics, o.dump_dir, o.num_threads) == (2, True, "/tmp/d", 3)
    o = CompileOptions.resolve(check_numerics=False, dump_dir="/tmp/e", env=env)  # arguments win
    assert (o.check_numerics, o.dump_dir) == (False, "/tmp/e")
    o = CompileOptions.resolve(env={})
    assert (o.verify, o.check_numerics, o.dump_dir, o.num_threads) == (0, False, None, None)
    assert CompileOptions.resolve(env={"GRAPHC_VERIFY": "yes"}).verify == 1


def test_bad_options_are_refused_before_any_work():
    for kw in ({"opt_level": 4}, {"opt_level": "2"}, {"backend": 3}, {"winograd": None},
               {"passes": "fusion"}, {"donate": "x"}, {"state_updates": 1}, {"check_numerics": 2},
               {"dump_dir": 5}):
        with pytest.raises(gc.GraphcError):
            CompileOptions.resolve(env={}, **kw)


def test_the_executable_says_what_it_was_compiled_with(monkeypatch):
    monkeypatch.setenv("GRAPHC_CHECK_NUMERICS", "1")
    exe = gc.compile(_graph(), opt_level=1)
    assert exe.options.opt_level == 1 and exe.options.check_numerics and exe.check_numerics
    assert OPT_LEVELS[1] in str(exe.options)
    monkeypatch.delenv("GRAPHC_CHECK_NUMERICS")
    assert not gc.compile(_graph()).options.check_numerics


def test_the_verify_level_reaches_every_stage(monkeypatch):
    """verify=2 (GRAPHC_VERIFY=2, read once into the options) validates every graph pass
    and the lowering; 0 none of them."""
    from graphc import pipeline
    from graphc.passes import manager
    calls = {"pass": 0, "lowering": 0}
    real_rewrite, real_lowering = manager.check_rewrite, pipeline.check_lowering

    def rewrite(*a, **k):
        calls["pass"] += 1
        return real_rewrite(*a, **k)

    def lowering(*a, **k):
        calls["lowering"] += 1
        return real_lowering(*a, **k)
    monkeypatch.setattr(manager, "check_rewrite", rewrite)
    monkeypatch.setattr(pipeline, "check_lowering", lowering)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    for level in ("0", "2"):
        monkeypatch.setenv("GRAPHC_VERIFY", level)
        calls.update({"pass": 0, "lowering": 0})
        exe = gc.compile(_graph(), backend="llvm")
        np.testing.assert_allclose(exe(x)[0], np.maximum(x * 2, 0), rtol=1e-6)
        assert exe.options.verify == int(level)
        if level == "0":
            assert calls == {"pass": 0, "lowering": 0}
        else:
            assert calls["pass"] >= len([e for e in exe.ledger if e.name in manager.PASSES]) - 1
            assert calls["lowering"] == 1
