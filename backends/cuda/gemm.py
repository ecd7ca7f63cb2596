"""`Gemm` statements -> a generated GEMM kernel (templates in gemm_templates.py).

One launch covers the whole statement and the loops around it: `gridDim.x/y` tile C, and
`gridDim.z` (a grid-stride loop past 65,535) runs over the loops of the nest and
`Gemm.batch`, each z evaluating the operand offsets of its matrix. That is only correct
when different z write disjoint parts of C, which is checked (mixed-radix test of C's
offsets against the footprint of one matrix); the lowering never produces anything else,
and a GEMM whose matrices overlap C in memory is rejected too.

Tile shapes: f16 x f16 on tensor cores (64x64x32, 4 warps of 32x32). Otherwise SIMT:
128x128x8 with 8x8 per thread when the problem has enough such tiles to fill a large GPU
(CodegenOptions.big_gemm_tiles, 120: an H100 has 132 SMs), else 64x64x16 with 4x4 per
thread; 8-byte accumulators (f64, i64) always use the smaller tile (registers).
"""
from __future__ import annotations

from math import prod

from ...ir import kernel as K
from . import analysis as A
from .cexpr import CudaCodegenError, compute_dtype, mem_type, reg_type
from .module import Launch, ModuleWriter, _decompose, _Plan

MAX_GRID_Z = 65535
MAX_GRID_Y = 65535


def gemm_lds(g: K.Gemm) -> tuple[int, int, int]:
    """Leading dimensions with 0 meaning the dense default."""
    return (g.lda or (g.m if g.trans_a else g.k), g.ldb or (g.k if g.trans_b else g.n), g.ldc or g.n)


