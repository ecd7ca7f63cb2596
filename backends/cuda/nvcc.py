"""Compiling CUDA C with nvcc: to a cubin for the runtime, to PTX or cubin for the CI check.

nvcc is found as `$GRAPHC_NVCC`, `nvcc` on PATH, or in the toolkit toolkit.py finds. Flags:
`-std=c++17 -O3 -fmad=false` (elementwise arithmetic rounds as numpy does; the GEMM
templates call fma explicitly), `-Werror=all-warnings` when `strict` (the CI check), and
`-arch=sm_XY` for the target. A failed compile raises `NvccError` with nvcc's
diagnostics and the offending source lines, so a code generation bug names its kernel.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...ir.errors import GraphcError

BASE_FLAGS = ("-std=c++17", "-O3", "-fmad=false", "-lineinfo")


class NvccError(GraphcError):
    """nvcc is missing or rejected the generated CUDA C."""


def find_nvcc() -> str | None:
    env = os.environ.get("GRAPHC_NVCC")
    if env:
        return env if Path(env).is_file() else None
    path = shutil.which("nvcc")
    if path:
        return path
    from .toolkit import find_toolkit  # CUDA_HOME, CUDA_PATH, /usr/local/cuda*
    root = find_toolkit()
    return str(root / "bin" / "nvcc") if root is not None else None


@functools.lru_cache(maxsize=4)
def nvcc_version(nvcc: str | None = None) -> str:
    """`nvcc --version`'s release line (part of the compile cache key)."""
    exe = nvcc or find_nvcc()
    if exe is None:
        raise NvccError("nvcc not found (set GRAPHC_NVCC or CUDA_HOME, or put nvcc on PATH)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    lines = [l for l in out.stdout.splitlines() if "release" in l]
    return lines[-1].strip() if lines else out.stdout.strip()


def _excerpt(source: str, diagnostics: str, context: int = 2) -> str:
    """The source lines nvcc complains about, numbered."""
    lines = source.splitlines()
    wanted = sorted({int(m) for m in re.findall(r"\.cu\((\d+)\)", diagnostics)})[:5]
    out = []
    for n in wanted:
        for i in range(max(1, n - context), min(len(lines), n + context) + 1):
            out.append(f"{i:6d}{'>' if i == n else ' '} {lines[i - 1]}")
        out.append("   ...")
    return "\n".join(out)


def compile_cuda(source: str, arch: str, output: str = "cubin", strict: bool = False,
                 extra_flags: tuple[str, ...] = (), timeout: float = 600.0) -> bytes:
    """Compile a translation unit; returns the cubin (or PTX text as bytes)."""
    if output not in ("cubin", "ptx"):
        raise NvccError(f"unknown nvcc output kind {output!r}")
    if not re.fullmatch(r"(sm|compute)_\d+[a-z]?", arch):
        raise NvccError(f"bad CUDA architecture {arch!r} (expected e.g. sm_80)")
    exe = find_nvcc()
    if exe is None:
        raise NvccError("nvcc not found (set GRAPHC_NVCC or CUDA_HOME, or put nvcc on PATH)")
    with tempfile.TemporaryDirectory(prefix="graphc-nvcc-") as tmp:
        src = Path(tmp) / "graphc.cu"
        dst = Path(tmp) / f"graphc.{output}"
        src.write_text(source)
        flags = list(BASE_FLAGS) + [f"-arch={arch}", f"--{output}", "-o", str(dst)]
        if strict:
            flags += ["-Werror=all-warnings", "-Xptxas=-Werror"]
        flags += list(extra_flags)
        try:
            res = subprocess.run([exe, *flags, str(src)], capture_output=True, text=True,
                                 timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise NvccError(f"nvcc timed out after {timeout:.0f} s") from None
        if res.returncode != 0:
            diag = (res.stderr + res.stdout).strip()
            raise NvccError(f"nvcc -arch={arch} failed (exit {res.returncode}):\n{diag[:4000]}\n"
                            f"{_excerpt(source, diag)}")
        return dst.read_bytes()
