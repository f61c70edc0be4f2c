"""What the benchmark scripts share: one torch thread per measured process, the real config tree composed
with overrides, a measurement in a fresh process, kinds alternated side by side, the machine and the
versions a table is measured with, and a section of docs/benchmarks.md replaced in place.

Scripts run as `python benchmarks/<name>.py`, so this folder is on sys.path and `from common import ...` works.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def one_thread() -> None:
    """Measured processes use one torch thread: the kinds compare on equal footing, whatever the machine."""
    import torch

    torch.set_num_threads(1)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def compose(overrides: list[str]):  # -> DictConfig
    """The project's real config (conf/) with these overrides, as `python -m pipeline` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pipeline.config.root import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def run_isolated(script: str, args: list[str], label: str) -> dict:
    """`python <script> ARGS` in a fresh process with one thread; its last stdout line is a JSON result,
    returned with `process_s` (the whole process) and `steps_per_s` (env steps / train_s)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, check=False
    )
    process_s = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(process_s=process_s, steps_per_s=result["env_steps"] / result["train_s"])
    return result


def alternating(kinds: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, kind): every kind once per round, in reversed order every other round, so that drift on the
    machine (a neighbour's load, thermal throttling) hits every kind alike."""
    for r in range(rounds):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            yield r, kind


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({platform.machine()}), {os.cpu_count()} cores"


def versions(packages: Sequence[str]) -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in packages)


def write_section(text: str, marker: str, path: Path = DOCS) -> None:
    """Replace the section of docs/benchmarks.md that starts with `marker` (a `## ` heading) by `text`, or
    append it; every other section stays as it is."""
    old = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nNumbers measured by `make bench`; each section says how.\n\n"
    )
    if marker in old:
        head, _, rest = old.partition(marker)
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)
