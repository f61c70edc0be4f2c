"""Breakout DQN: this pipeline vs Stable-Baselines3 on Atari frames, env-steps/s and replay bytes.

    .venv/bin/python benchmarks/breakout_dqn.py    # ~12 min on 2 cores: 1 and 8 envs, writes docs/benchmarks.md
    .venv/bin/python benchmarks/breakout_dqn.py --num-envs 8 --kinds sb3_cnn,ours_nature_cnn --no-write

Every measurement is a fresh process with one torch thread; the runs alternate round by round
(reversed order on odd rounds) so drift on the machine hits all of them alike. Throughput is the
steady state: env steps / wall time over the window from env step `learning_starts` (the first update)
to the last env step, so process start, model building and the random warm-up are left out. The
median over `--repeats` rounds is reported. Results go to docs/benchmarks.md (section replaced).

Without `--num-envs` the default suite runs: a table at 1 env (every kind) and one at 8 envs (the two
pairs compared, see SUITE). `--num-envs N[,M...]` runs a table per value with the kinds of `--kinds`.
Both sides get the same N: ours `env.num_envs=N`, SB3 a `DummyVecEnv` of N envs; env i is seeded
seed + i on both sides.

Kinds (identical DQN settings, see SETTINGS; the env is ALE/Breakout-v5 with sticky actions 0.25,
no-op starts 30, frame skip 4, 84x84 grayscale, FIRE pressed at reset and after a lost life, 4 frames
stacked, rewards clipped to [-1, 1], 27,000 agent steps per episode at most):
  sb3_cnn                     SB3 DQN("CnnPolicy") (its NatureCNN, trained)
  sb3_timm_frozen             SB3 DQN with a timm ResNet-18 features extractor, every weight frozen
                              (SB3 still runs it on every replayed obs and next obs, online and target)
  ours_nature_cnn             this pipeline, env=breakout backbone=nature_cnn
  ours_resnet18_finetune      this pipeline, env=breakout backbone=resnet18 (trained end to end)
  ours_resnet18_frozen_cache  this pipeline, env=breakout backbone=resnet18 backbone.freeze=all
                              (its feature cache), weights: a randomly initialised timm resnet18
                              saved by this script as .safetensors

Schedules in env steps, the same on both sides. Ours counts every schedule in env steps summed over
the envs (N per vector step): train_freq 4 means N/4 gradient steps per vector step. SB3 counts
`train_freq` in vector steps (`collect_rollouts` steps all N envs train_freq times, then trains
`gradient_steps` times), so SB3 gets train_freq = lcm(4, N)/N vector steps and gradient_steps =
lcm(4, N)/4: one gradient step per 4 env steps for any N (N=1: 4 and 1; N=8: 1 and 2). SB3 already
divides target_update_interval by n_envs (dqn.py `_on_step`) and counts learning_starts in env steps;
it trains when num_timesteps > learning_starts where ours trains at >=, so SB3 is given
learning_starts - 1 and both make their first update at env step 1000. Each run reports its
gradient updates in the measured window, so the equality can be checked.

SB3's env stack is built here from the same gymnasium wrappers as `pipeline/envs/atari.py`, with
our own `FireOnStart` (pipeline/envs/atari.py) as its FIRE wrapper: FIRE after reset and after each
lost life, no episode end on a lost life (SB3's FireResetEnv presses action 2 too and needs
EpisodicLifeEnv). `check_envs` steps both stacks with the same seed and actions
and the report states whether every observation, reward and episode end matched.

Ours is run by `pipeline.train.train` as benchmarks/cartpole_dqn.py runs it. A wrapper around
`DQN.training_step` records (env step, time) after every chunk (algo.chunk_steps: a multiple of N
near 50 that divides learning_starts, so a chunk ends exactly at learning_starts) and stops the run at
its last env step: the final greedy evaluation and the final checkpoint are skipped. (With FIRE
pressed after each lost life the greedy evaluation no longer stalls; it is skipped anyway because it
is not training throughput, and for ResNet-18 it would cost more than the measured window.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
from datetime import date

import gymnasium as gym
from common import compose, machine, median, one_thread, versions, write_section

from pipeline.envs.atari import FireOnStart

VERSIONED = ("torch", "stable-baselines3", "timm", "ale-py", "gymnasium")  # named under the table
MARKER = "## Breakout DQN"
SETTINGS = {
    "buffer_size": 100_000,  # allocated lazily by both (np.zeros / torch.empty): only the filled part is touched
    "learning_starts": 1000,
    "batch_size": 32,
    "train_freq": 4,  # env steps per gradient round, on both sides (see the docstring for SB3's mapping)
    "gradient_steps": 1,
    "target_update_interval": 1000,
    "lr": 1e-4,
    "gamma": 0.99,
    "max_grad_norm": 10.0,
    "eps_start": 1.0,
    "eps_end": 0.01,  # reached at learning_starts: the measured window acts greedily 99 % of the time
}
KINDS = (
    "sb3_cnn",
    "sb3_timm_frozen",
    "ours_nature_cnn",
    "ours_resnet18_finetune",
    "ours_resnet18_frozen_cache",
)
# Env steps measured after learning_starts, per (kind, num_envs): windows of ~20-30 s on 2 cores, so the
# default suite (2 rounds, 18 processes with their start and 1000-step warm-up) takes ~10-11 min.
# Rounded to whole chunks of ours and whole SB3 rounds (`_budget`).
MEASURED_STEPS = {
    ("sb3_cnn", 1): 2000,
    ("sb3_timm_frozen", 1): 300,
    ("ours_nature_cnn", 1): 3000,
    ("ours_resnet18_finetune", 1): 200,
    ("ours_resnet18_frozen_cache", 1): 2000,
    ("sb3_cnn", 8): 2400,
    ("sb3_timm_frozen", 8): 280,
    ("ours_nature_cnn", 8): 3200,
    ("ours_resnet18_finetune", 8): 280,
    ("ours_resnet18_frozen_cache", 8): 4000,
}
DEFAULT_MEASURED = {k: MEASURED_STEPS[k, 1] for k in KINDS}  # any other N
# The default suite: num_envs -> kinds.
SUITE = {
    1: KINDS,
    8: ("sb3_cnn", "sb3_timm_frozen", "ours_nature_cnn", "ours_resnet18_frozen_cache"),
}
# What SB3 is given (`_sb3_breakout`); our env config is checked against it and differences are reported.
SB3_ENV = {
    "id": "ALE/Breakout-v5",
    "sticky_actions": 0.25,
    "noop_max": 30,
    "frame_skip": 4,
    "frame_size": 84,
    "frame_stack": 4,
    "clip_rewards": True,
    "fire_reset": True,
    "max_episode_steps": 27_000,
}
DESCRIBE = {
    "sb3_cnn": "SB3 DQN, CnnPolicy (NatureCNN, trained)",
    "sb3_timm_frozen": "SB3 DQN, timm ResNet-18 features extractor, frozen",
    "ours_nature_cnn": "ours, `backbone=nature_cnn`",
    "ours_resnet18_finetune": "ours, `backbone=resnet18` (fine-tuned)",
    "ours_resnet18_frozen_cache": "ours, `backbone=resnet18 backbone.freeze=all` (feature cache)",
}
RATIOS = (  # (ours, SB3, target)
    ("ours_resnet18_frozen_cache", "sb3_timm_frozen", 20.0),
    ("ours_nature_cnn", "sb3_cnn", 2.0),
)
FROZEN = ("sb3_timm_frozen", "ours_resnet18_frozen_cache")


def chunk_steps(num_envs: int) -> int:
    """algo.chunk_steps for N envs: the largest multiple of N up to max(50, N) that divides learning_starts,
    so a chunk ends exactly at learning_starts (the window start); else the largest multiple of N."""
    start, top = SETTINGS["learning_starts"], max(50, num_envs)
    fits = [c for c in range(num_envs, top + 1, num_envs) if start % c == 0]
    return fits[-1] if fits else top // num_envs * num_envs


def sb3_schedule(num_envs: int) -> tuple[int, int]:
    """(train_freq in vector steps, gradient_steps) giving SB3 one gradient step per train_freq env steps."""
    every = SETTINGS["train_freq"]
    period = math.lcm(every, num_envs)  # env steps
    return period // num_envs, period // every * SETTINGS["gradient_steps"]


class ForwardTimer:
    """Forward hooks timing a module's calls by batch size, while `on` (the measured window)."""

    def __init__(self) -> None:
        self.on = False
        self.stats: dict[int, list[float]] = {}  # batch -> [calls, seconds]
        self._t = 0.0

    def attach(self, module) -> None:
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, module, args) -> None:
        self._t = time.perf_counter()

    def _post(self, module, args, out) -> None:
        if self.on:
            s = self.stats.setdefault(int(args[0].shape[0]), [0, 0.0])
            s[0] += 1
            s[1] += time.perf_counter() - self._t

    def summary(self) -> dict[str, list[float]]:
        return {str(b): [int(c), s] for b, (c, s) in sorted(self.stats.items())}


