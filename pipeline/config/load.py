"""From Hydra's composed config to the typed `Config`, once per job: `auto` values resolved (observation
mode, freezing, threads, videos), every string checked to be UTF-8, then `validate`. Also a run dir's saved
config back into the schema (`resume=`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.config.algo import ALGO_SCHEMAS
from pipeline.config.root import Config
from pipeline.config.validate import validate as check
from pipeline.core.errors import ConfigError
from pipeline.core.paths import textworld_cache


def check_text(tree: Any, prefix: str = "") -> None:
    """Every string of the config must be UTF-8 text: MLflow stores params, tags and names as UTF-8, and a
    stray byte from the shell (a latin-1 terminal, `$'\\xff'`) would fail after the run was created."""
    items = vars(tree).items() if hasattr(tree, "__dataclass_fields__") else enumerate(tree)
    for key, value in items:
        name = f"{prefix}{key}" if not isinstance(key, int) else f"{prefix.rstrip('.')}[{key}]"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as ex:
                raw = value.encode("utf-8", "surrogateescape")
                bad = raw[ex.start : ex.start + 1]
                raise ConfigError(
                    f"{name}={raw!r}: not UTF-8 text (byte 0x{bad.hex()} at position {ex.start}); "
                    "type it again in UTF-8 (check the terminal's locale, e.g. LANG=C.UTF-8)"
                ) from None
        elif hasattr(value, "__dataclass_fields__") or isinstance(value, list):
            check_text(value, f"{name}.")


def to_config(cfg: DictConfig, validate: bool = True) -> Config:
    """Resolve and validate a composed config; raises ConfigError on the first problem. `validate=False`
    for `resume=`, whose command-line defaults are not the run's (pipeline/run/resume.py validates that)."""
    conf = OmegaConf.to_object(cfg)
    assert isinstance(conf, Config)
    check_text(conf)
    resolve_obs_mode(conf)
    resolve_freeze(conf)
    resolve_threads(conf)
    resolve_videos(conf)
    if "env.id" in command_line_keys() and "env.solved_return" not in command_line_keys():
        conf.env.solved_return = None  # another env than the option's: its own reward_threshold, not the option's
    if conf.env.kind == "textworld" and not conf.env.textworld.cache_dir:  # generated games live with the outputs
        conf.env.textworld.cache_dir = str(textworld_cache(conf.paths.outputs))
    if validate:
        check(conf)
    return conf


def command_line_keys() -> list[str]:
    """Keys set on the command line of this Hydra job (none outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task]


def load_config(path: Path) -> Config:
    """A run dir's saved `config.yaml` back into the typed schema (the algo node by its family)."""
    raw = OmegaConf.load(path)
    family = OmegaConf.select(raw, "algo.family", default="dqn")
    if family not in ALGO_SCHEMAS:
        raise ConfigError(f"{path}: algo.family={family} is not one of {', '.join(ALGO_SCHEMAS)}")
    schema = OmegaConf.structured(Config)
    schema.algo = OmegaConf.structured(ALGO_SCHEMAS[family])
    conf = OmegaConf.to_object(OmegaConf.merge(schema, raw))
    assert isinstance(conf, Config)
    return conf


def resolve_obs_mode(cfg: Config) -> None:
    """`obs_mode=auto` follows the backbone: image backbones see rendered frames, the MLP sees state.
    Atari, digits and CarRacing are pixels only, Fetch (robotics) state only; MinAtar's native channel grid
    suits our own CNNs, while timm models (pretrained on photographs) get its RGB picture."""
    e = cfg.env
    if e.obs_mode != "auto":
        return
    if e.is_text:
        e.obs_mode = "text"
    elif e.pixels_only:
        e.obs_mode = "pixels"
    elif e.kind == "robotics":
        e.obs_mode = "state"
    elif e.kind == "minatar":
        e.obs_mode = "pixels" if cfg.backbone.is_timm else "state"
    else:
        e.obs_mode = "pixels" if cfg.backbone.takes_images else "state"


def resolve_freeze(cfg: Config) -> None:
    """`backbone.freeze=auto`: a timm model is fine-tuned on a GPU, and frozen with its features cached on
    the CPU, where fine-tuning it runs at a few env steps per second (ResNet-18 on 2 cores: ~3/s, measured).
    Everything else (our own small networks, a pretraining stage) trains: `none`."""
    b = cfg.backbone
    if b.freeze != "auto":
        return
    if not b.is_timm or cfg.stage.name == "pretrain":
        b.freeze = "none"
        return
    accelerator = cfg.hardware.accelerator
    if accelerator == "auto":
        from pipeline.config.machine import cuda_devices

        accelerator = "gpu" if cuda_devices() else "cpu"
    b.freeze = "none" if accelerator in ("gpu", "cuda") else "all"


def resolve_videos(cfg: Config) -> None:
    """`logger.video_every_env_steps=null`: a pixel agent is worth watching, so it records an episode at half
    its budget and at the end; a state-vector or text agent records none unless asked."""
    lg = cfg.logger
    if lg.video_every_env_steps is None:
        lg.video_every_env_steps = max(1, cfg.total_env_steps // 2) if cfg.env.obs_mode == "pixels" else 0


def resolve_threads(cfg: Config) -> None:
    """`hardware.threads=0`: one per core (or OMP_NUM_THREADS) when a timm backbone's convolutions run, else 1:
    small networks are fastest on one thread (measured), and DDP ranks each get their own process."""
    h = cfg.hardware
    if h.threads != 0:
        return
    cores = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    h.threads = max(1, cores // h.devices) if cfg.backbone.is_timm else 1
