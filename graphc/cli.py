"""The `graphc` command line: dump graphs, list the op registry."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import Any, Sequence

from . import __version__
from .ir.errors import GraphcError
from .ir.graph import Graph


class CLIError(GraphcError):
    """A command-line argument that cannot be used (bad target, missing function)."""


def _load_module(path: str) -> Any:
    if not os.path.isfile(path):
        raise CLIError(f"no such file: {path}")
    name = "_graphc_target_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


def load_target(target: str) -> Graph:
    """`file.py:function` (called with no arguments), a text IR file (.gcir) or an ONNX
    model (.onnx)."""
    from .compile import prepare
    from .ir.text import parse

    if target.endswith(".onnx"):  # an ONNX model file (the onnx extra)
        from .onnx import load as load_onnx
        return load_onnx(target)
    path, _, fn_name = target.rpartition(":") if ":" in target else (target, "", "")
    if not fn_name and (path.endswith(".py") or target.endswith(".py")):
        raise CLIError(_python_without_function(path or target))
    if not fn_name:
        if not os.path.isfile(target):
            raise CLIError(f"no such file: {target} (expected FILE.py:FUNCTION or a text IR file)")
        try:
            with open(target, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise CLIError(f"cannot read {target} as a text IR file: {e}") from None
        return parse(text)
    module = _load_module(path)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise CLIError(f"{path} has no function {fn_name!r}")
    required = _required_parameters(fn)
    if required:
        raise CLIError(f"{target} takes arguments ({', '.join(required)}); the target function is "
                       "called with no arguments and returns a gc.Graph or an Executable (for a "
                       "numpy function, return gc.jit(f).trace(example arrays...) or build a graph)")
    result = fn()
    graph = getattr(result, "graph", result)  # an Executable carries its compiled graph
    if not isinstance(graph, Graph):
        raise CLIError(f"{target} returned {type(result).__name__}, not a graphc Graph")
    if graph.outputs and not hasattr(result, "graph"):
        graph, _ = prepare(graph)  # what gc.compile would compile: pruned and verified
    return graph


def _required_parameters(fn: Any) -> list[str]:
    """The parameters a call with no arguments would miss."""
    import inspect
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return []
    return [p.name for p in params if p.default is p.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _python_without_function(path: str) -> str:
    """The error for `graphc dump FILE.py`: name what is expected and, without running the
    file, the functions it defines."""
    import ast
    msg = (f"{path} is a Python file: name the function that builds the graph, as "
           f"{path}:FUNCTION (it is called with no arguments and returns a gc.Graph or an "
           "Executable)")
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return msg if os.path.isfile(path) else f"no such file: {path} (expected FILE.py:FUNCTION)"
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    return msg + (f"; functions in it: {', '.join(names[:12])}" if names else "")


def _cmd_dump(args: argparse.Namespace) -> int:
    """Print (or write to -o) the graph, or what --after / --report / --all-stages ask for,
    in --format. An artifact's stored IR is shown with its manifest (text) or as a graph in
    the other formats."""
    from .aot import describe, is_artifact
    from .ir.text import parse
    from .logconfig import configure
    configure()  # GRAPHC_LOG=passes,onnx: the pipeline and the import log as in gc.compile
    fmt = args.format
    if is_artifact(args.target):  # an exported artifact: its stored IR and manifest
        text = describe(args.target)
        if fmt == "text":
            _emit(args, text)
            return 0
        g = parse(text.split("\n\n// manifest\n", 1)[0])  # describe verified its checksum
    else:
        g = load_target(args.target)
    stages = args.after or args.all_stages or args.report
    if stages and fmt == "cuda":
        raise CLIError("--after, --all-stages and --report write graphs and the ledger as text, "
                       "dot, json or summary; --format cuda prints the generated CUDA C alone")
    if args.report and fmt == "dot":
        raise CLIError("--report prints the pass ledger, a table (--format text or summary) or "
                       "JSON (--format json), not DOT")
    optimise = stages or args.opt is not None
    if optimise:
        out = _run_pipeline(args, g)
        if stages:
            _emit(args, out)
            return 0
    if fmt == "cuda":  # the CUDA C the cuda backend would compile for this graph
        from .backends import backend_needs
        from .backends.cuda.codegen import render
        from .pipeline import lower_program
        if not optimise:
            from .passes.manager import Pipeline, standard_passes
            Pipeline(standard_passes(2, backend_needs("cuda").graph_passes)).run(g)
        out = render(lower_program(g, backend_needs("cuda"))).source
    else:
        from .ir.observe import render_graph
        out = render_graph(g, fmt)
    _emit(args, out)
    return 0


def _run_pipeline(args: argparse.Namespace, g: Graph) -> str:
    """Run the -O pipeline on g; the --after graphs, the --report ledger and the
    --all-stages file list, in --format, as one text (one JSON document for json)."""
    from dataclasses import asdict

    from .backends import backend_graph_passes
    from .ir.observe import read_index, render_graph
    from .passes.manager import Pipeline, standard_passes
    fmt = args.format
    level = 2 if args.opt is None else args.opt
    after: list[tuple[str, Graph]] = []
    wanted = args.after or []

    def keep(name: str, graph: Graph) -> None:
        if name in wanted or "all" in wanted:
            after.append((name, graph.copy()))

    pipeline = Pipeline(standard_passes(level, backend_graph_passes(args.backend)), verify=True,
                        dump_dir=args.all_stages, dump_format=fmt, on_pass=keep)
    pipeline.passes_named([w for w in wanted if w != "all" and w not in KERNEL_STEPS])
    ledger = pipeline.run(g)  # (an unknown pass was an error before it ran)
    kernel_after: list[tuple[str, str]] = []
    if args.report or set(wanted) & {"all", *KERNEL_STEPS}:
        steps = _kernel_steps(g, args.backend, level, ledger)
        missing = [w for w in wanted if w in KERNEL_STEPS and w not in dict(steps)]
        if missing:
            raise CLIError(f"--after {missing[0]}: this compile has no such kernel-IR step "
                           f"(-O{level}: {', '.join(n for n, _ in steps) or 'none'})")
        kernel_after = [(n, t) for n, t in steps if n in wanted or "all" in wanted]
    index = read_index(args.all_stages) if args.all_stages else []
    if fmt == "json":
        import json
        from .ir.jsonform import graph_to_json
        doc: dict[str, Any] = {}
        if wanted:
            doc["after"] = [{"pass": name, "graph": graph_to_json(graph)} for name, graph in after]
            doc["after"] += [{"pass": name, "kernel_ir": text} for name, text in kernel_after]
        if args.report:
            doc["ledger"] = [asdict(e) for e in ledger]
        if args.all_stages:
            doc["stages"] = [{"file": os.path.join(args.all_stages, f), "kind": k, "description": d}
                             for f, k, d in index]
        return json.dumps(doc, indent=1, default=str)
    parts = [f"// IR after {name}\n{render_graph(graph, fmt).rstrip()}" for name, graph in after]
    parts += [f"// kernel IR after {name}\n{text.rstrip()}" for name, text in kernel_after]
    if args.report:
        parts.append(str(ledger))
    if args.all_stages:
        parts.append(f"// wrote {len(index)} files to {args.all_stages} (index.txt lists them)\n"
                     + "\n".join(f"//   {f}  {d}" for f, _, d in index))
    return "\n\n".join(parts)


KERNEL_STEPS = ("lowered", "donate", "schedule", "memory", "layout")  # passes/lower.py


def _kernel_steps(g: Graph, backend: str, level: int, ledger: list) -> list[tuple[str, str]]:
    """Lower the optimised graph as gc.compile would; add the kernel-IR steps to the
    ledger and return each step's program text, in order."""
    import tempfile

    from .backends import backend_needs
    from .ir import observe
    from .pipeline import kernel_ir_rows, lower_program
    needs = backend_needs(backend)
    if not needs.program:
        return []
    with tempfile.TemporaryDirectory(prefix="graphc-dump-") as tmp:
        with observe.session(g.name, dump_dir=tmp) as s:
            program = lower_program(g.copy(), needs, opt_level=level)
            folder = s.dump_dir
        ledger.extend(kernel_ir_rows(program))
        texts = []
        for fname, kind, _ in observe.read_index(folder):
            stage = fname.split("-", 1)[1].rsplit(".", 1)[0]
            if kind == "kernel" and stage.startswith("kernel-"):
                with open(os.path.join(folder, fname), encoding="utf-8") as f:
                    texts.append((stage[len("kernel-"):], f.read()))
    return texts