# --------------------------------------------------------------------------- Stable-Baselines3
def _sb3_env(monitor: bool = True):
    import ale_py
    from gymnasium.wrappers import AtariPreprocessing, ClipReward, FrameStackObservation
    from stable_baselines3.common.monitor import Monitor

    gym.register_envs(ale_py)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    e = SB3_ENV
    env = gym.make(
        e["id"],
        frameskip=1,
        repeat_action_probability=e["sticky_actions"],
        max_episode_steps=e["max_episode_steps"] * e["frame_skip"],  # the base env counts frames
    )
    env = AtariPreprocessing(
        env, noop_max=e["noop_max"], frame_skip=e["frame_skip"], screen_size=e["frame_size"], grayscale_obs=True
    )
    env = FireOnStart(env)
    env = ClipReward(env, -1.0, 1.0)
    env = FrameStackObservation(env, e["frame_stack"])  # uint8 (4, 84, 84): SB3 sees channel-first, no transpose
    return Monitor(env) if monitor else env


def _timm_extractor_class():
    import timm
    import torch
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class FrozenTimmResNet18(BaseFeaturesExtractor):
        """timm resnet18, classifier removed, every parameter frozen; the same input normalisation as ours."""

        def __init__(self, observation_space, features_dim: int = 512):
            super().__init__(observation_space, features_dim)
            in_chans = observation_space.shape[0]
            self.model = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=in_chans)
            self.model.requires_grad_(False)
            self.register_buffer("mean", torch.full((1, in_chans, 1, 1), 0.449))
            self.register_buffer("std", torch.full((1, in_chans, 1, 1), 0.226))

        def forward(self, obs):  # SB3 has already scaled uint8 to [0, 1]
            return self.model((obs - self.mean) / self.std)

    return FrozenTimmResNet18


