"""Continuous control: this pipeline's SAC / TD3 vs Stable-Baselines3 (and a bare PyTorch SAC loop), side by side.

    make bench                      # or: .venv/bin/python benchmarks/control_sac.py
                                    # ~30 min on 2 idle cores (48 min measured beside a test suite)
    .venv/bin/python benchmarks/control_sac.py --only pendulum,tax --seeds 5 --no-write

Every measurement is a fresh process with one torch thread (SB3 on device cpu). The kinds compared with each
other run as a pair that starts together, one per core (`--jobs 2`; `--jobs 1`: one after the other), in
alternating order round by round; the next pair starts once both have ended. The per-run table gives each
run's CPU share (CPU s / wall s: well below 100 % means something else took the core) and the share of its
time another measured run was beside it. Every run's result is kept in outputs/benchmarks/control_sac.json,
so `--only ROWS` re-measures those rows and the section in docs/benchmarks.md (replaced) keeps the others.

Rows (`--only` takes a comma list of them):
  pendulum  SAC Pendulum-v1, RL-Zoo set (n_timesteps 20000, lr 1e-3, otherwise SB3 SAC defaults: buffer 1e6,
            learning_starts 100, batch 256, tau 0.005, gamma 0.99, train_freq 1, gradient_steps 1, ent_coef
            auto, net_arch [256, 256] for the actor and each critic, nothing shared): sb3 vs ours
            (`algo=sac env=pendulum`, whose defaults are that set). Throughput = env steps / training wall
            time; final deterministic evaluation over 10 episodes.
  tax       a bare PyTorch SAC loop written below (the networks and the update of pipeline/algos/sac.py, no
            Lightning, no buffer class) vs ours, both `--tax-steps` Pendulum steps (default 5000), paired.
  cheetah   HalfCheetah-v5, SAC (RL-Zoo: learning_starts 10000, lr 3e-4 = SB3's default, otherwise defaults)
            and TD3 (RL-Zoo: learning_starts 10000, normal action noise 0.1, lr 1e-3, batch 256, net_arch
            [400, 300]); throughput of the update phase only: env steps / wall time from env step 10000 (a
            chunk of ours ends there; SB3: after its first gradient step, at 10001) to the last step.
  pixels    SAC on DMC cheetah-run from pixels (84x84 grayscale, 3 frames stacked, action_repeat 4): ours
            `backbone=resnet18 backbone.freeze=all` (features cached: the encoder runs once per env step) vs
            SB3 SAC with a frozen timm ResNet-18 features extractor (share_features_extractor=True; SB3 runs
            it on every replayed batch), both on the env `pipeline.envs.make_env` builds; batch 64 on both
            sides. Probes time env.step, the encoder's forwards and the updates inside the measured window.
  profile   cProfile of ours and of SB3 on Pendulum (shorter runs): where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from breakout_dqn import ForwardTimer, _random_resnet18_weights, _WindowDone
from common import ONE_THREAD, ROOT, compose, machine, median, one_thread, versions, write_section

MARKER = "## Continuous control: SAC / TD3 vs Stable-Baselines3"
VERSIONED = ("torch", "stable-baselines3", "gymnasium", "mujoco", "dm-control", "timm", "pytorch-lightning")
EVAL_EPISODES = 10
PENDULUM = {"lr": 1e-3, "batch_size": 256, "buffer_size": 1_000_000, "learning_starts": 100, "tau": 0.005}
PENDULUM |= {"gamma": 0.99, "net": [256, 256]}
CHEETAH_STARTS = 10_000
CHEETAH_CHUNK = 250  # ours: a chunk ends exactly at learning_starts (the default 256 would end at 10240)
PIXELS = {"learning_starts": 300, "batch_size": 64, "buffer_size": 10_000, "action_repeat": 4, "frame_stack": 3}
PIXEL_CHUNK = 50  # ours: a chunk ends exactly at learning_starts
SOLVED = -200.0  # Pendulum: the learning criterion
STORE = ROOT / "outputs" / "benchmarks" / "control_sac.json"  # every row's runs, so `--only` keeps the others

ROWS = {
    "pendulum": ("sb3_sac_pendulum", "ours_sac_pendulum"),
    "tax": ("ours_sac_tax", "bare_sac_tax"),
    "cheetah": ("sb3_sac_cheetah", "ours_sac_cheetah", "sb3_td3_cheetah", "ours_td3_cheetah"),
    "pixels": ("sb3_sac_pixels", "ours_sac_pixels"),
    "profile": ("profile_ours_pendulum", "profile_sb3_pendulum"),
}
DESCRIBE = {
    "sb3_sac_pendulum": "SB3 SAC, MlpPolicy",
    "ours_sac_pendulum": "ours, `algo=sac env=pendulum`",
    "ours_sac_tax": "ours, `algo=sac env=pendulum`",
    "bare_sac_tax": "bare PyTorch SAC loop (this script)",
    "sb3_sac_cheetah": "SB3 SAC, [256, 256]",
    "ours_sac_cheetah": "ours, `algo=sac env=halfcheetah`",
    "sb3_td3_cheetah": "SB3 TD3, [400, 300]",
    "ours_td3_cheetah": "ours, `algo=td3 env=halfcheetah backbone.hidden_sizes=[400,300]`",
    "sb3_sac_pixels": "SB3 SAC, frozen timm ResNet-18 extractor (shared)",
    "ours_sac_pixels": "ours, `backbone=resnet18 backbone.freeze=all` (feature cache)",
}


# --------------------------------------------------------------------------- shared pieces
def _eval_pendulum(act, seed: int) -> float:
    """Deterministic return over EVAL_EPISODES Pendulum episodes, the seeds ours evaluates on
    (seed + 1_000_000 + k); `act` maps an observation batch to env actions."""
    import gymnasium as gym
    import numpy as np

    env = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1") for _ in range(EVAL_EPISODES)])
    obs, _ = env.reset(seed=[seed + 1_000_000 + i for i in range(EVAL_EPISODES)])
    returns, running = np.zeros(EVAL_EPISODES), np.ones(EVAL_EPISODES, dtype=bool)
    while running.any():
        obs, rewards, term, trunc, _ = env.step(act(obs))
        returns += rewards * running
        running &= ~(term | trunc)
    env.close()
    return float(returns.mean())


def timed_env_step(step, timer, totals: list):
    """`step` wrapped: while `timer.on`, its seconds and calls are added to `totals` ([seconds, calls])."""

    def timed(actions):
        t = time.perf_counter()
        out = step(actions)
        if timer.on:
            totals[0] += time.perf_counter() - t
            totals[1] += 1
        return out

    return timed


class _SB3Clock:
    """Wraps SB3's `model.train`: the measured window opens after the first gradient round at or past env step
    `window_from`, and every later round's time is summed (while `timer.on`)."""

    def __init__(self, model, window_from: int, timer: ForwardTimer | None = None):
        self.model, self.window_from, self.timer = model, window_from, timer
        self.t_mark: float | None = None
        self.step_mark = self.updates_mark = 0
        self.update_s = 0.0
        self._train = model.train
        model.train = self._timed

    def _timed(self, *args, **kwargs):
        t = time.perf_counter()
        self._train(*args, **kwargs)
        now = time.perf_counter()
        if self.t_mark is not None:
            self.update_s += now - t
        elif self.model.num_timesteps >= self.window_from:
            self.step_mark, self.updates_mark = int(self.model.num_timesteps), int(self.model._n_updates)
            self.t_mark = time.perf_counter()
            if self.timer is not None:
                self.timer.on = True

    def result(self, t0: float, t_end: float) -> dict:
        m = self.model
        return {
            "env_steps": int(m.num_timesteps),
            "train_s": t_end - t0,
            "updates": int(m._n_updates),
            "window_steps": int(m.num_timesteps) - self.step_mark,
            "window_s": t_end - self.t_mark,
            "window_updates": int(m._n_updates) - self.updates_mark,
            "window_update_s": self.update_s,
        }


