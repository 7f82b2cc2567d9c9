"""Recurrent layers: SimpleRNN, LSTM and GRU, with Keras 3's arguments, weight layouts and math.

- base.py: the arguments, shapes and weights all three share, their dropout and step masks, and
  how a masked step carries the states over.
- steps.py: the feature-major scan of LSTM and GRU, one forward and one backward per cell for
  every activation (softmax and its kin run gate by gate, as Keras runs them).
- simple_rnn.py, lstm.py, gru.py: the cells. SimpleRNN stays batch-major (simple_rnn.py): its
  one gate has none of the strided gate slices the feature-major layout exists to avoid.
"""

from kerspec.layers.recurrent.base import Gated, Recurrent, hold

# isort: off
# Imported in the order they register, which is the order LAYERS lists them (the JSON schema).
from kerspec.layers.recurrent.simple_rnn import SimpleRNN
from kerspec.layers.recurrent.lstm import LSTM
from kerspec.layers.recurrent.gru import GRU
# isort: on

__all__ = ["GRU", "LSTM", "Gated", "Recurrent", "SimpleRNN", "hold"]
