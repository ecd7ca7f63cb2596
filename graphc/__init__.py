"""graphc: a define-and-run deep-learning graph compiler.

    import graphc as gc
    g = gc.Graph("mlp")
    with g:
        x = gc.placeholder("x", (64, 784))
        ...
    exe = gc.compile(g, outputs=[loss], updates=gc.optim.SGD(0.1).updates(loss))
"""
from __future__ import annotations

import os as _os

# In a source checkout the folders ir/, passes/ and backends/ sit beside graphc/ (the design
# card fixes that layout) and the installed package maps them to graphc.ir and friends. When
# graphc is imported straight from the checkout (cwd on sys.path), let the package path see
# the sibling folders so the same names resolve.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "ir", "__init__.py")) and _root not in __path__:
    __path__.append(_root)

__version__ = "0.1.0"

from . import ir  # noqa: E402
from .ir import dtypes  # noqa: E402
from .ir.errors import (AttrError, BuildError, DifferentiationError, DTypeError,  # noqa: E402
                        GraphcError, InputError, ParseError, ShapeError, UnknownOpError,
                        VerificationError)
from .ir.errors import NumericsError  # noqa: E402
from .ir.dtypes import f16, f32, f64, i32, i64, bool_  # noqa: E402
from .builder import Graph, constant, current_graph, param, placeholder  # noqa: E402
from .tensor import Tensor  # noqa: E402
from .ops import *  # noqa: E402,F401,F403
from .ops import grad  # noqa: E402
from . import init, nn, optim, ops  # noqa: E402
from . import onnx  # noqa: E402  (the importer; the onnx package loads only when used)
from .compile import compile  # noqa: E402,A004
from .backends.executable import Executable  # noqa: E402
from .backends import available_backends, backend_status  # noqa: E402
from .jit import jit  # noqa: E402
from .aot import export, load  # noqa: E402


def parse(text: str) -> "ir.Graph":
    """Parse the text IR (as printed by `Graph.to_text()`) back into a graph."""
    from .ir.text import parse as _parse
    return _parse(text)


def load_digits():
    """The bundled 8x8 handwritten digits (1,797 images); see graphc/data/README.md."""
    from .data import load_digits as _load
    return _load()
