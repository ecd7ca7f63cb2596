"""The code generator's options (they all enter the compile cache key) and the thread count
programs are generated for."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CodegenOptions:
    """Knobs that change the generated code (all enter the compile cache key)."""
    parallel: bool = True               # emit GOMP_parallel regions for parallel loops
    parallel_min_work: int = 1 << 22    # estimated scalar ops below which parallel loops run serially
    py_data_offset: int = 16            # offset of PyArrayObject.data; 0: no Python entry
    max_threads: int = 0                # for GEMM workspace sizing; 0: os.cpu_count()
    gemm_in_module: bool = False        # define graphc_gemm_* in the module (AOT) instead of
                                        # calling the shared, separately compiled library
    profile: bool = False               # count cycles per kernel into <program>_kernel_cycles
    check_numerics: bool = False        # stop with a status code at the first non-finite kernel

    def key(self) -> str:
        return repr(self)

    @property
    def threads(self) -> int:
        """max_threads resolved (0 = GRAPHC_NUM_THREADS or os.cpu_count())."""
        return self.max_threads if self.max_threads > 0 else default_num_threads()

    @staticmethod
    def from_env(**overrides) -> "CodegenOptions":
        kw = {}
        if os.environ.get("GRAPHC_PARALLEL_MIN_WORK"):
            kw["parallel_min_work"] = int(os.environ["GRAPHC_PARALLEL_MIN_WORK"])
        kw["max_threads"] = default_num_threads()
        kw.update(overrides)
        return CodegenOptions(**kw)


def default_num_threads() -> int:
    env = os.environ.get("GRAPHC_NUM_THREADS") or ""
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1
