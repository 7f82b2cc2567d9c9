"""The benchmark workloads written in PyTorch (torch.nn), as a PyTorch user would write them.

Each model matches its kerspec spec (bench/specs/, or specs/ for R2 and R3) layer for layer:
same shapes, activations, loss and optimizer. The differences are PyTorch's idioms, not extra
work for either side:

- The last layer returns logits; the loss fuses the softmax or sigmoid (`CrossEntropyLoss` on
  class indices, `BCEWithLogitsLoss`), which is the same math as Keras's softmax + categorical
  crossentropy. `predict` applies the softmax or sigmoid, so both frameworks return probabilities.
- Images are NCHW (PyTorch's layout) instead of NHWC; run.py transposes the same array once,
  before any timing.
- `nn.LSTM` has two bias vectors (b_ih, b_hh) where Keras has one: 256 or 1,024 more
  parameters on W3 and W4, nothing measurable.
- Initialization is PyTorch's default (Keras's is not needed to measure speed).
- BatchNorm gets Keras's epsilon (1e-3) and momentum (0.99 in Keras is 0.01 in PyTorch).
- Padded sequences (R3, R5) go through the recurrent layer packed (`pack_padded_sequence`),
  PyTorch's way of skipping the padding, as kerspec's mask does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


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


def batch_norm(dims: int, channels: int) -> nn.Module:
    kind = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return kind(channels, eps=1e-3, momentum=0.01)


class FCN(nn.Module):
    """R1: Wang et al.'s FCN, 1x150 -> (Conv1d k8/k5/k3 same -> BN -> relu) x 3 -> mean -> 2."""

    def __init__(self):
        super().__init__()
        layers = []
        for c_in, c_out, k in ((1, 32, 8), (32, 64, 5), (64, 32, 3)):
            layers += [nn.Conv1d(c_in, c_out, k, padding="same"), batch_norm(1, c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.dense = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features(x).mean(-1))


class DigitsCNN(nn.Module):
    """R2: specs/digits_cnn.yaml, 64 pixels -> 1x8x8 -> Conv 32 same relu -> pool -> Conv 64 same
    relu -> pool -> Dense 64 relu -> Dropout 0.3 -> 10."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 2 * 2, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(-1, 1, 8, 8))


class PackedRNN(nn.Module):
    """R3 (LSTM 12 -> 32 -> Dense 9) and R5 (Embedding -> bidirectional GRU 64 -> Dense 1):
    the padded sequences packed, the last hidden state of each direction into the Dense."""

    def __init__(self, rnn: nn.Module, outputs: int, embedding: nn.Module | None = None):
        super().__init__()
        self.embedding, self.rnn = embedding, rnn
        directions = 2 if rnn.bidirectional else 1
        self.dense = nn.Linear(rnn.hidden_size * directions, outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            x = self.embedding(x)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        if isinstance(h, tuple):  # an LSTM's (h, c)
            h = h[0]
        return self.dense(torch.cat(list(h), dim=-1))


class ResidualCNN(nn.Module):
    """R4: 3x32x32 -> Conv 32 -> BN -> relu -> 3 x (Conv BN relu Conv BN, + input, relu) -> mean
    -> Dense 10."""

    def __init__(self):
        super().__init__()

        def conv_bn():
            return [nn.Conv2d(32, 32, 3, padding=1), batch_norm(2, 32)]

        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), batch_norm(2, 32), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(*conv_bn(), nn.ReLU(), *conv_bn()) for _ in range(3)
        )
        self.dense = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(block(x) + x)
        return self.dense(x.mean((2, 3)))


def build(workload: str) -> tuple[nn.Module, nn.Module, str, float]:
    """(model, loss, output activation for predict, Adam's learning rate) for a workload name."""
    sparse = nn.CrossEntropyLoss()
    if workload == "W1":
        return MLP(), sparse, "softmax", 1e-3
    if workload == "W2":
        return CNN(), sparse, "softmax", 1e-3
    if workload == "W3":
        return LSTMHead(1, 32, 1), nn.BCEWithLogitsLoss(), "sigmoid", 1e-3
    if workload == "W4":
        return LSTMHead(32, 128, 10), sparse, "softmax", 1e-3
    if workload == "R1":
        return FCN(), sparse, "softmax", 1e-3
    if workload == "R2":
        return DigitsCNN(), sparse, "softmax", 1e-3
    if workload == "R3":
        return PackedRNN(nn.LSTM(12, 32, batch_first=True), 9), sparse, "softmax", 5e-3
    if workload == "R4":
        return ResidualCNN(), sparse, "softmax", 1e-3
    if workload == "R5":
        gru = nn.GRU(64, 64, batch_first=True, bidirectional=True)
        embedding = nn.Embedding(10_000, 64, padding_idx=0)
        return PackedRNN(gru, 1, embedding), nn.BCEWithLogitsLoss(), "sigmoid", 1e-3
    raise ValueError(f"unknown workload {workload!r}")
