"""Peak memory of the MLP and CNN train steps: graphc's arena with memory planning off, on,
and on with in-place kernels, against PyTorch eager on the same step.

    python benchmarks/memory.py [--plan]      (--plan also prints each memory plan)

graphc (LLVM backend). The arena holds every intermediate of one call (the plan of
passes/memory.py); the output arrays (loss, logits, and the *new* value of every parameter
and optimizer state, which the runtime installs in place of the old) are allocated per
call as well. So the memory one graphc step needs beyond the persistent parameter and
optimizer state is arena + outputs. The GEMM packing workspace the LLVM runtime appends
to the arena is listed apart (PyTorch's BLAS allocates its packing buffers outside the
allocator measured below, so they are not in its figure either).

PyTorch eager (CPU). Every CPU tensor's storage comes from c10's CPU allocator, and
`torch.profiler.profile(profile_memory=True)` records each allocation and free made
through it with its size and time. After two warm-up steps (so the momentum buffers exist)
and `optimizer.zero_grad(set_to_none=True)` (so no gradient is held), one step — forward,
loss, backward, optimizer step — runs under the profiler; the largest running sum of the
recorded sizes, in time order, is the peak of the memory the step itself allocated:
activations saved for backward, temporaries, the gradients (parameters' `.grad`
included) and the loss/logits. (Frees of blocks allocated before the profiled region are
not reported, so they never lower the sum: the figure can only overstate.) PyTorch
updates parameters and momentum in place, so its step needs no second copy of them; its
parameter gradients are the analogue of graphc's new-parameter outputs, and both are
counted: PyTorch's activations + gradients peak is compared with graphc's arena + outputs.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np

import graphc as gc
from graphc.passes.lower import lower
from graphc.passes.memory import plan_memory
from graphc.passes.schedule import live_peak
from harness import optional, table

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))

import digits_cnn  # noqa: E402
import mlp_step  # noqa: E402


def graphc_figures(g: gc.Graph, feeds: dict) -> dict:
    exe = gc.compile(g, backend="llvm")  # -O2: planning, in-place, donation, scheduling
    exe(**feeds)  # it runs
    work, prog = exe.graph, exe.program
    naive = lower(work, fuse_ops=None, plan=False)
    plan_reuse = plan_memory(lower(work, fuse_ops=None, plan=False), inplace=False)
    plan_inplace = plan_memory(lower(work, fuse_ops=None, plan=False))  # no donation, no schedule
    nbytes = {n: b.size * b.dtype.itemsize for n, b in prog.buffers.items()}
    return {
        "plan": plan_inplace,
        "off": naive.arena_bytes,
        "on": plan_reuse.peak_bytes,
        "inplace": plan_inplace.peak_bytes,
        "final": prog.arena_bytes,
        "bound": live_peak(prog),
        "n_inplace": len(plan_inplace.inplace),
        "n_donated": sum(prog.updates[k] == prog.params[k] for k in prog.updates),
        "state": sum(nbytes[b] for b in prog.params.values()),
        "outputs": sum(n for name, n in nbytes.items() if prog.buffers[name].kind == "output"),
        "workspace": exe.compiled.arena_bytes - prog.arena_bytes,
    }


def torch_peak(torch, model, opt, x, t) -> tuple[int, int]:
    """(peak bytes allocated during one step, bytes of the parameters' gradients)."""
    from torch.profiler import ProfilerActivity, profile

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        return loss

    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        step()
    opt.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    grads = sum(p.numel() * p.element_size() for p in model.parameters())
    return peak, grads


def torch_mlp(torch):
    B, D, H, C = mlp_step.B, mlp_step.D, mlp_step.H, mlp_step.C
    model = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, H),
                                torch.nn.ReLU(), torch.nn.Linear(H, C))
    opt = torch.optim.SGD(model.parameters(), lr=mlp_step.LR)
    x = torch.randn(B, D)
    t = torch.randint(0, C, (B,))
    return torch_peak(torch, model, opt, x, t)


def torch_cnn(torch, images, labels):
    F = torch.nn.functional

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
            self.fc = torch.nn.Linear(32, 10)

        def forward(self, x):
            h = F.max_pool2d(torch.relu(self.conv1(x)), 2)
            h = torch.relu(self.conv2(h))
            return self.fc(h.mean((2, 3)))

    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=digits_cnn.LR, momentum=0.9)
    return torch_peak(torch, model, opt, torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", action="store_true", help="print each memory plan")
    args = ap.parse_args()
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)

    rng = np.random.default_rng(0)
    images, labels = gc.load_digits()
    cases = {
        "MLP 784-1024-1024-10, batch 256": (
            mlp_step.build(),
            {"x": rng.standard_normal((mlp_step.B, mlp_step.D)).astype(np.float32),
             "t": rng.integers(0, mlp_step.C, mlp_step.B).astype(np.int32)},
            lambda: torch_mlp(torch)),
        "CNN digits, batch 50": (
            digits_cnn.build_train_step(),
            {"x": images[:digits_cnn.BATCH, None], "t": labels[:digits_cnn.BATCH]},
            lambda: torch_cnn(torch, images[:digits_cnn.BATCH, None], labels[:digits_cnn.BATCH])),
    }
    arena_rows, step_rows, verdict = [], [], []
    for name, (g, feeds, run_torch) in cases.items():
        f = graphc_figures(g, feeds)
        if args.plan:
            print(f["plan"], "\n")
        arena_rows.append([name, f"{f['off']:,}", f"{f['on']:,}", f"{f['inplace']:,}", f"{f['final']:,}",
                           f"{f['bound']:,}", f"{f['final'] / f['off']:.2f}x", f['n_inplace'],
                           f['n_donated']])
        mine = f["final"] + f["outputs"]
        row = [name, f"{f['state']:,}", f"{f['outputs']:,}", f"{mine:,}", f"{f['workspace']:,}"]
        if torch is not None:
            peak, grads = run_torch()
            row += [f"{peak:,}", f"{grads:,}", f"{peak - grads:,}", f"{mine / peak:.2f}"]
            verdict.append(f"{name.split(',')[0]} {'met' if mine < peak else 'not met'} ({mine / peak:.2f}x)")
        step_rows.append(row)
    print("graphc arena (bytes), LLVM backend, -O2 lowering:\n")
    print(table(arena_rows, ["train step", "planning off", "planning on", "+ in-place",
                             "+ donation, schedule", "its lower bound", "final vs off",
                             "kernels in place", "params updated in place"]))
    print("\nMemory one step needs beyond the persistent state (bytes):\n")
    head = ["train step", "params + optimizer state", "graphc outputs/step", "graphc arena+outputs",
            "(+ GEMM workspace)"]
    if torch is not None:
        head += ["torch eager peak", "of it: param grads", "torch peak - grads", "graphc / torch"]
    print(table(step_rows, head))
    print("\ngraphc arena+outputs: the planned, in-place arena plus the output arrays of one call "
          "(loss, logits,\nnew parameters and optimizer state); torch eager peak: activations, "
          "temporaries, gradients and\noutputs allocated during one step (see the docstring).")
    if verdict:
        print(f"\ntarget (issue 4), graphc planned + in-place below PyTorch eager: {'; '.join(verdict)}")


if __name__ == "__main__":
    main()
