"""What a compile reports while it runs: its stages (timed, logged as progress when the
compile is slow) and, with a dump directory, the IR after each stage in numbered files.

Every layer reaches the session of the compile in progress through `current()` (a context
variable: a compile in another thread has its own; with no compile in progress it is a
session that does nothing), so the pass manager, the lowering and the LLVM engine report
without a session being threaded through every backend signature. This module sits in
`ir/` because backends may import only `ir/`; it uses the standard `logging` loggers
(`graphc.compile` here) and no graphc configuration (graphc/logconfig.py owns GRAPHC_LOG).

A dump folder holds `NN-<stage>.<ext>` files in the order they were written and
`index.txt`, one tab-separated line per file (file, kind, description), appended as each
file is written, so a compile that fails part way still leaves a readable index.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import time
from typing import Any, Callable, Iterator

from .analysis import to_dot
from .jsonform import graph_to_json
from .summary import summarize
from .text import print_graph

log = logging.getLogger("graphc.compile")

PROGRESS_AFTER = 2.0  # seconds: a compile running longer reports each stage as it starts

GRAPH_FORMATS = {"text": "gcir", "dot": "dot", "json": "json", "summary": "txt"}


def render_graph(graph: Any, fmt: str = "text") -> str:
    """A graph as text IR, DOT, JSON or a summary (the CLI's --format choices)."""
    if fmt == "text":
        return print_graph(graph)
    if fmt == "dot":
        return to_dot(graph)
    if fmt == "json":
        return json.dumps(graph_to_json(graph), indent=1)
    if fmt == "summary":
        return summarize(graph)
    raise ValueError(f"unknown graph format {fmt!r}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._") or "stage"


class Dumper:
    """Numbered files in one folder, each listed in index.txt as it is written."""

    def __init__(self, directory: str | os.PathLike, graph_format: str = "text") -> None:
        if graph_format not in GRAPH_FORMATS:
            raise ValueError(f"unknown graph format {graph_format!r}")
        self.directory = os.fspath(directory)
        self.graph_format = graph_format
        self.count = 0
        self.files: list[str] = []
        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, "index.txt"), "w", encoding="utf-8"):
            pass  # a folder dumped into again lists only this run's files

    @classmethod
    def numbered(cls, root: str | os.PathLike, name: str) -> "Dumper":
        """A fresh `root/NNN-name/` folder (one per compile: several compiles, a jit
        function's retraces, may dump into the same root)."""
        root = os.fspath(root)
        os.makedirs(root, exist_ok=True)
        taken = [int(m.group(1)) for e in os.listdir(root) if (m := re.match(r"(\d+)-", e))]
        n = max(taken, default=0) + 1
        while True:
            path = os.path.join(root, f"{n:03d}-{_safe(name)}")
            try:
                os.mkdir(path)
                return cls(path)
            except FileExistsError:
                n += 1

    def write(self, stage: str, ext: str, text: str, kind: str, description: str = "",
              numbered: bool = True) -> str:
        """Write one stage's text; returns the file's path."""
        fname = f"{self.count:02d}-{_safe(stage)}.{ext}" if numbered else f"{_safe(stage)}.{ext}"
        if numbered:
            self.count += 1
        path = os.path.join(self.directory, fname)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        self.files.append(fname)
        with open(os.path.join(self.directory, "index.txt"), "a", encoding="utf-8") as f:
            f.write(f"{fname}\t{kind}\t{description}\n")
        return path

    def graph(self, stage: str, graph: Any, description: str = "") -> str:
        return self.write(stage, GRAPH_FORMATS[self.graph_format],
                          render_graph(graph, self.graph_format), "graph",
                          description or f"{len(graph.nodes)} nodes")


def read_index(directory: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(file, kind, description) rows of a dump folder's index.txt."""
    with open(os.path.join(os.fspath(directory), "index.txt"), encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t", 2)) for line in f if line.strip()]  # type: ignore[misc]


def _configured(logger: logging.Logger) -> bool:
    """Whether a handler that is not a NullHandler would see this logger's records."""
    lg: logging.Logger | None = logger
    while lg is not None:
        if any(not isinstance(h, logging.NullHandler) for h in lg.handlers):
            return True
        if not lg.propagate:
            return False
        lg = lg.parent  # type: ignore[assignment]
    return False


class Session:
    """One compile: its stages with their start times, and its dump folder (or None)."""

    def __init__(self, name: str, dumper: Dumper | None = None,
                 progress_after: float | None = None) -> None:
        self.name = name
        self.dumper = dumper
        self.progress_after = PROGRESS_AFTER if progress_after is None else progress_after
        self.t0 = time.perf_counter()
        self.stages: list[tuple[str, float]] = []
        self._progress_shown = False

    @property
    def dumping(self) -> bool:
        return self.dumper is not None

    @property
    def dump_dir(self) -> str | None:
        return self.dumper.directory if self.dumper else None

    def stage(self, name: str) -> None:
        """A stage starts. Past `progress_after` seconds it is reported at INFO on
        graphc.compile, and as a progress line on a terminal where logging is not set up."""
        now = time.perf_counter()
        self.stages.append((name, now))
        elapsed = now - self.t0
        if elapsed < self.progress_after:
            return
        log.info("compiling %s: %.1f s, %s", self.name, elapsed, name)
        if not _configured(log) and _isatty(sys.stderr):
            sys.stderr.write(f"\rgraphc: compiling {self.name}: {elapsed:.0f} s, {name}\x1b[K")
            sys.stderr.flush()
            self._progress_shown = True

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage name (a stage lasts until the next one starts)."""
        out: dict[str, float] = {}
        ends = [t for _, t in self.stages[1:]] + [time.perf_counter()]
        for (name, start), end in zip(self.stages, ends):
            out[name] = out.get(name, 0.0) + end - start
        return out

    def finish(self) -> None:
        if self._progress_shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._progress_shown = False

    # -- dumps (no-ops without a dump folder) --------------------------------------
    def dump_graph(self, stage: str, graph: Any, description: str = "") -> None:
        if self.dumper:
            self.dumper.graph(stage, graph, description)

    def dump_text(self, stage: str, ext: str, text: "str | Callable[[], str]", kind: str,
                  description: str = "", numbered: bool = True) -> None:
        """`text` may be a function, called only when dumping."""
        if self.dumper:
            self.dumper.write(stage, ext, text() if callable(text) else text, kind, description,
                              numbered)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


_NULL = Session("")
_NULL.stage = lambda name: None  # type: ignore[method-assign]  # no compile: nothing to time
_current: contextvars.ContextVar[Session] = contextvars.ContextVar("graphc_compile_session",
                                                                   default=_NULL)


def current() -> Session:
    """The session of the compile in progress in this context (a do-nothing one if none)."""
    return _current.get()


@contextlib.contextmanager
def session(name: str, dump_dir: str | os.PathLike | None = None) -> Iterator[Session]:
    """Run a compile as a session; `dump_dir` gets a fresh numbered folder for it."""
    s = Session(name, Dumper.numbered(dump_dir, name) if dump_dir else None)
    token = _current.set(s)
    try:
        yield s
    finally:
        _current.reset(token)
        s.finish()
