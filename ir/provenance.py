"""Which graph nodes each kernel of a lowered Program computes, and where their values live.

The lowering (passes/lower.py) records it beside the program so that tools reading a
kernel can name the user's ops and source lines: the NaN/Inf locator re-runs a failing
kernel's nodes on the reference interpreter, and the profiler attributes kernel time,
FLOPs and bytes to ops. Not part of the program text (nor of its cache key): it is
derived from the graph, which the program's own text already determines.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .graph import Graph, Node, Value


@dataclass
class Provenance:
    graph: Graph                                      # the graph the program was lowered from
    kernel_nodes: dict[str, tuple[Node, ...]] = field(default_factory=dict)  # kernel name -> nodes
    value_buffers: dict[Value, str] = field(default_factory=dict)  # node value -> its buffer

    def nodes_of(self, kernel_name: str) -> tuple[Node, ...]:
        """The graph nodes a kernel computes (all members of a fused group; () for the
        copies of results that are inputs or parameters)."""
        return self.kernel_nodes.get(kernel_name, ())