def _sb3_model(algo: str, env, seed: int, **kwargs):
    from stable_baselines3 import SAC, TD3

    cls = {"sac": SAC, "td3": TD3}[algo]
    policy = kwargs.pop("policy", "MlpPolicy")
    return cls(policy, env, seed=seed, device="cpu", **kwargs)


def _ours(seed: int, overrides: list[str], window_from: int, stop_at_end: bool, probe: bool = False) -> dict:
    """A run of ours as benchmarks/cartpole_dqn.py runs it (run_job, no MLflow, no early stop), with a wrapper
    around `ContinuousQ.training_step` that records (env step, time, updates) after every chunk; with
    `stop_at_end` the run stops after its last chunk (no final evaluation or checkpoint). `probe`: also time
    env.step, the frozen encoder's forwards and the updates (`_learn`) inside the window."""
    one_thread()
    from pipeline.algos import sac
    from pipeline.run.job import run_job

    marks: list[tuple[int, float, int]] = []
    info: dict = {}
    timer = ForwardTimer()  # `on` flags the measured window
    env_s, learn_s = [0.0, 0], [0.0]
    original_step, original_learn = sac.ContinuousQ.training_step, sac.ContinuousQ._learn

    @functools.wraps(original_step)
    def timed_step(self, *args, **kwargs):
        if not marks and probe:
            if self.cache_features:
                timer.attach(self.net.encoder)
            self.env.step = timed_env_step(self.env.step, timer, env_s)
        out = original_step(self, *args, **kwargs)
        step = self.global_env_steps
        marks.append((step, time.perf_counter(), int(self.loop.updates)))
        timer.on = step >= window_from
        if step >= self.cfg.total_env_steps:
            info["updates"] = int(self.loop.updates)
            info["replay_bytes"] = float(self.buffer.bytes_per_transition())
            if stop_at_end:
                raise _WindowDone
        return out

    @functools.wraps(original_learn)
    def timed_learn(self, *args, **kwargs):
        t = time.perf_counter()
        out = original_learn(self, *args, **kwargs)
        if timer.on:
            learn_s[0] += time.perf_counter() - t
        return out

    sac.ContinuousQ.training_step = timed_step
    sac.ContinuousQ._learn = timed_learn
    tmp = tempfile.mkdtemp()
    common = ["logger=none", "progress=false", f"paths.outputs={tmp}", "eval.every_env_steps=0"]
    common += ["eval.stop_on_solve=false", "checkpoint.every_env_steps=0", "checkpoint.buffer=false"]
    cfg = compose([*overrides, f"seed={seed}", *common])
    t0 = time.perf_counter()
    result = None
    with contextlib.suppress(_WindowDone):
        result = run_job(cfg)
    start = next((m for m in marks if m[0] >= window_from), None)
    if start is None or not info:
        raise RuntimeError(f"the run ended before its measured window (marks {marks[-3:]})")
    end = marks[-1]
    out = {
        "env_steps": end[0],
        "train_s": result.train_s if result is not None else end[1] - t0,
        "window_steps": end[0] - start[0],
        "window_s": end[1] - start[1],
        "window_updates": end[2] - start[2],
        "window_update_s": learn_s[0],
        **info,
    }
    if result is not None:
        out["eval"] = result.eval_return_mean
    if probe:
        out |= {"window_env_s": env_s[0], "window_env_calls": env_s[1], "forwards": timer.summary()}
    return out


# --------------------------------------------------------------------------- Pendulum
def run_sb3_sac_pendulum(seed: int, a: argparse.Namespace) -> dict:
    one_thread()
    import gymnasium as gym

    p = PENDULUM
    model = _sb3_model(
        "sac",
        gym.make("Pendulum-v1"),
        seed,
        learning_rate=p["lr"],
        buffer_size=p["buffer_size"],
        learning_starts=p["learning_starts"],
        batch_size=p["batch_size"],
        tau=p["tau"],
        gamma=p["gamma"],
        policy_kwargs={"net_arch": p["net"]},
    )
    clock = _SB3Clock(model, 0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=a.steps)
    out = clock.result(t0, time.perf_counter())
    out["eval"] = _eval_pendulum(lambda obs: model.predict(obs, deterministic=True)[0], seed)
    return out


def run_ours_sac_pendulum(seed: int, a: argparse.Namespace) -> dict:
    overrides = ["algo=sac", "env=pendulum", "backbone=mlp", "backbone.hidden_sizes=[256,256]"]
    overrides += [f"total_env_steps={a.steps}", f"eval.episodes={EVAL_EPISODES}"]
    return _ours(seed, overrides, 0, stop_at_end=False)


