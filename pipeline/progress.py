"""A progress bar in env steps (not Lightning batches), drawn by rank 0 only."""

from __future__ import annotations

import math
import sys

import pytorch_lightning as pl
from tqdm import tqdm


class EnvStepProgress(pl.Callback):
    """env steps / budget, recent training return, last evaluation, steps/s: one line per job."""

    def __init__(self, total_env_steps: int, description: str):
        self.total = total_env_steps
        self.description = description
        self.bar: tqdm | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.bar = tqdm(
                total=self.total,
                desc=self.description,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=0.5,
                leave=True,
                disable=not sys.stderr.isatty(),  # no live bar in logs, CI or joblib workers
            )

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        if self.bar is None:
            return
        progress = getattr(pl_module, "progress", {})
        ret, ev = progress.get("return", math.nan), progress.get("eval", math.nan)
        sps = progress.get("steps_per_s", 0)
        self.bar.set_postfix_str(f"return {ret:.1f} | eval {ev:.1f} | {sps:.0f} steps/s", refresh=False)
        self.bar.update(min(int(progress.get("env_steps", 0)), self.total) - self.bar.n)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.on_train_batch_end(trainer, pl_module)
            self.bar.close()
            self.bar = None
