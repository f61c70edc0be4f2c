"""`reward` group: what the learner is rewarded with — the env's own reward, or that plus a language-model
similarity bonus (pipeline/algos/text_reward.py; conf/reward/lm_similarity.yaml documents each key)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.check import one_of, require

REWARDS = ("env", "lm_similarity")


@dataclass
class RewardConfig:
    """What the learner is rewarded with: the env's own reward, or that plus a language-model bonus."""

    name: str = "env"
    goal: str = ""
    weight: float = 1.0
    threshold: float = 0.0
    once_per_episode: bool = True
    encoder: str = "packaged:all-minilm-l6-v2"


def check_reward(r: RewardConfig) -> None:
    one_of(r.name, REWARDS, "reward")
    if r.name == "lm_similarity":
        require(bool(r.goal.strip()), "reward.goal", repr(r.goal), "describe the goal in words, e.g. reward.goal='...'")
        require(r.weight > 0, "reward.weight", r.weight, "must be > 0")
        require(-1.0 <= r.threshold < 1.0, "reward.threshold", r.threshold, "a cosine similarity: must be in [-1, 1)")
