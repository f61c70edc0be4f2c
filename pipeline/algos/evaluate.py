"""Evaluation: the policy acting on separate env instances with fixed seeds, greedy unless asked to sample.

Two ways to run it. `Evaluator` steps one episode per sub-env in lockstep (the periodic evaluations during
training: fast, the same seeds every call). `play_episode` runs one episode on one env and can hand on what a
viewer needs: the rendered frames (streamed into a video), the observations the policy saw (saliency), or a
text agent's transcript. Episode k of either uses seed `seed + k`, so the two agree episode by episode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from pipeline.config.env import EnvConfig
from pipeline.envs import make_vector_env
from pipeline.envs.text import TextVectorEnv
from pipeline.tracking.video import VideoWriter, write_transcript

EVAL_SEED_OFFSET = 1_000_000  # evaluation episode k of a run seeded s uses seed s + EVAL_SEED_OFFSET + k


@dataclass(frozen=True)
class Acting:
    """How a policy's outputs become actions. Greedy (argmax) by default; `stochastic` samples: from
    softmax(logits) for policy-gradient policies (`logits=True`), ε-greedy on values otherwise, ε being
    the run's final exploration rate."""

    stochastic: bool = False
    logits: bool = False
    epsilon: float = 0.0

    def choose(self, outputs: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
        greedy = outputs.argmax(dim=-1).cpu().numpy()
        if not self.stochastic:
            return greedy
        if self.logits:
            probs = torch.softmax(outputs.double(), dim=-1).cpu().numpy()
            return np.array([rng.choice(len(p), p=p / p.sum()) for p in probs])
        explore = rng.random(len(greedy)) < self.epsilon
        random = rng.integers(0, outputs.shape[-1], size=len(greedy))
        return np.where(explore, random, greedy)

    def choose_text(
        self, policy: Any, states: list[str], commands: list[list[str]], rng: np.random.Generator
    ) -> list[int]:
        if self.stochastic and self.logits:  # a text actor-critic: its DRRN scores are each state's logits
            with torch.no_grad():
                scores, counts = policy.q_values(states, commands)
            parts = torch.split(scores, counts)
            return [int(self.choose(part[None], rng)[0]) if part.numel() else 0 for part in parts]
        chosen = list(policy.act_text(states, commands))
        if self.stochastic:
            for i, options in enumerate(commands):
                if options and rng.random() < self.epsilon:
                    chosen[i] = int(rng.integers(0, len(options)))
        return chosen


def act(
    policy: Any, obs: Any, acting: Acting, rng: np.random.Generator, device: torch.device, continuous: bool = False
) -> np.ndarray:
    """Actions for a batch of array observations. `policy(obs)` gives Q-values or logits (discrete actions), or
    for a `continuous` action space the actions themselves (the mean action, within the env's bounds): our
    networks and a policy loaded back from MLflow (a torch.export graph: `forward` alone) alike."""
    with torch.no_grad():
        outputs = policy(torch.as_tensor(np.asarray(obs), device=device))
    if continuous:
        return outputs.float().cpu().numpy()
    return acting.choose(outputs, rng)


def continuous_actions(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box)


class Evaluator:
    """Runs one episode per sub-env, all in lockstep; the same seeds every call, so evaluations compare.
    Text envs: the policy picks from each state's admissible commands, and `success` records which
    episodes were won."""

    def __init__(self, cfg: EnvConfig, episodes: int, seed: int, evaluation: bool = True):
        self.env: gym.vector.VectorEnv | TextVectorEnv = make_vector_env(cfg, episodes, evaluation=evaluation)
        self.seeds = [seed + i for i in range(episodes)]
        self.success: np.ndarray | None = None

    @torch.no_grad()
    def run(self, policy: Any, device: torch.device) -> np.ndarray:
        """The greedy policy's return on each episode."""
        was_training = policy.training
        policy.eval()
        acting, rng = Acting(), np.random.default_rng(0)  # greedy: the generator is never drawn from
        obs, _ = self.env.reset(seed=self.seeds)
        n = len(self.seeds)
        returns = np.zeros(n, dtype=np.float64)
        running = np.ones(n, dtype=bool)
        text = isinstance(self.env, TextVectorEnv)
        success = np.zeros(n, dtype=bool)
        reported = False  # an array env that says whether each episode succeeded
        while running.any():
            if text:
                actions = acting.choose_text(policy, obs, self.env.admissible, rng)
            else:
                actions = act(policy, obs, acting, rng, device, continuous_actions(self.env.single_action_space))
            obs, rewards, terminated, truncated, info = self.env.step(actions)
            returns += rewards * running
            done = terminated | truncated
            if text:
                success |= running & done & info["won"]
            elif "is_success" in info.get("final_info", {}):  # gymnasium's success flag (Fetch, Meta-World)
                final = info["final_info"]
                reported = True
                success |= running & done & np.asarray(final["is_success"], bool) & final["_is_success"]
            running &= ~done
        self.success = success if (text and self.env.reports_wins) or reported else None
        policy.train(was_training)
        return returns

    def close(self) -> None:
        self.env.close()


@dataclass
class Episode:
    """One played episode and what was kept of it."""

    seed: int
    ret: float = 0.0
    length: int = 0
    # The env's own verdict (a won text game, gymnasium's `is_success`); None if it gives none.
    success: bool | None = None
    observations: list[np.ndarray] = field(default_factory=list)  # what the policy saw, one per action
    actions: list[int | np.ndarray] = field(default_factory=list)  # an index, or a continuous action vector
    transcript: list[str] = field(default_factory=list)  # text envs: what the agent read and chose


def play_episode(
    env: gym.Env,
    policy: Any,
    seed: int,
    acting: Acting = Acting(),
    rng: np.random.Generator | None = None,
    record: bool = False,
    keep_observations: bool = False,
    device: torch.device | None = None,
    on_frame: Callable[[np.ndarray], None] | None = None,
) -> Episode:
    """One episode on one env. `on_frame` receives each rendered RGB frame, one per action (the env built with
    `render=True`); `record` keeps a text env's transcript (strings in, an index into `info["admissible"]` out)."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    device = device or torch.device("cpu")
    episode = Episode(seed)
    obs, info = env.reset(seed=seed)
    text = isinstance(obs, str)
    if text and record:
        episode.transcript.append(f"# episode seed {seed}")
    done = False
    while not done:
        if text:
            commands = list(info.get("admissible", []))
            action = acting.choose_text(policy, [obs], [commands], rng)[0]
            if record:
                options = " | ".join(commands)
                chosen = commands[action] if commands else "(no command)"
                episode.transcript += [
                    f"\n[step {episode.length + 1}]",
                    obs.strip(),
                    f"commands: {options}",
                    f"> {chosen}",
                ]
        else:
            if on_frame is not None:
                on_frame(np.asarray(env.render()))
            if keep_observations:
                episode.observations.append(np.asarray(obs))
            continuous = continuous_actions(env.action_space)
            chosen = act(policy, np.asarray(obs)[None], acting, rng, device, continuous)[0]
            action = chosen if continuous else int(chosen)
        episode.actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        episode.ret += float(reward)
        episode.length += 1
        done = bool(terminated or truncated)
        if text and record:
            episode.transcript.append(f"reward {float(reward):g}")
        if done:
            if "won" in info:
                episode.success = bool(info["won"])
            elif "is_success" in info:
                episode.success = bool(info["is_success"])
    if text and record:
        verdict = "" if episode.success is None else (", won" if episode.success else ", not won")
        episode.transcript.append(f"\n# return {episode.ret:g} in {episode.length} steps{verdict}")
    return episode


def record_episode(
    env: gym.Env, policy: Any, seed: int, stem: Path, fps: float, text: bool, acting: Acting = Acting(), **kwargs: Any
) -> tuple[Episode, Path]:
    """`play_episode` recorded as `<stem>.mp4` (its frames) or, for a text agent, `<stem>.txt` (its transcript)."""
    if text:
        episode = play_episode(env, policy, seed, acting, record=True, **kwargs)
        return episode, write_transcript(episode.transcript, stem.with_suffix(".txt"))
    with VideoWriter(stem.with_suffix(".mp4"), fps) as writer:
        episode = play_episode(env, policy, seed, acting, on_frame=writer.add, **kwargs)
    return episode, writer.path
