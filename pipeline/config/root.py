"""The root of the config tree: every group's node, the run-wide keys (seed, budget, evaluation,
checkpoints, paths), and their registration in Hydra's ConfigStore (conf/config.yaml documents them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from pipeline.config.algo import ALGO_SCHEMAS
from pipeline.config.backbone import BackboneConfig
from pipeline.config.distill import DistillConfig
from pipeline.config.env import EnvConfig
from pipeline.config.hardware import HardwareConfig
from pipeline.config.logger import LoggerConfig
from pipeline.config.reward import RewardConfig
from pipeline.config.stage import StageConfig


@dataclass
class EvalConfig:
    every_env_steps: int = 2_000
    episodes: int = 10
    stop_on_solve: bool = True


@dataclass
class CheckpointConfig:
    every_env_steps: int = 10_000
    buffer: bool = True
    buffer_max_gb: float = 4.0


@dataclass
class PathsConfig:
    outputs: str = "outputs"


@dataclass
class Config:
    env: EnvConfig = MISSING
    backbone: BackboneConfig = MISSING
    algo: Any = MISSING  # one of ALGO_SCHEMAS: each algo YAML extends its family's schema
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    seed: int = 0
    total_env_steps: int = 50_000
    progress: bool = True
    resume: str | None = None


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    for family, node in ALGO_SCHEMAS.items():
        store.store(group="algo", name=f"{family}_schema", node=node)