def _sb3_replay_bytes(buffer) -> tuple[float, str]:
    import numpy as np

    arrays = {k: v for k, v in vars(buffer).items() if isinstance(v, np.ndarray)}
    slots = buffer.buffer_size * buffer.n_envs  # SB3 stores buffer_size // n_envs rows of n_envs transitions
    total = sum(a.nbytes for a in arrays.values()) / slots
    parts = ", ".join(f"{k} {a.nbytes // slots:,}" for k, a in arrays.items())
    return total, parts


def run_sb3(kind: str, seed: int, measured: int, num_envs: int) -> dict:
    one_thread()
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.vec_env import DummyVecEnv

    s = SETTINGS
    total = s["learning_starts"] + measured
    timer = ForwardTimer()

    class Clock:
        """The window starts after the first gradient round (env step learning_starts), as ours does
        (its chunk ending at learning_starts holds that round); then times every gradient round."""

        t_mark: float | None = None
        step_mark = 0
        updates_mark = 0
        update_s = 0.0

    clock = Clock()

    policy, policy_kwargs = "CnnPolicy", {}
    if kind == "sb3_timm_frozen":
        policy_kwargs = {"features_extractor_class": _timm_extractor_class(), "features_extractor_kwargs": {}}
    train_freq, gradient_steps = sb3_schedule(num_envs)
    model = DQN(
        policy,
        DummyVecEnv([_sb3_env] * num_envs),
        learning_rate=s["lr"],
        buffer_size=s["buffer_size"],
        learning_starts=s["learning_starts"] - 1,  # SB3 trains at num_timesteps > learning_starts, ours at >=
        batch_size=s["batch_size"],
        gamma=s["gamma"],
        train_freq=train_freq,
        gradient_steps=gradient_steps,
        target_update_interval=s["target_update_interval"],
        exploration_initial_eps=s["eps_start"],
        exploration_final_eps=s["eps_end"],
        exploration_fraction=s["learning_starts"] / total,  # the same linear decay, over learning_starts steps
        max_grad_norm=s["max_grad_norm"],
        optimize_memory_usage=False,
        policy_kwargs=policy_kwargs,
        seed=seed,
        device="cpu",
    )
    if kind == "sb3_timm_frozen":  # online and target extractors: acting (batch N) and updates (batch 32)
        timer.attach(model.q_net.features_extractor)
        timer.attach(model.q_net_target.features_extractor)
    sb3_train = model.train

    def timed_train(*args, **kwargs):
        t = time.perf_counter()
        sb3_train(*args, **kwargs)
        now = time.perf_counter()
        if clock.t_mark is None:
            clock.step_mark, clock.updates_mark = int(model.num_timesteps), int(model._n_updates)
            timer.on = True
            clock.t_mark = time.perf_counter()
        else:
            clock.update_s += now - t

    model.train = timed_train  # learn() calls self.train(batch_size=..., gradient_steps=...)

    def state(net) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in net.state_dict().items()}

    def bn_running(net) -> list[str]:
        return [k for k in net.state_dict() if "running_mean" in k or "running_var" in k]

    q_before, target_before = state(model.q_net), state(model.q_net_target)
    t0 = time.perf_counter()
    model.learn(total_timesteps=total)
    t_end = time.perf_counter()
    bytes_per, parts = _sb3_replay_bytes(model.replay_buffer)
    result = {
        "env_steps": int(model.num_timesteps),
        "train_s": t_end - t0,
        "window_steps": int(model.num_timesteps) - clock.step_mark,
        "window_s": t_end - clock.t_mark,
        "updates": int(model._n_updates),
        "window_updates": int(model._n_updates) - clock.updates_mark,
        "window_update_s": clock.update_s,
        "sb3_train_freq": train_freq,
        "sb3_gradient_steps": gradient_steps,
        "replay_bytes": bytes_per,
        "replay_parts": parts,
        "forwards": timer.summary(),
    }
    if kind == "sb3_timm_frozen":
        # Frozen weights, but train mode in every update: do the BatchNorm running statistics move?
        q_after, target_after = state(model.q_net), state(model.q_net_target)
        bn = bn_running(model.q_net)
        frozen = [k for k, _ in model.q_net.features_extractor.named_parameters(prefix="features_extractor")]

        def max_change(before, after, keys) -> float:
            return max(float((after[k].float() - before[k].float()).abs().max()) for k in keys)

        result["frozen_check"] = {
            "bn_tensors": len(bn),
            "q_bn_max_abs_change": max_change(q_before, q_after, bn),
            "q_bn1_running_mean_before": float(q_before["features_extractor.model.bn1.running_mean"].abs().mean()),
            "q_bn1_running_mean_after": float(q_after["features_extractor.model.bn1.running_mean"].abs().mean()),
            "target_bn_max_abs_change": max_change(target_before, target_after, bn),
            "frozen_weights_max_abs_change": max_change(q_before, q_after, frozen),
        }
    return result


# --------------------------------------------------------------------------- this pipeline
def _random_resnet18_weights() -> str:
    """A randomly initialised timm resnet18, in_chans=3 and its default keys, saved as .safetensors."""
    import tempfile

    import timm
    from safetensors.torch import save_file

    path = os.path.join(tempfile.mkdtemp(), "resnet18_random.safetensors")
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


class _WindowDone(Exception):
    """Raised from the last training_step: the measured window is complete, skip the rest of run_job()."""


