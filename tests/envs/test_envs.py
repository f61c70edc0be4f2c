"""Environments, offline: Atari (ale-py), MinAtar, the digits bandit — shapes, dtypes, rewards; and a
short digits run in which a small CNN learns to read digits far above chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config.load import to_config
from pipeline.envs import make_env, make_vector_env, probe_env
from tests.conftest import compose_cfg


def _env_cfg(overrides: list[str], outputs: Path):
    return to_config(compose_cfg(overrides, outputs)).env


@pytest.mark.parametrize(("name", "n_actions"), [("breakout", 4), ("pong", 6)])
def test_atari_frames_are_84x84_uint8_stacks_of_four(name: str, n_actions: int, outputs: Path) -> None:
    cfg = _env_cfg([f"env={name}", "backbone=nature_cnn"], outputs)
    spec = probe_env(cfg)
    assert spec.obs_shape == (4, 84, 84) and spec.obs_dtype == np.uint8 and spec.n_actions == n_actions
    assert spec.frame_stack == 4 and spec.is_image
    env = make_vector_env(cfg, 2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    total = np.zeros(2)
    for _ in range(200):
        obs, reward, *_ = env.step(env.action_space.sample())
        total += reward
        assert obs.shape == (2, 4, 84, 84)
    env.close()
    assert obs.std() > 0  # real game pictures, not blank frames


def test_breakout_serves_the_ball_by_itself(outputs: Path) -> None:
    """FIRE is pressed at reset: a policy that never fires still sees the ball move (no stalled episode)."""
    cfg = _env_cfg(["env=breakout", "backbone=nature_cnn", "env.sticky_actions=0"], outputs)
    env = make_env(cfg)
    obs, _ = env.reset(seed=0)
    frames = [obs[-1]]
    for _ in range(30):
        obs, *_ = env.step(0)  # NOOP only
        frames.append(obs[-1])
    env.close()
    assert any(not np.array_equal(frames[i], frames[i + 1]) for i in range(len(frames) - 1))


def test_minatar_state_grid_and_rgb_picture(outputs: Path) -> None:
    grid = _env_cfg(["env=minatar_breakout", "backbone=small_cnn"], outputs)
    assert grid.obs_mode == "state"  # auto: our CNNs read the channel grid
    spec = probe_env(grid)
    assert spec.obs_shape == (4, 10, 10) and spec.obs_dtype == np.uint8 and spec.n_actions == 3
    env = make_env(grid)
    obs, _ = env.reset(seed=0)
    assert set(np.unique(obs)) <= {0, 255} and obs.any()
    pics = _env_cfg(["env=minatar_breakout", "backbone=resnet18"], outputs)
    assert pics.obs_mode == "pixels"  # auto: timm models see pictures
    env2 = make_env(pics)
    picture, _ = env2.reset(seed=0)
    assert picture.shape == (3, 84, 84) and picture.dtype == np.uint8
    # The picture shows the same cells as the grid: occupied cells are coloured, empty ones black.
    occupied = obs.any(axis=0)
    centres = [int((i + 0.5) * 84 / 10) for i in range(10)]
    sampled = picture[:, centres][:, :, centres].any(axis=0)
    np.testing.assert_array_equal(sampled, occupied)
    env.close()
    env2.close()


def test_digits_bandit_rewards_the_right_label_and_holds_out_its_evaluation_images(outputs: Path) -> None:
    cfg = _env_cfg(["env=digits", "backbone=small_cnn"], outputs)
    train, held_out = make_env(cfg), make_env(cfg, evaluation=True)
    obs, info = train.reset(seed=0)
    assert obs.shape == (3, 32, 32) and obs.dtype == np.uint8
    label = info["label"]
    _, reward, terminated, truncated, _ = train.step(label)
    assert (reward, terminated, truncated) == (1.0, True, False)
    train.reset(seed=0)
    _, wrong, *_ = train.step((label + 1) % 10)
    assert wrong == 0.0
    train_images = {img.tobytes() for img in train.images}
    assert not any(img.tobytes() in train_images for img in held_out.images[:50])  # no leak into evaluation
    a, _ = held_out.reset(seed=7)
    b, _ = held_out.reset(seed=7)
    np.testing.assert_array_equal(a, b)  # evaluation images are fixed by the seed


def test_a_small_cnn_learns_to_read_digits_from_reward_alone(outputs: Path) -> None:
    from pipeline.run.job import run_job

    overrides = [
        "env=digits",
        "backbone=small_cnn",
        "total_env_steps=1500",
        "algo.learning_starts=256",
        "eval.every_env_steps=0",
        "eval.episodes=200",
        "logger=none",
        "progress=false",
    ]
    result = run_job(compose_cfg(overrides, outputs), outputs / "run")
    assert result.eval_return_mean > 0.5, result  # held-out accuracy; chance is 0.1
