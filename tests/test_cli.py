"""The used-by command as typed: `python -m pipeline algo=dqn backbone=resnet18`, offline, tiny budget."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import run_cli


def test_resnet18_command_runs_offline_on_rendered_frames(outputs: Path) -> None:
    proc = run_cli(
        [
            "algo=dqn",
            "backbone=resnet18",
            "total_env_steps=96",
            "algo.learning_starts=64",
            "algo.batch_size=4",
            "algo.buffer_size=128",
            "algo.chunk_steps=32",
            "eval.episodes=1",
            "eval.every_env_steps=0",
            "env.max_episode_steps=40",
            "hardware.threads=2",
        ],
        outputs,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlflow run" in proc.stdout and "make ui" in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["backbone.name"] == "resnet18"
    assert run.data.params["env.obs_mode"] == "pixels"  # the documented switch, logged as resolved
    assert "hydra.overrides" in run.data.tags and "backbone=resnet18" in run.data.tags["hydra.overrides"]
    assert run.data.metrics["train/env_steps"] == 96
