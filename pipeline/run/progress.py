"""Progress in env steps (not Lightning batches), drawn by rank 0 only: a live bar on a terminal, and a
line every `LOG_EVERY_S` seconds elsewhere (logs, CI, sweep workers). Both say how long is left."""

from __future__ import annotations

import math
import sys
import time

import pytorch_lightning as pl
from tqdm import tqdm

LOG_EVERY_S = 60.0


def eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class EnvStepProgress(pl.Callback):
    """env steps / budget, recent training return, last evaluation, steps/s and the time left: one line per job."""

    def __init__(self, total_env_steps: int, description: str, log_every_s: float = LOG_EVERY_S):
        self.total = total_env_steps
        self.description = description
        self.log_every_s = log_every_s
        self.bar: tqdm | None = None
        self.live = False
        self._started = 0.0
        self._first_step: int | None = None  # the rate is measured from the first chunk's end on
        self._last_line = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.live = sys.stderr.isatty()
        self._last_line = time.monotonic()
        if self.live:
            self.bar = tqdm(
                total=self.total,
                desc=self.description,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=0.5,
                leave=True,
            )

    def _remaining_s(self, step: int) -> float:
        if self._first_step is None:  # a resumed run starts part-way: measure from where it began
            self._first_step, self._started = step, time.monotonic()
        done = step - self._first_step
        elapsed = time.monotonic() - self._started
        return (self.total - step) * elapsed / done if done > 0 else math.nan

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        if not trainer.is_global_zero:
            return
        progress = getattr(pl_module, "progress", {})
        step = min(int(progress.get("env_steps", 0)), self.total)
        ret, ev = progress.get("return", math.nan), progress.get("eval", math.nan)
        sps = progress.get("steps_per_s", 0)
        left = self._remaining_s(step)
        if self.bar is not None:
            self.bar.set_postfix_str(f"return {ret:.1f} | eval {ev:.1f} | {sps:.0f} steps/s", refresh=False)
            self.bar.update(step - self.bar.n)
            return
        now = time.monotonic()
        if now - self._last_line >= self.log_every_s:
            self._last_line = now
            print(
                f"{self.description}: {step:,}/{self.total:,} env steps ({100 * step / self.total:.0f}%), "
                f"{sps:.0f} steps/s, return {ret:.1f}, eval {ev:.1f}, about {eta(left)} left",
                file=sys.stderr,
                flush=True,
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.on_train_batch_end(trainer, pl_module)
            self.bar.close()
            self.bar = None
