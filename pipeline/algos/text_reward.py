"""A language model as the reward function (`reward=lm_similarity`, ELLM-style: Du et al., 2023).

Each transition is described in words (a text env's own event text, or a describer for a grid world),
embedded by a frozen sentence encoder (the packaged MiniLM by default), and compared with the goal
text: bonus = `weight` · cos(description, goal) when the similarity reaches `threshold`, at most once
per episode with `once_per_episode` (so the agent cannot farm the bonus by standing still). The env's
own reward is kept in `info["raw_reward"]`; the loop logs both returns, and evaluation uses the env's
own reward only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from pipeline.config.backbone import BackboneConfig
from pipeline.config.reward import RewardConfig
from pipeline.core.errors import ConfigError
from pipeline.envs.table import TableEnv


@lru_cache(maxsize=2)
def _sentence_encoder(source: str, cache_dir: str):
    """One frozen encoder per process and source (every sub-env of a run shares it and its cache)."""
    from pipeline.backbones.text import MINILM, EmbeddingCache, apply_freeze, build_text_encoder
    from pipeline.backbones.weights import resolve

    folder = resolve(source, "", Path(cache_dir))
    name = MINILM if source.startswith("packaged:") else str(folder)
    cfg = BackboneConfig(name=name, library="transformers", weights=str(folder), freeze="all")
    encoder = build_text_encoder(cfg, str(folder), Path(cache_dir))
    apply_freeze(encoder, cfg)
    return EmbeddingCache(encoder)


class GoalSimilarity:
    """cos(text, goal) for batches of texts, and the bonus it earns under `weight` and `threshold`."""

    def __init__(self, cfg: RewardConfig, cache_dir: Path):
        self.cfg = cfg
        self.embed = _sentence_encoder(cfg.encoder, str(cache_dir))
        self.goal = torch.nn.functional.normalize(self.embed([cfg.goal]), dim=-1)[0]

    def similarity(self, texts: list[str]) -> np.ndarray:
        vectors = torch.nn.functional.normalize(self.embed(texts), dim=-1)
        return (vectors @ self.goal).numpy().astype(np.float64)

    def bonus(self, similarity: np.ndarray) -> np.ndarray:
        return np.where(similarity >= self.cfg.threshold, self.cfg.weight * similarity, 0.0)


def event_text(obs: Any, info: dict) -> str:
    """What a text env says happened: its event sentence, else the observation itself."""
    return str(info.get("event") or obs)


class LMSimilarityReward(gym.Wrapper):
    """Adds the goal-similarity bonus of each step's description to the env's reward."""

    def __init__(self, env: gym.Env, scorer: GoalSimilarity, describe: Callable[[Any, dict], str] = event_text):
        super().__init__(env)
        self.scorer = scorer
        self.describe = describe
        self.given = False

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self.given = False
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        similarity = self.scorer.similarity([self.describe(obs, info)])
        bonus = float(self.scorer.bonus(similarity)[0])
        if self.scorer.cfg.once_per_episode:
            bonus = 0.0 if self.given else bonus
            self.given = self.given or bonus > 0
        info = {**info, "raw_reward": reward, "lm_similarity": float(similarity[0]), "lm_bonus": bonus}
        return obs, reward + bonus, terminated, truncated, info


def describe_grid_state(env: gym.Env, state: int) -> str:
    """A sentence for a toy-text state, for the grid worlds that have none of their own."""
    u = env.unwrapped
    if hasattr(u, "desc") and hasattr(u, "ncol"):  # FrozenLake and CliffWalking-style maps
        row, col = divmod(int(state), int(u.ncol))
        cell = u.desc[row, col]
        cell = cell.decode() if isinstance(cell, bytes) else str(cell)
        what = {"S": "at the start", "F": "on frozen ice", "H": "in a hole in the ice", "G": "at the goal"}
        return f"You are {what.get(cell, 'on the ground')}, row {row + 1}, column {col + 1}."
    if hasattr(u, "shape") and type(u).__name__.startswith("CliffWalking"):
        rows, cols = u.shape
        row, col = divmod(int(state), cols)
        if row == rows - 1 and col == cols - 1:
            return "You reached the goal at the far end of the cliff."
        if row == rows - 1 and 0 < col < cols - 1:
            return "You fell off the cliff."
        return f"You walk along the cliff, row {row + 1}, column {col + 1}."
    if type(u).__name__ == "TrafficLightEnv":
        return f"The traffic light ahead is {u.state_names[int(state)]}."
    raise ConfigError(
        f"reward=lm_similarity: no describer for {type(u).__name__}; use a text env (env=textworld, "
        "env=traffic_light_text) or a grid world (frozenlake, cliffwalking, traffic_light)"
    )


def state_bonus_table(env: gym.Env, n_states: int, scorer: GoalSimilarity) -> tuple[np.ndarray, np.ndarray]:
    """Similarity and bonus of every state of a toy-text env, computed once: there a transition's
    description is its next state's, so the shaping is a lookup inside the vectorised table env."""
    texts = [describe_grid_state(env, s) for s in range(n_states)]
    similarity = scorer.similarity(texts)
    return similarity, scorer.bonus(similarity)


def shape_table_env(table: TableEnv, cfg: RewardConfig, cache_dir: Path) -> np.ndarray:
    """`reward=lm_similarity` on a grid world: every state is described and scored against the goal once; a
    step of the vectorised table env then earns its next state's bonus. Returns the states' similarities."""
    scorer = GoalSimilarity(cfg, cache_dir)
    similarity, table.state_bonus = state_bonus_table(table.source, len(table.start_cum), scorer)
    table.bonus_once = cfg.once_per_episode
    return similarity
