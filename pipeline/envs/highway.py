"""Driving through highway-env (`env=highway`, e.g. highway-fast-v0) with continuous steering and throttle.

- state: highway-env's Kinematics observation (the ego vehicle and its 4 nearest neighbours: presence,
  x, y, vx, vy, normalised) flattened into one float32 vector of 25.
- pixels: the top view drawn at frame_size x frame_size, grayscale, stacked `frame_stack` deep as
  `[frame_stack, H, W]` uint8. We draw it with our own highway-env viewer rather than its
  GrayscaleObservation, for three reasons: that viewer draws nothing when SDL_VIDEODRIVER=dummy (set by
  pipeline.envs for headless machines: every frame is zeros, even with `offscreen_rendering`); it is
  rebuilt at every reset, so no fix made after a reset reaches the reset's frame; and its frames are
  [stack, W, H] (transposed).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from pipeline.config.env import EnvConfig
from pipeline.core.errors import ConfigError
from pipeline.envs.classic import LUMA

# Pixels per metre in the observation: an 84-pixel frame shows 48 m of road around the ego car (3 lanes
# of 4 m fit easily); highway-env's own 5.5 suits its 600x150 render window, not a small square.
OBS_SCALING = 1.75


def _viewer(env: gym.Env, config: dict):
    """A highway-env viewer that draws off-screen even under SDL's dummy video driver."""
    from highway_env.envs.common.graphics import EnvViewer

    viewer = EnvViewer(env, config={**env.config, **config, "offscreen_rendering": True})
    viewer.enabled = True  # EnvViewer disables drawing when SDL_VIDEODRIVER=dummy, which we need headless
    return viewer


class TopView(gym.ObservationWrapper):
    """Observe the road as a grayscale [H, W] uint8 picture centred ahead of the ego vehicle."""

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        base = env.unwrapped
        self._viewer = _viewer(base, {"screen_width": size, "screen_height": size, "scaling": OBS_SCALING})
        self.observation_space = gym.spaces.Box(0, 255, (size, size), dtype=np.uint8)

    def observation(self, observation) -> np.ndarray:
        self._viewer.display()
        return (self._viewer.get_image() @ LUMA).astype(np.uint8)  # get_image: H x W x 3


class DrawnRender(gym.Wrapper):
    """`render()` gives highway-env's RGB window (600x150 for highway-fast), drawn headless."""

    def render(self) -> np.ndarray:
        base = self.env.unwrapped
        if base.viewer is None:
            base.viewer = _viewer(base, {})
        base.viewer.enabled = True
        return self.env.render()


def make(cfg: EnvConfig, evaluation: bool = False, render: bool = False) -> gym.Env:
    """`max_episode_steps` null: highway-env's own `duration` (30 decisions for highway-fast-v0)."""
    try:
        import highway_env
    except ImportError:
        raise ConfigError(f"env.id={cfg.id}: needs highway-env; pip install highway-env") from None
    gym.register_envs(highway_env)
    config = {
        "action": {"type": "ContinuousAction"},
        "observation": {"type": "Kinematics"},
        "offscreen_rendering": True,
    }
    kwargs: dict = {"config": config}
    if render:
        kwargs["render_mode"] = "rgb_array"
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    if cfg.id not in highway_env_ids():
        raise ConfigError(f"env.id={cfg.id}: not a highway-env id; use one of {', '.join(highway_env_ids())}")
    env: gym.Env = gym.make(cfg.id, **kwargs)
    if render:
        env = DrawnRender(env)
    if cfg.obs_mode == "pixels":
        env = gym.wrappers.FrameStackObservation(TopView(env, cfg.frame_size), cfg.frame_stack)
    else:
        env = gym.wrappers.FlattenObservation(env)
    return env


def highway_env_ids() -> list[str]:
    """The ids highway-env registers (highway-v0, highway-fast-v0, merge-v0, roundabout-v0 ...)."""
    return sorted(
        env_id
        for env_id, spec in gym.registry.items()
        if isinstance(spec.entry_point, str) and spec.entry_point.startswith("highway_env")
    )
