"""gymnasium's registered environments (classic control and anything else by id), as state vectors
or as rendered grayscale frame stacks."""

from __future__ import annotations

import gymnasium as gym

from pipeline.config import EnvConfig
from pipeline.errors import ConfigError


def make(cfg: EnvConfig, evaluation: bool = False) -> gym.Env:
    kwargs: dict = {}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    pixels = cfg.obs_mode == "pixels"
    if pixels:
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
