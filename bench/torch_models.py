"""The benchmark workloads written in PyTorch (torch.nn), as a PyTorch user would write them.

Each model matches its kerspec spec in bench/specs/ layer for layer: same shapes, activations,
loss and optimizer. The differences are PyTorch's idioms, not extra work for either side:

- The last layer returns logits; the loss fuses the softmax or sigmoid (`CrossEntropyLoss` on
  class indices, `BCEWithLogitsLoss`), which is the same math as Keras's softmax + categorical
  crossentropy. `predict` applies the softmax or sigmoid, so both frameworks return probabilities.
- Images are NCHW (PyTorch's layout) instead of NHWC; run.py transposes the same array once,
  before any timing.
- `nn.LSTM` has two bias vectors (b_ih, b_hh) where Keras has one: 256 or 1,024 more
  parameters on W3 and W4, nothing measurable.
- Initialization is PyTorch's default (Keras's is not needed to measure speed).
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """W1: 784 -> Dense 512 relu -> Dense 256 relu -> Dense 10 (softmax in the loss)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """W2: 1x28x28 -> Conv 32 3x3 relu -> pool -> Conv 64 3x3 relu -> pool -> Dense 128 relu -> 10."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LSTMHead(nn.Module):
    """W3 and W4: LSTM over (batch, steps, features), last hidden state -> Dense."""

    def __init__(self, features: int, units: int, outputs: int):
        super().__init__()
        self.lstm = nn.LSTM(features, units, batch_first=True)
        self.dense = nn.Linear(units, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.dense(h[-1])


def build(workload: str) -> tuple[nn.Module, nn.Module, str]:
    """(model, loss, output activation for predict) for a workload name W1..W4."""
    if workload == "W1":
        return MLP(), nn.CrossEntropyLoss(), "softmax"
    if workload == "W2":
        return CNN(), nn.CrossEntropyLoss(), "softmax"
    if workload == "W3":
        return LSTMHead(1, 32, 1), nn.BCEWithLogitsLoss(), "sigmoid"
    if workload == "W4":
        return LSTMHead(32, 128, 10), nn.CrossEntropyLoss(), "softmax"
    raise ValueError(f"unknown workload {workload!r}")