def run_bare_sac_pendulum(seed: int, a: argparse.Namespace) -> dict:
    """SAC as plainly as PyTorch allows, the floor the framework is measured against: the networks of
    pipeline/networks/continuous.py (an MLP [256, 256] actor with a (mean, log-std) head, two MLP [256, 256]
    critics on [s, a]) and the update of pipeline/algos/sac.py (critic step on the twin-minimum target, actor
    step with the critics' weights not requiring grad, entropy-coefficient step, one foreach-lerp Polyak
    step), fused Adam, a preallocated tensor replay, the first update once a batch is stored (as ours)."""
    one_thread()
    import copy
    import math

    import gymnasium as gym
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    p = PENDULUM
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make("Pendulum-v1")
    n_obs, n_act = env.observation_space.shape[0], env.action_space.shape[0]
    half = float(env.action_space.high[0])
    h1, h2 = p["net"]

    def mlp(n_in: int, n_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(n_in, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, n_out))

    actor = mlp(n_obs, 2 * n_act)
    critics = nn.ModuleList([mlp(n_obs + n_act, 1) for _ in range(2)])
    targets = copy.deepcopy(critics).requires_grad_(False)
    log_alpha = torch.zeros((), requires_grad=True)
    critic_params = list(critics.parameters())
    critic_opt = torch.optim.Adam(critic_params, lr=p["lr"], fused=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=p["lr"], fused=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=p["lr"])
    target_list, online_list = [t.data for t in targets.parameters()], [t.data for t in critic_params]
    target_entropy = -float(n_act)
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def policy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = actor(x).split(n_act, dim=-1)
        log_std = log_std.clamp(-20.0, 2.0)
        noise = torch.randn_like(mean)
        u = mean + log_std.exp() * noise
        logp = (-0.5 * noise.pow(2) - log_std - half_log_2pi).sum(-1)
        logp = logp - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), logp

    def q2(nets: nn.ModuleList, s: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([s, act], dim=-1)
        return torch.stack([net(x).squeeze(-1) for net in nets])

    cap, batch = min(p["buffer_size"], a.steps), p["batch_size"]
    b_obs, b_next = torch.zeros(cap, n_obs), torch.zeros(cap, n_obs)
    b_act, b_rew, b_disc = torch.zeros(cap, n_act), torch.zeros(cap), torch.zeros(cap)
    size = pos = updates = 0
    obs, _ = env.reset(seed=seed)
    t0 = time.perf_counter()
    for step in range(1, a.steps + 1):
        if step - 1 < p["learning_starts"]:
            action = rng.uniform(-1.0, 1.0, size=n_act).astype(np.float32)
        else:
            with torch.inference_mode():
                action = policy(torch.from_numpy(obs).unsqueeze(0))[0][0].numpy()
        next_obs, reward, term, trunc, _ = env.step(half * action)
        b_obs[pos], b_next[pos] = torch.from_numpy(obs), torch.from_numpy(next_obs)
        b_act[pos] = torch.from_numpy(action)
        b_rew[pos], b_disc[pos] = float(reward), 0.0 if term else p["gamma"]
        pos, size = (pos + 1) % cap, min(size + 1, cap)
        obs = env.reset()[0] if term or trunc else next_obs
        if step < p["learning_starts"] or size < batch:
            continue
        idx = torch.randint(0, size, (batch,))
        s, act, r, s2, d = b_obs[idx], b_act[idx], b_rew[idx], b_next[idx], b_disc[idx]
        alpha = log_alpha.detach().exp()
        with torch.no_grad():
            a2, logp2 = policy(s2)
            target = r + d * (q2(targets, s2, a2).min(dim=0).values - alpha * logp2)
        critic_loss = 0.5 * ((q2(critics, s, act) - target.unsqueeze(0)) ** 2).mean(dim=1).sum()
        critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_opt.step()
        a_pi, logp = policy(s)
        for q in critic_params:
            q.requires_grad_(False)
        actor_loss = (alpha * logp - q2(critics, s, a_pi).min(dim=0).values).mean()
        actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        actor_opt.step()
        for q in critic_params:
            q.requires_grad_(True)
        alpha_loss = -(log_alpha * (logp.detach() + target_entropy)).mean()
        alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        alpha_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(target_list, online_list, p["tau"])
        updates += 1
    train_s = time.perf_counter() - t0
    env.close()

    def act(o):
        with torch.inference_mode():
            mean = actor(torch.from_numpy(o).float()).split(n_act, dim=-1)[0]
            return (half * torch.tanh(mean)).numpy()

    return {"env_steps": a.steps, "train_s": train_s, "updates": updates, "eval": _eval_pendulum(act, seed)}


# --------------------------------------------------------------------------- HalfCheetah
def _cheetah_total(a: argparse.Namespace) -> int:
    return CHEETAH_STARTS + a.update_steps


def run_sb3_sac_cheetah(seed: int, a: argparse.Namespace) -> dict:
    one_thread()
    import gymnasium as gym

    model = _sb3_model("sac", gym.make("HalfCheetah-v5"), seed, learning_starts=CHEETAH_STARTS)
    clock = _SB3Clock(model, CHEETAH_STARTS)
    t0 = time.perf_counter()
    model.learn(total_timesteps=_cheetah_total(a))
    return clock.result(t0, time.perf_counter())


def run_sb3_td3_cheetah(seed: int, a: argparse.Namespace) -> dict:
    one_thread()
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.noise import NormalActionNoise

    env = gym.make("HalfCheetah-v5")
    n = env.action_space.shape[0]
    model = _sb3_model(
        "td3",
        env,
        seed,
        learning_starts=CHEETAH_STARTS,
        learning_rate=1e-3,
        batch_size=256,
        train_freq=1,
        gradient_steps=1,
        action_noise=NormalActionNoise(np.zeros(n), 0.1 * np.ones(n)),
        policy_kwargs={"net_arch": [400, 300]},
    )
    clock = _SB3Clock(model, CHEETAH_STARTS)
    t0 = time.perf_counter()
    model.learn(total_timesteps=_cheetah_total(a))
    return clock.result(t0, time.perf_counter())


def _ours_cheetah(seed: int, a: argparse.Namespace, algo: list[str]) -> dict:
    overrides = ["env=halfcheetah", "backbone=mlp", *algo, f"algo.learning_starts={CHEETAH_STARTS}"]
    overrides += [f"algo.chunk_steps={CHEETAH_CHUNK}", f"total_env_steps={_cheetah_total(a)}", "eval.episodes=1"]
    return _ours(seed, overrides, CHEETAH_STARTS, stop_at_end=True)


def run_ours_sac_cheetah(seed: int, a: argparse.Namespace) -> dict:
    return _ours_cheetah(seed, a, ["algo=sac", "algo.lr=3e-4", "backbone.hidden_sizes=[256,256]"])


def run_ours_td3_cheetah(seed: int, a: argparse.Namespace) -> dict:
    algo = ["algo=td3", "algo.lr=1e-3", "algo.batch_size=256", "algo.action_noise=0.1"]
    return _ours_cheetah(seed, a, [*algo, "backbone.hidden_sizes=[400,300]"])


# --------------------------------------------------------------------------- DMC pixels
def _pixel_overrides(seed: int) -> list[str]:
    """The env (and the SAC settings both sides share) as ours composes them; the SB3 env is built from it."""
    p = PIXELS
    return [
        "algo=sac",
        "env=dmc",
        "env.id=cheetah-run",
        "env.obs_mode=pixels",
        "backbone=resnet18",
        f"env.action_repeat={p['action_repeat']}",
        f"env.frame_stack={p['frame_stack']}",
        f"algo.learning_starts={p['learning_starts']}",
        f"algo.batch_size={p['batch_size']}",
        f"algo.buffer_size={p['buffer_size']}",
        f"seed={seed}",
    ]


def _sb3_extractor_class():
    import timm
    import torch
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class FrozenResNet18(BaseFeaturesExtractor):
        """timm resnet18, classifier removed, every weight frozen and kept in eval mode (BatchNorm statistics
        fixed: SB3 calls train(True) before its updates), the same input normalisation as ours."""

        def __init__(self, observation_space, features_dim: int = 512):
            super().__init__(observation_space, features_dim)
            in_chans = observation_space.shape[0]
            self.model = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=in_chans)
            self.model.requires_grad_(False).eval()
            self.register_buffer("mean", torch.full((1, in_chans, 1, 1), 0.449))
            self.register_buffer("std", torch.full((1, in_chans, 1, 1), 0.226))

        def train(self, mode: bool = True):
            super().train(mode)
            self.model.eval()
            return self

        def forward(self, obs):  # SB3 has already scaled uint8 to [0, 1]
            return self.model((obs - self.mean) / self.std)

    return FrozenResNet18


