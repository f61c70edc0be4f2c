"""Running mean and variance of a stream (observations, discounted returns), as a module: its statistics are
buffers, so they travel in checkpoints and inside the logged MLflow policy (which then normalises by itself).

gymnasium's NormalizeObservation keeps them in the training env instead, where the evaluation envs and the
logged model never see them: the served policy would get raw observations it was not trained on."""

from __future__ import annotations

import torch
from torch import nn


class RunningNorm(nn.Module):
    """(x - mean) / sqrt(var + eps), clipped to ±clip; `update` merges a batch (Chan et al.'s parallel rule)."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, eps: float = 1e-8, center: bool = True):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip, self.eps, self.center = clip, eps, center

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        x = batch.detach().double().reshape(-1, *self.mean.shape)
        n = x.shape[0]
        if n == 0:
            return
        b_mean, b_var = x.mean(dim=0), x.var(dim=0, unbiased=False)
        total = self.count + n
        delta = b_mean - self.mean
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + b_var * n + delta.pow(2) * self.count * n / total) / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = (self.var + self.eps).sqrt().to(x.dtype if x.is_floating_point() else torch.float32)
        centred = x - self.mean.to(scale.dtype) if self.center else x
        return (centred / scale).clamp(-self.clip, self.clip)
