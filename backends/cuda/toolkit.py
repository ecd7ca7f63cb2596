"""Finding the CUDA toolkit the way nvcc users expect, for the install of pycuda.

pycuda builds from source and takes its toolkit root from `CUDA_ROOT`, else from the `nvcc`
on PATH (two directories up). Where `nvcc` on PATH is a wrapper script (here
/usr/local/bin/nvcc runs /usr/local/cuda-13.0/bin/nvcc) that guess is /usr/local, which has
no cuda.h, and the build fails after minutes. `find_toolkit` checks, in order, CUDA_HOME,
CUDA_PATH, CUDA_ROOT, the real directory of the nvcc on PATH, the directory a wrapper
script names, /usr/local/cuda and /usr/local/cuda-* (newest first), and takes the first
that holds both bin/nvcc and include/cuda.h.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


def _is_toolkit(root: Path) -> bool:
    return (root / "bin" / "nvcc").is_file() and (root / "include" / "cuda.h").is_file()


def _wrapped_root(script: Path) -> Path | None:
    """The toolkit a small wrapper script execs (`exec /opt/cuda-X/bin/nvcc "$@"`)."""
    try:
        if script.stat().st_size > 4096:
            return None  # a real binary, not a wrapper
        text = script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(r"(/\S+)/bin/nvcc\b", text)
    return Path(m.group(1)) if m else None


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path.name)) or (0,)


def candidates(env: dict[str, str] | None = None) -> list[Path]:
    env = dict(os.environ) if env is None else env
    out = [Path(env[k]) for k in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT") if env.get(k)]
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc:
        real = Path(nvcc).resolve()
        out.append(real.parent.parent)
        wrapped = _wrapped_root(real)
        if wrapped is not None:
            out.append(wrapped)
    out.append(Path("/usr/local/cuda"))
    out += sorted(Path("/usr/local").glob("cuda-*"), key=_version_key, reverse=True)
    seen: list[Path] = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen


def find_toolkit(env: dict[str, str] | None = None) -> Path | None:
    """The CUDA toolkit root (bin/nvcc and include/cuda.h), or None."""
    return next((p for p in candidates(env) if _is_toolkit(p)), None)


def driver_library(root: Path | None = None) -> str | None:
    """The CUDA driver library pycuda links against (libcuda.so: from the NVIDIA driver, or
    the toolkit's link stub), or None: then pycuda cannot be built here."""
    import ctypes.util
    found = ctypes.util.find_library("cuda")
    if found:
        return found
    if root is not None:
        for sub in ("lib64/stubs", "lib/stubs", "targets/x86_64-linux/lib/stubs"):
            stub = root / sub / "libcuda.so"
            if stub.is_file():
                return str(stub)
    return None


def pycuda_build_env(root: Path, home: Path) -> dict[str, str]:
    """The environment that builds pycuda against `root`: its nvcc first on PATH (pycuda's
    own guess), and an aksetup defaults file in `home` (pycuda reads ~/.aksetup-defaults.py)
    naming the toolkit and turning cuRAND off where the toolkit has no curand.h; pip's
    configuration and cache stay where they were."""
    real_home = Path.home()
    options = {"CUDA_ROOT": str(root),
               "CUDA_ENABLE_CURAND": (root / "include" / "curand.h").is_file()}
    stubs = [str(root / s) for s in ("lib64/stubs", "lib/stubs") if (root / s).is_dir()]
    if stubs:
        options["CUDADRV_LIB_DIR"] = [str(root / "lib64"), str(root / "lib"), *stubs]
    home.mkdir(parents=True, exist_ok=True)
    (home / ".aksetup-defaults.py").write_text(
        "".join(f"{k} = {v!r}\n" for k, v in options.items()), encoding="utf-8")
    env = dict(os.environ)
    env.update(HOME=str(home), CUDA_ROOT=str(root), CUDA_HOME=str(root),
               PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               XDG_CONFIG_HOME=env.get("XDG_CONFIG_HOME", str(real_home / ".config")),
               PIP_CACHE_DIR=env.get("PIP_CACHE_DIR", str(real_home / ".cache" / "pip")))
    return env


__all__ = ["find_toolkit", "candidates", "driver_library", "pycuda_build_env"]
