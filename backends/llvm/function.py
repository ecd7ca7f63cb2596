"""One LLVM function being emitted: the state its emitters share (builder, loop variables,
locals, captured values). The emitters are split by idea: loops.py (statements, loop
nests, parallel outlining), gemm_call.py (GEMM statements), scalar.py (expressions),
casts.py (constants and conversions)."""
from __future__ import annotations

from llvmlite import ir

from ...ir import kernel as K
from ...ir.dtypes import DType
from .casts import CastEmitter
from .gemm_call import GemmEmitter
from .irtypes import CodegenError
from .loops import LoopEmitter
from .scalar import ScalarEmitter


class _FuncGen(LoopEmitter, GemmEmitter, ScalarEmitter, CastEmitter):
    """Emits statements into one LLVM function (`mg`: the module._ModuleGen it belongs to,
    not imported here: module.py imports this module)."""

    def __init__(self, mg, fn: ir.Function, bufs: dict[str, ir.Value], kernel: K.Kernel,
                 used: list[str] | None = None) -> None:
        self.mg = mg
        self.fn = fn
        self.kernel = kernel
        self.bufs = bufs
        self.entry_block = fn.append_basic_block("entry")
        self.alloca_builder = ir.IRBuilder(self.entry_block)
        body = fn.append_basic_block("body")
        self.b = ir.IRBuilder(body)
        self.vars: dict[str, ir.Value] = {}
        self.locals: dict[str, tuple[ir.Value, DType]] = {}
        self.captured: dict[str, ir.Value] = {}  # read-only locals passed by value
        self.captured_dtypes: dict[str, DType] = {}
        self.reduce_depth = 0
        self.in_loop = 0
        self.fm: tuple = ()
        self._memo: dict[int, ir.Value] = {}

    def finish(self) -> None:
        self.b.ret_void()
        self.alloca_builder.branch(self.fn.blocks[1])

    def error(self, msg: str) -> CodegenError:
        src = f" (computes {self.kernel.source})" if self.kernel.source else ""
        return CodegenError(f"kernel {self.kernel.name!r}{src}: {msg}")
