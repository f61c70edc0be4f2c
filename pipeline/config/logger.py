"""`logger` group: where runs are tracked (MLflow or nowhere) and what is logged (conf/logger/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from pipeline.config.check import one_of, require

LOGGERS = ("mlflow", "none")


@dataclass
class LoggerConfig:
    name: str = MISSING
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    artifact_location: str = "outputs/mlartifacts"
    experiment: str = "pipeline"
    run_name: str | None = None
    log_model: bool = True
    flush_every_s: float = 5.0
    video_every_env_steps: int | None = None  # None = auto (config/load.py: resolve_videos)


def check_logger(lg: LoggerConfig) -> None:
    one_of(lg.name, LOGGERS, "logger.name")
    require(lg.flush_every_s >= 0, "logger.flush_every_s", lg.flush_every_s, "must be >= 0")
    every = lg.video_every_env_steps
    require(every is None or every >= 0, "logger.video_every_env_steps", every, "must be >= 0 (0 = no videos)")
