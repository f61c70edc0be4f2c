"""Shared helpers: compose the real config with small overrides; run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pipeline.config.root import register_configs

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

register_configs()

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one torch thread each
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # and hardware.threads=0 (auto) resolves to one

# Small budgets that still exercise every stage of a run (collect, learn, sync, evaluate, log).
TINY = [
    "total_env_steps=512",
    "algo.learning_starts=128",
    "algo.batch_size=16",
    "algo.chunk_steps=128",
    "eval.every_env_steps=256",
    "eval.episodes=2",
    "checkpoint.every_env_steps=256",
    "progress=false",
]


def compose_cfg(overrides: list[str], outputs: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.outputs={outputs}"])


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    out = tmp_path / "outputs"
    out.mkdir()
    return out


def run_cli(
    args: list[str],
    outputs: Path,
    timeout: float = 300,
    entry: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline ARGS` with every output under `outputs`, offline, one thread. `entry` replaces
    `-m pipeline` (a script that wraps the entry point, e.g. tests/helpers/signal_at.py); `env` adds variables."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    if not any(a.startswith("paths.outputs=") for a in args):
        args = [*args, f"paths.outputs={outputs}"]
    return subprocess.run(
        [sys.executable, *(entry or ["-m", "pipeline"]), *args],
        cwd=outputs.parent,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
