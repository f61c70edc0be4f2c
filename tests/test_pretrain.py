"""The pretraining stage: a backbone trained without env reward, logged, and loaded bit-exactly by RL."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from pipeline.algos import build_module
from pipeline.config import to_config
from pipeline.envs import probe_env
from pipeline.pretrain import pretrain
from pipeline.train import _weights_file
from tests.conftest import compose_cfg, run_cli


def test_supervised_digits_pretraining_feeds_an_rl_run_bit_exactly(outputs: Path) -> None:
    cfg = compose_cfg(["stage=pretrain", "env=digits", "backbone=small_cnn", "stage.epochs=8"], outputs)
    result = pretrain(cfg)
    assert result.val_accuracy >= 0.9  # held-out digits (the digits env's evaluation images)
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "pretrain"
    assert run.data.metrics["pretrain/final_val_accuracy"] == pytest.approx(result.val_accuracy)
    saved = load_file(str(result.run_dir / "weights" / "backbone.safetensors"))

    uri = f"runs:/{result.run_id}/weights/backbone.safetensors"
    rl = to_config(compose_cfg(["env=digits", "backbone=small_cnn", f"backbone.weights={uri}"], outputs))
    module = build_module(rl, probe_env(rl.env), _weights_file(rl))  # the RL learner at step 0
    loaded = module.policy.encoder.backbone_module().state_dict()
    assert set(loaded) == set(saved)
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name


def test_inverse_dynamics_loss_falls_on_collected_frames(outputs: Path) -> None:
    overrides = [
        "stage=pretrain",
        "stage.objective=inverse_dynamics",
        "env=minatar_breakout",
        "backbone=small_cnn",
        "env.num_envs=4",
        "stage.frames=4000",
        "stage.epochs=10",
    ]
    result = pretrain(compose_cfg(overrides, outputs))
    assert result.train_loss_last < 0.6 * result.train_loss_first  # log(3) = 1.10 at chance
    assert result.val_accuracy > 0.6  # 3 actions: chance is 1/3 (measured: 0.84)
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    run = client.get_run(result.run_id)
    assert run.data.tags["dataset.frames"] == "4000" and run.data.tags["dataset.policy"] == "random"
    assert [a.path for a in client.list_artifacts(result.run_id, "dataset")] == ["dataset/transitions.npz"]


def test_supervised_pretraining_on_a_vector_env_is_refused(outputs: Path) -> None:
    out = run_cli(["stage=pretrain", "env=cartpole"], outputs)
    assert out.returncode == 2 and "stage.objective=supervised: env=cartpole observes (4,), not images" in out.stderr
    assert not (outputs / "mlflow.db").exists()
