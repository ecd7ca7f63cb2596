"""The classic ONNX model-zoo CNNs, rebuilt with onnx.helper at the opsets the zoo shipped
them with (issue 17): the real files cannot be downloaded in CI, so each builder writes the
model's topology as its Caffe2 or MXNet conversion did, at small widths and resolution.

What is kept from the zoo files: layer counts, kernel sizes, strides, pads, grouping and
concat structure; the op set of opsets 7-9 (BatchNormalization-7 with `spatial`, Reshape-5
with its shape as an initializer, Dropout-7, LRN-1, Sum-8, Concat-4, MaxPool-8,
AveragePool-7, GlobalAveragePool-1, Gemm-7/9 with transB=1, Softmax-1 on 4-D outputs,
Transpose-1 for ShuffleNet's channel shuffle, Flatten-1/9); IR version 3, where every
initializer is listed among the graph inputs as well (the Caffe2 converter's files), and
Caffe2 names such as `data_0`, `gpu_0/data_0` and `prob_1`. Caffe's ceil-mode pooling is
written as the zoo files write it: opset 8's MaxPool has no ceil_mode, so the converter put
the overhang into asymmetric end pads (`caffe_pool`). None of these files uses Upsample.

What is not: widths (divided by 8 to 16, 100 classes for 1000) and the input size (the
smallest the stride pattern leaves at least 1x1 for, or 64x64). Weights are random, seeded,
He-scaled so activations stay O(1) through a hundred layers; batch-norm statistics are
random too.

    models()              # name -> (ModelProto, {input name: array})
"""
from __future__ import annotations

