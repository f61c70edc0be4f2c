"""The seeds' two-state toy: a driver at a traffic light. States red / green, actions stop / go.

Going on green earns +1, stopping on green wastes a turn (-1), going on red is punished (-5),
waiting at red costs nothing. The light flips with probability `switch_prob` after every step, so
the right action depends only on the state: the optimal table is "go on green, stop on red", worth
about +25 over the 50-step episode. Like gymnasium's toy-text envs it publishes its transition table
`P`, so the tabular learner steps many copies at once.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

RED, GREEN = 0, 1
STOP, GO = 0, 1
STATE_NAMES = ("red", "green")
ACTION_NAMES = ("stop", "go")
REWARDS = {(RED, STOP): 0.0, (RED, GO): -5.0, (GREEN, STOP): -1.0, (GREEN, GO): 1.0}


class TrafficLightEnv(gym.Env):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, switch_prob: float = 0.2):
        self.observation_space = gym.spaces.Discrete(2)
        self.action_space = gym.spaces.Discrete(2)
        self.state_names, self.action_names = STATE_NAMES, ACTION_NAMES
        # P[s][a] = [(probability, next state, reward, terminated)], the toy-text convention.
        self.P = {
            s: {
                a: [(1.0 - switch_prob, s, REWARDS[s, a], False), (switch_prob, 1 - s, REWARDS[s, a], False)]
                for a in (STOP, GO)
            }
            for s in (RED, GREEN)
        }
        self.initial_state_distrib = np.array([0.5, 0.5])
        self.switch_prob = switch_prob
        self.s = RED

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.s = int(self.np_random.random() < 0.5)
        return self.s, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        reward = REWARDS[self.s, int(action)]
        if self.np_random.random() < self.switch_prob:
            self.s = 1 - self.s
        return self.s, reward, False, False, {}
