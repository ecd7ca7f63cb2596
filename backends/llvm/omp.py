"""OpenMP (libgomp) outlining: the one outliner of the LLVM backend.

A parallel region is a `void name(ptr data)` function that reads the region's values from
a stack struct, asks for its thread id and team size (omp_get_thread_num/num_threads, as
i64) and runs the body; the caller fills the struct and calls
`GOMP_parallel(name, &data, num_threads, 0)`, which runs it on every thread of the team,
the caller included, and returns after all have finished (implicit barrier). Kernel
parallel loops and team GEMMs (loops.py, gemm_call.py), the parallel GEMM entry
(gemm.py) and the batch-split trampoline (split.py) all outline through here. The process
must have libgomp loaded (engine.load_gomp).
"""
from __future__ import annotations

from typing import Callable

from llvmlite import ir

from .irtypes import I32, I64, PTR, VOID, _opaque_alloca

# declare(name, return type, argument types) -> the function, declared once per module
Declare = Callable[[str, ir.Type, list], ir.Function]
# body(builder, values, thread_id, num_threads): emits one thread's work
Body = Callable[[ir.IRBuilder, list, ir.Value, ir.Value], None]


def module_declare(module: ir.Module) -> Declare:
    """A `Declare` that reuses a module's existing global of that name."""
    def declare(name: str, ret: ir.Type, args: list) -> ir.Function:
        fn = module.globals.get(name)
        if fn is None:
            fn = ir.Function(module, ir.FunctionType(ret, args), name=name)
        return fn
    return declare


def outline(module: ir.Module, name: str, types: list, body: Body, declare: Declare) -> ir.Function:
    """Define the internal `void name(ptr data)` that unpacks values of `types` from the
    struct at `data` and runs `body` on them with its thread id and the team size."""
    st_t = ir.LiteralStructType(types)
    ofn = ir.Function(module, ir.FunctionType(VOID, [PTR]), name=name)
    ofn.linkage = "internal"
    ofn.attributes.add("nounwind")
    ob = ir.IRBuilder(ofn.append_basic_block("entry"))
    fields = []
    for i, t in enumerate(st_t.elements):
        fp = ob.gep(ofn.args[0], [ir.Constant(I32, 0), ir.Constant(I32, i)], inbounds=True,
                    source_etype=st_t)
        fields.append(ob.load(fp, typ=t))
    tid = ob.sext(ob.call(declare("omp_get_thread_num", I32, []), []), I64)
    nt = ob.sext(ob.call(declare("omp_get_num_threads", I32, []), []), I64)
    body(ob, fields, tid, nt)
    ob.ret_void()
    return ofn


def fork(b: ir.IRBuilder, data: ir.Value, outlined: ir.Function, values: list,
         num_threads: ir.Value, declare: Declare) -> None:
    """At `b`: store `values` into the struct at `data` (an opaque alloca of their struct
    type in the caller's entry block) and call GOMP_parallel(outlined, data, num_threads
    (i32), 0)."""
    st_t = ir.LiteralStructType([v.type for v in values])
    for i, v in enumerate(values):
        fp = b.gep(data, [ir.Constant(I32, 0), ir.Constant(I32, i)], inbounds=True, source_etype=st_t)
        b.store(v, fp)
    gomp = declare("GOMP_parallel", VOID, [PTR, PTR, I32, I32])
    b.call(gomp, [outlined, data, num_threads, ir.Constant(I32, 0)])


def declare_omp_thread_info(builder: ir.IRBuilder, module: ir.Module):
    """Emit calls returning (thread_num, num_threads) of the current OpenMP team as i64."""
    declare = module_declare(module)
    tid = builder.call(declare("omp_get_thread_num", I32, []), [])
    nt = builder.call(declare("omp_get_num_threads", I32, []), [])
    return builder.sext(tid, I64), builder.sext(nt, I64)


def emit_parallel_region(builder: ir.IRBuilder, module: ir.Module, name: str, values,
                         body: Body, num_threads) -> ir.Function:
    """Outline a parallel region of `values` (see the module docstring) and call it through
    GOMP_parallel from `builder`, the struct allocated at the start of the builder's
    function. `num_threads`: an integer value or Python int, 0 for the OpenMP default
    (OMP_NUM_THREADS, else the core count; the team may be smaller than asked). `body`
    must leave its builder in an open block. Returns the outlined function."""
    values = list(values)
    declare = module_declare(module)
    fn = outline(module, name, [v.type for v in values], body, declare)
    if isinstance(num_threads, int):
        nt = ir.Constant(I32, num_threads)
    elif num_threads.type.width > 32:
        nt = builder.trunc(num_threads, I32)
    elif num_threads.type.width < 32:
        nt = builder.zext(num_threads, I32)
    else:
        nt = num_threads
    # The struct lives in the caller's frame for the duration of the (synchronous) call.
    entry = builder.function.entry_basic_block
    with builder.goto_block(entry):
        if entry.instructions:
            builder.position_before(entry.instructions[0])
        data = _opaque_alloca(builder, ir.LiteralStructType([v.type for v in values]), name + ".args")
    fork(builder, data, fn, values, nt, declare)
    return fn
