"""Tabular Q-learning: this pipeline (`algo=q_learning`) vs a plain numpy loop over one gymnasium env.

    make bench                      # or: .venv/bin/python benchmarks/tabular.py --steps 500000

Both learn with the same schedule (gamma 0.99, alpha 0.5 → 0.01 over 200k steps, epsilon 1 → 0.1 over
10k steps) for the same number of env steps, in fresh processes with one thread, alternating. The
plain loop is what a newcomer writes: `env.step` per step, a numpy update per step. Ours steps 32
copies from the env's transition table and updates them in one batched operation. Both greedy
policies are then evaluated on gymnasium's own env. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date

from cartpole_dqn import _ours
from common import median, run_isolated, write_section

ENVS = {"taxi": "Taxi-v4", "frozenlake": "FrozenLake-v1", "cliffwalking": "CliffWalking-v1"}
MAX_STEPS = {"cliffwalking": 500}  # as conf/env/cliffwalking.yaml (gymnasium sets no limit)
EVAL_EPISODES = {"taxi": 100, "frozenlake": 1000, "cliffwalking": 10}
KINDS = ("plain_numpy", "ours")
GAMMA, LR0, LR1, LR_STEPS, EPS0, EPS1, EPS_STEPS = 0.99, 0.5, 0.01, 200_000, 1.0, 0.1, 10_000


def _greedy_eval(q, env_name: str, seed: int) -> float:
    import gymnasium as gym

    env = gym.make(ENVS[env_name], max_episode_steps=MAX_STEPS.get(env_name))
    total = 0.0
    for i in range(EVAL_EPISODES[env_name]):
        s, _ = env.reset(seed=seed + 1_000_000 + i)
        done = False
        while not done:
            s, r, term, trunc, _ = env.step(int(q[s].argmax()))
            total += r
            done = term or trunc
    return total / EVAL_EPISODES[env_name]


def run_plain(env_name: str, steps: int, seed: int) -> dict:
    import gymnasium as gym
    import numpy as np

    env = gym.make(ENVS[env_name], max_episode_steps=MAX_STEPS.get(env_name))
    rng = np.random.default_rng(seed)
    q = np.zeros((env.observation_space.n, env.action_space.n))
    n_actions = env.action_space.n
    s, _ = env.reset(seed=seed)
    t0 = time.perf_counter()
    for t in range(steps):
        eps = EPS0 + min(t / EPS_STEPS, 1.0) * (EPS1 - EPS0)
        lr = LR0 + min(t / LR_STEPS, 1.0) * (LR1 - LR0)
        a = int(rng.integers(n_actions)) if rng.random() < eps else int(q[s].argmax())
        s2, r, term, trunc, _ = env.step(a)
        target = r if term else r + GAMMA * q[s2].max()
        q[s, a] += lr * (target - q[s, a])
        s = env.reset()[0] if term or trunc else s2
    train_s = time.perf_counter() - t0
    return {"train_s": train_s, "env_steps": steps, "eval": _greedy_eval(q, env_name, seed)}


def run_ours(env_name: str, steps: int, seed: int) -> dict:
    return _ours(
        seed,
        [
            "algo=q_learning",
            f"env={env_name}",
            f"total_env_steps={steps}",
            f"eval.episodes={EVAL_EPISODES[env_name]}",
            "eval.every_env_steps=0",
            "eval.stop_on_solve=false",
        ],
    )


def _measure(kind: str, env_name: str, steps: int, seed: int) -> dict:
    args = ["--one", kind, "--env", env_name, "--steps", str(steps), "--seed", str(seed)]
    result = run_isolated(__file__, args, f"{kind} {env_name} seed {seed}")
    return {**result, "kind": kind, "env": env_name, "seed": seed}


def _report(results: list[dict], steps: int, seeds: int, command: str) -> str:
    lines = [
        "## Tabular Q-learning: pipeline vs a plain numpy loop",
        "",
        f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, one thread per "
        f"process, {seeds} seeds per kind and env, kinds alternating.",
        f"Command: `{command}`",
        "",
        f"{steps:,} env steps each; gamma 0.99, alpha 0.5 → 0.01 over 200k steps, epsilon 1 → 0.1 over 10k. Throughput",
        "is env steps / training wall time (ours: `trainer.fit`, Lightning and checkpoints included; setup excluded).",
        "Greedy evaluation on gymnasium's env: Taxi mean return over 100 episodes, FrozenLake success rate over",
        "1000, CliffWalking return.",
        "",
        "| env | plain numpy env-steps/s | ours env-steps/s | ratio (target ≥ 1) | greedy eval plain "
        "| greedy eval ours |",
        "|---|---|---|---|---|---|",
    ]
    for env_name in ENVS:
        rows = {k: [r for r in results if r["kind"] == k and r["env"] == env_name] for k in KINDS}
        if not all(rows.values()):
            continue
        sps = {k: median([r["steps_per_s"] for r in rows[k]]) for k in KINDS}
        evals = {k: ", ".join(f"{r['eval']:.2f}" for r in rows[k]) for k in KINDS}
        lines.append(
            f"| {env_name} | {sps['plain_numpy']:,.0f} | {sps['ours']:,.0f} | "
            f"{sps['ours'] / sps['plain_numpy']:.1f}× | {evals['plain_numpy']} | {evals['ours']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--env", choices=list(ENVS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print the report, leave docs/ alone")
    args = parser.parse_args()
    if args.one:
        runner = run_plain if args.one == "plain_numpy" else run_ours
        print(json.dumps(runner(args.env, args.steps, args.seed)))
        return
    results = []
    for env_name in ENVS:
        for seed in range(args.seeds):
            for kind in KINDS if seed % 2 == 0 else KINDS[::-1]:
                r = _measure(kind, env_name, args.steps, seed)
                print(
                    f"{env_name:12s} {kind:11s} seed {seed}: {r['steps_per_s']:9,.0f} env-steps/s, eval {r['eval']:.2f}"
                )
                results.append(r)
    default = args.steps == 500_000 and args.seeds == 2
    command = "make bench" if default else " ".join(["python", *sys.argv])
    report = _report(results, args.steps, args.seeds, command)
    print(report)
    if not args.no_write:
        write_section(report, "## Tabular Q-learning")


if __name__ == "__main__":
    main()
