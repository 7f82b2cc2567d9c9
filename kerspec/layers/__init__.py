"""The layer catalog, LAYERS, and what every layer shares.

Each family's module registers its layers in LAYERS when it is imported, and it is imported when
a spec first names one of them: `validate` and `summary` build the classes of the layers a spec
uses, not of all of them. Listing the catalog (did-you-mean hints, the JSON Schema) imports every
family.
"""

from kerspec.layers.base import LAYERS, Context, Layer, Shape, ShapeError, WeightSpec, hand_over

# Each family's layers, in the catalog's order; tests/test_catalog.py holds this to what the
# modules register.
FAMILIES = {
    "noise": (
        "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
        "GaussianDropout", "ActivityRegularization",
    ),
    "core": ("Input", "Dense", "Activation", "Dropout", "Flatten", "Reshape", "Permute", "Masking"),
    "conv": ("Conv1D", "Conv2D"),
    "embedding": ("Embedding",),
    "lambda_": ("Lambda",),
    "merge": ("Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Dot"),
    "normalization": ("BatchNormalization", "LayerNormalization"),
    "pooling": (
        "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
    ),
    "recurrent": ("SimpleRNN", "LSTM", "GRU"),
    "reshaping": (
        "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D",
        "UpSampling2D", "RepeatVector",
    ),
    "wrappers": ("TimeDistributed", "Bidirectional"),
}

LAYERS.lazily({f"{__name__}.{family}": names for family, names in FAMILIES.items()})

__all__ = ["FAMILIES", "LAYERS", "Context", "Layer", "Shape", "ShapeError", "WeightSpec", "hand_over"]
