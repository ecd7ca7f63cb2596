"""Operator fusion: groups in the IR, one kernel per group, unchanged results."""
from __future__ import annotations


import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.compile import prepare
from graphc.passes.fusion import fuse
from graphc.passes.legalize import legalize
from graphc.passes.lower import lower
from tests.examples import load

needs_llvm = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")




def chain_graph(n=(64, 33)):
    g = gc.Graph("chain")
    with g:
        x = gc.placeholder("x", n)
        b = gc.placeholder("b", (n[-1],))
        y = gc.tanh(x * 1.5 + b) * gc.sigmoid(x) + x * x - 1.0
    return g, y


def test_elementwise_chain_becomes_one_kernel():
    g, y = chain_graph()
    work, _ = prepare(g, y)
    assert len(lower(work, fuse_ops=False).kernels) == 8
    prog = lower(work)
    assert len(prog.kernels) == 1
    # fused intermediates never reach memory: only the output is written
    assert prog.kernels[0].writes == ["out0"] and prog.arena_bytes == 0


def test_groups_show_in_the_text_dump_and_round_trip():
    g, y = chain_graph()
    work, _ = prepare(g, y)
    stats = fuse(work)
    assert stats.groups == 1 and stats.nodes_fused == len(work.nodes)
    text = work.to_text()
    assert text.count("group(0)") == len(work.nodes)
    assert gc.parse(text).to_text() == text


def test_row_reduction_absorbs_its_producers():
    g = gc.Graph("sm")
    with g:
        x = gc.placeholder("x", (8, 100))
        s = gc.softmax(x, axis=1)
        mse = ((x - 0.5) * (x - 0.5)).mean(axis=1)
    work, _ = prepare(g, [s, mse])
    legalize(work)
    unfused = len(lower(work, fuse_ops=False).kernels)
    fused = lower(work)
    assert len(fused.kernels) < unfused
    # the squared error and its mean join the softmax over the same rows of x (horizontal
    # fusion): one kernel reads x and writes only the two results
    assert len(fused.kernels) == 1 and sorted(fused.kernels[0].writes) == ["out0", "out1"]
    assert fused.arena_bytes == 0


def test_no_fusion_across_an_outside_reader_scheduled_in_between():
    """b = exp(a); c = reduce(b) reads b outside the group before d = b * 2 joins: d may
    not join exp's group, or c would read b before the fused kernel computed it."""
    g = gc.Graph("order")
    with g:
        a = gc.placeholder("a", (4, 5))
        b = gc.exp(a)
        c = gc.sum(b, axis=0)       # a column reduction: never fused
        d = b * 2.0 + gc.sum(c)     # reads b (group) and c (scheduled after b)
    work, _ = prepare(g, [d])
    fuse(work)
    by_op = {n.op: n for n in work.nodes}
    assert by_op["exp"].group is None or by_op["exp"].group != by_op["mul"].group


