"""Graph-to-graph passes."""
from .autodiff import grad
from .dce import eliminate_dead_code

__all__ = ["grad", "eliminate_dead_code"]
