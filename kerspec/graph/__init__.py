"""Spec → executable graph: `compile_spec` checks and orders, `Plan` runs."""

from kerspec.graph.compile import Graph, Node, Ref, compile_spec
from kerspec.graph.plan import Plan
from kerspec.graph.step import Params

__all__ = ["Graph", "Node", "Params", "Plan", "Ref", "compile_spec"]
