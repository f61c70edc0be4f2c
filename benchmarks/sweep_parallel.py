"""A 4-job grid on this machine: sequential (Hydra's basic launcher) vs parallel (`sweep=grid`, joblib),
wall time side by side, and the per-job start-up cost (process start to the first env step).

    .venv/bin/python benchmarks/sweep_parallel.py            # part of `make bench`; --no-write to keep the doc

Each sweep is a fresh `python -m pipeline -m ...` process into a fresh output folder; the two launchers
alternate round by round. Jobs: the default CartPole config, a fixed budget, no early stop, MLflow on.
The start-up cost is the `perf/startup_s` metric each job logs (from its process start; joblib workers
are fresh processes too).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_section

GRID = ["seed=0,1,2,3"]
JOB = ["total_env_steps=20000", "eval.stop_on_solve=false", "eval.every_env_steps=5000", "progress=false"]
KINDS = {"sequential": [], "joblib": ["sweep=grid"]}


def _sweep(kind: str) -> tuple[float, float, list[float]]:
    """Wall time of the whole command, the jobs' span (first job start to last job end, from MLflow),
    and each job's start-up cost."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outputs"
        cmd = [sys.executable, "-m", "pipeline", "-m", *KINDS[kind], *GRID, *JOB, f"paths.outputs={out}"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{kind} sweep failed:\n{proc.stderr[-2000:]}")
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        jobs = [r for r in runs if r.data.tags.get("sweep_parent") != "true"]
        startup = [r.data.metrics["perf/startup_s"] for r in jobs if "perf/startup_s" in r.data.metrics]
        if len(startup) != 4:
            raise SystemExit(f"{kind}: expected 4 jobs with perf/startup_s, got {len(startup)}")
        span = (max(r.info.end_time for r in jobs) - min(r.info.start_time for r in jobs)) / 1000
        return wall, span, startup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {k: [] for k in KINDS}
    spans: dict[str, list[float]] = {k: [] for k in KINDS}
    startups: dict[str, list[float]] = {k: [] for k in KINDS}
    t_all = time.perf_counter()
    for i in range(args.repeats):
        for kind in KINDS if i % 2 == 0 else reversed(list(KINDS)):
            wall, span, startup = _sweep(kind)
            walls[kind].append(wall)
            spans[kind].append(span)
            startups[kind] += startup
            up = statistics.median(startup)
            print(f"{kind:10s} round {i}: {wall:6.1f} s wall, jobs {span:6.1f} s, start-up {up:.1f} s")
    speedup = statistics.median(walls["sequential"]) / statistics.median(walls["joblib"])
    job_speedup = statistics.median(spans["sequential"]) / statistics.median(spans["joblib"])
    verdict = "PASS" if speedup >= 1.7 else "FAIL"
    job_verdict = "PASS" if job_speedup >= 1.7 else "FAIL"
    lines = [
        "## Parallel grid: sequential vs joblib",
        "",
        f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores; "
        f"{args.repeats} rounds, launchers alternating. Command: `python benchmarks/sweep_parallel.py`",
        "",
        f"A 4-job grid (`python -m pipeline -m {' '.join(GRID)} {' '.join(JOB)}`), each job CartPole DQN, MLflow on.",
        "",
        "| launcher | command wall time (median; all) | jobs' span: first start → last end (median; all) "
        "| start-up per job: process start → first env step (median, range) |",
        "|---|---|---|---|",
    ]
    for kind in KINDS:
        w, sp, s = walls[kind], spans[kind], startups[kind]
        lines.append(
            f"| {kind} | {statistics.median(w):.1f} s ({', '.join(f'{x:.1f}' for x in w)}) | "
            f"{statistics.median(sp):.1f} s ({', '.join(f'{x:.1f}' for x in sp)}) | "
            f"{statistics.median(s):.2f} s ({min(s):.2f}–{max(s):.2f}) |"
        )
    lines += [
        "",
        f"Speed-up joblib / sequential, whole command: **{speedup:.2f}×** (target ≥ 1.7×: {verdict}); "
        f"jobs' span: **{job_speedup:.2f}×** ({job_verdict}). The command's fixed part — interpreter and Hydra "
        "start, the sweep's parent run, the report at the end — runs once in both and is not parallel. "
        "Sequential jobs after the first share one process, so their start-up has no imports; each joblib "
        f"worker is a fresh process. The whole benchmark took {time.perf_counter() - t_all:.0f} s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(text, "## Parallel grid")


if __name__ == "__main__":
    main()
