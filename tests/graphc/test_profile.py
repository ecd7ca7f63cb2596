"""exe.profile: per-kernel time, share, GFLOP/s and GB/s with ops and source lines, on
every backend, without changing the parameters; `graphc run --profile` on an artifact."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import graphc as gc
from graphc.backends import profile as P

from tests.backends import cuda_emulator as emu

B, D, H = 32, 48, 64


def _step():
    g = gc.Graph("prof")
    with g:
        x = gc.placeholder("x", (B, D), "f32")
        t = gc.placeholder("t", (B,), "i32")
        w1 = gc.param("w1", (D, H), init=gc.init.normal(0.1, seed=0))
        w2 = gc.param("w2", (H, 10), init=gc.init.normal(0.1, seed=1))
        h = gc.relu(x @ w1)  # MARK-H
        loss = gc.softmax_cross_entropy(h @ w2, t)
        g.set_outputs([loss], updates=gc.optim.SGD(0.1).updates(loss))
    return g


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((B, D)).astype(np.float32), (np.arange(B) % 10).astype(np.int32)


def _line(marker: str) -> int:
    with open(__file__) as f:
        return next(i for i, text in enumerate(f, 1) if marker in text and "_line(" not in text)


def _check_profile(exe, prof, kernels):
    """What every backend's profile satisfies, against independent counts."""
    assert abs(sum(r.share for r in prof.rows) - 1) < 1e-9
    assert abs(prof.kernel_seconds - sum(r.seconds for r in prof.rows)) < 1e-12
    assert sorted(k for r in prof.rows for k in r.kernels) == sorted(kernels)  # each kernel once
    assert all(r.seconds >= 0 for r in prof.rows)
    # the FLOPs: the three matmuls of x @ w1 (forward, and w1's gradient) are 2*B*D*H each;
    # the rows computing them hold at least that between them
    mm = [r for r in prof.rows if "matmul" in r.ops and any(f":{_line('MARK-H')}" in x for x in r.lines)]
    assert sum(r.flops for r in mm) >= 2 * (2 * B * D * H)
    text = str(prof)
    assert "GFLOP/s" in text and f"{P.machine_peaks().gflops:g} GFLOP/s" in text
    assert all(r.kernels[0] in text for r in prof.rows)
    d = prof.as_dicts()[0]
    assert d["gflops"] == pytest.approx(d["flops"] / d["seconds"] / 1e9 if d["seconds"] else 0.0)


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_profile_rows_cover_every_kernel_and_leave_the_state(backend):
    exe = gc.compile(_step(), backend=backend)
    before = {k: np.array(v) for k, v in exe.params.items()}
    prof = exe.profile(*_data(), repeat=3)
    for k, v in before.items():
        np.testing.assert_array_equal(exe.params[k], v)
    if backend == "reference":
        kernels = [r.kernels[0] for r in prof.rows]
        assert len(prof.rows) == len(exe.graph.nodes)
    else:
        kernels = [k.name for k in exe.program.kernels]
        assert prof.kernel_seconds <= prof.call_seconds * 1.05  # kernels run inside the calls
    _check_profile(exe, prof, kernels)
    assert prof.backend == backend and prof.repeat == 3


def test_fused_chain_bytes_are_its_memory_traffic():
    n = 1 << 12
    g = gc.Graph("chain")
    with g:
        x = gc.placeholder("x", (n,), "f32")
        y = gc.tanh(x * 2.0 + 1.0)
    exe = gc.compile(g, y, backend="llvm")
    (row,) = [r for r in exe.profile(np.ones(n, np.float32), repeat=2).rows if r.ops]
    assert sorted(row.ops) == ["add", "mul", "tanh"] == sorted(nd.op for nd in exe.graph.nodes)
    per_op = [P.node_cost(nd) for nd in exe.graph.nodes]  # the graph is the three ops
    assert row.flops == sum(f for f, _ in per_op)
    assert row.bytes == 2 * n * 4 + 2 * 4  # read x and write y (and the two scalar constants)
    assert row.bytes < sum(b for _, b in per_op)


def test_batch_split_inference_profiles_the_whole_graph():
    g = gc.Graph("infer")
    with g:
        x = gc.placeholder("x", (64, 32), "f32")
        w = gc.constant(np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32))
        y = gc.relu(x @ w)
    exe = gc.compile(g, y, backend="llvm")
    prof = exe.profile(np.ones((64, 32), np.float32), repeat=2)
    assert any("matmul" in r.ops for r in prof.rows)
    assert abs(sum(r.share for r in prof.rows) - 1) < 1e-9


def test_profile_rejects_bad_repeat():
    exe = gc.compile(_step(), backend="reference")
    with pytest.raises(gc.GraphcError, match="repeat"):
        exe.profile(*_data(), repeat=0)


def test_cuda_profile_through_the_emulator(monkeypatch, tmp_path_factory):
    if not emu.available():
        pytest.skip("no C++ compiler for the emulator")
    from tests.backends import fake_pycuda
    fake_pycuda.install(monkeypatch, tmp_path_factory.getbasetemp() / "fake-gpu")
    exe = gc.compile(_step(), backend="cuda")
    before = {k: np.array(v) for k, v in exe.params.items()}
    prof = exe.profile(*_data(), repeat=1)
    for k, v in before.items():
        np.testing.assert_array_equal(exe.params[k], v)
    _check_profile(exe, prof, [k.name for k in exe.program.kernels])


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="AOT export links with the system C compiler")
def test_cli_run_profile(tmp_path, capsys):
    from graphc.cli import main
    art = str(tmp_path / "prof")
    gc.export(_step(), None, art)
    x, t = _data()
    np.savez(tmp_path / "in.npz", x=x, t=t)
    assert main(["run", art, "--inputs", str(tmp_path / "in.npz"), "--profile", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "profile of 'prof'" in out and "GFLOP/s" in out and "matmul" in out
