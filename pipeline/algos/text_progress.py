"""What every learner on a text game reports beyond returns: how often it wins, when it first won, and how
well its embedding cache serves it. Shared by the DRRN (DQN) and the text actor-critic (PPO/REINFORCE)."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from pipeline.backbones.text import EmbeddingCache


class TextProgress:
    """Won episodes (the last 100) and the env step of the first win, which a checkpoint keeps."""

    def __init__(self) -> None:
        self.won: deque[bool] = deque(maxlen=100)
        self.first_success_step: int | None = None  # env steps to the first won episode (sparse-reward exploration)
        self._first_logged = False

    def note(self, info: dict[str, Any], done: np.ndarray, step_after: int) -> None:
        """Count the episodes that ended in this vector step; `step_after`: the env-step clock after it."""
        for i in np.flatnonzero(done):
            won = bool(info["won"][i])
            self.won.append(won)
            if won and self.first_success_step is None:
                self.first_success_step = step_after

    def metrics(self, cache: EmbeddingCache | None) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.won:
            out["train/success_rate"] = float(np.mean(self.won))
        if self.first_success_step is not None and not self._first_logged:
            out["train/first_success_step"] = float(self.first_success_step)  # logged once, when it happened
            self._first_logged = True
        if cache is not None:
            out["perf/embed_cache_hit_rate"] = cache.hit_rate
            out["perf/embed_cache_texts"] = float(len(cache))
        return out

    def state(self) -> dict[str, Any]:
        return {"first_success_step": self.first_success_step}

    def load(self, state: dict[str, Any]) -> None:
        self.first_success_step = state.get("first_success_step")
        self._first_logged = self.first_success_step is not None
