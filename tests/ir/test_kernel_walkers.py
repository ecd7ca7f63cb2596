"""The shared kernel-IR walkers (ir/kernel.py): a DAG walk meets a shared sub-expression
once, a tree walk once per use, and the statement walk reaches nested loop bodies."""
from __future__ import annotations

from graphc.ir import kernel as K
from graphc.ir.dtypes import f32, i64


def _chain(depth: int) -> K.Expr:
    """x, then e = e + e `depth` times: a DAG of depth+1 nodes, a tree of 2^(depth+1)-1."""
    e: K.Expr = K.Load("x", K.Var("i"), f32)
    for _ in range(depth):
        e = K.Binary("add", e, e, f32)
    return e


def test_dag_walk_visits_each_node_once_tree_walk_each_use() -> None:
    depth = 12
    e = _chain(depth)
    dag = list(K.walk_expr_dag(e))
    assert len(dag) == depth + 2  # the adds, the load and its index
    assert len({id(x) for x in dag}) == len(dag)
    tree = sum(1 for _ in K.walk_exprs(_chain(4)))
    assert tree == 2 ** 5 - 1 + 2 ** 4  # every add and load per use, plus each load's index


def test_expr_children_match_the_fields() -> None:
    a, b, c = K.Const(1.0, f32), K.Const(2.0, f32), K.Compare("lt", K.Var("i"), K.Const(3, i64))
    assert K.expr_children(K.Select(c, a, b, f32)) == [c, a, b]
    assert K.expr_children(K.Unary("exp", a, f32)) == [a]
    assert K.expr_children(a) == []


def test_statement_walk_enters_loop_bodies_in_order() -> None:
    i, j = K.Var("i"), K.Var("j")
    s1 = K.Store("y", i, K.Const(0.0, f32))
    s2 = K.Store("y", j, K.Const(1.0, f32))
    inner = K.For(j, 2, [s2])
    outer = K.For(i, 3, [s1, inner])
    assert list(K.walk_stmts([outer])) == [outer, s1, inner, s2]
