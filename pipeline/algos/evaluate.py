"""Deterministic evaluation: the greedy policy on separate env instances with fixed seeds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from pipeline.config.env import EnvConfig
from pipeline.envs import make_vector_env
from pipeline.envs.text import TextVectorEnv
from pipeline.networks.q import QNetwork


class Evaluator:
    """Runs one episode per sub-env, all in lockstep; the same seeds every call, so evaluations compare.
    Text envs: the policy picks from each state's admissible commands, and `success` records which
    episodes were won."""

    def __init__(self, cfg: EnvConfig, episodes: int, seed: int, evaluation: bool = True):
        self.env: gym.vector.VectorEnv | TextVectorEnv = make_vector_env(cfg, episodes, evaluation=evaluation)
        self.seeds = [seed + i for i in range(episodes)]
        self.success: np.ndarray | None = None

    @torch.no_grad()
    def run(self, policy: QNetwork, device: torch.device) -> np.ndarray:
        was_training = policy.training
        policy.eval()
        obs, _ = self.env.reset(seed=self.seeds)
        n = len(self.seeds)
        returns = np.zeros(n, dtype=np.float64)
        running = np.ones(n, dtype=bool)
        text = isinstance(self.env, TextVectorEnv)
        success = np.zeros(n, dtype=bool)
        while running.any():
            if text:
                actions = policy.act_text(obs, self.env.admissible)
            else:
                actions = policy.act(torch.as_tensor(obs, device=device)).cpu().numpy()
            obs, rewards, terminated, truncated, info = self.env.step(actions)
            returns += rewards * running
            done = terminated | truncated
            if text:
                success |= running & done & info["won"]
            running &= ~done
        self.success = success if text and self.env.reports_wins else None
        policy.train(was_training)
        return returns

    def close(self) -> None:
        self.env.close()
