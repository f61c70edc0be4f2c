"""CartPole-v1 DQN: this pipeline vs Stable-Baselines3 vs a bare PyTorch loop, side by side.

    make bench                      # or: .venv/bin/python benchmarks/cartpole_dqn.py --seeds 5

Every measurement is a fresh process with one torch thread; the kinds alternate seed by seed so
drift on the machine hits all of them alike. Results go to docs/benchmarks.md (section replaced).

Kinds:
  sb3_zoo       Stable-Baselines3 DQN with the RL-Zoo CartPole set (below), 50k steps
  ours_zoo      this pipeline, same hyperparameters, no early stop, no MLflow
  bare_zoo      a bare PyTorch loop doing the same env steps and updates (no Lightning, no buffer class)
  ours_default  this pipeline's default config, stopping once evaluation reaches 475 (time to solve)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date

from common import compose, median, one_thread, run_isolated, write_section

ZOO = {
    "lr": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "gamma": 0.99,
    "target_update_interval": 10,
    "train_freq": 256,
    "gradient_steps": 128,
    "exploration_fraction": 0.16,
    "exploration_final_eps": 0.04,
    "net": [256, 256],
    "total": 50_000,
}
KINDS = ("sb3_zoo", "ours_zoo", "bare_zoo", "ours_default")
EVAL_EPISODES = 10


def _eval_sb3(model, seed: int) -> float:
    import gymnasium as gym
    import numpy as np

    env = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(EVAL_EPISODES)])
    obs, _ = env.reset(seed=[seed + 1_000_000 + i for i in range(EVAL_EPISODES)])
    returns, running = np.zeros(EVAL_EPISODES), np.ones(EVAL_EPISODES, dtype=bool)
    while running.any():
        actions, _ = model.predict(obs, deterministic=True)
        obs, rewards, term, trunc, _ = env.step(actions)
        returns += rewards * running
        running &= ~(term | trunc)
    return float(returns.mean())


def run_sb3(seed: int) -> dict:
    one_thread()
    from stable_baselines3 import DQN

    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        learning_rate=ZOO["lr"],
        batch_size=ZOO["batch_size"],
        buffer_size=ZOO["buffer_size"],
        learning_starts=ZOO["learning_starts"],
        gamma=ZOO["gamma"],
        target_update_interval=ZOO["target_update_interval"],
        train_freq=ZOO["train_freq"],
        gradient_steps=ZOO["gradient_steps"],
        exploration_fraction=ZOO["exploration_fraction"],
        exploration_final_eps=ZOO["exploration_final_eps"],
        policy_kwargs={"net_arch": ZOO["net"]},
        seed=seed,
        device="cpu",
    )
    t0 = time.perf_counter()
    model.learn(total_timesteps=ZOO["total"])
    train_s = time.perf_counter() - t0
    return {"train_s": train_s, "env_steps": ZOO["total"], "eval": _eval_sb3(model, seed)}


def _ours(seed: int, overrides: list[str]) -> dict:
    one_thread()
    import tempfile

    from pipeline.run.job import run_job

    tmp = tempfile.mkdtemp()
    cfg = compose([*overrides, f"seed={seed}", "logger=none", "progress=false", f"paths.outputs={tmp}"])
    result = run_job(cfg)
    return {
        "train_s": result.train_s,
        "env_steps": result.env_steps,
        "eval": result.eval_return_mean,
        "solved": result.solved,
    }


def run_ours_zoo(seed: int) -> dict:
    eps_steps = int(ZOO["exploration_fraction"] * ZOO["total"])
    return _ours(
        seed,
        [
            f"algo.lr={ZOO['lr']}",
            f"algo.batch_size={ZOO['batch_size']}",
            f"algo.buffer_size={ZOO['buffer_size']}",
            f"algo.learning_starts={ZOO['learning_starts']}",
            f"algo.gamma={ZOO['gamma']}",
            f"algo.target_update_interval={ZOO['target_update_interval']}",
            f"algo.train_freq={ZOO['train_freq']}",
            f"algo.gradient_steps={ZOO['gradient_steps']}",
            f"algo.eps_decay_steps={eps_steps}",
            f"algo.eps_end={ZOO['exploration_final_eps']}",
            "algo.double=false",
            "algo.chunk_steps=256",
            f"backbone.hidden_sizes=[{','.join(map(str, ZOO['net']))}]",
            f"total_env_steps={ZOO['total']}",
            "eval.every_env_steps=0",
            "eval.stop_on_solve=false",
            "checkpoint.every_env_steps=0",
        ],
    )


def run_ours_default(seed: int) -> dict:
    return _ours(seed, [])


def run_bare(seed: int) -> dict:
    """The same algorithm as plainly as PyTorch allows: the floor any framework is measured against."""
    one_thread()
    import gymnasium as gym
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make("CartPole-v1")

    def net() -> nn.Module:
        h1, h2 = ZOO["net"]
        return nn.Sequential(nn.Linear(4, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, 2))

    q, q_target = net(), net()
    q_target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=ZOO["lr"], fused=True)
    cap = ZOO["buffer_size"]
    b_obs, b_next = torch.zeros(cap, 4), torch.zeros(cap, 4)
    b_act, b_rew, b_term = torch.zeros(cap, dtype=torch.long), torch.zeros(cap), torch.zeros(cap)
    size = pos = 0
    eps_steps = int(ZOO["exploration_fraction"] * ZOO["total"])
    obs, _ = env.reset(seed=seed)
    t0 = time.perf_counter()
    for step in range(1, ZOO["total"] + 1):
        eps = 1.0 + min(step / eps_steps, 1.0) * (ZOO["exploration_final_eps"] - 1.0)
        if rng.random() < eps:
            action = int(rng.integers(2))
        else:
            with torch.inference_mode():
                action = int(q(torch.from_numpy(obs)).argmax())
        next_obs, reward, term, trunc, _ = env.step(action)
        b_obs[pos], b_next[pos] = torch.from_numpy(obs), torch.from_numpy(next_obs)
        b_act[pos], b_rew[pos], b_term[pos] = action, reward, float(term)
        pos, size = (pos + 1) % cap, min(size + 1, cap)
        obs = env.reset()[0] if term or trunc else next_obs
        if step % ZOO["target_update_interval"] == 0:
            q_target.load_state_dict(q.state_dict())
        if step >= ZOO["learning_starts"] and step % ZOO["train_freq"] == 0:
            for _ in range(ZOO["gradient_steps"]):
                idx = torch.randint(0, size, (ZOO["batch_size"],))
                with torch.no_grad():
                    target = b_rew[idx] + ZOO["gamma"] * (1 - b_term[idx]) * q_target(b_next[idx]).max(1).values
                pred = q(b_obs[idx]).gather(1, b_act[idx].unsqueeze(1)).squeeze(1)
                loss = F.smooth_l1_loss(pred, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(q.parameters(), 10.0, foreach=True)
                opt.step()
    train_s = time.perf_counter() - t0
    env.close()
    eval_env = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(EVAL_EPISODES)])
    o, _ = eval_env.reset(seed=[seed + 1_000_000 + i for i in range(EVAL_EPISODES)])
    returns, running = np.zeros(EVAL_EPISODES), np.ones(EVAL_EPISODES, dtype=bool)
    while running.any():
        with torch.inference_mode():
            a = q(torch.from_numpy(o)).argmax(1).numpy()
        o, r, te, tr, _ = eval_env.step(a)
        returns += r * running
        running &= ~(te | tr)
    return {"train_s": train_s, "env_steps": ZOO["total"], "eval": float(returns.mean())}


RUNNERS = {
    "sb3_zoo": run_sb3,
    "ours_zoo": run_ours_zoo,
    "bare_zoo": run_bare,
    "ours_default": run_ours_default,
}


def _measure(kind: str, seed: int) -> dict:
    result = run_isolated(__file__, ["--one", kind, "--seed", str(seed)], f"{kind} seed {seed}")
    return {**result, "kind": kind, "seed": seed}


def _report(results: list[dict], seeds: int, command: str) -> str:
    by = {k: [r for r in results if r["kind"] == k] for k in KINDS}
    sps = {k: [r["steps_per_s"] for r in by[k]] for k in KINDS}
    lines = [
        "## CartPole-v1 DQN: pipeline vs Stable-Baselines3 vs bare PyTorch",
        "",
        f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, one torch thread "
        f"per process, {seeds} seeds per kind, kinds alternating seed by seed.",
        f"Command: `{command}`",
        "",
        "RL-Zoo hyperparameters for every `*_zoo` row: lr 2.3e-3, batch 64, buffer 1e5, learning_starts 1000,",
        "gamma 0.99, target update every 10 steps, train_freq 256, gradient_steps 128, epsilon 1 → 0.04 over",
        "16 % of 50k steps, net [256, 256]. Throughput is env steps / training wall time (setup excluded).",
        "",
        "| kind | env-steps/s (median, min–max) | training wall s (median) | final eval returns (10 episodes each) |",
        "|---|---|---|---|",
    ]
    for k in KINDS:
        rows = by[k]
        if not rows:
            continue
        evals = ", ".join(format(r["eval"], ".0f") for r in rows)
        lines.append(
            f"| {k} | {median(sps[k]):.0f} ({min(sps[k]):.0f}–{max(sps[k]):.0f}) | "
            f"{median([r['train_s'] for r in rows]):.1f} | {evals} |"
        )
    sb3, ours, bare = median(sps["sb3_zoo"]), median(sps["ours_zoo"]), median(sps["bare_zoo"])
    default = by["ours_default"]
    solved = [r for r in default if r.get("solved")]
    sb3_solved = sum(r["eval"] >= 475 for r in by["sb3_zoo"])
    sb3_wall = median([r["train_s"] for r in by["sb3_zoo"]])
    ours_solve = median([r["train_s"] for r in default])
    lines += [
        "",
        "| ratio | value | target |",
        "|---|---|---|",
        f"| throughput, ours / SB3 (same hyperparameters) | {ours / sb3:.2f}× | ≥ 1.5× |",
        f"| framework tax, ours vs bare loop (1 - ours/bare) | {100 * (1 - ours / bare):.1f} % | ≤ 10 % |",
        f"| seeds solved by our default config (eval ≥ 475) | {len(solved)}/{len(default)} | all |",
        f"| SB3-Zoo seeds with final eval ≥ 475 | {sb3_solved}/{len(by['sb3_zoo'])} | |",
        f"| time to solve, ours default (median train s) / SB3-Zoo wall (median) | "
        f"{ours_solve:.1f} s / {sb3_wall:.1f} s = {ours_solve / sb3_wall:.2f} | ≤ 0.33 |",
        "",
        "Per run (process_s includes interpreter start, imports and the final evaluation):",
        "",
        "| kind | seed | env steps | train s | process s | env-steps/s | eval |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['kind']} | {r['seed']} | {r['env_steps']} | {r['train_s']:.1f} | {r['process_s']:.1f} | "
            f"{r['steps_per_s']:.0f} | {r['eval']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print the report, leave docs/ alone")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(RUNNERS[args.one](args.seed)))
        return
    kinds = args.kinds.split(",")
    results = []
    for seed in range(args.seeds):
        order = kinds if seed % 2 == 0 else kinds[::-1]
        for kind in order:
            r = _measure(kind, seed)
            print(
                f"{kind:13s} seed {seed}: {r['steps_per_s']:6.0f} env-steps/s, train {r['train_s']:5.1f} s, "
                f"eval {r['eval']:6.1f}",
                flush=True,
            )
            results.append(r)
    command = "make bench" if args.seeds == 5 and kinds == list(KINDS) else " ".join(["python", *sys.argv])
    report = _report(results, args.seeds, command)
    print(report)
    if not args.no_write:
        write_section(report, "## CartPole-v1 DQN")


if __name__ == "__main__":
    main()
