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
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose, run_isolated, write_section

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
# A sparser game for reward shaping: 5 rooms, a 5-command quest; a random agent wins ~7 % of 50-step episodes.
SPARSE_FAMILY = [
    "env=textworld",
    "env.textworld.world_size=5",
    "env.textworld.nb_objects=6",
    "env.textworld.quest_length=5",
    "env.textworld.train_games=1",
    "env.textworld.held_out_games=0",
    "env.textworld.game_seed=3",
]
SHAPING = ["reward=lm_similarity", "reward.threshold=0.6", "reward.weight=1.0"]
# Fine-tuning a 22.7M-parameter transformer on 2 CPU cores: fewer, smaller updates (see the report).
FINETUNE = ["algo.batch_size=16", "algo.train_freq=8"]
EVAL_EPISODES = 24
SHAPING_EVAL_EVERY = 500  # env steps between greedy evaluations in the shaping runs
SHAPING_EVAL_EPISODES = 4


def _overrides(kind: str, seed: int, steps: int, outputs: Path) -> list[str]:
    if kind in ("sparse", "shaped"):
        goal = objective(outputs) if kind == "shaped" else ""
        setting = [*SPARSE_FAMILY, "backbone=minilm", *([*SHAPING, f"reward.goal='{goal}'"] if goal else [])]
    else:
        extra = FINETUNE if "freeze=none" in " ".join(ENCODERS[kind]) else []
        setting = [*FAMILY, *ENCODERS[kind], *extra]
    return [
        *setting,
        "algo=double_dqn",
        f"seed={seed}",
        f"total_env_steps={steps}",
        "algo.learning_starts=1000",
        f"algo.eps_decay_steps={steps // 2}",
        "algo.buffer_size=20000",
        # Shaping is judged by when the greedy policy first wins (the first won training episode comes from
        # random exploration, the same for both rewards); the encoder runs by their final evaluations.
        f"eval.every_env_steps={SHAPING_EVAL_EVERY if kind in ('sparse', 'shaped') else 0}",
        f"eval.episodes={SHAPING_EVAL_EPISODES}",
        "eval.stop_on_solve=false",
        "logger=none",
        "progress=false",
        f"paths.outputs={outputs}",
    ]


def objective(outputs: Path) -> str:
    """The sparse game's own objective text (the agent reads it at every reset): the shaped run's goal."""
    from pipeline.config.load import to_config
    from pipeline.envs.textworld import game_files

    cfg = to_config(compose([*SPARSE_FAMILY, "backbone=bow", f"paths.outputs={outputs}"]))
    game = game_files(cfg.env.textworld, "train", Path(cfg.env.textworld.cache_dir))[0]
    text = json.loads(game.with_suffix(".json").read_text())["objective"]
    return text.replace("'", "").replace('"', "")


def run_one(kind: str, seed: int, steps: int, outputs: Path) -> dict:
    """Train, then evaluate the greedy policy on the training games and on the held-out games."""
    import torch

    from pipeline.algos.evaluate import Evaluator
    from pipeline.config.load import to_config
    from pipeline.run.job import run_job

    overrides = _overrides(kind, seed, steps, outputs)  # before Hydra starts: `shaped` composes a config itself
    raw = compose(overrides)
    captured: dict = {}
    import pipeline.run.train as train_module

    original = train_module._fit_and_log

    greedy_wins: list[tuple[int, float]] = []  # (env step, greedy success rate) of each periodic evaluation

    def keep_module(cfg, module, *args, **kwargs):  # the trained policy, for the two evaluations below
        captured["module"] = module
        evaluate = module._evaluate

        def evaluate_and_record() -> None:
            evaluate()
            if module.evaluator is not None and module.evaluator.success is not None:
                greedy_wins.append((module.global_env_steps, float(module.evaluator.success.mean())))

        module._evaluate = evaluate_and_record
        return original(cfg, module, *args, **kwargs)

    train_module._fit_and_log = keep_module
    result = run_job(raw)
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
        "first_success_step": captured["module"].text_progress.first_success_step,
        "first_greedy_success_step": next((step for step, rate in greedy_wins if rate > 0), None),
    }


