"""Sweeps: a parallel grid lands as one group in MLflow, a failing job is reported while the others
finish, an Optuna sweep logs its best parameters, and DDP jobs run inside a multirun."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from tests.conftest import TINY, run_cli


def _runs(outputs: Path) -> tuple[object, list]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("sweep_parent") == "true"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("sweep_parent") != "true"]
    return parents[0], children


def test_parallel_grid_groups_its_runs_and_reports_a_failing_job(outputs: Path) -> None:
    # A 2x2 grid (algo x seed) plus a learning rate that diverges: its jobs fail with a non-finite
    # loss, the four others must finish, all under one parent run.
    proc = run_cli(
        ["-m", "sweep=grid", "algo=dqn,double_dqn", "seed=0,1", "algo.lr=1e-3,1e30", *TINY], outputs, timeout=600
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # the sweep reports failure...
    parent, children = _runs(outputs)
    finished = [r for r in children if r.info.status == "FINISHED"]
    failed = [r for r in children if r.info.status == "FAILED"]
    assert len(finished) == 4 and len(failed) == 4, [(r.info.run_name, r.info.status) for r in children]
    assert {r.data.params["algo.lr"] for r in finished} == {"0.001"}
    assert all("non-finite" in r.data.tags["error"] for r in failed)
    for run in children:  # ...every job is nested under the parent and tagged with the sweep
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id == run.data.tags["sweep_id"]
    assert parent.info.status == "FAILED" and "4 of 8 jobs failed" in parent.data.tags["error"]
    assert "sweep: 8 jobs, 4 finished, 4 failed" in proc.stdout
    assert proc.stdout.count("failed job ") == 4 and "algo.lr=1e+30" in proc.stdout
    artifacts = {
        a.path for a in mlflow.MlflowClient(f"sqlite:///{outputs}/mlflow.db").list_artifacts(parent.info.run_id)
    }
    assert "summary.md" in artifacts
    run_dirs = {r.data.tags["run_dir"] for r in children}
    assert len(run_dirs) == 8  # one output dir per job
    reports = list((outputs / "reports").glob(f"{parent.info.run_id}/report.md"))  # under paths.outputs
    assert reports and "algo.name=double_dqn" in reports[0].read_text()


def test_optuna_sweep_logs_its_best_parameters(outputs: Path) -> None:
    proc = run_cli(
        ["-m", "sweep=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "hydra.launcher.n_jobs=1", *TINY],
        outputs,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = _runs(outputs)
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    best = {k: v for k, v in parent.data.params.items() if k.startswith("best.")}
    assert set(best) == {"best.algo.lr", "best.algo.target_update_interval", "best.algo.eps_decay_steps"}
    best_value = parent.data.metrics["sweep/best_value"]
    assert best_value == max(r.data.metrics["eval/final_return_mean"] for r in children)
    assert (outputs / "optuna.db").is_file()  # the study persists beside the MLflow store
    assert "sweep: best" in proc.stdout


# slow: DDP and multirun each run in CI on their own
@pytest.mark.slow
def test_multirun_of_ddp_jobs(outputs: Path) -> None:
    """The Hydra + Lightning trap: DDP inside a multirun. Two jobs, each two processes over gloo."""
    proc = run_cli(["-m", "hardware=ddp_cpu", "seed=0,1", *TINY], outputs, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, children = _runs(outputs)
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.params["seed"] for r in children} == {"0", "1"}
    assert all(r.data.tags["ddp_replicas_in_sync"] == "true" for r in children)
    sweep_dirs = list((outputs / "multirun").glob("*/*"))
    assert len(sweep_dirs) == 1 and sorted(p.name for p in sweep_dirs[0].iterdir() if p.is_dir()) == ["0", "1"]


@pytest.mark.parametrize("preset", ["slurm", "ray"])
def test_cluster_presets_compose(preset: str, outputs: Path) -> None:
    """The cluster presets are real Hydra launcher configs; without their plugin the error says what to install."""
    proc = run_cli(["--cfg", "hydra", f"sweep={preset}"], outputs, timeout=120)
    if proc.returncode == 0:
        assert "launcher:" in proc.stdout
    else:
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "hydra/launcher" in proc.stderr and "pip install -e '.[cluster]'" in proc.stderr
