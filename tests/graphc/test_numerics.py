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
    """A small train step: `sqrt` makes an infinite gradient where its input is 0 (the
    forward pass stays finite); an infinite Adam learning rate breaks the update; a huge
    SGD learning rate times a large gradient overflows in the update (finite inputs)."""
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
        if kind == "overflow":
            loss = loss * 1000.0
    opt = {"adam": gc.optim.Adam(float("inf")), "overflow": gc.optim.SGD(1e38)}.get(kind, gc.optim.SGD(0.1))
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
    assert e.loc.file == __file__ and "1 nan of 32 elements" in str(e)
    assert "log produced NaN/inf from finite inputs" in str(e)
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
    assert "its inputs were already non-finite" in str(e) and "1 nan of 32" in e.nonfinite_inputs[0]
    assert e.loc.line == _line("MARK-LOG")  # 2 * x, the first op reading it


def _nonfinite(a) -> bool:
    a = np.asarray(a)
    return a.dtype.kind == "f" and not np.isfinite(a).all()


def _origins(graph, feeds):
    """The nodes (graph order) whose results are non-finite although every input they
    read from another node is finite: found by plain numpy evaluation of every node, not
    by the locator."""
    from graphc.ir.reference import run_node
    env = {v: np.asarray(feeds[v.name]) for v in list(graph.inputs) + list(graph.params)}
    env.update({c: c.data for c in graph.constants})
    found = []
    with np.errstate(all="ignore"):
        for n in graph.nodes:
            outs = run_node(n, [env[u] for u in n.inputs])
            env.update(zip(n.outputs, outs))
            if any(_nonfinite(a) for a in outs) and not any(
                    _nonfinite(env[u]) for u in n.inputs if u.producer is not None):
                found.append(n)
    return found


def _first_origin(exe, backend, feeds):
    """The node the locator must name: the first origin in the order the backend runs
    nodes (the reference: graph order; compiled: the kernel completing the node)."""
    if backend == "reference":
        return _origins(exe.graph, feeds)[0]
    prov = exe.program.provenance
    done = {}
    for i, k in enumerate(exe.program.kernels):
        for n in prov.nodes_of(k.name):
            done[n] = i
    found = _origins(prov.graph, feeds)
    return min(found, key=lambda n: (done[n], found.index(n)))


# (kind, role, marker of the line, op, inputs finite): a NaN born only in the backward
# pass (sqrt's gradient divides by sqrt(0) = 0), an infinite constant in the update, an
# update that overflows from finite values
STEP_CASES = [("sqrt", "backward", "MARK-SQRT", "div", True),
              ("adam", "update", "MARK-UPDATE", "mul", False),
              ("overflow", "update", "MARK-UPDATE", "mul", True)]