from math import ceil
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Net:
    """A Caffe2-style ONNX graph under construction: NCHW shapes tracked per value, weights
    added as initializers (and as graph inputs when `ir_version` is 3)."""

    def __init__(self, name: str, opset: int, input_name: str, shape: tuple[int, ...],
                 seed: int, ir_version: int = 3) -> None:
        self.name, self.opset, self.ir_version = name, opset, ir_version
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {input_name: tuple(shape)}
        self.input = input_name
        self._n = 0

    # -- plumbing -------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def weight(self, hint: str, array: np.ndarray) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], shape: tuple[int, ...], hint: str,
             extra_outputs: int = 0, **attrs) -> str:
        """Add a node; `extra_outputs` dangling outputs (Caffe2's Dropout masks) that no
        other node reads."""
        out = self.fresh(hint)
        outs = [out] + [f"_{out}_mask_{i}" for i in range(extra_outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=out, **attrs))
        self.shapes[out] = tuple(shape)
        return out

    def model(self, output: str, output_name: str) -> onnx.ModelProto:
        self.nodes[-1].output[0] = output_name  # the zoo's output name on the last node
        assert self.nodes[-1].output[0] == output_name and output == self.nodes[-1].name
        inputs = [helper.make_tensor_value_info(self.input, TensorProto.FLOAT,
                                                list(self.shapes[self.input]))]
        if self.ir_version < 4:  # IR 3: initializers are graph inputs too
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in self.inits]
        outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT,
                                                 list(self.shapes[output]))]
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                              producer_name="graphc-zoo-rebuild")
        m.ir_version = self.ir_version
        onnx.checker.check_model(m, full_check=True)
        return m

    def feed(self) -> dict[str, np.ndarray]:
        x = np.random.default_rng(1000 + self._n).standard_normal(self.shapes[self.input])
        return {self.input: x.astype(np.float32)}

    # -- layers ---------------------------------------------------------------------
    def conv(self, x: str, cout: int, k: int, stride: int = 1, pad: int = 0, group: int = 1,
             bias: bool = True, gain: float = 2.0) -> str:
        n, c, h, w = self.shapes[x]
        fan_in = c // group * k * k
        wt = self.rng.standard_normal((cout, c // group, k, k)) * np.sqrt(gain / fan_in)
        ins = [x, self.weight("W", wt.astype(np.float32))]
        if bias:
            ins.append(self.weight("b", (self.rng.standard_normal(cout) * 0.1).astype(np.float32)))
        oh, ow = ((d + 2 * pad - k) // stride + 1 for d in (h, w))
        # every attribute spelled out, defaults too, as the Caffe2 converter wrote them
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
                     dilations=[1, 1], group=group)
        return self.node("Conv", ins, (n, cout, oh, ow), "conv", **attrs)

    def bn(self, x: str, gamma: float = 1.0) -> str:
        """Inference batch norm; `gamma` scales the learnt scale (a residual branch's last
        BN small, as trained ResNets have it, so a hundred layers do not saturate)."""
        c = self.shapes[x][1]
        r = self.rng
        ins = [x] + [self.weight(h, a.astype(np.float32)) for h, a in (
            ("scale", gamma * (1.0 + 0.2 * r.standard_normal(c))),
            ("bias", 0.1 * r.standard_normal(c)),
            ("mean", 0.1 * r.standard_normal(c)), ("var", 1.0 + 0.5 * r.random(c)))]
        attrs = dict(epsilon=1e-5, momentum=0.9)
        if self.opset < 9:  # written out by the converters; removed at opset 9
            attrs["spatial"] = 1
        return self.node("BatchNormalization", ins, self.shapes[x], "bn", **attrs)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x], self.shapes[x], "relu")

    def lrn(self, x: str, size: int = 5) -> str:
        return self.node("LRN", [x], self.shapes[x], "norm", size=size, alpha=1e-4, beta=0.75,
                         bias=1.0)

    def caffe_pool(self, x: str, op: str, k: int, stride: int, pad: int = 0) -> str:
        """Caffe's pooling (ceil-mode output size, last window starting inside the input)
        as the Caffe2 converter wrote it at opsets 7-9: the overhang as end pads."""
        n, c, h, w = self.shapes[x]
        outs, ends = [], []
        for d in (h, w):
            o = int(ceil((d + 2 * pad - k) / stride)) + 1
            if pad and (o - 1) * stride >= d + pad:
                o -= 1
            outs.append(o)
            ends.append(max((o - 1) * stride + k - d - pad, 0))
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad, pad] + ends)
        return self.node(op, [x], (n, c, *outs), "pool", **attrs)

    def pool(self, x: str, op: str, k: int, stride: int, pad: int = 0) -> str:
        n, c, h, w = self.shapes[x]
        oh, ow = ((d + 2 * pad - k) // stride + 1 for d in (h, w))
        return self.node(op, [x], (n, c, oh, ow), "pool", kernel_shape=[k, k],
                         strides=[stride, stride], pads=[pad] * 4)

    def global_pool(self, x: str) -> str:
        n, c = self.shapes[x][:2]
        return self.node("GlobalAveragePool", [x], (n, c, 1, 1), "pool")

    def concat(self, xs: list[str]) -> str:
        n, _, h, w = self.shapes[xs[0]]
        assert all(self.shapes[v][2:] == (h, w) for v in xs), [self.shapes[v] for v in xs]
        c = sum(self.shapes[v][1] for v in xs)
        return self.node("Concat", xs, (n, c, h, w), "concat", axis=1)

    def sum(self, xs: list[str]) -> str:
        return self.node("Sum", xs, self.shapes[xs[0]], "sum")

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b], self.shapes[a], "add")

    def dropout(self, x: str, ratio: float = 0.5, mask: bool = True) -> str:
        """Dropout-7 (an identity at inference); Caffe2's files keep its mask output."""
        return self.node("Dropout", [x], self.shapes[x], "drop", extra_outputs=int(mask),
                         ratio=ratio)

    def reshape(self, x: str, shape: tuple[int, ...]) -> str:
        """Reshape-5 with the shape as an int64 initializer (Caffe2's OC2_DUMMY nodes);
        0 copies the input's dimension, -1 is inferred."""
        s = self.weight("OC2_DUMMY", np.asarray(shape, dtype=np.int64))
        src = self.shapes[x]
        want = tuple(src[i] if d == 0 else d for i, d in enumerate(shape))
        out_shape = np.empty(src, dtype=np.int8).reshape(want).shape
        return self.node("Reshape", [x, s], out_shape, "reshape")

    def flatten(self, x: str) -> str:
        s = self.shapes[x]
        return self.node("Flatten", [x], (s[0], int(np.prod(s[1:]))), "flatten", axis=1)

    def fc(self, x: str, cout: int, gain: float = 2.0) -> str:
        n, c = self.shapes[x]
        wt = self.rng.standard_normal((cout, c)) * np.sqrt(gain / c)
        b = self.rng.standard_normal(cout) * 0.1
        return self.node("Gemm", [x, self.weight("fc_w", wt.astype(np.float32)),
                                  self.weight("fc_b", b.astype(np.float32))],
                         (n, cout), "fc", alpha=1.0, beta=1.0, transB=1)

    def softmax(self, x: str, axis: int | None = None) -> str:
        """Softmax-1 (flattens from `axis`, default 1, as opsets before 13 do)."""
        attrs = {} if axis is None else {"axis": axis}
        return self.node("Softmax", [x], self.shapes[x], "prob", **attrs)


