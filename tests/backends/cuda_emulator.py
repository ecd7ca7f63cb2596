"""The CUDA C emulator lives in the package (backends/cuda/emulator.py), where the
differential fuzzer runs it too; tests import it from here as before."""
from graphc.backends.cuda.emulator import *  # noqa: F401,F403
from graphc.backends.cuda.emulator import available, build, external_arrays, run  # noqa: F401
