"""Ahead-of-time export: a lowered program -> a shared object, its C header and its weights.

    plan = prepare_library(graph, program, params, name)    # machine code, weights, C API spec
    lib = link_library(plan, directory, name, facts)         # name.so, name.h, name.weights

Two steps, so that the caller (graphc/aot.py) can compile what the manifest will say into
the library (`facts`, JSON, returned by `<prefix>_artifact_facts()`): the weights' layout
and checksum are known after the first step.

The program is generated as in the JIT (codegen.py) but with the GEMM library and the math
library defined inside the module (`gemm_in_module`), no Python entry, and compiled for a
position-independent shared object (reloc=pic, the default code model) by the target
machine's `emit_object`. The C API wrapper (capi.py) is compiled by the system C compiler
(`cc`, or $CC) for the baseline ISA, and both are linked with it into `name.so` against
libgomp (parallel loops) and libm. A version script exports only the API (`<prefix>_*`), so
two artifacts, or an artifact and the JIT, never resolve each other's symbols.

The weights file holds every parameter and constant the program reads, raw little-endian,
each at a 64-byte aligned offset; the tensor table (offsets, shapes, dtypes) is returned
for the manifest and compiled into the C API. The header is written after linking: it
holds the library's size and checksum for its verifying loader (capi.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from ...ir import kernel as K
from ...ir.errors import GraphcError
from ...ir.graph import Graph
from . import capi, codegen, engine


class ExportError(GraphcError):
    """The artifact could not be built (no C compiler, link failure, bad target)."""


@dataclass
class WeightEntry:
    name: str          # parameter name, or the constant buffer's name
    kind: str          # "param" or "const"
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass
class PreparedLibrary:
    """Everything of a library but the linked file: its object code, weights and C API."""
    object_code: bytes
    weights: bytes
    weights_table: list[WeightEntry]
    prefix: str
    target: engine.HostTarget
    spec: capi.CApiSpec
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ExportedLibrary:
    library: str                 # path of name.so
    header: str                  # path of name.h
    weights: str                 # path of name.weights
    prefix: str                  # C API prefix
    target: engine.HostTarget
    weights_table: list[WeightEntry]
    spec: capi.CApiSpec
    seconds: dict[str, float] = field(default_factory=dict)  # codegen/llvm/cc times


def storage_of(program: K.Program, name: str) -> tuple[str, int]:
    """(root buffer or '<arena>', byte offset) of a buffer, following alias chains."""
    off = 0
    seen = 0
    while name in program.aliases:
        base, o = program.aliases[name]
        off += int(o) * program.buffers[base].dtype.itemsize
        name = base
        seen += 1
        if seen > 64:
            raise ExportError(f"internal: alias cycle through buffer {name!r}")
    if program.buffers[name].kind == "temp":
        return "<arena>", off + program.arena[name]
    return name, off


def _little_endian(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def layout_weights(graph: Graph, program: K.Program, params: dict[str, np.ndarray]
                   ) -> tuple[bytes, list[WeightEntry]]:
    """The weights file's bytes: parameters (graph order), then the program's constants."""
    chunks: list[bytes] = []
    table: list[WeightEntry] = []
    offset = 0

    def add(name: str, kind: str, arr: np.ndarray, dtype: str, shape: tuple[int, ...]) -> None:
        nonlocal offset
        pad = (-offset) % 64
        chunks.append(b"\0" * pad)
        offset += pad
        data = _little_endian(arr)
        table.append(WeightEntry(name, kind, dtype, shape, offset, len(data)))
        chunks.append(data)
        offset += len(data)

    for p in graph.params:
        arr = np.asarray(params[p.name], dtype=p.type.dtype.np_dtype).reshape(p.type.shape)
        add(p.name, "param", arr, p.type.dtype.name, tuple(p.type.shape))
    for name in program.external():
        buf = program.buffers[name]
        if buf.kind == "const":
            arr = np.asarray(program.constants[name], dtype=buf.dtype.np_dtype).reshape(-1)
            if arr.size != buf.size:
                raise ExportError(f"internal: constant {name!r} has {arr.size} elements, buffer says {buf.size}")
            add(name, "const", arr, buf.dtype.name, (buf.size,))
    chunks.append(b"\0" * ((-offset) % 64))
    return b"".join(chunks), table


def _target(cpu: str | None, features: str | None) -> engine.HostTarget:
    host = engine.host_target()
    if not cpu and not features:
        return host
    feats = dict.fromkeys(f for f in host.features.split(",") if f)
    for f in (features or "").split(","):
        f = f.strip()
        if not f:
            continue
        if f[0] not in "+-":
            raise ExportError(f"CPU feature {f!r} must start with + or - (e.g. +avx512f)")
        feats.pop(("-" if f[0] == "+" else "+") + f[1:], None)
        feats[f] = None
    return engine.HostTarget(host.triple, cpu or host.cpu, ",".join(feats))


def required_features(target: engine.HostTarget) -> list[str]:
    """The enabled features of a target ("+avx2" -> "avx2"), sorted."""
    return sorted(f[1:] for f in target.features.split(",") if f.startswith("+"))


def _emit_object(text: str, target: engine.HostTarget) -> bytes:
    with engine._llvm_lock:
        tm = engine.target_machine(target, jit=False, reloc="pic", codemodel="default")
        mod = engine.parse_module(text, target)
        engine.optimize(mod, tm)
        return tm.emit_object(mod)


def _cc() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise ExportError("no C compiler found (set CC): AOT export links with the system compiler")
    return cc


def _run(cmd: list[str], what: str) -> None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except OSError as e:
        raise ExportError(f"{what}: cannot run {cmd[0]}: {e}") from None
    if r.returncode != 0:
        raise ExportError(f"{what} failed ({' '.join(cmd)}):\n{r.stderr.strip()[-4000:]}")


def prepare_library(graph: Graph, program: K.Program, params: dict[str, np.ndarray], name: str, *,
                    max_threads: int | None = None, cpu: str | None = None, features: str | None = None,
                    description: str = "", output_names: Sequence[str] | None = None) -> PreparedLibrary:
    """Generate and compile the program and lay out its weights (nothing is written).
    output_names: what the C API's output table calls the outputs (default: the values'
    names, else output<i>)."""
    times: dict[str, float] = {}
    prefix = capi.c_identifier(name)
    target = _target(cpu, features)
    options = codegen.CodegenOptions.from_env(py_data_offset=0, gemm_in_module=True,
                                              parallel=engine.gomp_available(),
                                              **({"max_threads": max_threads} if max_threads else {}))
    t0 = time.perf_counter()
    gen = codegen.generate(program, options)
    times["codegen"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    obj = _emit_object(gen.text, target)
    times["llvm"] = time.perf_counter() - t0
    weights, table = layout_weights(graph, program, params)
    spec = _spec(graph, program, gen, options, prefix, table, weights, target, description, output_names)
    return PreparedLibrary(obj, weights, table, prefix, target, spec, times)


def link_library(plan: PreparedLibrary, directory: str, name: str, facts: str = "{}") -> ExportedLibrary:
    """Link name.so (with `facts` compiled in), then write name.h and name.weights into
    `directory`; files move into place only when everything was built."""
    spec = replace(plan.spec, facts=facts)
    prefix = plan.prefix
    os.makedirs(directory, exist_ok=True)
    paths = {ext: os.path.join(directory, f"{name}.{ext}") for ext in ("so", "h", "weights")}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="graphc-export-") as tmp:
        obj_path = os.path.join(tmp, "program.o")
        with open(obj_path, "wb") as f:
            f.write(plan.object_code)
        h_name = f"{name}.h"
        with open(os.path.join(tmp, h_name), "w", encoding="utf-8") as f:
            f.write(capi.header(spec))
        c_path = os.path.join(tmp, "api.c")
        with open(c_path, "w", encoding="utf-8") as f:
            f.write(capi.source(spec, h_name))
        script = os.path.join(tmp, "exports.map")
        with open(script, "w", encoding="utf-8") as f:
            f.write(f"{{ global: {prefix}_*; local: *; }};\n")
        so_tmp = os.path.join(tmp, "lib.so")
        # -z nodelete: a dlclose (the header's <prefix>_close) must not unmap the library
        # and the libgomp it pulled in while libgomp's pool threads still live: they would
        # run unmapped code at exit (a segfault after a clean run, seen under load)
        _run([_cc(), "-std=c11", "-O2", "-fPIC", "-shared", "-o", so_tmp, c_path, obj_path,
              f"-Wl,--version-script={script}", "-Wl,-z,noexecstack", "-Wl,-z,nodelete",
              "-lgomp", "-lm"],
             "linking the shared object")
        with open(so_tmp, "rb") as f:
            library = f.read()
        with open(os.path.join(tmp, h_name), "w", encoding="utf-8") as f:
            f.write(capi.header(spec, (len(library), capi.weights_checksum(library))))
        with open(os.path.join(tmp, "w"), "wb") as f:
            f.write(plan.weights)
        shutil.move(so_tmp, paths["so"])
        shutil.move(os.path.join(tmp, h_name), paths["h"])
        shutil.move(os.path.join(tmp, "w"), paths["weights"])
    seconds = {**plan.seconds, "cc": time.perf_counter() - t0}
    return ExportedLibrary(paths["so"], paths["h"], paths["weights"], prefix, plan.target, plan.weights_table,
                           spec, seconds)


def _spec(graph: Graph, program: K.Program, gen: codegen.GeneratedModule, options: codegen.CodegenOptions,
          prefix: str, table: list[WeightEntry], weights: bytes, target: engine.HostTarget,
          description: str, output_names: Sequence[str] | None = None) -> capi.CApiSpec:
    p = program
    ext = gen.external
    slot = {n: i for i, n in enumerate(ext)}
    nbytes = {n: b.size * b.dtype.itemsize for n, b in p.buffers.items()}

    def where(buf: str, size_of: str) -> capi.Storage:
        root, off = storage_of(p, buf)
        if root != "<arena>" and root not in slot:
            raise ExportError(f"internal: buffer {buf!r} lives in {root!r}, which is not passed to the program")
        return capi.Storage(-1 if root == "<arena>" else slot[root], off, nbytes[size_of])

    def info(v, name: str) -> capi.TensorInfo:
        return capi.TensorInfo(name, v.type.dtype.name, tuple(v.type.shape),
                               v.type.size * v.type.dtype.itemsize)

    offsets = {(e.kind, e.name): e.offset for e in table}
    param_index = {q.name: i for i, q in enumerate(graph.params)}
    names = output_names or [v.name or f"output{i}" for i, v in enumerate(graph.outputs)]
    outputs = tuple(info(v, n) for n, v in zip(names, graph.outputs))
    results = tuple(where(b, b) for b in p.outputs)
    for r, o in zip(results, outputs):
        if r.nbytes != o.nbytes:
            raise ExportError(f"internal: output {o.name!r} has {o.nbytes} bytes, its buffer {r.nbytes}")
    checkable = set(capi.CHECKABLE_FEATURES)
    return capi.CApiSpec(
        prefix=prefix, entry=gen.entry, num_threads_global=gen.num_threads_global,
        max_threads=options.threads, n_ext=len(ext),
        ext_bytes=tuple(nbytes[n] for n in ext),
        input_slots=tuple(slot.get(b, -1) for b in p.inputs),
        param_slots=tuple(slot.get(p.params[q.name], -1) if q.name in p.params else -1 for q in graph.params),
        const_slots=tuple((slot[e.name], e.offset) for e in table if e.kind == "const"),
        output_slots=tuple(slot[n] for n in ext if p.buffers[n].kind == "output"),
        status_slot=slot.get(p.status, -1) if p.status else -1,
        errors=tuple(p.errors or ()),
        results=results,
        updates=tuple((param_index[k], where(b, b)) for k, b in p.updates.items()),
        param_offsets=tuple(offsets[("param", q.name)] for q in graph.params),
        arena_bytes=gen.arena_bytes, weights_bytes=len(weights),
        weights_checksum=capi.weights_checksum(weights),
        features=tuple(f for f in required_features(target) if f in checkable),
        inputs=tuple(info(v, v.name) for v in graph.inputs), outputs=outputs,
        params=tuple(info(q, q.name) for q in graph.params), description=description)
