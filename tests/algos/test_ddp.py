"""The multi-device path on CPU: two processes over gloo, one MLflow run, both ranks' steps counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.run.job import run_job
from tests.conftest import TINY, compose_cfg, run_cli


def test_ddp_cpu_two_processes_log_once_and_count_both_ranks(outputs: Path) -> None:
    result = run_job(compose_cfg([*TINY, "hardware=ddp_cpu", "total_env_steps=1024", "algo.chunk_steps=256"], outputs))
    # 2 ranks x 1 env: each chunk is 128 local steps per rank = 256 global env steps
    assert result.env_steps == 1024
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    assert runs[0].data.params["hardware.devices"] == "2"
    steps = [m.step for m in client.get_metric_history(run_id, "train/epsilon")]
    assert steps == [256, 512, 768, 1024]  # rank 0 alone logs: no duplicated steps
    # The replicas stayed in sync (checked by all-gather at the end of training, which raises otherwise)
    assert runs[0].data.tags.get("ddp_replicas_in_sync") == "true"


# slow: DDP itself runs in CI (test above); resume runs in CI single-process
@pytest.mark.slow
def test_ddp_cpu_resume_continues_with_each_rank_state(outputs: Path) -> None:
    """Ranks spawned with a resumed checkpoint must not share its tensors (or the weights) in memory."""
    run_dir = outputs / "ddp"
    first = run_cli(
        ["hardware=ddp_cpu", *TINY, "total_env_steps=512", "algo.chunk_steps=256", f"hydra.run.dir={run_dir}"],
        outputs,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert (run_dir / "checkpoints" / "rank1.pt").is_file()  # rank 1's buffer and RNG live beside last.ckpt
    resumed = run_cli([f"resume={run_dir}", "total_env_steps=1024"], outputs)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["resumed_at_step"] == "512"
    assert run.data.tags["ddp_replicas_in_sync"] == "true" and run.data.tags["resume_buffer_restored"] == "true"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/epsilon")]
    assert steps == [256, 512, 768, 1024]
