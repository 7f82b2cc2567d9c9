"""kerspec: Keras-style models as YAML specs, compiled to NumPy and trained on the CPU."""

from kerspec.api import Model, from_yaml, load
from kerspec.errors import KerspecError

__version__ = "0.1.0"

__all__ = ["KerspecError", "Model", "__version__", "from_yaml", "load"]
