"""The replay buffer returns exactly the transitions that happened: frame stacks rebuilt from single
frames, episode boundaries, time-limit final observations, wrap-around, several envs, checkpoints."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from pipeline.algos.buffers import ReplayBuffer


class CounterEnv(gym.Env):
    """Each frame is filled with a number never used before, so a frame identifies itself. Episodes end
    at random: terminated (p=0.05) or by a time limit."""

    counter = 0
    observation_space = gym.spaces.Box(0, 1e9, shape=(2, 2), dtype=np.float32)
    action_space = gym.spaces.Discrete(3)

    def _frame(self) -> np.ndarray:
        CounterEnv.counter += 1
        return np.full((2, 2), CounterEnv.counter, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._frame(), {}

    def step(self, action):
        return self._frame(), float(action), bool(self.np_random.random() < 0.05), False, {}


def _collect(buf: ReplayBuffer, num_envs: int, frame_stack: int, steps: int, seed: int = 0) -> dict:
    """Step a real gymnasium vector env (FrameStackObservation, SAME_STEP autoreset) and feed the buffer
    as the DQN loop does; return every transition keyed by the id of its newest obs frame."""

    def make():
        env = gym.wrappers.TimeLimit(CounterEnv(), max_episode_steps=7)
        return gym.wrappers.FrameStackObservation(env, frame_stack) if frame_stack > 1 else env

    env = gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    truth = {}
    for _ in range(steps):
        actions = rng.integers(0, 3, size=num_envs)
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        real_next = next_obs.copy()
        finals = {}
        for i in np.flatnonzero(terminated | truncated):
            real_next[i] = info["final_obs"][i]
            if truncated[i] and not terminated[i]:
                finals[int(i)] = info["final_obs"][i]
        buf.add(obs, actions, rewards, terminated, truncated, finals)
        for i in range(num_envs):
            truth[float(obs[i].reshape(-1)[-1])] = (obs[i], actions[i], real_next[i], float(terminated[i]))
        obs = next_obs
    return truth


def _check_samples(buf: ReplayBuffer, truth: dict, n: int = 2000) -> int:
    batch = buf.sample(n // 4, 4)
    obs = batch.obs.reshape(n, *batch.obs.shape[2:]).numpy()
    next_obs = batch.next_obs.reshape(n, *batch.next_obs.shape[2:]).numpy()
    terminated = batch.terminated.reshape(n).numpy()
    actions = batch.actions.reshape(n).numpy()
    for i in range(n):
        want_obs, want_action, want_next, want_term = truth[float(obs[i].reshape(-1)[-1])]
        np.testing.assert_array_equal(obs[i], want_obs)
        assert actions[i] == want_action and terminated[i] == want_term
        if not want_term:  # a terminal transition's next obs is never used (masked by 1 - terminated)
            np.testing.assert_array_equal(next_obs[i], want_next)
    return len({float(o.reshape(-1)[-1]) for o in obs})


@pytest.mark.parametrize(("num_envs", "frame_stack"), [(1, 4), (3, 4), (2, 1)])
def test_every_sample_is_a_real_transition_after_wraparound(num_envs: int, frame_stack: int) -> None:
    buf = ReplayBuffer(
        60, (frame_stack, 2, 2) if frame_stack > 1 else (2, 2), np.dtype(np.float32), num_envs, frame_stack
    )
    truth = _collect(buf, num_envs, frame_stack, steps=300)  # wraps around several times
    distinct = _check_samples(buf, truth)
    assert len(buf) == (buf.rows - frame_stack) * num_envs if frame_stack > 1 else (buf.rows - 1) * num_envs
    assert distinct > 0.8 * len(buf)  # the whole sampleable range is reached


def test_stacks_are_padded_with_the_first_frame_and_time_limits_keep_their_final_obs() -> None:
    buf = ReplayBuffer(1000, (4, 2, 2), np.dtype(np.float32), 2, 4)
    truth = _collect(buf, 2, 4, steps=200, seed=1)
    assert buf.finals, "time-limit truncations must have happened (episodes capped at 7 steps)"
    _check_samples(buf, truth, n=4000)


def test_one_atari_transition_costs_one_frame() -> None:
    buf = ReplayBuffer(1000, (4, 84, 84), np.dtype(np.uint8), 1, 4)
    assert 84 * 84 < buf.bytes_per_transition() < 84 * 84 + 32  # ~7.1 GB per million transitions
    plain = ReplayBuffer(1000, (4,), np.dtype(np.float32))
    assert plain.bytes_per_transition() == 4 * 4 + 8 + 4 + 4 + 1 + 1


def test_checkpoint_round_trip_keeps_transitions_and_the_live_next_obs() -> None:
    buf = ReplayBuffer(50, (4, 2, 2), np.dtype(np.float32), 2, 4, seed=3)
    truth = _collect(buf, 2, 4, steps=30, seed=2)
    # What the envs show now is the next obs of the last row; a resumed run restarts episodes.
    live = np.stack([truth[max(truth)][2], truth[max(truth)][2]])
    state = buf.state_dict(live_obs=live)
    restored = ReplayBuffer(50, (4, 2, 2), np.dtype(np.float32), 2, 4, seed=99)
    restored.load_state_dict(state)
    assert len(restored) == len(buf)
    a, b = buf.sample(64, 2), restored.sample(64, 2)  # same generator state: the same draws
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    last = (restored.pos - 1) % restored.rows
    assert bool(restored.truncated[last].all()) or bool(restored.terminated[last].any())
    with pytest.raises(ValueError, match="does not fit"):
        ReplayBuffer(50, (4, 2, 2), np.dtype(np.float32), 1, 4).load_state_dict(state)


def test_sampling_an_empty_buffer_is_refused() -> None:
    buf = ReplayBuffer(10, (3,), np.dtype(np.float32))
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(4)
