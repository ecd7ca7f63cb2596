"""The error hierarchy. Every error graphc raises on bad input is a GraphcError.

Errors carry the node, its op, the shapes involved and the user's source line, so that a
message points at the line of the model that caused it rather than at graphc's internals.
"""
from __future__ import annotations

from typing import Any


class GraphcError(Exception):
    """Base class of every error graphc raises on bad input or bad graphs."""

    def __init__(self, message: str, *, node: Any = None, loc: Any = None) -> None:
        self.node = node
        self.loc = loc if loc is not None else getattr(node, "loc", None)
        self.message = message
        super().__init__(self._render())

    def attach(self, node: Any = None, loc: Any = None) -> "GraphcError":
        """Add the node and source line that an error was raised for, if it lacks them."""
        if self.node is None and node is not None:
            self.node = node
        if self.loc is None:
            self.loc = loc if loc is not None else getattr(node, "loc", None)
        self.args = (self._render(),)
        return self

    def _render(self) -> str:
        parts = [self.message]
        if self.node is not None and hasattr(self.node, "describe"):
            parts.append(f"  in {self.node.describe()}")
        if self.loc is not None and str(self.loc):
            parts.append(f"  at {self.loc}")
        return "\n".join(parts)


class ShapeError(GraphcError):
    """Operand shapes do not fit the op (broadcasting, contraction, window sizes)."""


class DTypeError(GraphcError):
    """Operand dtypes do not fit the op, or two operands disagree."""


class AttrError(GraphcError):
    """An op attribute is missing, unknown, or of the wrong kind or value."""


class UnknownOpError(GraphcError):
    """An op name that the registry does not hold."""


class VerificationError(GraphcError):
    """A graph breaks an IR invariant (dangling value, cycle, type mismatch...)."""


class KernelVerificationError(VerificationError):
    """A kernel-IR program breaks an invariant (ir/kernel_verify.py): an undeclared buffer, an
    index out of bounds, a dtype mismatch, a GEMM operand that overruns its buffer, a bad
    arena placement. Names the kernel and the statement (`statement`: its text)."""

    def __init__(self, message: str, *, kernel: Any = None, statement: str = "") -> None:
        self.detail = message
        self.kernel = kernel
        self.statement = statement
        where = ""
        if kernel is not None:
            computes = f" (computes {kernel.source})" if getattr(kernel, "source", "") else ""
            where = f"kernel {kernel.name!r}{computes}: "
        super().__init__(where + message + (f"\n  in statement: {statement}" if statement else ""))


class ParseError(GraphcError):
    """Malformed text IR; carries the line and column."""

    def __init__(self, message: str, line: int, col: int, source_line: str = "") -> None:
        self.line = line
        self.col = col
        self.source_line = source_line
        text = f"{message} (line {line}, column {col})"
        if source_line:
            text += f"\n  {source_line}\n  {' ' * (col - 1)}^"
        super().__init__(text)


class InputError(GraphcError):
    """Arguments given to a compiled graph do not match its inputs."""


class DifferentiationError(GraphcError):
    """A gradient was asked through something that has none."""


class BuildError(GraphcError):
    """Misuse of the builder API (no active graph, mixing graphs...)."""


class ConcretizationError(BuildError):
    """Python needed a concrete value (`if t > 0:`, `float(t)`) of a symbolic tensor."""


class KernelRuntimeError(GraphcError):
    """A kernel flagged bad data at run time through Program.status (e.g. a gather index out
    of range), with the message the lowering registered; raised by the kernel-IR interpreter
    where the native runtimes raise their KernelError with the same text."""


class KernelInterpretError(GraphcError):
    """The interpreter cannot run a program: an unknown buffer, local, loop variable or
    scalar op, a malformed storage layout. Carries the kernel it happened in."""

    def __init__(self, message: str, *, kernel: Any = None) -> None:
        self.detail = message
        self.kernel = kernel
        where = ""
        if kernel is not None:
            computes = f" (computes {kernel.source})" if kernel.source else ""
            where = f"kernel {kernel.name!r}{computes}: "
        super().__init__(where + message)


class OutOfBoundsError(KernelInterpretError):
    """A load, store or GEMM operand index outside its buffer (memory corruption natively)."""



class NumericsError(GraphcError):
    """A program run with check_numerics produced NaN or infinity: names the first node that
    did (its op and source line), whether its inputs were already non-finite, and for
    compiled backends the kernel that flagged it (backends/numerics.py builds it).

    Attributes beyond GraphcError's: `op`, `inputs_finite` (False when some input already
    held NaN/inf, e.g. a graph input or parameter), `nonfinite_inputs` (descriptions of
    those inputs), `role` ('forward', 'backward' or 'update'), `kernel` (the compiled
    kernel's name, or None on the reference backend) and `backend`."""

    def __init__(self, message: str, *, node: Any = None, loc: Any = None, op: str = "",
                 inputs_finite: bool = True, nonfinite_inputs: tuple[str, ...] = (),
                 role: str = "forward", kernel: str | None = None, backend: str = "") -> None:
        self.op = op
        self.inputs_finite = inputs_finite
        self.nonfinite_inputs = tuple(nonfinite_inputs)
        self.role = role
        self.kernel = kernel
        self.backend = backend
        super().__init__(message, node=node, loc=loc)
