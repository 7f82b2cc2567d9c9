"""Every layer family, imported once so that each registers itself in LAYERS."""

from kerspec.layers import conv, core, merge, pooling, recurrent, reshaping  # noqa: F401
from kerspec.layers.base import LAYERS, Context, Layer, Shape, ShapeError, WeightSpec

__all__ = ["LAYERS", "Context", "Layer", "Shape", "ShapeError", "WeightSpec"]