CLASSES = 100  # the zoo's 1000, divided by 10 as the widths are


def alexnet() -> tuple[onnx.ModelProto, dict]:
    """bvlc_alexnet (Caffe2, opset 9): conv 11/4, LRN, pool 3/2, conv 5 p2 group 2, LRN,
    pool, conv 3 x3 (groups 1, 2, 2), pool, Reshape, fc-dropout x2, fc, Softmax."""
    n = Net("alexnet", 9, "data_0", (1, 3, 64, 64), seed=1)
    x = n.caffe_pool(n.lrn(n.relu(n.conv("data_0", 12, 11, 4))), "MaxPool", 3, 2)
    x = n.caffe_pool(n.lrn(n.relu(n.conv(x, 32, 5, pad=2, group=2))), "MaxPool", 3, 2)
    x = n.relu(n.conv(x, 48, 3, pad=1))
    x = n.relu(n.conv(x, 48, 3, pad=1, group=2))
    x = n.caffe_pool(n.relu(n.conv(x, 32, 3, pad=1, group=2)), "MaxPool", 3, 2)
    x = n.reshape(x, (1, -1))
    x = n.dropout(n.relu(n.fc(x, 256)))
    x = n.dropout(n.relu(n.fc(x, 256)))
    out = n.softmax(n.fc(x, CLASSES, gain=1.0))
    return n.model(out, "prob_1"), n.feed()


def zfnet() -> tuple[onnx.ModelProto, dict]:
    """zfnet512 (Caffe2, opset 8): conv 7/2, LRN, pool 3/2 p1, conv 5/2, LRN, pool 3/2 p1,
    conv 3 x3, pool 3/2, fc-dropout x2, fc, Softmax."""
    n = Net("zfnet512", 8, "gpu_0/data_0", (1, 3, 64, 64), seed=2)
    x = n.caffe_pool(n.lrn(n.relu(n.conv("gpu_0/data_0", 12, 7, 2, pad=1))), "MaxPool", 3, 2, 1)
    x = n.caffe_pool(n.lrn(n.relu(n.conv(x, 32, 5, 2))), "MaxPool", 3, 2, 1)
    for c in (48, 48, 32):
        x = n.relu(n.conv(x, c, 3, pad=1))
    x = n.caffe_pool(x, "MaxPool", 3, 2)
    s = n.shapes[x]
    x = n.reshape(x, (s[0], s[1] * s[2] * s[3]))
    x = n.dropout(n.relu(n.fc(x, 256)))
    x = n.dropout(n.relu(n.fc(x, 256)))
    out = n.softmax(n.fc(x, CLASSES, gain=1.0))
    return n.model(out, "gpu_0/softmax_1"), n.feed()


