"""Parameter updates in place (passes/donate.py) and the memory-aware kernel order
(passes/schedule.py): what they change, and that results never change."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.compile import prepare
from graphc.ir import kernel as K
from graphc.ir.dtypes import f32
from graphc.passes.donate import donate_state
from graphc.passes.inplace import kernel_access, storage_root
from graphc.passes.lower import lower
from graphc.passes.schedule import live_peak, schedule_kernels

from tests.examples import digits_cnn, mlp_step

needs_llvm = pytest.mark.skipif("llvm" not in available_backends(), reason="llvmlite missing")


def _train_step(opt, depth: int = 2):
    g = gc.Graph("step")
    with g:
        x = gc.placeholder("x", (16, 12), "f32")
        t = gc.placeholder("t", (16,), "i32")
        h = x
        for i in range(depth):
            h = gc.relu(gc.nn.Linear(h.shape[-1], 24, name=f"l{i}")(h))
        loss = gc.softmax_cross_entropy(gc.nn.Linear(24, 5, name="out")(h), t)
        g.set_outputs([loss], updates=opt.updates(loss))
    return g


def _feeds(rng, bad=False):
    t = rng.integers(0, 5, 16).astype(np.int32)
    if bad:
        t[3] = 9
    return {"x": rng.standard_normal((16, 12)).astype(np.float32), "t": t}


@pytest.mark.parametrize("opt", [gc.optim.SGD(0.1, momentum=0.9), gc.optim.Adam(1e-2)],
                         ids=["sgd-momentum", "adam"])
def test_every_update_of_a_train_step_is_written_in_place(opt):
    g = _train_step(opt)
    work, _ = prepare(g)
    p = lower(work)
    assert set(p.updates) == set(g.updates)
    assert all(p.updates[k] == p.params[k] for k in p.updates), p.updates
    assert not [b for b in p.buffers.values() if b.kind == "output" and b.name.startswith("upd_")]
    plan = p.memory_plan  # the report says so, with the bytes no longer copied
    assert {d.param for d in plan.donated} == set(g.updates)
    nbytes = sum(v.type.size * v.dtype.itemsize for v in g.params if v.name in g.updates)
    assert f"{len(g.updates)} parameter updates in place ({nbytes:,} B not copied)" in plan.summary()


@needs_llvm
def test_an_old_value_read_after_the_update_stays_the_old_value():
    """`w + 1` is an output computed from the old w, placed after the update in graph order:
    w is not overwritten before it is read, however the kernels are grouped and ordered."""
    g = gc.Graph("late_reader")
    with g:
        x = gc.placeholder("x", (8,), "f32")
        w = gc.param("w", (8,), init=gc.init.normal(1.0))
        new_w = w - 0.5 * x
        late = w + 1.0
        g.set_outputs([late], updates={"w": new_w})
    ref = gc.compile(g, backend="reference")
    exe = gc.compile(g, backend="llvm")
    x0 = np.arange(8, dtype=np.float32)
    for _ in range(3):
        np.testing.assert_allclose(exe(x=x0), ref(x=x0), rtol=1e-6)
        np.testing.assert_allclose(exe.params["w"], ref.params["w"], rtol=1e-6)


@needs_llvm
def test_params_are_read_only_views_of_the_live_state():
    g = _train_step(gc.optim.SGD(0.1))
    exe = gc.compile(g, backend="llvm")
    ref = gc.compile(g, backend="reference")
    view = exe.params["l0.w"]
    before = view.copy()
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0, 0] = 1.0
    feeds = _feeds(np.random.default_rng(0))
    exe(**feeds), ref(**feeds)
    assert not np.array_equal(view, before)  # the view follows the in-place update
    np.testing.assert_allclose(view, ref.params["l0.w"], rtol=1e-4, atol=1e-6)
    mine = np.ones_like(before)
    exe.params["l0.w"] = mine  # assignments copy: the caller's array is never written
    exe(**feeds)
    np.testing.assert_array_equal(mine, np.ones_like(before))


@needs_llvm
def test_a_failing_call_leaves_the_state_untouched():
    """An out-of-range label raises, and no parameter or optimizer moment has moved: the
    call stops at the kernel that found the bad index, before any in-place update."""
    g = _train_step(gc.optim.Adam(1e-2))
    exe = gc.compile(g, backend="llvm")
    ref = gc.compile(g, backend="reference")
    rng = np.random.default_rng(1)
    good = _feeds(rng)
    exe(**good), ref(**good)
    snapshot = {k: v.copy() for k, v in exe.params.items()}
    with pytest.raises(gc.GraphcError, match="out of range"):
        exe(**_feeds(rng, bad=True))
    for k, v in snapshot.items():
        np.testing.assert_array_equal(exe.params[k], v, err_msg=k)
    again = _feeds(rng)
    np.testing.assert_allclose(exe(**again), ref(**again), rtol=1e-4)
    for k in snapshot:
        np.testing.assert_allclose(exe.params[k], ref.params[k], rtol=1e-3, atol=1e-6, err_msg=k)


# -- the kernel order ------------------------------------------------------------------------

N = 1024
i = K.Var("i")


def _copy(src, dst, op="neg"):
    return K.Kernel(f"{op}_{src}_{dst}", [K.For(i, N, [K.Store(dst, i, K.Unary(op, K.Load(src, i, f32), f32))])],
                    [src], [dst])


def _program(kernels, temps):
    bufs = {"x": K.Buffer("x", N, f32, "input"), "y1": K.Buffer("y1", N, f32, "output"),
            "y2": K.Buffer("y2", N, f32, "output")}
    bufs.update({t: K.Buffer(t, N, f32, "temp") for t in temps})
    return K.Program("p", bufs, kernels, inputs=["x"], outputs=["y1", "y2"])


def test_schedule_runs_consumers_early_and_keeps_every_dependency():
    """a, b made first and consumed last (graph order) -> each consumed right away."""
    kernels = [_copy("x", "a"), _copy("x", "b"), _copy("a", "y1"), _copy("b", "y2")]
    p = _program(kernels, ("a", "b"))
    assert live_peak(p) == 2 * N * 4
    assert schedule_kernels(p)
    assert [k.name for k in p.kernels] == ["neg_x_a", "neg_a_y1", "neg_x_b", "neg_b_y2"]
    assert live_peak(p) == N * 4


def _last_writers(p, kernels):
    """{(kernel, storage root read): the kernel that last wrote that storage before it}."""
    seen, out = {}, {}
    for k in kernels:
        reads, writes = kernel_access(k)
        for b in reads:
            out[(k.name, storage_root(p, b)[0])] = seen.get(storage_root(p, b)[0])
        for b in writes:
            seen[storage_root(p, b)[0]] = k.name
    return out


def test_schedule_keeps_storage_dependencies():
    """b is a view of a: writing b overwrites a, so a's reader, which comes after that write
    in graph order, must keep reading what the write left (no reordering across it)."""
    kernels = [_copy("x", "a"), _copy("x", "b", "exp"), _copy("b", "y2"), _copy("a", "y1")]
    p = _program(kernels, ("a", "b"))
    p.aliases["b"] = ("a", 0)
    before = list(p.kernels)
    schedule_kernels(p)
    assert _last_writers(p, p.kernels) == _last_writers(p, before)


@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_scheduled_train_steps_keep_every_dependency(which):
    """Every buffer a kernel reads has, by storage, the same last writer in the scheduled
    order as in graph order; and the schedule lowers the live-bytes peak."""
    g = digits_cnn().build_train_step() if which == "cnn" else mlp_step().build()
    work, _ = prepare(g)
    p = lower(work, plan=False)
    donate_state(p)
    before = list(p.kernels)
    peak_before = live_peak(p)
    assert schedule_kernels(p)
    assert live_peak(p) < peak_before

    assert _last_writers(p, p.kernels) == _last_writers(p, before)


# -- inputs the caller donates -----------------------------------------------------------------

def _donation_graph():
    g = gc.Graph("donated_input")
    with g:
        x = gc.placeholder("x", (64, 48), "f32")
        w = gc.param("w", (48, 32), init=gc.init.normal(0.2, seed=3))
        g.set_outputs([gc.tanh(x * 0.5 + 1.0) @ w])  # the tanh chain is a temp the matmul reads
    return g


@needs_llvm
def test_a_donated_input_holds_the_activation_and_results_do_not_change():
    g = _donation_graph()
    ref = gc.compile(g, backend="reference")
    kept = gc.compile(g, backend="llvm")
    given = gc.compile(g, backend="llvm", donate=["x"])
    assert given.program.arena_bytes < kept.program.arena_bytes  # no temp for the chain
    x = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
    original = x.copy()
    np.testing.assert_allclose(kept(x=x), ref(x=x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(x, original)  # not donated: never written
    np.testing.assert_allclose(given(x=x), ref(x=original), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x, np.tanh(original * 0.5 + 1.0), rtol=1e-6, atol=1e-6)  # overwritten


def test_donating_an_unknown_input_is_a_clear_error():
    with pytest.raises(gc.GraphcError, match="'y' is not an input of graph 'donated_input'"):
        gc.compile(_donation_graph(), backend="reference", donate=["y"])
