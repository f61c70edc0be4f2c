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
    assert "mlflow run" in proc.stdout and f"mlflow ui --backend-store-uri sqlite:///{outputs}/mlflow.db" in proc.stdout
    # No GPU here: the backbone is frozen and its features cached, and the command says so in one line.
    assert "note: no GPU in use: backbone=resnet18 is frozen on random weights" in proc.stderr
    assert "backbone.freeze=none fine-tunes it" in proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["backbone.name"] == "resnet18"
    assert run.data.params["env.obs_mode"] == "pixels"  # the documented switch, logged as resolved
    assert run.data.params["backbone.freeze"] == "all"  # freeze=auto, resolved for this CPU-only machine
    assert "hydra.overrides" in run.data.tags and "backbone=resnet18" in run.data.tags["hydra.overrides"]
    assert run.data.metrics["train/env_steps"] == 96


def test_another_env_id_names_the_run_and_uses_its_own_threshold(outputs: Path) -> None:
    proc = run_cli(
        [
            "env.id=MountainCar-v0",
            "total_env_steps=256",
            "algo.learning_starts=64",
            "algo.batch_size=16",
            "algo.chunk_steps=128",
            "eval.episodes=1",
            "eval.every_env_steps=0",
            "env.max_episode_steps=50",
            "progress=false",
        ],
        outputs,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert run.info.run_name == "double_dqn-mlp-MountainCar-v0-s0"  # not ...-cartpole-...
    assert run.data.params["env.solved_return"] == "-110.0"  # MountainCar-v0's threshold, not CartPole's 475
