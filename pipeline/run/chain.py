"""Chained experiments: a first stage that runs once, then the grid that consumes its output.

`ChainCallback` is a Hydra callback that `experiment=pretrain_then_rl` and `experiment=kickstart`
add after the sweep's own (`pipeline.sweep.SweepCallback`, which opens the parent MLflow run). At the
start of the multirun it runs the first stage in the launching process — the pretraining stage, or
the teacher's RL run — as a child of the sweep's parent run, and publishes what it produced through
an environment variable that the grid's jobs (launched afterwards, so they inherit it) read:
`PIPELINE_CHAIN_WEIGHTS` (a `runs:/` URI of the pretrained backbone) or `PIPELINE_CHAIN_TEACHER` (the
teacher's policy URI). The jobs record those URIs in their params (`backbone.weights`,
`distill.teacher`), the sweep's report compares the arms, and the first stage is tagged
`chain_stage` so the report leaves it out of the comparison.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

WEIGHTS_ENV = "PIPELINE_CHAIN_WEIGHTS"
TEACHER_ENV = "PIPELINE_CHAIN_TEACHER"


class ChainCallback(Callback):
    def __init__(self, first: str, overrides: dict[str, Any] | None = None) -> None:
        if first not in ("pretrain", "teacher"):
            raise ValueError(f"chain first stage {first!r}: use pretrain or teacher")
        self.first = first
        self.overrides = dict(overrides or {})

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pipeline.run.sweep import PARENT_ENV

        given = not OmegaConf.is_interpolation(config.distill, "teacher") and config.distill.teacher
        if self.first == "teacher" and given:
            os.environ[TEACHER_ENV] = str(config.distill.teacher)  # given: nothing to train first
            print(f"chain: teacher {config.distill.teacher} (given)", flush=True)
            return
        cfg = copy.deepcopy(config)
        with open_dict(cfg):
            del cfg["hydra"]
        cfg = OmegaConf.merge(cfg, self.overrides)  # the first stage's own settings (a config subtree)
        parent = os.environ.get(PARENT_ENV)
        tags = {"chain_stage": self.first}
        if parent:
            tags |= {"mlflow.parentRunId": parent, "chain_id": parent}
        run_dir = Path(str(config.hydra.sweep.dir)) / f"first-stage-{self.first}"
        from pipeline.run.job import run_job

        if self.first == "pretrain":
            result = run_job(cfg, run_dir=run_dir, extra_tags=tags)
            if result.run_id is None:
                raise RuntimeError("a chained experiment needs MLflow (logger=mlflow) to hand the weights on")
            uri = f"runs:/{result.run_id}/weights/backbone.safetensors"
            os.environ[WEIGHTS_ENV] = uri
            accuracy = f"val accuracy {result.val_accuracy:.3f}"
            print(f"chain: pretrained ({result.objective}, {accuracy}) -> {uri}", flush=True)
        else:
            result = run_job(cfg, run_dir=run_dir, extra_tags=tags)
            if result.model_uri is None:
                raise RuntimeError("a chained experiment needs MLflow (logger=mlflow) to hand the teacher on")
            os.environ[TEACHER_ENV] = result.model_uri
            print(f"chain: teacher return {result.eval_return_mean:.1f} -> {result.model_uri}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(WEIGHTS_ENV, None)
        os.environ.pop(TEACHER_ENV, None)
