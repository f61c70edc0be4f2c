"""What Lightning and MLflow cost inside the RL loop: env-steps/s against `algo.chunk_steps` and the logger.

    make bench                     # runs this after cartpole_dqn.py
    .venv/bin/python benchmarks/loop_overhead.py --repeats 3

One `training_step` does `algo.chunk_steps` env steps; with chunk 1, Lightning's per-step machinery
runs once per env step. Default config (Double DQN, train_freq 4), 20k env steps, no evaluation, no
early stop, one torch thread, fresh process per measurement, variants alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import date

from common import compose, write_section

STEPS = 20_000
VARIANTS = {
    "chunk 1, no logger": ["algo.chunk_steps=1", "logger=none"],
    "chunk 16, no logger": ["algo.chunk_steps=16", "logger=none"],
    "chunk 256, no logger": ["algo.chunk_steps=256", "logger=none"],
    "chunk 256, MLflow (SQLite)": ["algo.chunk_steps=256", "logger=mlflow", "logger.log_model=false"],
}


def run_one(name: str) -> dict:
    import tempfile

    import torch

    from pipeline.run.job import run_job

    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp()
    overrides = [
        *VARIANTS[name],
        f"total_env_steps={STEPS}",
        "eval.every_env_steps=0",
        "eval.stop_on_solve=false",
        "checkpoint.every_env_steps=0",
        "progress=false",
        f"paths.outputs={tmp}",
    ]
    cfg = compose(overrides)
    result = run_job(cfg)
    return {"train_s": result.train_s, "env_steps": result.env_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    sps: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for rep in range(args.repeats):
        names = list(VARIANTS) if rep % 2 == 0 else list(VARIANTS)[::-1]
        for name in names:
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, "--one", name], capture_output=True, text=True, env=env, check=True
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            sps[name].append(r["env_steps"] / r["train_s"])
            print(f"{name:28s} {sps[name][-1]:6.0f} env-steps/s ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = statistics.median(sps["chunk 256, no logger"])
    lines = [
        "## Loop overhead: Lightning chunk size and MLflow logging",
        "",
        f"Measured {date.today().isoformat()}, {args.repeats} runs per variant, alternating; default config "
        f"(Double DQN + MLP, train_freq 4) on CartPole-v1, {STEPS} env steps, no evaluation, one torch thread.",
        "Command: `.venv/bin/python benchmarks/loop_overhead.py` (part of `make bench`)",
        "",
        "| variant | env-steps/s (median) | relative to chunk 256, no logger |",
        "|---|---|---|",
    ]
    for name, values in sps.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:.0f} | {med / base:.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        write_section(report, "## Loop overhead")


if __name__ == "__main__":
    main()
