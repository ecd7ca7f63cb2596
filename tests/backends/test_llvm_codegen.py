"""LLVM code generator, engine, runtime and compile cache on hand-built kernel IR programs.

Every program is compared with numpy computing the same thing. Tolerances: exact for
integer, bool and data-movement kernels and for IEEE-exact float arithmetic (+ - * /, casts,
compares, min/max); transcendental functions within 1e-5 relative (f32) / 1e-12 (f64) of
numpy (the math library documents <= 3 ulp); `reduce` loops within 1e-5 (f32) / 1e-12 (f64)
of sum|x|, since reassociation changes the summation order.
"""
from __future__ import annotations

import math
import os
import re
import threading

import numpy as np
import pytest

from graphc.backends.llvm import cache as cache_mod
from graphc.backends.llvm import codegen, engine, runtime
from graphc.backends.llvm.codegen import CodegenError, CodegenOptions
from graphc.ir import kernel as K
from graphc.ir.dtypes import bool_, f16, f32, f64, i32, i64
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType

NP = {"f16": np.float16, "f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64,
      "bool": np.bool_}
FORCE_PARALLEL = CodegenOptions(parallel_min_work=0, py_data_offset=runtime.PY_DATA_OFFSET,
                                max_threads=2)


def program(name, buffers, kernels, *, aliases=None, arena=None, arena_bytes=0):
    bufs = {n: K.Buffer(n, size, dt, kind) for n, (size, dt, kind) in buffers.items()}
    return K.Program(name, bufs, kernels, inputs=[n for n, b in bufs.items() if b.kind == "input"],
                     outputs=[n for n, b in bufs.items() if b.kind == "output"],
                     aliases=dict(aliases or {}), arena=dict(arena or {}), arena_bytes=arena_bytes)


def run(p, inputs, *, threads=None, options=None, compiled=None):
    """Compile (no cache) and run; returns every output buffer."""
    cp = compiled or runtime.compile_program(p, options=options, cache=False)
    arrays = {}
    for name in cp.external:
        b = p.buffers[name]
        if b.kind == "output":
            arr = np.empty(b.size, NP[b.dtype.name])
            if b.dtype.is_float:
                arr.fill(np.nan)  # unwritten elements show up
            arrays[name] = arr
        elif b.kind == "const":
            arrays[name] = np.ascontiguousarray(p.constants[name], NP[b.dtype.name]).reshape(-1)
        else:
            arrays[name] = np.ascontiguousarray(inputs[name], NP[b.dtype.name]).reshape(-1)
    runtime.run_program(cp, arrays, num_threads=threads)
    return {n: a for n, a in arrays.items() if p.buffers[n].kind == "output"}


def elementwise(name, n, exprs, in_dtypes, out_dtypes, mark="vectorize"):
    """One kernel per output: out_k[i] = exprs[k](loads...)."""
    i = K.Var("i")
    buffers = {f"x{j}": (n, dt, "input") for j, dt in enumerate(in_dtypes)}
    kernels = []
    for k, (fn, odt) in enumerate(zip(exprs, out_dtypes)):
        buffers[f"y{k}"] = (n, odt, "output")
        loads = [K.Load(f"x{j}", i, dt) for j, dt in enumerate(in_dtypes)]
        kernels.append(K.Kernel(f"k{k}", [K.For(i, n, [K.Store(f"y{k}", i, fn(*loads))], mark)]))
    return program(name, buffers, kernels)


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64))


FLOAT_UNARY = {
    "neg": np.negative, "abs": np.abs, "sign": np.sign, "exp": np.exp, "log": np.log,
    "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x), "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "erf": _erf, "sin": np.sin, "cos": np.cos,
}
POSITIVE_ONLY = {"log", "sqrt", "rsqrt"}


@pytest.mark.parametrize("dt", [f32, f64])
def test_float_unary(dt):
    n = 1003  # not a multiple of any vector width: tails run
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(n) * 3).astype(NP[dt.name])
    xp = np.abs(x) + np.asarray(0.01, NP[dt.name])
    ops = list(FLOAT_UNARY)
    p = elementwise(f"unary_{dt}", n, [lambda a, b, op=op: K.Unary(op, b if op in POSITIVE_ONLY else a, dt)
                                       for op in ops], [dt, dt], [dt] * len(ops))
    out = run(p, {"x0": x, "x1": xp})
    rtol = 1e-5 if dt == f32 else 1e-12
    for k, op in enumerate(ops):
        src = xp if op in POSITIVE_ONLY else x
        want = FLOAT_UNARY[op](src.astype(np.float64))
        np.testing.assert_allclose(out[f"y{k}"], want, rtol=rtol, atol=rtol * 0.1, err_msg=op)


def test_float_special_values():
    vals = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.5, 3.0], np.float32)
    a = np.repeat(vals, len(vals))
    b = np.tile(vals, len(vals))
    n = len(a)
    ops = [lambda x, y: K.Unary("sign", x, f32), lambda x, y: K.Unary("abs", x, f32),
           lambda x, y: K.Binary("max", x, y, f32), lambda x, y: K.Binary("min", x, y, f32),
           lambda x, y: K.Binary("mod", x, y, f32), lambda x, y: K.Binary("div", x, y, f32)]
    # a loop-invariant bound (relu, clip) takes another code path: constants, NaN included
    bounds = [np.nan, 0.0, -0.0, np.inf]
    ops += [lambda x, y, c=c, op=op: K.Binary(op, x, K.Const(c, f32), f32)
            for c in bounds for op in ("max", "min")]
    p = elementwise("special", n, ops, [f32, f32], [f32] * len(ops))
    out = run(p, {"x0": a, "x1": b})
    with np.errstate(all="ignore"):
        want = [np.sign(a), np.abs(a), np.maximum(a, b), np.minimum(a, b), np.mod(a, b), a / b]
        want += [f(a, np.float32(c)) for c in bounds for f in (np.maximum, np.minimum)]
    for k, w in enumerate(want):
        np.testing.assert_array_equal(out[f"y{k}"], w, err_msg=str(k))  # NaNs compare equal


