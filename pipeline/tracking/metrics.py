"""Metrics written in batches from whichever process trains (the main one, or DDP rank 0 in a spawned
child): it needs only the tracking URI and the run id (`RunTarget`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunTarget:
    """Where metrics go; picklable so a spawned DDP process can write to the parent's run.

    `logged_until` maps a metric key to the last step already in the run (a resumed run replays the
    steps between its checkpoint and the kill; those points are not written twice).
    """

    tracking_uri: str
    run_id: str
    logged_until: dict[str, int] = field(default_factory=dict)


class MetricWriter:
    """Buffers metrics and writes them in batches, so logging never dominates a fast loop."""

    MAX_BATCH = 1000

    def __init__(self, target: RunTarget, flush_every_s: float = 5.0):
        from mlflow.tracking import MlflowClient

        self.target = target
        self.client = MlflowClient(tracking_uri=target.tracking_uri)
        self.flush_every_s = flush_every_s
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        done = self.target.logged_until
        self._pending.extend(
            Metric(k, float(v), now_ms, int(step)) for k, v in metrics.items() if step > done.get(k, -1)
        )
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
            self.client.log_batch(self.target.run_id, metrics=chunk)
        self._last_flush = time.monotonic()
