"""TextWorld with a DRRN: what a pretrained sentence encoder adds, and what the embedding cache costs.

1. Success on training and held-out games of one seeded family, per encoder (MiniLM frozen, MiniLM
   fine-tuned, MiniLM randomly initialised and trained, hashed bag of words), several seeds each:
   IQM with 95 % bootstrap CIs over seeds, and the env steps each run used.
2. Env steps/s of the whole DRRN training loop (frozen MiniLM, embedding cache) against TextWorld's own
   random agent on the same games, measured in the same script.
3. Sparse vs `reward=lm_similarity`-shaped reward on a longer quest: env steps to the first won episode.

Each run is a fresh process (`--one`), one torch thread. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cartpole_dqn import ROOT, _write_section, run_isolated

MARKER = "## Language models: TextWorld with a DRRN"
FAMILY = [
    "env=textworld",
    "env.textworld.world_size=3",
    "env.textworld.nb_objects=4",
    "env.textworld.quest_length=3",
    "env.textworld.train_games=4",
    "env.textworld.held_out_games=4",
    "env.textworld.game_seed=7",
]
ENCODERS = {
    "minilm_frozen": ["backbone=minilm"],
    "bow": ["backbone=bow"],
    "minilm_finetuned": ["backbone=minilm", "backbone.freeze=none"],
    "minilm_random": ["backbone=minilm", "backbone.weights=null", "backbone.freeze=none"],
}
# Fine-tuning a 22.7M-parameter transformer on 2 CPU cores: fewer, smaller updates (see the report).
FINETUNE = ["algo.batch_size=16", "algo.train_freq=8"]
EVAL_EPISODES = 24


def _overrides(kind: str, seed: int, steps: int, outputs: Path) -> list[str]:
    extra = FINETUNE if "freeze=none" in " ".join(ENCODERS[kind]) else []
    return [
        *FAMILY,
        *ENCODERS[kind],
        *extra,
        "algo=double_dqn",
        f"seed={seed}",
        f"total_env_steps={steps}",
        "algo.learning_starts=1000",
        f"algo.eps_decay_steps={steps // 2}",
        "algo.buffer_size=20000",
        "eval.every_env_steps=0",
        "eval.stop_on_solve=false",
        "logger=none",
        "progress=false",
        f"paths.outputs={outputs}",
    ]


def run_one(kind: str, seed: int, steps: int, outputs: Path) -> dict:
    """Train, then evaluate the greedy policy on the training games and on the held-out games."""
    import torch
    from hydra import compose, initialize_config_dir

    from pipeline.config import register_configs, to_config
    from pipeline.evaluate import Evaluator
    from pipeline.train import train

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        raw = compose("config", overrides=_overrides(kind, seed, steps, outputs))
    captured: dict = {}
    import pipeline.train as train_module

    original = train_module._fit_and_log

    def keep_module(cfg, module, *args, **kwargs):  # the trained policy, for the two evaluations below
        captured["module"] = module
        return original(cfg, module, *args, **kwargs)

    train_module._fit_and_log = keep_module
    result = train(raw)
    cfg = to_config(raw)
    policy = captured["module"].policy.to("cpu").eval()
    success = {}
    for split, held_out in (("train", False), ("held_out", True)):
        evaluator = Evaluator(cfg.env, EVAL_EPISODES, seed + 10_000, evaluation=held_out)
        evaluator.run(policy, torch.device("cpu"))
        success[split] = float(evaluator.success.mean())
        evaluator.close()
    cache = getattr(policy, "cache", None)
    return {
        "env_steps": result.env_steps,
        "train_s": result.train_s,
        "success_train": success["train"],
        "success_held_out": success["held_out"],
        "cache_hit_rate": cache.hit_rate if cache is not None else float("nan"),
    }


def random_agent_rate(outputs: Path, steps: int = 3000) -> float:
    """TextWorld's own interface, the same games and infos as the adapter, a uniformly random command."""
    import textworld
    from hydra import compose, initialize_config_dir

    from pipeline.config import register_configs, to_config
    from pipeline.envs.textworld import game_files

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = to_config(compose("config", overrides=[*FAMILY, "backbone=bow", f"paths.outputs={outputs}"]))
    files = game_files(cfg.env.textworld, "train", Path(cfg.env.textworld.cache_dir))
    infos = textworld.EnvInfos(description=True, inventory=True, objective=True, admissible_commands=True)
    envs = [textworld.start(str(f), request_infos=infos) for f in files]
    rng = random.Random(0)
    done_steps = 0
    t0 = time.perf_counter()
    while done_steps < steps:
        env = rng.choice(envs)
        state = env.reset()
        for _ in range(50):
            state, _, done = env.step(rng.choice(state["admissible_commands"]))
            done_steps += 1
            if done:
                break
    return done_steps / (time.perf_counter() - t0)