@pytest.mark.parametrize("dt", [f32, f64])
def test_float_binary(dt):
    n = 517
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(n) * 4).astype(NP[dt.name])
    b = (rng.standard_normal(n) * 4).astype(NP[dt.name])
    b[::7] = 0.0
    ops = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
           "max": np.maximum, "min": np.minimum, "mod": np.mod}
    p = elementwise(f"fbin_{dt}", n, [lambda x, y, op=op: K.Binary(op, x, y, dt) for op in ops],
                    [dt, dt], [dt] * len(ops))
    out = run(p, {"x0": a, "x1": b})
    with np.errstate(all="ignore"):
        for k, (op, f) in enumerate(ops.items()):
            want = f(a, b)
            if op == "mod":  # frem is exact; numpy's fmod-based mod can differ in the last bit
                np.testing.assert_allclose(out[f"y{k}"], want, rtol=1e-6, atol=1e-6, err_msg=op)
            else:
                np.testing.assert_array_equal(out[f"y{k}"], want, err_msg=op)
    # pow on positive bases (and integral exponents of negative ones)
    base = np.abs(a) + np.asarray(0.5, NP[dt.name])
    expo = (b / 2).astype(NP[dt.name])
    p = elementwise(f"fpow_{dt}", n, [lambda x, y: K.Binary("pow", x, y, dt)], [dt, dt], [dt])
    out = run(p, {"x0": base, "x1": expo})
    np.testing.assert_allclose(out["y0"], np.power(base.astype(np.float64), expo),
                               rtol=1e-5 if dt == f32 else 1e-12)


@pytest.mark.parametrize("dt", [i32, i64])
def test_int_ops(dt):
    t = NP[dt.name]
    info = np.iinfo(t)
    a = np.array([7, -7, 7, -7, 0, 5, -5, info.min, info.min, 13, -13, 3, info.max, 1, -1, 2],
                 t)
    b = np.array([2, 2, -2, -2, 3, 0, 0, -1, 1, 5, 5, -4, 1, -1, -1, 3], t)
    n = len(a)
    binops = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.floor_divide,
              "mod": np.mod, "max": np.maximum, "min": np.minimum, "and": np.bitwise_and,
              "or": np.bitwise_or}
    unops = {"neg": np.negative, "abs": np.abs, "sign": np.sign, "not": np.invert}
    exprs = [lambda x, y, op=op: K.Binary(op, x, y, dt) for op in binops]
    exprs += [lambda x, y, op=op: K.Unary(op, x, dt) for op in unops]
    p = elementwise(f"int_{dt}", n, exprs, [dt, dt], [dt] * len(exprs), mark="serial")
    out = run(p, {"x0": a, "x1": b})
    with np.errstate(all="ignore"):
        wants = [f(a, b) for f in binops.values()] + [f(a) for f in unops.values()]
        wants[list(binops).index("div")] = np.where(b == 0, 0, np.floor_divide(a, np.where(b == 0, 1, b)))
    for k, (name, w) in enumerate(zip(list(binops) + list(unops), wants)):
        np.testing.assert_array_equal(out[f"y{k}"], w.astype(t), err_msg=name)
    # integer pow by squaring
    base = np.arange(-6, 6, dtype=t)
    expo = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 7, 9], t)
    p = elementwise(f"ipow_{dt}", len(base), [lambda x, y: K.Binary("pow", x, y, dt)], [dt, dt], [dt])
    np.testing.assert_array_equal(run(p, {"x0": base, "x1": expo})["y0"], np.power(base, expo))


def test_bool_and_compare():
    rng = np.random.default_rng(2)
    n = 300
    a = rng.random(n) < 0.5
    b = rng.random(n) < 0.5
    fa = rng.integers(-3, 3, n).astype(np.float32)
    fb = rng.integers(-3, 3, n).astype(np.float32)
    fa[::11] = np.nan
    ia = rng.integers(-3, 3, n).astype(np.int32)
    ib = rng.integers(-3, 3, n).astype(np.int32)
    i = K.Var("i")
    bufs = {"a": (n, bool_, "input"), "b": (n, bool_, "input"), "fa": (n, f32, "input"),
            "fb": (n, f32, "input"), "ia": (n, i32, "input"), "ib": (n, i32, "input")}
    wants = {}
    kernels = []

    def out(name, dt, expr, want):
        bufs[name] = (n, dt, "output")
        kernels.append(K.Kernel(name, [K.For(i, n, [K.Store(name, i, expr)], "vectorize")]))
        wants[name] = want

    A, B = K.Load("a", i, bool_), K.Load("b", i, bool_)
    out("and", bool_, K.Binary("and", A, B, bool_), a & b)
    out("or", bool_, K.Binary("or", A, B, bool_), a | b)
    out("not", bool_, K.Unary("not", A, bool_), ~a)
    out("bmax", bool_, K.Binary("max", A, B, bool_), a | b)
    out("bmin", bool_, K.Binary("min", A, B, bool_), a & b)
    syms = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
            "gt": np.greater, "ge": np.greater_equal}
    for op, f in syms.items():
        out(f"f{op}", bool_, K.Compare(op, K.Load("fa", i, f32), K.Load("fb", i, f32)), f(fa, fb))
        out(f"i{op}", bool_, K.Compare(op, K.Load("ia", i, i32), K.Load("ib", i, i32)), f(ia, ib))
    out("blt", bool_, K.Compare("lt", A, B), a < b)
    out("sel", f32, K.Select(A, K.Load("fa", i, f32), K.Load("fb", i, f32), f32), np.where(a, fa, fb))
    out("seli", i32, K.Select(K.Compare("gt", K.Load("ia", i, i32), K.Load("ib", i, i32)),
                              K.Load("ia", i, i32), K.Load("ib", i, i32), i32), np.maximum(ia, ib))
    p = program("bools", bufs, kernels)
    res = run(p, {"a": a, "b": b, "fa": fa, "fb": fb, "ia": ia, "ib": ib})
    for name, w in wants.items():
        np.testing.assert_array_equal(res[name], w, err_msg=name)


