"""check_numerics: a NaN/inf anywhere in a training step (forward, backward, update) is
reported at the node and source line that produced it, on the reference, llvm and (through
the CPU emulator and a fake pycuda) cuda backends; off, nothing changes."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import numerics
from graphc.backends.llvm import codegen
from graphc.compile import optimize_graph
from graphc.passes.lower import lower

from tests.backends import cuda_emulator as emu

BACKENDS = ("reference", "llvm")


def _line(marker: str) -> int:
    """The line of this file holding `marker` (where a test builds the op it expects)."""
    with open(__file__) as f:
        return next(i for i, text in enumerate(f, 1) if marker in text and "_line(" not in text)


def _log_graph():
    g = gc.Graph("logs")
    with g:
        x = gc.placeholder("x", (4, 8), "f32")
        y = gc.ops.log(2.0 * x - 3.0)  # MARK-LOG
        g.set_outputs([gc.exp(y * 0.5).sum()])
    return g


def _mlp(kind: str):
    """A small train step: `sqrt` makes an infinite gradient where its input is 0; an
    infinite Adam learning rate breaks the update."""
    g = gc.Graph("step")
    with g:
        x = gc.placeholder("x", (16, 12), "f32")
        t = gc.placeholder("t", (16,), "i32")
        w1 = gc.param("w1", (12, 32), init=gc.init.normal(0.2, seed=0))
        b1 = gc.param("b1", (32,), init=gc.init.zeros())
        w2 = gc.param("w2", (32, 4), init=gc.init.normal(0.2, seed=1))
        z = x @ w1
        h = gc.relu(z + b1)
        if kind == "sqrt":
            h = h + gc.sqrt(z * z)  # MARK-SQRT
        loss = gc.softmax_cross_entropy(h @ w2, t)
    opt = gc.optim.Adam(float("inf")) if kind == "adam" else gc.optim.SGD(0.1)
    updates = opt.updates(loss)  # MARK-UPDATE
    return g, loss, updates


def _step_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 12)).astype(np.float32)
    x[3] = 0.0  # z = 0 in row 3: d sqrt(z*z)/dz = z / sqrt(z*z) = 0/0
    return x, (np.arange(16) % 4).astype(np.int32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_nan_names_the_op_and_line(backend):
    exe = gc.compile(_log_graph(), backend=backend, check_numerics=True)
    x = np.full((4, 8), 2.0, np.float32)
    assert np.isfinite(exe(x)[0])  # finite data runs as without checks
    x[1, 2] = 1.0  # log(2 - 3)
    with pytest.raises(gc.NumericsError) as info:
        exe(x)
    e = info.value
    assert (e.op, e.loc.line, e.inputs_finite, e.role) == ("log", _line("MARK-LOG"), True, "forward")
    assert e.loc.file == __file__ and "1 nan" in str(e)
    assert (e.kernel is None) == (backend == "reference")


@pytest.mark.parametrize("backend", BACKENDS)
def test_off_by_default_returns_nan_silently(backend, monkeypatch):
    monkeypatch.delenv(numerics.ENV_VAR, raising=False)
    x = np.full((4, 8), 1.0, np.float32)
    (y,) = gc.compile(_log_graph(), backend=backend)(x)
    assert np.isnan(y)
    monkeypatch.setenv(numerics.ENV_VAR, "1")
    with pytest.raises(gc.NumericsError):
        gc.compile(_log_graph(), backend=backend)(x)
    assert np.isnan(gc.compile(_log_graph(), backend=backend, check_numerics=False)(x)[0])


def test_fused_kernel_names_the_member_not_the_kernel():
    """sub, sqrt, mul and exp fuse into one kernel whose source names exp; the NaN is sqrt's."""
    g = gc.Graph("chain")
    with g:
        x = gc.placeholder("x", (64,), "f32")
        y = gc.exp(gc.sqrt(x - 5.0) * 0.1)  # MARK-CHAIN
    exe = gc.compile(g, y, backend="llvm", check_numerics=True)
    x = np.full(64, 9.0, np.float32)
    np.testing.assert_allclose(exe(x), np.exp(np.sqrt(x - 5) * 0.1), rtol=1e-6)
    x[7] = 1.0
    with pytest.raises(gc.NumericsError) as info:
        exe(x)
    e = info.value
    assert e.op == "sqrt" and e.inputs_finite and e.loc.line == _line("MARK-CHAIN")
    members = exe.program.provenance.nodes_of(e.kernel)
    assert [n.op for n in members][-1] == "exp" and "sqrt" in [n.op for n in members]


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_input_is_reported_as_already_non_finite(backend):
    exe = gc.compile(_log_graph(), backend=backend, check_numerics=True)
    x = np.full((4, 8), 2.0, np.float32)
    x[0, 0] = np.nan
    with pytest.raises(gc.NumericsError) as info:
        exe(x)
    e = info.value
    assert not e.inputs_finite and "graph input 'x'" in e.nonfinite_inputs[0]
    assert e.loc.line == _line("MARK-LOG")  # 2 * x, the first op reading it


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_inf_is_reported_at_the_forward_line(backend):
    g, loss, updates = _mlp("sqrt")
    exe = gc.compile(g, outputs=[loss], updates=updates, backend=backend, check_numerics=True)
    before = {k: np.array(v) for k, v in exe.params.items()}
    with pytest.raises(gc.NumericsError) as info:
        exe(*_step_data())
    e = info.value
    assert e.role == "backward" and e.inputs_finite and e.loc.line == _line("MARK-SQRT")
    assert "sqrt" in str(e)  # the forward op whose gradient it is
    # a failing step leaves the parameters as they were
    for k, v in before.items():
        np.testing.assert_array_equal(exe.params[k], v)
    # the same step without checks really does produce NaN parameters
    plain = gc.compile(g, outputs=[loss], updates=updates, backend=backend)
    plain(*_step_data())
    assert not all(np.isfinite(plain.params[k]).all() for k in plain.params)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_learning_rate_is_reported_in_the_update(backend):
    g, loss, updates = _mlp("adam")
    exe = gc.compile(g, outputs=[loss], updates=updates, backend=backend, check_numerics=True)
    with pytest.raises(gc.NumericsError) as info:
        exe(*_step_data())
    e = info.value
    assert e.role == "update" and e.loc.line == _line("MARK-UPDATE") and e.op == "mul"
    assert not e.inputs_finite and "a constant" in e.nonfinite_inputs[0]  # lr = inf


