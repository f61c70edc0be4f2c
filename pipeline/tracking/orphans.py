"""Runs that cannot end themselves: MLflow has no heartbeat, so a run whose process died without a word
(kill -9, out of memory, a lost machine) would stay RUNNING for good. Every run records who owns it (host,
pid and the pid's start time) and a heartbeat; `reap_orphans` — called by every start, `resume=` and the
report — marks KILLED, with the reason, the RUNNING runs whose owner is gone."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime
from typing import Any

from pipeline.core.errors import one_line
from pipeline.core.startup import process_start_time

log = logging.getLogger(__name__)

OWNER_HOST = "pipeline.host"

OWNER_PID = "pipeline.pid"

OWNER_STARTED = "pipeline.pid_started"  # the process's start time: a reused pid is not the owner

HEARTBEAT = "pipeline.heartbeat"  # epoch seconds, refreshed while the owner lives (for other hosts)

HEARTBEAT_EVERY_S = 60.0

STALE_AFTER_S = 15 * 60.0  # a run of another host whose heartbeat is older than this is lost


def owner_tags() -> dict[str, str]:
    started = process_start_time(os.getpid())
    return {
        OWNER_HOST: socket.gethostname(),
        OWNER_PID: str(os.getpid()),
        OWNER_STARTED: f"{started:.2f}" if started is not None else "",
        HEARTBEAT: str(int(time.time())),
    }


def _owner_alive(pid: int, started: str) -> bool:
    start = process_start_time(pid)
    if start is None:
        return False
    return not started or start == 0.0 or abs(start - float(started)) < 2.0  # 0.0: alive, start unknown


def reap_orphans(client: Any, experiment_ids: list[str], by: str) -> list[str]:
    """Mark KILLED, with the reason, the RUNNING runs of this pipeline whose process is gone: on this
    host its pid is dead (or reused), on another host its heartbeat is older than STALE_AFTER_S.
    Runs without owner tags (other tools, older runs) are left alone. Returns the ids it ended."""
    try:
        runs = client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=1000)
    except Exception as ex:  # reaping is housekeeping: never the reason a job fails
        log.debug("reap_orphans: %s", one_line(ex))
        return []
    host, now, ended = socket.gethostname(), time.time(), []
    for run in runs:
        tags = run.data.tags
        if OWNER_HOST not in tags or OWNER_PID not in tags:
            continue
        pid = int(tags[OWNER_PID])
        if tags[OWNER_HOST] == host:
            if _owner_alive(pid, tags.get(OWNER_STARTED, "")):
                continue
            why = f"its process (pid {pid} on {host}) ended without closing it (kill -9, out of memory, a crash)"
        else:
            beat = float(tags.get(HEARTBEAT) or 0)
            if now - beat < STALE_AFTER_S:
                continue
            since = datetime.fromtimestamp(beat).isoformat(timespec="seconds")
            why = f"no heartbeat from {tags[OWNER_HOST]} since {since} (its process or machine was lost)"
        stamp = datetime.now().isoformat(timespec="seconds")
        try:
            client.set_tag(run.info.run_id, "error", f"{why}; marked KILLED by {by} at {stamp}")
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
        except Exception as ex:
            log.debug("reap_orphans: %s", one_line(ex))
    return ended


class Heartbeat:
    """Refreshes the run's HEARTBEAT tag from a daemon thread while the process lives."""

    def __init__(self, tracking_uri: str, run_id: str, every_s: float = HEARTBEAT_EVERY_S):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="mlflow-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT, str(int(time.time())))
            except Exception as ex:  # a busy store skips one beat; the next one retries
                log.debug("heartbeat: %s", one_line(ex))

    def stop(self) -> None:
        self._stop.set()