def _iqm_ci(values: list[float], reps: int = 5000) -> tuple[float, float, float]:
    """Interquartile mean over runs and its 95 % percentile-bootstrap interval."""
    x = np.sort(np.asarray(values, dtype=float))

    def iqm(v: np.ndarray) -> float:
        v = np.sort(v)
        k = len(v) // 4
        return float(v[k : len(v) - k].mean())

    rng = np.random.default_rng(0)
    boots = [iqm(rng.choice(x, size=len(x), replace=True)) for _ in range(reps)]
    return iqm(x), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="minilm_frozen,bow")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=15_000)
    parser.add_argument("--slow-kinds", default="minilm_finetuned,minilm_random", help="fewer seeds and steps")
    parser.add_argument("--slow-seeds", type=int, default=2)
    parser.add_argument("--slow-steps", type=int, default=6_000)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--outputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--random-rate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.random_rate:
        print(json.dumps({"steps_per_s": random_agent_rate(args.outputs), "env_steps": 1, "train_s": 1}))
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.seed, args.steps, args.outputs)))
        return
    plan = [(k, args.seeds, args.steps) for k in args.kinds.split(",") if k]
    plan += [(k, args.slow_seeds, args.slow_steps) for k in args.slow_kinds.split(",") if k]
    results: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outputs"
        for seed in range(max(s for _, s, _ in plan)):
            for kind, seeds, steps in plan:
                if seed >= seeds:
                    continue
                cli = ["--one", kind, "--seed", str(seed), "--steps", str(steps), "--outputs", str(out)]
                r = run_isolated(__file__, cli, f"{kind} seed {seed}")
                results.setdefault(kind, []).append(r)
                print(kind, seed, json.dumps(r), flush=True)
        rate = run_isolated(__file__, ["--random-rate", "--outputs", str(out)], "random agent")["steps_per_s"]
    wall = time.perf_counter() - t0
    text = _report(results, plan, rate, wall, args)
    print(text)
    if not args.no_write:
        _write_section(text, ROOT / "docs" / "benchmarks.md", marker=MARKER)


def _report(results: dict[str, list[dict]], plan: list, rate: float, wall: float, args: argparse.Namespace) -> str:
    lines = [
        MARKER,
        "",
        f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, one torch thread per "
        f"run; {wall / 60:.0f} min in all. Command: `python benchmarks/textworld_drrn.py` (defaults). Family: "
        f"`{' '.join(FAMILY)}` (4 training games, 4 held-out games of the same generator settings); Double DQN "
        f"DRRN, {EVAL_EPISODES} greedy evaluation episodes per split after training. Success = fraction of "
        "evaluation episodes won within 50 steps; IQM over seeds with a 95 % percentile-bootstrap interval.",
        "",
        "| encoder | seeds | env steps | success, training games: IQM [95 % CI] | success, held-out games | "
        "env steps/s | cache hit rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, _, steps in plan:
        rs = results.get(kind, [])
        if not rs:
            continue
        tr = _iqm_ci([r["success_train"] for r in rs])
        ho = _iqm_ci([r["success_held_out"] for r in rs])
        sps = float(np.median([r["steps_per_s"] for r in rs]))
        hit = float(np.median([r["cache_hit_rate"] for r in rs]))
        hit_text = "—" if np.isnan(hit) else f"{hit:.3f}"
        lines.append(
            f"| {kind} | {len(rs)} | {steps:,} | {tr[0]:.2f} [{tr[1]:.2f}, {tr[2]:.2f}] | "
            f"{ho[0]:.2f} [{ho[1]:.2f}, {ho[2]:.2f}] | {sps:.0f} | {hit_text} |"
        )
    frozen = results.get("minilm_frozen", [])
    if frozen:
        loop_rate = float(np.median([r["steps_per_s"] for r in frozen]))
        lines += [
            "",
            f"Throughput: the frozen-MiniLM DRRN training loop (acting, replay, updates, cache) ran at "
            f"{loop_rate:.0f} env steps/s (median over seeds); TextWorld's own random agent on the same games and "
            f"infos at {rate:.0f} steps/s, so the loop keeps {loop_rate / rate:.0%} of the raw env rate "
            "(target: >= 50 %).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