def random_agent_steps(outputs: Path, steps: int = 3000) -> tuple[int, float]:
    """TextWorld's own interface, the same games and infos as the adapter, a uniformly random command."""
    import textworld

    from pipeline.config.load import to_config
    from pipeline.envs.textworld import game_files

    cfg = to_config(compose([*FAMILY, "backbone=bow", f"paths.outputs={outputs}"]))
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
    return done_steps, time.perf_counter() - t0


def acting_vs_random(outputs: Path, steps: int = 3000) -> dict:
    """Acting alone, side by side in one process: the frozen-MiniLM DRRN choosing greedily through the
    gymnasium adapter (embedding cache on, no learning), then TextWorld's own random agent. The cache is
    warmed by one untimed pass, as it is after the first episodes of training."""
    import torch

    from pipeline.backbones.text import apply_freeze, build_text_encoder
    from pipeline.config.load import to_config
    from pipeline.core.paths import weights_cache
    from pipeline.envs import make_vector_env
    from pipeline.networks.text import DRRN
    from pipeline.run.session import weights_file

    torch.manual_seed(0)
    cfg = to_config(compose([*FAMILY, "backbone=minilm", f"paths.outputs={outputs}"]))
    encoder = build_text_encoder(cfg.backbone, weights_file(cfg), weights_cache(cfg.paths.outputs))
    apply_freeze(encoder, cfg.backbone)
    net = DRRN(encoder).eval()
    env = make_vector_env(cfg.env, cfg.env.num_envs)
    obs, _ = env.reset(seed=0)
    rates = []
    for _ in range(2):  # warm-up pass, then the timed one
        done_steps, t0 = 0, time.perf_counter()
        while done_steps < steps:
            obs, *_ = env.step(net.act_text(obs, env.admissible))
            done_steps += env.num_envs
        rates.append(done_steps / (time.perf_counter() - t0))
    env.close()
    random_steps, random_s = random_agent_steps(outputs, steps)
    return {
        "acting_steps_per_s": rates[-1],
        "random_steps_per_s": random_steps / random_s,
        "cache_hit_rate": net.cache.hit_rate,
    }


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


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="minilm_frozen,bow")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=15_000)
    parser.add_argument("--slow-kinds", default="minilm_finetuned,minilm_random", help="fewer seeds and steps")
    parser.add_argument("--slow-seeds", type=int, default=5)
    parser.add_argument("--slow-steps", type=int, default=6_000)
    parser.add_argument("--shaping-seeds", type=int, default=5)
    parser.add_argument("--shaping-steps", type=int, default=8_000)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, first-seed + 1, ...")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each one torch thread)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--outputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--random-rate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--from-log", type=Path, help="report the runs a stopped benchmark's log recorded")
    parser.add_argument("--throughput", action="store_true", help="only the acting-vs-random-agent rate, printed")
    return parser


def main() -> None:
    args = parser().parse_args()
    if args.throughput:
        out = args.outputs or Path(tempfile.mkdtemp()) / "outputs"
        r = acting_vs_random(out)
        text = (
            f"Acting throughput (`python benchmarks/textworld_drrn.py --throughput`, {date.today().isoformat()}, one "
            f"process, one torch thread): the frozen-MiniLM DRRN acting greedily through the adapter with its "
            f"embedding cache (hit rate {r['cache_hit_rate']:.3f}) ran {r['acting_steps_per_s']:.0f} env steps/s; "
            f"TextWorld's own random agent on the same games and infos {r['random_steps_per_s']:.0f} steps/s: "
            f"{r['acting_steps_per_s'] / r['random_steps_per_s']:.0%} (target >= 50 %)."
        )
        print(text)
        return
    if args.random_rate:
        steps, seconds = random_agent_steps(args.outputs)  # run_isolated derives steps_per_s from these two
        print(json.dumps({"env_steps": steps, "train_s": seconds}))
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.seed, args.steps, args.outputs)))
        return
    plan = [(k, args.seeds, args.steps) for k in args.kinds.split(",") if k]
    plan += [(k, args.slow_seeds, args.slow_steps) for k in args.slow_kinds.split(",") if k]
    plan += [(k, args.shaping_seeds, args.shaping_steps) for k in ("sparse", "shaped") if args.shaping_seeds]
    if args.from_log:  # a run stopped part-way: report the runs its log recorded, measure the random agent now
        results, wall = _results_from_log(args.from_log)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "outputs"
            rate = run_isolated(__file__, ["--random-rate", "--outputs", str(out)], "random agent")["steps_per_s"]
        _finish(_report(results, plan, rate, wall, args), args)
        return
    results = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outputs"
        objective(out)  # generate the games once, before runs that share the cache start in parallel
        jobs = [
            (kind, args.first_seed + seed, steps)
            for seed in range(max(s for _, s, _ in plan))
            for kind, seeds, steps in plan
            if seed < seeds
        ]

        def one(job: tuple[str, int, int]) -> tuple[str, int, dict | None]:
            kind, seed, steps = job
            cli = ["--one", kind, "--seed", str(seed), "--steps", str(steps), "--outputs", str(out)]
            try:
                r = run_isolated(__file__, cli, f"{kind} seed {seed}")
            except RuntimeError as ex:  # one failed run is reported, not the end of the benchmark
                print(f"{kind} {seed} FAILED {ex}", flush=True)
                return kind, seed, None
            print(kind, seed, json.dumps(r), flush=True)
            return kind, seed, r

        # The random agent is measured inside the same pool, so it shares the loop runs' conditions.
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            rate_future = pool.submit(run_isolated, __file__, ["--random-rate", "--outputs", str(out)], "random agent")
            for kind, _, r in sorted(pool.map(one, jobs), key=lambda x: x[1]):
                if r is not None:
                    results.setdefault(kind, []).append(r)
            rate = rate_future.result()["steps_per_s"]
    wall = time.perf_counter() - t0
    _finish(_report(results, plan, rate, wall, args), args)


