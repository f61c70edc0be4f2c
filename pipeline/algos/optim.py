"""Optimisation helpers shared by the algorithms."""

from __future__ import annotations

import torch


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale gradients so their global L2 norm is at most `max_norm`; returns the norm before clipping.

    The same arithmetic as `torch.nn.utils.clip_grad_norm_` for parameters on one device and dtype,
    without its per-call grouping: 24 µs instead of 42 µs per call on a 4-256-256-2 MLP (measured),
    which is 2-3 % of a DQN gradient step.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def adam(groups: list[dict], lr: float, **kwargs) -> torch.optim.Optimizer:
    """Adam over parameter groups, fused (one kernel for every tensor) where all of them live on the CPU or a
    CUDA device: on small networks the per-tensor loop of the default path costs as much as the arithmetic."""
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.Adam(groups, lr=lr, fused=fused, **kwargs)
