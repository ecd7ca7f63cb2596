"""The ways a user can run a graph, each one a candidate the oracle checks.

Every path turns a Case into what each call returned: per step, the outputs and the
parameters after the step. The fuzzer runs a case through a random subset of the
available paths (the slow ones, AOT export and the CUDA emulator, less often).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .cases import Case
from .oracle import as_list

Steps = list[tuple[list[np.ndarray], dict[str, np.ndarray]]]


@dataclass(frozen=True)
class Path:
    name: str
    run: Callable[[Case], Steps]
    share: float = 1.0  # the fraction of cases that take this path
    kinds: tuple[str, ...] = ("inference", "grad", "train")
    max_nodes: int = 10**9  # larger graphs skip the path (g++ on a big CUDA TU takes minutes)


def run_steps(exe, case: Case, inputs: dict[str, np.ndarray] | None = None) -> Steps:
    """Call exe case.steps times; the parameters it holds carry over between calls."""
    inputs = case.inputs if inputs is None else inputs
    feeds = {k: inputs[k] for k in exe.input_names}
    out: Steps = []
    for _ in range(case.steps):
        outs = [np.array(a, copy=True) for a in as_list(exe(**feeds))]
        out.append((outs, {k: np.array(exe.params[k], copy=True) for k in exe.params}))
    return out


def _compiled(backend: str, opt_level: int) -> Callable[[Case], Steps]:
    def run(case: Case) -> Steps:
        from ..compile import compile as gc_compile
        exe = gc_compile(case.graph, backend=backend, opt_level=opt_level, params=case.params)
        return run_steps(exe, case)
    return run


def _kernel_interpreter(case: Case) -> Steps:
    """The -O2 program the LLVM backend would run, executed by the kernel-IR interpreter."""
    from ..backends import backend_needs
    from ..compile import optimize_graph
    from ..ir.interpret import run_program
    from ..pipeline import lower_program
    work, _, _ = optimize_graph(case.graph, backend="llvm", opt_level=2)
    program = lower_program(work, backend_needs("llvm"))  # the program llvm runs, GEMM panels too
    params = {p.name: np.array(case.params[p.name], copy=True) for p in work.params}
    out: Steps = []
    for _ in range(case.steps):
        outs, updates = run_program(program, {v.name: case.inputs[v.name] for v in work.inputs},
                                    params)
        params.update({k: np.array(v, copy=True) for k, v in updates.items()})
        out.append(([np.array(a, copy=True).reshape(v.shape) for a, v in zip(outs, work.outputs)],
                    dict(params)))
    return out


def _aot(case: Case) -> Steps:
    """gc.export of the -O2 executable, then gc.load: the artifact computes the same."""
    from ..aot import export, load
    from ..compile import compile as gc_compile
    exe = gc_compile(case.graph, backend="llvm", params=case.params)
    tmp = tempfile.mkdtemp(prefix="graphc-fuzz-aot-")
    try:
        export(exe, None, os.path.join(tmp, "m"))
        return run_steps(load(os.path.join(tmp, "m")), case)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cuda_emulator(case: Case) -> Steps:
    """The CUDA backend's program and generated CUDA C, run on the CPU by the emulator
    (backends/cuda/emulator.py): its indexing, thread mapping and reductions, without a GPU."""
    from ..backends import backend_needs
    from ..backends.cuda import analysis, codegen, emulator
    from ..compile import optimize_graph
    from ..ir.errors import GraphcError
    from ..pipeline import lower_program
    work, _, _ = optimize_graph(case.graph, backend="cuda", opt_level=2)
    program = lower_program(work, backend_needs("cuda"))
    body, launches, functions = codegen.render_body(program, prefix="gc_fuzz")
    module = codegen.CudaModule("", launches, analysis.storage_map(program), program.arena_bytes,
                                program.external(), functions)
    tmp = tempfile.mkdtemp(prefix="graphc-fuzz-cuda-")
    try:
        lib = emulator.build(codegen.translation_unit([body]), functions, pathlib.Path(tmp))
        params = {p.name: np.array(case.params[p.name], copy=True) for p in work.params}
        out: Steps = []
        for _ in range(case.steps):
            inputs = {buf: case.inputs[v.name] for v, buf in zip(work.inputs, program.inputs)}
            arrays = emulator.external_arrays(program, inputs, params)
            emulator.run(lib, module, arrays)
            if program.status is not None and arrays[program.status][0]:
                raise GraphcError(program.errors[int(arrays[program.status][0]) - 1])
            outs = [arrays[b].reshape(v.shape).copy() for b, v in zip(program.outputs, work.outputs)]
            for name, buf in program.updates.items():
                params[name] = arrays[buf].reshape(params[name].shape).copy()
            out.append((outs, dict(params)))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _jit(case: Case) -> Steps:
    """The graph replayed as a Python function over Tensors, traced by @gc.jit (parameters
    become constants: a jitted function has no state)."""
    from .. import builder, ops
    from ..jit import jit
    graph = case.graph

    def replay(xs: dict) -> list:
        env = {v: xs[v.name] for v in graph.inputs}
        for p in graph.params:
            env[p] = builder.constant(case.params[p.name], p.dtype.name)
        for c in graph.constants:
            env[c] = builder.constant(c.data, c.dtype.name)
        for n in graph.nodes:
            got = ops.emit(n.op, *[env[v] for v in n.inputs], **n.attrs)
            env.update(zip(n.outputs, got if isinstance(got, tuple) else (got,)))
        return [env[v] for v in graph.outputs]
    fn = jit(replay)
    outs = fn({v.name: case.inputs[v.name] for v in graph.inputs})
    return [([np.array(a, copy=True) for a in as_list(outs)], {})]


PATHS: dict[str, Path] = {p.name: p for p in [
    Path("reference-O2", _compiled("reference", 2)),
    Path("llvm-O0", _compiled("llvm", 0)),
    Path("llvm-O1", _compiled("llvm", 1)),
    Path("llvm-O2", _compiled("llvm", 2)),
    Path("llvm-O3", _compiled("llvm", 3)),
    Path("kernel-interpreter", _kernel_interpreter, share=0.5),
    Path("jit", _jit, share=0.3, kinds=("inference", "grad")),
    Path("aot", _aot, share=0.1),
    Path("cuda-emulator", _cuda_emulator, share=0.1, max_nodes=16),
]}


def available_paths() -> list[str]:
    """Paths this machine can run (the LLVM ones need llvmlite, AOT a C compiler)."""
    from ..backends import available_backends
    names = ["reference-O2"]
    if "llvm" in available_backends():
        names += ["llvm-O0", "llvm-O1", "llvm-O2", "llvm-O3", "jit"]
        if shutil.which(os.environ.get("CC", "cc")):
            names.append("aot")
    names.append("kernel-interpreter")
    from ..backends.cuda import emulator
    if emulator.available():
        names.append("cuda-emulator")
    return names