def _emit(args: argparse.Namespace, out: str) -> None:
    """The command's output: to -o when given, else stdout."""
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(out if out.endswith("\n") else out + "\n")
        except OSError as e:
            raise CLIError(f"cannot write {args.output}: {e}") from None
    else:
        print(out.rstrip("\n"))


def _cmd_ops(args: argparse.Namespace) -> int:
    from .ir.registry import all_ops

    rows = []
    for name, op in all_ops().items():
        arity = "n" if op.arity is None else str(op.arity)
        attrs = ", ".join(op.attrs) or "-"
        rows.append((name, op.fusion.value, "yes" if op.differentiable else "no", arity,
                     str(op.num_outputs), attrs))
    head = ("op", "fusion", "grad", "inputs", "outputs", "attributes")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  " + head[5]]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    lines.append(f"{len(rows)} ops, {sum(r[2] == 'yes' for r in rows)} differentiable")
    print("\n".join(lines))
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    from .aot import export
    if args.backend != "llvm":
        raise CLIError(f"artifacts are built by the llvm backend, not {args.backend!r}")
    info = export(load_target(args.target), None, args.output, opt_level=args.opt,
                  max_threads=args.max_threads, cpu=args.cpu, features=args.features)
    stages = ", ".join(f"{k} {v:.2f}" for k, v in info.stage_seconds.items())
    print(f"wrote {', '.join(sorted(info.files.values()))}\ncompiled in {info.compile_seconds:.2f} s "
          f"({stages})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .aot import load
    exe = load(args.artifact)
    feeds: dict[str, Any] = {}
    if args.inputs:
        try:
            with np.load(args.inputs, allow_pickle=False) as data:
                feeds = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise CLIError(f"cannot read inputs from {args.inputs}: {e}") from None
    names = exe.input_names
    if feeds and all(k.startswith("arr_") for k in feeds) and not set(feeds) & set(names):
        feeds = {n: feeds[f"arr_{i}"] for i, n in enumerate(names) if f"arr_{i}" in feeds}  # np.savez(*arrays)
    outs = None
    for _ in range(max(1, args.steps)):
        outs = exe(**feeds)
    outs = (outs,) if exe.single_output else tuple(outs.values()) if isinstance(outs, dict) else outs
    out_names = [o["name"] for o in exe.manifest["outputs"]]
    if args.out:
        np.savez(args.out, **dict(zip(out_names, outs)))
    if args.params_out:  # the parameters after the steps (a training step's trained weights)
        _save_npz(args.params_out, {k: np.asarray(v) for k, v in exe.params.items()})
    print(f"loaded {args.artifact} in {exe.load_seconds * 1e3:.1f} ms")
    for n, a in zip(out_names, outs):
        a = np.asarray(a)
        stats = f" min {a.min():.6g} max {a.max():.6g} mean {a.mean():.6g}" if a.size and a.dtype.kind in "fiu" else ""
        print(f"{n}: {a.dtype}{list(a.shape)}{stats}" + (f" = {a.item()!r}" if a.size == 1 else ""))
    if args.profile:  # on copies of the parameters after the steps
        print(exe.profile(**feeds, repeat=max(1, args.repeat)).table())
    return 0


def _save_npz(path: str, arrays: dict) -> None:
    import numpy as np
    try:
        np.savez(path, **arrays)
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphc", description="graphc: a define-and-run deep-learning "
                                "graph compiler (tensor IR, passes, LLVM and CUDA code generation).")
    p.add_argument("--version", action="version", version=f"graphc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("dump", help="print a graph as text IR, DOT, JSON or a summary",
                       description="Print the graph that FILE.py:FUNCTION returns (called with no "
                       "arguments), or a text IR file. A graph with outputs set is pruned and "
                       "verified first, as gc.compile would.")
    d.add_argument("target", help="FILE.py:FUNCTION, FILE.gcir or MODEL.onnx")
    d.add_argument("--format", choices=("text", "dot", "json", "summary", "cuda"), default="text")
    d.add_argument("-o", "--output", help="write to this file instead of stdout")
    d.add_argument("-O", dest="opt", type=int, choices=(0, 1, 2, 3), default=None,
                   help="run the optimisation pipeline of this level first (default 2 when "
                   "--after, --all-stages or --report is given)")
    d.add_argument("--backend", default="llvm", help="whose pipeline to run (default llvm)")
    d.add_argument("--after", action="append", metavar="PASS",
                   help="print the IR after this pass (repeatable; 'all' for every pass)")
    d.add_argument("--all-stages", metavar="DIR",
                   help="write the IR before and after every pass as numbered files in DIR (in "
                   "--format), listed in DIR/index.txt")
    d.add_argument("--report", action="store_true",
                   help="print the pass ledger (a table, or JSON with --format json)")
    d.set_defaults(func=_cmd_dump)
    d.epilog = "TARGET may also be an artifact (DIR/NAME from graphc compile): its stored IR and manifest."
    c = sub.add_parser("compile", help="compile a graph into an AOT artifact (.so .h .weights .json .gcir)",
                       description="Export the graph that FILE.py:FUNCTION returns (or a text IR file) as "
                       "an artifact that gc.load, `graphc run` and C programs run without compiling.")
    c.add_argument("target", help="FILE.py:FUNCTION or FILE.gcir (a graph with outputs set)")
    c.add_argument("-o", "--output", required=True, help="artifact path: DIR/NAME")
    c.add_argument("--backend", default="llvm", help="code generator (artifacts: llvm)")
    c.add_argument("-O", dest="opt", type=int, choices=(0, 1, 2, 3), default=2, help="optimisation level")
    c.add_argument("--cpu", help="LLVM CPU name to compile for (default: this machine's)")
    c.add_argument("--features", help="LLVM CPU features to add, e.g. +avx512f,+avx512bw")
    c.add_argument("--max-threads", type=int, help="most threads the artifact will use (default: cores here)")
    c.set_defaults(func=_cmd_compile)
    r = sub.add_parser("run", help="run an AOT artifact on inputs from an .npz file")
    r.add_argument("artifact", help="DIR/NAME of an artifact written by `graphc compile`")
    r.add_argument("--inputs", help=".npz with one array per input (by input name, or arr_0, arr_1, ...)")
    r.add_argument("--out", help="write the outputs to this .npz (by output name)")
    r.add_argument("--steps", type=int, default=1, help="call it this many times (training steps)")
    r.add_argument("--params-out", metavar="FILE.npz",
                   help="write the parameters after the last step to this .npz (by parameter name; "
                   "the trained weights of a training step)")
    r.add_argument("--profile", action="store_true",
                   help="then print the time per kernel (GFLOP/s, GB/s, ops and source lines); "
                   "the artifact's graph is JIT-built with cycle counters for it (needs llvmlite)")
    r.add_argument("--repeat", type=int, default=10, help="calls --profile measures (default 10)")
    r.set_defaults(func=_cmd_run)
    o = sub.add_parser("ops", help="list the op registry")
    o.set_defaults(func=_cmd_ops)
    i = sub.add_parser("install-cuda", help="install pycuda against this machine's CUDA toolkit "
                       "(found as CUDA_HOME, CUDA_PATH, nvcc on PATH or /usr/local/cuda*), "
                       "apart from graphc's own install")
    i.add_argument("--dry-run", action="store_true", help="print the toolkit and the pip command only")
    i.set_defaults(func=_cmd_install_cuda)
    return p


