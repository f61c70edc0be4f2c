"""The seeds' traffic light in words: the state is a sentence, the actions are sentences.

The dynamics and rewards are `TrafficLightEnv`'s (go on green +1, stop on green -1, go on red -5, wait at
red 0; the light flips with probability 0.2). Each step the state is said in one of several phrasings and
the two commands come in a random order and wording, so a policy must read both the state and the
commands: a fixed action index means nothing here. `info["event"]` says in words what the last step did
(the text a language-model reward compares with its goal).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym

from pipeline.envs.text import MAX_ACTIONS, text_space
from pipeline.envs.traffic_light import GO, GREEN, RED, STOP, TrafficLightEnv

STATE_TEXT = {
    RED: (
        "The traffic light ahead is red.",
        "You wait at a crossing and the signal shows red.",
        "A red light glows above the junction.",
    ),
    GREEN: (
        "The traffic light ahead is green.",
        "You wait at a crossing and the signal shows green.",
        "A green light glows above the junction.",
    ),
}
ACTION_TEXT = {
    STOP: ("stop at the line", "wait for the light", "hold the brake"),
    GO: ("drive through the junction", "go ahead", "accelerate across"),
}
EVENT_TEXT = {
    (RED, STOP): "You waited at the red light.",
    (RED, GO): "You drove through a red light and nearly hit a car.",
    (GREEN, STOP): "You stopped at a green light and the cars behind you honked.",
    (GREEN, GO): "You drove through the junction on a green light.",
}


class TrafficLightTextEnv(gym.Env):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, switch_prob: float = 0.2):
        self.core = TrafficLightEnv(switch_prob)
        self.observation_space = text_space()
        self.action_space = gym.spaces.Discrete(MAX_ACTIONS)
        self._commands: list[tuple[int, str]] = []

    def _observe(self) -> tuple[str, list[str]]:
        rng = self.np_random
        s = self.core.s
        state = STATE_TEXT[s][rng.integers(len(STATE_TEXT[s]))]
        order = [STOP, GO] if rng.random() < 0.5 else [GO, STOP]
        self._commands = [(a, ACTION_TEXT[a][rng.integers(len(ACTION_TEXT[a]))]) for a in order]
        return state, [text for _, text in self._commands]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        self.core.reset(seed=int(self.np_random.integers(2**31)))
        state, commands = self._observe()
        return state, {"admissible": commands}

    def step(self, action: int) -> tuple[str, float, bool, bool, dict]:
        if not 0 <= action < len(self._commands):
            raise IndexError(f"action {action} is not one of the {len(self._commands)} admissible commands")
        core_action, _ = self._commands[action]
        event = EVENT_TEXT[self.core.s, core_action]
        _, reward, terminated, truncated, _ = self.core.step(core_action)
        state, commands = self._observe()
        return state, reward, terminated, truncated, {"admissible": commands, "event": event}
