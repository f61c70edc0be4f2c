"""gymnasium's registered environments (classic control, Box2D, MuJoCo and anything else by id), as state
vectors or as rendered grayscale frame stacks. MuJoCo envs render their frames at frame_size directly (not
at 480x480, then shrunk) and at `env.render_quality`; envs whose own observations are pictures (CarRacing's
96x96 RGB view, `EnvConfig.pixels_only`) have those pictures grayscaled, resized and stacked instead."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from pipeline.config.env import EnvConfig
from pipeline.core.errors import CannotRender, ConfigError
from pipeline.envs.mujoco_gl import gl_errors, tune_gymnasium_renderer

# gymnasium's GrayscaleObservation weights, applied in float32: the same frames (equal on CartPole's
# renders, tested), ~10x faster than its float64 multiply-and-sum (6.7 -> 0.7 ms per 600x400 frame).
LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


def grayscale(env: gym.Env) -> gym.Env:
    h, w = env.observation_space.shape[:2]
    space = gym.spaces.Box(0, 255, (h, w), dtype=np.uint8)
    return gym.wrappers.TransformObservation(env, lambda obs: (obs @ LUMA).astype(np.uint8), space)


def _check_renders(cfg: EnvConfig, pixels: bool) -> None:
    """gymnasium passes `render_mode` to the env's constructor, which fails obscurely when the env draws
    nothing (our traffic light): refuse by its declared render modes first."""
    try:
        creator = gym.envs.registration.load_env_creator(gym.spec(cfg.id).entry_point)
    except (gym.error.Error, ImportError, AttributeError):
        return  # an unknown id: gym.make below says so
    modes = list(getattr(creator, "metadata", {}).get("render_modes", ["rgb_array"]))
    if "rgb_array" not in modes:
        fix = "; observe its state instead (env.obs_mode=state)" if pixels else ""
        raise CannotRender(
            f"env.id={cfg.id} cannot render frames (its render modes: {', '.join(modes) or 'none'}){fix}"
        )


def _is_mujoco(env_id: str) -> bool:
    """gymnasium's own MuJoCo envs (HalfCheetah-v5 ...), which take the render size as `width`/`height`."""
    try:
        entry = gym.spec(env_id).entry_point
    except gym.error.Error:
        return False
    return isinstance(entry, str) and entry.startswith("gymnasium.envs.mujoco")


def make(cfg: EnvConfig, evaluation: bool = False, render: bool = False) -> gym.Env:
    """`render=True`: `env.render()` returns the raw RGB frame (evaluation videos), whatever the observations;
    a MuJoCo env observed through pixels renders frame_size frames only, so its videos show what it sees."""
    kwargs: dict = {}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    pixels = cfg.obs_mode == "pixels"
    rendered_obs = pixels and not cfg.pixels_only  # observations drawn by env.render()
    if rendered_obs or render:
        _check_renders(cfg, pixels)
        kwargs["render_mode"] = "rgb_array"
        if rendered_obs and _is_mujoco(cfg.id):
            kwargs["width"] = kwargs["height"] = cfg.frame_size
    try:
        with gl_errors(f"env.id={cfg.id}"):
            env = gym.make(cfg.id, **kwargs)
    except gym.error.Error as ex:
        raise ConfigError(f"env.id={cfg.id}: not a registered gymnasium environment ({ex})") from None
    tune_gymnasium_renderer(env, cfg.render_quality)
    if pixels:
        if rendered_obs:
            env = gym.wrappers.AddRenderObservation(env, render_only=True)
        env = grayscale(env)
        env = gym.wrappers.ResizeObservation(env, (cfg.frame_size, cfg.frame_size))
        env = gym.wrappers.FrameStackObservation(env, cfg.frame_stack)
    return env
