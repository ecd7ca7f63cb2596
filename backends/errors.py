"""Errors the compiled code of every native backend raises at run time (one class for the
LLVM and CUDA backends), importable without llvmlite or pycuda: the AOT loader runs
compiled code without loading LLVM."""
from __future__ import annotations

from ..ir.errors import KernelRuntimeError


class KernelError(KernelRuntimeError):
    """A compiled kernel flagged bad data at run time (e.g. an index out of range); one
    `except KernelRuntimeError` catches it and the kernel-IR interpreter's alike."""