def test_jit_check_numerics():
    @gc.jit(check_numerics=True)
    def f(x):
        return np.log(x - 1.0)  # MARK-JIT

    np.testing.assert_allclose(f(np.full(4, 3.0, np.float32)), np.log(2.0), rtol=1e-6)
    with pytest.raises(gc.NumericsError) as info:
        f(np.zeros(4, np.float32))
    assert info.value.op == "log" and info.value.loc.line == _line("MARK-JIT")


def _conv_pool():
    """Max pooling with padding scans a -inf-padded scratch plane: never a NaN report."""
    g = gc.Graph("cnn")
    with g:
        x = gc.placeholder("x", (2, 3, 8, 8), "f32")
        h = gc.nn.Conv2d(3, 4, 3, padding=1)(x)
        h = gc.max_pool2d(gc.relu(h), 3, stride=2, padding=1)
        g.set_outputs([h.mean()], updates=gc.optim.SGD(0.1).updates(h.mean()))
    return g


def test_no_false_alarm_on_padded_max_pool():
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = gc.compile(_conv_pool(), backend="reference")(x)
    got = gc.compile(_conv_pool(), backend="llvm", check_numerics=True)(x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4)


def test_check_plan_holds_only_node_values_each_written_by_its_kernel():
    g, loss, updates = _mlp("sqrt")
    exe = gc.compile(g, outputs=[loss], updates=updates, backend="llvm", check_numerics=True)
    p = exe.program
    plan = numerics.check_plan(p)
    values = {b: v for v, b in p.provenance.value_buffers.items()}
    checked = [b for names in plan for b in names]
    assert checked and len(checked) == len(set(checked))
    for k, names in zip(p.kernels, plan):
        for b in names:
            v = values[b]
            assert v.producer in p.provenance.nodes_of(k.name) and v.dtype.is_float
            assert numerics._storage(p, b)[0] in {numerics._storage(p, w)[0] for w in numerics.written(k)}
    assert not any(b.startswith("scratch") for b in checked)


def test_generated_code_is_unchanged_when_off():
    g, loss, updates = _mlp("sqrt")
    work, _, _ = optimize_graph(g, [loss], updates=updates, backend="llvm")
    program = lower(work, fuse_ops=None)
    plain = codegen.generate(program, codegen.CodegenOptions()).text
    assert "nonfinite" not in plain
    checked = codegen.generate(program, codegen.CodegenOptions(check_numerics=True)).text
    assert "nonfinite_f32" in checked and checked != plain


# -- cuda: the generated CUDA C on the CPU emulator, the runtime over a fake pycuda --------

@pytest.fixture
def fake_gpu(monkeypatch, tmp_path_factory):
    if not emu.available():
        pytest.skip("no C++ compiler for the emulator")
    from tests.backends import fake_pycuda
    fake_pycuda.install(monkeypatch, tmp_path_factory.getbasetemp() / "fake-gpu")


def test_cuda_forward_nan(fake_gpu):
    exe = gc.compile(_log_graph(), backend="cuda", check_numerics=True)
    assert any(launch.check for launch in exe.module.launches)
    x = np.full((4, 8), 2.0, np.float32)
    assert np.isfinite(exe(x)[0])
    x[3, 3] = 1.0
    with pytest.raises(gc.NumericsError) as info:
        exe(x)
    e = info.value
    assert (e.op, e.loc.line, e.inputs_finite, e.backend) == ("log", _line("MARK-LOG"), True, "cuda")
    assert not any(launch.check for launch in gc.compile(_log_graph(), backend="cuda").module.launches)


def test_cuda_backward_inf_leaves_parameters(fake_gpu):
    g, loss, updates = _mlp("sqrt")
    exe = gc.compile(g, outputs=[loss], updates=updates, backend="cuda", check_numerics=True)
    before = {k: np.array(v) for k, v in exe.params.items()}
    with pytest.raises(gc.NumericsError) as info:
        exe(*_step_data())
    assert info.value.role == "backward" and info.value.loc.line == _line("MARK-SQRT")
    for k, v in before.items():
        np.testing.assert_array_equal(exe.params[k], v)


def test_cuda_no_false_alarm_on_padded_max_pool(fake_gpu):
    """cuda decomposes max pooling into graph ops (a -inf pad among them): still no report."""
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = gc.compile(_conv_pool(), backend="reference")(x)
    got = gc.compile(_conv_pool(), backend="cuda", check_numerics=True)(x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4)
