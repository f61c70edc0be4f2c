"""MLflow: params, metrics on the env-step axis, artifacts, a policy that loads and acts; failures marked."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.algos.dqn import DQN
from pipeline.run.job import run_job
from tests.conftest import TINY, compose_cfg


def _client(outputs: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")


def _only_run(outputs: Path):
    client = _client(outputs)
    exp = client.get_experiment_by_name("pipeline")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_run_is_logged_and_policy_loads_and_acts(outputs: Path) -> None:
    result = run_job(compose_cfg([*TINY, "algo.lr=5e-4"], outputs))
    client, run = _only_run(outputs)
    assert run.info.status == "FINISHED" and run.info.run_id == result.run_id
    params = run.data.params
    assert params["algo.lr"] == "0.0005" and params["env.id"] == "CartPole-v1" and params["seed"] == "0"
    assert params["env.obs_mode"] == "state" and params["backbone.name"] == "mlp"
    assert run.data.tags["git_commit"] and "mlflow.runName" in run.data.tags

    epsilon = client.get_metric_history(run.info.run_id, "train/epsilon")
    steps = [m.step for m in epsilon]
    assert steps == [128, 256, 384, 512]  # one point per chunk, on the env-step axis
    for key in (
        "train/loss",
        "train/q_mean",
        "train/episode_return",
        "eval/return_mean",
        "perf/env_steps_per_s",
    ):
        assert client.get_metric_history(run.info.run_id, key), key
    eval_steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval/return_mean")]
    assert eval_steps == sorted(set(eval_steps)) and eval_steps[-1] == 512
    assert run.data.metrics["eval/final_return_mean"] == pytest.approx(result.eval_return_mean)

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "learning_curve.png"} <= artifacts
    policy = mlflow.pytorch.load_model(result.model_uri)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=123)
    episode_length = 0
    for _ in range(500):  # the loaded policy drives a real episode
        q_values = policy(torch.as_tensor(obs[None]))
        assert q_values.shape == (1, 2)
        obs, _, terminated, truncated, _ = env.step(int(q_values.argmax(dim=1)))
        episode_length += 1
        if terminated or truncated:
            break
    assert episode_length >= 5
    batch = policy(torch.as_tensor(np.zeros((7, 4), dtype=np.float32)))  # any batch size
    assert batch.shape == (7, 2)


def test_run_that_raises_is_failed_with_the_error(outputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: DQN, n_updates: int) -> None:
        raise RuntimeError("exploding gradient for the test")

    monkeypatch.setattr(DQN, "_learn", boom)
    with pytest.raises(RuntimeError, match="exploding gradient"):
        run_job(compose_cfg(TINY, outputs))
    _, run = _only_run(outputs)
    assert run.info.status == "FAILED"
    assert "exploding gradient for the test" in run.data.tags["error"]


def test_interrupted_run_is_killed(outputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(self: DQN, n_updates: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(DQN, "_learn", interrupt)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run_job(compose_cfg(TINY, outputs))
    _, run = _only_run(outputs)
    assert run.info.status == "KILLED"
    assert "interrupted" in run.data.tags["error"]
