"""The sweep as data: its parent run and finished jobs read from MLflow, grouped by the config keys
that varied between them (seed and bookkeeping left out), and the dataclasses the report is made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"

DEFAULT_METRIC = "eval/return_mean"

FINAL_METRIC = "eval/final_return_mean"  # the score compared between groups (one value per run)

THRESHOLD_PARAM = "env.solved_return"  # the default threshold, per run, when none is given

# Keys that differ between runs without being what the sweep compares.
IGNORED_KEYS = ("seed",)

IGNORED_PREFIXES = ("paths.", "logger.", "checkpoint.", "progress", "resume")

# Label keys tried first (a key implied by the keys already in a label is left out of it).
LABEL_PRIORITY = ("algo.name", "backbone.name", "backbone.weights", "env.name", "env.id")


@dataclass
class RunData:
    """One finished job: its params, its metric history (step → value), its final score."""

    run_id: str
    name: str
    params: dict[str, str]
    history: dict[int, float]
    final: float
    threshold: float | None
    video: str | None = None  # the newest training video's artifact URI
    evaluation: Evaluation | None = None  # the newest `python -m pipeline.evaluate` run of its policy


@dataclass
class Evaluation:
    """An evaluation run's statistics (pipeline/evaluate/job.py), as the report quotes them."""

    run_id: str
    episodes: int
    iqm: float
    ci: tuple[float, float]
    mean: float
    video: str | None  # its first recorded episode's artifact URI


@dataclass
class GroupStats:
    label: str
    values: dict[str, str]  # every varying key of the group
    runs: list[RunData]
    iqm: float = float("nan")
    ci: tuple[float, float] = (float("nan"), float("nan"))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    curve: np.ndarray = field(default_factory=lambda: np.zeros((3, 0)))  # IQM, lower, upper per step
    reached: list[int] = field(default_factory=list)  # steps at which runs first reached the threshold

    @property
    def finals(self) -> np.ndarray:
        return np.array([r.final for r in self.runs], dtype=np.float64)

    @property
    def seeds(self) -> str:
        return ", ".join(r.params.get("seed", "?") for r in self.runs)


@dataclass
class Report:
    sweep_id: str
    title: str
    metric: str
    groups: list[GroupStats]
    varying: list[str]
    answer: list[str]  # markdown lines, with `code` and **bold** only
    threshold_label: str | None  # e.g. "≥ 475", None when no threshold is known
    left_out: list[str]
    command: str


def client_for(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.store import absolute_tracking_uri, check_server

    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and not Path(tracking_uri[len(prefix) :]).is_file():
        raise ConfigError(
            f"tracking_uri={tracking_uri}: no MLflow store there; run a sweep first (python -m pipeline -m ...) "
            "or pass tracking_uri=<the store the sweep logged to>"
        )
    try:  # an http(s) server must answer: one line, not a minute of retries
        check_server(tracking_uri)
    except ConfigError as ex:  # the message names the training key; name this command's
        raise ConfigError(str(ex).replace("logger.tracking_uri=", "tracking_uri=", 1)) from None
    return MlflowClient(tracking_uri=absolute_tracking_uri(tracking_uri))


def search_all(client: Any, experiment_ids: list[str], filter_string: str, **kwargs: Any) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token, **kwargs)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_parent(client: Any, sweep: str, tracking_uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    if sweep == "last":
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(
            experiment_ids, "tags.sweep_parent = 'true'", order_by=["attributes.start_time DESC"], max_results=1
        )
        if not found:
            raise ConfigError(
                f"sweep=last: no sweep in {tracking_uri}; run one (python -m pipeline -m seed=0,1,2 ...) "
                "or pass tracking_uri=<the store the sweep logged to>"
            )
        return found[0]
    try:
        run = client.get_run(sweep)
    except MlflowException:
        raise ConfigError(
            f"sweep={sweep}: no such run in {tracking_uri}; pass the run id of a sweep's parent run "
            "(tag sweep_parent=true) or sweep=last"
        ) from None
    if run.data.tags.get("sweep_parent") != "true":
        parent = run.data.tags.get("sweep_id")
        hint = f"it is a job of sweep {parent}: pass sweep={parent}" if parent else "pass sweep=last"
        raise ConfigError(f"sweep={sweep}: this run is not a sweep's parent run (tag sweep_parent=true); {hint}")
    return run


def _threshold_of(params: dict[str, str]) -> float | None:
    try:
        return float(params[THRESHOLD_PARAM])
    except (KeyError, ValueError):  # absent, or "null"
        return None


def load_run(client: Any, run: Any, metric: str) -> RunData | None:
    """A finished job's data, or None when it never logged the metric."""
    points = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: (m.step, m.timestamp))
    if not points:
        return None
    history = {int(m.step): float(m.value) for m in points}  # the last value logged at a step wins
    final = run.data.metrics.get(FINAL_METRIC, history[max(history)])
    params = dict(run.data.params)
    return RunData(run.info.run_id, run.info.run_name or run.info.run_id, params, history, final, _threshold_of(params))


