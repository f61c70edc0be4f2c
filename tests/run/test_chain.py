"""Chained experiments in one command: the first stage runs once, the grid consumes its output, and
MLflow links them under the sweep's parent run (small budgets, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli

SMALL_RL = [
    "total_env_steps=1024",
    "algo.learning_starts=256",
    "algo.batch_size=32",
    "eval.every_env_steps=512",
    "eval.episodes=2",
    "seed=0,1",
    "hydra.launcher.n_jobs=2",
    "progress=false",
]


def _runs(outputs: Path, experiment: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_pretrain_then_rl_links_its_stages_and_reports(outputs: Path) -> None:
    out = run_cli(["-m", "experiment=pretrain_then_rl", *SMALL_RL, "stage.frames=600", "stage.epochs=2"], outputs, 600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = _runs(outputs, "pretrain_then_rl")
    (parent,) = [r for r in runs if r.data.tags.get("sweep_parent") == "true"]
    (first,) = [r for r in runs if r.data.tags.get("chain_stage") == "pretrain"]
    jobs = [r for r in runs if r.data.tags.get("sweep_id") == parent.info.run_id and r is not parent]
    jobs = [r for r in jobs if r.info.run_id != parent.info.run_id]
    assert first.data.tags["mlflow.parentRunId"] == parent.info.run_id and first.info.status == "FINISHED"
    assert len(jobs) == 4 and all(r.info.status == "FINISHED" for r in jobs)
    consumed = f"runs:/{first.info.run_id}/weights/backbone.safetensors"
    weights = sorted(str(r.data.params["backbone.weights"]) for r in jobs)
    assert weights == ["null", "null", consumed, consumed]  # two jobs from the pretrained weights, two from scratch
    report = Path(out.stdout.split("sweep: report ")[1].split()[0])
    text = report.read_text()
    assert "IQM" in text and consumed.split("/")[1] in text  # the arms, named by the weights they used


# slow: kickstarting itself runs in CI (tests/algos/test_distill.py)
@pytest.mark.slow
def test_kickstart_experiment_trains_its_teacher_first(outputs: Path) -> None:
    args = [
        "-m",
        "experiment=kickstart",
        "total_env_steps=1024",
        "eval.every_env_steps=512",
        "eval.episodes=2",
        "seed=0",
        "hydra.callbacks.chain.overrides.total_env_steps=2048",
        "progress=false",
    ]
    out = run_cli(args, outputs, 600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = _runs(outputs, "kickstart")
    (teacher,) = [r for r in runs if r.data.tags.get("chain_stage") == "teacher"]
    students = [r for r in runs if r.data.tags.get("sweep_id") and r.data.tags.get("sweep_parent") != "true"]
    assert len(students) == 2 and {r.data.params["distill.name"] for r in students} == {"kickstart", "none"}
    assert {r.data.params["distill.teacher"] for r in students} == {teacher.data.tags["policy_uri"]}
    assert teacher.data.params["backbone.hidden_sizes"] == "[64, 64]"
