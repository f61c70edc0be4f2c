"""MinAtar (Young & Tian, 2019): five Atari games on a 10x10 grid, fast enough for seeds on a laptop.

Observations, by `env.obs_mode`:
  state   the game's channel grid as uint8 [channels, 10, 10] with values 0/255 (scaled to 0/1 by the
          network's preprocessing), for small CNNs;
  pixels  an RGB picture of the grid ([3, frame_size, frame_size], one colour per channel, nearest-
          neighbour upscaling), for backbones pretrained on photographs.
The minimal action set is used; sticky actions and difficulty ramping are MinAtar's defaults.
"""

from __future__ import annotations

import colorsys
from typing import ClassVar

import gymnasium as gym
import numpy as np

from pipeline.config.env import EnvConfig
from pipeline.core.errors import ConfigError

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def _palette(n_channels: int) -> np.ndarray:
    """One distinct, bright colour per channel; black background (row 0)."""
    colours = [(0, 0, 0)] + [colorsys.hsv_to_rgb(i / n_channels, 0.8, 1.0) for i in range(n_channels)]
    return (np.array(colours) * 255).astype(np.uint8)


class MinAtarEnv(gym.Env):
    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"]}

    def __init__(self, game: str, pixels: bool, frame_size: int, sticky_action_prob: float = 0.1):
        from minatar import Environment

        self.game = Environment(game, sticky_action_prob=sticky_action_prob)
        self.actions = self.game.minimal_action_set()
        self.action_space = gym.spaces.Discrete(len(self.actions))
        h, w, c = self.game.state_shape()
        self.pixels = pixels
        self.frame_size = frame_size
        self.palette = _palette(c)
        self.render_mode = "rgb_array"
        shape = (3, frame_size, frame_size) if pixels else (c, h, w)
        self.observation_space = gym.spaces.Box(0, 255, shape=shape, dtype=np.uint8)
        # Nearest-neighbour upscaling: output pixel i shows cell i * cells // frame_size (no cell cut off).
        self._rows = (np.arange(frame_size) * h) // frame_size
        self._cols = (np.arange(frame_size) * w) // frame_size

    def _obs(self) -> np.ndarray:
        state = self.game.state()  # [10, 10, C] bool
        if not self.pixels:
            return np.ascontiguousarray(state.transpose(2, 0, 1), dtype=np.uint8) * np.uint8(255)
        return np.ascontiguousarray(self.render().transpose(2, 0, 1))

    def render(self) -> np.ndarray:
        state = self.game.state()
        # The highest-numbered channel present wins a cell (as MinAtar's own display does).
        index = np.amax(state * np.arange(1, state.shape[2] + 1), axis=2)
        return self.palette[index[self._rows][:, self._cols]]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.game.seed(seed)
        self.game.reset()
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward, done = self.game.act(self.actions[int(action)])
        return self._obs(), float(reward), bool(done), False, {}


def make(cfg: EnvConfig, evaluation: bool = False, render: bool = False) -> gym.Env:
    game = cfg.id.removeprefix("MinAtar/").lower()
    if game not in GAMES:
        raise ConfigError(f"env.id={cfg.id}: not a MinAtar game; use one of {', '.join(GAMES)}")
    try:
        env: gym.Env = MinAtarEnv(game, cfg.obs_mode == "pixels", cfg.frame_size, cfg.sticky_actions)
    except ImportError:
        raise ConfigError(f"env.id={cfg.id}: needs MinAtar; pip install minatar") from None
    limit = cfg.max_episode_steps or 10_000
    return gym.wrappers.TimeLimit(env, max_episode_steps=limit)
