"""ONNX import (the `onnx` extra): `gc.onnx.load("model.onnx")` gives an ir.Graph.

    g = gc.onnx.load("resnet.onnx")               # weights baked in as constants
    exe = gc.compile(g, backend="llvm")
    (y,) = exe(input=x)

See importer.py for what is imported and how errors point into the model file, and the
ops_* modules for each op family. `supported_ops()` lists the ONNX op types.
"""
from __future__ import annotations

from .errors import OnnxError, UnsupportedOnnxError
from .importer import MIN_OPSET, load, read_model, supported_ops

__all__ = ["load", "read_model", "supported_ops", "OnnxError", "UnsupportedOnnxError", "MIN_OPSET"]
