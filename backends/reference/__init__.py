"""The reference backend: a numpy interpreter, the oracle every other backend is checked against."""
from .interpreter import ReferenceExecutable, evaluate, run_graph

__all__ = ["ReferenceExecutable", "evaluate", "run_graph"]
