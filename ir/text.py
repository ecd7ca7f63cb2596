"""The text form of the IR: a printer (ir/text_print.py) and a hand-written parser
(ir/text_parse.py) that round-trip exactly. This module is the public entry: import from here.

    graph @mlp(%x: f32[64,784], %t: i32[64]) params(%w1: f32[784,256] = normal(0.0, 0.05, seed=0), %rm: f32[16] = zeros() frozen) {
      %c0 = const f32[] dense<2.0>
      %0 = matmul(%x, %w1) : f32[64,256]  loc("mlp.py":14)
      %1 = sum(%0) {axes=[0, 1]} : f32[]
      return %1 updates(%w1 = %0)
    }

`parse(print_graph(g))` is the same graph as `g` (see `compare.same_graph`), and printing
the parsed graph gives the same text. The parser builds the graph only through
`Graph.add_input/add_param/add_constant/add_node`, so every attribute and type is checked
by the registry; every problem is a `ParseError` with a line, a column and the source line.

Spelling of values. Inputs and parameters print as `%name`. Constants and node outputs
that carry a name print as `%name` too; unnamed ones are numbered: constants `%c0, %c1...`,
node outputs `%0, %1...`, in definition order, skipping any spelling a named value holds.
A name that is not an identifier (`[A-Za-z_][A-Za-z0-9_.]*`), or that looks like one of
the numbered forms (`c12`), prints quoted: `%"c12"`, `%"onnx::Add_3"`. When parsing, an
unquoted `%12` or `%c12` defines an unnamed value; every other spelling defines a named one.
"""
from __future__ import annotations

from .text_parse import parse
from .text_print import (DENSE_DECIMAL_MAX, attrs_equal, format_attr_value, format_dense,
                         format_node, format_type, print_graph, quote, value_names)

__all__ = ["print_graph", "parse", "value_names", "format_node", "format_type", "quote",
           "attrs_equal", "format_attr_value", "format_dense", "DENSE_DECIMAL_MAX"]
