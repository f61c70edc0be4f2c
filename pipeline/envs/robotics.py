"""Manipulation (`env=robotics`): gymnasium-robotics' Fetch arm (FetchReachDense-v4 ...) and Meta-World's
single tasks (`env.id=reach-v3`, the MT1 benchmark: 50 goal positions), observed as state vectors.

- Fetch's goal-conditioned dict observation becomes one float32 vector `[observation, desired_goal]`
  (FetchReach: 10 + 3 = 13). `achieved_goal` is left out because it is already inside `observation` (the
  gripper position for Reach, the object position for Push / Slide / PickAndPlace).
- Meta-World's 39-float vector (hand, object, goal) is kept as float32.
- `info["is_success"]` at an episode's end is what our evaluator reads for a success rate: Fetch sets it,
  Meta-World's `info["success"]` is copied into it.
"""

from __future__ import annotations

import contextlib
import io

import gymnasium as gym
import numpy as np

from pipeline.config.env import EnvConfig
from pipeline.core.errors import ConfigError
from pipeline.envs.mujoco_gl import gl_errors, tune_gymnasium_renderer

METAWORLD_SEED = 0  # fixes the 50 goal positions Meta-World samples per task (resets draw among them)


class GoalVector(gym.ObservationWrapper):
    """A goal dict observation as one float32 vector: `[observation, desired_goal]`."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        spaces = env.observation_space
        n = spaces["observation"].shape[0] + spaces["desired_goal"].shape[0]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n,), dtype=np.float32)

    def observation(self, observation: dict) -> np.ndarray:
        return np.concatenate([observation["observation"], observation["desired_goal"]]).astype(np.float32)


class Float32(gym.ObservationWrapper):
    """Meta-World's float64 vector as float32, with its `success` flag under our `is_success` key."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, env.observation_space.shape, dtype=np.float32)

    def observation(self, observation) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {**info, "is_success": float(info.get("success", 0.0))}


def _metaworld_tasks() -> list[str]:
    try:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    except ImportError:
        return []
    return sorted(ALL_V3_ENVIRONMENTS)


def _make_metaworld(cfg: EnvConfig, kwargs: dict) -> gym.Env:
    import metaworld  # noqa: F401  (registers Meta-World/MT1)

    env = gym.make("Meta-World/MT1", env_name=cfg.id, seed=METAWORLD_SEED, disable_env_checker=True, **kwargs)
    return Float32(env)


def make(cfg: EnvConfig, evaluation: bool = False, render: bool = False) -> gym.Env:
    """`render=True`: `env.render()` gives the arm's RGB frame (480x480), at `env.render_quality`."""
    with contextlib.redirect_stderr(io.StringIO()):  # gymnasium-robotics prints a notice on import
        try:
            import gymnasium_robotics
        except ImportError:
            raise ConfigError(f"env.id={cfg.id}: needs gymnasium-robotics; pip install gymnasium-robotics") from None
    gym.register_envs(gymnasium_robotics)
    kwargs: dict = {"render_mode": "rgb_array"} if render else {}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    with gl_errors(f"env.id={cfg.id}"):
        if cfg.id in _metaworld_tasks():
            env = _make_metaworld(cfg, kwargs)
        elif cfg.id in gym.registry:
            env = gym.make(cfg.id, **kwargs)
        else:
            meta = ", or a Meta-World task such as reach-v3, push-v3" if _metaworld_tasks() else ""
            raise ConfigError(f"env.id={cfg.id}: not a robotics env; use e.g. FetchReachDense-v4{meta}")
        tune_gymnasium_renderer(env, cfg.render_quality)
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = GoalVector(env)
    return env
