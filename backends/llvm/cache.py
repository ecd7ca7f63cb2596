"""Compile cache: object code keyed by what it depends on, in memory and on disk.

Key: sha256 over (the program's full text — `codegen.program_key`, which adds GEMM
leading dimensions/strides/offsets and the arena plan to `str(program)` —, the codegen
options, the target triple, CPU name and features and LLVM version, graphc's version, and a
hash of the code generator's own source files, so editing the generator invalidates
entries without a version bump).

Memory: a process-wide dict key -> object bytes (bounded, least recently used dropped).
Disk: `$GRAPHC_CACHE_DIR` or `~/.cache/graphc` (`$XDG_CACHE_HOME/graphc` when set), one
file `<key>.gco` per entry:

    b"GRAPHCO1" | sha256(payload) (32 bytes) | len(payload) (8 bytes, little endian) | payload

written to a temporary file and renamed into place (atomic on POSIX, so readers never see
half a file). On read the magic, length and checksum are verified; an entry that fails
(truncated, corrupted, foreign) is deleted and rebuilt, never loaded. Errors writing the
cache (read-only home, full disk) are ignored: the cache is an optimisation.

Off: `GRAPHC_CACHE=0` in the environment, or `enabled=False` / `cache=False` arguments.

Logging (`graphc.cache`, DEBUG; GRAPHC_LOG=cache): every lookup, as a hit (memory or disk)
or a miss with the build time, by the key's first 12 hex digits. Inside a compile that
dumps (gc.compile(dump_dir=...), ir/observe.py) lookups build again, so the LLVM stages run
and are written to the dump folder; the entry is refreshed.
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from ...ir import observe

log = logging.getLogger("graphc.cache")
MAGIC = b"GRAPHCO1"
_HEADER = len(MAGIC) + 32 + 8


def cache_enabled_by_env() -> bool:
    return os.environ.get("GRAPHC_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def default_cache_dir() -> Path:
    env = os.environ.get("GRAPHC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "graphc"


_source_hash: str | None = None


# The modules whose source decides the machine code (the code generator, split by idea,
# the GEMM and math libraries, the engine): a change to any of them invalidates the cache.
GENERATOR_SOURCES = ("codegen.py", "irtypes.py", "options.py", "module.py", "function.py",
                     "loops.py", "gemm_call.py", "scalar.py", "casts.py", "analysis.py",
                     "gemm_plan.py", "gemm_loops.py", "mathcall.py", "nodes.py", "omp.py",
                     "mathlib.py", "gemm.py", "gemm_target.py", "gemm_kernel.py", "gemm_pack.py",
                     "gemm_driver.py", "gemm_ir.py", "engine.py", "cache.py")


def generator_source_hash() -> str:
    """sha256 of the code generator's source files (GENERATOR_SOURCES)."""
    global _source_hash
    if _source_hash is None:
        h = hashlib.sha256()
        here = Path(__file__).resolve().parent
        for name in GENERATOR_SOURCES:
            p = here / name
            if p.is_file():
                h.update(name.encode())
                h.update(p.read_bytes())
        _source_hash = h.hexdigest()
    return _source_hash


def graphc_version() -> str:
    """The installed distribution's version (it is `graphc-compiler` on PyPI: the name
    `graphc` belongs to an unrelated package, whose version must not key our cache)."""
    try:
        from importlib.metadata import version
        return version("graphc-compiler")
    except Exception:
        return "unknown"


