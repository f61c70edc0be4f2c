"""gymnasium environments, built from the `env` config group, vectorised.

One module per family (`classic`, `atari`, `minatar`, `digits`, `dmc`, `highway`, `robotics`, `textworld`,
and `text` for our own text toys); each exposes `make(cfg, evaluation)` returning a single gymnasium env whose
image observations are uint8 `[channels, height, width]` (for frame stacks, `[frame_stack, height, width]`
grayscale), so every backbone and the replay buffer see one layout. Text envs observe strings and act by
choosing from a variable list of commands (`envs/text.py`); `TextVectorEnv` steps them together.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from pipeline.config.env import ENV_KINDS, EnvConfig
from pipeline.core.errors import CannotRender, ConfigError
from pipeline.core.spec import EnvSpec
from pipeline.envs.text import TextVectorEnv

# Frames are rendered off-screen: no display, and no SDL complaint about one on a headless machine.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
# MuJoCo (gymnasium's MuJoCo envs, dm_control, Fetch) renders headless through EGL; both libraries read the
# choice once, when first imported, so it is made here, before any family module imports them.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

TRAFFIC_LIGHT_ID = "pipeline/TrafficLight-v0"
if TRAFFIC_LIGHT_ID not in gym.registry:
    gym.register(TRAFFIC_LIGHT_ID, "pipeline.envs.traffic_light:TrafficLightEnv", max_episode_steps=50)
TRAFFIC_LIGHT_TEXT_ID = "pipeline/TrafficLightText-v0"
if TRAFFIC_LIGHT_TEXT_ID not in gym.registry:
    gym.register(TRAFFIC_LIGHT_TEXT_ID, "pipeline.envs.text_traffic_light:TrafficLightTextEnv", max_episode_steps=50)
TEXT_KINDS = ("text", "textworld")
# Families whose pixel observations are [frame_stack, H, W] grayscale stacks (stored once per frame in the buffer).
STACKED_KINDS = ("gym", "atari", "dmc", "highway")


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
    elif kind == "dmc":
        from pipeline.envs.dmc import make
    elif kind == "highway":
        from pipeline.envs.highway import make
    elif kind == "robotics":
        from pipeline.envs.robotics import make
    else:
        raise ConfigError(f"env.kind={kind}: use one of {', '.join(ENV_KINDS)}")
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


def _action_spec(cfg: EnvConfig, act_space: gym.Space) -> dict:
    """The EnvSpec fields of an action space: a Discrete count, or a bounded Box vector."""
    if isinstance(act_space, gym.spaces.Discrete):
        return {"n_actions": int(act_space.n)}
    if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
        low, high = np.asarray(act_space.low, np.float64), np.asarray(act_space.high, np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ConfigError(
                f"env.id={cfg.id}: its actions are unbounded ({act_space}); the policies here squash actions into "
                "the env's bounds: wrap it with gymnasium.wrappers.ClipAction and a finite Box, or pick a bounded env"
            )
        return {
            "n_actions": int(act_space.shape[0]),
            "continuous": True,
            "action_low": tuple(float(v) for v in low),
            "action_high": tuple(float(v) for v in high),
        }
    raise ConfigError(
        f"env.id={cfg.id}: actions must be Discrete or a 1-D Box, this env has {act_space}; flatten or "
        "discretise it with a gymnasium wrapper"
    )


def probe_env(cfg: EnvConfig) -> EnvSpec:
    """Build one env to read its spaces; refuses what no algorithm here can act in."""
    env = make_env(cfg)
    try:
        obs_space, act_space = env.observation_space, env.action_space
        actions = _action_spec(cfg, act_space)
        solved = cfg.solved_return
        if solved is None and env.spec is not None:
            solved = env.spec.reward_threshold
        if cfg.kind in TEXT_KINDS:
            return EnvSpec((), np.dtype(object), int(act_space.n), False, solved, is_text=True)
        if isinstance(obs_space, gym.spaces.Discrete):
            n_states = int(obs_space.n)
            return EnvSpec((), np.dtype(np.int64), is_image=False, solved_return=solved, n_states=n_states, **actions)
        if not isinstance(obs_space, gym.spaces.Box):
            raise ConfigError(f"env.id={cfg.id}: observations must be arrays (Box) or Discrete, got {obs_space}")
        is_image = len(obs_space.shape) == 3 and obs_space.dtype == np.uint8
        stacked = is_image and cfg.obs_mode == "pixels" and cfg.kind in STACKED_KINDS and cfg.frame_stack > 1
        return EnvSpec(
            obs_shape=tuple(obs_space.shape),
            obs_dtype=np.dtype(obs_space.dtype),
            is_image=is_image,
            solved_return=solved,
            frame_stack=cfg.frame_stack if stacked else 1,
            **actions,
        )
    finally:
        env.close()