def run_ours(kind: str, seed: int, measured: int, num_envs: int, env_name: str) -> dict:
    one_thread()
    import functools
    import tempfile

    from omegaconf import OmegaConf

    from pipeline.algos import dqn
    from pipeline.run.job import run_job

    s = SETTINGS
    total = s["learning_starts"] + measured
    backbone = {
        "ours_nature_cnn": ["backbone=nature_cnn"],
        "ours_resnet18_finetune": ["backbone=resnet18"],
        "ours_resnet18_frozen_cache": [
            "backbone=resnet18",
            "backbone.freeze=all",
            f"backbone.weights={_random_resnet18_weights()}",
        ],
    }[kind]
    overrides = [
        f"env={env_name}",
        f"env.num_envs={num_envs}",
        *backbone,
        "algo=dqn",
        f"algo.lr={s['lr']}",
        f"algo.batch_size={s['batch_size']}",
        f"algo.buffer_size={s['buffer_size']}",
        f"algo.learning_starts={s['learning_starts']}",
        f"algo.train_freq={s['train_freq']}",
        f"algo.gradient_steps={s['gradient_steps']}",
        f"algo.target_update_interval={s['target_update_interval']}",
        f"algo.gamma={s['gamma']}",
        f"algo.max_grad_norm={s['max_grad_norm']}",
        f"algo.eps_start={s['eps_start']}",
        f"algo.eps_end={s['eps_end']}",
        f"algo.eps_decay_steps={s['learning_starts']}",
        f"algo.chunk_steps={chunk_steps(num_envs)}",
        f"total_env_steps={total}",
        "eval.every_env_steps=0",
        "eval.stop_on_solve=false",
        "eval.episodes=1",
        "checkpoint.every_env_steps=0",
        "checkpoint.buffer=false",
    ]

    marks: list[tuple[int, float, int]] = []  # (env step, time, updates) after each chunk
    info: dict = {}
    timer = ForwardTimer()  # its `on` flags the measured window for every kind
    original = dqn.DQN.training_step

    @functools.wraps(original)
    def timed_step(self, *args, **kwargs):
        if not marks and self.cache_features:
            timer.attach(self.q_net.encoder)  # the frozen encoder runs once per vector step, on N obs
        out = original(self, *args, **kwargs)
        step = self.global_env_steps
        marks.append((step, time.perf_counter(), int(self.loop.updates)))
        timer.on = step >= s["learning_starts"]
        if step >= self.cfg.total_env_steps:
            info["updates"] = int(self.loop.updates)
            info["replay_bytes"] = float(self.buffer.bytes_per_transition())
            info["replay_item"] = (
                f"{tuple(self.buffer.item_shape)} {str(self.buffer.items.dtype).removeprefix('torch.')}"
            )
            info["channels_last"] = bool(self.cfg.hardware.channels_last)
            raise _WindowDone
        return out

    learn = dqn.DQN._learn
    update_s = [0.0]

    @functools.wraps(learn)
    def timed_learn(self, *args, **kwargs):
        t = time.perf_counter()
        out = learn(self, *args, **kwargs)
        if timer.on:  # set after the chunk ending at learning_starts: the measured window
            update_s[0] += time.perf_counter() - t
        return out

    dqn.DQN.training_step = timed_step
    dqn.DQN._learn = timed_learn
    tmp = tempfile.mkdtemp()
    cfg = compose([*overrides, f"seed={seed}", "logger=none", "progress=false", f"paths.outputs={tmp}"])
    t0 = time.perf_counter()
    with contextlib.suppress(_WindowDone):
        run_job(cfg)
    start = next((m for m in marks if m[0] >= s["learning_starts"]), None)
    if start is None or not info:
        raise RuntimeError(f"{kind}: the run ended before its measured window (marks {marks[-3:]})")
    end = marks[-1]
    return {
        "env_steps": end[0],
        "train_s": end[1] - t0,  # from the call to run_job(): includes building, the env probe and warm-up
        "window_steps": end[0] - start[0],
        "window_s": end[1] - start[1],
        "window_updates": end[2] - start[2],
        "window_update_s": update_s[0],
        "chunk_steps": chunk_steps(num_envs),
        "forwards": timer.summary(),
        **info,
        "env_cfg": OmegaConf.to_container(cfg.env, resolve=True),
    }


# --------------------------------------------------------------------------- env identity
def check_envs(steps: int = 3000, seed: int = 0) -> dict:
    """Ours (`pipeline.envs.make_env`, env=breakout) and SB3's stack, the same seed and actions: does every
    observation, reward and episode end match? Also counts the FIRE presses ours made after lost lives."""
    import numpy as np

    from pipeline.config.load import to_config
    from pipeline.envs import make_env

    ours = make_env(to_config(compose(["env=breakout", "logger=none"])).env)
    sb3 = _sb3_env(monitor=True)
    rng = np.random.default_rng(seed)
    a_obs, _ = ours.reset(seed=seed)
    b_obs, _ = sb3.reset(seed=seed)
    same = bool((a_obs == b_obs).all())
    episodes = lives_lost = 0
    lives = ours.get_wrapper_attr("lives")
    first_diff = None
    for t in range(steps):
        action = int(rng.integers(ours.action_space.n))
        a = ours.step(action)
        b = sb3.step(action)
        lives_lost += int(a[4].get("lives", 0) < lives and not (a[2] or a[3]))
        lives = a[4].get("lives", 0)
        ok = bool((a[0] == b[0]).all()) and np.sign(a[1]) == b[1] and a[2] == b[2] and a[3] == b[3]
        if not ok:
            first_diff, same = t, False
            break
        if a[2] or a[3]:
            episodes += 1
            a_obs, _ = ours.reset()
            b_obs, _ = sb3.reset()
            lives = ours.get_wrapper_attr("lives")
            same = same and bool((a_obs == b_obs).all())
    fire = any(type(w).__name__ == "FireOnStart" for w in _wrappers(ours))
    ours.close()
    sb3.close()
    return {
        "steps": steps,
        "identical": same,
        "first_diff": first_diff,
        "episodes": episodes,
        "lives_lost": lives_lost,  # each followed by a FIRE press on both sides
        "ours_fires": fire,
    }


