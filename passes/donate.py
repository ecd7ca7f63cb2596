"""State donation: a parameter update is written into the parameter's own storage.

A train step's updates (new weights, new optimizer moments) would otherwise be output
arrays as large as the model, allocated on every call and installed in place of the old
state afterwards: the second copy of the model that PyTorch's in-place `optimizer.step()`
never makes. The executable owns its parameter state (`exe.params` hands out read-only
views), so nothing outside the call can observe the overwrite.

For an update `upd` of parameter buffer `P`, written by kernel K (index k), the kernel
stores into P instead when all of these hold:

  (a) upd is an output buffer of its own (not a view, not also a graph output) and K is
      the only kernel writing it;
  (b) no kernel after K touches P's storage under any name but upd (the old value is dead
      once K has run; later readers of the new value read upd, renamed to P);
  (c) if K reads P, it reads P only under that name and `inplace_safe(K, P, upd)` holds:
      each element is read before, and only by the iteration that, overwrites it;
  (d) no kernel after K can report an error through the status buffer: a failing call
      stops at the kernel that reported the error (see `Program.status`), so state is
      either fully updated or not at all.

`Program.updates[name]` then names P itself, which the runtimes read as "updated in
place, nothing to install".
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.kernel import Program, rename_buffers
from .inplace import inplace_safe, kernel_access, storage_root


@dataclass(frozen=True)
class Donation:
    kernel_name: str
    param: str
    nbytes: int

    def __str__(self) -> str:
        return f"{self.kernel_name}: {self.param} updated in place ({self.nbytes:,} bytes)"


def donate_state(p: Program) -> list[Donation]:
    """Rewrite every update that (a)-(d) allow to write its parameter in place."""
    accesses = [kernel_access(k) for k in p.kernels]
    status_writers = [i for i, (_, w) in enumerate(accesses) if p.status in w]
    last_status = max(status_writers, default=-1)
    root_of = {n: storage_root(p, n)[0] for n in p.buffers}
    done: list[Donation] = []
    for pname, upd in list(p.updates.items()):
        pbuf = p.params.get(pname)
        ub = p.buffers.get(upd)
        if pbuf is None or ub is None or ub.kind != "output" or upd in p.aliases or upd in p.outputs:
            continue
        writers = [i for i, (_, w) in enumerate(accesses) if upd in w]
        if len(writers) != 1 or writers[0] <= last_status:
            continue
        k = writers[0]
        if any(root_of.get(b) == pbuf for r, w in accesses[k + 1:] for b in r | w):
            continue
        reads, writes = accesses[k]
        touching = [b for b in reads | writes if root_of.get(b) == pbuf]
        if touching and (touching != [pbuf] or not inplace_safe(p.kernels[k], pbuf, upd)):
            continue
        for i in range(k, len(p.kernels)):
            if upd in accesses[i][0] | accesses[i][1]:
                p.kernels[i] = rename_buffers(p.kernels[i], {upd: pbuf})
                accesses[i] = kernel_access(p.kernels[i])
        for view, (base, off) in list(p.aliases.items()):
            if base == upd:
                p.aliases[view] = (pbuf, off)
        del p.buffers[upd]
        p.updates[pname] = pbuf
        done.append(Donation(p.kernels[k].name, pname, ub.size * ub.dtype.itemsize))
    return done