def run_sb3_sac_pixels(seed: int, a: argparse.Namespace) -> dict:
    one_thread()
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from pipeline.config.load import to_config
    from pipeline.envs import make_env

    p = PIXELS
    env_cfg = to_config(compose(_pixel_overrides(seed))).env
    env = DummyVecEnv([lambda: Monitor(make_env(env_cfg))])
    timer = ForwardTimer()
    model = _sb3_model(
        "sac",
        env,
        seed,
        policy="CnnPolicy",
        learning_rate=1e-3,
        buffer_size=p["buffer_size"],
        learning_starts=p["learning_starts"],
        batch_size=p["batch_size"],
        policy_kwargs={
            "features_extractor_class": _sb3_extractor_class(),
            "share_features_extractor": True,
            "net_arch": [256, 256],
        },
    )
    timer.attach(model.actor.features_extractor)  # = the critic's (shared)
    timer.attach(model.critic_target.features_extractor)
    env_s = [0.0, 0]
    model.env.step = timed_env_step(model.env.step, timer, env_s)
    clock = _SB3Clock(model, p["learning_starts"], timer)
    t0 = time.perf_counter()
    model.learn(total_timesteps=p["learning_starts"] + a.sb3_pixel_steps)
    out = clock.result(t0, time.perf_counter())
    return out | {"window_env_s": env_s[0], "window_env_calls": env_s[1], "forwards": timer.summary()}


def run_ours_sac_pixels(seed: int, a: argparse.Namespace) -> dict:
    p = PIXELS
    overrides = _pixel_overrides(seed)[:-1]
    overrides += ["backbone.freeze=all", f"backbone.weights={_random_resnet18_weights()}"]
    # The heads SB3 gets: the 512 features straight into the [256, 256] MLPs (no projection, no LayerNorm).
    overrides += ["backbone.embed_dim=0", "backbone.layer_norm=false", "algo.hidden_sizes=[256,256]"]
    overrides += ["algo.lr=1e-3", f"algo.chunk_steps={PIXEL_CHUNK}", "eval.episodes=1"]
    overrides += [f"total_env_steps={p['learning_starts'] + a.pixel_steps}"]
    return _ours(seed, overrides, p["learning_starts"], stop_at_end=True, probe=True)


# --------------------------------------------------------------------------- profiles
def _categorise(filename: str, func: str) -> str:
    f = filename.replace("\\", "/")
    if "torch._C._nn.linear" in func or "addmm" in func or func.endswith("'matmul'>"):
        return "linear layers, forward (GEMM)"
    if "run_backward" in func:
        return "autograd backward (GEMMs and elementwise)"
    if "_fused_adam" in func or "/optim/" in f:
        return "optimizer (Adam)"
    if "gymnasium/" in f or "/mujoco" in f or "pendulum" in f:
        return "env step (gymnasium)"
    if func.startswith("<built-in method torch.") or (func.startswith("<method '") and "torch" in func):
        return "other torch ops (C++)"
    if "torch/" in f:
        return "torch Python (nn.Module calls, autograd glue)"
    if "stable_baselines3/" in f:
        return "SB3 Python"
    if "pytorch_lightning/" in f or "lightning_fabric/" in f:
        return "Lightning"
    if "/pipeline/" in f:
        return "pipeline Python"
    if "numpy" in f or "numpy" in func:
        return "numpy"
    return "other (interpreter, builtins)"


def run_profile(kind: str, seed: int, a: argparse.Namespace) -> dict:
    """`kind` (ours or SB3 on Pendulum) for `--profile-steps` env steps under cProfile; only the training call
    is profiled. Returns each category's share of self time and the top functions by self time."""
    import cProfile
    import pstats

    one_thread()
    short = argparse.Namespace(**{**vars(a), "steps": a.profile_steps})
    prof = cProfile.Profile()
    if kind == "profile_sb3_pendulum":
        import gymnasium as gym

        p = PENDULUM
        model = _sb3_model(
            "sac",
            gym.make("Pendulum-v1"),
            seed,
            learning_rate=p["lr"],
            learning_starts=p["learning_starts"],
            policy_kwargs={"net_arch": p["net"]},
        )
        t0 = time.perf_counter()
        prof.runcall(model.learn, total_timesteps=short.steps)
        train_s = time.perf_counter() - t0
    else:
        from pipeline.run import train as train_mod

        fit = train_mod.pl.Trainer.fit

        def profiled_fit(self, *args, **kwargs):
            return prof.runcall(fit, self, *args, **kwargs)

        train_mod.pl.Trainer.fit = profiled_fit
        train_s = run_ours_sac_pendulum(seed, short)["train_s"]
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())  # tottime sums to the profiled time
    cats: dict[str, float] = {}
    rows = []
    for (filename, line, func), (_, ncalls, tottime, _, _) in stats.stats.items():
        label = func if filename == "~" else f"{os.path.basename(filename)}:{line}({func})"
        cat = _categorise(filename, func)
        cats[cat] = cats.get(cat, 0.0) + tottime
        rows.append((tottime, ncalls, label, cat))
    rows.sort(reverse=True)
    return {
        "env_steps": short.steps,
        "train_s": train_s,
        "profiled_s": total,
        "categories": {k: v / total for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "top": [{"label": lab, "calls": n, "self_s": t, "share": t / total, "cat": c} for t, n, lab, c in rows[:14]],
    }


def _tax_args(a: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(a), "steps": a.tax_steps})


