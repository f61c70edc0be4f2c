"""The env → backbone → algorithm contract: what networks and buffers need to know about an environment.

A leaf (no imports from the rest of the package): envs build it, backbones and algorithms read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """What the networks and the replay buffer need to know about an environment."""

    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    n_actions: int  # discrete: how many actions; continuous: the action vector's length
    is_image: bool  # uint8 [C, H, W]: scaled by 1/255 and normalised by the backbone's statistics
    solved_return: float | None
    frame_stack: int = 1  # >1: obs[0:k] are k consecutive frames, stored once each in the replay buffer
    n_states: int | None = None  # a Discrete observation space (toy-text grid worlds): its size
    is_text: bool = False  # strings in, an index into the admissible commands out (envs/text.py)
    continuous: bool = False  # a Box action space: actions are float vectors within [action_low, action_high]
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()

    @property
    def action_kind(self) -> str:
        """How refusals name the action space: 'continuous' or 'discrete'."""
        return "continuous" if self.continuous else "discrete"
