"""CartPole-v1 PPO: this pipeline vs Stable-Baselines3 at identical hyperparameters, side by side.

    make bench                      # or: .venv/bin/python benchmarks/cartpole_ppo.py --seeds 3

Every measurement is a fresh process with one torch thread; kinds alternate seed by seed. Both sides
use RL-Zoo's tuned CartPole set (below) and the same network: separate actor and critic MLPs
[64, 64] with tanh, linear heads. Results go to docs/benchmarks.md (section replaced).

Kinds:
  sb3_zoo   Stable-Baselines3 PPO, MlpPolicy, 100k steps
  ours_zoo  this pipeline, `algo=ppo` with the same settings, no early stop, no MLflow, default checkpoints
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date

from cartpole_dqn import _eval_sb3, _ours
from common import median, one_thread, run_isolated, write_section

ZOO = {
    "n_envs": 8,
    "n_steps": 32,
    "batch_size": 256,
    "n_epochs": 20,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "lr": 1e-3,
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "total": 100_000,
}
KINDS = ("sb3_zoo", "ours_zoo")


def run_sb3(seed: int) -> dict:
    one_thread()
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=ZOO["n_envs"], seed=seed)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=ZOO["n_steps"],
        batch_size=ZOO["batch_size"],
        n_epochs=ZOO["n_epochs"],
        gae_lambda=ZOO["gae_lambda"],
        gamma=ZOO["gamma"],
        learning_rate=lambda remaining: ZOO["lr"] * remaining,
        clip_range=lambda remaining: ZOO["clip_range"] * remaining,
        ent_coef=ZOO["ent_coef"],
        seed=seed,
        device="cpu",
    )
    t0 = time.perf_counter()
    model.learn(total_timesteps=ZOO["total"])
    train_s = time.perf_counter() - t0
    return {"train_s": train_s, "env_steps": int(model.num_timesteps), "eval": _eval_sb3(model, seed)}


def run_ours_zoo(seed: int) -> dict:
    rollout = ZOO["n_envs"] * ZOO["n_steps"]
    return _ours(
        seed,
        [
            "algo=ppo",
            f"env.num_envs={ZOO['n_envs']}",
            f"algo.n_steps={ZOO['n_steps']}",
            f"algo.minibatches={rollout // ZOO['batch_size']}",
            f"algo.epochs={ZOO['n_epochs']}",
            f"algo.gae_lambda={ZOO['gae_lambda']}",
            f"algo.gamma={ZOO['gamma']}",
            f"algo.lr={ZOO['lr']}",
            "algo.lr_end=0.0",
            f"algo.clip_range={ZOO['clip_range']}",
            "algo.clip_range_end=0.0",
            f"algo.ent_coef={ZOO['ent_coef']}",
            "algo.critic.backbone=separate",
            "backbone.hidden_sizes=[64,64]",
            "backbone.activation=tanh",
            f"total_env_steps={ZOO['total']}",
            "eval.every_env_steps=0",
            "eval.stop_on_solve=false",
        ],
    )


RUNNERS = {"sb3_zoo": run_sb3, "ours_zoo": run_ours_zoo}


def _measure(kind: str, seed: int) -> dict:
    result = run_isolated(__file__, ["--one", kind, "--seed", str(seed)], f"{kind} seed {seed}")
    return {**result, "kind": kind, "seed": seed}


def _report(results: list[dict], seeds: int, command: str) -> str:
    by = {k: [r for r in results if r["kind"] == k] for k in KINDS}
    sps = {k: [r["steps_per_s"] for r in by[k]] for k in KINDS}
    lines = [
        "## CartPole-v1 PPO: pipeline vs Stable-Baselines3",
        "",
        f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, one torch thread "
        f"per process, {seeds} seeds per kind, kinds alternating seed by seed.",
        f"Command: `{command}`",
        "",
        "RL-Zoo hyperparameters on both sides: 8 envs, n_steps 32, batch 256 (one minibatch), 20 epochs,",
        "gae_lambda 0.8, gamma 0.98, lr 1e-3 and clip 0.2 both linear to 0, ent_coef 0, 100k steps; separate",
        "actor and critic MLPs [64, 64] with tanh. Throughput is env steps / training wall time (setup excluded);",
        "ours includes its default periodic checkpoints (every 10k steps).",
        "",
        "| kind | env-steps/s (median, min–max) | training wall s (median) | final eval returns (10 episodes each) |",
        "|---|---|---|---|",
    ]
    for k in KINDS:
        rows = by[k]
        if rows:
            evals = ", ".join(format(r["eval"], ".0f") for r in rows)
            lines.append(
                f"| {k} | {median(sps[k]):.0f} ({min(sps[k]):.0f}–{max(sps[k]):.0f}) | "
                f"{median([r['train_s'] for r in rows]):.1f} | {evals} |"
            )
    ratio = median(sps["ours_zoo"]) / median(sps["sb3_zoo"])
    solved = {k: sum(r["eval"] >= 475 for r in by[k]) for k in KINDS}
    lines += [
        "",
        "| ratio | value | target |",
        "|---|---|---|",
        f"| throughput, ours / SB3 (same hyperparameters) | {ratio:.2f}× | ≥ 1.5× |",
        f"| seeds solved (final eval ≥ 475): ours | {solved['ours_zoo']}/{len(by['ours_zoo'])} | all |",
        f"| seeds solved (final eval ≥ 475): SB3 | {solved['sb3_zoo']}/{len(by['sb3_zoo'])} | |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print the report, leave docs/ alone")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(RUNNERS[args.one](args.seed)))
        return
    results = []
    for seed in range(args.seeds):
        for kind in KINDS if seed % 2 == 0 else KINDS[::-1]:
            r = _measure(kind, seed)
            print(f"{kind:9s} seed {seed}: {r['steps_per_s']:6.0f} env-steps/s, eval {r['eval']:6.1f}", flush=True)
            results.append(r)
    command = "make bench" if args.seeds == 3 else " ".join(["python", *sys.argv])
    report = _report(results, args.seeds, command)
    print(report)
    if not args.no_write:
        write_section(report, "## CartPole-v1 PPO")


if __name__ == "__main__":
    main()
