"""The pretraining stage: a backbone trained without env reward, logged, and loaded bit-exactly by RL."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from pipeline.algos.build import build_module
from pipeline.config.load import to_config
from pipeline.core.errors import ConfigError
from pipeline.envs import probe_env
from pipeline.run import pretrain as pretrain_module
from pipeline.run.job import run_job
from pipeline.run.session import weights_file
from pipeline.tracking import checkpoints
from tests.conftest import compose_cfg, run_cli


def test_supervised_digits_pretraining_feeds_an_rl_run_bit_exactly(outputs: Path) -> None:
    cfg = compose_cfg(["stage=pretrain", "env=digits", "backbone=small_cnn", "stage.epochs=8"], outputs)
    result = run_job(cfg)
    assert result.val_accuracy >= 0.9  # held-out digits (the digits env's evaluation images)
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "pretrain"
    assert run.data.metrics["pretrain/final_val_accuracy"] == pytest.approx(result.val_accuracy)
    saved = load_file(str(result.run_dir / "weights" / "backbone.safetensors"))

    uri = f"runs:/{result.run_id}/weights/backbone.safetensors"
    rl = to_config(compose_cfg(["env=digits", "backbone=small_cnn", f"backbone.weights={uri}"], outputs))
    module = build_module(rl, probe_env(rl.env), weights_file(rl))  # the RL learner at step 0
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
    result = run_job(compose_cfg(overrides, outputs))
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


# `python -m pipeline ARGS`, killed with SIGKILL by itself as it starts writing epoch KILL_AT_EPOCH's
# checkpoint: that epoch's metrics are in MLflow, its checkpoint is not. A kill -9 at a known point
# (polling for the file from outside races a 2-second epoch).
KILL_AT_CHECKPOINT = """
import os, signal
from pipeline.tracking import checkpoints
save = checkpoints.atomic_save
def die_at(obj, path):
    if obj["counters"]["epoch"] == int(os.environ["KILL_AT_EPOCH"]):
        os.kill(os.getpid(), signal.SIGKILL)
    save(obj, path)
checkpoints.atomic_save = die_at
from pipeline.__main__ import main
main()
"""

DIGITS = ["stage=pretrain", "env=digits", "backbone=small_cnn", "stage.epochs=3"]


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = checkpoints.load(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["finished"] and ckpt["counters"]["epoch"] == 3
    return ckpt["state_dict"]


def test_killed_pretraining_resumes_at_the_next_epoch_bit_identically(outputs: Path) -> None:
    run_dir = outputs / "killed"
    args = [*DIGITS, f"hydra.run.dir={run_dir}"]
    killed = run_cli(args, outputs, entry=["-c", KILL_AT_CHECKPOINT], env={"KILL_AT_EPOCH": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert checkpoints.load(run_dir / "checkpoints" / "last.ckpt")["counters"]["epoch"] == 1
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert run.info.status == "RUNNING"  # nobody could end it: kill -9
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pretrain/loss")] == [1, 2]  # 2 is replayed

    resumed = run_cli([f"resume={run_dir}"], outputs)  # the stage is read from the run, not the command line
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (run,) = client.search_runs([run.info.experiment_id])  # the same MLflow run, continued
    assert run.info.status == "FINISHED" and run.data.tags["resumed_at_epoch"] == "1"
    assert run.data.tags["backbone_uri"].startswith("models:/")
    assert [a.path for a in client.list_artifacts(run.info.run_id, "weights")] == ["weights/backbone.safetensors"]
    history = {k: client.get_metric_history(run.info.run_id, k) for k in ("pretrain/loss", "pretrain/val_accuracy")}
    for key, points in history.items():
        assert sorted(m.step for m in points) == [1, 2, 3], key  # every epoch exactly once, epoch 2 too

    # The same config run without interruption (no MLflow): the same weights, bit for bit, and the same curve.
    whole = run_job(compose_cfg([*DIGITS, "logger=none"], outputs), run_dir=outputs / "whole")
    resumed_state, whole_state = _final_state(run_dir), _final_state(outputs / "whole")
    assert resumed_state.keys() == whole_state.keys()
    for name, tensor in whole_state.items():
        assert torch.equal(resumed_state[name], tensor), name
    logged, whole_backbone = (load_file(str(d / "weights" / "backbone.safetensors")) for d in (run_dir, whole.run_dir))
    assert logged.keys() == whole_backbone.keys()
    assert all(torch.equal(logged[k], whole_backbone[k]) for k in logged)  # the file behind the logged model
    losses = [m.value for m in sorted(history["pretrain/loss"], key=lambda m: m.step)]
    assert losses[0] == whole.train_loss_first and losses[-1] == whole.train_loss_last

    # Nothing left to do: a second resume is refused.
    with pytest.raises(ConfigError, match=r"already finished its stage\.epochs=3 epochs; raise it"):
        run_job(compose_cfg([*DIGITS, f"resume={run_dir}"], outputs))


class _Killed(BaseException):
    """Stands for a kill between two epochs, inside this process."""


def test_resumed_inverse_dynamics_reuses_the_collected_frames(outputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = [
        "stage=pretrain",
        "stage.objective=inverse_dynamics",
        "env=minatar_breakout",
        "backbone=small_cnn",
        "env.num_envs=4",
        "stage.frames=512",
        "stage.epochs=3",
        "logger=none",
    ]
    save = checkpoints.atomic_save

    def save_then_die(obj: dict, path: Path) -> None:
        save(obj, path)
        if obj["counters"]["epoch"] == 2:
            raise _Killed

    monkeypatch.setattr(checkpoints, "atomic_save", save_then_die)
    with pytest.raises(_Killed):
        run_job(compose_cfg(overrides, outputs), run_dir=outputs / "killed")
    monkeypatch.setattr(checkpoints, "atomic_save", save)

    def no_collection(*_: object) -> None:
        raise AssertionError("a resumed run reads its frames back from the run dir")

    with monkeypatch.context() as patch:
        patch.setattr(pretrain_module, "collect_transitions", no_collection)
        resumed = run_job(compose_cfg([*overrides, f"resume={outputs / 'killed'}"], outputs))
    whole = run_job(compose_cfg(overrides, outputs), run_dir=outputs / "whole")
    assert resumed.run_dir == outputs / "killed" and resumed.train_loss_last == whole.train_loss_last
    resumed_state, whole_state = _final_state(resumed.run_dir), _final_state(whole.run_dir)
    for name, tensor in whole_state.items():
        assert torch.equal(resumed_state[name], tensor), name