def test_casts():
    vals = np.array([-100.75, -3.5, -1.0, -0.25, 0.0, 0.5, 1.0, 2.75, 7.0, 99.5, 65.0, -0.0])
    dts = [f16, f32, f64, i32, i64, bool_]
    n = len(vals)
    i = K.Var("i")
    bufs = {f"x_{s}": (n, s, "input") for s in dts}
    kernels, wants, inputs = [], {}, {}
    for s in dts:
        src = vals.astype(NP[s.name])
        inputs[f"x_{s}"] = src
        for d in dts:
            name = f"c_{s}_{d}"
            bufs[name] = (n, d, "output")
            kernels.append(K.Kernel(name, [K.For(i, n, [K.Store(name, i, K.Cast(K.Load(f"x_{s}", i, s), d))],
                                                 "vectorize")]))
            wants[name] = src.astype(NP[d.name])
    res = run(program("casts", bufs, kernels), inputs)
    for name, w in wants.items():
        np.testing.assert_array_equal(res[name], w, err_msg=name)
    # float -> bool treats NaN as true; int -> float of large values rounds like numpy
    p = elementwise("nanbool", 3, [lambda x: K.Cast(x, bool_)], [f32], [bool_])
    np.testing.assert_array_equal(run(p, {"x0": np.array([np.nan, 0, -0.0], np.float32)})["y0"],
                                  [True, False, False])
    big = np.array([2**31 - 1, -2**31, 16777217, 123456789], np.int32)
    p = elementwise("i2f", 4, [lambda x: K.Cast(x, f32), lambda x: K.Cast(x, f16)], [i32], [f32, f16])
    res = run(p, {"x0": big})
    np.testing.assert_array_equal(res["y0"], big.astype(np.float32))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(res["y1"], big.astype(np.float16))


def test_f16_buffers_compute_in_f32():
    n = 777
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(n) * 2).astype(np.float16)
    p = elementwise("half", n, [lambda a: K.Binary("add", K.Binary("mul", a, K.Const(2.0, f16), f16),
                                                   K.Const(1.0, f16), f16),
                                lambda a: K.Unary("exp", a, f16),
                                lambda a: K.Unary("tanh", a, f16)], [f16], [f16, f16, f16])
    res = run(p, {"x0": x})
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(res["y0"], (x32 * 2 + 1).astype(np.float16))  # one rounding
    np.testing.assert_allclose(res["y1"].astype(np.float32), np.exp(x32), rtol=1e-3)
    np.testing.assert_allclose(res["y2"].astype(np.float32), np.tanh(x32), rtol=1e-3, atol=1e-4)


def _row_reduce(name, rows, cols, dt, op, init):
    """y[r] = op-reduce over x[r, :] with a local accumulator in a `reduce` loop."""
    r, c = K.Var("r"), K.Var("c")
    acc = K.LocalRef("acc", dt)
    x = K.Load("x", K.Binary("add", K.Binary("mul", r, K.Const(cols, i64), i64), c, i64), dt)
    body = [K.For(r, rows, [K.Declare(acc, K.Const(init, dt)),
                            K.For(c, cols, [K.Assign(acc, K.Binary(op, acc, x, dt))], "reduce"),
                            K.Store("y", r, acc)])]
    return program(name, {"x": (rows * cols, dt, "input"), "y": (rows, dt, "output")},
                   [K.Kernel("reduce", body)])


@pytest.mark.parametrize("dt,op", [(f32, "add"), (f64, "add"), (f32, "max"), (f64, "min"), (i64, "add"),
                                   (i32, "max")])
def test_reductions(dt, op):
    rows, cols = 13, 1003
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((rows, cols)) * 10).astype(NP[dt.name])
    if dt.is_float:
        x[3, 500] = np.nan  # max/min propagate it, sum too
    init = {"add": 0, "max": -np.inf if dt.is_float else np.iinfo(NP[dt.name]).min,
            "min": np.inf if dt.is_float else np.iinfo(NP[dt.name]).max}[op]
    res = run(_row_reduce(f"red_{dt}_{op}", rows, cols, dt, op, init), {"x": x})["y"]
    want = {"add": np.sum, "max": np.max, "min": np.min}[op](x.astype(np.float64) if dt.is_float else x, axis=1)
    if op == "add" and dt.is_float:
        tol = (1e-5 if dt == f32 else 1e-12) * np.nansum(np.abs(x.astype(np.float64)), axis=1)
        assert np.isnan(res[3])
        ok = ~np.isnan(want)
        assert np.all(np.abs(res[ok] - want[ok]) <= tol[ok])
    else:
        np.testing.assert_array_equal(res, want.astype(NP[dt.name]))