def vgg16() -> tuple[onnx.ModelProto, dict]:
    """vgg16 (Caffe2, opset 9): 13 conv 3x3 p1 in blocks of 2-2-3-3-3, each block ending in
    a 2x2/2 max pool; Flatten; fc-relu-dropout x2; fc; Softmax. 32x32 leaves 1x1."""
    n = Net("vgg16", 9, "data_0", (1, 3, 32, 32), seed=3)
    x = "data_0"
    for reps, c in ((2, 8), (2, 16), (3, 32), (3, 64), (3, 64)):
        for _ in range(reps):
            x = n.relu(n.conv(x, c, 3, pad=1))
        x = n.pool(x, "MaxPool", 2, 2)
    x = n.flatten(x)
    x = n.dropout(n.relu(n.fc(x, 256)), mask=False)
    x = n.dropout(n.relu(n.fc(x, 256)))
    out = n.softmax(n.fc(x, CLASSES, gain=1.0))
    return n.model(out, "prob_1"), n.feed()


def _bottleneck_v1(n: Net, x: str, mid: int, out: int, stride: int) -> str:
    """ResNet v1 bottleneck as Caffe2 wrote it: conv-BN-relu x2, conv-BN, Sum, relu (the
    stride on the first 1x1, as in Caffe's ResNet-50)."""
    y = n.relu(n.bn(n.conv(x, mid, 1, stride, bias=False)))
    y = n.relu(n.bn(n.conv(y, mid, 3, 1, 1, bias=False)))
    y = n.bn(n.conv(y, out, 1, bias=False), gamma=0.3)
    short = x if n.shapes[x][1] == out and stride == 1 else \
        n.bn(n.conv(x, out, 1, stride, bias=False))
    return n.relu(n.sum([y, short]))


def resnet50_v1() -> tuple[onnx.ModelProto, dict]:
    """resnet50 (Caffe2, opset 7): conv 7/2 p3, BN, relu, max pool 3/2, four stages of
    3-4-6-3 bottlenecks, AveragePool over the last map, Reshape, fc, Softmax."""
    n = Net("resnet50", 7, "gpu_0/data_0", (1, 3, 64, 64), seed=4)
    x = n.relu(n.bn(n.conv("gpu_0/data_0", 8, 7, 2, 3, bias=False)))
    x = n.caffe_pool(x, "MaxPool", 3, 2)
    for i, (blocks, mid) in enumerate(((3, 4), (4, 8), (6, 16), (3, 32))):
        for j in range(blocks):
            x = _bottleneck_v1(n, x, mid, mid * 4, 2 if i and not j else 1)
    k = n.shapes[x][2]
    x = n.pool(x, "AveragePool", k, 1)
    s = n.shapes[x]
    x = n.reshape(x, (s[0], s[1]))
    out = n.softmax(n.fc(x, CLASSES, gain=1.0))
    return n.model(out, "gpu_0/softmax_1"), n.feed()


def resnet50_v2() -> tuple[onnx.ModelProto, dict]:
    """resnet50v2 (MXNet/Gluon, opset 7): pre-activation bottlenecks (BN-relu-conv, the
    stride on the 3x3, the projection from the first BN-relu), Add, a final BN-relu,
    GlobalAveragePool, Flatten, Gemm; an input BN without scale as Gluon's data norm."""
    n = Net("resnet50v2", 7, "data", (1, 3, 64, 64), seed=5)
    x = n.bn("data")
    x = n.relu(n.bn(n.conv(x, 8, 7, 2, 3, bias=False)))
    x = n.pool(x, "MaxPool", 3, 2, 1)
    for i, (blocks, mid) in enumerate(((3, 4), (4, 8), (6, 16), (3, 32))):
        for j in range(blocks):
            stride = 2 if i and not j else 1
            pre = n.relu(n.bn(x))
            short = n.conv(pre, mid * 4, 1, stride, bias=False) if j == 0 else x
            y = n.conv(pre, mid, 1, bias=False)
            y = n.conv(n.relu(n.bn(y)), mid, 3, stride, 1, bias=False)
            y = n.conv(n.relu(n.bn(y)), mid * 4, 1, bias=False, gain=0.2)
            x = n.add(y, short)
    x = n.flatten(n.global_pool(n.relu(n.bn(x))))
    out = n.fc(x, CLASSES, gain=1.0)
    return n.model(out, "resnetv24_dense0_fwd"), n.feed()


