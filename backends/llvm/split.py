"""Running a batch-split program: `parts` copies of the program for one slice of the batch
(passes/batch_split.py), each on its own thread with its own context (slots and arena),
started by one GOMP_parallel. The copies share nothing but the constants, so they need no
synchronisation; each runs its kernels serially (its own parallel loops stay unforked).

    graphc_run_parts(i64 entry, i64* contexts, i64 n)

is a small native trampoline (compiled once per process, cached like the GEMM library):
thread t of the team runs entry(contexts[i]) for i = t, t + team size, ...
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from ...ir.errors import GraphcError
from ...ir.graph import Graph
from ..executable import Executable
from . import engine
from .cache import default_cache, make_key

_TRAMPOLINE = "graphc_run_parts"
_trampoline: list = []  # [(JitModule, ctypes function)] once loaded
_trampoline_lock = threading.Lock()


def _build_trampoline() -> bytes:
    import llvmlite.ir as ir

    from .gemm import emit_parallel_region
    i64 = ir.IntType(64)
    mod = ir.Module(name=_TRAMPOLINE)
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [i64, i64.as_pointer(), i64]), _TRAMPOLINE)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    entry_ty = ir.FunctionType(ir.VoidType(), [i64]).as_pointer()

    def body(ob, vals, tid, nt):
        entry, contexts, n = vals
        call = ob.inttoptr(entry, entry_ty)
        head = ob.append_basic_block("loop")
        work = ob.append_basic_block("work")
        done = ob.append_basic_block("done")
        start = ob.block
        ob.branch(head)
        ob.position_at_end(head)
        i = ob.phi(i64)
        i.add_incoming(tid, start)
        ob.cbranch(ob.icmp_signed("<", i, n), work, done)
        ob.position_at_end(work)
        ob.call(call, [ob.load(ob.gep(contexts, [i]))])
        i.add_incoming(ob.add(i, nt), work)
        ob.branch(head)
        ob.position_at_end(done)

    emit_parallel_region(b, mod, _TRAMPOLINE + ".omp_fn", list(fn.args), body, fn.args[2])
    b.ret_void()
    return engine.optimize_and_emit(str(mod), engine.host_target())[0]


def run_parts():
    """The loaded trampoline: run_parts(entry, contexts array, n)."""
    with _trampoline_lock:
        if not _trampoline:
            engine.load_gomp()
            target = engine.host_target()
            obj, _ = default_cache().get_or_build(make_key(f"graphc {_TRAMPOLINE} 1", target.key()),
                                                  _build_trampoline)
            jm = engine.JitModule(obj, target)
            fn = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int64)(jm.address(_TRAMPOLINE))
            _trampoline.append((jm, fn))
        return _trampoline[0][1]


class BatchSplitExecutable(Executable):
    """The full-batch graph's Executable that runs `part` (an LLVMExecutable in raw-pointer
    mode for one slice of the batch) on `parts` threads at once. Part t's slots point
    into the caller's input arrays and the fresh output arrays at row t*rows: no copies."""

    backend_name = "llvm"

    def __init__(self, graph: Graph, part, parts: int, single_output: bool = False) -> None:
        super().__init__(graph, single_output=single_output)
        self.part = part
        self.parts = parts
        part.num_threads = 1  # the parts are the parallelism: no forks inside a part
        self._run = run_parts()
        self._entry = part.entry_address
        in_slots, out_slots = part.slot_layout()
        # (slot, which array, bytes per part) for every input and output slot
        isize = {v.name: v.type.size * v.dtype.itemsize // parts for v in graph.inputs}
        names = [v.name for v in graph.inputs]
        self._in_plan = [(slot, names.index(n), isize[n]) for slot, n in in_slots]
        self._in_names = names
        self._outs = [((shape[0] * parts,) + tuple(shape[1:]), dt) for _, _, shape, dt in out_slots]
        self._out_plan = [(slot, k, int(np.prod(shape)) * np.dtype(dt).itemsize)
                          for k, (slot, _, shape, dt) in enumerate(out_slots)]
        index = {name: k for k, (_, name, _, _) in enumerate(out_slots)}
        self._results = [index[n] for n in part.result_names]
        self._pool: list = []
        self.program = part.program  # one part's: for another batch than `graph` (gc.export lowers the graph)
        self.compiled = part.compiled

    def _profile(self, inputs, params, repeat):
        """The full graph as one program (not split), built with cycle counters."""
        from . import profiling
        from .runtime import profiling_build
        return profiling.profile(self, inputs, params, repeat, profiling_build)

    @property
    def num_threads(self) -> int:
        return self.parts

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        if int(n) != self.parts:
            raise GraphcError(f"this executable runs its batch in {self.parts} parts, one thread "
                              f"each; for {n} threads compile with GRAPHC_NUM_THREADS={n}")

    def _contexts(self):
        try:
            return self._pool.pop()
        except IndexError:
            ctxs = [self.part.new_context() for _ in range(self.parts)]
            return ctxs, (ctypes.c_uint64 * self.parts)(*[c.addr for c in ctxs])

    def _execute(self, inputs: dict[str, np.ndarray], params: dict[str, np.ndarray]):
        outs = [np.empty(shape, dt) for shape, dt in self._outs]
        ins = [inputs[n].ctypes.data for n in self._in_names]
        optr = [o.ctypes.data for o in outs]
        group = self._contexts()
        ctxs, addrs = group
        try:
            for t, ctx in enumerate(ctxs):
                s = ctx.slots
                for slot, k, step in self._in_plan:
                    s[slot] = ins[k] + t * step
                for slot, k, step in self._out_plan:
                    s[slot] = optr[k] + t * step
                ctx.flag[0] = 0
            self._run(self._entry, addrs, self.parts)
            codes = [c.flag[0] for c in ctxs]
        finally:
            self._pool.append(group)
        for code in codes:
            if code:
                self.part.fail(code)
        return [outs[k] for k in self._results], {}

    def _report_lines(self) -> list[str]:
        return [f"llvm: batch split in {self.parts} parts of {self.graph.inputs[0].shape[0] // self.parts} "
                "(one thread each, one fork per call)"] + self.part._report_lines()


def max_parts(threads: int | None = None, options=None) -> int:
    """How many parts a batch split may run at once: the threads (GRAPHC_NUM_THREADS or the
    cores), bounded by the workspace a program (compiled with these CodegenOptions) has: a
    part's serial GEMM calls pick their region by omp_get_thread_num(), in the trampoline's
    team the part's index; 1 without libgomp to start them with."""
    from . import codegen
    threads = min(threads or codegen.default_num_threads(),
                  (options or codegen.CodegenOptions.from_env()).threads)
    return threads if threads >= 2 and engine.load_gomp() else 1


def batch_split_executable(graph: Graph, split, single_output: bool,
                           **options) -> BatchSplitExecutable | None:
    """The executable running `graph` as `split.parts` copies of `split.program` (a
    graphc.pipeline.BatchSplit the pipeline planned), or None when the part's results
    cannot be written straight into the caller's arrays."""
    from .runtime import LLVMExecutable
    options.pop("check_numerics", None)  # (the pipeline never splits a checked program)
    part = LLVMExecutable(split.part, split.program, single_output=split.part_single,
                          raw_pointers=True, **options)
    if not part.plain_results:
        return None  # a result of the part is a view, an input or a constant
    if split.parts > part.compiled.max_threads:
        raise GraphcError(f"internal: {split.parts} parts but workspace for "
                          f"{part.compiled.max_threads} threads")
    exe = BatchSplitExecutable(graph, part, split.parts, single_output)
    exe.whole_program = split.whole  # the unsplit program, lowered on demand (the profiler)
    return exe
