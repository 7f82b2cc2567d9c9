"""Every layer family, imported once so that each registers itself in LAYERS."""

from kerspec.layers import (  # noqa: F401
    conv,
    core,
    embedding,
    expression,
    merge,
    noise,
    normalization,
    pooling,
    recurrent,
    reshaping,
)
from kerspec.layers.base import LAYERS, Context, Layer, Shape, ShapeError, WeightSpec

__all__ = ["LAYERS", "Context", "Layer", "Shape", "ShapeError", "WeightSpec"]
