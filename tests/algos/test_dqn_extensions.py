"""DQN extensions against hand-computed values: n-step targets, prioritised replay (priorities,
sampling frequencies, importance weights), the dueling aggregation; and all of them together
(`algo=rainbow_lite`) solving CartPole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.algos.buffers import ReplayBuffer
from pipeline.config.load import to_config
from pipeline.networks.q import QHead
from tests.conftest import compose_cfg


def _feed(buf: ReplayBuffer, rewards: list[float], ends: dict[int, str]) -> None:
    """One env; obs at step t is [t]; `ends` marks steps whose transition ends the episode."""
    for t, r in enumerate(rewards):
        term = ends.get(t) == "terminated"
        trunc = ends.get(t) == "truncated"
        finals = {0: np.array([1000.0 + t], dtype=np.float32)} if trunc else None
        buf.add(
            np.array([[float(t)]], dtype=np.float32),
            np.array([0]),
            np.array([r]),
            np.array([term]),
            np.array([trunc]),
            finals,
        )


def test_n_step_returns_discounts_and_next_obs_by_hand() -> None:
    gamma, n = 0.5, 3
    buf = ReplayBuffer(100, (1,), np.dtype(np.float32), 1, 1, n_step=n, gamma=gamma)
    rewards = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    _feed(buf, rewards, {4: "terminated", 7: "truncated"})
    # Episodes: steps 0..4 (terminal at 4), 5..7 (time limit at 7, final obs 1007), 8..9 (running).
    expected = {
        0: (1 + 0.5 * 2 + 0.25 * 3, 0.125, 3.0),
        2: (3 + 0.5 * 4 + 0.25 * 5, 0.0, None),  # terminal within the window: no bootstrap
        3: (4 + 0.5 * 5, 0.0, None),
        4: (5.0, 0.0, None),
        5: (6 + 0.5 * 7 + 0.25 * 8, 0.125, 1007.0),  # time limit: bootstrap from the final obs
        6: (7 + 0.5 * 8, 0.25, 1007.0),
        7: (8.0, 0.5, 1007.0),
    }
    assert len(buf) == len(rewards) - n  # the newest n transitions wait for their n next steps
    batch = buf.sample(512)
    seen = set()
    for i in range(512):
        t = int(batch.obs[0, i, 0])
        seen.add(t)
        if t in expected:
            ret, disc, nxt = expected[t]
            assert batch.rewards[0, i].item() == pytest.approx(ret)
            assert batch.discounts[0, i].item() == pytest.approx(disc)
            if nxt is not None:
                assert batch.next_obs[0, i, 0].item() == nxt
    assert seen == set(range(len(rewards) - n))


def test_prioritised_sampling_follows_priorities_and_weights_correct_for_it() -> None:
    alpha = 0.5
    buf = ReplayBuffer(64, (1,), np.dtype(np.float32), 1, 1, priority_alpha=alpha, seed=0)
    _feed(buf, [0.0] * 11, {})  # 10 sampleable transitions, all at the initial priority
    assert float(buf.priorities().sum()) == pytest.approx(10.0)  # max priority 1 ** alpha each
    slots = torch.arange(10)
    td = torch.tensor([1.0, 4.0, 9.0, 16.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    buf.update_priorities(slots, td, eps=1e-6)
    p = (td.double() + 1e-6) ** alpha
    want = (p / p.sum()).numpy()
    batch = buf.sample(20_000, beta=1.0)
    got = np.bincount(batch.indices.flatten().numpy(), minlength=10) / 20_000
    # Stratified sampling: frequencies within a few standard errors of the priorities' shares.
    assert np.abs(got - want).max() < 0.01, (got, want)
    assert got[4:].sum() < 0.001  # priority ~0: (almost) never drawn
    # Importance weights: (N P(i))^-beta normalised by the batch maximum.
    w_all = (10 * torch.tensor(want)[batch.indices[0]]) ** -1.0
    torch.testing.assert_close(batch.weights[0].double(), w_all / w_all.max(), rtol=1e-4, atol=1e-9)
    half = buf.sample(1000, beta=0.0)
    assert torch.all(half.weights == 1.0)  # beta 0: no correction
    state = buf.state_dict()
    again = ReplayBuffer(64, (1,), np.dtype(np.float32), 1, 1, priority_alpha=alpha, seed=0)
    again.load_state_dict(state)
    torch.testing.assert_close(again.priorities(), buf.priorities())  # priorities survive a checkpoint


def test_dueling_aggregation_by_hand(outputs: Path) -> None:
    cfg = to_config(compose_cfg([], outputs))
    head = QHead(cfg.backbone, (2,), 3, dueling=True)
    with torch.no_grad():
        head.out.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        head.out.bias.zero_()
        head.value.weight.copy_(torch.tensor([[2.0, -1.0]]))
        head.value.bias.fill_(0.5)
    z = torch.tensor([[1.0, 2.0]])  # the MLP's neck is the identity
    advantage = torch.tensor([1.0, 2.0, 3.0])
    value = 2 * 1 - 2 + 0.5
    torch.testing.assert_close(head(z), (value + advantage - advantage.mean()).unsqueeze(0))


def test_all_extensions_together_solve_cartpole(outputs: Path) -> None:
    from pipeline.run.job import run_job

    result = run_job(compose_cfg(["algo=rainbow_lite", "logger=none", "progress=false"], outputs), outputs / "run")
    assert result.solved and result.eval_return_mean >= 475, result
