"""ε schedule, TD targets against hand-computed numbers, target-network updates and their schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.algos.dqn import DQN, bootstrap_target
from pipeline.config.load import to_config
from pipeline.core.schedules import linear_schedule
from pipeline.envs import probe_env
from pipeline.run.job import run_job
from tests.conftest import TINY, compose_cfg


def test_linear_epsilon_schedule() -> None:
    assert linear_schedule(1.0, 0.05, 1000, 0) == 1.0
    assert linear_schedule(1.0, 0.05, 1000, 500) == pytest.approx(0.525)
    assert linear_schedule(1.0, 0.05, 1000, 1000) == pytest.approx(0.05)
    assert linear_schedule(1.0, 0.05, 1000, 10**6) == pytest.approx(0.05)


def test_dqn_td_target_by_hand() -> None:
    rewards = torch.tensor([1.0, 0.0, -1.0])
    terminated = torch.tensor([0.0, 1.0, 0.0])
    next_q_target = torch.tensor([[2.0, 5.0], [10.0, 3.0], [-4.0, -2.0]])
    # 1 + 0.9*5 = 5.5 ; terminal: 0 ; -1 + 0.9*(-2) = -2.8
    expected = torch.tensor([5.5, 0.0, -2.8])
    assert torch.allclose(bootstrap_target(rewards, 0.9 * (1 - terminated), next_q_target), expected)


def test_double_dqn_target_uses_online_argmax() -> None:
    rewards = torch.tensor([1.0, 1.0])
    terminated = torch.zeros(2)
    next_q_target = torch.tensor([[2.0, 5.0], [7.0, 3.0]])
    next_q_online = torch.tensor([[9.0, 0.0], [0.0, 9.0]])  # online picks action 0, then action 1
    # 1 + 0.5*2 = 2.0 (not 1 + 0.5*5) ; 1 + 0.5*3 = 2.5 (not 1 + 0.5*7)
    got = bootstrap_target(rewards, 0.5 * (1 - terminated), next_q_target, next_q_online)
    assert torch.allclose(got, torch.tensor([2.0, 2.5]))


def _module(overrides: list[str], outputs: Path) -> DQN:
    cfg = to_config(compose_cfg(overrides, outputs))
    return DQN(cfg, probe_env(cfg.env))


def test_hard_and_polyak_target_updates(outputs: Path) -> None:
    hard = _module([], outputs)
    with torch.no_grad():
        for p in hard.q_net.parameters():
            p.add_(1.0)
    hard._sync_target()
    for p, t in zip(hard.q_net.parameters(), hard.target_net.parameters(), strict=True):
        assert torch.equal(p, t)

    soft = _module(["algo.tau=0.25"], outputs)
    before = [t.clone() for t in soft.target_net.parameters()]
    with torch.no_grad():
        for p in soft.q_net.parameters():
            p.add_(4.0)
    soft._sync_target()
    for old, p, t in zip(before, soft.q_net.parameters(), soft.target_net.parameters(), strict=True):
        assert torch.allclose(t, old + 0.25 * (p - old))
    assert not any(p.requires_grad for p in soft.target_net.parameters())


def test_schedules_run_on_global_env_steps(outputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 2 vector envs: target syncs every 100 env steps, 2 gradient steps every 8 after step 128."""
    syncs: list[int] = []
    original_sync = DQN._sync_target

    def spy_sync(self: DQN) -> None:
        syncs.append(self.global_env_steps)
        original_sync(self)

    monkeypatch.setattr(DQN, "_sync_target", spy_sync)
    cfg = compose_cfg(
        [
            *TINY,
            "logger=none",
            "env.num_envs=2",
            "total_env_steps=600",
            "algo.target_update_interval=100",
            "algo.train_freq=8",
            "algo.gradient_steps=2",
            "eval.every_env_steps=0",
            "eval.stop_on_solve=false",
        ],
        outputs,
    )
    result = run_job(cfg, run_dir=outputs / "run")
    assert result.env_steps == 600
    assert syncs == [100, 200, 300, 400, 500, 600]
    ckpt = torch.load(outputs / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # rounds at steps 128, 136, ..., 600 → 60 rounds × 2 gradient steps
    counters = ckpt["counters"]
    assert (counters["vec_steps"], counters["global_env_steps"], counters["updates"]) == (300, 600, 120)
    assert any(k.startswith("target_net.") for k in ckpt["state_dict"])
