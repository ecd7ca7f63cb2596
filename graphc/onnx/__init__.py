"""ONNX import (the `onnx` extra): `gc.onnx.load("model.onnx")` gives what gc.compile takes.

    g = gc.onnx.load("resnet.onnx")               # weights baked in as constants
    exe = gc.compile(g, backend="llvm")
    (y,) = exe(input=x)                            # the model's own input names

A model with static shapes loads as an ir.Graph; one with a symbolic (dynamic) batch or
with inputs that feed shapes loads as a DynamicModel, which compiles per input shapes and
shape values on call (dynamic.py). Opsets from 7 on: each op's converter declares the
opsets it handles (context.py). See importer.py for what is imported and how errors point
into the model file, and the ops_* modules for each op family. `supported_ops()` lists
the ONNX op types.
"""
from __future__ import annotations

from .dynamic import DynamicModel, SpecialisingExecutable
from .errors import OnnxError, UnsupportedOnnxError
from .importer import MIN_OPSET, load, read_model, supported_ops

__all__ = ["load", "read_model", "supported_ops", "OnnxError", "UnsupportedOnnxError", "MIN_OPSET",
           "DynamicModel", "SpecialisingExecutable"]
