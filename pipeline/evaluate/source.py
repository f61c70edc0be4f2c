"""Which policy `model=` names, in which store, and the training run it came from (its config rebuilds the env).

Accepted: `last` (the newest finished run with a logged policy), a run id, `runs:/<run id>/<path>`,
`models:/<name>/<version>` (a registered model) and `models:/<model id>` (the URI a run prints). Every form
that does not resolve is one line naming the forms, before anything is created.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.load import load_config
from pipeline.config.root import Config
from pipeline.core.errors import ConfigError, one_line

FORMS = "use last, a run id, runs:/<run id>/policy or models:/<name>/<version>"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
POLICY_TAG = "policy_uri"  # set by tracking/run.py when the policy is logged


@dataclass
class Source:
    model: str  # what the user wrote
    model_uri: str  # what MLflow loads
    run_id: str  # the training run
    run_name: str
    experiment_id: str
    experiment: str
    cfg: Config  # the training run's own config (config.yaml artifact)


def _client(tracking_uri: str) -> Any:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def _run(client: Any, run_id: str, model: str, store: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"model={model}: no MLflow run {run_id} in {store}; {FORMS}") from None


def _newest_with_policy(client: Any, store: str) -> Any:
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=500
    )
    for run in runs:
        if POLICY_TAG in run.data.tags and run.data.tags.get("evaluation") != "true":
            return run
    raise ConfigError(
        f"model=last: no finished run with a logged policy in {store}; train one first (make run) "
        "or point tracking_uri= at the store that holds it"
    )


def _model_run_id(model: str, store: str) -> str:
    import mlflow

    try:
        info = mlflow.models.get_model_info(model)
    except Exception as ex:
        raise ConfigError(f"model={model}: not found in {store} ({one_line(ex)[:200]}); {FORMS}") from None
    if not info.run_id:
        raise ConfigError(f"model={model}: the model names no training run, so its env is unknown; {FORMS}")
    return str(info.run_id)


def resolve(model: str, tracking_uri: str) -> Source:
    """The policy `model` names and its training run's config; ConfigError (one line) if it does not resolve."""
    client = _client(tracking_uri)
    if model == "last":
        run = _newest_with_policy(client, tracking_uri)
        uri = run.data.tags[POLICY_TAG]
    elif RUN_ID.match(model):
        run = _run(client, model, model, tracking_uri)
        if POLICY_TAG not in run.data.tags:
            raise ConfigError(f"model={model}: run {model} logged no policy (logger.log_model=false or it failed)")
        uri = run.data.tags[POLICY_TAG]
    elif model.startswith("runs:/"):
        run_id = model.removeprefix("runs:/").split("/", 1)[0]
        run = _run(client, run_id, model, tracking_uri)
        uri = model  # loading it (before any run is created) says whether the path holds a model
    elif model.startswith("models:/"):
        run = _run(client, _model_run_id(model, tracking_uri), model, tracking_uri)
        uri = model
    else:
        raise ConfigError(f"model={model}: not a model reference; {FORMS}")
    experiment = client.get_experiment(run.info.experiment_id)
    return Source(
        model, uri, run.info.run_id, run.info.run_name, experiment.experiment_id, experiment.name, _config(run)
    )


def _config(run: Any) -> Config:
    """The training run's config.yaml, logged as an artifact at its start."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="config.yaml", dst_path=tmp
            )
        except Exception as ex:
            raise ConfigError(
                f"run {run.info.run_id} has no config.yaml artifact ({one_line(ex)[:160]}): not a run of this pipeline"
            ) from None
        return load_config(Path(path))
