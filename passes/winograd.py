"""Winograd convolution rewriting, chosen per layer by a cost model.

A conv2d with a 3x3 kernel, stride 1, dilation 1 and one group (any padding), f32 or f64,
becomes input transform -> batched GEMM over the alpha^2 transform positions -> output
transform (ir/ops/winograd.py); a conv2d_grad_input of the same geometry with padding <= 2
(the backward-data convolution) is a 3x3 convolution of the output gradient with the rotated,
transposed filter and is rewritten the same way. When the weight is a graph constant
(inference) the filter transform is folded now, in float64; otherwise (training) it stays a
graph op. A bias add and a following attribute-free unary activation that only the
convolution feeds are absorbed into the output transform; the zero padding is applied by
the input transform.

Selection. `mode` "auto" estimates each layer's time for direct (im2col + GEMM) and for
F(2x2,3x3) and F(4x4,3x3) from its shapes and `MachineFigures` (measured on the development
machine with benchmarks/conv.py --calibrate) and takes the fastest; "F2"/"F4" force a tile
on every eligible layer, "off" keeps them all direct. Every decision and its reason goes to
the pass ledger's notes.

Accuracy (float32 LLVM code against a float64 direct convolution; ReLU'd N(0,1) inputs,
He-initialised weights, K = 64, padding 1; relative error = max |y - y64| / max |y64|):

    C x HxW        direct   F(2x2,3x3)  F(4x4,3x3)  F(6x6,3x3)
    64 x 28x28     4.4e-7   3.2e-7      4.9e-6      8.0e-6
    256 x 14x14    3.3e-7   5.7e-7      7.2e-6      1.7e-5
    512 x 14x14    3.1e-7   5.5e-7      8.3e-6      1.3e-5

The documented bounds (ERROR_BOUND, asserted by tests/passes/test_winograd.py) are 2e-6 for
F2 and 2e-5 for F4. F(6x6,3x3) errs about twice as much as F4 and past the 1e-5 that F4
reaches, so it is not offered (the ops accept tile 6 for experiments).
"""
from __future__ import annotations

from dataclasses import dataclass
from ..ir import dtypes
from ..ir.errors import GraphcError
from ..ir.graph import Graph, Node, Value
from ..ir.ops.winograd import interior_tiles, activation_op, tiles
from ..ir.registry import get_op
from ..ir.rewrite import rebuild_at
from .passdef import Pass

MODES = ("auto", "off", "F2", "F4")
ERROR_BOUND = {2: 2e-6, 4: 2e-5}  # float32 relative error per tile, see the docstring


# Winograd must beat the direct estimate by this factor (the cost model's error); and twice
# that when its batch-sized transformed tensors need more than twice the direct kernel's
# scratch (one image's columns per run), as on small images in training steps.
WINOGRAD_MIN_GAIN = 1.25


