"""User-facing errors: one line that names the key and the fix. Bad input exits 2, a run that failed 1,
a run stopped by a signal 128 + the signal's number."""

from __future__ import annotations

import errno
import shutil
import signal
from pathlib import Path


class ConfigError(ValueError):
    """A bad configuration or input. The message is shown to the user as is, on one line."""


class CannotRender(ConfigError):
    """An env asked for frames (pixel observations, a video) that draws none."""


def one_line(ex: BaseException) -> str:
    """Squash an exception (and its cause) into a single readable line.

    Hydra and OmegaConf errors span several lines (available options, full_key, object_type); a user
    reading a failed command needs the first fact and the key it concerns, not the layout.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = ex
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = " ".join(str(current).split())
        if text and not any(text in p for p in parts):
            parts.append(text)
        current = current.__cause__
    return " | ".join(parts) if parts else type(ex).__name__


class RunFailure(RuntimeError):
    """A run that started and then failed for a known reason (e.g. a non-finite loss, a full disk).

    Shown as one line with exit code 1; the MLflow run is FAILED with the same message.
    """


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the job (pipeline/core/signals.py). A BaseException, like KeyboardInterrupt, so
    that no `except Exception` on the way swallows it; the run ends KILLED and the process exits 128 + signal."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def free_bytes(path: Path) -> int | None:
    """Free space on the filesystem holding `path` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


class DiskFull(RunFailure):
    """A write that ran out of space. The message names the path, the space it needed and the space left."""

    def __init__(self, path: Path, needed: int | None = None, what: str = "writing", then: str = "free some space"):
        self.path, self.needed = path, needed
        free = free_bytes(path)
        need = f"it needs about {human_bytes(needed)}, " if needed is not None else ""
        left = f"{human_bytes(free)} free there" if free is not None else "the free space is unknown"
        super().__init__(f"no space left on device {what} {path} ({need}{left}); {then}")


_FULL_MESSAGES = ("database or disk is full", "no space left on device", "disk quota exceeded")


def disk_full_reason(ex: BaseException) -> str | None:
    """If `ex` (or anything that caused it) is a full disk — an ENOSPC/EDQUOT OSError, or SQLite's
    "database or disk is full" inside an MLflow error — one line saying where; else None."""
    seen: set[int] = set()
    current: BaseException | None = ex
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFull):
            return str(current)
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {current.filename}" if current.filename else ""
            return f"no space left on device{where}; free some space"
        text = str(current).lower()
        if any(m in text for m in _FULL_MESSAGES):
            store = "the MLflow store" if "database" in text else "a file"
            return f"no space left on device writing {store} ({' '.join(str(current).split())[:160]}); free some space"
        current = current.__cause__ or current.__context__
    return None
