"""Atari 2600 games through ale-py (its wheel ships the ROMs: no download), preprocessed by
gymnasium's own wrappers as in the DQN literature: no-op starts, frame skip with max-pooling,
84x84 grayscale, a stack of 4. Reward clipping is the learner's job (`env.clip_rewards`), so the
returns we report are the game's own. Games that wait for FIRE to serve (Breakout) get it pressed at
reset and after a lost life (`env.fire_reset`), or a greedy policy that never fires stalls an
episode until its time limit."""

from __future__ import annotations

import gymnasium as gym

from pipeline.config.env import EnvConfig
from pipeline.core.errors import ConfigError


class FireOnStart(gym.Wrapper):
    """Press FIRE after reset and after each lost life; rewards and episode ends of that step count."""

    FIRE = 1

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(self.FIRE)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        self.lives = info.get("lives", 0)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = info.get("lives", 0)
        if lives < self.lives and not (terminated or truncated):
            obs, fire_reward, terminated, truncated, info = self.env.step(self.FIRE)
            reward += fire_reward
        self.lives = info.get("lives", 0)
        return obs, reward, terminated, truncated, info


def make(cfg: EnvConfig, evaluation: bool = False, render: bool = False) -> gym.Env:
    try:
        import ale_py
    except ImportError:
        raise ConfigError(f"env.id={cfg.id}: needs ale-py; pip install ale-py") from None
    gym.register_envs(ale_py)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner per env
    kwargs: dict = {"frameskip": 1, "repeat_action_probability": cfg.sticky_actions}
    if render:  # `env.render()` gives the full-colour 210x160 screen; observations are unchanged
        kwargs["render_mode"] = "rgb_array"
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps * cfg.frame_skip  # the base env counts frames
    try:
        env = gym.make(cfg.id, **kwargs)
    except gym.error.Error as ex:
        raise ConfigError(f"env.id={cfg.id}: not an ale-py game ({ex}); e.g. ALE/Breakout-v5") from None
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=cfg.noop_max,
        frame_skip=cfg.frame_skip,
        screen_size=cfg.frame_size,
        grayscale_obs=True,
    )
    if cfg.fire_reset and "FIRE" in env.unwrapped.get_action_meanings():
        env = FireOnStart(env)
    return gym.wrappers.FrameStackObservation(env, cfg.frame_stack)
