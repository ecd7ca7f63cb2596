"""Memory of the kernel-IR interpreter (ir/interpret.py) as native code sees it: root byte
arrays for the external buffers and the arena, every buffer a typed view at its place
(aliases and arena offsets resolved), and the conflict test that decides whether a
lane-parallel evaluation was exact.
"""
from __future__ import annotations

import numpy as np

from . import kernel as K
from .errors import KernelInterpretError
from .interpret_scalar import memory_dtype

ARENA = "<arena>"
POISON_BYTE = 0xFF


# -- memory ------------------------------------------------------------------------------------

class _Memory:
    """Root byte arrays (external buffers and the arena) and each buffer's element view."""

    def __init__(self, program: K.Program, poison: bool) -> None:
        self.program = program
        fill = POISON_BYTE if poison else 0
        self.roots: dict[str, np.ndarray] = {ARENA: np.full(program.arena_bytes, fill, np.uint8)}
        for b in program.buffers.values():
            if b.kind != "temp" and b.name not in program.aliases:
                self.roots[b.name] = np.full(b.size * b.dtype.itemsize, fill, np.uint8)
        self.place: dict[str, tuple[str, int]] = {n: self._storage(n, 0) for n in program.buffers}
        self.views: dict[str, np.ndarray] = {}
        for name, b in program.buffers.items():
            root, off = self.place[name]
            nbytes = b.size * b.dtype.itemsize
            data = self.roots[root]
            if off < 0 or off + nbytes > data.size:
                what = "the arena" if root == ARENA else f"buffer {root!r}"
                raise KernelInterpretError(f"buffer {name!r} at byte {off} (+{nbytes}) lies outside "
                                           f"{what} of {data.size} bytes")
            self.views[name] = data[off:off + nbytes].view(memory_dtype(b.dtype))

    def _storage(self, name: str, depth: int) -> tuple[str, int]:
        """(root, byte offset) of a buffer, through chains of aliases."""
        p = self.program
        if depth > 64:
            raise KernelInterpretError(f"alias cycle through buffer {name!r}")
        if name in p.aliases:
            base, off = p.aliases[name]
            if base not in p.buffers:
                raise KernelInterpretError(f"alias {name!r} of unknown buffer {base!r}")
            root, boff = self._storage(base, depth + 1)
            return root, boff + int(off) * p.buffers[base].dtype.itemsize
        b = p.buffers[name]
        if b.kind == "temp":
            if name not in p.arena:
                raise KernelInterpretError(f"temp buffer {name!r} has no arena offset")
            return ARENA, int(p.arena[name])
        return name, 0

    def fill(self, name: str, data: np.ndarray) -> None:
        b = self.program.buffers[name]
        flat = np.asarray(data).reshape(-1)
        if flat.size != b.size:
            raise KernelInterpretError(f"buffer {name!r} holds {b.size} elements, got an array of "
                                       f"{flat.size} ({list(np.shape(data))})")
        self.views[name][...] = flat.astype(memory_dtype(b.dtype))

    def read(self, name: str) -> np.ndarray:
        """A copy of a buffer's elements, flat, in its dtype."""
        b = self.program.buffers[name]
        v = self.views[name]
        return v != 0 if b.dtype.is_bool else v.copy()


def _accesses_conflict(records: list) -> bool:
    """Whether recorded lane accesses make lane-parallel evaluation differ from sequential:
    a byte written by one lane and read by another, or written by several lanes with
    different values. records: (root, element byte starts, itemsize, lanes, stored bytes or
    None for a read)."""
    roots: dict[str, tuple[list, list, list, list, list]] = {}
    for root, start, size, lanes, values in records:
        w_a, w_l, w_v, r_a, r_l = roots.setdefault(root, ([], [], [], [], []))
        addr = (start[:, None] + np.arange(size)).reshape(-1)
        ln = np.repeat(lanes, size)
        if values is None:
            r_a.append(addr)
            r_l.append(ln)
        else:
            w_a.append(addr)
            w_l.append(ln)
            w_v.append(values.reshape(-1))
    for w_a, w_l, w_v, r_a, r_l in roots.values():
        if not w_a:
            continue
        wa, wl, wv = np.concatenate(w_a), np.concatenate(w_l), np.concatenate(w_v)
        ra = np.concatenate(r_a) if r_a else np.zeros(0, np.int64)
        rl = np.concatenate(r_l) if r_l else np.zeros(0, np.int64)
        touched = np.isin(ra, wa)
        ra, rl = ra[touched], rl[touched]
        addrs, inv = np.unique(np.concatenate([wa, ra]), return_inverse=True)
        lanes = np.concatenate([wl, rl])
        lo = np.full(addrs.size, np.iinfo(np.int64).max)
        hi = np.full(addrs.size, np.iinfo(np.int64).min)
        np.minimum.at(lo, inv, lanes)
        np.maximum.at(hi, inv, lanes)
        shared = lo != hi
        if not shared.any():
            continue
        w_inv, r_inv = inv[:wa.size], inv[wa.size:]
        if shared[r_inv].any():
            return True
        vlo = np.full(addrs.size, 255, np.uint8)
        vhi = np.zeros(addrs.size, np.uint8)
        np.minimum.at(vlo, w_inv, wv)
        np.maximum.at(vhi, w_inv, wv)
        if (vlo[shared] != vhi[shared]).any():
            return True
    return False