def _inception_v1(n: Net, x: str, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> str:
    a = n.relu(n.conv(x, c1, 1))
    b = n.relu(n.conv(n.relu(n.conv(x, c3r, 1)), c3, 3, pad=1))
    c = n.relu(n.conv(n.relu(n.conv(x, c5r, 1)), c5, 5, pad=2))
    d = n.relu(n.conv(n.pool(x, "MaxPool", 3, 1, 1), cp, 1))
    return n.concat([a, b, c, d])


def inception_v1() -> tuple[onnx.ModelProto, dict]:
    """bvlc_googlenet (Caffe2, opset 9): conv 7/2 p3, pool 3/2 (ceil), LRN, conv 1, conv 3,
    LRN, pool, inception 3a-3b, pool, 4a-4e, pool, 5a-5b (the zoo's branch widths / 8),
    AveragePool over the last map, Dropout 0.4, Reshape, fc, Softmax."""
    n = Net("googlenet", 9, "data_0", (1, 3, 64, 64), seed=6)
    x = n.caffe_pool(n.relu(n.conv("data_0", 8, 7, 2, 3)), "MaxPool", 3, 2)
    x = n.lrn(x)
    x = n.relu(n.conv(n.relu(n.conv(x, 8, 1)), 24, 3, pad=1))
    x = n.caffe_pool(n.lrn(x), "MaxPool", 3, 2)
    widths = {"3a": (8, 12, 16, 2, 4, 4), "3b": (16, 16, 24, 4, 12, 8),
              "4a": (24, 12, 26, 2, 6, 8), "4b": (20, 14, 28, 3, 8, 8),
              "4c": (16, 16, 32, 3, 8, 8), "4d": (14, 18, 36, 4, 8, 8),
              "4e": (32, 20, 40, 4, 16, 16), "5a": (32, 20, 40, 4, 16, 16),
              "5b": (48, 24, 48, 6, 16, 16)}
    for name, w in widths.items():
        if name in ("4a", "5a"):
            x = n.caffe_pool(x, "MaxPool", 3, 2)
        x = _inception_v1(n, x, *w)
    k = n.shapes[x][2]
    x = n.dropout(n.pool(x, "AveragePool", k, 1), 0.4)
    s = n.shapes[x]
    x = n.reshape(x, (s[0], s[1]))
    out = n.softmax(n.fc(x, CLASSES, gain=1.0))
    return n.model(out, "prob_1"), n.feed()


def _cbr(n: Net, x: str, c: int, k: int, stride: int = 1, pad: int = 0) -> str:
    return n.relu(n.bn(n.conv(x, c, k, stride, pad, bias=False)))


def _inception_v2(n: Net, x: str, c1: int, c3r: int, c3: int, d3r: int, d3: int, cp: int,
                  pool: str) -> str:
    """BN-Inception's module: 1x1; 1x1-3x3; 1x1-3x3-3x3 (the 5x5 factored); pool-1x1."""
    a = _cbr(n, x, c1, 1)
    b = _cbr(n, _cbr(n, x, c3r, 1), c3, 3, pad=1)
    c = _cbr(n, _cbr(n, _cbr(n, x, d3r, 1), d3, 3, pad=1), d3, 3, pad=1)
    d = _cbr(n, n.pool(x, pool, 3, 1, 1), cp, 1)
    return n.concat([a, b, c, d])


def _reduction_v2(n: Net, x: str, c3r: int, c3: int, d3r: int, d3: int) -> str:
    """BN-Inception's grid reduction (3c, 4e): two strided 3x3 towers and a strided max
    pool, concatenated (the pool in Caffe's ceil mode, the convs padded to meet it)."""
    b = _cbr(n, _cbr(n, x, c3r, 1), c3, 3, 2, 1)
    c = _cbr(n, _cbr(n, _cbr(n, x, d3r, 1), d3, 3, pad=1), d3, 3, 2, 1)
    d = n.caffe_pool(x, "MaxPool", 3, 2)
    return n.concat([b, c, d])


def inception_v2() -> tuple[onnx.ModelProto, dict]:
    """inception_v2 (Caffe2 BN-Inception, opset 8): conv 7/2-BN-relu, pool, conv 1, conv 3,
    pool, modules 3a 3b, reduction 3c, 4a-4d, reduction 4e, 5a (average-pool branch) and
    5b (max-pool branch), AveragePool over the last map, Reshape, fc, Softmax."""
    n = Net("inception_v2", 8, "data_0", (1, 3, 64, 64), seed=7)
    x = n.caffe_pool(_cbr(n, "data_0", 8, 7, 2, 3), "MaxPool", 3, 2)
    x = n.caffe_pool(_cbr(n, _cbr(n, x, 8, 1), 24, 3, pad=1), "MaxPool", 3, 2)
    x = _inception_v2(n, x, 8, 8, 8, 8, 12, 4, "AveragePool")
    x = _inception_v2(n, x, 8, 8, 12, 8, 12, 8, "AveragePool")
    x = _reduction_v2(n, x, 16, 20, 8, 12)
    for w in ((28, 8, 12, 12, 16, 16), (24, 12, 16, 12, 16, 16), (16, 16, 20, 16, 20, 16),
              (12, 16, 24, 20, 24, 16)):
        x = _inception_v2(n, x, *w, "AveragePool")
    x = _reduction_v2(n, x, 16, 24, 24, 32)
    x = _inception_v2(n, x, 44, 24, 40, 20, 28, 16, "AveragePool")
    x = _inception_v2(n, x, 44, 24, 40, 24, 28, 16, "MaxPool")
    k = n.shapes[x][2]
    x = n.pool(x, "AveragePool", k, 1)
    s = n.shapes[x]
    x = n.reshape(x, (s[0], s[1]))
    out = n.softmax(n.fc(x, CLASSES, gain=1.0))
    return n.model(out, "prob_1"), n.feed()


def densenet121() -> tuple[onnx.ModelProto, dict]:
    """densenet121 (Caffe2, opset 7): conv 7/2 p3, BN, relu, max pool 3/2 p1, dense blocks
    of 6-12-24-16 layers (BN-relu-conv1x1 to 4k, BN-relu-conv3x3 to k, Concat; growth
    k = 4), transitions (BN-relu-conv1x1 halving, average pool 2/2), a final BN-relu,
    GlobalAveragePool, a 1x1 conv as the classifier, Reshape, Softmax."""
    n = Net("densenet121", 7, "data_0", (1, 3, 32, 32), seed=8)
    growth = 4
    x = n.relu(n.bn(n.conv("data_0", 2 * growth, 7, 2, 3, bias=False)))
    x = n.pool(x, "MaxPool", 3, 2, 1)
    for i, layers in enumerate((6, 12, 24, 16)):
        for _ in range(layers):
            y = n.conv(n.relu(n.bn(x)), 4 * growth, 1, bias=False)
            y = n.conv(n.relu(n.bn(y)), growth, 3, pad=1, bias=False)
            x = n.concat([x, y])
        if i < 3:
            x = n.conv(n.relu(n.bn(x)), n.shapes[x][1] // 2, 1, bias=False)
            x = n.pool(x, "AveragePool", 2, 2)
    x = n.global_pool(n.relu(n.bn(x)))
    x = n.conv(x, CLASSES, 1, gain=1.0)
    s = n.shapes[x]
    out = n.softmax(n.reshape(x, (0, -1)), axis=1)
    return n.model(out, "fc6_1"), n.feed()


def _shuffle(n: Net, x: str, groups: int) -> str:
    """ShuffleNet's channel shuffle: Reshape to (N, g, C/g, H, W), Transpose, Reshape."""
    b, c, h, w = n.shapes[x]
    y = n.reshape(x, (0, groups, -1, h, w))
    y = n.node("Transpose", [y], (b, c // groups, groups, h, w), "shuffle", perm=[0, 2, 1, 3, 4])
    return n.reshape(y, (b, c, h, w))


def shufflenet() -> tuple[onnx.ModelProto, dict]:
    """shufflenet v1 (Caffe2, opset 8), g = 3: conv 3/2, max pool 3/2 p1, stages of 4-8-4
    units (grouped 1x1-BN-relu, channel shuffle, depthwise 3x3-BN, grouped 1x1-BN; Sum with
    the input, or Concat with an average-pooled input where the unit strides; relu; the
    first unit's first 1x1 ungrouped), GlobalAveragePool, Reshape, fc, Softmax."""
    g = 3
    n = Net("shufflenet", 8, "gpu_0/data_0", (1, 3, 64, 64), seed=9)
    x = n.relu(n.bn(n.conv("gpu_0/data_0", 12, 3, 2, 1, bias=False)))
    x = n.pool(x, "MaxPool", 3, 2, 1)
    for i, (units, out) in enumerate(((4, 48), (8, 96), (4, 192))):
        for j in range(units):
            stride = 2 if j == 0 else 1
            cin = n.shapes[x][1]
            branch = out - cin if stride == 2 else out
            mid = out // 4
            y = n.relu(n.bn(n.conv(x, mid, 1, group=1 if i == 0 and j == 0 else g, bias=False)))
            y = _shuffle(n, y, g)
            y = n.bn(n.conv(y, mid, 3, stride, 1, group=mid, bias=False))
            y = n.bn(n.conv(y, branch, 1, group=g, bias=False), gamma=0.5 if stride == 1 else 1.0)
            if stride == 2:
                x = n.relu(n.concat([n.pool(x, "AveragePool", 3, 2, 1), y]))
            else:
                x = n.relu(n.sum([x, y]))
    x = n.global_pool(x)
    s = n.shapes[x]
    x = n.reshape(x, (s[0], s[1]))
    out = n.softmax(n.fc(x, CLASSES, gain=1.0))
    return n.model(out, "gpu_0/softmax_1"), n.feed()


def _fire(n: Net, x: str, s: int, e: int) -> str:
    sq = n.relu(n.conv(x, s, 1))
    return n.concat([n.relu(n.conv(sq, e, 1)), n.relu(n.conv(sq, e, 3, pad=1))])


def squeezenet() -> tuple[onnx.ModelProto, dict]:
    """squeezenet1.1 (Caffe2, opset 7): conv 3/2, pool 3/2 (ceil), fire 2-3, pool, fire
    4-5, pool, fire 6-9 (squeeze 1x1 into 1x1 and 3x3 expands, concatenated), Dropout,
    conv10 1x1, relu, GlobalAveragePool, Softmax on the 4-D (N, C, 1, 1) map."""
    n = Net("squeezenet", 7, "data_0", (1, 3, 64, 64), seed=10)
    x = n.caffe_pool(n.relu(n.conv("data_0", 8, 3, 2)), "MaxPool", 3, 2)
    for s, e in ((2, 8), (2, 8)):
        x = _fire(n, x, s, e)
    x = n.caffe_pool(x, "MaxPool", 3, 2)
    for s, e in ((4, 16), (4, 16)):
        x = _fire(n, x, s, e)
    x = n.caffe_pool(x, "MaxPool", 3, 2)
    for s, e in ((6, 24), (6, 24), (8, 32), (8, 32)):
        x = _fire(n, x, s, e)
    x = n.relu(n.conv(n.dropout(x), CLASSES, 1, gain=1.0))
    out = n.softmax(n.global_pool(x))
    return n.model(out, "softmaxout_1"), n.feed()


BUILDERS: dict[str, Callable[[], tuple[onnx.ModelProto, dict]]] = {
    "alexnet": alexnet, "zfnet512": zfnet, "vgg16": vgg16, "resnet50_v1": resnet50_v1,
    "resnet50_v2": resnet50_v2, "inception_v1": inception_v1, "inception_v2": inception_v2,
    "densenet121": densenet121, "shufflenet": shufflenet, "squeezenet1.1": squeezenet,
}


def models() -> dict[str, tuple[onnx.ModelProto, dict]]:
    return {name: build() for name, build in BUILDERS.items()}
