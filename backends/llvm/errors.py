"""Errors the LLVM backend raises at run time, importable without llvmlite (the AOT loader
runs compiled code without loading LLVM): the backends' one KernelError."""
from __future__ import annotations

from ..errors import KernelError

__all__ = ["KernelError"]
