"""Checkpoint files: atomic writes, safe loads with one-line errors, and finding what to resume.

A run dir holds `config.yaml` (the resolved config, written before training), `run.json` (the MLflow
run it logs to) and `checkpoints/`: `last.ckpt` (Lightning's checkpoint: weights, target net,
optimiser, and rank 0's loop state, RNG states and replay buffer) plus `rank<r>.pt` for other DDP
ranks. A pretrain stage's `last.ckpt` is its own dict, written after every epoch (pipeline/run/pretrain.py:
model, optimiser, epoch counter, history, RNG states). Everything is loaded with
`torch.load(weights_only=True)`: tensors and plain data only.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from pipeline.core.errors import ConfigError, DiskFull, one_line
from pipeline.core.signals import GUARD

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def nbytes(obj: Any) -> int:
    """The tensor and array bytes in a nested checkpoint (what its file needs, give or take the pickle)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, bytes | str):
        return len(obj)
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(nbytes(v) for v in obj)
    return 8


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, flushed to disk, then renamed: a reader (or a resume
    after a kill or a full disk) never sees half a file, and a failed write leaves no temporary behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        with GUARD.deferred():
            os.replace(tmp, path)
    except BaseException as ex:
        tmp.unlink(missing_ok=True)
        if _is_disk_full(ex):
            raise DiskFull(path, needed=nbytes(obj)) from None
        raise


def _is_disk_full(ex: BaseException) -> bool:
    """torch's writer reports a failed write as a RuntimeError; the OSError is in its chain or its text."""
    current: BaseException | None = ex
    while current is not None:
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, RuntimeError) and "file write failed" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through `atomic_save` (its own writes the file in place)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        atomic_save(checkpoint, Path(path))


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by this pipeline; a missing, truncated or foreign file is one line."""
    if not path.is_file():
        raise ConfigError(f"checkpoint {path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as ex:
        raise ConfigError(
            f"checkpoint {path} is truncated or corrupt ({one_line(ex)[:200]}); "
            "delete it to resume from scratch, or resume another run"
        ) from None
    if not isinstance(data, dict) or ("state_dict" not in data and "loop" not in data):
        raise ConfigError(f"checkpoint {path}: not a checkpoint of this pipeline")
    return data


@dataclass(frozen=True)
class RunRecord:
    """What a run dir says about its MLflow run (written at the start of every run)."""

    run_id: str | None
    tracking_uri: str | None

    @staticmethod
    def path(run_dir: Path) -> Path:
        return run_dir / "run.json"

    def save(self, run_dir: Path) -> None:
        self.path(run_dir).write_text(json.dumps({"run_id": self.run_id, "tracking_uri": self.tracking_uri}))

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord:
        try:
            data = json.loads(cls.path(run_dir).read_text())
        except (OSError, ValueError):
            return cls(None, None)
        return cls(data.get("run_id"), data.get("tracking_uri"))


def find_run_dir(target: str, tracking_uri: str | None) -> Path:
    """`resume=` takes a run dir or an MLflow run id (whose `run_dir` tag points at the dir)."""
    path = Path(target).expanduser()
    if path.is_dir():
        return path.resolve()
    if RUN_ID.match(target) and tracking_uri:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            run = MlflowClient(tracking_uri=tracking_uri).get_run(target)
        except MlflowException:
            raise ConfigError(f"resume={target}: no MLflow run with that id in {tracking_uri}") from None
        run_dir = run.data.tags.get("run_dir")
        if run_dir and Path(run_dir).is_dir():
            return Path(run_dir)
        raise ConfigError(f"resume={target}: the run's directory ({run_dir}) is gone; resume from a run dir")
    raise ConfigError(f"resume={target}: not a run dir nor an MLflow run id; give outputs/runs/<date>/<time>")


def last_checkpoint(run_dir: Path) -> Path:
    path = run_dir / CHECKPOINT_DIR / LAST
    if not path.is_file():
        raise ConfigError(
            f"resume={run_dir}: no checkpoint in {path.parent} (the run ended before its first one); start a new run"
        )
    return path
