"""Continuous-control environments, offline and headless: classic control, gymnasium's MuJoCo, the DeepMind
Control Suite (our adapter), highway-env driving, CarRacing and the Fetch arm — the spec each one gives the
algorithms, stepping in a vector env, frames that are real pictures, and the refusals of bad ids and keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config.load import to_config
from pipeline.core.errors import ConfigError
from pipeline.envs import make_env, make_vector_env, probe_env
from tests.conftest import compose_cfg


def _env_cfg(overrides: list[str], outputs: Path):
    return to_config(compose_cfg(overrides, outputs)).env


# (overrides, observation shape, dtype, action dim, action low, action high, vector steps)
CASES = {
    "pendulum": (["env=pendulum"], (3,), np.float32, 1, -2.0, 2.0, 50),
    "halfcheetah": (["env=halfcheetah"], (17,), np.float64, 6, -1.0, 1.0, 50),
    "dmc_state": (["env=dmc"], (17,), np.float32, 6, -1.0, 1.0, 100),
    "dmc_pixels": (["env=dmc", "backbone=nature_cnn"], (3, 84, 84), np.uint8, 6, -1.0, 1.0, 30),
    "highway_state": (["env=highway"], (25,), np.float32, 2, -1.0, 1.0, 20),
    "highway_pixels": (["env=highway", "backbone=nature_cnn"], (4, 84, 84), np.uint8, 2, -1.0, 1.0, 20),
    "car_racing": (["env=car_racing", "backbone=nature_cnn"], (4, 84, 84), np.uint8, 3, None, 1.0, 30),
    "fetch_reach": (["env=fetch_reach"], (13,), np.float32, 4, -1.0, 1.0, 60),
}


@pytest.mark.parametrize("case", list(CASES))
def test_continuous_env_spec_steps_and_frames(case: str, outputs: Path) -> None:
    overrides, shape, dtype, dim, low, high, steps = CASES[case]
    cfg = _env_cfg(overrides, outputs)
    spec = probe_env(cfg)
    assert spec.continuous and spec.n_actions == dim
    assert spec.obs_shape == shape and spec.obs_dtype == dtype
    assert spec.action_high == (high,) * dim
    if low is not None:
        assert spec.action_low == (low,) * dim
    else:  # CarRacing: steering in [-1, 1], gas and brake in [0, 1]
        assert spec.action_low == (-1.0, 0.0, 0.0)
    assert spec.is_image == (dtype == np.uint8)
    assert spec.frame_stack == (shape[0] if spec.is_image else 1)
    env = make_vector_env(cfg, 2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, *shape) and obs.dtype == dtype
    for _ in range(steps):
        action = env.action_space.sample()
        assert np.all(action >= np.array(spec.action_low)) and np.all(action <= np.array(spec.action_high))
        obs, reward, *_ = env.step(action)
        assert obs.shape == (2, *shape) and np.isfinite(reward).all()
    env.close()
    if spec.is_image:
        assert obs.std() > 0  # real pictures, not blank frames
    video = make_env(cfg, evaluation=True, render=True)
    video.reset(seed=0)
    video.step(video.action_space.sample())
    frame = video.render()
    video.close()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8 and frame.std() > 0


def test_dmc_state_passes_gymnasiums_env_checker(outputs: Path) -> None:
    from gymnasium.utils.env_checker import check_env

    env = make_env(_env_cfg(["env=dmc", "env.id=walker-walk"], outputs))
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_dmc_time_limit_truncates_and_never_terminates(outputs: Path) -> None:
    """1000 control steps / action_repeat 8 = 125 agent steps, ended as a truncation (values bootstrap)."""
    env = make_env(_env_cfg(["env=dmc", "env.id=cartpole-swingup", "env.action_repeat=8"], outputs))
    env.reset(seed=0)
    for step in range(1, 126):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated and 0.0 <= reward <= 8.0
        assert truncated == (step == 125)
    assert env.metadata["render_fps"] == pytest.approx(1 / (0.01 * 8))  # videos play at the task's speed
    env.close()


def test_dmc_reset_seed_fixes_the_start(outputs: Path) -> None:
    env = make_env(_env_cfg(["env=dmc", "env.id=point_mass-easy"], outputs))
    a, _ = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    c, _ = env.reset(seed=4)
    env.close()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("env_id", "listed"),
    [("cheetah-fly", ["cheetah has the tasks", "run"]), ("nosuch-run", ["domains", "cheetah", "ball_in_cup"])],
)
def test_dmc_unknown_domain_or_task_lists_the_choices(env_id: str, listed: list[str], outputs: Path) -> None:
    cfg = _env_cfg(["env=dmc", f"env.id={env_id}"], outputs)
    with pytest.raises(ConfigError) as err:
        probe_env(cfg)
    assert all(word in str(err.value) for word in listed), err.value


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["env=dmc", "env.action_repeat=0"], "env.action_repeat=0"),
        (["env=car_racing", "env.obs_mode=state"], "env.obs_mode=state"),
        (["env=fetch_reach", "env.obs_mode=pixels"], "env.obs_mode=pixels"),
        (["env=halfcheetah", "env.render_quality=ultra"], "env.render_quality=ultra"),
        (["env=pendulum", "env.action_repeat=2"], "env.action_repeat=2"),
    ],
)
def test_bad_control_env_keys_are_refused_naming_the_key(overrides: list[str], key: str, outputs: Path) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _env_cfg(overrides, outputs)


def test_obs_mode_auto_picks_what_each_family_can_give(outputs: Path) -> None:
    assert _env_cfg(["env=car_racing", "backbone=nature_cnn"], outputs).obs_mode == "pixels"
    assert _env_cfg(["env=fetch_reach"], outputs).obs_mode == "state"
    assert _env_cfg(["env=dmc"], outputs).obs_mode == "state"
    with pytest.raises(ConfigError, match="backbone=mlp takes vectors"):
        _env_cfg(["env=car_racing"], outputs)  # pixels only, and the MLP reads vectors


def test_mujoco_pixels_render_small_and_fast(outputs: Path) -> None:
    """Pixels are rendered at frame_size (not 480x480, then shrunk) with shadows and multisampling off."""
    cfg = _env_cfg(["env=halfcheetah", "backbone=nature_cnn"], outputs)
    env = make_env(cfg)
    obs, _ = env.reset(seed=0)
    base = env.unwrapped
    assert obs.shape == (4, 84, 84) and obs.std() > 0
    assert (base.mujoco_renderer.width, base.mujoco_renderer.height) == (84, 84)
    assert base.model.vis.quality.shadowsize == 0 and base.model.vis.quality.offsamples == 0
    env.close()
    cfg.render_quality = "default"
    env = make_env(cfg)
    env.reset(seed=0)
    assert env.unwrapped.model.vis.quality.shadowsize > 0
    env.close()


def test_metaworld_task_reports_success(outputs: Path) -> None:
    pytest.importorskip("metaworld")
    cfg = _env_cfg(["env=fetch_reach", "env.id=reach-v3"], outputs)
    spec = probe_env(cfg)
    assert spec.continuous and spec.obs_shape == (39,) and spec.obs_dtype == np.float32 and spec.n_actions == 4
    env = make_env(cfg)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    env.close()
    assert info["is_success"] in (0.0, 1.0)


def test_missing_gl_library_is_one_line_naming_the_debian_packages() -> None:
    from pipeline.envs.mujoco_gl import gl_errors

    with pytest.raises(ConfigError) as err, gl_errors("env.id=cheetah-run"):
        raise ImportError("libEGL.so.1: cannot open shared object file: No such file or directory")
    message = str(err.value)
    assert "\n" not in message and "libegl1" in message and "libgl1-mesa-dri" in message
    with pytest.raises(ValueError), gl_errors("env.id=cheetah-run"):  # anything else is not hidden
        raise ValueError("bad action")
