"""Ahead-of-time artifacts: `gc.export` writes them, `gc.load` runs them without compiling.

    info = gc.export(graph_or_jitted_fn_or_executable, example_inputs, "out/mlp")
    exe = gc.load("out/mlp")          # dlopen + read weights: no LLVM, no passes

An artifact `out/mlp` is five files:

    mlp.so       machine code (LLVM object code + the generated C API, linked by cc)
    mlp.h        the C API: create / run / call / destroy, tensor name, shape, dtype tables,
                 and mlp_open, which checks the .so's size and checksum before dlopen
    mlp.weights  parameters and constants, raw little-endian, 64-byte aligned (no pickle)
    mlp.json     the manifest (below)
    mlp.gcir     the optimised graph as text IR (what `graphc dump out/mlp` prints)

The manifest records the artifact format version, the graphc version, the target (triple,
CPU, enabled features), sha256 of the IR text, the header, the shared object, the weights
and every tensor, and the tensor table; its schema is graphc/aot_manifest.py. Artifacts
are verified, never trusted. `load`, in this order, and before any code from the artifact
is loaded: parses the manifest (UTF-8, JSON, an object) and checks it against the schema
(every key present, of its type and range, sizes equal to shape x dtype, tensors aligned
inside the weights file, names unique); checks the CPU; reads the four other files and
checks each one's size or sha256 (always: a checksum is never optional), and each tensor's.
Only then it loads the verified library bytes and compares the manifest with the facts the
library was built with (`<prefix>_artifact_facts()`), so an edited manifest cannot make the
library run with another tensor table or output structure. Each failure is an
`ArtifactError` naming the file and the key, never another exception, a crash or SIGILL.
(The C API checks its own tables, the CPU features and the weights' size and checksum on its
own, and its header verifies the library before dlopen, for C programs that never see the
manifest.)
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from . import __version__
from . import aot_manifest
from .aot_manifest import FORMAT, FORMAT_VERSION
from .backends.llvm.shared import ArtifactError, SharedLibraryExecutable, library_facts, open_library
from .ir.dtypes import dtype as to_dtype
from .ir.errors import BuildError, GraphcError
from .ir.graph import Graph as IRGraph

_FILES = ("so", "h", "weights", "json", "gcir")


@dataclass
class ExportInfo:
    """What `gc.export` wrote and how long each stage took (seconds)."""
    path: str
    files: dict[str, str]
    compile_seconds: float
    stage_seconds: dict[str, float]
    manifest: dict

    def __repr__(self) -> str:
        return f"<artifact {self.path}: compiled in {self.compile_seconds:.2f} s>"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: every artifact file (.so, .h, .weights, .json, .gcir) "
                            "is needed; export the artifact again") from None
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror}") from None


def _split(path: str) -> tuple[str, str]:
    path = os.fspath(path)
    for ext in _FILES:
        if path.endswith("." + ext):
            path = path[: -len(ext) - 1]
            break
    directory, name = os.path.split(path)
    if not name:
        raise GraphcError(f"artifact path {path!r} needs a file name, e.g. out/model")
    return directory or ".", name


# --- export ---------------------------------------------------------------------------------

# --- output names ---------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def output_names(given: Sequence[str | None]) -> list[str]:
    """The names an artifact's outputs go by: the user's where there is one (sanitised to
    letters, digits, '_', '.', '-'), else output<i>; made unique with _1, _2 suffixes."""
    out: list[str] = []
    for i, name in enumerate(given):
        base = _UNSAFE.sub("_", str(name)).strip("_") if name is not None else ""
        base = base or f"output{i}"
        cand, k = base, 1
        while cand in out:
            cand, k = f"{base}_{k}", k + 1
        out.append(cand)
    return out


def _tree_names(struct: Any) -> tuple[list[str | None], bool]:
    """The path of each array leaf of a traced result (dict keys and namedtuple fields,
    joined by '.'; positions in tuples and lists), and whether the result is a dict."""
    from .jit import Leaf
    names: list[str | None] = []

    def walk(s: Any, path: list[str]) -> None:
        if isinstance(s, Leaf):
            names.append(".".join(path) or None)
        elif s[0] in ("tuple", "list"):
            for i, c in enumerate(s[1]):
                walk(c, path + [str(i)] if path else [f"output{i}"])
        elif s[0] == "namedtuple":
            for k, c in zip(s[1]._fields, s[2]):
                walk(c, path + [k])
        elif s[0] == "dict":
            for k, c in zip(s[1], s[2]):
                walk(c, path + [str(k)])
    walk(struct, [])
    return names, not isinstance(struct, Leaf) and struct[0] == "dict"


def _from_target(target: Any, example_inputs: Any, opt_level: int):
    """(optimised graph, single output?, ledger, parameter values, lowered program or None,
    the outputs' names, whether the call returns them as a dict)."""
    from .backends.executable import Executable
    from .compile import optimize_graph
    from .jit import JittedFunction

    program = None
    as_dict = False
    if isinstance(target, JittedFunction):
        if example_inputs is None:
            raise BuildError("gc.export of a jitted function needs example inputs to trace it with")
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        traced = target.trace(*args)
        work, _, ledger = optimize_graph(traced.graph, traced.outputs, backend="llvm", opt_level=opt_level)
        single = traced.single_leaf  # the function returned one array, not a tree
        names, as_dict = _tree_names(traced.out_struct)
    elif isinstance(target, Executable):
        if target.backend_name != "llvm":
            raise BuildError(f"gc.export of an executable needs one compiled with backend='llvm', "
                             f"not {target.backend_name!r}; or pass the graph")
        # exactly what was compiled, with the current (e.g. trained) parameter values; a
        # batch split's program is one part's, so its graph is lowered afresh
        from .backends.llvm.split import BatchSplitExecutable
        work, single, ledger, program = (target.graph, target.single_output, getattr(target, "ledger", None),
                                         None if isinstance(target, BatchSplitExecutable) else target.program)
        names = list(getattr(target, "output_names", None) or [v.name for v in work.outputs])
    elif isinstance(target, IRGraph):
        if not target.outputs:
            raise BuildError(f"gc.export: graph {target.name!r} has no outputs; call "
                             "g.set_outputs(...) first (or export gc.compile's executable)")
        names = [v.name for v in target.outputs]  # before passes replace the output values
        work, single, ledger = optimize_graph(target, backend="llvm", opt_level=opt_level)
    else:
        raise BuildError(f"gc.export takes a Graph, a @gc.jit function or an llvm Executable, "
                         f"not {type(target).__name__}")
    if isinstance(target, Executable):
        params = {k: np.array(v) for k, v in target.params.items()}
    else:
        params = {p.name: work.initial_param_value(p) for p in work.params}
    if example_inputs is not None and not isinstance(target, JittedFunction):
        _check_examples(work, example_inputs)
    return work, single, ledger, params, program, output_names(names), as_dict


def _check_examples(graph: IRGraph, example_inputs: Any) -> None:
    from .backends.executable import convert_argument
    if isinstance(example_inputs, Mapping):
        items = dict(example_inputs)
    else:
        seq = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
        if len(seq) != len(graph.inputs):
            raise BuildError(f"graph {graph.name!r} has {len(graph.inputs)} inputs, got "
                             f"{len(seq)} example inputs")
        items = {v.name: a for v, a in zip(graph.inputs, seq)}
    for v in graph.inputs:
        if v.name not in items:
            raise BuildError(f"example inputs lack {v.name!r}")
        convert_argument(f"example input {v.name!r}", items[v.name], v.type)


def export(target: Any, example_inputs: Any = None, path: str = "model", *, opt_level: int = 2,
           max_threads: int | None = None, cpu: str | None = None, features: str | None = None
           ) -> ExportInfo:
    """Compile `target` (a Graph with outputs set, a @gc.jit function traced on
    example_inputs, or an llvm Executable with its current parameters) into an artifact at
    `path` (directory/name). cpu/features choose another target than this machine (LLVM
    names, e.g. cpu="skylake-avx512", features="+avx512f"); max_threads bounds the threads
    the artifact can use (default: this machine's). opt_level: the pass pipeline's level,
    as for gc.compile (0-3, default 2)."""
    from .ir.text import print_graph
    from .backends import backend_needs
    from .backends.llvm import export as llvm_export
    from .pipeline import lower_program

    t_start = time.perf_counter()
    directory, name = _split(path)
    graph, single, ledger, params, program, names, as_dict = _from_target(target, example_inputs, opt_level)
    t_opt = time.perf_counter()
    # (GEMM operands row-major: the artifact may be for a CPU whose GEMM panels differ)
    program = program or lower_program(graph, backend_needs("llvm"), opt_level=opt_level, gemm_panels=False)
    t_lower = time.perf_counter()
    ir_text = print_graph(graph).rstrip("\n") + "\n"
    plan = llvm_export.prepare_library(
        graph, program, params, name, max_threads=max_threads, cpu=cpu, features=features,
        output_names=names,
        description=f"graph @{graph.name}, exported by graphc {__version__} for "
                    f"{llvm_export.engine.host_target().triple}")
    weights = plan.weights
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "graphc_version": __version__,
        "name": name,
        "graph": graph.name,
        "c_prefix": plan.prefix,
        "target": {"triple": plan.target.triple, "cpu": plan.target.cpu,
                   "features": llvm_export.required_features(plan.target),
                   "llvm": plan.target.key().rsplit("|", 1)[-1]},
        "max_threads": plan.spec.max_threads,
        "opt_level": opt_level,
        "single_output": bool(single),
        "output_dict": as_dict,
        "ir_sha256": _sha256(ir_text.encode("utf-8")),
        "library_sha256": None,  # after linking, below
        "header_sha256": None,
        "weights_bytes": len(weights),
        "weights_sha256": _sha256(weights),
        "inputs": [{"name": v.name, "dtype": v.dtype.name, "shape": list(v.shape)} for v in graph.inputs],
        "outputs": [{"name": n, "dtype": v.dtype.name, "shape": list(v.shape)}
                    for n, v in zip(names, graph.outputs)],
        "updates": sorted(graph.updates),
        "tensors": [{"name": e.name, "kind": e.kind, "dtype": e.dtype, "shape": list(e.shape),
                     "offset": e.offset, "nbytes": e.nbytes,
                     "sha256": _sha256(weights[e.offset:e.offset + e.nbytes])} for e in plan.weights_table],
        "compile_seconds": 0.0,
        "stage_seconds": {},
        "ledger": str(ledger) if ledger else "",
    }
    lib = llvm_export.link_library(plan, directory, name, aot_manifest.facts_text(manifest))
    with open(os.path.join(directory, name + ".gcir"), "w", encoding="utf-8", newline="\n") as f:
        f.write(ir_text)
    stages = {"passes": t_opt - t_start, "lower": t_lower - t_opt, **lib.seconds}
    manifest["library_sha256"] = _sha256(_read(lib.library))
    manifest["header_sha256"] = _sha256(_read(lib.header))
    manifest["compile_seconds"] = round(time.perf_counter() - t_start, 4)
    manifest["stage_seconds"] = {k: round(v, 4) for k, v in stages.items()}
    aot_manifest.validate(manifest, os.path.join(directory, name + ".json"), __version__)  # what load expects
    files = {ext: os.path.join(directory, f"{name}.{ext}") for ext in _FILES}
    with open(files["json"], "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return ExportInfo(os.path.join(directory, name), files, time.perf_counter() - t_start, stages, manifest)


# --- load -----------------------------------------------------------------------------------

def read_manifest(path: str) -> dict:
    """The artifact's manifest, checked against the schema (aot_manifest.py)."""
    directory, name = _split(path)
    file = os.path.join(directory, name + ".json")
    if not os.path.isfile(file):
        raise ArtifactError(f"{file} not found: {path} is not a graphc artifact (expected "
                            f"{name}.so, .h, .weights, .json and .gcir)")
    return aot_manifest.validate(aot_manifest.parse(_read(file), file), file, __version__)


# LLVM feature name -> /proc/cpuinfo flag, for the features whose absence faults: vector
# ISA extensions code generation uses. (Tuning flags need no check.)
_CPUINFO_FLAGS = {"ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "avx": "avx", "avx2": "avx2",
                  "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2", "avx512f": "avx512f",
                  "avx512vl": "avx512vl", "avx512bw": "avx512bw", "avx512dq": "avx512dq",
                  "avx512cd": "avx512cd", "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
                  "avx512vbmi": "avx512vbmi", "avx512ifma": "avx512ifma", "avx512fp16": "avx512_fp16"}


def host_cpu_flags() -> set[str] | None:
    """This CPU's flags from /proc/cpuinfo (no LLVM needed); None when unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def missing_cpu_features(features: Sequence[str], flags: set[str]) -> list[str]:
    return [f for f in features if f in _CPUINFO_FLAGS and _CPUINFO_FLAGS[f] not in flags]


def _check_target(manifest: dict, path: str) -> None:
    target = manifest["target"]
    arch = target["triple"].split("-", 1)[0]
    machine = platform.machine().lower()
    if arch and machine and arch != machine:
        raise ArtifactError(f"{path} was compiled for {target['triple']} (manifest key 'target.triple'); "
                            f"this machine is {machine}")
    flags = host_cpu_flags()
    if flags is None or machine != "x86_64":
        return
    missing = missing_cpu_features(target["features"], flags)
    if missing:
        raise ArtifactError(
            f"{path} was compiled for CPU {target['cpu']!r} with features this CPU lacks: "
            f"{', '.join(missing)} (manifest key 'target.features'); running it would fault on "
            "illegal instructions. Export it again on (or for) this machine")


def _check_hash(data: bytes, want: str, what: str, key: str) -> None:
    if _sha256(data) != want:
        raise ArtifactError(f"{what} does not match the manifest's {key} (sha256 differs): it was "
                            "altered, or comes from another export")


def load(path: str) -> SharedLibraryExecutable:
    """An Executable over the artifact at `path` (directory/name), verified file by file
    against its manifest before any of its code is loaded (see the module docstring);
    compiles nothing. `exe.load_seconds` is how long this took. Calls return what the
    exported target did (one array, a tuple, or for a @gc.jit function that returned a dict
    that dict, flattened: nested keys joined by '.'); `exe.output_names` are the outputs'
    names. The verified library copy it loads is deleted once mapped."""
    from .ir.text import parse

    t0 = time.perf_counter()
    directory, name = _split(path)
    base = os.path.join(directory, name)
    manifest = read_manifest(path)
    _check_target(manifest, base)
    library, header, ir_text = _read(base + ".so"), _read(base + ".h"), _read(base + ".gcir")
    weights = _read(base + ".weights")
    _check_hash(library, manifest["library_sha256"], f"{base}.so", "library_sha256")
    _check_hash(header, manifest["header_sha256"], f"{base}.h", "header_sha256")
    _check_hash(ir_text, manifest["ir_sha256"], f"{base}.gcir", "ir_sha256")
    if len(weights) != manifest["weights_bytes"]:
        raise ArtifactError(f"{base}.weights has {len(weights)} bytes, the manifest's weights_bytes says "
                            f"{manifest['weights_bytes']}: truncated, or from another export")
    _check_hash(weights, manifest["weights_sha256"], f"{base}.weights", "weights_sha256")
    for i, t in enumerate(manifest["tensors"]):
        _check_hash(weights[t["offset"]:t["offset"] + t["nbytes"]], t["sha256"],
                    f"tensor {t['name']!r} in {base}.weights", f"tensors[{i}].sha256")
    try:
        graph = parse(ir_text.decode("utf-8"))
    except (UnicodeDecodeError, GraphcError) as e:  # verified text that does not parse: another graphc
        raise ArtifactError(f"{base}.gcir does not parse with this graphc {__version__}: {e}") from None
    lib = open_library(library, manifest["library_sha256"], base + ".so")
    aot_manifest.check_against_library(manifest, library_facts(lib, manifest["c_prefix"], base + ".so"),
                                       base + ".json", base + ".so")
    params: dict[str, np.ndarray] = {}
    for t in manifest["tensors"]:
        if t["kind"] == "param":
            dt = to_dtype(t["dtype"]).np_dtype
            chunk = weights[t["offset"]:t["offset"] + t["nbytes"]]
            params[t["name"]] = np.frombuffer(chunk, dt.newbyteorder("<")).astype(dt).reshape(t["shape"])
    exe = SharedLibraryExecutable(graph, lib, manifest["c_prefix"], base + ".weights", params,
                                  manifest["single_output"], manifest["max_threads"])
    exe.manifest = manifest
    # what exe.profile() builds with cycle counters: the stored graph's llvm program
    exe.whole_program = lambda: _lower_stored(graph)
    exe.output_names = [o["name"] for o in manifest["outputs"]]
    exe.output_dict = manifest["output_dict"]
    exe.load_seconds = time.perf_counter() - t0
    return exe


def _lower_stored(graph):
    from .backends import backend_needs
    from .pipeline import lower_program
    return lower_program(graph, backend_needs("llvm"))


def describe(path: str) -> str:
    """The stored IR and the manifest of an artifact, for `graphc dump out/name`."""
    directory, name = _split(path)
    manifest = read_manifest(path)
    gcir = os.path.join(directory, name + ".gcir")
    ir_bytes = _read(gcir)
    _check_hash(ir_bytes, manifest["ir_sha256"], gcir, "ir_sha256")
    ir_text = ir_bytes.decode("utf-8")
    shown = {k: v for k, v in manifest.items() if k not in ("tensors", "ledger")}
    lines = [ir_text.rstrip("\n"), "", "// manifest", json.dumps(shown, indent=1), "",
             "// tensors in " + name + ".weights"]
    for t in manifest["tensors"]:
        lines.append(f"//   {t['kind']:5} {t['name']}: {t['dtype']}{t['shape']} @ {t['offset']} "
                     f"({t['nbytes']} bytes) sha256 {t['sha256'][:16]}...")
    if manifest["ledger"]:
        lines += ["", "// passes at export"] + ["// " + ln for ln in manifest["ledger"].splitlines()]
    return "\n".join(lines)


def is_artifact(path: str) -> bool:
    directory, name = os.path.split(os.fspath(path))
    for ext in _FILES:
        if name.endswith("." + ext):
            name = name[: -len(ext) - 1]
    return bool(name) and os.path.isfile(os.path.join(directory or ".", name + ".json")) \
        and os.path.isfile(os.path.join(directory or ".", name + ".so"))


__all__ = ["export", "load", "ExportInfo", "ArtifactError", "read_manifest", "describe", "is_artifact"]
