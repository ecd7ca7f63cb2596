"""gc.compile: select outputs and updates, prune, verify, hand the graph to a backend."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .backends import backend_graph_passes
from .backends.executable import Executable
from .ir.errors import BuildError, GraphcError
from .ir.graph import Graph as IRGraph, Value
from .ir import observe
from .ir.loc import capture_loc
from .logconfig import CompileLog
from .options import CompileOptions
from .passes.dce import eliminate_dead_code, live_values, prune_signature
from .passes.manager import Pipeline, resolve, standard_passes
from .passes.winograd import configure as configure_winograd
from .tensor import Tensor

UpdatesLike = Mapping[Any, Any] | Sequence[tuple[Any, Any]]


def _value(graph: IRGraph, t: Any, what: str) -> Value:
    if isinstance(t, Tensor):
        if t.graph is not graph:
            raise BuildError(f"{what} {t!r} belongs to graph {t.graph.name!r}, not {graph.name!r}")
        return t.value
    if isinstance(t, Value):
        return t
    raise BuildError(f"{what} must be a Tensor, got {type(t).__name__}")


def _param_name(graph: IRGraph, key: Any) -> str:
    if isinstance(key, str):
        graph.param(key)  # raises a clear error when missing
        return key
    v = _value(graph, key, "update target")
    if v.kind != "param":
        raise BuildError(f"update target {v.ref()} is not a parameter")
    return v.name


def resolve_outputs(graph: IRGraph, outputs: Any) -> tuple[list[Value], bool]:
    """Output values and whether a single (unlisted) output was given."""
    single = isinstance(outputs, (Tensor, Value))
    if not single and not isinstance(outputs, (list, tuple)):
        raise BuildError(f"outputs must be a Tensor or a list of Tensors, got "
                         f"{type(outputs).__name__}")
    return [_value(graph, t, f"output {i}") for i, t in
            enumerate([outputs] if single else outputs)], single


def resolve_updates(graph: IRGraph, updates: UpdatesLike) -> dict[str, Value]:
    if isinstance(updates, Mapping):
        pairs = list(updates.items())
    elif isinstance(updates, (list, tuple)):
        pairs = list(updates)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise BuildError(f"updates[{i}] must be a (parameter, new value) pair, got "
                                 f"{type(pair).__name__} {pair!r:.80}")
    else:
        raise BuildError("updates must map parameters to new values ({param: new} or a list of "
                         f"(param, new) pairs), got {type(updates).__name__}")
    out: dict[str, Value] = {}
    for key, new in pairs:
        name = _param_name(graph, key)
        if name in out:
            raise BuildError(f"parameter {name!r} is updated twice")
        new_v = _value(graph, new, f"update of {name!r}")
        if new_v.type != graph.param(name).type:
            raise BuildError(f"update of parameter {name!r}: new value is {new_v.type}, "
                             f"parameter is {graph.param(name).type}")
        out[name] = new_v
    return out


def given_output_names(graph: IRGraph, outputs: Any = None) -> list[str | None]:
    """The user's name of each output (a named value's, e.g. from `set_outputs({...})`),
    taken before passes replace the output values; None where there is none."""
    values = list(graph.outputs) if outputs is None else resolve_outputs(graph, outputs)[0]
    return [v.name for v in values]


def prepare(graph: IRGraph, outputs: Any = None, updates: UpdatesLike | None = None,
            state_updates: bool | None = None, prune: bool = True) -> tuple[IRGraph, bool]:
    """A pruned, verified copy of `graph` computing `outputs` and applying `updates`.

    Without outputs, the graph's own (set_outputs) are used. Layer state updates
    (batch-norm running statistics) are included when there are parameter updates (a
    training step), unless state_updates says otherwise.
    """
    if outputs is None:
        if not graph.outputs:
            raise BuildError(f"compile: graph {graph.name!r} has no outputs; pass outputs=[...] "
                             "or call g.set_outputs(...)")
        outs, single = list(graph.outputs), False
        upd = dict(graph.updates) if updates is None else resolve_updates(graph, updates)
    else:
        outs, single = resolve_outputs(graph, outputs)
        upd = resolve_updates(graph, updates or {})
    include_state = bool(upd) if state_updates is None else state_updates
    if include_state:
        for name, new in getattr(graph, "state_updates", {}).items():
            upd.setdefault(name, new)
    work = graph.copy()
    index = {v: i for i, v in enumerate(graph.all_values())}
    fresh = list(work.all_values())
    work.outputs = [fresh[index[v]] for v in outs]
    work.updates = {k: fresh[index[v]] for k, v in upd.items()}
    if prune:
        eliminate_dead_code(work, prune_signature_too=True)
    work.verify()
    return work, single


def optimize_graph(graph: IRGraph, outputs: Any = None, *, updates: UpdatesLike | None = None,
                   backend: str = "llvm", state_updates: bool | None = None,
                   opt_level: int = 2, passes: Sequence[Any] | None = None,
                   stream: Any = None, winograd: str = "auto", verify: int | None = None):
    """What gc.compile hands its backend: (optimised graph, single output?, pass ledger).
    With a text stream, the IR after every pass is written to it. verify: the verifier
    level (None: GRAPHC_VERIFY)."""
    work, single = prepare(graph, outputs, updates, state_updates, prune=False)
    signature = live_values(work)  # the inputs asked for follow the graph as built
    pipeline = Pipeline(configure_winograd(resolve(
        standard_passes(opt_level, backend_graph_passes(backend)) if passes is None else passes),
        winograd), print_after="all" if stream is not None else (), stream=stream, verify=verify)
    ledger = pipeline.run(work)  # its DCE shows what unneeded (backward) work was dropped
    eliminate_dead_code(work)
    prune_signature(work, signature)
    observe.current().dump_graph("optimized", work, f"what the backend compiles: "
                                 f"{len(work.nodes)} nodes")
    observe.current().stage(f"backend {backend}")  # its set-up until lowering starts
    return work, single, ledger


def compile(graph: IRGraph, outputs: Any = None, *, updates: UpdatesLike | None = None,  # noqa: A001
            backend: str = "llvm", params: Mapping[str, Any] | None = None,
            state_updates: bool | None = None, opt_level: int = 2,
            passes: Sequence[Any] | None = None, winograd: str = "auto",
            donate: Sequence[str] = (), check_numerics: bool | None = None,
            dump_dir: Any = None) -> Executable:
    """Compile `graph` into an Executable returning `outputs` (a Tensor or a list of them).

    graph: the gc.Graph (or ir.Graph, e.g. from gc.parse or gc.onnx.load) to compile.
    outputs: a Tensor (the call returns that array) or a list of Tensors (it returns a
        tuple); None uses what `graph.set_outputs(...)` recorded.
    updates: {param: new_value} applied after every call (an optimizer step).
    backend: "llvm" (the default: native code for this CPU), "reference" (the numpy
        interpreter, the oracle every test compares against; slow) or "cuda" (pycuda, nvcc
        and an NVIDIA GPU).
    params: initial parameter values overriding the graph's initialisers.
    state_updates: include layer state updates (batch-norm running statistics); None (the
        default) includes them exactly when there are parameter updates (a training step).
    opt_level: 0 runs only the passes running needs; 1-3 run simplification and the
        backend's optimisations (fusion for llvm). passes: a custom list of pass names (or
        passes.manager.Pass objects) instead. `exe.report()` shows what each pass did.
    winograd: "auto" lets a cost model choose direct or Winograd F(2x2,3x3)/F(4x4,3x3) per
        3x3 stride-1 convolution (passes/winograd.py); "off", "F2" or "F4" override it.
    donate: names of inputs whose arrays the call may overwrite (activations then run in
        place in them, as in intermediates); a donated array's contents after a call are
        unspecified. Arrays converted on the way in (another dtype, not contiguous) are
        copies, so only those passed as they are get overwritten.
    check_numerics: check every kernel's results for NaN/inf; a call that produces one
        raises gc.NumericsError naming the first node that did, its op, your source line
        and whether its inputs were already non-finite. None (the default) reads
        GRAPHC_CHECK_NUMERICS=1. Costs a scan of each result when on, nothing when off.
    dump_dir: write the IR after every stage into a fresh numbered folder DIR/NNN-<graph>/
        (`exe.dump_dir`): each graph pass, the kernel IR after lowering and after each
        kernel-IR step, LLVM IR before and after optimisation, assembly, the ledger and the
        memory plan, listed in index.txt. None (the default) reads GRAPHC_DUMP_DIR.
        Logging: GRAPHC_LOG=compile,passes,cache,llvm,... (graphc/logconfig.py).
    """
    loc = capture_loc()
    specialising = getattr(graph, "_graphc_compile", None)
    if specialising is not None and not isinstance(graph, IRGraph):
        # A gc.onnx DynamicModel (a dynamic batch, shape inputs): it compiles per call.
        return specialising(outputs, dict(
            updates=updates, backend=backend, params=params, state_updates=state_updates,
            opt_level=opt_level, passes=passes, winograd=winograd, donate=donate,
            check_numerics=check_numerics, dump_dir=dump_dir))
    from .pipeline import compile_graph  # (it calls back into optimize_graph for a batch split)
    compile_log = CompileLog()
    try:
        _check_graph_and_params(graph, params)
        opts = CompileOptions.resolve(backend=backend, opt_level=opt_level, winograd=winograd,
                                      passes=passes, donate=donate, check_numerics=check_numerics,
                                      dump_dir=dump_dir, state_updates=state_updates)
        opts.check_donate([v.name for v in graph.inputs], graph.name)
        compile_log.begin(graph, opts.backend, opts.opt_level, opts.dump_dir)
        work, single, ledger = optimize_graph(graph, outputs, updates=updates, backend=opts.backend,
                                              state_updates=opts.state_updates,
                                              opt_level=opts.opt_level, passes=opts.passes,
                                              winograd=opts.winograd, verify=opts.verify)
        exe = compile_graph(work, opts.backend, params=params, single_output=single,
                            opt_level=opts.opt_level, donate=opts.donate,
                            check_numerics=opts.check_numerics, ledger=ledger, verify=opts.verify,
                            **({"num_threads": opts.num_threads} if opts.num_threads else {}))
        exe.options = opts
        exe.ledger = ledger
        exe.output_names = given_output_names(graph, outputs)  # what gc.export(exe) calls them
        # Inputs the graph's source declared (an ONNX model's, by its own names too): a call
        # may pass those the outputs do not need; they are ignored (Executable.match_arguments).
        exe.declared_inputs = dict(getattr(graph, "declared_inputs", None) or {})
        compile_log.done(exe, opts.backend, opts.opt_level)
        return exe
    except GraphcError as e:
        raise e.attach(loc=loc)
    finally:
        compile_log.close()


def _check_graph_and_params(graph: Any, params: Any) -> None:
    """The kinds of what compile compiles (the options: graphc/options.py)."""
    if not isinstance(graph, IRGraph):
        raise BuildError(f"compile takes a graph (gc.Graph), got {type(graph).__name__}")
    if params is not None and not (isinstance(params, Mapping)
                                   and all(isinstance(k, str) for k in params)):
        raise BuildError(f"params must map parameter names to arrays, got {type(params).__name__}")
