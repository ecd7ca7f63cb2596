"""Other libraries' arrays (PyTorch, JAX, CuPy, ...) as numpy arrays, without copying.

Executables and `@gc.jit` accept anything exposing the DLPack protocol (`__dlpack__`),
`__array__` or `__cuda_array_interface__`. A host array is viewed in place: DLPack first
(`np.from_dlpack` shares the producer's memory), else `np.asarray` (whose `__array__` may
or may not copy: that is the producer's choice). A device array cannot be read by host
code: the host backends refuse it with an InputError saying to move it, and the CUDA
backend takes it before this module is asked (backends/cuda/runtime.py:device_view).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.errors import InputError

# DLPack device types whose memory the host can read (kDLCPU, kDLCUDAHost, kDLROCMHost,
# kDLCUDAManaged): the ones np.from_dlpack accepts.
_HOST_DEVICES = {1, 3, 11, 13}
_DEVICE_NAMES = {2: "CUDA", 4: "OpenCL", 7: "Vulkan", 8: "Metal", 10: "ROCm", 14: "oneAPI"}


def is_array_like(value: Any) -> bool:
    """Whether value speaks one of the array protocols (and so is data, not a static value)."""
    return (isinstance(value, np.ndarray) or hasattr(value, "__dlpack__")
            or hasattr(value, "__array__") or device_of(value) is not None)


def device_of(value: Any) -> str | None:
    """The name of the device holding value's memory when the host cannot read it, else None."""
    if hasattr(value, "__cuda_array_interface__"):  # a CPU torch tensor raises here: hasattr is False
        return "CUDA"
    get = getattr(value, "__dlpack_device__", None)
    if get is None:
        return None
    try:
        kind = int(get()[0])
    except Exception:  # noqa: BLE001  (a producer's protocol error: let the conversion report it)
        return None
    return None if kind in _HOST_DEVICES else _DEVICE_NAMES.get(kind, f"DLPack device type {kind}")


def host_array(what: str, value: Any) -> np.ndarray:
    """value as a numpy array, sharing its memory where the producer allows.

    A device array is an InputError naming the device and how to bring it to the host."""
    if isinstance(value, np.ndarray):
        return value
    device = device_of(value)
    if device is not None:
        raise InputError(
            f"{what}: a {type(value).__module__}.{type(value).__name__} in {device} device memory; "
            f"this backend runs on the host: copy it there first (torch: t.cpu(), CuPy: "
            f"cupy.asnumpy(a), JAX: jax.device_get(a)), or compile with backend='cuda', which "
            f"takes device arrays as they are")
    problem = None
    if hasattr(value, "__dlpack__") and not isinstance(value, np.generic):
        try:
            return np.from_dlpack(value)
        except Exception as e:  # noqa: BLE001  (BufferError, RuntimeError, TypeError... by producer)
            problem = e  # e.g. a dtype DLPack cannot carry: try __array__, else report this
    try:
        return np.asarray(value)
    except Exception as e:  # noqa: BLE001
        cause = problem if problem is not None else e
        raise InputError(f"{what}: cannot be read as an array ({type(value).__name__}: "
                         f"{cause})") from None
