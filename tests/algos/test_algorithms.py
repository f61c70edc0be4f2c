"""Every algorithm family goes through the same run lifecycle: a kill -9 mid-run, a resume that
finishes the same MLflow run, and a logged model that loads back and acts.

(Double DQN, the default, has its own detailed kill-and-resume test in test_resume.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli

CASES = {  # algo: (env, checkpoint interval, an observation batch to act on)
    "dqn": ("cartpole", 1024, torch.zeros(2, 4)),
    "rainbow_lite": ("cartpole", 1024, torch.zeros(2, 4)),
    "q_learning": ("taxi", 65536, torch.tensor([0, 499])),
    "sarsa": ("cliffwalking", 65536, torch.tensor([36, 0])),
    "expected_sarsa": ("frozenlake", 65536, torch.tensor([0, 14])),
    "reinforce": ("cartpole", 1024, torch.zeros(2, 4)),
    "ppo": ("cartpole", 1024, torch.zeros(2, 4)),
}


def _ckpt_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["counters"]["global_env_steps"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return -1


# ppo runs in CI (DQN's kill -9 and resume: tests/run/test_resume.py); the others share that checkpoint code and
# run with -m slow.
IN_CI = {"ppo"}


@pytest.mark.parametrize("algo", [a if a in IN_CI else pytest.param(a, marks=pytest.mark.slow) for a in CASES])
def test_kill_resume_and_logged_model(algo: str, outputs: Path) -> None:
    env_name, every, example = CASES[algo]
    run_dir = outputs / "run"
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        f"algo={algo}",
        f"env={env_name}",
        "total_env_steps=1000000000",  # never reached: the kill ends it
        "eval.every_env_steps=0",
        "eval.episodes=2",
        f"checkpoint.every_env_steps={every}",
        "logger.flush_every_s=0",
        "progress=false",
        f"hydra.run.dir={run_dir}",
        f"paths.outputs={outputs}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while _ckpt_step(ckpt) < 2 * every and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _ckpt_step(ckpt)
    assert killed_at >= 2 * every

    resumed = run_cli([f"resume={run_dir}", f"total_env_steps={killed_at + 2 * every}"], outputs)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["resumed_at_step"] == str(killed_at)
    assert run.data.params["algo.name"] == algo
    final_step = max(m.step for m in client.get_metric_history(run.info.run_id, "eval/final_return_mean"))
    assert final_step >= killed_at + 2 * every - 256  # it went on from the checkpoint (to a chunk's edge)
    mlflow.set_tracking_uri(f"sqlite:///{outputs}/mlflow.db")
    policy = mlflow.pytorch.load_model(run.data.tags["policy_uri"])
    actions = policy(example).argmax(dim=1)
    assert actions.shape == (2,) and actions.dtype == torch.int64
