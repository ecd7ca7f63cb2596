"""Source locations: the user's file:line where a node was built."""
from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


UNKNOWN = None


def _is_internal(module_name: str) -> bool:
    return module_name == "graphc" or module_name.startswith("graphc.")


def capture_loc(skip_modules: tuple[str, ...] = ()) -> Loc | None:
    """The first stack frame outside graphc itself: the line of user code that built a node."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not _is_internal(name) and not name.startswith(skip_modules or ("\0",)):
            return Loc(frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return None
