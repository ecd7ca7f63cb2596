"""graphc's loggers and the GRAPHC_LOG switch (the one place that maps topics to loggers).

graphc logs on the standard `logging` module, one logger per area:

    topic       logger           what
    compile     graphc.compile   gc.compile start/end (graph, nodes, backend, -O, seconds),
                                 stage times, progress of compiles over ~2 s (INFO)
    passes      graphc.passes    each graph pass and kernel-IR step: time and effect
    cache       graphc.cache     compile-cache hits and misses (key prefix, bytes, seconds)
    recompile   graphc.jit       why @gc.jit retraced (INFO)
    onnx        graphc.onnx      ONNX imports: opset, op counts
    llvm        graphc.llvm      LLVM optimise/emit times; LLVM's remarks and warnings,
                                 captured from stderr (DEBUG)

`GRAPHC_LOG=compile,cache` (a comma list; `all` for every topic) attaches a stderr
handler to those loggers and lowers their level (DEBUG; INFO for recompile). Without it
nothing is printed: the `graphc` logger has a NullHandler, so not even warnings reach
Python's last-resort handler; applications configure logging as usual to see records.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections import Counter
from typing import Any

TOPICS: dict[str, tuple[str, int]] = {
    "compile": ("graphc.compile", logging.DEBUG),
    "passes": ("graphc.passes", logging.DEBUG),
    "cache": ("graphc.cache", logging.DEBUG),
    "recompile": ("graphc.jit", logging.INFO),
    "onnx": ("graphc.onnx", logging.DEBUG),
    "llvm": ("graphc.llvm", logging.DEBUG),
}

logging.getLogger("graphc").addHandler(logging.NullHandler())

_warned: set[str] = set()  # unknown topics already reported (once per process each)


def topics(spec: str) -> list[str]:
    """The topics a GRAPHC_LOG value names, in TOPICS order; unknown names are reported
    once on stderr (the user asked for output, so a typo should not pass silently)."""
    names = {t.strip().lower() for t in spec.split(",") if t.strip()}
    unknown = sorted(names - set(TOPICS) - {"all"})
    for name in unknown:
        if name not in _warned:
            _warned.add(name)
            sys.stderr.write(f"graphc: GRAPHC_LOG: unknown topic {name!r}; topics are "
                             f"{', '.join(TOPICS)}, all\n")
    return [t for t in TOPICS if t in names or "all" in names]


def configure(spec: str | None = None) -> list[str]:
    """Attach a stderr handler to each logger GRAPHC_LOG (or `spec`) names, once per
    logger; returns the topics. Cheap enough to call at every compile."""
    spec = os.environ.get("GRAPHC_LOG", "") if spec is None else spec
    if not spec:
        return []
    chosen = topics(spec)
    for topic in chosen:
        name, level = TOPICS[topic]
        logger = logging.getLogger(name)
        if not any(getattr(h, "_graphc", False) for h in logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            handler._graphc = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > level:
            logger.setLevel(level)
    return chosen


def log_onnx_import(proto: Any, source: str, opset: int, graph: Any) -> None:
    """One INFO line per imported ONNX model: opset, op counts, graph size."""
    configure()  # an import comes before any compile: GRAPHC_LOG=onnx must already apply
    logger = logging.getLogger("graphc.onnx")
    if not logger.isEnabledFor(logging.INFO):
        return
    ops = Counter(n.op_type for n in proto.graph.node)
    logger.info("imported %s: opset %d, %d ONNX nodes (%s) -> graph %s: %d nodes, %d constants",
                source, opset, sum(ops.values()),
                ", ".join(f"{op} {n}" for op, n in ops.most_common()), graph.name,
                len(graph.nodes), len(graph.constants))


class CompileLog:
    """gc.compile's logging and dump session: `begin` once the arguments are checked,
    `done` with the executable, `close` always (a `finally`)."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.session: Any = None
        self.name = ""

    def begin(self, graph: Any, backend: str, opt_level: int, dump_dir: Any = None) -> None:
        from .ir import observe
        from .ir.errors import BuildError
        configure()
        if dump_dir is None:
            dump_dir = os.environ.get("GRAPHC_DUMP_DIR") or None
        elif not isinstance(dump_dir, (str, os.PathLike)):
            raise BuildError(f"dump_dir must be a directory path, got {type(dump_dir).__name__}")
        self.name = str(graph.name)
        try:
            self.session = self._stack.enter_context(observe.session(self.name, dump_dir))
        except OSError as e:
            raise BuildError(f"dump_dir: cannot create a dump folder in {os.fspath(dump_dir)!r}: "
                             f"{e}") from None
        self.t0 = time.perf_counter()
        _compile_log.debug("compile %s: %d nodes, backend %s, -O%d%s", self.name,
                           len(graph.nodes), backend, opt_level,
                           f", dumping to {self.session.dump_dir}" if self.session.dumping else "")

    def done(self, exe: Any, backend: str, opt_level: int) -> None:
        s = self.session
        ledger = getattr(exe, "ledger", None)
        if ledger is not None:
            s.dump_text("ledger", "txt", lambda: str(ledger), "ledger",
                        f"the pass ledger: {len(ledger)} passes", numbered=False)
        exe.dump_dir = s.dump_dir
        seconds = time.perf_counter() - self.t0
        _compile_log.info("compiled %s: %d nodes, backend %s, -O%d in %.3f s", self.name,
                          len(exe.graph.nodes), backend, opt_level, seconds)
        if _compile_log.isEnabledFor(logging.DEBUG):
            stages = s.stage_seconds()
            _compile_log.debug("compile %s stages: %s", self.name, ", ".join(
                f"{k} {v * 1e3:.1f} ms" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])[:12]))

    def close(self) -> None:
        self._stack.close()


_compile_log = logging.getLogger("graphc.compile")
