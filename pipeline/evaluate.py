"""Deterministic evaluation: the greedy policy on separate env instances with fixed seeds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from pipeline.config import EnvConfig
from pipeline.envs import make_vector_env
from pipeline.networks import QNetwork


class Evaluator:
    """Runs one episode per sub-env, all in lockstep; the same seeds every call, so evaluations compare."""

    def __init__(self, cfg: EnvConfig, episodes: int, seed: int):
        self.env: gym.vector.VectorEnv = make_vector_env(cfg, episodes, evaluation=True)
        self.seeds = [seed + i for i in range(episodes)]

    @torch.no_grad()
    def run(self, policy: QNetwork, device: torch.device) -> np.ndarray:
        was_training = policy.training
        policy.eval()
        obs, _ = self.env.reset(seed=self.seeds)
        n = len(self.seeds)
        returns = np.zeros(n, dtype=np.float64)
        running = np.ones(n, dtype=bool)
        while running.any():
            actions = policy.act(torch.as_tensor(obs, device=device)).cpu().numpy()
            obs, rewards, terminated, truncated, _ = self.env.step(actions)
            returns += rewards * running
            running &= ~(terminated | truncated)
        policy.train(was_training)
        return returns

    def close(self) -> None:
        self.env.close()
