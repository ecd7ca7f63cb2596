"""graphc's main job on a bundled example: compile a small CNN's training step and train it.

    python examples/digits_cnn.py [--epochs N] [--backend reference]

Data: the bundled 8x8 handwritten digits (1,797 images), 1,500 for training and 297 held out.
Model: conv3x3(1->16) -> relu -> maxpool2 -> conv3x3(16->32) -> relu -> global average pool
-> linear(32->10), softmax cross-entropy, SGD with momentum. The whole step (forward,
backward, update) is one graph.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import graphc as gc
from graphc.ir.summary import summarize

BATCH = 50
N_TRAIN = 1500
N_TOTAL = 1797
LR = 0.1


def model(x: gc.Tensor, conv1: gc.nn.Conv2d, conv2: gc.nn.Conv2d, fc: gc.nn.Linear) -> gc.Tensor:
    h = gc.relu(conv1(x))
    h = gc.max_pool2d(h, 2)
    h = gc.relu(conv2(h))
    return fc(gc.global_avg_pool2d(h))


def build_train_step(batch: int = BATCH, eval_batch: int = N_TOTAL - N_TRAIN,
                     lr: float = LR) -> gc.Graph:
    """The training step graph: outputs (loss, logits) and updates every parameter.

    The same graph also holds an evaluation path over `eval_batch` images sharing the
    layers' parameters; compiling `pred` selects it (compile prunes what an output does
    not need).
    """
    g = gc.Graph("digits_cnn_step")
    with g:
        x = gc.placeholder("x", (batch, 1, 8, 8), "f32")
        t = gc.placeholder("t", (batch,), "i32")
        conv1 = gc.nn.Conv2d(1, 16, 3, padding=1, name="conv1")
        conv2 = gc.nn.Conv2d(16, 32, 3, padding=1, name="conv2")
        fc = gc.nn.Linear(32, 10, name="fc")
        logits = model(x, conv1, conv2, fc)
        loss = gc.softmax_cross_entropy(logits, t)
        g.set_outputs([loss, logits], updates=gc.optim.SGD(lr, momentum=0.9).updates(loss))
        x_eval = gc.placeholder("x_eval", (eval_batch, 1, 8, 8), "f32")
        g.pred = gc.argmax(model(x_eval, conv1, conv2, fc), axis=1)
    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--backend", default="llvm", help="llvm (native code) or reference (numpy)")
    args = ap.parse_args()

    images, labels = gc.load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    images, labels = images[order][:, None], labels[order]
    x_train, t_train = images[:N_TRAIN], labels[:N_TRAIN]
    x_test, t_test = images[N_TRAIN:], labels[N_TRAIN:]

    g = build_train_step()
    start = time.perf_counter()
    step = gc.compile(g, backend=args.backend)
    print(f"compiled in {time.perf_counter() - start:.2f} s for backend {args.backend!r}")
    print(summarize(step.graph))
    program = getattr(step, "program", None)  # the llvm backend's kernel IR
    if program is not None:
        fused = sum(k.name.endswith("_fused") for k in program.kernels)
        print(f"  lowered to {len(program.kernels)} kernels ({fused} of them fused groups), "
              f"arena {program.arena_bytes:,} bytes")

    evaluate = gc.compile(g, g.pred, backend=args.backend)

    def accuracy() -> float:
        for name in evaluate.params:  # share the trained parameters
            evaluate.params[name] = step.params[name]
        return float(np.mean(evaluate(x_eval=x_test) == t_test))

    print(f"epoch  0: test accuracy {accuracy():.3f}")
    for epoch in range(1, args.epochs + 1):
        perm = rng.permutation(N_TRAIN)
        losses = []
        t0 = time.perf_counter()
        for i in range(0, N_TRAIN, BATCH):
            idx = perm[i:i + BATCH]
            loss, _ = step(x=x_train[idx], t=t_train[idx])
            losses.append(float(loss))
        print(f"epoch {epoch:2d}: mean train loss {np.mean(losses):.4f}, test accuracy "
              f"{accuracy():.3f}  ({time.perf_counter() - t0:.2f} s)")


if __name__ == "__main__":
    main()
