"""`python -m pipeline ARGS` that signals itself at one chosen moment of the run: windows a test cannot hit
reliably from outside (just after the MLflow run is created, inside a checkpoint write, while the model is
logged). The signals come from a thread, `count` of them 0.1 s apart, as from a user pressing Ctrl-C
again and again.

usage: python tests/helpers/signal_at.py <moment> <SIGINT|SIGTERM> <count> [pipeline overrides ...]
moments: setup (the env is probed, nothing tracked yet), run_start (the MLflow run was just created),
training (after the 2nd training chunk), checkpoint (inside the 2nd checkpoint write, after its bytes),
model_logging (the trained policy is being logged)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


def _fire(signum: int, count: int) -> None:
    def send() -> None:
        for _ in range(count):
            os.kill(os.getpid(), signum)
            time.sleep(0.1)

    threading.Thread(target=send, daemon=True).start()
    time.sleep(0.05)  # the first signal lands here, inside the patched function


def _patch(moment: str, signum: int, count: int) -> None:
    import pipeline.envs
    from pipeline.algos.loop import EnvLoop
    from pipeline.tracking.run import Tracker

    calls = {"n": 0}

    def wrap(owner: object, name: str, before: bool, nth: int = 1) -> None:
        original = getattr(owner, name)

        def patched(*args, **kwargs):
            calls["n"] += 1
            hit = calls["n"] == nth
            if hit and before:
                _fire(signum, count)
            result = original(*args, **kwargs)
            if hit and not before:
                _fire(signum, count)
            return result

        setattr(owner, name, patched)

    if moment == "setup":
        wrap(pipeline.envs, "probe_env", before=False)
    elif moment == "run_start":
        wrap(Tracker, "start", before=False)
    elif moment == "training":
        wrap(EnvLoop, "end_chunk", before=False, nth=2)
    elif moment == "checkpoint":
        import torch

        wrap(torch, "save", before=False, nth=2)
    elif moment == "model_logging":
        wrap(Tracker, "log_torch_model", before=True)
    else:
        raise SystemExit(f"unknown moment {moment}")


if __name__ == "__main__":
    moment, name, count, *overrides = sys.argv[1:]
    _patch(moment, signal.Signals[name].value, int(count))
    sys.argv = ["pipeline", *overrides]
    from pipeline.__main__ import main

    main()
