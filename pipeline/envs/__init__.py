"""gymnasium environments, built from the `env` config group, vectorised.

One module per family (`classic`, `atari`, `minatar`, `digits`, `textworld`, and `text` for our own text
toys); each exposes `make(cfg, evaluation)` returning a single gymnasium env whose image observations are
uint8 `[channels, height, width]` (for frame stacks, `[frame_stack, height, width]` grayscale), so every
backbone and the replay buffer see one layout. Text envs observe strings and act by choosing from a
variable list of commands (`envs/text.py`); `TextVectorEnv` steps them together.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from pipeline.config.env import EnvConfig
from pipeline.core.errors import CannotRender, ConfigError
from pipeline.core.spec import EnvSpec
from pipeline.envs.text import TextVectorEnv

# Frames are rendered off-screen: no display, and no SDL complaint about one on a headless machine.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

TRAFFIC_LIGHT_ID = "pipeline/TrafficLight-v0"
if TRAFFIC_LIGHT_ID not in gym.registry:
    gym.register(TRAFFIC_LIGHT_ID, "pipeline.envs.traffic_light:TrafficLightEnv", max_episode_steps=50)
TRAFFIC_LIGHT_TEXT_ID = "pipeline/TrafficLightText-v0"
if TRAFFIC_LIGHT_TEXT_ID not in gym.registry:
    gym.register(TRAFFIC_LIGHT_TEXT_ID, "pipeline.envs.text_traffic_light:TrafficLightTextEnv", max_episode_steps=50)
TEXT_KINDS = ("text", "textworld")


def _builder(kind: str) -> Callable[[EnvConfig, bool, bool], gym.Env]:
    if kind == "gym":
        from pipeline.envs.classic import make
    elif kind == "atari":
        from pipeline.envs.atari import make
    elif kind == "minatar":
        from pipeline.envs.minatar import make
    elif kind == "digits":
        from pipeline.envs.digits import make
    elif kind == "text":
        from pipeline.envs.text import make
    elif kind == "textworld":
        from pipeline.envs.textworld import make
    else:
        raise ConfigError(f"env.kind={kind}: use one of gym, atari, minatar, digits, text, textworld")
    return make


def make_env(cfg: EnvConfig, evaluation: bool = False, render: bool = False) -> gym.Env:
    """One env. `evaluation=True` gives the held-out variant where a family has one (digits); `render=True`
    one whose `render()` returns the raw RGB frame (videos), refused with `CannotRender` if it draws none."""
    return _builder(cfg.kind)(cfg, evaluation, render)


def frame_rate(env: gym.Env, cfg: EnvConfig) -> float:
    """Frames per second that play a recorded episode at the game's speed: one frame per agent step, and an
    Atari agent steps every `frame_skip` emulator frames."""
    fps = float(env.metadata.get("render_fps") or 30)
    return max(1.0, fps / cfg.frame_skip) if cfg.kind == "atari" else fps


def check_renders(cfg: EnvConfig, fix: str) -> None:
    """Refuse, before any run exists, a video from an env that draws no frames (text envs write transcripts)."""
    if cfg.kind in TEXT_KINDS:
        return
    try:
        env = make_env(cfg, evaluation=True, render=True)
    except CannotRender as ex:
        raise CannotRender(f"{ex}; {fix}") from None
    env.close()


def make_vector_env(
    cfg: EnvConfig, num_envs: int, evaluation: bool = False, wrap: Callable[[gym.Env], gym.Env] | None = None
) -> gym.vector.VectorEnv | TextVectorEnv:
    """Synchronous vector env whose finished sub-envs reset in the same step (final obs in info).
    `wrap` is applied to each sub-env (e.g. a reward-shaping wrapper)."""
    build = _builder(cfg.kind)

    def one() -> gym.Env:
        env = build(cfg, evaluation, False)
        return wrap(env) if wrap is not None else env

    if cfg.kind in TEXT_KINDS:
        return TextVectorEnv([one] * num_envs)
    return gym.vector.SyncVectorEnv(
        [one] * num_envs,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def probe_env(cfg: EnvConfig) -> EnvSpec:
    """Build one env to read its spaces; refuses what no algorithm here can act in."""
    env = make_env(cfg)
    try:
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(act_space, gym.spaces.Discrete):
            raise ConfigError(
                f"env.id={cfg.id}: every algorithm here needs discrete actions, this env has "
                f"{type(act_space).__name__}; choose a discrete-action env such as env=cartpole"
            )
        solved = cfg.solved_return
        if solved is None and env.spec is not None:
            solved = env.spec.reward_threshold
        if cfg.kind in TEXT_KINDS:
            return EnvSpec((), np.dtype(object), int(act_space.n), False, solved, is_text=True)
        if isinstance(obs_space, gym.spaces.Discrete):
            return EnvSpec((), np.dtype(np.int64), int(act_space.n), False, solved, n_states=int(obs_space.n))
        if not isinstance(obs_space, gym.spaces.Box):
            raise ConfigError(f"env.id={cfg.id}: observations must be arrays (Box) or Discrete, got {obs_space}")
        is_image = len(obs_space.shape) == 3 and obs_space.dtype == np.uint8
        stacked = is_image and cfg.obs_mode == "pixels" and cfg.kind in ("gym", "atari") and cfg.frame_stack > 1
        return EnvSpec(
            obs_shape=tuple(obs_space.shape),
            obs_dtype=np.dtype(obs_space.dtype),
            n_actions=int(act_space.n),
            is_image=is_image,
            solved_return=solved,
            frame_stack=cfg.frame_stack if stacked else 1,
        )
    finally:
        env.close()
