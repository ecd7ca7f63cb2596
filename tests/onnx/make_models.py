"""Regenerates tests/onnx/models/: four small PyTorch models with random weights, exported
to ONNX, with inputs and the outputs of ONNX Runtime and PyTorch for each.

    .venv/bin/python tests/onnx/make_models.py      # needs torch and onnxruntime

CI has neither (the PyPI torch wheel pulls in GBs of CUDA packages), so the files are
shipped and the tests compare graphc with them; they compare with live ONNX Runtime and
PyTorch too where those are installed. Widths are narrow so all files stay small (<5 MB).
"""
from __future__ import annotations

import pathlib

import numpy as np
import torch
from torch import nn

OUT = pathlib.Path(__file__).resolve().parent / "models"
OPSET = 17


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """ResNet-18's layout (7x7 stem, max pool, four stages of two basic blocks, global
    average pool, linear) at an eighth of its widths."""

    def __init__(self, widths=(8, 16, 32, 64), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2's inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear
    projection, ReLU6, residuals) at a quarter width with a shortened block list."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        cfg = [(1, 8, 1, 1), (6, 8, 2, 2), (6, 16, 2, 2), (6, 24, 2, 2), (6, 32, 1, 1)]
        layers = [nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()]
        cin = 8
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, classes))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))

    def forward(self, x):
        b, s, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.norm1(x)).reshape(b, s, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // h) ** 0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, s, d))
        return x + self.ff(self.norm2(x))


class TransformerEncoder(nn.Module):
    """A pre-norm transformer encoder (token embedding, learned positions, two layers of
    multi-head self-attention and GELU MLP, mean-pooled classifier)."""

    def __init__(self, vocab: int = 100, d: int = 64, heads: int = 4, ff: int = 128, layers: int = 2,
                 seq: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, seq, d) * 0.02)
        self.layers = nn.Sequential(*[EncoderLayer(d, heads, ff) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        x = self.layers(self.embed(tokens) + self.pos)
        return self.head(self.norm(x).mean(dim=1))


class LSTMModel(nn.Module):
    """A two-layer LSTM over a sequence of feature vectors, classifying from the last step."""

    def __init__(self, features: int = 16, hidden: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y[:, -1])


def randomize_batch_norm(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial running statistics and affine terms, so batch norm is really tested."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


def models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    out = {
        "resnet18": (ResNet18(), torch.randn(2, 3, 64, 64, generator=gen)),
        "mobilenetv2": (MobileNetV2(), torch.randn(2, 3, 64, 64, generator=gen)),
        "transformer": (TransformerEncoder(), torch.randint(0, 100, (2, 16), generator=gen)),
        "lstm": (LSTMModel(), torch.randn(4, 12, 16, generator=gen)),
    }
    for m, _ in out.values():
        randomize_batch_norm(m, gen)
        m.eval()
    return out


def main() -> None:
    import onnxruntime as ort
    OUT.mkdir(exist_ok=True)
    for name, (model, x) in models().items():
        path = OUT / f"{name}.onnx"
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"],
                          opset_version=OPSET, dynamo=False)
        with torch.no_grad():
            want_torch = model(x).numpy()
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (want_ort,) = sess.run(None, {"input": x.numpy()})
        np.savez_compressed(OUT / f"{name}.npz", input=x.numpy(), ort=want_ort, torch=want_torch)
        print(f"{name}: {path.stat().st_size / 1024:.0f} KiB, |ort - torch| max "
              f"{np.abs(want_ort - want_torch).max():.2e}")


if __name__ == "__main__":
    main()