@needs_llvm
def test_fused_and_unfused_programs_agree_with_the_reference():
    g, y = chain_graph((1000, 17))
    x = np.random.default_rng(0).standard_normal((1000, 17)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal(17).astype(np.float32)
    want = gc.compile(g, y, backend="reference")(x=x, b=b)
    for level in (0, 2):
        got = gc.compile(g, y, backend="llvm", opt_level=level)(x=x, b=b)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


@needs_llvm
@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_train_step_kernel_counts_and_results(which):
    if which == "cnn":
        ex = load("examples/digits_cnn.py", "digits_cnn")
        g = ex.build_train_step()
        images, labels = gc.load_digits()
        feeds = {"x": images[:ex.BATCH, None], "t": labels[:ex.BATCH]}
        counts = (70, 26)  # convolutions (with bias + relu), their gradients and max pools: one kernel each
    else:
        mb = load("benchmarks/mlp_step.py", "mlp_step")
        g = mb.build()
        rng = np.random.default_rng(0)
        feeds = {"x": rng.standard_normal((mb.B, mb.D)).astype(np.float32),
                 "t": rng.integers(0, mb.C, mb.B).astype(np.int32)}
        counts = (53, 25)  # the three SGD updates stay elementwise kernels (donated in place)
    work, _ = prepare(g)
    assert (len(lower(work, fuse_ops=False).kernels), len(lower(work).kernels)) == counts
    o0 = gc.compile(g, backend="llvm", opt_level=0)
    o2 = gc.compile(g, backend="llvm", opt_level=2)
    for _ in range(2):
        l0, l2 = o0(**feeds)[0], o2(**feeds)[0]
        np.testing.assert_allclose(l2, l0, rtol=1e-5)
    for k in o0.params:
        np.testing.assert_allclose(o2.params[k], o0.params[k], rtol=1e-4, atol=1e-6)


# --- row kernels: reductions with their consumers and further reductions over the rows ------

def _composite(which, shape=(37, 29)):
    """A graph computing `which` over a placeholder x, its gradient included for the
    training-side composites; returns (graph, outputs)."""
    rng = np.random.default_rng(3)
    g = gc.Graph(which)
    with g:
        x = gc.placeholder("x", shape)
        c = shape[-1]
        if which == "softmax":
            outs = [gc.softmax(x, axis=-1)]
        elif which == "log_softmax":
            outs = [gc.log_softmax(x, axis=-1)]
        elif which == "cross_entropy":
            t = gc.placeholder("t", shape[:1], "i32")
            loss = gc.softmax_cross_entropy(x, t)
            outs = [loss, gc.grad(loss, [x])[0]]
        elif which == "layer_norm":
            gamma = gc.param("gamma", (c,), init=gc.init.normal(1.0, seed=1))
            beta = gc.param("beta", (c,), init=gc.init.normal(0.5, seed=2))
            y = gc.layer_norm(x, gamma, beta)
            w = gc.constant(rng.standard_normal(shape).astype(np.float32))
            loss = gc.sum(y * w)
            outs = [y, *gc.grad(loss, [x, gamma, beta])]
        else:  # batch norm over NCHW: one row per channel
            gamma = gc.param("gamma", (shape[1],), init=gc.init.normal(1.0, seed=1))
            beta = gc.param("beta", (shape[1],), init=gc.init.normal(0.5, seed=2))
            y = gc.batch_norm(x, gamma, beta)[0]
            w = gc.constant(rng.standard_normal(shape).astype(np.float32))
            loss = gc.sum(y * w)
            outs = [y, *gc.grad(loss, [x, gamma, beta])]
    return g, outs


def _feeds(g, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for v in g.inputs:
        if v.dtype.is_float:
            out[v.name] = (3 * rng.standard_normal(v.shape) + 1).astype(v.dtype.np_dtype)
        else:
            out[v.name] = rng.integers(0, 29, v.shape).astype(v.dtype.np_dtype)
    return out


COMPOSITES = [("softmax", (37, 29)), ("log_softmax", (37, 29)), ("cross_entropy", (37, 29)),
              ("layer_norm", (37, 29)), ("batch_norm", (6, 5, 4, 3))]


@pytest.mark.parametrize("which,shape", COMPOSITES)
def test_row_composites_keep_no_intermediate_in_memory(which, shape):
    """Each composite's passes over its rows run in one kernel: fewer kernels than unfused
    touch buffers of the input's size, and, but for the norms' backward (whose gamma and
    beta gradients are column sums, which row kernels do not compute), no fused kernel
    writes a temp of that size (one_hot's masks are opaque to fusion)."""
    g, outs = _composite(which, shape)
    work, _ = prepare(g, outs)
    size = int(np.prod(shape))
    unfused, fused = lower(work, fuse_ops=False), lower(work)

    def big(prog):
        return [k.name for k in prog.kernels
                if any(prog.buffers[b].size == size for b in (*k.reads, *k.writes) if b in prog.buffers)]
    big_temps = [b for k in fused.kernels if k.name.endswith("_fused") for b in k.writes
                 if fused.buffers[b].kind == "temp" and fused.buffers[b].size >= size]
    assert len(big_temps) <= (2 if which.endswith("_norm") else 0), big_temps
    assert len(big(fused)) < len(big(unfused))
    # one row kernel each; the norms also read the first element of each row (a slice, the
    # shift of their two-pass variance), the layer norm's gamma and beta gradients are two
    # column sums, and the cross-entropy's two one_hot masks come from kernels of their own
    expected = {"layer_norm": 4, "batch_norm": 2, "cross_entropy": 4}.get(which, 1)
    assert len(big(fused)) == expected, big(fused)


def test_softmax_is_three_phases_over_a_row_with_one_exp():
    """max | sum(exp(x - m)) | e / s: exp runs once per element; the second phase stores e in
    the result's buffer and the third loads it back."""
    g, outs = _composite("softmax")
    work, _ = prepare(g, outs)
    prog = lower(work)
    (k,) = [k for k in prog.kernels if k.name.endswith("_fused")]
    text = str(k)
    assert text.count("exp(") == 1 and text.count("[reduce]") == 2 and text.count("[vectorize]") == 1
    assert k.writes == ["out0"] and prog.arena_bytes == 0


@needs_llvm
@pytest.mark.parametrize("which,shape", COMPOSITES)
def test_row_composites_fused_equal_unfused_and_reference(which, shape):
    g, outs = _composite(which, shape)
    feeds = _feeds(g)
    want = gc.compile(g, outs, backend="reference")(**feeds)
    for level in (0, 2):
        got = gc.compile(g, outs, backend="llvm", opt_level=level)(**feeds)
        for w, v in zip(want, got):
            np.testing.assert_allclose(v, w, rtol=2e-4, atol=2e-5)


def _random_row_graph(seed):
    """Random chains of reductions over the last axes, elementwise ops over the domain that
    read reduced values, and per-row arithmetic: the shapes row kernels are built from."""
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(2, 4))
    shape = tuple(int(d) for d in rng.integers(1, 7, rank))
    shape = shape[:-1] + (int(rng.integers(2, 9)),)
    nred = int(rng.integers(1, rank))
    axes = tuple(range(rank - nred, rank))
    g = gc.Graph(f"rows{seed}")
    with g:
        x = gc.placeholder("x", shape)
        b = gc.placeholder("b", shape[-1:])
        dom = [x, x * b]
        rows = []
        for _ in range(int(rng.integers(3, 9))):
            pick = rng.integers(0, 4)
            if pick == 0 or not rows:
                red = [gc.sum, gc.mean, gc.max, gc.min][rng.integers(0, 4)]
                keep = bool(rng.integers(0, 2))
                r = red(dom[rng.integers(len(dom))], axis=axes, keepdims=keep)
                rows.append(r if keep else gc.reshape(r, [1 if a in axes else d for a, d in enumerate(shape)]))
            elif pick == 1:
                r = rows[rng.integers(len(rows))]
                dom.append([gc.tanh, gc.exp, gc.neg][rng.integers(0, 3)](dom[rng.integers(len(dom))] - r))
            elif pick == 2:
                r1, r2 = rows[rng.integers(len(rows))], rows[rng.integers(len(rows))]
                rows.append(gc.sqrt(r1 * r1 + 1.0) + r2 * 0.5)
            else:
                dom.append(dom[rng.integers(len(dom))] * dom[rng.integers(len(dom))] + b)
        outs = [dom[-1], rows[-1]] + ([dom[int(rng.integers(len(dom)))]] if rng.integers(0, 2) else [])
    return g, outs


@needs_llvm
def test_random_row_graphs_fused_equal_unfused_and_reference():
    fused_groups = 0
    for seed in range(24):
        g, outs = _random_row_graph(seed)
        feeds = _feeds(g, seed)
        feeds["x"] = feeds["x"] * 0.3
        work, _ = prepare(g, outs)
        fused_groups += fuse(work).groups
        ref = gc.compile(g, outs, backend="reference")
        feeds = {k: feeds[k] for k in ref.input_names}
        want = ref(**feeds)
        for level in (0, 2):
            got = gc.compile(g, outs, backend="llvm", opt_level=level)(**feeds)
            for w, v in zip(want, got):
                np.testing.assert_allclose(v, w, rtol=1e-4, atol=1e-5, err_msg=f"seed {seed}")
    assert fused_groups >= 24  # the generator does exercise row kernels


def test_a_malformed_group_in_text_ir_is_a_clear_error():
    g = gc.parse("""
graph @bad(%x: f32[4,6], %w: f32[6,6]) {
  %0 = max(%x) {axes=[1], keepdims=true} : f32[4,1] group(0)
  %1 = matmul(%x, %w) : f32[4,6] group(0)
  %2 = sub(%1, %0) : f32[4,6] group(0)
  return %2
}""")
    with pytest.raises(gc.GraphcError, match="fusion group 0.*matmul"):
        lower(g, fuse_ops=None)


# --- GEMM epilogues ----------------------------------------------------------------------------

def _gemm_kernels(prog):
    from graphc.ir import kernel as K
    out = []
    for k in prog.kernels:
        stack = list(k.body)
        while stack:
            s = stack.pop()
            if isinstance(s, K.Gemm):
                out.append((k, s))
            elif isinstance(s, K.For):
                stack.extend(s.body)
    return out


def _linear_graph(residual=False, leak=False):
    g = gc.Graph("linear")
    with g:
        x = gc.placeholder("x", (70, 48))
        w = gc.param("w", (48, 40), init=gc.init.normal(0.2, seed=1))
        b = gc.param("b", (40,), init=gc.init.normal(0.5, seed=2))
        h = x @ w + b
        y = gc.relu(h)
        if residual:
            r = gc.placeholder("r", (70, 40))
            y = gc.tanh(y + r)
        outs = [y, h] if leak else [y]
    return g, outs


@pytest.mark.parametrize("residual", [False, True])
def test_bias_activation_and_residual_fuse_into_the_gemm(residual):
    g, outs = _linear_graph(residual)
    work, _ = prepare(g, outs)
    prog = lower(work)
    ((k, gemm),) = _gemm_kernels(prog)
    assert len(prog.kernels) == 1 and gemm.c == "out0" and prog.arena_bytes == 0
    loads = {e.buffer for e in gc.ir.kernel.walk_exprs(gemm.epilogue) if isinstance(e, gc.ir.kernel.Load)}
    assert loads == ({"param_b", "in_r"} if residual else {"param_b"})
    if "llvm" in available_backends():  # the library GEMM calls the epilogue on its tiles
        from graphc.backends.llvm import codegen
        text = codegen.generate(prog).text
        assert ".epi" in text and "graphc_gemm_f32" in text


def test_an_epilogue_value_read_elsewhere_stays_out_of_the_gemm():
    """h = x @ w + b is also a result: relu cannot join (an epilogue stores one value)."""
    g, outs = _linear_graph(leak=True)
    work, _ = prepare(g, outs)
    prog = lower(work)
    ((k, gemm),) = _gemm_kernels(prog)
    assert gemm.c == "out1" and len(prog.kernels) == 2


def test_conv_bias_relu_fuse_through_the_im2col_reshape():
    g = gc.Graph("conv")
    with g:
        x = gc.placeholder("x", (3, 2, 6, 6))
        conv = gc.nn.Conv2d(2, 4, 3, padding=1)
        y = gc.relu(conv(x))
    work, _ = prepare(g, [y])
    legalize(work)
    fuse(work)
    by_op = {n.op: n for n in work.nodes}
    assert by_op["matmul"].group is not None
    assert by_op["matmul"].group == by_op["add"].group == by_op["relu"].group


@needs_llvm
@pytest.mark.parametrize("shape", [(70, 48, 40), (300, 200, 260)])
def test_gemm_epilogues_equal_unfused_and_reference(shape):
    m, k, n = shape
    g = gc.Graph("epi")
    with g:
        x = gc.placeholder("x", (m, k))
        r = gc.placeholder("r", (m, n))
        w = gc.param("w", (k, n), init=gc.init.normal(0.1, seed=1))
        b = gc.param("b", (n,), init=gc.init.normal(0.5, seed=2))
        y1 = gc.relu(x @ w + b)
        y2 = gc.sigmoid(x @ w * 0.5 + r)                 # residual, scalar, transcendental
        conv = gc.nn.Conv2d(3, 5, 3, padding=1)
        img = gc.placeholder("img", (4, 3, 7, 7))
        y3 = gc.tanh(conv(img) + 0.25)
    outs = [y1, y2, y3]
    feeds = _feeds(g)
    want = gc.compile(g, outs, backend="reference")(**feeds)
    for level in (0, 2):
        got = gc.compile(g, outs, backend="llvm", opt_level=level)(**feeds)
        for w_, v in zip(want, got):
            np.testing.assert_allclose(v, w_, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("squares_first", [False, True])
def test_sibling_reductions_of_one_input_share_a_kernel(squares_first):
    """sum(x) and sum(x * x) over the same rows (in either order): one kernel reads x once."""
    g = gc.Graph("moments")
    with g:
        x = gc.placeholder("x", (33, 70))
        if squares_first:
            s2 = gc.sum(x * x, axis=1)
            s1 = gc.sum(x, axis=1)
        else:
            s1 = gc.sum(x, axis=1)
            s2 = gc.sum(x * x, axis=1)
        var = s2 / 70.0 - (s1 / 70.0) * (s1 / 70.0)
    work, _ = prepare(g, [var])
    prog = lower(work)
    assert len(prog.kernels) == 1 and prog.arena_bytes == 0
    assert str(prog.kernels[0]).count("[reduce]") == 1  # both sums in one pass
    if "llvm" in available_backends():
        xv = np.random.default_rng(5).standard_normal((33, 70)).astype(np.float32)
        want = gc.compile(g, var, backend="reference")(x=xv)
        np.testing.assert_allclose(gc.compile(g, var, backend="llvm")(x=xv), want, rtol=1e-4, atol=1e-5)


@needs_llvm
def test_a_cached_value_is_read_back_before_its_home_is_overwritten():
    """exp(x - m) is needed in two phases, so it is kept in the buffer of a result written
    in the last phase; here that result comes first in the schedule, so the last phase must
    load the cached value before it stores the result."""
    g = gc.Graph("home")
    with g:
        x = gc.placeholder("x", (9, 31))
        m = gc.max(x, axis=1, keepdims=True)
        q = gc.sum(x * m, axis=1, keepdims=True)
        home = x * q                        # written in the last phase, scheduled first
        e = gc.exp(x - m)                   # used by the sum and by y: cached, not recomputed
        y = e * gc.sum(e, axis=1, keepdims=True)
    work, _ = prepare(g, [home, y])
    prog = lower(work)
    (k,) = prog.kernels
    assert str(k).count("exp(") == 1
    xv = np.random.default_rng(2).standard_normal((9, 31)).astype(np.float32)
    want = gc.compile(g, [home, y], backend="reference")(x=xv)
    got = gc.compile(g, [home, y], backend="llvm")(x=xv)
    for w, v in zip(want, got):
        np.testing.assert_allclose(v, w, rtol=1e-4, atol=1e-4)


@needs_llvm
@pytest.mark.parametrize("b_shape", [(1, 1, 6, 1), (6, 1), (1, 4, 6, 1), (1, 1, 1, 6), (4, 1, 1),
                                     (4, 6, 6)])
def test_an_epilogue_operand_broadcast_over_rows_after_an_activation(b_shape):
    """tanh(conv2d(x, w)) - b with b broadcast over H (issue 14 f). The conv's GEMM result
    is (N, K, OH*OW): whether b can be indexed from its coordinates must be judged on that
    shape, not on the activation's (N, K, OH, OW); judged on the latter, fusion admitted the
    sub and the lowering found no strides for b (a TypeError at opt_level 1 and 2)."""
    g = gc.Graph("conv_epi")
    with g:
        x = gc.placeholder("x", (2, 3, 8, 8))
        w = gc.placeholder("w", (4, 3, 3, 3))
        b = gc.placeholder("b", b_shape)
        y = gc.tanh(gc.conv2d(x, w)) - b
    feeds = _feeds(g)
    want = gc.compile(g, y, backend="reference")(**feeds)
    for level in (0, 1, 2):
        got = gc.compile(g, y, backend="llvm", opt_level=level)(**feeds)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=f"opt_level={level}")
