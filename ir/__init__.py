"""graphc.ir: types, the SSA tensor graph, the op registry, the verifier and the text form."""
from . import dtypes
from .dtypes import DType, f16, f32, f64, i32, i64, bool_
from .errors import (AttrError, BuildError, DifferentiationError, DTypeError, GraphcError,
                     InputError, ParseError, ShapeError, UnknownOpError, VerificationError)
from .graph import Graph, Node, Value
from .loc import Loc, capture_loc
from .registry import Attr, Cost, Fusion, OpDef, all_ops, get_op, register
from .types import TensorType
from .emitter import Emitter
from . import ops  # noqa: F401  (registers the ops)

__all__ = [
    "dtypes", "DType", "f16", "f32", "f64", "i32", "i64", "bool_", "GraphcError", "ShapeError",
    "DTypeError", "AttrError", "UnknownOpError", "VerificationError", "ParseError",
    "InputError", "DifferentiationError", "BuildError", "Graph", "Node", "Value", "Loc",
    "capture_loc", "Attr", "Cost", "Fusion", "OpDef", "all_ops", "get_op", "register",
    "TensorType", "Emitter",
]

# text form, verifier, comparison and analyses
from .text import print_graph, parse  # noqa: E402
from .verify import verify  # noqa: E402
from .compare import same_graph, assert_same_graph  # noqa: E402
from .analysis import to_networkx, to_dot, topological_order  # noqa: E402

print = print_graph  # noqa: A001  (DESIGN.md spells it ir.print(g); not in __all__)
__all__ += ["print_graph", "parse", "verify", "same_graph", "assert_same_graph", "to_networkx",
            "to_dot", "topological_order"]
