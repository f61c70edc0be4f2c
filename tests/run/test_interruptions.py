"""A run stopped at any moment ends in a known state: SIGINT/SIGTERM in every window (KILLED, exit 128 +
signal, the last checkpoint resumable), a process that died without a word (KILLED by the next start, with
the reason), a full disk (one line, FAILED, the previous checkpoint intact, no temporary file left)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.core.errors import DiskFull, RunFailure
from pipeline.run.job import run_job
from pipeline.tracking.orphans import OWNER_HOST, OWNER_PID, OWNER_STARTED, owner_tags, reap_orphans
from pipeline.tracking.run import Tracker
from tests.conftest import ROOT, TINY, compose_cfg, run_cli

SIGNAL_AT = ROOT / "tests" / "helpers" / "signal_at.py"
# Every window within 4 chunks of 128 env steps, a checkpoint after each.
RUN = [
    "total_env_steps=512",
    "algo.learning_starts=128",
    "algo.batch_size=16",
    "algo.chunk_steps=128",
    "eval.every_env_steps=0",
    "eval.episodes=2",
    "eval.stop_on_solve=false",
    "checkpoint.every_env_steps=128",
    "progress=false",
]


def _client(outputs: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")


def _runs(outputs: Path, store: str = "mlflow.db") -> list:
    if not (outputs / store).is_file():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / store}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


STORE = "elsewhere/runs.db"  # not the default store: a resume's hints must name the run's own


def _signal_at(moment: str, name: str, outputs: Path, count: int = 1) -> subprocess.CompletedProcess[str]:
    args = [*RUN, f"hydra.run.dir={outputs / 'run'}", f"logger.tracking_uri=sqlite:///{outputs / STORE}"]
    return run_cli(args, outputs, entry=[str(SIGNAL_AT), moment, name, str(count)])


@pytest.mark.parametrize(
    ("moment", "name", "count"),
    [
        ("setup", "SIGINT", 1),
        ("run_start", "SIGTERM", 1),
        ("training", "SIGINT", 1),
        ("training", "SIGTERM", 3),  # several SIGTERMs within a few hundred ms
        ("checkpoint", "SIGTERM", 1),
        ("model_logging", "SIGTERM", 1),
    ],
)
def test_a_signal_in_any_window_ends_the_run_killed(moment: str, name: str, count: int, outputs: Path) -> None:
    proc = _signal_at(moment, name, outputs, count)
    signum = signal.Signals[name].value
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: interrupted by {name}"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    runs = _runs(outputs, STORE)
    if moment == "setup":  # before any run existed: none is made, and the empty run dir goes too
        assert runs == [] and last.endswith("before the run started; nothing was tracked")
        assert not (outputs / "run").exists()
        return
    (run,) = runs
    assert run.info.status == "KILLED", (run.info.status, proc.stderr[-2000:])
    assert run.data.tags["error"] == f"interrupted by {name}"
    ckpt_dir = outputs / "run" / "checkpoints"
    assert not [p.name for p in ckpt_dir.glob(".*tmp*")], "a temporary checkpoint was left behind"
    if moment in ("training", "checkpoint", "model_logging"):
        assert "resume it: python -m pipeline resume=" in last
        state = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
        assert state["counters"]["global_env_steps"] >= 128
    if moment == "checkpoint":  # the checkpoint before the one cut short resumes the same run to its end
        assert state["counters"]["global_env_steps"] == 128
        resumed = run_cli([f"resume={outputs / 'run'}", "total_env_steps=640", "algo.learning_starts=128"], outputs)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        (run,) = _runs(outputs, STORE)
        assert run.info.status == "FINISHED" and "error" not in run.data.tags
        assert f"mlflow ui --backend-store-uri sqlite:///{outputs / STORE}" in resumed.stdout  # the run's own store


def test_ctrl_c_from_outside_stops_within_seconds(outputs: Path) -> None:
    run_dir = outputs / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [*RUN, "total_env_steps=200000", f"hydra.run.dir={run_dir}", f"paths.outputs={outputs}"]  # until stopped
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10, "Ctrl-C took more than a few seconds"
    assert proc.returncode == 130, stderr[-2000:]
    (run,) = _runs(outputs)
    assert run.info.status == "KILLED" and run.data.tags["error"] == "interrupted by SIGINT"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_runs_whose_process_died_are_marked_killed_by_the_next_start(outputs: Path) -> None:
    uri = f"sqlite:///{outputs}/mlflow.db"
    tracker = Tracker(uri, "pipeline", str(outputs / "mlartifacts"))
    client = tracker.client
    dead = client.create_run(tracker.experiment_id, tags={**owner_tags(), OWNER_PID: str(_dead_pid())})
    alive = client.create_run(tracker.experiment_id, tags=owner_tags())  # this very process
    reused = client.create_run(tracker.experiment_id, tags={**owner_tags(), OWNER_STARTED: "12.0"})  # pid reused
    lost = client.create_run(
        tracker.experiment_id, tags={**owner_tags(), OWNER_HOST: "elsewhere", "pipeline.heartbeat": "0"}
    )
    beating = client.create_run(tracker.experiment_id, tags={**owner_tags(), OWNER_HOST: "elsewhere"})
    foreign = client.create_run(tracker.experiment_id)  # not ours: no owner tags, left alone
    ended = reap_orphans(client, [tracker.experiment_id], by="a test")
    assert set(ended) == {dead.info.run_id, reused.info.run_id, lost.info.run_id}
    status = {r: client.get_run(r.info.run_id).info.status for r in (dead, alive, reused, lost, beating, foreign)}
    assert [status[r] for r in (dead, reused, lost)] == ["KILLED"] * 3
    assert [status[r] for r in (alive, beating, foreign)] == ["RUNNING"] * 3
    assert "ended without closing it" in client.get_run(dead.info.run_id).data.tags["error"]
    assert "no heartbeat from elsewhere" in client.get_run(lost.info.run_id).data.tags["error"]
    Tracker(uri, "pipeline", str(outputs / "mlartifacts"))  # every start reaps: nothing left to do
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"


# ------------------------------------------------------------------------------------------- disk full
def _enospc_on_write(monkeypatch: pytest.MonkeyPatch, after: int) -> dict[str, int]:
    """torch.save writes part of the file, then the disk is full — from the `after`-th call on."""
    calls = {"n": 0}
    real = torch.save

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= after:
            return real(obj, f, *args, **kwargs)
        f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    return calls


def test_a_full_disk_at_a_checkpoint_fails_the_run_and_keeps_the_previous_one(
    outputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = outputs / "run"
    _enospc_on_write(monkeypatch, after=1)
    with pytest.raises(DiskFull) as caught:
        run_job(compose_cfg(RUN, outputs), run_dir=run_dir)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("no space left on device at step 256 writing")
    assert str(run_dir / "checkpoints" / "last.ckpt") in message and "needs about" in message
    assert (
        f"the previous checkpoint (step 128) is intact: free some space, then python -m pipeline resume={run_dir}"
        in (message)
    )
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]  # no temporary left
    (run,) = _runs(outputs)
    assert run.info.status == "FAILED" and run.data.tags["error"] == message
    monkeypatch.undo()
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["counters"]["global_env_steps"] == 128
    resumed = run_cli([f"resume={run_dir}"], outputs)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (run,) = _runs(outputs)
    assert run.info.status == "FINISHED"


def test_a_full_store_at_the_end_is_one_line_and_says_the_run_could_not_be_ended(
    outputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    full = MlflowException("(sqlite3.OperationalError) database or disk is full")

    def fails(*args, **kwargs):
        raise full

    monkeypatch.setattr(Tracker, "log_torch_model", fails)
    monkeypatch.setattr(MlflowClient, "set_tag", fails)  # the store cannot take the error tag either...
    monkeypatch.setattr(MlflowClient, "set_terminated", fails)  # ...nor the status
    with pytest.raises(RunFailure) as caught:
        run_job(compose_cfg(TINY, outputs), run_dir=outputs / "run")
    message = str(caught.value)
    assert message.startswith("no space left on device writing the MLflow store") and "\n" not in message
    assert "could not be marked FAILED" in message and "the next start marks it KILLED" in message
    monkeypatch.undo()
    (run,) = _runs(outputs)
    assert run.info.status == "RUNNING"  # as the message says; once its process is gone the next start ends it
    _client(outputs).set_tag(run.info.run_id, OWNER_PID, str(_dead_pid()))  # as if this process had exited
    Tracker(f"sqlite:///{outputs}/mlflow.db", "pipeline", str(outputs / "mlartifacts"))
    (run,) = _runs(outputs)
    assert run.info.status == "KILLED"


def test_a_full_disk_is_one_line_at_the_command_line(outputs: Path) -> None:
    args = [*TINY, f"hydra.run.dir={outputs / 'run'}"]
    script = (
        "import errno, sys, torch\n"
        "real = torch.save\n"
        "def save(obj, f, *a, **k):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "torch.save = save\n"
        "from pipeline.__main__ import main\n"
        "sys.argv = ['pipeline', *sys.argv[1:]]\n"
        "main()\n"
    )
    proc = run_cli(args, outputs, entry=["-c", script])
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "no space left on device at step" in lines[0] and "no checkpoint was written before it" in lines[0]
    (run,) = _runs(outputs)
    assert run.info.status == "FAILED"


def test_a_store_that_takes_the_status_but_not_the_error_tag_says_so(
    outputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    def fails(*args, **kwargs):
        raise MlflowException("(sqlite3.OperationalError) database or disk is full")

    monkeypatch.setattr(Tracker, "log_torch_model", fails)
    monkeypatch.setattr(MlflowClient, "set_tag", fails)  # an update in place (the status) still fits
    with pytest.raises(RunFailure, match="is FAILED but its error tag could not be written"):
        run_job(compose_cfg(TINY, outputs), run_dir=outputs / "run")
    monkeypatch.undo()
    (run,) = _runs(outputs)
    assert run.info.status == "FAILED"
