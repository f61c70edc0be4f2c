"""`python -m pipeline.evaluate`'s own keys (conf/evaluate.yaml); `env.*` overrides go to the run's env."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.check import require
from pipeline.config.root import PathsConfig


@dataclass
class EvaluateConfig:
    model: str = "last"
    episodes: int = 10
    stochastic: bool = False
    seed: int | None = None  # None: the run's own evaluation seeds
    video: bool = False
    video_episodes: int = 1
    saliency: bool = False
    saliency_frames: int = 8
    tracking_uri: str | None = None  # None: the default store under `paths.outputs`
    paths: PathsConfig = field(default_factory=PathsConfig)


def check_evaluate(e: EvaluateConfig) -> None:
    require(bool(e.model), "model", e.model, "must name a policy: last, a run id, runs:/<id>/policy or models:/...")
    require(e.episodes >= 1, "episodes", e.episodes, "must be >= 1")
    require(e.seed is None or e.seed >= 0, "seed", e.seed, "must be >= 0")
    require(e.video_episodes >= 1, "video_episodes", e.video_episodes, "must be >= 1")
    require(e.video_episodes <= e.episodes, "video_episodes", e.video_episodes, f"must be <= episodes ({e.episodes})")
    require(e.saliency_frames >= 1, "saliency_frames", e.saliency_frames, "must be >= 1")