@dataclass(frozen=True)
class MachineFigures:
    """What the cost model knows of the machine (2-core EPYC, AVX2, both threads).

    GEMM throughput is gemm_gflops * eff(m) * eff(n) * eff(k) with eff(d) = d / (d + half_d):
    small dimensions leave the microkernel idle or packing-bound. im2col is memory-bound
    (bytes moved / its rate); a transform costs per element, more on the guarded border
    tiles than on the vectorised interior, and F4's more than F2's. Fitted to quiet-machine
    measurements of benchmarks/conv.py (--calibrate and per-op timings): batched
    16 x (64x64 @ 64x784) 130 GFLOP/s, 36 x (64x64 @ 64x196) 108, 36 x (256x256 @ 256x16) 91;
    input transforms 0.40 (F2) and 0.68 (F4) ns per element on 64 x 56x56, 0.58 and 1.73 on
    256 x 14x14; the per-image direct kernel (ir/ops/conv_lowering.py: columns built in
    cache, copies without bounds checks) of a 64-channel 56x56 layer 2.8 ms, which the
    im2col rate below reproduces."""
    gemm_gflops: float = 150.0
    half_m: float = 4.0
    half_n: float = 6.0
    half_k: float = 12.0
    im2col_gbytes: float = 14.0
    # One image's columns that fit in L2 are built and packed there: on the ResNet-18-style
    # ONNX model's 8-channel 16x16 layers (2 images, 74 KB of columns each) the direct
    # kernel ran in 16 us, 12.6 of them GEMM, i.e. ~90 GB/s for the columns; 40 is kept.
    im2col_cached_gbytes: float = 40.0
    l2_bytes: int = 256 * 1024
    # Transform cost per transformed element (alpha^2 * channels * tiles), in ns, for tiles
    # whose window lies inside the image (vectorised) and for border tiles (guarded, scalar);
    # the output transform costs output_factor times the input transform.
    interior_ns: tuple[tuple[int, float], ...] = ((2, 0.33), (4, 0.35))
    edge_ns: tuple[tuple[int, float], ...] = ((2, 0.85), (4, 2.3))
    output_factor: float = 0.6

    def gemm_seconds(self, batch: int, m: int, n: int, k: int) -> float:
        eff = (m / (m + self.half_m)) * (n / (n + self.half_n)) * (k / (k + self.half_k))
        return 2.0 * batch * m * n * k / (self.gemm_gflops * 1e9 * eff)

    def transform_seconds(self, tile: int, elements: int, edge_fraction: float) -> float:
        ns = (dict(self.interior_ns)[tile] * (1.0 - edge_fraction) +
              dict(self.edge_ns)[tile] * edge_fraction)
        return elements * ns * 1e-9


DEFAULT_MACHINE = MachineFigures()


@dataclass(frozen=True)
class Choice:
    tile: int | None  # None: direct
    reason: str


def _eligible(node: Node) -> str | None:
    """Why the node cannot take the Winograd path, or None when it can."""
    a = node.attrs
    w = node.inputs[1]
    if w.shape[2:] != (3, 3):
        return f"kernel {w.shape[2]}x{w.shape[3]} is not 3x3"
    if tuple(a["strides"]) != (1, 1) or tuple(a["dilations"]) != (1, 1):
        return "stride or dilation is not 1"
    if a["groups"] != 1:
        return f"groups={a['groups']}"
    if w.dtype not in (dtypes.f32, dtypes.f64):
        return f"dtype {w.dtype} (f32/f64 only)"
    if node.op == "conv2d_grad_input" and max(a["padding"]) > 2:
        return f"padding {tuple(a['padding'])} > 2 has no convolution form"
    return None


def _conv_geometry(node: Node) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], bool]:
    """(input shape, output shape, padding of the forward-form convolution, flip)."""
    a = node.attrs
    if node.op == "conv2d":
        return node.inputs[0].shape, node.outputs[0].shape, tuple(a["padding"]), False
    pt, pb, pl, pr = a["padding"]
    return node.inputs[0].shape, node.outputs[0].shape, (2 - pt, 2 - pb, 2 - pl, 2 - pr), True


def scratch_bytes(node: Node, tile: int | None) -> int:
    """Bytes a path keeps besides the convolution's input and output: the direct kernel's
    per-run image columns (ir/ops/conv_lowering.py), or Winograd's batch-sized transformed
    input and products (alpha^2 x tiles x (C + K))."""
    from ..ir.ops.conv_lowering import RUNS
    (n, c, _, _), (_, k, oh, ow), _, _ = _conv_geometry(node)
    size = node.inputs[0].dtype.itemsize
    if tile is None:
        return min(n, RUNS) * c * 9 * oh * ow * size
    th, tw = tiles((oh, ow), tile)
    return (tile + 2) ** 2 * n * th * tw * (c + k) * size