def _finish(text: str, args: argparse.Namespace) -> None:
    print(text)
    if not args.no_write:
        write_section(text, MARKER)


def _results_from_log(log: Path) -> tuple[dict[str, list[dict]], float]:
    """The `<kind> <seed> <json>` lines a benchmark run printed (its wall time is unknown: NaN)."""
    results: dict[str, list[dict]] = {}
    for line in log.read_text().splitlines():
        match = re.fullmatch(r"(\w+) (\d+) (\{.*\})", line.strip())
        if match:
            results.setdefault(match[1], []).append(json.loads(match[3]))
    return results, float("nan")


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces this report (the options that differ from the defaults spelled out)."""
    defaults = vars(parser().parse_args([]))
    changed = [
        f"--{k.replace('_', '-')} {v if v != '' else chr(39) * 2}"
        for k, v in vars(args).items()
        if v != defaults[k] and k != "no_write"
    ]
    return " ".join(["python benchmarks/textworld_drrn.py", *changed])


def _report(results: dict[str, list[dict]], plan: list, rate: float, wall: float, args: argparse.Namespace) -> str:
    lines = [
        MARKER,
        "",
        f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, one torch thread per "
        f"run, {args.jobs} run(s) at a time; "
        + (f"{wall / 60:.0f} min in all" if wall == wall else "the per-run lines of a run stopped part-way")
        + f". Command: `{command(args)}`. Family: "
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
        if not rs or kind in ("sparse", "shaped"):
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
    shaping = {k: results.get(k, []) for k in ("sparse", "shaped")}
    if all(shaping.values()):
        steps = next(s for k, _, s in plan if k == "sparse")
        lines += [
            "",
            f"Reward shaping on a sparser game (`{' '.join(SPARSE_FAMILY[1:])}`; a random agent wins about 7 % of "
            f"episodes), frozen MiniLM DRRN, {steps:,} env steps: env steps until the greedy policy first wins "
            f"(an evaluation of {SHAPING_EVAL_EPISODES} episodes every {SHAPING_EVAL_EVERY} env steps), sparse (the "
            f"game's score only) vs `{' '.join(SHAPING)} reward.goal=<the game's objective text>`. A run whose greedy "
            "policy never won is shown as '>budget' and counts as the budget in the median.",
            "",
            "| reward | seeds | steps to first greedy success, per seed | median | greedy success after training |",
            "|---|---|---|---|---|",
        ]
        for kind, rs in shaping.items():
            firsts = [r.get("first_greedy_success_step") for r in rs]
            shown = ", ".join(f"{f:,}" if f is not None else f">{steps:,}" for f in firsts)
            median = int(np.median([f if f is not None else steps for f in firsts]))
            wins = [r["success_train"] for r in rs]
            lines.append(f"| {kind} | {len(rs)} | {shown} | {median:,} | {', '.join(f'{w:.2f}' for w in wins)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
