"""`stage` group: what the job trains — an RL run, or a backbone without environment reward
(pipeline/run/pretrain.py; conf/stage/pretrain.yaml documents each key)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.check import one_of, require

STAGES = ("rl", "pretrain")
OBJECTIVES = ("supervised", "inverse_dynamics")


@dataclass
class StageConfig:
    """What the job trains: an RL run, or a backbone without environment reward (pipeline/run/pretrain.py)."""

    name: str = "rl"
    objective: str = "supervised"
    dataset: str = "digits"
    frames: int = 20_000
    collect_policy: str = "random"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    val_fraction: float = 0.2
    register_as: str | None = None


def check_stage(s: StageConfig) -> None:
    one_of(s.name, STAGES, "stage")
    one_of(s.objective, OBJECTIVES, "stage.objective")
    require(s.epochs >= 1, "stage.epochs", s.epochs, "must be >= 1")
    require(s.batch_size >= 1, "stage.batch_size", s.batch_size, "must be >= 1")
    require(s.lr > 0, "stage.lr", s.lr, "must be > 0")
    require(0 < s.val_fraction < 1, "stage.val_fraction", s.val_fraction, "must be in (0, 1)")
    at_least = f"collect at least 2 x stage.batch_size={s.batch_size}"
    require(s.frames >= 2 * s.batch_size, "stage.frames", s.frames, at_least)
    require(
        s.collect_policy == "random" or s.collect_policy.startswith(("runs:/", "models:/")),
        "stage.collect_policy",
        s.collect_policy,
        "use random or an MLflow model URI (runs:/<id>/policy, models:/<name>/<version>)",
    )
