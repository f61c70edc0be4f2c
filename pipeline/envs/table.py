"""Many copies of a toy-text env stepped at once from its transition table.

gymnasium's toy-text envs (FrozenLake, Taxi, CliffWalking) and our traffic light publish `P[s][a] =
[(probability, next state, reward, terminated), ...]` and an initial-state distribution. `TableEnv`
turns them into arrays and steps N copies with a few numpy operations per step, instead of N Python
`env.step` calls behind wrappers: the same dynamics (a test compares them with gymnasium's own
stepping), at a fraction of the cost. It keeps the vector-env contract the loop uses: same-step
autoreset and the true next states of finished copies in `info["final_obs"]`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from pipeline.config.env import EnvConfig


def has_table(env: gym.Env) -> bool:
    u = env.unwrapped
    discrete = isinstance(u.observation_space, gym.spaces.Discrete)
    return discrete and hasattr(u, "P") and hasattr(u, "initial_state_distrib")


class TableEnv:
    def __init__(self, env: gym.Env, num_envs: int, max_episode_steps: int | None):
        u = env.unwrapped
        n_states, n_actions = int(u.observation_space.n), int(u.action_space.n)
        width = max(len(u.P[s][a]) for s in range(n_states) for a in range(n_actions))
        shape = (n_states, n_actions, width)
        self.cum_probs = np.ones(shape)
        self.next_state = np.zeros(shape, dtype=np.int64)
        self.reward = np.zeros(shape)
        self.terminated = np.zeros(shape, dtype=bool)
        for s in range(n_states):
            for a in range(n_actions):
                outcomes = u.P[s][a]
                probs = np.cumsum([o[0] for o in outcomes])
                self.cum_probs[s, a, : len(outcomes)] = probs / probs[-1]
                for k, (_, s2, r, done) in enumerate(outcomes):
                    self.next_state[s, a, k], self.reward[s, a, k], self.terminated[s, a, k] = s2, r, done
        self.start_cum = np.cumsum(u.initial_state_distrib) / np.sum(u.initial_state_distrib)
        self.num_envs = num_envs
        self.max_steps = max_episode_steps
        self.width = width
        self.state = np.zeros(num_envs, dtype=np.int64)
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self.rng = np.random.default_rng()
        self.state_bonus: np.ndarray | None = None  # reward shaping by next state (algos/text_reward.py)
        self.bonus_once = False
        self.given = np.zeros(num_envs, dtype=bool)
        self.source = env  # the env the table was read from (describers read its layout)

    def _starts(self, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.start_cum, self.rng.random(n), side="right"), len(self.start_cum) - 1)

    def reset(self, seed: int | list[int] | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.state = self._starts(self.num_envs)
        self.steps[:] = 0
        self.given[:] = False
        return self.state.copy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        s, a = self.state, np.asarray(actions)
        if self.width == 1:
            k = np.zeros(self.num_envs, dtype=np.int64)
        else:  # which outcome: the first whose cumulative probability exceeds a uniform draw
            k = (self.rng.random((self.num_envs, 1)) >= self.cum_probs[s, a]).sum(axis=1)
            np.minimum(k, self.width - 1, out=k)
        final = self.next_state[s, a, k]
        rewards = self.reward[s, a, k]
        terminated = self.terminated[s, a, k]
        self.steps += 1
        truncated = ~terminated & (self.steps >= self.max_steps) if self.max_steps else np.zeros_like(terminated)
        done = terminated | truncated
        obs = final.copy()
        if done.any():
            idx = np.flatnonzero(done)
            obs[idx] = self._starts(idx.size)
            self.steps[idx] = 0
        self.state = obs
        info = {"final_obs": final}
        if self.state_bonus is not None:
            bonus = self.state_bonus[final]
            if self.bonus_once:
                bonus = np.where(self.given, 0.0, bonus)
                self.given = (self.given | (bonus > 0)) & ~done
            info["raw_reward"] = rewards
            rewards = rewards + bonus
        return obs, rewards, terminated, truncated, info

    def close(self) -> None:
        pass


def make_table_env(cfg: EnvConfig, num_envs: int) -> TableEnv | None:
    """A TableEnv for `cfg` when the env publishes its table, else None (the caller falls back)."""
    from pipeline.envs import make_env

    env = make_env(cfg)
    try:
        if not has_table(env):
            return None
        limit = cfg.max_episode_steps or (env.spec.max_episode_steps if env.spec else None)
        return TableEnv(env, num_envs, limit)
    finally:
        env.close()