def estimate(node: Node, tile: int | None, machine: MachineFigures = DEFAULT_MACHINE) -> float:
    """Estimated seconds of a convolution node on the direct path (tile None) or F(tile)."""
    (n, c, h, w), (_, k, oh, ow), _, _ = _conv_geometry(node)
    size = node.inputs[0].dtype.itemsize
    if tile is None:
        cols = n * c * 9 * oh * ow * size
        rate = machine.im2col_cached_gbytes if cols // n <= machine.l2_bytes else machine.im2col_gbytes
        return (2 * cols + n * c * h * w * size) / (rate * 1e9) + \
            machine.gemm_seconds(n, k, oh * ow, 9 * c)
    alpha2 = (tile + 2) ** 2
    th, tw = tiles((oh, ow), tile)
    p = n * th * tw
    (pt, _, pl, _) = _conv_geometry(node)[2]
    r0, r1 = interior_tiles(th, tile, pt, h, tile + 2)
    c0, c1 = interior_tiles(tw, tile, pl, w, tile + 2)
    edge = 1.0 - (r1 - r0) * (c1 - c0) / (th * tw)
    seconds = machine.transform_seconds(tile, alpha2 * p * (c + machine.output_factor * k), edge)
    if node.inputs[1].kind != "const":  # the filter transform runs on every call
        seconds += machine.transform_seconds(tile, alpha2 * k * c, 0.0)
    return seconds + machine.gemm_seconds(alpha2, k, p, c)


def choose(node: Node, mode: str, machine: MachineFigures = DEFAULT_MACHINE) -> Choice:
    why_not = _eligible(node)
    if why_not is not None:
        return Choice(None, f"direct: {why_not}")
    if mode == "off":
        return Choice(None, "direct: winograd=off")
    if mode in ("F2", "F4"):
        return Choice(int(mode[1]), f"F({mode[1]}x{mode[1]},3x3): winograd={mode}")
    times = {t: estimate(node, t, machine) for t in (None, 2, 4)}
    best = min(times, key=times.__getitem__)
    why = ""
    if best is not None:
        gain = times[None] / times[best]
        more = scratch_bytes(node, best) / scratch_bytes(node, None)
        if gain < WINOGRAD_MIN_GAIN:
            best, why = None, f" (F{best} only {gain:.2f}x faster)"
        elif gain < 2 * WINOGRAD_MIN_GAIN and more > 2:
            best, why = None, f" (F{best} {gain:.2f}x faster but {more:.1f}x the scratch memory)"
    shown = ", ".join(f"{'direct' if t is None else f'F{t}'} {s * 1e3:.3f}" for t, s in times.items())
    name = "direct" if best is None else f"F({best}x{best},3x3)"
    return Choice(best, f"{name}: estimated ms {shown}{why}")


# --- the rewrite -------------------------------------------------------------------------------

def _single_user(graph: Graph, users: dict, v: Value) -> Node | None:
    """The one node reading v, when v is not also a graph result."""
    readers = users.get(v, [])
    if len(readers) != 1 or v in graph.outputs or v in graph.updates.values():
        return None
    return readers[0]


def _bias_of(add: Node, conv_out: Value) -> Value | None:
    """The per-channel operand of add(conv, b) with b of shape (1, K, 1, 1) or (K, 1, 1).
    b cannot depend on conv: conv's output would then have a second reader."""
    if add.op != "add" or len(add.inputs) != 2 or add.outputs[0].type != conv_out.type:
        return None
    other = add.inputs[1] if add.inputs[0] is conv_out else add.inputs[0]
    if other is conv_out:
        return None
    k = conv_out.shape[1]
    if other.dtype == conv_out.dtype and other.shape in ((1, k, 1, 1), (k, 1, 1)):
        return other
    return None


def _is_activation(node: Node) -> bool:
    try:
        return activation_op(node.op) is not None and len(node.inputs) == 1
    except GraphcError:
        return False