def make_key(program_text: str, target_key: str, options_key: str = "") -> str:
    h = hashlib.sha256()
    for part in (program_text, target_key, options_key, graphc_version(), generator_source_hash()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def pack(payload: bytes) -> bytes:
    return MAGIC + hashlib.sha256(payload).digest() + struct.pack("<Q", len(payload)) + payload


def unpack(blob: bytes) -> bytes | None:
    """The payload, or None when the blob is not a complete, intact entry."""
    if len(blob) < _HEADER or blob[:len(MAGIC)] != MAGIC:
        return None
    digest = blob[len(MAGIC):len(MAGIC) + 32]
    (n,) = struct.unpack("<Q", blob[len(MAGIC) + 32:_HEADER])
    payload = blob[_HEADER:]
    if len(payload) != n or hashlib.sha256(payload).digest() != digest:
        return None
    return payload


class CompileCache:
    """Object-code cache. `get_or_build(key, build)` returns (object bytes, where) with where
    in {'memory', 'disk', 'built'}."""

    def __init__(self, directory: str | os.PathLike | None = None, enabled: bool | None = None,
                 memory_entries: int = 256, max_disk_bytes: int | None = None) -> None:
        self.enabled = cache_enabled_by_env() if enabled is None else enabled
        # The disk cache is bounded: least recently used entries go first (GRAPHC_CACHE_MAX_MB).
        self.max_disk_bytes = max_disk_bytes if max_disk_bytes is not None else \
            int(float(os.environ.get("GRAPHC_CACHE_MAX_MB", "1024")) * 2**20)
        self._dir = Path(directory) if directory is not None else None
        self._mem: OrderedDict[str, bytes] = OrderedDict()
        self._max = memory_entries
        self._lock = threading.Lock()
        self.stats = {"memory": 0, "disk": 0, "built": 0, "corrupt": 0}

    @property
    def directory(self) -> Path:
        return self._dir if self._dir is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.gco"

    def clear_memory(self) -> None:
        with self._lock:
            self._mem.clear()

    def get_or_build(self, key: str, build: Callable[[], bytes]) -> tuple[bytes, str]:
        if not self.enabled:
            self.stats["built"] += 1
            return self._build(key, build, "cache off"), "built"
        dumping = observe.current().dumping
        with self._lock:
            obj = None if dumping else self._mem.get(key)
            if obj is not None:
                self._mem.move_to_end(key)
                self.stats["memory"] += 1
                log.debug("hit %s (memory, %d bytes)", key[:12], len(obj))
                return obj, "memory"
        obj = None if dumping else self._read(key)
        where = "disk"
        if obj is None:
            obj = self._build(key, build, "dumping" if dumping else "miss")
            self._write(key, obj)
            where = "built"
        else:
            log.debug("hit %s (disk, %d bytes)", key[:12], len(obj))
        with self._lock:
            self._mem[key] = obj
            while len(self._mem) > self._max:
                self._mem.popitem(last=False)
        self.stats[where] += 1
        return obj, where

    @staticmethod
    def _build(key: str, build: Callable[[], bytes], why: str) -> bytes:
        t0 = time.perf_counter()
        obj = build()
        log.debug("%s %s: built in %.3f s (%d bytes)", why, key[:12], time.perf_counter() - t0,
                  len(obj))
        return obj

    def _read(self, key: str) -> bytes | None:
        p = self.path(key)
        try:
            blob = p.read_bytes()
        except OSError:
            return None
        payload = unpack(blob)
        if payload is None:
            self.stats["corrupt"] += 1
            log.debug("corrupt entry %s (%d bytes) deleted", key[:12], len(blob))
            try:
                p.unlink()
            except OSError:
                pass
        else:
            try:
                os.utime(p)  # recency for eviction
            except OSError:
                pass
        return payload

    def _write(self, key: str, obj: bytes) -> None:
        d = self.directory
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".gco", dir=d)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(pack(obj))
                os.replace(tmp, self.path(key))
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            self._evict()
        except OSError:
            pass

    def _evict(self) -> None:
        """Delete the least recently used entries until the directory is under 90% of its
        budget."""
        entries = []
        for p in self.directory.glob("*.gco"):
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        if total <= self.max_disk_bytes:
            return
        for _, size, p in sorted(entries):
            if total <= 0.9 * self.max_disk_bytes:
                break
            try:
                p.unlink()
                total -= size
            except OSError:
                pass


_default: CompileCache | None = None
_default_lock = threading.Lock()


def default_cache() -> CompileCache:
    """The process-wide cache (directory and switch read from the environment per use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = CompileCache()
        _default.enabled = cache_enabled_by_env()
        return _default