def _wrappers(env):
    while True:
        yield env
        if not hasattr(env, "env"):
            return
        env = env.env


# --------------------------------------------------------------------------- orchestration
def run_one(kind: str, seed: int, measured: int, num_envs: int, env_name: str) -> dict:
    if kind == "env_check":
        return check_envs()
    if kind.startswith("sb3_"):
        return run_sb3(kind, seed, measured, num_envs)
    return run_ours(kind, seed, measured, num_envs, env_name)


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _measure(kind: str, num_envs: int, seed: int, measured: int, env_name: str) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, "--seed", str(seed), "--measured", str(measured)]
    cmd += ["--num-envs", str(num_envs), "--env", env_name]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=_subprocess_env(), check=False)
    process_s = time.perf_counter() - t0
    base = {"kind": kind, "num_envs": num_envs, "seed": seed, "process_s": process_s}
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {**base, "error": tail, "stderr": out.stderr[-3000:]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "window_steps" in result:
        result["steps_per_s"] = result["window_steps"] / result["window_s"]
    return {**result, **base}


def _fmt_bytes(value: float | None) -> str:
    return "not measured" if value is None else f"{value:,.0f}"


def _ms_per_forward(rows: list[dict]) -> dict[int, tuple[float, int]]:
    """batch -> (median ms per forward over the runs, forwards per run)."""
    by: dict[int, list[tuple[float, int]]] = {}
    for r in rows:
        for b, (calls, secs) in r.get("forwards", {}).items():
            if calls:
                by.setdefault(int(b), []).append((1000 * secs / calls, int(calls)))
    return {b: (median([ms for ms, _ in v]), v[0][1]) for b, v in sorted(by.items())}


def _split(rows: list[dict]) -> tuple[float, float]:
    """(ms per gradient update, ms per env step outside the gradient updates): medians over the runs."""
    per_update = median([1000 * r["window_update_s"] / max(r["window_updates"], 1) for r in rows])
    other = median([1000 * (r["window_s"] - r["window_update_s"]) / r["window_steps"] for r in rows])
    return per_update, other


def _table(results: list[dict], n: int, kinds: list[str]) -> tuple[list[str], dict[str, float]]:
    ok = [r for r in results if "error" not in r and r["num_envs"] == n]
    by = {k: [r for r in ok if r["kind"] == k] for k in kinds}
    sps = {k: median([r["steps_per_s"] for r in by[k]]) for k in kinds if by[k]}
    lines = [
        "| kind | what | env-steps/s (median, min–max) | measured env steps | gradient updates in them | "
        "ms per gradient update | ms per env step besides updates | replay bytes / transition |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in kinds:
        rows = by[k]
        if not rows:
            failed = [r for r in results if r["kind"] == k and r["num_envs"] == n]
            why = failed[0]["error"] if failed else "not run"
            lines.append(f"| {k} | {DESCRIBE[k]} | failed: {why} | | | | | |")
            continue
        v = [r["steps_per_s"] for r in rows]
        per_update, other = _split(rows)
        lines.append(
            f"| {k} | {DESCRIBE[k]} | {median(v):.1f} ({min(v):.1f}–{max(v):.1f}) | {rows[0]['window_steps']} | "
            f"{rows[0]['window_updates']} | {per_update:.1f} | {other:.2f} | "
            f"{_fmt_bytes(rows[0].get('replay_bytes'))} |"
        )
    pairs = [(o, b, t) for o, b, t in RATIOS if o in kinds and b in kinds]
    if pairs:
        lines += ["", "| ratio (env-steps/s, medians) | value | target | result |", "|---|---|---|---|"]
    for ours, sb3, target in pairs:
        if ours in sps and sb3 in sps:
            ratio = sps[ours] / sps[sb3]
            lines.append(f"| {ours} / {sb3} | {ratio:.2f}× | ≥ {target:g}× | {'PASS' if ratio >= target else 'FAIL'} |")
        else:
            lines.append(f"| {ours} / {sb3} | not measured | ≥ {target:g}× | FAIL (a run failed) |")
    return lines, sps


def _bound_paragraph(results: list[dict], plan: dict[int, list[str]]) -> list[str]:
    """What bounds ours_resnet18_frozen_cache / sb3_timm_frozen: the measured backbone forwards."""
    lines = []
    for n, kinds in plan.items():
        if not all(k in kinds for k in FROZEN):
            continue
        ok = [r for r in results if "error" not in r and r["num_envs"] == n]
        ours = [r for r in ok if r["kind"] == "ours_resnet18_frozen_cache"]
        sb3 = [r for r in ok if r["kind"] == "sb3_timm_frozen"]
        if not ours or not sb3:
            continue
        ours_ms, sb3_ms = _ms_per_forward(ours), _ms_per_forward(sb3)
        ours_step = median([1000 * r["window_s"] / r["window_steps"] for r in ours])
        sb3_step = median([1000 * r["window_s"] / r["window_steps"] for r in sb3])
        act = ours_ms.get(n, (float("nan"), 0))[0]
        ours_fwd_share = act / n  # ms of backbone per env step
        sb3_fwd = sum(ms * calls for ms, calls in sb3_ms.values()) / sb3[0]["window_steps"]
        upd = sb3_ms.get(SETTINGS["batch_size"], (float("nan"), 0))[0]
        sb3_act = sb3_ms.get(n, (float("nan"), 0))[0]
        rest = ours_step - ours_fwd_share
        measured = median([r["steps_per_s"] for r in ours]) / median([r["steps_per_s"] for r in sb3])  # as the table
        lines.append(
            f"- {n} env{'s' if n > 1 else ''}: ours spends {ours_step:.2f} ms per env step, of which the "
            f"ResNet-18 forward is {ours_fwd_share:.2f} ms ({act:.1f} ms per forward of {n} obs; "
            f"{100 * ours_fwd_share / ours_step:.0f} %) and env stepping, the head, its updates and the loop the "
            f"other {rest:.2f} ms. SB3 spends {sb3_step:.2f} ms per env step, {sb3_fwd:.2f} ms of them in "
            f"ResNet-18 forwards ({sb3_act:.1f} ms to act on {n} obs; {upd:.1f} ms per batch-32 forward, 2 per "
            f"update, 1 update per 4 env steps). With ours' backbone cost alone (nothing else), the ratio would "
            f"be at most {sb3_step / ours_fwd_share:.1f}×; measured {measured:.2f}×."
        )
    if not lines:
        return []
    return [
        "",
        "### What bounds the frozen-cache ratio",
        "",
        "Acting greedily needs Q(s) for the current observation, so ours runs the frozen ResNet-18 once per",
        "vector step (on the N observations together; the same features are then stored, so replayed batches",
        "and TD targets only run the small head). SB3 runs it on the acting obs too, plus on 32 obs (online)",
        "and 32 next obs (target) per gradient update. Per update SB3's extra work is therefore 64 forwards",
        "batched by 32, which are cheap per observation, against ours' single forward per step; the ratio is",
        "bounded by (SB3's per-step time) / (ours' backbone ms per env step + env stepping). Measured in the",
        "runs above (forward hooks on the encoder, measured window only):",
        "",
        *lines,
    ]


def _nature_paragraph(results: list[dict], plan: dict[int, list[str]]) -> list[str]:
    """What bounds ours_nature_cnn / sb3_cnn: the gradient step, the same network on both sides."""
    lines = []
    every = SETTINGS["train_freq"]
    for n in plan:
        ok = [r for r in results if "error" not in r and r["num_envs"] == n]
        ours = [r for r in ok if r["kind"] == "ours_nature_cnn"]
        sb3 = [r for r in ok if r["kind"] == "sb3_cnn"]
        if not ours or not sb3:
            continue
        (o_upd, o_other), (s_upd, s_other) = _split(ours), _split(sb3)
        s_step = s_upd / every + s_other
        measured = median([r["steps_per_s"] for r in ours]) / median([r["steps_per_s"] for r in sb3])  # as the table
        lines.append(
            f"- {n} env{'s' if n > 1 else ''}: per env step SB3 spends {s_upd / every:.2f} ms in gradient updates "
            f"({s_upd:.1f} ms each, 1 per {every} env steps) and {s_other:.2f} ms on everything else (acting, "
            f"env, buffer); ours {o_upd / every:.2f} ms ({o_upd:.1f} ms per update) and {o_other:.2f} ms. Even "
            f"with nothing but its updates, ours would reach {s_step / (o_upd / every):.1f}×; measured "
            f"{measured:.2f}×."
        )
    if not lines:
        return []
    return [
        "",
        "### What bounds the Nature CNN ratio",
        "",
        "Both sides train the same Nature CNN on the same batch of 32 (forward online and target, backward,",
        "Adam), one update per 4 env steps (ours in channels_last with a fused Adam, SB3 as it comes). The",
        "update is the bulk of both sides' time per env step, so it caps the ratio (medians of the runs):",
        "",
        *lines,
    ]


def _report(results: list[dict], plan: dict[int, list[str]], repeats: int, command: str, extra: dict) -> str:
    ok = [r for r in results if "error" not in r]
    s = SETTINGS
    lines = [
        f"{MARKER}: pipeline vs Stable-Baselines3 on Atari frames",
        "",
        f"Measured {date.today().isoformat()} on {machine()}, one torch thread per process, {repeats} rounds, "
        "runs alternating round by round (fresh process each); the whole run took "
        f"{extra['total_s'] / 60:.1f} min.",
        f"Command: `{command}`",
        f"Versions: {versions(('torch', 'stable-baselines3', 'timm', 'ale-py', 'gymnasium'))}.",
        "",
        "ALE/Breakout-v5 (sticky actions 0.25, 27,000 agent steps per episode at most), gymnasium",
        "AtariPreprocessing (no-op starts 30, frame skip 4, 84x84 grayscale), FIRE pressed at reset and after",
        "a lost life, 4 frames stacked (uint8 4x84x84), rewards clipped to [-1, 1]; ours through `env=breakout`",
        "(`env.fire_reset=true`), SB3 through the same gymnasium wrappers and the same FIRE wrapper",
        "(`FireOnStart` from pipeline/envs/atari.py). DQN for every kind: lr 1e-4, batch 32, buffer 1e5,",
        "learning_starts 1000, one gradient step per 4 env steps, target update every 1000 env steps,",
        f"gamma 0.99, grad-norm clip 10, epsilon 1 → {s['eps_end']} over the first 1000 env steps.",
        "N envs: ours `env.num_envs=N` (its schedules count env steps over all envs: N/4 updates per vector",
        "step), SB3 a `DummyVecEnv` of N envs with `train_freq=lcm(4,N)/N` vector steps and",
        "`gradient_steps=lcm(4,N)/4` (SB3 counts train_freq in vector steps; N=1: 4 and 1, N=8: 1 and 2),",
        "`learning_starts=999` (it trains at num_timesteps > learning_starts, ours at ≥), the same",
        "`target_update_interval` (SB3 divides it by N itself); env i seeded seed + i on both sides. The",
        '"gradient updates" column shows the result: the same count over the same measured env steps.',
        "Throughput is the steady state: env steps / wall time from env step 1000 (the first update) to the",
        "last step; process start, building and the warm-up are excluded. Ours runs with algo.chunk_steps",
        " / ".join(f"{chunk_steps(n)} ({n} env{'s' if n > 1 else ''})" for n in plan)
        + ", so a chunk ends at step 1000, and stops at its last env step: the final",
        "greedy evaluation and checkpoint are skipped (the evaluation no longer stalls now that FIRE is",
        "pressed, but it is not training throughput). `hardware.channels_last=true` (ours' default) for",
        "ours; SB3 as it comes (no channels_last option). Replay bytes: allocated bytes / capacity.",
    ]
    env_check = extra.get("env_check")
    if env_check is not None:
        if "error" in env_check:
            lines += ["", f"Env check (ours vs SB3's stack) failed to run: {env_check['error']}"]
        else:
            verdict = "identical" if env_check["identical"] else f"DIFFERENT (first at step {env_check['first_diff']})"
            lines += [
                "",
                f"Env check: ours (`pipeline.envs.make_env`) and SB3's stack stepped side by side, seed 0, the same "
                f"{env_check['steps']:,} random actions ({env_check['episodes']} episodes): every observation, "
                f"reward and episode end {verdict}.",
            ]
    ours_rows = [r for r in ok if r["kind"].startswith("ours_")]
    if ours_rows:
        env_cfg = ours_rows[0]["env_cfg"]
        differ = [f"{k}: ours {env_cfg.get(k, 'absent')}, SB3 {v}" for k, v in SB3_ENV.items() if env_cfg.get(k) != v]
        lines.append("Env settings, ours vs SB3: " + ("identical." if not differ else "DIFFER: " + "; ".join(differ)))
    summary = []
    for n, kinds in plan.items():
        table, sps = _table(results, n, kinds)
        lines += ["", f"### {n} env{'s' if n > 1 else ''} (`--num-envs {n}`)", "", *table]
        summary.append((n, sps))
    if len(summary) > 1:
        lines += ["", "Scaling with envs (env-steps/s, median):", ""]
        ns = [n for n, _ in summary]
        lines += ["| kind | " + " | ".join(f"{n} env{'s' if n > 1 else ''}" for n in ns) + " |"]
        lines += ["|---|" + "---|" * len(ns)]
        for k in KINDS:
            if any(k in sps for _, sps in summary):
                cells = [f"{sps[k]:.1f}" if k in sps else "–" for _, sps in summary]
                lines.append(f"| {k} | " + " | ".join(cells) + " |")
    # replay memory
    frames = [r for r in ok if r["kind"] in ("ours_nature_cnn", "ours_resnet18_finetune")]
    cache = [r for r in ok if r["kind"] == "ours_resnet18_frozen_cache"]
    sb3_rows = [r for r in ok if r["kind"].startswith("sb3_")]
    if frames or cache or sb3_rows:
        lines += ["", "### Replay memory", ""]
        if sb3_rows:
            sb = sb3_rows[0]
            lines.append(
                f"- SB3 ReplayBuffer: {sb['replay_bytes']:,.0f} bytes per transition (both stacks, obs and next obs, "
                f"stored whole: {sb['replay_parts']})."
            )
        for rows, name, detail in (
            (frames, "frames", "each 84x84 frame stored once, stacks rebuilt at sample time"),
            (cache, "frozen-feature cache", "ResNet-18 features"),
        ):
            if rows:
                nbytes = rows[0]["replay_bytes"]
                vs = f", {sb3_rows[0]['replay_bytes'] / nbytes:.1f}× less than SB3" if sb3_rows else ""
                lines.append(
                    f"- Ours, {name}: {nbytes:,.0f} bytes per transition ({detail}; item {rows[0]['replay_item']}){vs}."
                )
        lines.append("- The same per transition at 1 and 8 envs on both sides (capacity 1e5 split over the envs).")
    lines += _bound_paragraph(results, plan)
    lines += _nature_paragraph(results, plan)
    checks = [r["frozen_check"] for r in ok if r["kind"] == "sb3_timm_frozen"]
    if checks:
        c = checks[0]
        lines += [
            "",
            "SB3 with the frozen extractor: `requires_grad_(False)` weights stay put (max change "
            f"{c['frozen_weights_max_abs_change']:.1g}), but DQN.train() puts the online net in train mode, so "
            f"its {c['bn_tensors']} BatchNorm running-stat tensors move with every replayed batch (max change "
            f"{max(x['q_bn_max_abs_change'] for x in checks):.3g}; bn1 mean |running_mean| "
            f"{c['q_bn1_running_mean_before']:.3g} → {c['q_bn1_running_mean_after']:.3g}); the target net "
            f"(eval mode) gets them at each target update (max change here {c['target_bn_max_abs_change']:.3g}).",
        ]
    budgets = ", ".join(
        f"{k} ×{n} {m}" for (k, n), m in sorted(extra["budgets"].items(), key=lambda x: (x[0][1], x[0][0]))
    )
    lines += [
        "",
        "### Per run",
        "",
        f"Measured env steps per run (kind, N envs): {budgets}. Process s includes interpreter start, imports,",
        "model building and the 1000-step warm-up.",
        "",
        "| kind | envs | seed | env steps | measured steps | measured s | env-steps/s | updates (in window) | "
        "process s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(
                f"| {r['kind']} | {r['num_envs']} | {r['seed']} | failed: {r['error']} | | | | | {r['process_s']:.1f} |"
            )
            continue
        lines.append(
            f"| {r['kind']} | {r['num_envs']} | {r['seed']} | {r['env_steps']} | {r['window_steps']} | "
            f"{r['window_s']:.1f} | {r['steps_per_s']:.1f} | {r['updates']} ({r['window_updates']}) | "
            f"{r['process_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _budget(kind: str, n: int, scale: float) -> int:
    """Measured env steps for (kind, N): the table above, else the 1-env budget; rounded to a multiple of
    ours' chunk and of SB3's round (train_freq vector steps), so both windows end where a round ends."""
    steps = MEASURED_STEPS.get((kind, n), DEFAULT_MEASURED[kind]) * scale
    unit = math.lcm(chunk_steps(n), sb3_schedule(n)[0] * n)
    return max(unit, round(steps / unit) * unit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds; the median is reported")
    parser.add_argument(
        "--num-envs",
        default=None,
        help="vector envs, the same on both sides; comma-separated for a table per value (e.g. 1,8). "
        "Default: the suite, 1 env with every kind and 8 envs with the two compared pairs",
    )
    parser.add_argument(
        "--kinds", default=None, help=f"comma-separated subset of {', '.join(KINDS)} (default: all; the suite's)"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every measured-window budget (quick checks: 0.2)"
    )
    parser.add_argument(
        "--env", default="breakout", help="env config for our kinds (e.g. cartpole_pixels: a plumbing check, no doc)"
    )
    parser.add_argument("--no-write", action="store_true", help="print the report, leave docs/ alone")
    parser.add_argument("--one", choices=(*KINDS, "env_check"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--measured", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        n = int(args.num_envs or 1)
        print(json.dumps(run_one(args.one, args.seed, args.measured, n, args.env)))
        return
    kinds = args.kinds.split(",") if args.kinds else None
    unknown = sorted(set(kinds or ()) - set(KINDS))
    if unknown:
        parser.error(f"unknown kinds {unknown}; choose from {', '.join(KINDS)}")
    if args.num_envs is None:
        plan = {n: [k for k in suite if kinds is None or k in kinds] for n, suite in SUITE.items()}
    else:
        plan = {int(n): list(kinds or KINDS) for n in args.num_envs.split(",")}
    plan = {n: ks for n, ks in plan.items() if ks}
    jobs = [(k, n) for n, ks in plan.items() for k in ks]
    budgets = {(k, n): _budget(k, n, args.scale) for k, n in jobs}
    t_all = time.perf_counter()
    extra: dict = {"budgets": budgets}
    if args.env == "breakout":
        check = _measure("env_check", 1, 0, 0, args.env)
        extra["env_check"] = check
        print(f"env check: {check.get('error') or {k: check[k] for k in ('identical', 'first_diff', 'episodes')}}")
    results = []
    for rep in range(args.repeats):
        for kind, n in jobs if rep % 2 == 0 else jobs[::-1]:
            r = _measure(kind, n, rep, budgets[kind, n], args.env)
            if "error" in r:
                print(f"{kind:27s} N={n} seed {rep}: FAILED ({r['process_s']:.0f} s)\n{r['stderr']}", flush=True)
            else:
                print(
                    f"{kind:27s} N={n} seed {rep}: {r['steps_per_s']:7.1f} env-steps/s over {r['window_steps']} "
                    f"steps ({r['window_s']:.1f} s, {r['window_updates']} updates; process {r['process_s']:.0f} s) "
                    f"fwd {r.get('forwards')}",
                    flush=True,
                )
            results.append(r)
    extra["total_s"] = time.perf_counter() - t_all
    command = shlex.join(["python", *sys.argv])
    report = _report(results, plan, args.repeats, command, extra)
    print(report)
    print(f"total {extra['total_s']:.0f} s")
    failed = [r for r in results if "error" in r]
    if args.no_write:
        pass
    elif args.env != "breakout":
        print(f"--env {args.env}: a plumbing check, docs/benchmarks.md left alone")
    elif failed:
        print(f"{len(failed)} run(s) failed: docs/benchmarks.md left alone")
    else:
        write_section(report, MARKER)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