def _epilogue(graph: Graph, users: dict, conv: Node) -> tuple[list[Node], Value | None, str]:
    """The nodes after `conv` the output transform absorbs: (chain, bias, activation)."""
    chain = [conv]
    bias = None
    nxt = _single_user(graph, users, conv.outputs[0])
    if nxt is not None and conv.op == "conv2d":
        bias = _bias_of(nxt, conv.outputs[0])
        if bias is not None:
            chain.append(nxt)
            nxt = _single_user(graph, users, nxt.outputs[0])
    if nxt is not None and _is_activation(nxt) and nxt.inputs[0] is chain[-1].outputs[0]:
        chain.append(nxt)
        return chain, bias, nxt.op
    return chain, bias, ""


def _filter(b, w: Value, tile: int, flip: bool) -> Value:
    if w.kind == "const":  # inference: fold G g G^T now (float64, rounded once)
        ref = get_op("winograd_filter_transform").reference
        return b.const(ref(w.data, tile=tile, flip=flip), w.dtype)
    return b.winograd_filter_transform(w, tile=tile, flip=flip)


def _build(b, conv: Node, tile: int, bias: Value | None, activation: str) -> Value:
    x, w = conv.inputs
    _, out_shape, padding, flip = _conv_geometry(conv)
    u = _filter(b, w, tile, flip)
    v = b.winograd_input_transform(x, tile=tile, padding=padding)
    prod = b.matmul(u, v)
    extra = [b.reshape(bias, (out_shape[1],))] if bias is not None else []
    return b.winograd_output_transform(prod, *extra, tile=tile, output_shape=out_shape,
                                       activation=activation)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise GraphcError(f"winograd={mode!r}: expected one of {', '.join(MODES)}")


def winograd(graph: Graph, mode: str = "auto",
             machine: MachineFigures = DEFAULT_MACHINE) -> dict:
    """Rewrite eligible convolutions in place; returns ledger counts and a 'notes' list
    with one line per convolution: its node, the choice and the reason."""
    _check_mode(mode)
    stats: dict = {"F2": 0, "F4": 0, "direct": 0, "filters folded": 0, "epilogues fused": 0,
                   "notes": []}
    users = graph.users()
    for conv in [n for n in graph.nodes if n.op in ("conv2d", "conv2d_grad_input")]:
        choice = choose(conv, mode, machine)
        where = f"{conv.op}({', '.join(str(v.type) for v in conv.inputs)})" + \
            (f" at {conv.loc}" if conv.loc else "")
        stats["notes"].append(f"{where}: {choice.reason}")
        if choice.tile is None:
            stats["direct"] += 1
            continue
        chain, bias, activation = _epilogue(graph, users, conv)
        stats[f"F{choice.tile}"] += 1
        stats["filters folded"] += conv.inputs[1].kind == "const"
        stats["epilogues fused"] += len(chain) - 1
        rebuild_at(graph, chain[-1],
                   lambda b, c=conv, t=choice.tile: [_build(b, c, t, bias, activation)])
        for dead in chain[:-1]:
            graph.nodes.remove(dead)
        users = graph.users()
    return stats


def winograd_pass(mode: str = "auto", machine: MachineFigures = DEFAULT_MACHINE):
    """A pass-manager Pass running the rewrite in `mode`."""
    _check_mode(mode)

    def run(g: Graph) -> dict:
        return winograd(g, mode, machine)
    return Pass("winograd", f"Winograd 3x3 convolutions ({mode}): transforms + batched GEMM", run)


def configure(passes: list, mode: str) -> list:
    """`passes` with the winograd pass set to `mode`: replaced where present; for a forced
    tile, inserted before legalisation (or appended) where absent; dropped for "off"."""
    p = winograd_pass(mode)
    out = [p if q.name == "winograd" else q for q in passes if not (mode == "off" and q.name == "winograd")]
    if mode in ("F2", "F4") and all(q.name != "winograd" for q in out):
        at = next((i for i, q in enumerate(out) if q.name == "legalize"), len(out))
        out.insert(at, p)
    return out
