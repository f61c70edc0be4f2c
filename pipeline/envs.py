"""gymnasium vector environments and the wrappers that turn them into what a backbone sees."""

from __future__ import annotations

import os
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from pipeline.config import EnvConfig
from pipeline.errors import ConfigError

# Frames are rendered off-screen: no display, and no SDL complaint about one on a headless machine.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


@dataclass(frozen=True)
class EnvSpec:
    """What the networks and the replay buffer need to know about an environment."""

    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    n_actions: int
    is_image: bool
    solved_return: float | None


def _make_single(cfg: EnvConfig, render: bool = False) -> gym.Env:
    kwargs: dict = {}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    pixels = cfg.obs_mode == "pixels"
    if pixels or render:
        kwargs["render_mode"] = "rgb_array"
    try:
        env = gym.make(cfg.id, **kwargs)
    except gym.error.Error as ex:
        raise ConfigError(f"env.id={cfg.id}: not a registered gymnasium environment ({ex})") from None
    if pixels:
        env = gym.wrappers.AddRenderObservation(env, render_only=True)
        env = gym.wrappers.GrayscaleObservation(env, keep_dim=False)
        env = gym.wrappers.ResizeObservation(env, (cfg.frame_size, cfg.frame_size))
        env = gym.wrappers.FrameStackObservation(env, cfg.frame_stack)
    return env


def make_vector_env(cfg: EnvConfig, num_envs: int) -> gym.vector.VectorEnv:
    """Synchronous vector env whose finished sub-envs reset in the same step (final obs in info)."""
    return gym.vector.SyncVectorEnv(
        [lambda: _make_single(cfg) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def probe_env(cfg: EnvConfig) -> EnvSpec:
    """Build one env to read its spaces; refuses what DQN cannot act in."""
    env = _make_single(cfg)
    try:
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(act_space, gym.spaces.Discrete):
            raise ConfigError(
                f"env.id={cfg.id}: DQN needs discrete actions, this env has {type(act_space).__name__}; "
                "choose a discrete-action env such as env=cartpole"
            )
        if not isinstance(obs_space, gym.spaces.Box):
            raise ConfigError(f"env.id={cfg.id}: observations must be arrays (Box), got {obs_space}")
        solved = cfg.solved_return
        if solved is None and env.spec is not None:
            solved = env.spec.reward_threshold
        return EnvSpec(
            obs_shape=tuple(obs_space.shape),
            obs_dtype=np.dtype(obs_space.dtype),
            n_actions=int(act_space.n),
            is_image=cfg.obs_mode == "pixels",
            solved_return=solved,
        )
    finally:
        env.close()