RUNNERS = {
    "sb3_sac_pendulum": run_sb3_sac_pendulum,
    "ours_sac_pendulum": run_ours_sac_pendulum,
    "ours_sac_tax": lambda seed, a: run_ours_sac_pendulum(seed, _tax_args(a)),
    "bare_sac_tax": lambda seed, a: run_bare_sac_pendulum(seed, _tax_args(a)),
    "sb3_sac_cheetah": run_sb3_sac_cheetah,
    "ours_sac_cheetah": run_ours_sac_cheetah,
    "sb3_td3_cheetah": run_sb3_td3_cheetah,
    "ours_td3_cheetah": run_ours_td3_cheetah,
    "sb3_sac_pixels": run_sb3_sac_pixels,
    "ours_sac_pixels": run_ours_sac_pixels,
    "profile_ours_pendulum": functools.partial(run_profile, "profile_ours_pendulum"),
    "profile_sb3_pendulum": functools.partial(run_profile, "profile_sb3_pendulum"),
}


# --------------------------------------------------------------------------- scheduling
ROW_OF = {kind: row for row, kinds in ROWS.items() for kind in kinds}
PAIRS = {  # kinds compared with each other start together (one per core with --jobs 2)
    "pendulum": [ROWS["pendulum"]],
    "tax": [ROWS["tax"]],
    "cheetah": [ROWS["cheetah"][:2], ROWS["cheetah"][2:]],
    "pixels": [ROWS["pixels"]],
    "profile": [ROWS["profile"]],
}


def _plan(rows: list[str], a: argparse.Namespace) -> list[list[tuple[str, int]]]:
    """Groups of runs: each pair of compared kinds, once per round (the order reversed every other round);
    a group's runs start together and the next group starts once all of them have ended."""
    rounds = {"pendulum": a.seeds, "tax": a.seeds, "cheetah": a.cheetah_seeds, "pixels": a.pixel_seeds, "profile": 1}
    groups = []
    for row in ROWS:
        if row in rows:
            for r in range(rounds[row]):
                groups += [[(k, r) for k in (pair if r % 2 == 0 else pair[::-1])] for pair in PAIRS[row]]
    return groups


def _child_args(a: argparse.Namespace) -> list[str]:
    return [
        f"--steps={a.steps}",
        f"--tax-steps={a.tax_steps}",
        f"--update-steps={a.update_steps}",
        f"--pixel-steps={a.pixel_steps}",
        f"--sb3-pixel-steps={a.sb3_pixel_steps}",
        f"--profile-steps={a.profile_steps}",
    ]


def run_groups(groups: list[list[tuple[str, int]]], n_jobs: int, a: argparse.Namespace) -> list[dict]:
    """Each run `python <this script> --one KIND --seed S` in a fresh process with one thread, up to `n_jobs`
    of a group at a time; the result is the JSON of its last stdout line plus its start and end times and its
    CPU share (user + system CPU seconds / wall seconds: below ~0.95 something else took the core)."""
    env = {**os.environ, **ONE_THREAD}
    logs = Path(tempfile.mkdtemp(prefix="control_sac_"))
    done: list[dict] = []
    t_origin = time.perf_counter()
    for group in groups:
        pending, running = list(group), []
        while pending or running:
            while pending and len(running) < n_jobs:
                kind, seed = pending.pop(0)
                stem = logs / f"{kind}_{seed}"
                cmd = [sys.executable, __file__, "--one", kind, "--seed", str(seed), *_child_args(a)]
                with open(f"{stem}.out", "w") as out, open(f"{stem}.err", "w") as err:  # the child keeps copies
                    proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, cwd=ROOT)
                running.append((proc, kind, seed, time.perf_counter(), stem))
            time.sleep(0.2)
            for job in list(running):
                proc, kind, seed, t0, stem = job
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == 0:
                    continue
                proc.returncode = os.waitstatus_to_exitcode(status)
                running.remove(job)
                t1 = time.perf_counter()
                if proc.returncode != 0:
                    stderr = Path(f"{stem}.err").read_text()
                    raise RuntimeError(f"{kind} seed {seed} failed:\n{stderr[-3000:]}")
                r = json.loads(Path(f"{stem}.out").read_text().strip().splitlines()[-1])
                r |= {"kind": kind, "row": ROW_OF[kind], "seed": seed, "start": t0 - t_origin, "end": t1 - t_origin}
                r |= {"process_s": t1 - t0, "cpu_share": (usage.ru_utime + usage.ru_stime) / (t1 - t0)}
                done.append(r)
                print(_line(r), flush=True)
    for r in done:  # the share of each run's time another measured run was running beside it
        beside = sum(max(0.0, min(r["end"], o["end"]) - max(r["start"], o["start"])) for o in done if o is not r)
        r["beside"] = min(1.0, beside / r["process_s"])
    return done


def _rate(r: dict) -> float:
    if "window_s" in r and r["row"] not in ("pendulum", "tax"):
        return r["window_steps"] / r["window_s"]
    return r["env_steps"] / r["train_s"]


def _line(r: dict) -> str:
    if r["kind"].startswith("profile"):
        return f"{r['kind']:22s}: {r['env_steps']} steps profiled in {r['train_s']:.1f} s"
    ev = f", eval {r['eval']:7.1f}" if "eval" in r and r["row"] in ("pendulum", "tax") else ""
    return (
        f"{r['kind']:22s} seed {r['seed']}: {_rate(r):7.1f} env-steps/s, train {r['train_s']:6.1f} s, "
        f"process {r['process_s']:6.1f} s{ev}"
    )


# --------------------------------------------------------------------------- report
def _by(results: list[dict], kind: str) -> list[dict]:
    return sorted((r for r in results if r["kind"] == kind), key=lambda r: r["seed"])


def _stat(rows: list[dict]) -> str:
    v = [_rate(r) for r in rows]
    return f"{median(v):.1f} ({min(v):.1f}–{max(v):.1f})" if v else "–"


