"""One tracked run, whatever the stage trains: the run dir (writable, `config.yaml`, `run.json`), the MLflow
run started — or reopened by `resume=` — with its tags, and its end whatever happens (FINISHED, FAILED,
KILLED; pipeline/tracking/run.py). RL training and pretraining both open their run here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import torch
from omegaconf import OmegaConf

from pipeline.config.load import command_line_keys
from pipeline.config.root import Config
from pipeline.core.errors import ConfigError, DiskFull, Interrupted, disk_full_reason
from pipeline.core.paths import weights_cache
from pipeline.run.resume import Resumption
from pipeline.run.sweep import sweep_tags
from pipeline.tracking import checkpoints
from pipeline.tracking.metrics import RunTarget
from pipeline.tracking.run import Tracker, flatten, git_commit
from pipeline.tracking.store import absolute_tracking_uri

T = TypeVar("T")


def env_label(cfg: Config) -> str:
    """The env in a run's name: the option (`cartpole`), or the id when the command line changed it."""
    if "env.id" in command_line_keys():
        return cfg.env.id.replace("/", "_")
    return cfg.env.name


def default_run_dir(cfg: Config) -> Path:
    """Hydra's run dir for this job, or (outside a Hydra app) a timestamped one under `paths.outputs`."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.outputs) / "runs" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def hydra_tags() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    tags = {"hydra.overrides": " ".join(hc.overrides.task) or "(none)"}
    if hc.job.get("num") is not None:
        tags["hydra.job_num"] = str(hc.job.num)
    return tags


def weights_file(cfg: Config) -> str | None:
    """`backbone.weights` as a local file (an MLflow URI or a packaged model is fetched into the cache)."""
    if not cfg.backbone.weights:
        return None
    from pipeline.backbones.weights import resolve

    cache = weights_cache(cfg.paths.outputs)
    return str(resolve(cfg.backbone.weights, absolute_tracking_uri(cfg.logger.tracking_uri), cache))


def save_backbone(model: torch.nn.Module, run_dir: Path) -> Path:
    """The backbone's weights (its own key names), for `backbone.weights=runs:/<id>/weights/...` later."""
    from safetensors.torch import save_file

    from pipeline.backbones.weights import BACKBONE_FILE

    path = run_dir / "weights" / BACKBONE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.encoder.backbone_module().state_dict()
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
    return path


def _ensure_writable(run_dir: Path, outputs: str) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as ex:
        raise ConfigError(
            f"paths.outputs={outputs}: cannot write {run_dir} ({ex.strerror or ex}); "
            "point paths.outputs at a writable directory"
        ) from None


def _write_config(cfg: Config, run_dir: Path) -> None:
    """The resolved config, the file `resume=` reads back; a full disk here is one line, before any run."""
    path = run_dir / "config.yaml"
    try:
        path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    except OSError as ex:
        path.unlink(missing_ok=True)
        if disk_full_reason(ex) is None:
            raise
        raise DiskFull(path) from None


class Session:
    """The run of one job. `open` prepares what needs no MLflow run yet (tracker, run dir, config.yaml);
    `run(body)` starts or resumes the MLflow run, calls `body(target)` and ends the run whatever happens."""

    def __init__(
        self,
        cfg: Config,
        run_name: str,
        resumption: Resumption | None = None,
        run_dir: Path | None = None,
        extra_tags: dict[str, str] | None = None,
        stage_tags: dict[str, str] | None = None,
    ):
        self.cfg = cfg
        self.run_name = cfg.logger.run_name or run_name
        self.resumption = resumption
        self.run_dir = Path(resumption.run_dir if resumption else run_dir or default_run_dir(cfg))
        self.extra_tags = extra_tags  # replace the sweep's job tags (a chained experiment's first stage)
        self.stage_tags = stage_tags or {}
        self.tracker: Tracker | None = None
        if cfg.logger.name == "mlflow":
            record = resumption.record if resumption else None
            uri = record.tracking_uri if record and record.tracking_uri else cfg.logger.tracking_uri
            self.tracker = Tracker(uri, cfg.logger.experiment, cfg.logger.artifact_location)
        _ensure_writable(self.run_dir, cfg.paths.outputs)
        if resumption is None:
            _write_config(cfg, self.run_dir)

    @property
    def tracking_uri(self) -> str | None:
        return self.tracker.tracking_uri if self.tracker is not None else None

    def _open(self) -> RunTarget | None:
        tracker, resumption = self.tracker, self.resumption
        target = None
        if tracker is not None:
            tags = {"git_commit": git_commit(), "run_dir": str(self.run_dir.resolve()), **hydra_tags()}
            tags |= self.stage_tags | (self.extra_tags if self.extra_tags is not None else sweep_tags())
            if resumption is not None and resumption.record.run_id:
                counters = resumption.checkpoint.get("counters", {})
                done = counters.get("global_env_steps", counters.get("epoch"))
                tags["resumed_at_epoch" if "epoch" in counters else "resumed_at_step"] = str(done)
                target = tracker.resume(resumption.record.run_id, tags)
            else:
                target = tracker.start(self.run_name, flatten(dataclasses.asdict(self.cfg)), tags)
                tracker.log_artifact(self.run_dir / "config.yaml")
        checkpoints.RunRecord(target.run_id if target else None, self.tracking_uri).save(self.run_dir)
        return target

    def run(self, body: Callable[[RunTarget | None], T]) -> T:
        """`body(target)` inside the run; a signal on the way out names the run dir (pipeline/__main__.py)."""
        try:
            if self.tracker is None:
                return body(self._open())
            return self.tracker.run_to_end(lambda: body(self._open()))
        except Interrupted as ex:
            ex.run_dir = self.run_dir  # type: ignore[attr-defined]
            raise
