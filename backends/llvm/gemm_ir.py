"""Small llvmlite helpers of the GEMM emitters: integer min/max, rounding, counted loops,
declarations, pointer casts."""
from __future__ import annotations

from contextlib import contextmanager

import llvmlite.ir as ir

from .gemm_target import I64, _c64


def _imin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _imax(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _round_up_ir(b, x, m: int):
    return b.mul(b.sdiv(b.add(x, _c64(m - 1)), _c64(m)), _c64(m))


def _ceil_div_ir(b, x, y):
    return b.sdiv(b.sub(b.add(x, y), _c64(1)), y)


@contextmanager
def _for(b: ir.IRBuilder, start, stop, step=1, name="i"):
    """``for (iv = start; iv < stop; iv += step)`` on signed i64; yields iv."""
    start = _c64(start) if isinstance(start, int) else start
    stop = _c64(stop) if isinstance(stop, int) else stop
    step = _c64(step) if isinstance(step, int) else step
    pre = b.block
    head = b.append_basic_block(name + ".head")
    body = b.append_basic_block(name + ".body")
    end = b.append_basic_block(name + ".end")
    b.branch(head)
    b.position_at_end(head)
    iv = b.phi(I64, name)
    iv.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", iv, stop), body, end)
    b.position_at_end(body)
    yield iv
    iv.add_incoming(b.add(iv, step, name + ".next"), b.block)
    b.branch(head)
    b.position_at_end(end)


def _get_or_declare(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, fnty, name)
    return fn


def _gep(b, ptr, idx):
    return b.gep(ptr, [idx if not isinstance(idx, int) else _c64(idx)])


def _cast_ptr(b, ptr, ty):
    return ptr if ptr.type == ty else b.bitcast(ptr, ty)
