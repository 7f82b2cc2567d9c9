import os

# Keras reads its backend once, at import: set it before any test module imports keras.
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)
