"""A contextual bandit over scikit-learn's bundled handwritten digits: see an image, name the digit,
reward 1 if right. Each episode is one image, so the evaluation return is the classification
accuracy. It is the smallest honest case of RL fine-tuning of a pretrained vision model with task
reward (Pinto et al., ICML 2023), and it needs no download.

Training episodes draw images from the first 80 % of the data; evaluation envs (`evaluation=True`)
use the held-out 20 %, image `seed mod n` for an env reset with `seed`, so evaluations are fixed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import gymnasium as gym
import numpy as np

from pipeline.config.env import EnvConfig

TRAIN_FRACTION = 0.8


@lru_cache(maxsize=4)
def _images(frame_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All digits as uint8 RGB [N, 3, frame_size, frame_size] (nearest upscaling), and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    gray = np.clip(data.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # [N, 8, 8], values 0..16
    idx = (np.arange(frame_size) * gray.shape[1]) // frame_size
    big = gray[:, idx][:, :, idx]
    rgb = np.repeat(big[:, None], 3, axis=1)
    return np.ascontiguousarray(rgb), data.target.astype(np.int64)


class DigitsBandit(gym.Env):
    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"]}

    def __init__(self, frame_size: int, evaluation: bool):
        images, labels = _images(frame_size)
        split = int(len(images) * TRAIN_FRACTION)
        part = slice(split, None) if evaluation else slice(0, split)
        self.images, self.labels = images[part], labels[part]
        self.evaluation = evaluation
        self.observation_space = gym.spaces.Box(0, 255, shape=self.images.shape[1:], dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(10)
        self.render_mode = "rgb_array"
        self.index = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self.evaluation and seed is not None:
            self.index = seed % len(self.images)
        else:
            self.index = int(self.np_random.integers(len(self.images)))
        return self.images[self.index], {"label": int(self.labels[self.index])}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        label = int(self.labels[self.index])
        reward = float(int(action) == label)
        return self.images[self.index], reward, True, False, {"label": label}

    def render(self) -> np.ndarray:
        return self.images[self.index].transpose(1, 2, 0)


def make(cfg: EnvConfig, evaluation: bool = False, render: bool = False) -> gym.Env:
    return DigitsBandit(cfg.frame_size, evaluation)
