"""DeepMind Control Suite tasks as gymnasium envs (`env=dmc env.id=cheetah-run`): our own thin adapter on
dm_control, so seeding, time limits and frames follow this pipeline's contract rather than a shim's.

- id: `domain-task`, split on the first '-' (domains and tasks use underscores: `ball_in_cup-catch`,
  `finger-turn_hard`).
- state: the observation dict flattened, in dm_control's spec order, into one float32 vector.
- pixels: camera 0 (2 for quadruped, as in DrQ) rendered at frame_size x frame_size, grayscale, stacked
  `frame_stack` deep: `[frame_stack, H, W]` uint8, the layout of every other stacked family.
- `action_repeat`: each action is applied that many control steps, rewards summed (the usual 2 for state,
  8 for cartpole-swingup from pixels), so an episode lasts dm_control's 1000 control steps / action_repeat.
- episode ends: dm_control's time limit is `truncated=True`; `terminated` only on a real termination
  (discount 0), so value targets keep bootstrapping through the time limit.
- seeding: `reset(seed=s)` reseeds the task's own random state (initial poses, targets).
"""

from __future__ import annotations

from collections import OrderedDict

import gymnasium as gym
import numpy as np

from pipeline.config.env import EnvConfig
from pipeline.core.errors import ConfigError
from pipeline.envs.classic import LUMA
from pipeline.envs.mujoco_gl import fast_flags, gl_errors, set_model_quality

VIDEO_HEIGHT, VIDEO_WIDTH = 240, 320  # render(): frames for videos, whatever the observation size
CAMERAS = {"quadruped": 2}  # the camera that shows the body from behind; every other domain uses 0


def _suite():
    with gl_errors("env.kind=dmc"):  # dm_control picks its GL backend when first imported
        from dm_control import suite
    return suite


def split_id(env_id: str) -> tuple[str, str]:
    """`domain-task` → (domain, task), refused with the known domains, or that domain's tasks, listed."""
    by_domain = _suite().TASKS_BY_DOMAIN
    domain, _, task = env_id.partition("-")
    if domain not in by_domain:
        raise ConfigError(f"env.id={env_id}: not a dm_control domain; use domain-task, domains: {', '.join(by_domain)}")
    if task not in by_domain[domain]:
        raise ConfigError(f"env.id={env_id}: {domain} has the tasks {', '.join(by_domain[domain])}")
    return domain, task


def _flat_size(spec: OrderedDict) -> int:
    return int(sum(int(np.prod(s.shape)) for s in spec.values()))


class DMCEnv(gym.Env):
    """One dm_control task; `pixels=True` observes single grayscale frames (stacked by a wrapper)."""

    def __init__(self, cfg: EnvConfig, render_mode: str | None = None):
        domain, task = split_id(cfg.id)
        self._env = _suite().load(domain, task)
        self._id = cfg.id
        self._repeat = cfg.action_repeat
        self._pixels = cfg.obs_mode == "pixels"
        self._quality = cfg.render_quality
        self._size = cfg.frame_size
        self._camera_id = CAMERAS.get(domain, 0)
        self._cameras: dict[str, object] = {}
        self.render_mode = render_mode
        self.metadata = {
            "render_modes": ["rgb_array"],
            "render_fps": 1.0 / (self._env.control_timestep() * self._repeat),
        }
        physics = self._env.physics
        set_model_quality(physics.model, self._quality)  # before the GL context, made at the first render
        off = physics.model.vis.global_
        off.offwidth, off.offheight = (
            max(off.offwidth, self._size, VIDEO_WIDTH),
            max(off.offheight, self._size, VIDEO_HEIGHT),
        )
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(
            spec.minimum.astype(np.float32), spec.maximum.astype(np.float32), dtype=np.float32
        )
        self._low, self._high = spec.minimum, spec.maximum
        if self._pixels:
            self.observation_space = gym.spaces.Box(0, 255, (self._size, self._size), dtype=np.uint8)
        else:
            n = _flat_size(self._env.observation_spec())
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n,), dtype=np.float32)

    def _frame(self, name: str, height: int, width: int) -> np.ndarray:
        """An RGB frame from a camera kept per size (dm_control's physics.render makes a scene per call)."""
        if name not in self._cameras:
            from dm_control.mujoco import Camera

            with gl_errors(f"env.id={self._id}"):
                self._cameras[name] = Camera(self._env.physics, height, width, self._camera_id)
        return self._cameras[name].render(render_flag_overrides=fast_flags(self._quality))

    def _observe(self, time_step) -> np.ndarray:
        if self._pixels:
            return (self._frame("obs", self._size, self._size) @ LUMA).astype(np.uint8)
        parts = [np.asarray(v, dtype=np.float32).ravel() for v in time_step.observation.values()]
        return np.concatenate(parts)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        return self._observe(self._env.reset()), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), self._low, self._high)
        reward = 0.0
        for _ in range(self._repeat):
            time_step = self._env.step(action)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        terminated = bool(time_step.last() and time_step.discount == 0.0)
        truncated = bool(time_step.last() and not terminated)
        return self._observe(time_step), reward, terminated, truncated, {}

    def render(self) -> np.ndarray:
        """The RGB frame for videos, VIDEO_HEIGHT x VIDEO_WIDTH from the observation camera."""
        return self._frame("video", VIDEO_HEIGHT, VIDEO_WIDTH)

    def close(self) -> None:
        self._cameras.clear()
        self._env.close()


def make(cfg: EnvConfig, evaluation: bool = False, render: bool = False) -> gym.Env:
    """`max_episode_steps` (agent steps) can only shorten dm_control's own limit (1000 / action_repeat)."""
    env: gym.Env = DMCEnv(cfg, render_mode="rgb_array" if render else None)
    if cfg.max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, cfg.max_episode_steps)
    if cfg.obs_mode == "pixels":
        env = gym.wrappers.FrameStackObservation(env, cfg.frame_stack)
    return env
