"""Headless MuJoCo rendering for every MuJoCo-based family (gymnasium's MuJoCo v5, dm_control, Fetch):
the cheap visual quality, and a missing GL library refused in one line.

Mesa's software renderer draws an 84x84 frame at ~30/s at MuJoCo's default quality (shadow maps, 4x
multisampling, floor reflections) and at 1,000+/s without them (measured on 2 cores): `env.render_quality=fast`
turns them off. Quality lives in the model (`vis.quality`, read when the GL context is made, so it is set
before the first render) and in the scene's render flags (set on each scene)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from pipeline.core.errors import ConfigError

GL_FIX = (
    "MuJoCo renders off-screen through EGL (MUJOCO_GL=egl): install the GL libraries "
    "(Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri), or observe state (env.obs_mode=state)"
)

# What a missing libEGL / libGL / Mesa driver says, through ctypes, PyOpenGL, mujoco.egl or dm_control._render.
_GL_WORDS = re.compile(r"libegl|\begl|opengl|libgl|mesa|gl context|rendering backend", re.IGNORECASE)


def load_triton_first() -> None:
    """Triton and Mesa's software renderer each bundle LLVM; once Mesa's is loaded (the first GL context),
    importing triton's extension segfaults (measured: timm → torchvision → torch._dynamo → triton after a dm_control
    render). Loaded first, both work. Triton ships with torch's CUDA wheels; without it there is nothing to do."""
    with suppress(ImportError):
        import triton  # noqa: F401


@contextmanager
def gl_errors(what: str) -> Iterator[None]:
    """Turn the tracebacks a missing libEGL / Mesa driver raises (ImportError, OSError, RuntimeError, and
    PyOpenGL's own errors) into one ConfigError that names the Debian packages. Every GL context is made
    inside one, so triton is loaded before Mesa first (`load_triton_first`)."""
    load_triton_first()
    try:
        yield
    except ConfigError:
        raise
    except Exception as ex:
        if not _GL_WORDS.search(f"{type(ex).__module__} {type(ex).__name__} {ex}"):
            raise
        raise ConfigError(f"{what}: cannot render ({type(ex).__name__}: {str(ex)[:120]}); {GL_FIX}") from None


def set_model_quality(model, quality: str) -> None:
    """`fast`: no shadow map and no multisampling; must run before the model's first GL context exists."""
    if quality == "fast":
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0


def set_scene_quality(scene, quality: str) -> None:
    """`fast`: no shadows and no reflections (a reflective floor draws the scene twice)."""
    if quality == "fast":
        import mujoco

        scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def fast_flags(quality: str) -> dict:
    """The same flags as `set_scene_quality`, as dm_control's `render_flag_overrides`."""
    import mujoco

    off = {mujoco.mjtRndFlag.mjRND_SHADOW: False, mujoco.mjtRndFlag.mjRND_REFLECTION: False}
    return off if quality == "fast" else {}


def tune_gymnasium_renderer(env, quality: str) -> None:
    """gymnasium-style MuJoCo envs (`MujocoEnv`, gymnasium-robotics' `MujocoRobotEnv`) that render: quality
    set on the model, then their off-screen viewer made now (it is lazy) so its scene flags can be set."""
    base = env.unwrapped
    renderer = getattr(base, "mujoco_renderer", None)
    if renderer is None or getattr(base, "render_mode", None) != "rgb_array":
        return
    set_model_quality(base.model, quality)
    with gl_errors(f"env.id={env.spec.id if env.spec else base}"):
        viewer = renderer._get_viewer("rgb_array")  # gymnasium exposes no public hook to its scene
    set_scene_quality(viewer.scn, quality)
