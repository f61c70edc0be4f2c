"""MLflow: run lifecycle and status, params, tags, batched metrics, artifacts, the logged policy.

The main process owns the run (`Tracker`); whichever process trains (itself, or DDP rank 0 in a
spawned child) writes metrics through a `MetricWriter` that only needs the tracking URI and run id.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import ConfigError, one_line

T = TypeVar("T")

REPO_DIR = Path(__file__).resolve().parent.parent


def absolute_tracking_uri(uri: str) -> str:
    """Anchor a relative SQLite path at the current directory, so spawned processes agree on it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return uri


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


def check_server(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """An HTTP tracking URI must answer within seconds, before anything is trained or written."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except (urllib.error.URLError, OSError, ValueError) as ex:
        reason = getattr(ex, "reason", ex)
        raise ConfigError(
            f"logger.tracking_uri={tracking_uri}: no MLflow server answers there ({reason}); start one "
            "(mlflow server --host 127.0.0.1) or drop the override to use the local SQLite store"
        ) from None


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


@dataclass(frozen=True)
class RunTarget:
    """Where metrics go; picklable so a spawned DDP process can write to the parent's run.

    `logged_until` maps a metric key to the last step already in the run (a resumed run replays the
    steps between its checkpoint and the kill; those points are not written twice).
    """

    tracking_uri: str
    run_id: str
    logged_until: dict[str, int] = field(default_factory=dict)


class MetricWriter:
    """Buffers metrics and writes them in batches, so logging never dominates a fast loop."""

    MAX_BATCH = 1000

    def __init__(self, target: RunTarget, flush_every_s: float = 5.0):
        from mlflow.tracking import MlflowClient

        self.target = target
        self.client = MlflowClient(tracking_uri=target.tracking_uri)
        self.flush_every_s = flush_every_s
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        done = self.target.logged_until
        self._pending.extend(
            Metric(k, float(v), now_ms, int(step)) for k, v in metrics.items() if step > done.get(k, -1)
        )
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
            self.client.log_batch(self.target.run_id, metrics=chunk)
        self._last_flush = time.monotonic()


class Tracker:
    """One MLflow run per job. Always ends the run: FINISHED, FAILED or KILLED with the error."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str):
        import mlflow

        self.mlflow = mlflow
        self.tracking_uri = absolute_tracking_uri(tracking_uri)
        check_server(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = self._experiment(experiment, artifact_location)
        self.run_id: str | None = None

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
        run = self.mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=dict(tags))
        self.run_id = run.info.run_id
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
        self.mlflow.start_run(run_id=run_id, tags=dict(tags))
        self.run_id = run_id
        if "error" in run.data.tags:  # the interruption being recovered from
            self.client.delete_tag(run_id, "error")
        return RunTarget(self.tracking_uri, run_id, logged_until)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.mlflow.set_tags(dict(tags))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path)

    def run_to_end(self, body: Callable[[], T]) -> T:
        """Run `body` inside this run and end it whatever happens: FINISHED, KILLED on an interrupt,
        FAILED with the error's one line on anything else."""
        try:
            result = body()
        except (KeyboardInterrupt, SystemExit) as ex:
            self.end("KILLED", error=f"interrupted: {one_line(ex) or type(ex).__name__}")
            raise
        except BaseException as ex:
            self.end("FAILED", error=one_line(ex))
            raise
        self.end("FINISHED")
        return result

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
            code_paths=[str(Path(__file__).resolve().parent)],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}"],
        )
        self.set_tags({f"{name}_uri": info.model_uri})
        return info.model_uri

    def end(self, status: str, error: str | None = None) -> None:
        if self.run_id is None:
            return
        if error:
            self.client.set_tag(self.run_id, "error", error[:5000])
        self.mlflow.end_run(status=status)
        self.run_id = None


def plot_learning_curve(target: RunTarget, path: Path, title: str) -> Path:
    """Training episode returns and evaluation returns against env steps, read back from MLflow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=target.tracking_uri)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("train/episode_return", "-"), ("eval/return_mean", "o-")):
        history = sorted(client.get_metric_history(target.run_id, key), key=lambda m: m.step)
        if history:
            ax.plot([m.step for m in history], [m.value for m in history], style, label=key, alpha=0.85)
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