def test_reduce_loop_vectorises():
    p = _row_reduce("vecred", 4, 1024, f32, "add", 0.0)
    opt = engine.optimized_ir(codegen.generate(p, FORCE_PARALLEL).text)
    assert re.search(r"<(8|16) x float>", opt)  # reassoc lets LLVM vectorise the accumulation
    p = _row_reduce("vecmax", 4, 1024, f32, "max", -np.inf)
    opt = engine.optimized_ir(codegen.generate(p, FORCE_PARALLEL).text)
    assert "x float>" in opt


def test_nested_strided_loops():
    a, b, c = 3, 5, 7
    i, j, k = K.Var("i"), K.Var("j"), K.Var("k")

    def lin(*terms):
        e = None
        for v, s in terms:
            t = K.Binary("mul", v, K.Const(s, i64), i64) if s != 1 else v
            e = t if e is None else K.Binary("add", e, t, i64)
        return e

    # y[k, i, j] = x[i, j, k] (a 3-d permute), z[j, i] = x[i, j, 0] * 2 (strided gather)
    body1 = [K.For(i, a, [K.For(j, b, [K.For(k, c, [
        K.Store("y", lin((k, a * b), (i, b), (j, 1)), K.Load("x", lin((i, b * c), (j, c), (k, 1)), f64))],
        "vectorize")])], "parallel")]
    body2 = [K.For(j, b, [K.For(i, a, [K.Store("z", lin((j, a), (i, 1)),
                                                K.Binary("mul", K.Load("x", lin((i, b * c), (j, c)), f64),
                                                         K.Const(2.0, f64), f64))], "unroll")])]
    p = program("strided", {"x": (a * b * c, f64, "input"), "y": (a * b * c, f64, "output"),
                            "z": (a * b, f64, "output")},
                [K.Kernel("permute", body1), K.Kernel("gather", body2)])
    x = np.arange(a * b * c, dtype=np.float64).reshape(a, b, c)
    for threads in (1, 2):
        res = run(p, {"x": x}, threads=threads, options=FORCE_PARALLEL)
        np.testing.assert_array_equal(res["y"].reshape(c, a, b), x.transpose(2, 0, 1))
        np.testing.assert_array_equal(res["z"].reshape(b, a), (x[:, :, 0] * 2).T)


