"""DQN extensions vs plain DQN on MinAtar Breakout: a real sweep (5 seeds each, jobs in parallel) whose
comparison report (rliable IQM, 95% CIs, probability of improvement) goes into docs/benchmarks.md.

    .venv/bin/python benchmarks/dqn_extensions.py [--steps 50000] [--no-write]

Report only: the result is whatever the data says at this budget.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_section

MARKER = "## DQN extensions on MinAtar Breakout"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--from-report", type=Path, help=argparse.SUPPRESS)  # re-render a finished sweep's report
    parser.add_argument("--wall-s", type=float, default=float("nan"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    seeds = ",".join(str(s) for s in range(args.seeds))
    grid = [
        "-m",
        "sweep=grid",
        "env=minatar_breakout",
        "backbone=small_cnn",
        "algo=dqn,rainbow_lite",
        f"seed={seeds}",
        f"total_env_steps={args.steps}",
        "eval.every_env_steps=5000",
        "eval.stop_on_solve=false",
        "algo.eps_decay_steps=10000",
        "algo.target_update_interval=1000",
        "progress=false",
    ]
    if args.from_report is not None:
        _write(args, grid, args.from_report.read_text(), args.wall_s)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outputs"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", *grid, f"paths.outputs={out}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"sweep failed:\n{proc.stderr[-3000:]}")
        report = next((out / "reports").glob("*/report.md")).read_text()
    _write(args, grid, report, wall)


def _write(args: argparse.Namespace, grid: list[str], report: str, wall: float) -> None:
    body = report.split("\n## Groups")[0].split("\n", 1)[1]  # answer, table, curves; no file-local images
    body = "\n".join(line for line in body.splitlines() if not line.startswith("!["))
    text = "\n".join(
        [
            MARKER,
            "",
            f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores; the sweep took "
            f"{wall / 60:.1f} min. Command: `python benchmarks/dqn_extensions.py --steps {args.steps}` = "
            f"`python -m pipeline {' '.join(grid)}`. `rainbow_lite` = Double DQN + dueling + 3-step returns + "
            "prioritised replay; `dqn` = plain DQN; same network (small_cnn on the 10x10 channel grid), "
            "learning rate, batch and schedules.",
            body.replace("## ", "### "),
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(text, MARKER)


if __name__ == "__main__":
    main()
