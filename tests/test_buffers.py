"""Replay buffer: wrap-around, sampling, dtypes."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.buffers import ReplayBuffer


def _add(buf: ReplayBuffer, start: int, n: int) -> None:
    values = torch.arange(start, start + n, dtype=torch.float32)
    buf.add(
        obs=values[:, None].repeat(1, 3),
        actions=torch.arange(start, start + n),
        rewards=values,
        next_obs=values[:, None].repeat(1, 3) + 0.5,
        terminated=(values % 2 == 0).float(),
    )


def test_wraps_around_and_overwrites_oldest() -> None:
    buf = ReplayBuffer(5, (3,), np.dtype(np.float32))
    _add(buf, 0, 3)
    assert (len(buf), buf.pos) == (3, 3)
    _add(buf, 3, 4)  # crosses the end: 3, 4 at the tail, 5, 6 overwrite slots 0, 1
    assert (len(buf), buf.pos) == (5, 2)
    assert buf.rewards.tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert buf.actions.tolist() == [5, 6, 2, 3, 4]
    assert torch.equal(buf.next_obs[:, 0], buf.rewards + 0.5)
    assert buf.terminated.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_sample_shapes_consistency_and_only_filled_slots() -> None:
    buf = ReplayBuffer(100, (3,), np.dtype(np.float32), seed=1)
    _add(buf, 0, 10)
    batch = buf.sample(batch_size=32, n_batches=4)
    assert batch.obs.shape == (4, 32, 3) and batch.actions.shape == (4, 32)
    assert batch.rewards.max() < 10  # slots beyond the filled ten are never drawn
    assert torch.equal(batch.obs[..., 0], batch.rewards)  # fields of one transition stay together
    assert torch.equal(batch.actions.float(), batch.rewards)
    assert len(set(batch.rewards.flatten().tolist())) > 5


def test_pixels_stay_uint8_and_sampling_is_seeded() -> None:
    def filled(seed: int) -> ReplayBuffer:
        buf = ReplayBuffer(16, (4, 84, 84), np.dtype(np.uint8), seed=seed)
        frames = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        buf.add(frames, torch.zeros(8, dtype=torch.long), torch.ones(8), frames, torch.zeros(8))
        return buf

    a, b = filled(3), filled(3)
    assert a.obs.dtype == torch.uint8 and a.next_obs.dtype == torch.uint8
    assert a.obs.element_size() * a.obs[0].numel() == 4 * 84 * 84  # one byte per pixel
    assert torch.equal(a.sample(8).obs, b.sample(8).obs)
