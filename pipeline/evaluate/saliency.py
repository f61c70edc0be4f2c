"""Where a pixel policy looks: perturbation saliency (Greydanus et al., 2018), a PNG grid of a few frames.

Each map blurs the observation around one point of a grid and measures how much the policy's outputs
(Q-values or logits) move; bright = the policy's decision depends on what is there. Perturbation rather
than the input gradient: the observation is uint8 (preprocessing lives inside the network) and a policy
loaded back from MLflow is a torch.export graph; blurring needs neither a float input nor the original
module, and it is what the paper behind "is the agent looking at the ball?" used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

GRID = 16  # points per side at which the observation is blurred
BATCH = 64  # perturbed observations per forward pass


def saliency_map(policy: Any, obs: np.ndarray, device: torch.device) -> np.ndarray:
    """[H, W] in [0, 1] for one uint8 [C, H, W] observation."""
    import cv2

    h, w = obs.shape[1:]
    sigma = max(h, w) / GRID
    blurred = np.stack([cv2.GaussianBlur(ch.astype(np.float32), (0, 0), sigma) for ch in obs])
    ys, xs = np.mgrid[0:h, 0:w]
    centres = [(y, x) for y in np.linspace(0, h - 1, GRID) for x in np.linspace(0, w - 1, GRID)]
    with torch.no_grad():
        base = policy(torch.as_tensor(obs[None], device=device)).float()
        scores = []
        for start in range(0, len(centres), BATCH):
            batch = []
            for y, x in centres[start : start + BATCH]:
                mask = np.exp(-((ys - y) ** 2 + (xs - x) ** 2) / (2 * sigma**2)).astype(np.float32)
                batch.append(obs * (1 - mask) + blurred * mask)
            perturbed = torch.as_tensor(np.stack(batch).round().astype(obs.dtype), device=device)
            out = policy(perturbed).float()
            scores.append((0.5 * (out - base).pow(2).sum(dim=-1)).cpu().numpy())
    grid = np.concatenate(scores).reshape(GRID, GRID)
    heat = cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC).clip(min=0)
    return heat / heat.max() if heat.max() > 0 else heat


def _background(obs: np.ndarray) -> np.ndarray:
    """What to draw the map on: an RGB observation as is; a frame stack (or MinAtar's object channels) as the
    brightest value over its channels, in grey: every frame (object) of it visible."""
    if obs.shape[0] == 3:
        return obs.transpose(1, 2, 0)
    return np.repeat(obs.max(axis=0)[:, :, None], 3, axis=2)


def saliency_grid(
    policy: Any, observations: list[np.ndarray], actions: list[int], frames: int, path: Path, device: torch.device
) -> Path:
    """`frames` observations evenly spaced over the episode, each with its map; written as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = np.unique(np.linspace(0, len(observations) - 1, min(frames, len(observations))).round().astype(int))
    cols = min(4, len(picks))
    rows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, t in zip(axes.ravel(), picks, strict=False):
        obs = observations[t]
        ax.imshow(_background(obs), interpolation="nearest")
        ax.imshow(saliency_map(policy, obs, device), cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
        ax.set_title(f"step {t + 1}, action {actions[t]}", fontsize=9)
    fig.suptitle("perturbation saliency: where blurring changes the policy's outputs", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
