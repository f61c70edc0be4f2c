"""One MLflow run per job: its lifecycle and status (FINISHED, FAILED or KILLED with the error, never left
RUNNING), params, tags, artifacts and the logged policy. Metrics go through `metrics.MetricWriter`."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pipeline.core.errors import ConfigError, Interrupted, RunFailure, disk_full_reason, one_line
from pipeline.core.signals import GUARD
from pipeline.tracking.metrics import RunTarget
from pipeline.tracking.orphans import Heartbeat, owner_tags, reap_orphans
from pipeline.tracking.store import absolute_tracking_uri, check_server

log = logging.getLogger(__name__)

T = TypeVar("T")

REPO_DIR = Path(__file__).resolve().parents[2]


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"algo": {"lr": 1e-3}} → {"algo.lr": 1e-3}; lists are kept as their string form."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class Tracker:
    """One MLflow run per job. Always ends the run: FINISHED, FAILED or KILLED with the error."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str):
        import mlflow

        self.mlflow = mlflow
        self.tracking_uri = absolute_tracking_uri(tracking_uri)
        check_server(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        try:
            self.experiment_id = self._experiment(experiment, artifact_location)
        except Exception as ex:
            reason = disk_full_reason(ex)
            if reason is None:
                raise
            raise RunFailure(f"cannot open the MLflow store {self.tracking_uri}: {reason}") from None
        self.run_id: str | None = None
        self.heartbeat: Heartbeat | None = None
        reap_orphans(self.client, [self.experiment_id], by="the next start")

    def _experiment(self, name: str, artifact_location: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if artifact_location and "://" not in artifact_location:
            location = (Path(artifact_location).resolve() / name).as_uri()
        elif artifact_location:
            location = artifact_location.rstrip("/") + "/" + name
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by a parallel job
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> RunTarget:
        """Create the run (call it inside `run_to_end`, so a failure or a signal right after still ends it)."""
        with GUARD.deferred():  # a signal cannot fall between creating the run and knowing its id
            run = self.mlflow.start_run(
                experiment_id=self.experiment_id, run_name=run_name, tags={**tags, **owner_tags()}
            )
            self.run_id = run.info.run_id
        self.heartbeat = Heartbeat(self.tracking_uri, self.run_id)
        self.mlflow.log_params({k: ("null" if v is None else v) for k, v in params.items()})
        return RunTarget(self.tracking_uri, self.run_id)

    def resume(self, run_id: str, tags: Mapping[str, str]) -> RunTarget:
        """Reopen a run (RUNNING again) and note which steps it already holds."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise ConfigError(f"resume: MLflow run {run_id} is not in {self.tracking_uri}") from None
        logged_until = {
            key: max(m.step for m in self.client.get_metric_history(run_id, key)) for key in run.data.metrics
        }
        with GUARD.deferred():
            self.mlflow.start_run(run_id=run_id, tags={**tags, **owner_tags()})
            self.run_id = run_id
        self.heartbeat = Heartbeat(self.tracking_uri, run_id)
        if "error" in run.data.tags:  # the interruption being recovered from
            self.client.delete_tag(run_id, "error")
        return RunTarget(self.tracking_uri, run_id, logged_until)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.mlflow.set_tags(dict(tags))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path)

    def run_to_end(self, body: Callable[[], T]) -> T:
        """Run `body` (which starts or resumes the run) and end the run whatever happens: FINISHED;
        KILLED on a signal or an interrupt; FAILED with the error's one line on anything else. A full disk
        becomes a `RunFailure` saying where; a run that cannot be ended (its store is full too) says so,
        and the next start marks it KILLED."""
        try:
            result = body()
        except (Interrupted, KeyboardInterrupt, SystemExit) as ex:
            why = str(ex) if isinstance(ex, Interrupted) else f"interrupted: {one_line(ex) or type(ex).__name__}"
            self._end_or_say("KILLED", why, ex)
            raise
        except BaseException as ex:
            reason = disk_full_reason(ex)
            message = reason or one_line(ex)
            self._end_or_say("FAILED", message, ex)
            if reason is not None and not isinstance(ex, RunFailure):
                raise RunFailure(message) from ex
            raise
        self._end_or_say("FINISHED", None, None)
        return result

    def _end_or_say(self, status: str, error: str | None, cause: BaseException | None) -> None:
        run_id = self.run_id
        try:
            tag_problem = self.end(status, error=error)
            problem = None
            if tag_problem is not None:
                problem = f"the MLflow run {run_id} is {status} but its error tag could not be written ({tag_problem})"
        except Exception as ex:
            if run_id is None:
                raise
            why = disk_full_reason(ex) or one_line(ex)
            problem = f"the MLflow run {run_id} could not be marked {status} ({why}); the next start marks it KILLED"
        if problem is None:
            return
        message = f"{error}; and {problem}" if error else problem
        if isinstance(cause, Interrupted) or cause is None:  # keep the signal's exit code; say it on the way out
            log.error(message)
            return
        raise RunFailure(message) from cause

    def log_torch_model(
        self, model: Any, example: Any, name: str, extra_files: list[Path], registered_name: str | None = None
    ) -> str:
        """Log `model` (in eval mode) as an MLflow model with a signature from `example`, tagged
        `<name>_uri`. torch.export's pt2 format: it loads without unpickling code or this package."""
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        model = model.eval()
        with torch.no_grad():
            outputs = model(torch.as_tensor(example)).numpy()
        info = mlflow.pytorch.log_model(
            model,
            name=name,
            signature=infer_signature(example, outputs),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            serialization_format="pt2",
            extra_files=[str(f) for f in extra_files] or None,  # the backbone: models:/<name>/<v> seeds a run
            registered_model_name=registered_name,
        )
        self.set_tags({f"{name}_uri": info.model_uri})
        return info.model_uri

    def log_pickled_model(self, model: Any, name: str) -> str:
        """A model whose input is not a tensor (a text policy: strings in, a command index out), pickled
        with this package's code beside it so `mlflow.pytorch.load_model` rebuilds it anywhere; tagged
        `<name>_uri`."""
        import mlflow.pytorch
        import torch

        model = model.eval()
        if getattr(model, "cache", None) is not None:
            model.cache = type(model.cache)(model.cache.encoder)  # the run's embeddings are not the model
        import transformers

        # mlflow warns that pickles run code on load; this is our own model, loaded with our own code.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        info = mlflow.pytorch.log_model(
            model,
            name=name,
            serialization_format="pickle",
            code_paths=[str(Path(__file__).resolve().parents[1])],  # the whole pipeline package
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}"],
        )
        self.set_tags({f"{name}_uri": info.model_uri})
        return info.model_uri

    def end(self, status: str, error: str | None = None) -> str | None:
        """End the run with `status` (raises if the store refuses that). Returns None, or why the `error`
        tag could not be written while the status could (a full SQLite store still updates a row in place)."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None
        if self.run_id is None:
            return None
        tag_problem = None
        with GUARD.deferred():  # a second signal cannot leave the run half-ended
            if error:
                try:
                    self.client.set_tag(self.run_id, "error", error[:5000])
                except Exception as ex:
                    tag_problem = disk_full_reason(ex) or one_line(ex)
            self.run_id = None
            self.mlflow.end_run(status=status)  # drops the process's active run first, then writes
        return tag_problem
