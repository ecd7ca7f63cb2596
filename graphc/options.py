"""One compile's settings, resolved once: the caller's arguments first, then GRAPHC_*
variables, then defaults (README: Environment variables). gc.compile builds one, every
stage reads it, and `exe.options` shows what a compile ran with."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .args import is_int
from .ir.errors import BuildError, InputError

OPT_LEVELS = {
    0: "only what running needs: DCE, legalisation; no fusion, no memory plan",
    1: "+ simplification (folding, CSE) and the kernel-IR memory plan (schedule, donation, "
       "in-place, arena reuse)",
    2: "+ the backend's optimisations: Winograd convolutions, fusion (the default)",
    3: "+ a second simplification after legalisation",
}
WINOGRAD = ("auto", "off", "F2", "F4")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    return raw not in ("0", "false", "no", "off")


def _level(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "").strip()
    try:
        return int(raw) if raw else 0
    except ValueError:
        return 1  # any other value turns the verifier on


@dataclass(frozen=True)
class CompileOptions:
    """What one gc.compile does. `verify`: 0 off, 1 the verifier after every pass, 2 also
    translation validation of every pass and of the lowering (GRAPHC_VERIFY)."""
    backend: str = "llvm"
    opt_level: int = 2
    winograd: str = "auto"
    passes: tuple[Any, ...] | None = None
    donate: tuple[str, ...] = ()
    check_numerics: bool = False
    dump_dir: str | None = None
    verify: int = 0
    num_threads: int | None = None
    state_updates: bool | None = None

    @classmethod
    def resolve(cls, *, backend: Any = "llvm", opt_level: Any = 2, winograd: Any = "auto",
                passes: Any = None, donate: Any = (), check_numerics: Any = None,
                dump_dir: Any = None, state_updates: Any = None,
                env: Mapping[str, str] | None = None) -> "CompileOptions":
        """Check the arguments' kinds and fill what they leave open from `env`
        (os.environ by default); values are checked where they are used (the backend
        registry, the pass manager)."""
        env = os.environ if env is None else env
        if not isinstance(backend, str):
            raise BuildError(f"backend must be a backend name (a string), got {backend!r}")
        if not (is_int(opt_level) and int(opt_level) in OPT_LEVELS):
            raise BuildError(f"opt_level must be 0, 1, 2 or 3, got {opt_level!r}")
        if not isinstance(winograd, str):
            raise BuildError(f"winograd must be 'auto', 'off', 'F2' or 'F4', got {winograd!r}")
        from .passes.manager import Pass
        if passes is not None and (isinstance(passes, str) or not isinstance(passes, (list, tuple))
                                   or not all(isinstance(p, (str, Pass)) for p in passes)):
            raise BuildError(f"passes must be a list of pass names, got {passes!r:.80}")
        if isinstance(donate, str) or not isinstance(donate, (list, tuple, set, frozenset)) \
                or not all(isinstance(d, str) for d in donate):
            raise BuildError(f"donate must be a list of input names, got {donate!r:.80}")
        if state_updates is not None and not isinstance(state_updates, bool):
            raise BuildError(f"state_updates must be True, False or None, got {state_updates!r}")
        from .backends.numerics import enabled
        numerics = _flag(env, "GRAPHC_CHECK_NUMERICS", False) if check_numerics is None \
            else enabled(check_numerics)
        if dump_dir is None:
            dump_dir = env.get("GRAPHC_DUMP_DIR") or None
        elif not isinstance(dump_dir, (str, os.PathLike)):
            raise BuildError(f"dump_dir must be a directory path, got {type(dump_dir).__name__}")
        threads = env.get("GRAPHC_NUM_THREADS", "").strip()
        return cls(backend=backend, opt_level=int(opt_level), winograd=winograd,
                   passes=None if passes is None else tuple(passes), donate=tuple(donate),
                   check_numerics=numerics, dump_dir=None if dump_dir is None else os.fspath(dump_dir),
                   verify=_level(env, "GRAPHC_VERIFY"),
                   num_threads=int(threads) if threads.isdigit() and int(threads) > 0 else None,
                   state_updates=state_updates)

    def check_donate(self, input_names: Sequence[str], graph_name: str) -> None:
        names = set(input_names)
        unknown = [d for d in self.donate if d not in names]
        if unknown:
            raise InputError(f"donate: {', '.join(map(repr, unknown))} is not an input of graph "
                             f"{graph_name!r}; its inputs are {', '.join(sorted(names)) or 'none'}")

    def __str__(self) -> str:
        return (f"-O{self.opt_level} on {self.backend} ({OPT_LEVELS[self.opt_level]}); winograd "
                f"{self.winograd}; verify {self.verify}; check_numerics {self.check_numerics}; "
                f"threads {self.num_threads or 'all cores'}"
                + (f"; donate {', '.join(self.donate)}" if self.donate else "")
                + (f"; dumping to {self.dump_dir}" if self.dump_dir else ""))


__all__ = ["CompileOptions", "OPT_LEVELS"]
