"""What the CUDA code generator (codegen.py) and its GEMM renderer (gemm.py) share: the
rendered module and its launches, the options, how a phase maps onto the grid, C locals,
and loop variables from a flat index. Its own module so that neither imports the other's types."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ...ir import kernel as K
from ...ir.dtypes import DType
from . import analysis as A
from .cexpr import ExprWriter, reg_type, sanitize

BLOCK = 256
MAX_BLOCKS = 1 << 16          # grid-stride loops cover the rest
VEC = 4                       # elements per vector load (16 bytes of f32 or i32)


# -- output ------------------------------------------------------------------------------------

@dataclass
class Launch:
    """One kernel launch: `function<<<grid, block>>>(pointer of each buffer in buffers)`."""
    function: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    buffers: list[str]
    kernel: str           # the kernel-IR kernel it belongs to
    source: str = ""      # the graph node(s), for errors
    grid_stride: bool = True  # loops over its index space: any grid.x computes the same
    check: bool = False   # a check_numerics scan of `kernel`'s results, not part of it


@dataclass
class CudaModule:
    source: str
    launches: list[Launch]
    storage: dict[str, A.Storage]
    arena_bytes: int
    external: list[str]
    functions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CodegenOptions:
    """Knobs of the generated code (the compile cache keys on the code itself)."""
    block: int = BLOCK
    max_blocks: int = MAX_BLOCKS
    group_reduce_min: int = 32       # reductions shorter than this run one per thread
    tensor_cores: bool = True        # WMMA for f16 GEMMs
    vectorize: bool = True           # 16-byte loads and stores in elementwise kernels
    big_gemm_tiles: int = 120        # 128 x 128 GEMM tiles from this many tiles (fills an H100)
    merge_phases: bool = True        # independent loop nests of a kernel share one launch
    check_numerics: bool = False     # after each kernel, a launch scanning its results for NaN/inf


@dataclass
class _Plan:
    """How one phase maps onto the grid."""
    nest: list[K.For]            # the perfect nest (empty: no loops around the body)
    body: list[K.Stmt]           # innermost body of the nest
    parallel: list[K.For]        # nest loops spread over threads (nest order)
    serial: list[K.For]          # nest loops each thread runs (nest order)


class ModuleWriter(Protocol):
    """What gemm.render_gemm uses of codegen._ModuleWriter (the module being rendered)."""
    opt: CodegenOptions
    dtypes: dict[str, DType]
    storage: dict[str, A.Storage]
    parts: list[str]
    launches: list[Launch]
    functions: list[str]

    def buffers_of(self, stmts: list[K.Stmt]) -> tuple[list[str], set[str]]: ...

    def writer(self, k: K.Kernel, used: list[str], extents) -> ExprWriter: ...

    def signature(self, used: list[str], written: set[str]) -> str: ...


def _local_name(w: ExprWriter, decl: K.Declare) -> str:
    """The C variable of a Declare (declared at the top of the function)."""
    cname = w.declared.get(id(decl))
    if cname is None:
        raise w.error(f"internal: local ${decl.local.name} was not pre-declared")
    w.locals[decl.local.name] = cname, decl.local.dtype
    return cname


def _declare_locals(w: ExprWriter, stmts: list[K.Stmt]) -> str:
    """Every Declare becomes a C variable of its own at the top of the function (locals
    are per thread; a redeclaration in the IR is a new variable)."""
    lines = []
    for n, s in enumerate(x for x in A.walk_stmts(stmts) if isinstance(x, K.Declare)):
        cname = f"l{n}_{sanitize(s.local.name)}"
        w.declared[id(s)] = cname
        lines.append(f"  {reg_type(s.local.dtype)} {cname};")
    return "\n".join(lines) + ("\n" if lines else "")


def _decompose(w: ExprWriter, flat: str, loops: list[K.For], ind: str) -> list[str]:
    """Loop variables from a flat index, the innermost loop fastest."""
    out = []
    rest = flat
    for n, l in enumerate(reversed(loops)):
        c = f"v_{sanitize(l.var.name)}"
        w.vars[l.var.name] = c
        if n == len(loops) - 1:
            out.append(f"{ind}const {w.idx} {c} = {rest};")
        else:
            out.append(f"{ind}const {w.idx} {c} = {rest} % {l.extent};")
            nxt = f"{flat}_{n}"
            out.append(f"{ind}const {w.idx} {nxt} = {rest} / {l.extent};")
            rest = nxt
    return out
