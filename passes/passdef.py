"""What a pass is (its own module, so passes that build Pass objects, such as winograd's
configured pass, need not import the pass manager that runs them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..ir.graph import Graph


@dataclass(frozen=True)
class Pass:
    """A name, a one-line description, and a function that changes a graph in place and may
    return counts of what it did (and, under "notes", lines explaining its decisions)."""
    name: str
    description: str
    run: Callable[[Graph], "dict[str, int] | None"]


__all__ = ["Pass"]
