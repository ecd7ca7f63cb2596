"""graphc's CUDA backend on the GPU: elementwise bandwidth, GEMM, an MLP train step and
ResNet-18-style inference, against the device's copy bandwidth and PyTorch (cuBLAS,
eager mode).

    python benchmarks/cuda.py [--runs 20]      # needs pycuda, a GPU, nvcc; torch for baselines
    python benchmarks/cuda.py --check          # CPU only: the PyTorch baselines compute what
                                               # the graphc graphs do (reference backend)

Targets (issue 7): fused elementwise >= 80% of copy bandwidth; f32 GEMM >= 50% of cuBLAS;
end-to-end faster than PyTorch eager.

Kernel-only times come from CUDA events around repeated kernel sequences
(`CudaExecutable.gpu_seconds`, torch: `torch.cuda.Event`) with inputs already on the
device; end-to-end times are wall-clock medians of whole calls (Python, launches,
synchronisation) with device-resident inputs, graphc and PyTorch in interleaved rounds.
PyTorch runs f32 matrix products in true f32 (TF32 off), as graphc does.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import graphc as gc
from harness import median_times, optional, table

MLP_B, MLP_D, MLP_H, MLP_C, MLP_LR = 256, 784, 1024, 10, 0.01


# -- the models, as graphc graphs and as PyTorch functions of the same parameters ---------------

def arith(x):
    return ((x * 1.5 + 0.5) * x - 2.0) * 0.25 + x * x - 1.0


def mlp_graph(b=MLP_B, d=MLP_D, h=MLP_H, c=MLP_C) -> gc.Graph:
    g = gc.Graph("mlp_step")
    with g:
        x = gc.placeholder("x", (b, d), "f32")
        t = gc.placeholder("t", (b,), "i32")
        hid = gc.relu(gc.nn.Linear(d, h, name="l1")(x))
        hid = gc.relu(gc.nn.Linear(h, h, name="l2")(hid))
        loss = gc.softmax_cross_entropy(gc.nn.Linear(h, c, name="l3")(hid), t)
        g.set_outputs([loss], updates=gc.optim.SGD(MLP_LR).updates(loss))
    return g


def torch_mlp_step(torch, P):
    """One eager SGD step on the parameter dict P (graphc names), in place."""
    F = torch.nn.functional

    def step(x, t):
        h = F.relu(x @ P["l1.w"] + P["l1.b"])
        h = F.relu(h @ P["l2.w"] + P["l2.b"])
        loss = F.cross_entropy(h @ P["l3.w"] + P["l3.b"], t.long())
        grads = torch.autograd.grad(loss, list(P.values()))
        with torch.no_grad():
            for p, gr in zip(P.values(), grads):
                p.sub_(MLP_LR * gr)
        return loss
    return step


RESNET_STAGES = [(64, 1), (128, 2), (256, 2), (512, 2)]


def resnet_graph(batch: int, image: int = 32, classes: int = 10) -> gc.Graph:
    """ResNet-18 for 32x32 images (CIFAR layout: 3x3 stem, four stages of two basic
    blocks), batch norm in inference mode, as graphc builds it."""
    g = gc.Graph("resnet18")
    with g:
        x = gc.placeholder("x", (batch, 3, image, image), "f32")

        def conv_bn(h, cin, cout, k, stride, name, relu=True):
            conv = gc.nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, name=name)
            y = gc.nn.BatchNorm(cout, name=name + ".bn")(conv(h), training=False)
            return gc.relu(y) if relu else y

        h, cin = conv_bn(x, 3, 64, 3, 1, "stem"), 64
        for s, (cout, stride) in enumerate(RESNET_STAGES):
            for blk in range(2):
                st = stride if blk == 0 else 1
                y = conv_bn(h, cin, cout, 3, st, f"s{s}b{blk}c1")
                y = conv_bn(y, cout, cout, 3, 1, f"s{s}b{blk}c2", relu=False)
                sc = conv_bn(h, cin, cout, 1, st, f"s{s}b{blk}down", relu=False) \
                    if st != 1 or cin != cout else h
                h, cin = gc.relu(y + sc), cout
        g.set_outputs([gc.nn.Linear(512, classes, name="fc")(gc.global_avg_pool2d(h))])
    return g


def randomise_batch_norms(exe, seed: int = 0) -> None:
    """Give the running statistics and affine parameters values that matter."""
    rng = np.random.default_rng(seed)
    for name in exe.params:
        shape = exe.params[name].shape
        if name.endswith("running_var"):
            exe.params[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif name.endswith(("running_mean", "beta")):
            exe.params[name] = rng.normal(0, 0.1, shape).astype(np.float32)
        elif name.endswith("gamma"):
            exe.params[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)


def torch_resnet(torch, P):
    F = torch.nn.functional

    def conv_bn(h, name, stride, k, relu=True):
        y = F.conv2d(h, P[f"{name}.w"], stride=stride, padding=k // 2)
        y = F.batch_norm(y, P[f"{name}.bn.running_mean"], P[f"{name}.bn.running_var"],
                         P[f"{name}.bn.gamma"], P[f"{name}.bn.beta"], training=False, eps=1e-5)
        return F.relu(y) if relu else y

    def forward(x):
        with torch.no_grad():
            h, cin = conv_bn(x, "stem", 1, 3), 64
            for s, (cout, stride) in enumerate(RESNET_STAGES):
                for blk in range(2):
                    st = stride if blk == 0 else 1
                    y = conv_bn(h, f"s{s}b{blk}c1", st, 3)
                    y = conv_bn(y, f"s{s}b{blk}c2", 1, 3, relu=False)
                    sc = conv_bn(h, f"s{s}b{blk}down", st, 1, relu=False) if st != 1 or cin != cout else h
                    h, cin = F.relu(y + sc), cout
            return h.mean(dim=(2, 3)) @ P["fc.w"] + P["fc.b"]
    return forward


# -- the CPU check of the baselines -------------------------------------------------------------

def check() -> None:
    torch = optional("torch")
    if torch is None:
        sys.exit("--check needs torch")
    g = mlp_graph(b=8, d=12, h=16, c=10)
    ref = gc.compile(g, backend="reference")
    P = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in ref.params.items()}
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((8, 12)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32)
    (loss,) = ref(x=x, t=t)
    tloss = torch_mlp_step(torch, P)(torch.from_numpy(x), torch.from_numpy(t))
    np.testing.assert_allclose(tloss.item(), loss, rtol=1e-5)
    for k in ref.params:
        np.testing.assert_allclose(P[k].detach().numpy(), ref.params[k], rtol=1e-5, atol=1e-6)
    g = resnet_graph(batch=2, image=8)
    ref = gc.compile(g, backend="reference")
    randomise_batch_norms(ref)
    xi = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    (want,) = ref(x=xi)
    P = {k: torch.tensor(np.array(v)) for k, v in ref.params.items()}
    got = torch_resnet(torch, P)(torch.from_numpy(xi)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    print("PyTorch baselines match graphc's reference backend (MLP SGD step, ResNet-18 inference)")


# -- on the GPU ---------------------------------------------------------------------------------

def _torch_gpu_seconds(torch, fn, repeat: int) -> float:
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--check", action="store_true", help="CPU check of the PyTorch baselines")
    ap.add_argument("--n", type=int, default=1 << 26, help="elements of the elementwise chain")
    args = ap.parse_args()
    if args.check:
        return check()
    from graphc.backends.cuda.runtime import _Active, cuda_available, device
    ok, why = cuda_available()
    if not ok:
        sys.exit(f"no CUDA device to benchmark on: {why}")
    dev = device()
    import pycuda.gpuarray as gpuarray
    torch = optional("torch")
    has_torch = torch is not None and torch.cuda.is_available()
    if has_torch:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    print(f"device: {dev['name']} ({dev['arch']}, {dev['sms']} SMs); PyTorch "
          f"{torch.__version__ if has_torch else 'not available'}\n")
    rows = []

    # elementwise chain vs copy bandwidth
    n = args.n
    g = gc.Graph("chain")
    with g:
        x = gc.placeholder("x", (n,), "f32")
        y = arith(x)
    exe = gc.compile(g, y, backend="cuda")
    xh = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    with _Active(dev["context"]):
        xd, yd = gpuarray.to_gpu(xh), gpuarray.empty(n, np.float32)
        drv = dev["drv"]
        start, end = drv.Event(), drv.Event()
        drv.memcpy_dtod(yd.gpudata, xd.gpudata, xh.nbytes)
        start.record()
        for _ in range(args.runs):
            drv.memcpy_dtod(yd.gpudata, xd.gpudata, xh.nbytes)
        end.record()
        end.synchronize()
        copy_s = start.time_till(end) / 1e3 / args.runs
    np.testing.assert_allclose(exe(xd), arith(xh), rtol=1e-5, atol=1e-5)
    chain_s = exe.gpu_seconds(xd, repeat=args.runs)
    gbs = lambda s: 2 * xh.nbytes / s / 1e9  # noqa: E731  (read + write)
    rows.append(["8-op chain, %dM f32" % (n >> 20), f"{gbs(chain_s):.0f} GB/s",
                 f"copy {gbs(copy_s):.0f} GB/s", f"{chain_s / copy_s:.2f}x copy time "
                 f"({copy_s / chain_s:.0%} of copy bandwidth)"])
    if has_torch:
        xt = torch.from_numpy(xh).cuda()
        t_s = _torch_gpu_seconds(torch, lambda: arith(xt), args.runs)
        rows.append(["  same chain, torch eager", f"{gbs(t_s):.0f} GB/s", "", f"graphc {t_s / chain_s:.1f}x faster"])

    # GEMM
    for dt, sizes in [("f32", (1024, 2048, 4096)), ("f16", (2048, 4096))]:
        for s in sizes:
            g = gc.Graph(f"gemm{s}")
            with g:
                a = gc.placeholder("a", (s, s), dt)
                b = gc.placeholder("b", (s, s), dt)
                c = a @ b
            exe = gc.compile(g, c, backend="cuda")
            npdt = np.float32 if dt == "f32" else np.float16
            rng = np.random.default_rng(s)
            ah, bh = rng.standard_normal((s, s)).astype(npdt), rng.standard_normal((s, s)).astype(npdt)
            with _Active(dev["context"]):
                ad, bd = gpuarray.to_gpu(ah), gpuarray.to_gpu(bh)
            if s == sizes[0]:
                want = ah.astype(np.float64) @ bh.astype(np.float64)
                np.testing.assert_allclose(exe(ad, bd), want, rtol=2e-2 if dt == "f16" else 1e-3,
                                           atol=2e-1 if dt == "f16" else 1e-2)
            sec = exe.gpu_seconds(ad, bd, repeat=max(3, args.runs // 2))
            tf = 2 * s ** 3 / sec / 1e12
            row = [f"GEMM {dt} {s}", f"{tf:.1f} TFLOP/s", "", ""]
            if has_torch:
                at, bt = torch.from_numpy(ah).cuda(), torch.from_numpy(bh).cuda()
                ts = _torch_gpu_seconds(torch, lambda: at @ bt, max(3, args.runs // 2))
                row[2] = f"cuBLAS {2 * s ** 3 / ts / 1e12:.1f}"
                row[3] = f"{ts / sec:.0%} of cuBLAS"
            rows.append(row)

    # MLP train step, end to end
    g = mlp_graph()
    exe = gc.compile(g, backend="cuda")
    rng = np.random.default_rng(1)
    xh = rng.standard_normal((MLP_B, MLP_D)).astype(np.float32)
    th = rng.integers(0, MLP_C, MLP_B).astype(np.int32)
    with _Active(dev["context"]):
        xd, td = gpuarray.to_gpu(xh), gpuarray.to_gpu(th)
    cont = {"graphc": lambda: exe(xd, td)}
    if has_torch:
        P = {k: torch.tensor(np.array(v), device="cuda", requires_grad=True) for k, v in exe.params.items()}
        step = torch_mlp_step(torch, P)
        xt, tt = torch.from_numpy(xh).cuda(), torch.from_numpy(th).cuda()

        def torch_step():
            loss = step(xt, tt)
            torch.cuda.synchronize()
            return loss
        cont["torch eager"] = torch_step
    times = median_times(cont, runs=args.runs, rounds=3)
    rows.append([f"MLP {MLP_D}-{MLP_H}-{MLP_H}-{MLP_C} SGD step, batch {MLP_B}",
                 f"{times['graphc'] * 1e3:.3f} ms", f"torch {times['torch eager'] * 1e3:.3f} ms" if has_torch else "",
                 f"graphc {times['torch eager'] / times['graphc']:.2f}x faster" if has_torch else ""])

    # ResNet-18 inference, end to end
    for batch in (1, 64):
        g = resnet_graph(batch)
        exe = gc.compile(g, backend="cuda")
        randomise_batch_norms(exe)
        xh = np.random.default_rng(2).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        with _Active(dev["context"]):
            xd = gpuarray.to_gpu(xh)
        cont = {"graphc": lambda: exe(xd)}
        if has_torch:
            P = {k: torch.tensor(np.array(v), device="cuda") for k, v in exe.params.items()}
            fwd = torch_resnet(torch, P)
            xt = torch.from_numpy(xh).cuda()
            np.testing.assert_allclose(exe(xd), fwd(xt).cpu().numpy(), rtol=1e-3, atol=1e-3)

            def torch_fwd():
                out = fwd(xt)
                torch.cuda.synchronize()
                return out
            cont["torch eager"] = torch_fwd
        times = median_times(cont, runs=args.runs, rounds=3)
        rows.append([f"ResNet-18 (32x32) inference, batch {batch}", f"{times['graphc'] * 1e3:.3f} ms",
                     f"torch {times['torch eager'] * 1e3:.3f} ms" if has_torch else "",
                     f"graphc {times['torch eager'] / times['graphc']:.2f}x faster" if has_torch else ""])

    print(table(rows, ["benchmark", "graphc cuda", "baseline", "ratio"]))


if __name__ == "__main__":
    main()
