"""Start-up cost of a job: from its process start (or, for later jobs of one process, its own start)
to its first env step. Kept free of heavy imports: the entry point marks the start before any."""

from __future__ import annotations

import os
import time
from pathlib import Path


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), or None if it is not running (a zombie counts as
    ended). Linux reads /proc; elsewhere a live pid gives 0.0 (alive, start unknown)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
                return None
            lines = Path("/proc/stat").read_text().splitlines()
            boot = next(int(line.split()[1]) for line in lines if line.startswith("btime"))
            return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, StopIteration):
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0.0


def _process_start() -> float:
    """When this process started (Linux /proc; elsewhere when this module was imported)."""
    return process_start_time(os.getpid()) or _IMPORTED


_IMPORTED = time.time()
_job_start = 0.0


def mark_job_start() -> None:
    """A job begins (several can run one after another in one process, as under Hydra's basic launcher)."""
    global _job_start
    _job_start = time.time()


def startup_s() -> float:
    """Seconds since this job began: since the process started for its first job, else since the job's start."""
    return time.time() - max(_process_start(), _job_start)
