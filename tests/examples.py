"""The repository's example and benchmark models, importable from any test."""
from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(path: str, name: str | None = None) -> ModuleType:
    """Import a script of the repository (e.g. "examples/digits_cnn.py") as a module."""
    file = ROOT / path
    spec = importlib.util.spec_from_file_location(name or file.stem, file)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent))  # benchmarks import their harness module
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.pop(0)
    return mod


def digits_cnn() -> ModuleType:
    return load("examples/digits_cnn.py")


def mlp_step() -> ModuleType:
    return load("benchmarks/mlp_step.py")