def newest_video(client: Any, run: Any) -> str | None:
    """The last file under the run's `videos/` artifacts (training videos are named by zero-padded step)."""
    videos = sorted(a.path for a in client.list_artifacts(run.info.run_id, "videos") if a.path.endswith(".mp4"))
    return f"{run.info.artifact_uri.rstrip('/')}/{videos[-1]}" if videos else None


def load_evaluation(client: Any, run: Any) -> Evaluation | None:
    """The newest finished evaluation run of this training run (tag `evaluation_of`), if any."""
    found = client.search_runs(
        [run.info.experiment_id],
        f"tags.evaluation_of = '{run.info.run_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found or "eval/return_iqm" not in found[0].data.metrics:
        return None
    m = found[0].data.metrics
    return Evaluation(
        found[0].info.run_id,
        int(m.get("eval/episodes", 0)),
        m["eval/return_iqm"],
        (m["eval/return_iqm_ci_low"], m["eval/return_iqm_ci_high"]),
        m["eval/return_mean"],
        newest_video(client, found[0]),
    )


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def _varying_keys(runs: list[RunData]) -> list[str]:
    keys = sorted({k for r in runs for k in r.params if not _ignored(k)})
    return [k for k in keys if len({r.params.get(k, "null") for r in runs}) > 1]


def _label_keys(runs: list[RunData], varying: list[str]) -> list[str]:
    """The varying keys worth showing: a key whose value follows from the keys already kept is left out."""
    order = sorted(varying, key=lambda k: (LABEL_PRIORITY.index(k) if k in LABEL_PRIORITY else len(LABEL_PRIORITY), k))
    kept: list[str] = []
    blocks = 1
    for key in order:
        n = len({tuple(r.params.get(k, "null") for k in [*kept, key]) for r in runs})
        if n > blocks:
            kept.append(key)
            blocks = n
    return kept


def _short_values(runs: list[RunData], key: str) -> dict[str, str]:
    """Long path-like values by their file name, where the file names still tell the groups apart."""
    values = sorted({r.params.get(key, "null") for r in runs})
    short = {v: v.rstrip("/").rsplit("/", 1)[-1] if "/" in v else v for v in values}
    return short if len(set(short.values())) == len(values) else {v: v for v in values}


def group_runs(runs: list[RunData]) -> tuple[list[str], list[GroupStats]]:
    varying = _varying_keys(runs)
    label_keys = _label_keys(runs, varying)
    shorten = {k: _short_values(runs, k) for k in label_keys}
    by_values: dict[tuple[str, ...], list[RunData]] = {}
    for run in runs:
        by_values.setdefault(tuple(run.params.get(k, "null") for k in varying), []).append(run)
    groups = []
    for values, members in by_values.items():
        named = dict(zip(varying, values, strict=True))
        label = ", ".join(f"{k}={shorten[k][named[k]]}" for k in label_keys) or "all runs"
        members.sort(key=lambda r: (as_number(r.params.get("seed")), r.name))
        groups.append(GroupStats(label, named, members))
    return varying, groups


def as_number(text: str | None) -> float:
    try:
        return float(text) if text is not None else float("inf")
    except ValueError:
        return float("inf")
