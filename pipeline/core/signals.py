"""SIGINT / SIGTERM at any moment of a job: stop within seconds, end the MLflow run KILLED, exit 128 + signal.

One guard per job (`GUARD.installed()` around it, in the entry point). The first signal raises
`Interrupted` at the next Python instruction — not inside a window marked `deferred()` (creating an
MLflow run and tagging it, ending it, renaming a checkpoint into place), where it is held until the
window closes, so the run is never left half-made or half-ended. Further signals while the job is
stopping are ignored for `GRACE_S` (the stop is on its way; a second Ctrl-C must not cut the clean-up
short); one after that means the stop is stuck, and the process exits at once (the next start marks
its run KILLED: pipeline/tracking/orphans.py, `reap_orphans`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from pipeline.core.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 10.0


class SignalGuard:
    def __init__(self) -> None:
        self.received: int | None = None
        self._first_at = 0.0
        self._depth = 0  # nesting of deferred() windows
        self._pending = False
        self._previous: dict[int, object] = {}

    @contextmanager
    def installed(self) -> Iterator[SignalGuard]:
        """Handle SIGINT/SIGTERM for the duration of a job (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self.received, self._pending, self._depth = None, False, 0
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            if time.monotonic() - self._first_at > GRACE_S:  # the stop is stuck: give up at once
                os._exit(128 + signum)
            return
        self.received = signum
        self._first_at = time.monotonic()
        name = signal.Signals(signum).name
        sys.stderr.write(f"\n{name} received: stopping...\n")
        sys.stderr.flush()
        if self._depth:
            self._pending = True
            return
        raise Interrupted(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A window a signal must not cut in half: the signal takes effect when it closes."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending:
                self._pending = False
                assert self.received is not None
                raise Interrupted(self.received)


GUARD = SignalGuard()


def stop_children(timeout_s: float = 5.0) -> None:
    """Terminate the processes this one started (spawned DDP ranks) so none outlives an interrupted job."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
