"""Our own small backbones, trained from scratch or from a weights file: MLP, Nature CNN, small CNN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden_sizes: list[int], flatten: bool = False, activation: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()] if flatten else []
        for size in hidden_sizes:
            layers += [nn.Linear(in_dim, size), ACTIVATIONS[activation]()]
            in_dim = size
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim
        self._flatten = flatten
        self._act = {"relu": torch.relu, "tanh": torch.tanh}[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The layers' functions called directly: on a small MLP the nn.Module call machinery (~4 µs per
        # layer) costs as much as the arithmetic. Same parameters, same state_dict keys as self.net(x).
        if self._flatten:
            x = x.flatten(1)
        layers = self.net
        for i in range(int(self._flatten), len(layers), 2):
            linear = layers[i]
            x = self._act(F.linear(x, linear.weight, linear.bias))
        return x


class _ConvTorso(nn.Module):
    """Convs, flatten, one linear layer sized from the actual input (so any frame size works)."""

    def __init__(self, convs: nn.Sequential, in_shape: tuple[int, ...], features_dim: int):
        super().__init__()
        self.convs = convs
        with torch.no_grad():
            n_flat = self.convs(torch.zeros(1, *in_shape)).shape[1]
        self.fc = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())
        self.out_dim = features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x))


class NatureCNN(_ConvTorso):
    """The convolutional torso of Mnih et al. (2015), for 84x84 frame stacks."""

    def __init__(self, in_shape: tuple[int, ...], features_dim: int):
        convs = nn.Sequential(
            nn.Conv2d(in_shape[0], 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        super().__init__(convs, in_shape, features_dim)


class SmallCNN(_ConvTorso):
    """3x3 stride-1 convs for small grids and images (MinAtar's network: one conv of 16, then 128)."""

    def __init__(self, in_shape: tuple[int, ...], channels: list[int], features_dim: int):
        layers: list[nn.Module] = []
        c_in = in_shape[0]
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=1), nn.ReLU()]
            c_in = c_out
        layers.append(nn.Flatten())
        super().__init__(nn.Sequential(*layers), in_shape, features_dim)