@pytest.mark.parametrize("kind, role, marker, op, finite", STEP_CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_step_nan_is_reported_at_its_origin(backend, kind, role, marker, op, finite):
    _check_train_step(backend, kind, role, marker, op, finite)


def _check_train_step(backend, kind, role, marker, op, finite):
    """The error names the first origin (found without the locator), its op, line, role
    and whether its inputs were finite; the parameters survive the failed step."""
    g, loss, updates = _mlp(kind)
    exe = gc.compile(g, outputs=[loss], updates=updates, backend=backend, check_numerics=True)
    before = {k: np.array(v) for k, v in exe.params.items()}
    x, t = _step_data()
    want = _first_origin(exe, backend, {"x": x, "t": t, **before})
    with pytest.raises(gc.NumericsError) as info:
        exe(x, t)
    e = info.value
    assert e.node is want and e.op == want.op == op and e.loc == want.loc
    assert (e.role, e.loc.line, e.loc.file, e.inputs_finite) == (role, _line(marker), __file__, finite)
    assert ("from finite inputs" in str(e)) == finite
    assert ("its inputs were already non-finite" in str(e)) == (not finite)
    if kind == "sqrt":
        assert "the gradient of the forward op(s)" in str(e) and "sqrt" in str(e)
    if kind == "adam":
        assert "a constant" in e.nonfinite_inputs[0] and "+inf" in e.nonfinite_inputs[0]  # lr = inf
    # a failing step leaves the parameters as they were
    for k, v in before.items():
        np.testing.assert_array_equal(exe.params[k], v)
    # the same step without checks really does produce non-finite parameters
    plain = gc.compile(g, outputs=[loss], updates=updates, backend=backend, check_numerics=False)
    assert np.isfinite(plain(x, t)[0]).all()  # the forward pass (the loss) is finite
    assert not all(np.isfinite(plain.params[k]).all() for k in plain.params)


def test_jit_check_numerics():
    @gc.jit(check_numerics=True)
    def f(x):
        return np.log(x - 1.0)  # MARK-JIT

    np.testing.assert_allclose(f(np.full(4, 3.0, np.float32)), np.log(2.0), rtol=1e-6)
    with pytest.raises(gc.NumericsError) as info:
        f(np.zeros(4, np.float32))
    e = info.value
    assert (e.op, e.loc.line, e.inputs_finite) == ("log", _line("MARK-JIT"), True)


def test_jit_check_numerics_from_the_environment(monkeypatch):
    def f(x):
        return np.sqrt(x - 2.0) * 3.0  # MARK-JIT-ENV

    x = np.array([3.0, 1.0, 6.0], np.float32)  # sqrt(-1) in the middle
    monkeypatch.setenv(numerics.ENV_VAR, "1")
    with pytest.raises(gc.NumericsError) as info:
        gc.jit(f)(x)
    e = info.value
    assert (e.op, e.loc.line, e.loc.file, e.inputs_finite, e.role) == (
        "sqrt", _line("MARK-JIT-ENV"), __file__, True, "forward")
    assert "1 nan of 3 elements" in str(e)
    assert np.isnan(gc.jit(f, check_numerics=False)(x)[1])  # the argument wins over the variable
    monkeypatch.delenv(numerics.ENV_VAR)
    got = gc.jit(f)(x)  # off by default: the NaN comes back silently
    assert np.isnan(got[1]) and np.allclose(got[[0, 2]], np.sqrt([1.0, 4.0]) * 3.0)


def test_unchecked_compile_has_no_checks_in_its_llvm_ir(monkeypatch):
    """'0 when off': the LLVM IR a plain compile runs holds no nonfinite_ function or call;
    with checks on it holds one call per buffer of the check plan."""
    import re
    monkeypatch.delenv(numerics.ENV_VAR, raising=False)
    g, loss, updates = _mlp("sqrt")
    default = gc.compile(g, outputs=[loss], updates=updates, backend="llvm")
    off = gc.compile(g, outputs=[loss], updates=updates, backend="llvm", check_numerics=False)
    on = gc.compile(g, outputs=[loss], updates=updates, backend="llvm", check_numerics=True)
    assert (default.check_numerics, off.check_numerics, on.check_numerics) == (False, False, True)

    def llvm_ir(exe):
        return codegen.generate(exe.program, exe.compiled.options).text
    text_off, text_on = llvm_ir(off), llvm_ir(on)
    assert llvm_ir(default) == text_off
    assert "nonfinite" not in text_off
    calls = re.findall(r"call i1 @\"?[\w.]*\.nonfinite_f32", text_on)
    assert calls and len(calls) == sum(len(names) for names in numerics.check_plan(on.program))
    assert re.search(r"define internal i1 @\"?[\w.]*\.nonfinite_f32", text_on)
    # off, the parameters are updated in place as always; on, the update goes to a
    # separate buffer so that a failing step can leave them untouched
    assert not any(b.startswith("upd_") for b in off.program.buffers)
    x, t = _step_data()
    x[3] = 1.0  # no zero row: a finite step
    off(x, t), on(x, t)
    for k in off.params:
        np.testing.assert_allclose(on.params[k], off.params[k], rtol=1e-6, atol=1e-7)


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


@pytest.mark.parametrize("kind, role, marker, op, finite", STEP_CASES)
def test_cuda_train_step_nan_is_reported_at_its_origin(fake_gpu, kind, role, marker, op, finite):
    _check_train_step("cuda", kind, role, marker, op, finite)


def test_cuda_no_false_alarm_on_padded_max_pool(fake_gpu):
    """cuda decomposes max pooling into graph ops (a -inf pad among them): still no report."""
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = gc.compile(_conv_pool(), backend="reference")(x)
    got = gc.compile(_conv_pool(), backend="cuda", check_numerics=True)(x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4)
