"""Start-up cost of a job: from its process start (or, for later jobs of one process, its own start)
to its first env step. Kept free of heavy imports: the entry point marks the start before any."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _process_start() -> float:
    """When this process started (Linux /proc; elsewhere when this module was imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        lines = Path("/proc/stat").read_text().splitlines()
        boot = next(int(line.split()[1]) for line in lines if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()
_job_start = 0.0


def mark_job_start() -> None:
    """A job begins (several can run one after another in one process, as under Hydra's basic launcher)."""
    global _job_start
    _job_start = time.time()


def startup_s() -> float:
    """Seconds since this job began: since the process started for its first job, else since the job's start."""
    return time.time() - max(_process_start(), _job_start)
