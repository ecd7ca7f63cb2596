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
    result = fn()
    graph = getattr(result, "graph", result)  # an Executable carries its compiled graph
    if not isinstance(graph, Graph):
        raise CLIError(f"{target} returned {type(result).__name__}, not a graphc Graph")
    if graph.outputs and not hasattr(result, "graph"):
        graph, _ = prepare(graph)  # what gc.compile would compile: pruned and verified
    return graph


def _cmd_dump(args: argparse.Namespace) -> int:
    from .ir.analysis import to_dot
    from .ir.jsonform import graph_to_json
    from .ir.summary import summarize
    from .ir.text import print_graph

    from .aot import describe, is_artifact
    if is_artifact(args.target):  # an exported artifact: its stored IR and manifest
        print(describe(args.target))
        return 0
    g = load_target(args.target)
    optimise = args.after or args.all_stages or args.report or args.opt is not None
    if optimise:
        from .backends import backend_graph_passes
        from .passes.manager import Pipeline, standard_passes
        level = 2 if args.opt is None else args.opt
        pipeline = Pipeline(standard_passes(level, backend_graph_passes(args.backend)), verify=True,
                            print_after="all" if "all" in (args.after or ()) else (args.after or ()),
                            dump_dir=args.all_stages)
        ledger = pipeline.run(g)
        if args.report:
            print(ledger)
        if args.after or args.all_stages or args.report:
            return 0
    if args.format == "text":
        out = print_graph(g)
    elif args.format == "dot":
        out = to_dot(g)
    elif args.format == "json":
        out = json.dumps(graph_to_json(g), indent=1)
    elif args.format == "cuda":  # the CUDA C the cuda backend would compile for this graph
        from .backends.cuda import lower_for_cuda
        from .backends.cuda.codegen import render
        if not optimise:
            from .backends import backend_graph_passes
            from .passes.manager import Pipeline, standard_passes
            Pipeline(standard_passes(2, backend_graph_passes("cuda"))).run(g)
        out = render(lower_for_cuda(g)).source
    else:
        out = summarize(g)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(out if out.endswith("\n") else out + "\n")
        except OSError as e:
            raise CLIError(f"cannot write {args.output}: {e}") from None
    else:
        print(out.rstrip("\n"))
    return 0


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
    outs = (outs,) if exe.single_output else outs
    out_names = [o["name"] for o in exe.manifest["outputs"]]
    if args.out:
        np.savez(args.out, **dict(zip(out_names, outs)))
    print(f"loaded {args.artifact} in {exe.load_seconds * 1e3:.1f} ms")
    for n, a in zip(out_names, outs):
        a = np.asarray(a)
        stats = f" min {a.min():.6g} max {a.max():.6g} mean {a.mean():.6g}" if a.size and a.dtype.kind in "fiu" else ""
        print(f"{n}: {a.dtype}{list(a.shape)}{stats}" + (f" = {a.item()!r}" if a.size == 1 else ""))
    return 0


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
                   help="write the IR before and after every pass as numbered files in DIR")
    d.add_argument("--report", action="store_true", help="print the pass ledger")
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
    r.set_defaults(func=_cmd_run)
    o = sub.add_parser("ops", help="list the op registry")
    o.set_defaults(func=_cmd_ops)
    return p


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