def tile_config(g: K.Gemm, a_dt: str, b_dt: str, c_dt: str, z: int, opt) -> tuple[str, tuple[int, ...], int]:
    """(template, tile parameters, threads per block)."""
    if opt.tensor_cores and a_dt == "f16" and b_dt == "f16":
        return "wmma", (64, 64, 32), 128
    big = -(-g.m // 128) * -(-g.n // 128) * z >= opt.big_gemm_tiles
    if big and c_dt in ("f16", "f32", "i32"):  # 4-byte accumulators: 64 of them fit in registers
        return "simt", (128, 128, 8, 8, 8), 256
    return "simt", (64, 64, 16, 4, 4), 256


def _check_disjoint(mw: ModuleWriter, k: K.Kernel, g: K.Gemm, loops: list[K.For]) -> None:
    """Every z (loop iteration x batch index) must write its own part of C."""
    where = f"kernel {k.name!r}" + (f" (computes {k.source})" if k.source else "")
    c_st = mw.storage[g.c]
    for other in (g.a, g.b):
        if mw.storage[other].overlaps(c_st):
            raise CudaCodegenError(f"{where}: GEMM operand {other!r} overlaps its result {g.c!r}")
    _, _, ldc = gemm_lds(g)
    footprint = (g.m - 1) * ldc + g.n if g.m and g.n else 0
    form = A.affine(g.offset_c) if not isinstance(g.offset_c, int) else {"": g.offset_c}
    if form is None:
        raise CudaCodegenError(f"{where}: GEMM result offset {g.offset_c} is not affine")
    terms = [(abs(form.get(l.var.name, 0)), l.extent) for l in loops if l.extent > 1]
    if g.batch > 1:
        terms.append((abs(g.stride_c), g.batch))
    span = footprint
    for c, e in sorted(terms):
        if c < span:
            raise CudaCodegenError(f"{where}: the matrices of a batched GEMM overlap in its result "
                                   f"{g.c!r}; the CUDA backend runs them concurrently")
        span = c * (e - 1) + span


def _epilogue_store(w, g: K.Gemm, c_ptr: str, ldc: int, acc_dt, dc) -> list[str]:
    """A lambda storing epilogue(acc (+ C)) at (i, j): the epilogue's `acc` is the
    accumulated value, its variables `i` and `j` the row and column."""
    acc_t = reg_type(acc_dt)
    lam = [f"    auto store = [&](gc_i64 gi, gc_i64 gj, {acc_t} value) {{",
           f"      {mem_type(dc)}* dst = {c_ptr} + oc + gi * {ldc} + gj;"]
    if g.accumulate:
        lam.append(f"      value = value + ({acc_t})gc_val(*dst);")
    saved = dict(w.vars)
    w.vars["i"], w.vars["j"] = "gi", "gj"
    w.ranges.update({"i": g.m, "j": g.n})
    w.locals["acc"] = ("value", acc_dt)
    result = w.expr(g.epilogue)
    w.vars = saved
    w.locals.pop("acc", None)
    value = w.conv(result, g.epilogue.dtype, dc)
    if dc.name == "f16":
        value = f"__float2half_rn({value})"
    elif dc.is_bool:
        value = f"(unsigned char)({value})"
    return lam + [f"      *dst = {value};", "    };"]


def render_gemm(mw: ModuleWriter, k: K.Kernel, fname: str, plan: _Plan) -> None:
    g: K.Gemm = plan.body[0]
    loops = plan.nest
    if min(g.m, g.n, g.batch) <= 0:
        return
    _check_disjoint(mw, k, g, loops)
    dts = mw.dtypes
    da, db, dc = dts[g.a], dts[g.b], dts[g.c]
    acc_dt = compute_dtype(dc)
    if acc_dt.is_bool:
        from ...ir.dtypes import i64
        acc_dt = i64
    stmts: list[K.Stmt] = loops[:1] if loops else [g]
    used, written = mw.buffers_of(stmts)
    w = mw.writer(k, used, A.loop_extents(stmts))
    z_loops = [l for l in loops if l.extent > 1]
    batch_var = K.For(K.Var("gemm_batch"), g.batch, [], "serial")
    if g.batch > 1:
        z_loops = z_loops + [batch_var]
    z_total = prod(l.extent for l in z_loops)
    kind, tile, threads = tile_config(g, da.name, db.name, dc.name, z_total, mw.opt)
    bm, bn = tile[0], tile[1]
    lda, ldb, ldc = gemm_lds(g)
    lines = ["  for (gc_i64 z = blockIdx.z; z < %d; z += gridDim.z) {" % z_total]
    for l in loops:
        if l.extent == 1:
            w.vars[l.var.name] = "0"
    if z_loops:
        lines += _decompose(w, "z", z_loops, "    ")
    gb = w.vars.get("gemm_batch", "0")

    def offset(off, stride) -> str:
        base = w.index(off) if not isinstance(off, int) else str(off)
        return f"(gc_i64)({base}) + (gc_i64){gb} * {stride}" if stride and g.batch > 1 else f"(gc_i64)({base})"

    a_ptr, b_ptr, c_ptr = w.buffers[g.a], w.buffers[g.b], w.buffers[g.c]
    lines.append(f"    const gc_i64 oa = {offset(g.offset_a, g.stride_a)};")
    lines.append(f"    const gc_i64 ob = {offset(g.offset_b, g.stride_b)};")
    lines.append(f"    const gc_i64 oc = {offset(g.offset_c, g.stride_c)};")
    acc_t = reg_type(acc_dt)
    if g.epilogue is None:
        accum = "true" if g.accumulate else "false"
        lines.append(f"    GcStore<{mem_type(dc)}, {acc_t}, {accum}> store{{{c_ptr} + oc, {ldc}}};")
    else:
        lines += _epilogue_store(w, g, c_ptr, ldc, acc_dt, dc)
    ta, tb = "true" if g.trans_a else "false", "true" if g.trans_b else "false"
    if kind == "wmma":
        call = (f"gc_gemm_wmma<{tile[0]}, {tile[1]}, {tile[2]}, {ta}, {tb}>"
                f"({a_ptr} + oa, {b_ptr} + ob, {g.m}, {g.n}, {g.k}, {lda}, {ldb}, store);")
    else:
        bm_, bn_, bk, tm, tn = tile
        call = (f"gc_gemm_simt<{mem_type(da)}, {mem_type(db)}, {acc_t}, {bm_}, {bn_}, {bk}, {tm}, {tn}, "
                f"{ta}, {tb}>({a_ptr} + oa, {b_ptr} + ob, {g.m}, {g.n}, {g.k}, {lda}, {ldb}, store);")
    lines += [f"    {call}", "  }"]
    grid_y = -(-g.m // bm)
    if grid_y > MAX_GRID_Y:
        raise CudaCodegenError(f"kernel {k.name!r}: GEMM with {g.m} rows exceeds the grid "
                               f"({MAX_GRID_Y} tiles of {bm})")
    grid = (-(-g.n // bn), grid_y, min(z_total, MAX_GRID_Z))
    head = (f'extern "C" __global__ void __launch_bounds__({threads}) '
            f'{fname}({mw.signature(used, written)})')
    mw.parts.append(f"// {k.name}: {k.source}\n{head} {{\n" + "\n".join(lines) + "\n}\n")
    mw.launches.append(Launch(fname, grid, (threads, 1, 1), used, k.name, k.source, grid_stride=False))
    mw.functions.append(fname)
