"""The errors graphc raises; all are GraphcError subclasses (defined in graphc.ir)."""
from .ir.errors import (AttrError, BuildError, DifferentiationError, DTypeError, GraphcError,
                        InputError, NumericsError, ParseError, ShapeError, UnknownOpError,
                        VerificationError)

__all__ = ["GraphcError", "ShapeError", "DTypeError", "AttrError", "UnknownOpError",
           "VerificationError", "ParseError", "InputError", "DifferentiationError", "BuildError",
           "NumericsError"]
