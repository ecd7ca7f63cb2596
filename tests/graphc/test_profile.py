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
        loss = gc.softmax_cross_entropy(h @ w2, t)  # MARK-LOSS
        g.set_outputs([loss], updates=gc.optim.SGD(0.1).updates(loss))  # MARK-UPD
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


def _registry_flops(nodes) -> int:
    """FLOPs of nodes straight from their registry cost entries (not through profile.py)."""
    from graphc.ir.registry import get_op
    return sum(int(get_op(n.op).estimate_cost([v.type for v in n.inputs], [v.type for v in n.outputs],
                                              n.attrs).flops) for n in nodes)


def test_llvm_rows_rates_ops_and_lines_against_independent_counts(monkeypatch):
    """GFLOP/s and GB/s are the row's cost over its time, %peak is against the peaks in
    force, each row's ops are its kernels' nodes, and its lines are this file's lines."""
    import collections
    monkeypatch.setenv("GRAPHC_PEAK_GFLOPS", "125")
    monkeypatch.setenv("GRAPHC_PEAK_GBPS", "40")
    exe = gc.compile(_step(), backend="llvm")
    prof = exe.profile(*_data(), repeat=5)
    prov = exe.program.provenance
    assert (prof.peaks.gflops, prof.peaks.gbps) == (125.0, 40.0)
    # every node of the program is in exactly one row, under its own op
    assert collections.Counter(o for r in prof.rows for o in r.ops) == \
        collections.Counter(n.op for n in prov.graph.nodes)
    want_lines = {f"{__file__}:{_line(m)}" for m in ("MARK-H", "MARK-LOSS", "MARK-UPD")}
    text = str(prof)
    for r in prof.rows:
        nodes = list(dict.fromkeys(n for k in r.kernels for n in prov.nodes_of(k)))
        assert list(r.ops) == [n.op for n in nodes]
        assert set(r.lines) == {str(n.loc) for n in nodes} and set(r.lines) <= want_lines
        if nodes:
            assert r.flops == _registry_flops(nodes)
        assert r.seconds > 0
        assert r.gflops == pytest.approx(r.flops / r.seconds / 1e9)
        assert r.gbps == pytest.approx(r.bytes / r.seconds / 1e9)
        assert r.flops_of_peak == pytest.approx(r.gflops / 125.0)
        assert r.bytes_of_peak == pytest.approx(r.gbps / 40.0)
        row = next(x for x in text.splitlines() if f" {r.kernels[0]} " in x + " ")
        assert f"{r.share:.1%}" in row and f"{r.gflops:.1f}" in row and f"{r.gbps:.2f}" in row
    assert "125 GFLOP/s" in text and "40 GB/s" in text
    # the forward layer x @ w1 with its relu epilogue: one row, one line, counted by hand
    (fwd,) = [r for r in prof.rows if sorted(r.ops) == ["matmul", "relu"]]
    assert fwd.lines == (f"{__file__}:{_line('MARK-H')}",)
    assert fwd.flops == 2 * B * D * H + B * H  # the GEMM, one op per element for relu
    assert fwd.bytes == 4 * (B * D + D * H + B * H)  # read x and w1, write h
    # the updates are built at the optimizer's line
    assert any(r.ops == ("sub",) and r.lines == (f"{__file__}:{_line('MARK-UPD')}",) for r in prof.rows)


def test_time_goes_to_the_kernel_that_does_the_work():
    """A 256^3 GEMM beside an add of 16 elements: the GEMM's row takes most of the time
    (a profile that mixed up its kernels' counters would not show this)."""
    n = 256
    g = gc.Graph("lopsided")
    with g:
        a = gc.placeholder("a", (n, n), "f32")
        b = gc.placeholder("b", (n, n), "f32")
        c = gc.placeholder("c", (16,), "f32")
        g.set_outputs([gc.ops.exp(c + 1.0), a @ b])
    exe = gc.compile(g, backend="llvm")
    rng = np.random.default_rng(0)
    prof = exe.profile(rng.standard_normal((n, n)).astype(np.float32),
                       rng.standard_normal((n, n)).astype(np.float32), np.ones(16, np.float32), repeat=5)
    (mm,) = [r for r in prof.rows if "matmul" in r.ops]
    (ew,) = [r for r in prof.rows if "exp" in r.ops]
    assert mm.flops == 2 * n ** 3
    assert mm.share > 0.8 and ew.share < 0.1 and mm.seconds > 10 * ew.seconds
    # and the GEMM's time is that of the whole call, measured independently
    import time
    args = [rng.standard_normal((n, n)).astype(np.float32)] * 2 + [np.ones(16, np.float32)]
    exe(*args)
    best = min(_timed(exe, args, time) for _ in range(5))
    assert 0.3 * best < mm.seconds <= prof.call_seconds


def _timed(exe, args, time) -> float:
    t0 = time.perf_counter()
    exe(*args)
    return time.perf_counter() - t0


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
    table = out[out.index("profile of 'prof'"):].splitlines()
    rows = [r.split() for r in table[3:] if r.strip()[:1].isdigit()]
    assert len(rows) >= 5 and [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    assert abs(sum(float(r[2].rstrip("%")) for r in rows) - 100) < 0.06 * len(rows)  # rounded shares
    assert f"matmul, relu @ test_profile.py:{_line('MARK-H')}" in out  # the forward layer's row
    assert f"sub @ test_profile.py:{_line('MARK-UPD')}" in out         # an update's row
