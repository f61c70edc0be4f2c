"""Sweeps as one unit: a parent MLflow run that groups the jobs, per-job status, and an end summary.

Hydra calls `SweepCallback` in the launching process: at the start it opens the parent run and
publishes its id and a status folder through environment variables, which launcher workers (joblib,
submitit, Ray) inherit. Each job records how it ended (`record_job`); a failing job is reported and
the sweep goes on. At the end the callback prints one line per failed job, logs the summary (and
Optuna's best parameters) to the parent run, writes the comparison report, and exits non-zero if
any job failed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

_heartbeat: Any = None  # the parent run's heartbeat (pipeline/tracking/orphans.py), while the sweep runs
PARENT_ENV = "PIPELINE_SWEEP_PARENT"  # MLflow run id of the sweep's parent run
STATUS_ENV = "PIPELINE_SWEEP_STATUS"  # folder where each job writes <job num>.json


def sweep_tags() -> dict[str, str]:
    """Tags a job's MLflow run gets inside a sweep: nested under the parent in the UI, and findable."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not _in_multirun():
        return {}
    return {"mlflow.parentRunId": parent, "sweep_id": parent}


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def in_sweep() -> bool:
    return bool(os.environ.get(STATUS_ENV)) and _in_multirun()


def record_job(status: str, value: float | None = None, error: str | None = None, run_id: str | None = None) -> None:
    """One file per job (written atomically): how it ended, for the end-of-sweep summary."""
    from hydra.core.hydra_config import HydraConfig

    folder = Path(os.environ[STATUS_ENV])
    hc = HydraConfig.get()
    num = int(hc.job.num)
    record = {
        "job": num,
        "overrides": " ".join(hc.overrides.task),
        "status": status,
        "value": None if value is None or math.isnan(value) else value,
        "error": error,
        "run_id": run_id,
        "output_dir": hc.runtime.output_dir,
    }
    tmp = folder / f".{num}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, folder / f"{num}.json")


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.parent: str | None = None
        self.tracking_uri: str | None = None
        self.folder: Path | None = None
        self.outputs = Path("outputs")
        self.started = 0.0

    # ------------------------------------------------------------------ start
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        self.outputs = Path(config.paths.outputs)
        self.folder = self.outputs / "sweeps" / f"{stamp}_{uuid.uuid4().hex[:6]}"
        self.folder.mkdir(parents=True, exist_ok=True)
        os.environ[STATUS_ENV] = str(self.folder.resolve())
        if config.logger.name != "mlflow":
            return
        from pipeline.tracking.orphans import Heartbeat, owner_tags
        from pipeline.tracking.run import Tracker, git_commit

        args = " ".join(sys.argv[1:])
        tracker = Tracker(config.logger.tracking_uri, config.logger.experiment, config.logger.artifact_location)
        self.tracking_uri = tracker.tracking_uri
        run = tracker.client.create_run(
            tracker.experiment_id,
            run_name=f"sweep {stamp}",
            tags={
                "sweep_parent": "true",
                "git_commit": git_commit(),
                "sweep_command": f"python -m pipeline {args}",
                **owner_tags(),  # a sweep killed with -9 is marked KILLED by the next start
            },
        )
        self.parent = run.info.run_id
        global _heartbeat  # not an attribute: launchers pickle this callback, and a thread does not pickle
        _heartbeat = Heartbeat(tracker.tracking_uri, self.parent)
        tracker.client.set_tag(self.parent, "sweep_id", self.parent)
        os.environ[PARENT_ENV] = self.parent
        (self.folder / "sweep.json").write_text(json.dumps({"parent_run_id": self.parent, "command": args}))
        print(f"sweep: MLflow parent run {self.parent}; jobs write to {config.hydra.sweep.dir}", flush=True)

    # ------------------------------------------------------------------ end
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if _heartbeat is not None:
            _heartbeat.stop()
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(STATUS_ENV, None)
        if self.folder is None:
            return
        records = sorted((json.loads(p.read_text()) for p in self.folder.glob("[0-9]*.json")), key=lambda r: r["job"])
        failed = [r for r in records if r["status"] != "finished"]
        summary = self._summary(records, failed)
        (self.folder / "summary.md").write_text(summary)
        best = Path(str(config.hydra.sweep.dir)) / "optimization_results.yaml"
        print(
            f"sweep: {len(records)} jobs, {len(records) - len(failed)} finished, {len(failed)} failed "
            f"in {time.time() - self.started:.0f} s; summary {self.folder / 'summary.md'}",
            flush=True,
        )
        for r in failed:
            print(f"  failed job {r['job']} ({r['overrides'] or 'no overrides'}): {r['error']}", flush=True)
        if best.is_file():
            results = OmegaConf.load(best)
            print(f"sweep: best {results.get('best_value')} with {OmegaConf.to_container(results.best_params)}")
        if self.parent is not None:
            self._close_parent(records, failed, best)
        if failed:
            raise SystemExit(1)

    def _summary(self, records: list[dict], failed: list[dict]) -> str:
        lines = [
            f"# Sweep summary ({len(records)} jobs, {len(failed)} failed)",
            "",
            "| job | overrides | status | final eval return | MLflow run | error |",
            "|---|---|---|---|---|---|",
        ]
        for r in records:
            value = "" if r["value"] is None else f"{r['value']:.3g}"
            run, error = r["run_id"] or "", r["error"] or ""
            lines.append(f"| {r['job']} | `{r['overrides']}` | {r['status']} | {value} | {run} | {error} |")
        return "\n".join(lines) + "\n"

    def _close_parent(self, records: list[dict], failed: list[dict], best: Path) -> None:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        parent = self.parent
        assert parent is not None and self.folder is not None
        client.log_artifact(parent, str(self.folder / "summary.md"))
        client.log_metric(parent, "sweep/jobs", len(records))
        client.log_metric(parent, "sweep/failed", len(failed))
        if best.is_file():
            results = OmegaConf.load(best)
            client.log_artifact(parent, str(best))
            for key, value in OmegaConf.to_container(results.best_params).items():  # type: ignore[union-attr]
                client.log_param(parent, f"best.{key}", value)
            if isinstance(results.get("best_value"), float | int):
                client.log_metric(parent, "sweep/best_value", float(results.best_value))
        finished = [r for r in records if r["status"] == "finished" and r["run_id"]]
        if len(finished) >= 2:
            try:
                from pipeline.report.build import make_report

                path = make_report(str(self.tracking_uri), sweep=parent, out=self.outputs / "reports")
                print(f"sweep: report {path}", flush=True)
            except Exception as ex:  # a report problem must not hide the sweep's own outcome
                print(f"sweep: no report ({type(ex).__name__}: {ex})", flush=True)
        if failed:
            client.set_tag(parent, "error", f"{len(failed)} of {len(records)} jobs failed; see summary.md")
        client.set_terminated(parent, "FAILED" if failed else "FINISHED")
