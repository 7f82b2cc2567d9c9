"""Every layer family, imported once so that each registers itself in LAYERS."""

from kerspec.layers import (  # noqa: F401
    conv,
    core,
    embedding,
    lambda_,
    merge,
    noise,
    normalization,
    pooling,
    recurrent,
    reshaping,
    wrappers,
)
from kerspec.layers.base import LAYERS, Context, Layer, Shape, ShapeError, WeightSpec, hand_over

# The wrapped layer of TimeDistributed may be any layer: complete its field now that all are known.
wrappers.resolve_inner_layer()

__all__ = ["LAYERS", "Context", "Layer", "Shape", "ShapeError", "WeightSpec", "hand_over"]
