"""Distillation from a frozen teacher: a small student learns CartPole from the teacher alone;
kickstarting's weight follows its schedule; a teacher that does not fit the env is refused up front."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from pipeline.algos import distill
from pipeline.config.load import to_config
from pipeline.core.errors import ConfigError
from pipeline.core.schedules import linear_schedule
from pipeline.envs import probe_env
from pipeline.run.job import run_job
from tests.conftest import compose_cfg, run_cli

TEACHER = [  # PPO with RL-Zoo's CartPole set: solves in ~15k steps
    "algo=ppo",
    "env.num_envs=8",
    "backbone.hidden_sizes=[64,64]",
    "backbone.activation=tanh",
    "algo.critic.backbone=separate",
    "total_env_steps=100000",
    "eval.every_env_steps=4096",
    "progress=false",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, int]:
    """A CartPole teacher trained here; returns its policy URI, its outputs dir and its parameter count."""
    outputs = tmp_path_factory.mktemp("teacher") / "outputs"
    outputs.mkdir()
    result = run_job(compose_cfg([*TEACHER, "logger.experiment=teachers"], outputs))
    assert result.solved
    policy = mlflow.pytorch.load_model(result.model_uri)
    n_params = sum(p.numel() for p in policy.parameters())
    return result.model_uri, outputs, n_params


def test_policy_distillation_gives_a_small_student_that_solves_cartpole(teacher: tuple[str, Path, int]) -> None:
    uri, outputs, teacher_params = teacher
    student = [
        "algo=ppo",
        "env.num_envs=8",
        "backbone.hidden_sizes=[16]",
        "distill=policy",
        f"distill.teacher={uri}",
        "total_env_steps=40000",
        "eval.every_env_steps=2048",
        "progress=false",
    ]
    result = run_job(compose_cfg(student, outputs))
    assert result.solved and result.eval_return_mean >= 475
    policy = mlflow.pytorch.load_model(result.model_uri)
    assert sum(p.numel() for p in policy.parameters()) * 10 <= teacher_params  # >= 10x smaller
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    kl = [m.value for m in client.get_metric_history(result.run_id, "train/distill_kl")]
    assert kl[-1] < 0.5 * kl[0]  # the student's policy moved onto the teacher's
    assert client.get_run(result.run_id).data.metrics["perf/teacher_ms"] > 0


def test_kickstarting_weight_follows_its_schedule(teacher: tuple[str, Path, int]) -> None:
    uri, outputs, _ = teacher
    overrides = [
        "algo=dqn",
        "distill=kickstart",
        f"distill.teacher={uri}",
        "distill.coef_start=2.0",
        "distill.coef_end=0.5",
        "distill.coef_steps=1000",
        "total_env_steps=2048",
        "algo.learning_starts=256",
        "eval.every_env_steps=0",
        "progress=false",
    ]
    result = run_job(compose_cfg(overrides, outputs))
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    coef = client.get_metric_history(result.run_id, "train/distill_coef")
    steps = [m.step for m in coef]
    assert steps == list(range(256, 2049, 256))
    # Each chunk trains with the weight set at the end of the one before (step 0 for the first).
    for prev, m in zip([0, *steps], coef, strict=False):
        assert m.value == pytest.approx(linear_schedule(2.0, 0.5, 1000, prev))
    assert len(client.get_metric_history(result.run_id, "train/distill_kl")) >= 6


def _auto_distiller(outputs: Path, monkeypatch: pytest.MonkeyPatch, teacher_return: float) -> distill.Distiller:
    """A kickstarting Distiller with coef_auto on CartPole; a stand-in teacher (λ never looks at it)."""
    monkeypatch.setattr(distill, "load_teacher", lambda uri, cfg: nn.Linear(4, 2).eval())
    overrides = [
        "algo=dqn",
        "distill=kickstart",
        "distill.teacher=runs:/stand-in/policy",
        "distill.coef_auto=true",
        "distill.coef_start=2.0",
        "distill.coef_end=0.5",
        "distill.coef_steps=1000",
    ]
    cfg = to_config(compose_cfg(overrides, outputs))
    d = distill.Distiller(cfg, probe_env(cfg.env))
    assert d.coef_now == 2.0  # before the teacher is measured: coef_start
    d.teacher_return = teacher_return  # what EnvLoop.on_train_start measures on the evaluation episodes
    return d


def test_auto_kickstarting_weight_falls_as_the_student_nears_the_teacher(
    outputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _auto_distiller(outputs, monkeypatch, teacher_return=500.0)
    # Unknown (no episode finished yet) or a whole teacher's return behind: coef_start, at any step.
    for step, student in ((0, float("nan")), (10**6, float("nan")), (0, 0.0), (10**6, -20.0)):
        assert d.coef(step, student) == 2.0
    # Closing in: linear in the gap, from coef_start to coef_end; the env step plays no part.
    lam = [d.coef(step, r) for step, r in ((0, 100.0), (10, 250.0), (10**6, 375.0), (5, 490.0))]
    assert lam == pytest.approx([0.5 + 1.5 * g for g in (0.8, 0.5, 0.25, 0.02)])
    assert lam == sorted(lam, reverse=True)
    # Matching or beating the teacher: coef_end.
    assert d.coef(0, 500.0) == 0.5 and d.coef(0, 650.0) == 0.5
    # update_coef (called by EnvLoop.end_chunk with the mean of the last 20 returns) sets what is used and logged.
    d.update_coef(4096, 250.0)
    assert d.coef_now == pytest.approx(1.25) and d.metrics()["train/distill_coef"] == pytest.approx(1.25)
    d.update_coef(8192, 500.0)
    teacher_logp = torch.log(torch.tensor([[0.9, 0.1]]))
    kl = distill.kl_teacher_student(teacher_logp, torch.zeros(1, 2), 1.0).item()
    assert d.term(torch.zeros(1, 4), torch.zeros(1, 2), teacher_logp).item() == pytest.approx(0.5 * kl)  # λ·KL


def test_auto_kickstarting_weight_with_negative_and_zero_teacher_returns(
    outputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Returns below zero (Acrobot, Pong) keep the same direction: far behind is coef_start, level is coef_end."""
    d = _auto_distiller(outputs, monkeypatch, teacher_return=-100.0)
    assert d.coef(0, -500.0) == 2.0 and d.coef(0, -200.0) == 2.0
    assert d.coef(0, -150.0) == pytest.approx(1.25)
    assert d.coef(0, -100.0) == 0.5 and d.coef(0, -50.0) == 0.5
    d.teacher_return = 0.0  # the gap in units of one reward
    assert d.coef(0, -3.0) == 2.0 and d.coef(0, -0.5) == pytest.approx(1.25) and d.coef(0, 0.0) == 0.5


def test_a_teacher_with_other_actions_is_refused_before_training(outputs: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{outputs}/mlflow.db")
    # Artifacts under the test's outputs (a sqlite store's default artifact root is ./mlruns in the CWD).
    mlflow.create_experiment("teachers", artifact_location=(outputs / "mlartifacts").as_uri())
    mlflow.set_experiment("teachers")
    three_actions = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()  # CartPole has 2
    example = torch.zeros(2, 4)
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(three_actions, name="policy", input_example=example.numpy())
    out = run_cli(["algo=ppo", "distill=policy", f"distill.teacher={info.model_uri}"], outputs)
    assert out.returncode == 2
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert "outputs (3,) values per observation, env=cartpole has 2 actions" in line
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    assert client.get_experiment_by_name("pipeline") is None  # no student run was started


def test_a_teacher_that_does_not_load_is_refused(outputs: Path) -> None:
    with pytest.raises(ConfigError, match=r"distill\.teacher=models:/nope/1: cannot load it"):
        run_job(compose_cfg(["algo=dqn", "distill=policy", "distill.teacher=models:/nope/1"], outputs))