def _ratio(results: list[dict], num: str, den: str) -> float:
    a, b = [_rate(r) for r in _by(results, num)], [_rate(r) for r in _by(results, den)]
    return median(a) / median(b) if a and b else float("nan")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _pendulum_lines(results: list[dict], a: argparse.Namespace) -> list[str]:
    kinds = [k for k in ROWS["pendulum"] if _by(results, k)]
    if not kinds:
        return []
    lines = [
        f"### Pendulum-v1 SAC, {a.steps:,} env steps",
        "",
        "RL-Zoo's Pendulum set on both rows: lr 1e-3, buffer 1e6, learning_starts 100, batch 256, tau 0.005,",
        "gamma 0.99, train_freq 1, gradient_steps 1, ent_coef auto (from 1.0, target entropy -1), an MLP",
        "[256, 256] actor and two MLP [256, 256] critics on [s, a], nothing shared. Throughput = env steps /",
        "training wall time (SB3: `model.learn`; ours: `trainer.fit`, building the env and buffer and the final",
        "weights checkpoint included, buffer not checkpointed). Final evaluation: deterministic (tanh of the",
        "mean), 10 episodes, seeds seed + 1e6 + k, on both rows.",
        "",
        "| kind | what | env-steps/s (median, min–max) | training wall s (median) | gradient updates | "
        "final eval return per seed | seeds ≥ -200 |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in kinds:
        rows = _by(results, k)
        evals = ", ".join(f"{r['eval']:.0f}" for r in rows)
        ok = sum(r["eval"] >= SOLVED for r in rows)
        lines.append(
            f"| {k} | {DESCRIBE[k]} | {_stat(rows)} | {median([r['train_s'] for r in rows]):.1f} | "
            f"{rows[0]['updates']:,} | {evals} | {ok}/{len(rows)} |"
        )
    lines += ["", "| ratio | value | target | result |", "|---|---|---|---|"]
    ours = _by(results, "ours_sac_pendulum")
    if _by(results, "sb3_sac_pendulum") and ours:
        ratio = _ratio(results, "ours_sac_pendulum", "sb3_sac_pendulum")
        lines.append(f"| throughput, ours / SB3 | {ratio:.2f}× | ≥ 1.5× | {_verdict(ratio >= 1.5)} |")
    if ours:
        n_ok, need = sum(r["eval"] >= SOLVED for r in ours), math.ceil(0.8 * len(ours))
        lines.append(
            f"| ours: final eval ≥ -200 by {a.steps:,} steps | {n_ok} of {len(ours)} seeds | ≥ {need} of "
            f"{len(ours)} (4 of 5) | {_verdict(n_ok >= need)} |"
        )
    sb3 = _by(results, "sb3_sac_pendulum")
    if sb3 and ours:
        lines += [
            "",
            f"Gradient updates: SB3 trains once num_timesteps > learning_starts ({sb3[0]['updates']:,} updates),",
            f"ours once the buffer holds a batch of 256 ({ours[0]['updates']:,}): ours does",
            f"{100 * (1 - ours[0]['updates'] / sb3[0]['updates']):.1f} % fewer updates over the same env steps.",
        ]
    return [*lines, ""]


def _tax_lines(results: list[dict], a: argparse.Namespace) -> list[str]:
    kinds = [k for k in ROWS["tax"] if _by(results, k)]
    if not kinds:
        return []
    lines = [
        f"### Framework tax: ours vs a bare PyTorch SAC loop, Pendulum-v1, {a.tax_steps:,} env steps",
        "",
        "The bare loop (`run_bare_sac_pendulum` in benchmarks/control_sac.py) has the networks of",
        "pipeline/networks/continuous.py and the update of pipeline/algos/sac.py (critic step on the twin-minimum",
        "target, actor step with the critics' weights not requiring grad, entropy-coefficient step, one",
        "foreach-lerp Polyak step; fused Adam for actor and critics, plain Adam for the coefficient), a plain",
        "gymnasium env, a preallocated tensor replay, no Lightning; it starts updating when ours does (a batch",
        "stored). The Pendulum settings above; each pair of runs starts together, one per core.",
        "",
        "| kind | what | env-steps/s (median, min–max) | training wall s (median) | gradient updates | "
        "final eval return per seed |",
        "|---|---|---|---|---|---|",
    ]
    for k in kinds:
        rows = _by(results, k)
        evals = ", ".join(f"{r['eval']:.0f}" for r in rows)
        lines.append(
            f"| {k} | {DESCRIBE[k]} | {_stat(rows)} | {median([r['train_s'] for r in rows]):.1f} | "
            f"{rows[0]['updates']:,} | {evals} |"
        )
    if len(kinds) == 2:
        pairs = [
            1 - _rate(o) / _rate(b)
            for o in _by(results, "ours_sac_tax")
            for b in _by(results, "bare_sac_tax")
            if o["seed"] == b["seed"]
        ]
        tax = 1 - _ratio(results, "ours_sac_tax", "bare_sac_tax")
        per_pair = ", ".join(f"{100 * t:.1f} %" for t in pairs)
        lines += [
            "",
            "| ratio | value | target | result |",
            "|---|---|---|---|",
            f"| framework tax, 1 - ours / bare (medians; per pair: {per_pair}) | {100 * tax:.1f} % | ≤ 10 % | "
            f"{_verdict(tax <= 0.10)} |",
            "",
            "Ours' training time includes `trainer.fit`'s set-up (env, 1e6-slot buffer, evaluator) and the final",
            "weights checkpoint; the bare loop's is its loop alone.",
        ]
    return [*lines, ""]


def _cheetah_lines(results: list[dict], a: argparse.Namespace) -> list[str]:
    kinds = [k for k in ROWS["cheetah"] if _by(results, k)]
    if not kinds:
        return []
    lines = [
        f"### HalfCheetah-v5: the update phase ({CHEETAH_STARTS:,} random steps, then {a.update_steps:,} with updates)",
        "",
        "SAC: RL-Zoo's HalfCheetah set (learning_starts 10000, otherwise SB3 defaults: lr 3e-4, batch 256, buffer",
        "1e6, [256, 256]). TD3: RL-Zoo's (learning_starts 10000, Gaussian action noise 0.1, lr 1e-3, batch 256,",
        "train_freq 1, gradient_steps 1, [400, 300]; SB3 defaults policy_delay 2, target noise 0.2 clipped at",
        "0.5, tau 0.005); ours `algo=td3 backbone.hidden_sizes=[400,300] algo.action_noise=0.1`. Window: from",
        f"env step {CHEETAH_STARTS:,} (ours: `algo.chunk_steps={CHEETAH_CHUNK}`, so a chunk ends there; SB3: after its",
        "first gradient step, at 10,001) to the last step: env steps / wall time of the window, no evaluation",
        "(ours stops after its last chunk). The full 1M-step runs are out of reach on this machine.",
        "",
        "| kind | what | env-steps/s in the update phase (median, min–max) | ms per env step | "
        "updates in window | ms per update (update call alone) |",
        "|---|---|---|---|---|---|",
    ]
    for k in kinds:
        rows = _by(results, k)
        ms = 1e3 / median([_rate(r) for r in rows])
        upd = median([1e3 * r["window_update_s"] / max(r["window_updates"], 1) for r in rows])
        lines.append(f"| {k} | {DESCRIBE[k]} | {_stat(rows)} | {ms:.2f} | {rows[0]['window_updates']:,} | {upd:.2f} |")
    lines += ["", "| ratio (update-phase env-steps/s, medians) | value | target | result |", "|---|---|---|---|"]
    for algo in ("sac", "td3"):
        ours, sb3 = f"ours_{algo}_cheetah", f"sb3_{algo}_cheetah"
        if _by(results, ours) and _by(results, sb3):
            ratio = _ratio(results, ours, sb3)
            lines.append(f"| {algo.upper()}, ours / SB3 | {ratio:.2f}× | ≥ 1.5× | {_verdict(ratio >= 1.5)} |")
    lines.append("")
    lines.append(
        "ms per update is the update call alone (ours `_learn`: sampling and the gradient step(s); SB3 `train`:"
    )
    lines.append("its sampling, the step and its logging); the rest of an env step is acting, env and buffer.")
    return [*lines, ""]


def _forward_ms(r: dict) -> list[str]:
    parts = []
    for batch, (calls, secs) in r.get("forwards", {}).items():
        parts.append(f"{calls}× batch {batch} at {1e3 * secs / max(calls, 1):.1f} ms")
    return parts


def _pixel_lines(results: list[dict], a: argparse.Namespace) -> list[str]:
    kinds = [k for k in ROWS["pixels"] if _by(results, k)]
    if not kinds:
        return []
    p = PIXELS
    lines = [
        "### DMC cheetah-run from pixels: SAC on a frozen ResNet-18",
        "",
        f"`env=dmc env.id=cheetah-run env.obs_mode=pixels env.action_repeat={p['action_repeat']}` (84x84 grayscale, "
        f"{p['frame_stack']} frames stacked: uint8 [3, 84, 84]); SB3's env is built by `pipeline.envs.make_env` from",
        "the same composed config, so both see identical frames. SAC on both sides: lr 1e-3, batch "
        f"{p['batch_size']} (not 256:",
        "SB3 runs the ResNet five times per update on the batch, ~2 s per update at 256 on one thread),",
        f"learning_starts {p['learning_starts']}, buffer {p['buffer_size']:,}, heads: the 512 ResNet features into "
        "[256, 256] MLPs",
        "(ours `backbone.embed_dim=0 backbone.layer_norm=false`). ResNet-18 weights are random on both sides (no hub",
        "access here; ours gets a random timm resnet18 saved as .safetensors): the cost is the same as with",
        "ImageNet weights. SB3's extractor: `requires_grad_(False)` and kept in eval mode (BatchNorm fixed), shared",
        "by actor and critic (`share_features_extractor=True`); the target critic has its own copy (SB3's layout).",
        f"Window: from env step {p['learning_starts']} to the end; ours {a.pixel_steps} steps "
        f"(`algo.chunk_steps={PIXEL_CHUNK}`), SB3 {a.sb3_pixel_steps}",
        "(fewer: its updates are slow; both are steady state). Probes inside the window: env.step (rendering",
        "and physics), the ResNet's forwards (forward hooks), the update call; 'other' = the rest (acting",
        "heads, buffer, loop).",
        "",
        "| kind | what | env-steps/s (median, min–max) | ms per env step | env.step | ResNet forwards | "
        "updates (ms per update) | other | ResNet calls in the window |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in kinds:
        rows = _by(results, k)
        r = rows[0]
        n = r["window_steps"]
        ms = 1e3 * median([x["window_s"] / x["window_steps"] for x in rows])
        env_ms = 1e3 * median([x["window_env_s"] / x["window_steps"] for x in rows])
        fwd_ms = 1e3 * median([sum(s for _, s in x["forwards"].values()) / x["window_steps"] for x in rows])
        upd_ms = 1e3 * median([x["window_update_s"] / x["window_steps"] for x in rows])
        per_upd = 1e3 * median([x["window_update_s"] / max(x["window_updates"], 1) for x in rows])
        # The update call holds most of SB3's forwards: 'other' is what none of the three probes covers.
        fwd_in_update = k.startswith("sb3")
        other = ms - env_ms - upd_ms - (0.0 if fwd_in_update else fwd_ms)
        fwd_note = " (most inside the updates)" if fwd_in_update else ""
        lines.append(
            f"| {k} | {DESCRIBE[k]} | {_stat(rows)} | {ms:.1f} | {env_ms:.1f} | {fwd_ms:.1f}{fwd_note} | "
            f"{upd_ms:.1f} ({per_upd:.0f}) | {max(other, 0.0):.1f} | {'; '.join(_forward_ms(r))} over {n} steps |"
        )
    if _by(results, "ours_sac_pixels") and _by(results, "sb3_sac_pixels"):
        ratio = _ratio(results, "ours_sac_pixels", "sb3_sac_pixels")
        lines += ["", f"Throughput ours / SB3: **{ratio:.1f}×**."]
    return [*lines, ""]


def _profile_lines(results: list[dict]) -> list[str]:
    profs = sorted((r for r in results if r["row"] == "profile"), key=lambda r: r["kind"])
    if not profs:
        return []
    lines = [
        "### Where the time goes on Pendulum (cProfile)",
        "",
        "One shorter run each (ours: `trainer.fit` profiled; SB3: `model.learn`), one thread, the Pendulum settings",
        "above. Shares of self time (cProfile's own overhead inflates the Python rows, so read them as an upper",
        "bound); the GEMMs show up as `torch._C._nn.linear` (forward) and inside `run_backward` (backward).",
        "",
    ]
    cats = sorted({c for r in profs for c in r["categories"]})
    names = [r["kind"].removeprefix("profile_") for r in profs]
    lines += [
        "| category | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(profs),
    ]
    for c in sorted(cats, key=lambda c: -max(r["categories"].get(c, 0.0) for r in profs)):
        lines.append(f"| {c} | " + " | ".join(f"{100 * r['categories'].get(c, 0.0):.1f} %" for r in profs) + " |")
    lines.append(
        "| profiled env steps/s (with cProfile) | "
        + " | ".join(f"{r['env_steps'] / r['train_s']:.0f}" for r in profs)
        + " |"
    )
    for r, name in zip(profs, names, strict=True):
        lines += [
            "",
            f"Top self time, {name} ({r['env_steps']:,} env steps, {r['profiled_s']:.1f} s profiled):",
            "",
            "| function | calls | self s | share |",
            "|---|---|---|---|",
        ]
        for t in r["top"][:10]:
            lines.append(f"| `{t['label']}` | {t['calls']:,} | {t['self_s']:.2f} | {100 * t['share']:.1f} % |")
    return [*lines, ""]


def _per_run_lines(results: list[dict]) -> list[str]:
    lines = [
        "### Per run",
        "",
        "Process s includes interpreter start, imports, building and (Pendulum) the final evaluation; 'beside' is",
        "the share of the run's time another measured run was running on the other core; 'CPU' is the run's CPU",
        "seconds / wall seconds (well below 100 %: something outside the benchmark shared its core).",
        "",
        "| row | kind | seed | env steps | measured steps | measured s | env-steps/s | process s | beside | CPU "
        "| eval |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (list(ROWS).index(r["row"]), r["start"])):
        if r["row"] == "profile":
            continue
        pend = r["row"] in ("pendulum", "tax")
        steps = r["env_steps"] if pend else r["window_steps"]
        secs = r["train_s"] if pend else r["window_s"]
        ev = f"{r['eval']:.1f}" if pend else "–"
        cpu = f"{100 * r['cpu_share']:.0f} %" if r.get("cpu_share") is not None else "–"
        lines.append(
            f"| {r['row']} | {r['kind']} | {r['seed']} | {r['env_steps']:,} | {steps:,} | {secs:.1f} | "
            f"{_rate(r):.1f} | {r['process_s']:.1f} | {100 * r['beside']:.0f} % | {cpu} | {ev} |"
        )
    return [*lines, ""]


def _report(store: dict) -> str:
    results, runs = store["results"], store["invocations"]
    args = {row: argparse.Namespace(**inv["args"]) for row, inv in runs.items()}
    lines = [
        MARKER,
        "",
        f"Machine: {machine()}; one torch thread per process (SB3 on device cpu), each run a fresh process, kinds",
        "in alternating order round by round. Scheduling 'pairs': the kinds compared with each other (ours and",
        "SB3, ours and the bare loop) start together, one per core, and the next pair starts once both have",
        "ended (the faster run's core then idles while the slower one finishes: if anything that favours the",
        "slower one).",
        "",
        "| rows | command | measured | took | scheduling | seeds per kind | versions |",
        "|---|---|---|---|---|---|---|",
    ]
    by_command: dict[str, list[str]] = {}
    for row in ROWS:
        if row in runs:
            by_command.setdefault(json.dumps(runs[row], sort_keys=True), []).append(row)
    for key, rows in by_command.items():
        inv = json.loads(key)
        a = inv["args"]
        seeds = {"pendulum": a["seeds"], "tax": a["seeds"], "cheetah": a["cheetah_seeds"], "pixels": a["pixel_seeds"]}
        seeds_text = ", ".join(f"{r} {seeds[r]}" for r in rows if r in seeds) or "–"
        lines.append(
            f"| {', '.join(rows)} | `{inv['command']}` | {inv['date']} | {inv['wall_s'] / 60:.1f} min | "
            f"{inv['scheduling']} | {seeds_text} | {inv['versions']} |"
        )
    lines.append("")
    for row, render in (
        ("pendulum", _pendulum_lines),
        ("tax", _tax_lines),
        ("cheetah", _cheetah_lines),
        ("pixels", _pixel_lines),
    ):
        if row in args:
            lines += render([r for r in results if r["row"] == row], args[row])
    lines += _profile_lines(results)
    lines += _per_run_lines(results)
    return "\n".join(lines).rstrip("\n") + "\n"


def _merge(rows: list[str], results: list[dict], invocation: dict) -> dict:
    """The stored runs of every other row, and this invocation's for `rows`."""
    store = {"results": [], "invocations": {}}
    if STORE.exists():
        store = json.loads(STORE.read_text())
    store["results"] = [r for r in store["results"] if r["row"] not in rows] + results
    store["invocations"] = {k: v for k, v in store["invocations"].items() if k not in rows}
    store["invocations"] |= dict.fromkeys(rows, invocation)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per kind on Pendulum (pendulum, tax)")
    parser.add_argument("--cheetah-seeds", type=int, default=2)
    parser.add_argument("--pixel-seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20_000, help="Pendulum env steps (RL-Zoo: 20000)")
    parser.add_argument("--tax-steps", type=int, default=5_000, help="Pendulum env steps of the tax row")
    parser.add_argument("--update-steps", type=int, default=3_000, help="HalfCheetah steps after learning_starts")
    parser.add_argument("--pixel-steps", type=int, default=300, help="ours: DMC pixel steps after learning_starts")
    parser.add_argument("--sb3-pixel-steps", type=int, default=30, help="SB3: the same")
    parser.add_argument("--profile-steps", type=int, default=3_000, help="Pendulum env steps under cProfile")
    parser.add_argument("--only", default=",".join(ROWS), help=f"comma list of rows: {', '.join(ROWS)}")
    parser.add_argument("--jobs", type=int, default=2, help="runs of a pair at a time (1 = strictly sequential)")
    parser.add_argument("--one", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print the report, leave docs/ and the store alone")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(RUNNERS[args.one](args.seed, args)))
        return
    rows = [r for r in args.only.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--only: unknown row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    t0 = time.perf_counter()
    results = run_groups(_plan(rows, args), args.jobs, args)
    wall_s = time.perf_counter() - t0
    command = "python " + shlex.join(["benchmarks/control_sac.py", *sys.argv[1:]])
    if not sys.argv[1:]:
        command = "make bench (python benchmarks/control_sac.py)"
    invocation = {
        "command": command,
        "date": date.today().isoformat(),
        "wall_s": wall_s,
        "jobs": args.jobs,
        "scheduling": f"pairs, {args.jobs} run(s) at a time" if args.jobs > 1 else "one run at a time",
        "versions": versions(VERSIONED),
        "args": {k: v for k, v in vars(args).items() if k not in ("one", "seed", "no_write", "only")},
    }
    store = _merge(rows, results, invocation)
    report = _report(store)
    print(report)
    if not args.no_write:
        STORE.parent.mkdir(parents=True, exist_ok=True)
        STORE.write_text(json.dumps(store, indent=1))
        write_section(report, MARKER)


if __name__ == "__main__":
    main()