def test_parallel_loops_1_and_2_threads():
    rows, cols = 67, 129
    r, c = K.Var("r"), K.Var("c")
    acc = K.LocalRef("acc", f32)
    scale = K.LocalRef("scale", f32)
    idx = K.Binary("add", K.Binary("mul", r, K.Const(cols, i64), i64), c, i64)
    body = [
        # a local declared outside the parallel loop, read inside (captured by value)
        K.Declare(scale, K.Binary("mul", K.Load("s", K.Const(0, i64), f32), K.Const(2.0, f32), f32)),
        K.For(r, rows, [
            K.Declare(acc, K.Const(0.0, f32)),
            K.For(c, cols, [K.Assign(acc, K.Binary("add", acc, K.Load("x", idx, f32), f32))], "reduce"),
            K.For(c, cols, [K.Store("y", idx, K.Binary("mul", K.Unary("tanh", K.Load("x", idx, f32), f32),
                                                        scale, f32))], "vectorize"),
            K.Store("rowsum", r, acc)], "parallel"),
    ]
    p = program("par", {"x": (rows * cols, f32, "input"), "s": (1, f32, "input"),
                        "y": (rows * cols, f32, "output"), "rowsum": (rows, f32, "output")},
                [K.Kernel("par", body)])
    x = np.random.default_rng(5).standard_normal((rows, cols)).astype(np.float32)
    s = np.array([0.5], np.float32)
    cp = runtime.compile_program(p, options=FORCE_PARALLEL, cache=False)
    assert "GOMP_parallel" in codegen.generate(p, FORCE_PARALLEL).text
    results = [run(p, {"x": x, "s": s}, threads=t, compiled=cp) for t in (1, 2, 2)]
    for res in results:
        np.testing.assert_allclose(res["y"].reshape(rows, cols), np.tanh(x) * 1.0, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res["rowsum"], x.sum(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(results[0]["y"], results[1]["y"])  # same code per element
    # below the work threshold the loop is not forked at all
    small = codegen.generate(p, CodegenOptions(parallel_min_work=10**9))
    assert "GOMP_parallel" not in small.text


def test_work_estimate_counts_values_not_addresses():
    """The fork threshold compares against computed values, loads and stores; address
    arithmetic (divisions and modulos of plane numbers included) is strength-reduced by
    LLVM and must not make a small kernel look big."""
    i = K.Var("i")
    plane = K.Binary("div", i, K.Const(48, i64), i64)
    addr = K.Binary("add", K.Binary("mul", plane, K.Const(50, i64), i64), K.Binary("mod", i, K.Const(48, i64), i64), i64)
    value = K.Binary("mul", K.Load("x", addr, f32), K.Const(2.0, f32), f32)
    simple = K.Binary("mul", K.Load("x", i, f32), K.Const(2.0, f32), f32)
    n = 1000
    heavy = codegen.estimate_work([K.For(i, n, [K.Store("y", addr, value)], "serial")])
    plain = codegen.estimate_work([K.For(i, n, [K.Store("y", i, simple)], "serial")])
    assert heavy == plain == n * 3  # a load, a multiply and a store per element


def test_parallel_loop_rejects_racing_local():
    r = K.Var("r")
    acc = K.LocalRef("acc", f32)
    body = [K.Declare(acc, K.Const(0.0, f32)),
            K.For(r, 64, [K.Assign(acc, K.Binary("add", acc, K.Load("x", r, f32), f32))], "parallel"),
            K.Store("y", K.Const(0, i64), acc)]
    p = program("race", {"x": (64, f32, "input"), "y": (1, f32, "output")}, [K.Kernel("race", body)])
    with pytest.raises(CodegenError, match="data race"):
        codegen.generate(p, FORCE_PARALLEL)


def _gemm_ref(A, B, C0, g):
    m, n, k = g.m, g.n, g.k
    lda, ldb, ldc = codegen.gemm_lds(g)
    out = C0.copy()
    for bi in range(g.batch):
        oa = (g.offset_a if isinstance(g.offset_a, int) else 0) + bi * g.stride_a
        ob = (g.offset_b if isinstance(g.offset_b, int) else 0) + bi * g.stride_b
        oc = (g.offset_c if isinstance(g.offset_c, int) else 0) + bi * g.stride_c
        a = (np.lib.stride_tricks.as_strided(A[oa:], (k, m), (lda * A.itemsize, A.itemsize)).T if g.trans_a
             else np.lib.stride_tricks.as_strided(A[oa:], (m, k), (lda * A.itemsize, A.itemsize)))
        b = (np.lib.stride_tricks.as_strided(B[ob:], (n, k), (ldb * B.itemsize, B.itemsize)).T if g.trans_b
             else np.lib.stride_tricks.as_strided(B[ob:], (k, n), (ldb * B.itemsize, B.itemsize)))
        prod = a.astype(np.float64) @ b.astype(np.float64)
        cview = np.lib.stride_tricks.as_strided(out[oc:], (m, n), (ldc * out.itemsize, out.itemsize))
        cview[...] = prod + (cview if g.accumulate else 0)
    return out


GEMM_CASES = [
    # (m, n, k, batch, trans_a, trans_b, lda, ldb, ldc, accumulate): small -> loops, larger -> library
    (5, 7, 3, 1, False, False, 0, 0, 0, False),
    (33, 65, 47, 1, False, False, 0, 0, 0, False),
    (33, 65, 47, 1, True, False, 0, 0, 0, True),
    (40, 17, 64, 1, False, True, 0, 0, 0, False),
    (24, 31, 19, 1, True, True, 0, 0, 0, False),
    (20, 30, 40, 1, False, False, 45, 33, 37, False),  # padded leading dimensions
    (9, 11, 13, 3, False, False, 0, 0, 0, False),       # small batched
    (48, 40, 56, 4, False, True, 0, 0, 0, True),        # batched through the library
    (1, 256, 9, 1, False, False, 12, 300, 260, False),  # row-update loops (depthwise conv shape)
    (3, 40, 9, 2, True, False, 0, 0, 0, True),          # row-update loops, accumulating
]


@pytest.mark.parametrize("case", GEMM_CASES, ids=lambda c: "x".join(map(str, c[:4])) + ("tA" if c[4] else "")
                         + ("tB" if c[5] else "") + ("acc" if c[9] else ""))
@pytest.mark.parametrize("dt", [f32, f64])
def test_gemm(case, dt):
    m, n, k, batch, ta, tb, lda, ldb, ldc, acc = case
    rng = np.random.default_rng(6)
    g0 = K.Gemm("A", "B", "C", m, n, k, batch=batch, trans_a=ta, trans_b=tb, lda=lda, ldb=ldb, ldc=ldc,
                accumulate=acc)
    lda_, ldb_, ldc_ = codegen.gemm_lds(g0)
    sa = lda_ * (k if ta else m)
    sb = ldb_ * (n if tb else k)
    sc = ldc_ * m
    stride_b = 0 if batch == 3 else sb  # batch 3 broadcasts B
    g = K.Gemm("A", "B", "C", m, n, k, batch=batch, trans_a=ta, trans_b=tb, lda=lda, ldb=ldb, ldc=ldc,
               stride_a=sa if batch > 1 else 0, stride_b=stride_b if batch > 1 else 0,
               stride_c=sc if batch > 1 else 0, accumulate=acc)
    A = rng.standard_normal(sa * batch).astype(NP[dt.name])
    B = rng.standard_normal(sb * batch).astype(NP[dt.name])
    C0 = rng.standard_normal(sc * batch).astype(NP[dt.name])
    bufs = {"A": (A.size, dt, "input"), "B": (B.size, dt, "input"), "C0": (C0.size, dt, "input"),
            "C": (C0.size, dt, "output")}
    i = K.Var("i")
    copy = K.For(i, C0.size, [K.Store("C", i, K.Load("C0", i, dt))], "vectorize")
    p = program(f"gemm_{dt}", bufs, [K.Kernel("init", [copy]), K.Kernel("gemm", [g])])
    want = _gemm_ref(A, B, C0, g)
    mask = np.isnan(want)  # elements no matrix covers keep C0
    want[mask] = C0[mask]
    tol = 1e-4 if dt == f32 else 1e-11
    cp = runtime.compile_program(p, options=FORCE_PARALLEL, cache=False)
    text = codegen.generate(p, FORCE_PARALLEL).text
    assert (f"graphc_gemm_{dt}" in text) == (m * n * k >= codegen.GEMM_MIN_MNK)
    for threads in (1, 2):
        res = run(p, {"A": A, "B": B, "C0": C0}, threads=threads, compiled=cp)["C"]
        np.testing.assert_allclose(res, want, rtol=tol, atol=tol * np.sqrt(k))


@pytest.mark.parametrize("m,n,k", [(4, 6, 5), (30, 50, 20)])
def test_gemm_offsets_and_epilogue(m, n, k):
    """A batch loop in kernel IR with offsets as expressions of its variable, and a fused
    epilogue relu(acc + bias[j]) * scale[i]."""
    batch = 3
    bv = K.Var("b")
    acc = K.LocalRef("acc", f32)
    epi = K.Binary("mul", K.Binary("max", K.Binary("add", acc, K.Load("bias", K.Var("j"), f32), f32),
                                   K.Const(0.0, f32), f32), K.Load("scale", K.Var("i"), f32), f32)
    g = K.Gemm("A", "B", "C", m, n, k, offset_a=K.Binary("mul", bv, K.Const(m * k, i64), i64),
               offset_b=0, offset_c=K.Binary("mul", bv, K.Const(m * n, i64), i64), epilogue=epi)
    p = program("gemm_epi", {"A": (batch * m * k, f32, "input"), "B": (k * n, f32, "input"),
                             "bias": (n, f32, "input"), "scale": (m, f32, "input"),
                             "C": (batch * m * n, f32, "output")},
                [K.Kernel("gemm", [K.For(bv, batch, [g], "serial")])])
    rng = np.random.default_rng(7)
    A = rng.standard_normal((batch, m, k)).astype(np.float32)
    B = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    scale = rng.random(m).astype(np.float32)
    res = run(p, {"A": A, "B": B, "bias": bias, "scale": scale})["C"].reshape(batch, m, n)
    want = np.maximum(A.astype(np.float64) @ B + bias, 0) * scale[:, None]
    np.testing.assert_allclose(res, want, rtol=1e-4, atol=1e-4)
    # the same epilogue on a top-level GEMM, threaded
    g2 = K.Gemm("A", "B", "C", m, n, k, batch=batch, stride_a=m * k, stride_c=m * n, epilogue=epi)
    p2 = program("gemm_epi2", dict((kk, (p.buffers[kk].size, p.buffers[kk].dtype, p.buffers[kk].kind))
                                   for kk in p.buffers), [K.Kernel("gemm", [g2])])
    cp2 = runtime.compile_program(p2, options=FORCE_PARALLEL, cache=False)
    for threads in (1, 2):
        res2 = run(p2, {"A": A, "B": B, "bias": bias, "scale": scale}, threads=threads,
                   compiled=cp2)["C"].reshape(batch, m, n)
        np.testing.assert_allclose(res2, want, rtol=1e-4, atol=1e-4)


def test_gemm_defined_in_module_for_aot():
    m, n, k = 20, 24, 16
    g = K.Gemm("A", "B", "C", m, n, k, trans_b=True)
    p = program("aotgemm", {"A": (m * k, f32, "input"), "B": (n * k, f32, "input"),
                            "C": (m * n, f32, "output")}, [K.Kernel("g", [g])])
    opts = CodegenOptions(gemm_in_module=True, py_data_offset=0, max_threads=2)
    gen = codegen.generate(p, opts)
    assert 'define void @"graphc_gemm_f32"' in gen.text or "define void @graphc_gemm_f32" in gen.text
    rng = np.random.default_rng(8)
    A = rng.standard_normal((m, k)).astype(np.float32)
    B = rng.standard_normal((n, k)).astype(np.float32)
    res = run(p, {"A": A, "B": B}, options=opts)["C"].reshape(m, n)
    np.testing.assert_allclose(res, A @ B.T, rtol=1e-4, atol=1e-4)


def test_int_gemm_uses_loops():
    m, n, k = 6, 5, 4
    g = K.Gemm("A", "B", "C", m, n, k)
    p = program("igemm", {"A": (m * k, i32, "input"), "B": (k * n, i32, "input"), "C": (m * n, i32, "output")},
                [K.Kernel("g", [g])])
    A = np.arange(m * k, dtype=np.int32) - 7
    B = np.arange(k * n, dtype=np.int32) % 5
    res = run(p, {"A": A, "B": B})["C"]
    np.testing.assert_array_equal(res.reshape(m, n), A.reshape(m, k) @ B.reshape(k, n))


def test_aliases_and_arena_temps():
    n = 12
    i = K.Var("i")
    # t (arena @64) = x * 2; v = t[4:] (alias); relu in place on t through alias w = t[0:];
    # u (arena @0, reusing nothing) = v + 1; y = u
    kernels = [
        K.Kernel("double", [K.For(i, n, [K.Store("t", i, K.Binary("mul", K.Load("x", i, f32), K.Const(2.0, f32), f32))])]),
        K.Kernel("relu_inplace", [K.For(i, n, [K.Store("w", i, K.Binary("max", K.Load("t", i, f32), K.Const(0.0, f32), f32))])]),
        K.Kernel("plus1", [K.For(i, n - 4, [K.Store("u", i, K.Binary("add", K.Load("v", i, f32), K.Const(1.0, f32), f32))])]),
        K.Kernel("copy", [K.For(i, n - 4, [K.Store("y", i, K.Load("u", i, f32))])]),
    ]
    p = program("alias", {"x": (n, f32, "input"), "t": (n, f32, "temp"), "v": (n - 4, f32, "temp"),
                          "w": (n, f32, "temp"), "u": (n - 4, f32, "temp"), "y": (n - 4, f32, "output")},
                kernels, aliases={"v": ("t", 4), "w": ("t", 0)}, arena={"t": 64, "u": 0}, arena_bytes=128)
    x = np.linspace(-3, 3, n).astype(np.float32)
    res = run(p, {"x": x})["y"]
    np.testing.assert_array_equal(res, np.maximum(x * 2, 0)[4:] + 1)
    text = codegen.generate(p).text
    # the in-place kernel's two views of t must not be declared noalias; separate temps are
    inplace = next(line for line in text.splitlines() if "relu_inplace" in line and "define" in line)
    assert "noalias" not in inplace
    plus1 = next(line for line in text.splitlines() if "plus1" in line and "define" in line)
    assert plus1.count("noalias") == 2 and "align 64" in plus1


def test_codegen_errors():
    i = K.Var("i")
    p = program("bad", {"y": (4, f32, "output")},
                [K.Kernel("k", [K.For(i, 4, [K.Store("y", i, K.Load("nope", i, f32))])])])
    with pytest.raises(CodegenError, match="unknown buffer 'nope'"):
        codegen.generate(p)
    p = program("bad2", {"t": (4, f32, "temp"), "y": (4, f32, "output")},
                [K.Kernel("k", [K.For(i, 4, [K.Store("t", i, K.Const(1.0, f32))])])])
    with pytest.raises(CodegenError, match="no arena offset"):
        codegen.generate(p)
    p = program("bad3", {"y": (4, f32, "output")},
                [K.Kernel("k", [K.Store("y", K.Var("j"), K.Const(1.0, f32))])])
    with pytest.raises(CodegenError, match="outside its loop"):
        codegen.generate(p)


# -- the Executable ----------------------------------------------------------------------------

def _sgd_graph_and_program():
    """y = x + w; w <- w * 0.5 (+ a status check that x[0] >= 0); a constant c adds 1."""
    g = Graph("sgd")
    x = g.add_input("x", TensorType((4, 5), f32))
    w = g.add_param("w", TensorType((4, 5), f32), value=np.arange(20, dtype=np.float32).reshape(4, 5))
    c = g.add_constant(np.ones((4, 5), np.float32))
    y = g.add_node("add", [g.add_node("add", [x, w]).outputs[0], c]).outputs[0]
    neww = g.add_node("mul", [w, w]).outputs[0]  # types only; the program defines the math
    g.set_outputs([y])
    g.updates = {"w": neww}
    i = K.Var("i")
    prog = K.Program("sgd", {
        "in_x": K.Buffer("in_x", 20, f32, "input"), "param_w": K.Buffer("param_w", 20, f32, "param"),
        "const0": K.Buffer("const0", 20, f32, "const"), "out0": K.Buffer("out0", 20, f32, "output"),
        "upd_w": K.Buffer("upd_w", 20, f32, "output"), "status": K.Buffer("status", 2, i32, "output")},
        [K.Kernel("y", [K.For(i, 20, [K.Store("out0", i, K.Binary("add", K.Binary(
            "add", K.Load("in_x", i, f32), K.Load("param_w", i, f32), f32), K.Load("const0", i, f32), f32))])]),
         K.Kernel("upd", [K.For(i, 20, [K.Store("upd_w", i, K.Binary("mul", K.Load("param_w", i, f32),
                                                                     K.Const(0.5, f32), f32))])]),
         K.Kernel("check", [K.Store("status", K.Select(K.Compare("lt", K.Load("in_x", K.Const(0, i64), f32),
                                                                 K.Const(0.0, f32)), K.Const(0, i64),
                                                       K.Const(1, i64), i64), K.Const(1, i32))])],
        inputs=["in_x"], params={"w": "param_w"}, outputs=["out0"], updates={"w": "upd_w"},
        constants={"const0": np.ones(20, np.float32)})
    prog.status = "status"
    prog.errors = ["x[0] must not be negative"]
    return g, prog


def test_executable_params_updates_constants_status():
    g, prog = _sgd_graph_and_program()
    exe = runtime.LLVMExecutable(g, prog, single_output=True, cache=False)
    x = np.full((4, 5), 2.0, np.float32)
    w0 = np.arange(20, dtype=np.float32).reshape(4, 5)
    y = exe(x)
    np.testing.assert_array_equal(y, x + w0 + 1)
    np.testing.assert_array_equal(exe.params["w"], w0 * 0.5)
    y2 = exe(x=x)
    np.testing.assert_array_equal(y2, x + w0 * 0.5 + 1)
    assert y is not y2 and not np.shares_memory(y, y2)
    bad = x.copy()
    bad[0, 0] = -1
    with pytest.raises(runtime.KernelError, match="must not be negative"):
        exe(bad)
    np.testing.assert_array_equal(exe(x), x + w0 * 0.25 + 1)  # status is reset per call
    exe.num_threads = 1
    assert exe.num_threads == 1


def test_executable_concurrent_calls():
    g, prog = _sgd_graph_and_program()
    g.updates = {}
    prog.updates = {}
    exe = runtime.LLVMExecutable(g, prog, single_output=True, cache=False)
    w0 = np.arange(20, dtype=np.float32).reshape(4, 5)
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(200):
            x = rng.random((4, 5)).astype(np.float32)
            if not np.array_equal(exe(x), x + w0 + 1):
                errors.append(seed)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_llvm_backend_is_registered():
    from graphc.backends import _BACKENDS, available_backends
    assert "llvm" in available_backends()
    assert callable(_BACKENDS["llvm"]())


# -- the compile cache ---------------------------------------------------------------------------

def _small_program(name="cached", const=1.0):
    return elementwise(name, 16, [lambda a: K.Binary("add", a, K.Const(const, f32), f32)], [f32], [f32])


def _check(cp, p, const=1.0):
    x = np.arange(16, dtype=np.float32)
    np.testing.assert_array_equal(run(p, {"x0": x}, compiled=cp)["y0"], x + const)


def test_cache_memory_and_disk(tmp_path):
    p = _small_program()
    c = cache_mod.CompileCache(tmp_path)
    cp1 = runtime.compile_program(p, cache=c)
    assert cp1.source == "built"
    assert len(list(tmp_path.glob("*.gco"))) == 1
    cp2 = runtime.compile_program(p, cache=c)
    assert cp2.source == "memory"
    _check(cp2, p)
    fresh = cache_mod.CompileCache(tmp_path)  # as a new process would see it
    cp3 = runtime.compile_program(p, cache=fresh)
    assert cp3.source == "disk"
    _check(cp3, p)
    # a different program (even only in a constant) is a different entry
    p2 = _small_program(const=2.0)
    cp4 = runtime.compile_program(p2, cache=fresh)
    assert cp4.source == "built"
    _check(cp4, p2, 2.0)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_cache_corrupt_entry_is_rebuilt(tmp_path, damage):
    p = _small_program()
    runtime.compile_program(p, cache=cache_mod.CompileCache(tmp_path))
    (f,) = tmp_path.glob("*.gco")
    blob = bytearray(f.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0x55
    elif damage == "truncate":
        blob = blob[: len(blob) - 10]
    elif damage == "empty":
        blob = bytearray()
    else:
        blob = bytearray(b"\x7fELF" + bytes(200))
    f.write_bytes(bytes(blob))
    c = cache_mod.CompileCache(tmp_path)
    cp = runtime.compile_program(p, cache=c)
    assert cp.source == "built" and c.stats["corrupt"] == 1
    _check(cp, p)
    assert cache_mod.unpack(f.read_bytes()) is not None  # rewritten intact
    assert runtime.compile_program(p, cache=cache_mod.CompileCache(tmp_path)).source == "disk"


def test_cache_disabled_and_env(tmp_path, monkeypatch):
    p = _small_program("envcache")
    c = cache_mod.CompileCache(tmp_path, enabled=False)
    assert runtime.compile_program(p, cache=c).source == "built"
    assert runtime.compile_program(p, cache=c).source == "built"
    assert not list(tmp_path.glob("*.gco"))
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "moved"))
    monkeypatch.setenv("GRAPHC_CACHE", "1")
    cache_mod.default_cache().clear_memory()
    assert runtime.compile_program(p).source == "built"
    assert len(list((tmp_path / "moved").glob("*.gco"))) == 1
    monkeypatch.setenv("GRAPHC_CACHE", "0")
    assert not cache_mod.default_cache().enabled
    assert runtime.compile_program(p).source == "built"


def test_cache_key_covers_what_the_code_depends_on():
    i = K.Var("i")
    base = dict(x=(8, f32, "input"), t=(8, f32, "temp"), y=(8, f32, "output"))
    ks = [K.Kernel("a", [K.For(i, 8, [K.Store("t", i, K.Load("x", i, f32))])]),
          K.Kernel("b", [K.For(i, 8, [K.Store("y", i, K.Load("t", i, f32))])])]
    p1 = program("k", base, ks, arena={"t": 0}, arena_bytes=64)
    p2 = program("k", base, ks, arena={"t": 64}, arena_bytes=128)
    assert codegen.program_key(p1) != codegen.program_key(p2)
    g1 = K.Gemm("x", "x", "y", 2, 2, 2, lda=2)
    g2 = K.Gemm("x", "x", "y", 2, 2, 2, lda=4)
    q1 = program("g", base, [K.Kernel("g", [g1])], arena={"t": 0}, arena_bytes=64)
    q2 = program("g", base, [K.Kernel("g", [g2])], arena={"t": 0}, arena_bytes=64)
    assert codegen.program_key(q1) != codegen.program_key(q2)
    t = engine.host_target().key()
    assert cache_mod.make_key("p", t) != cache_mod.make_key("p", t + "x")
    assert cache_mod.make_key("p", t, "opt1") != cache_mod.make_key("p", t, "opt2")


def test_pyobject_data_offset_verified():
    assert runtime.PY_DATA_OFFSET in (0, 16)
    if runtime.PY_DATA_OFFSET:
        import ctypes
        a = np.arange(5.0)
        assert ctypes.c_void_p.from_address(id(a) + runtime.PY_DATA_OFFSET).value == a.ctypes.data


def test_gomp_loaded():
    assert engine.gomp_available()
    assert os.path.exists(engine.load_gomp()) or engine.load_gomp().startswith("libgomp")


def test_disk_cache_is_bounded_least_recently_used_first(tmp_path):
    import os
    import time
    c = cache_mod.CompileCache(tmp_path, enabled=True, max_disk_bytes=10_000)
    for i in range(6):
        c.get_or_build(f"k{i}", lambda i=i: bytes([i]) * 3000)
        past = time.time() - 100 + i  # distinct recency, all older than the next write
        os.utime(c.path(f"k{i}"), (past, past))
    left = sorted(p.stem for p in tmp_path.glob("*.gco"))
    total = sum(p.stat().st_size for p in tmp_path.glob("*.gco"))
    assert total <= 10_000 and "k5" in left and "k0" not in left


def test_compile_cache_hashes_every_generator_module():
    """The disk cache keys on the generator's source (cache.GENERATOR_SOURCES): every module
    in backends/llvm that codegen, gemm, mathlib or engine import, directly or not, must be
    in it, or editing that module would keep serving stale machine code."""
    import networkx as nx

    from tests.test_import_graph import import_graph
    g = import_graph()
    pkg = "graphc.backends.llvm"
    reach: set[str] = set()
    for root in ("codegen", "gemm", "mathlib", "engine"):
        reach |= {f"{pkg}.{root}"} | nx.descendants(g, f"{pkg}.{root}")
    files = {m[len(pkg) + 1:] + ".py" for m in reach if m.startswith(pkg + ".")}
    assert len(files) > 10  # the split generator, seen through the import graph
    assert not files - set(cache_mod.GENERATOR_SOURCES)