def _cmd_install_cuda(args: argparse.Namespace) -> int:
    """pip install pycuda against the toolkit found: apart from graphc's own install, so a
    failed build leaves graphc installed, and checked first for what the build needs."""
    import subprocess
    import tempfile
    from pathlib import Path

    from .backends.cuda.toolkit import candidates, driver_library, find_toolkit, pycuda_build_env
    root = find_toolkit()
    if root is None:
        tried = ", ".join(str(c) for c in candidates())
        raise CLIError(f"no CUDA toolkit (bin/nvcc and include/cuda.h) in: {tried}; set CUDA_HOME")
    driver = driver_library(root)
    cmd = [sys.executable, "-m", "pip", "install", "pycuda>=2024.1"]
    print(f"CUDA toolkit: {root}\nCUDA driver library: {driver or 'none'}\n$ {' '.join(cmd)}")
    if driver is None:
        raise CLIError("no CUDA driver library (libcuda.so) on this machine, nor a link stub in "
                       f"{root}: pycuda needs the NVIDIA driver; graphc's llvm and reference "
                       "backends work without it")
    if args.dry_run:
        return 0
    with tempfile.TemporaryDirectory(prefix="graphc-pycuda-") as home:
        code = subprocess.run(cmd, env=pycuda_build_env(root, Path(home))).returncode
    if code != 0:
        raise CLIError(f"pip could not build pycuda against {root} (its output is above); graphc "
                       "itself is still installed and its llvm and reference backends work")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except GraphcError as e:
        print(f"graphc: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `graphc dump ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
