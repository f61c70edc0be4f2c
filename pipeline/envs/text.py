"""Text environments: observations are strings, actions are chosen from a *variable* list of commands.

The contract every text env here keeps (TextWorld, the text traffic light):
- `reset(seed=...) -> (text, info)` and `step(index) -> (text, reward, terminated, truncated, info)`,
  gymnasium's five-tuple;
- `info["admissible"]` is the list of command strings the agent may issue next, and the action is an
  index into it (its size changes from state to state, so the action space is only an upper bound);
- `info["won"]` says, at the end of an episode, whether the goal was reached (success rate).

`TextVectorEnv` steps several of them in lockstep like gymnasium's `SyncVectorEnv` with same-step
autoreset, but keeps observations as a list of strings and exposes the current admissible sets, which
a batched array space cannot hold.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

MAX_TEXT = 8192
TEXT_CHARSET = frozenset(string.printable)
MAX_ACTIONS = 256  # the action space's upper bound; the admissible list is what counts


def text_space() -> gym.spaces.Text:
    return gym.spaces.Text(max_length=MAX_TEXT, min_length=0, charset=TEXT_CHARSET)


class TextVectorEnv:
    """`num_envs` text envs stepped together; finished ones reset in the same step.

    After a step, `info["final_obs"][i]` / `info["final_admissible"][i]` hold the last observation and
    command set of an episode that ended at sub-env i (None elsewhere), `info["won"][i]` whether it was
    won, and `info["raw_reward"]` the env's own reward when a shaping wrapper changed it.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]):
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.admissible: list[list[str]] = [[] for _ in self.envs]
        self.reports_wins = False  # true once an episode ended with a `won` flag: the env has a goal
        self._rewards = np.zeros(self.num_envs)

    def reset(self, seed: Sequence[int] | int | None = None) -> tuple[list[str], dict[str, Any]]:
        seeds: list[int | None]
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        obs = []
        for i, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            text, info = env.reset(seed=s)
            obs.append(text)
            self.admissible[i] = list(info["admissible"])
        return obs, {}

    def step(self, actions: Sequence[int]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        obs: list[str] = []
        rewards = np.zeros(n)
        raw = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        won = np.zeros(n, dtype=bool)
        final_obs: list[str | None] = [None] * n
        final_admissible: list[list[str] | None] = [None] * n
        for i, (env, a) in enumerate(zip(self.envs, actions, strict=True)):
            text, r, term, trunc, info = env.step(int(a))
            rewards[i] = r
            raw[i] = info.get("raw_reward", r)
            terminated[i], truncated[i] = term, trunc
            admissible = list(info["admissible"])
            if term or trunc:
                self.reports_wins = self.reports_wins or "won" in info
                won[i] = bool(info.get("won", False))
                final_obs[i], final_admissible[i] = text, admissible
                text, reset_info = env.reset()
                admissible = list(reset_info["admissible"])
            obs.append(text)
            self.admissible[i] = admissible
        info = {"final_obs": final_obs, "final_admissible": final_admissible, "won": won, "raw_reward": raw}
        return obs, rewards, terminated, truncated, info

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make(cfg: Any, evaluation: bool = False, render: bool = False) -> gym.Env:
    """A registered text toy by id (`pipeline/TrafficLightText-v0`); no env checker: strings are not arrays."""
    from pipeline.core.errors import ConfigError

    kwargs: dict[str, Any] = {}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        return gym.make(cfg.id, disable_env_checker=True, **kwargs)
    except gym.error.Error as ex:
        raise ConfigError(f"env.id={cfg.id}: not a registered text environment ({ex})") from None
