"""It learns: the default config solves CartPole-v1 on a fixed seed within the 50k-step budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.run.job import run_job
from tests.conftest import compose_cfg


def test_default_config_solves_cartpole(outputs: Path) -> None:
    result = run_job(compose_cfg(["seed=0", "logger=none", "progress=false"], outputs))
    assert result.env_steps <= 50_000
    assert result.eval_return_mean >= 475, f"eval {result.eval_return_mean} after {result.env_steps} steps"
    assert result.solved


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_default_config_solves_cartpole_other_seeds(seed: int, outputs: Path) -> None:
    result = run_job(compose_cfg([f"seed={seed}", "logger=none", "progress=false"], outputs))
    assert result.eval_return_mean >= 475, f"seed {seed}: eval {result.eval_return_mean}"


@pytest.mark.slow
def test_double_dqn_solves_cartpole(outputs: Path) -> None:
    result = run_job(compose_cfg(["algo=double_dqn", "seed=0", "logger=none", "progress=false"], outputs))
    assert result.eval_return_mean >= 475
