"""`resume=<run dir | MLflow run id>`: continue a killed run with its own config.

The saved config is reused; an override given with `resume=` must agree with it, except the keys a
continuation may change (`total_env_steps` or, for a pretrain stage, `stage.epochs` to extend the
budget; `progress`). A run dir that does not exist, has no checkpoint, or was made with another config
is refused with one line. RL runs and pretrain stages share this: the job (pipeline/run/job.py) continues
whichever stage the saved config trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.load import command_line_keys, load_config
from pipeline.config.root import Config
from pipeline.config.validate import validate
from pipeline.core.errors import ConfigError
from pipeline.tracking import checkpoints
from pipeline.tracking.run import flatten
from pipeline.tracking.store import absolute_tracking_uri

MAY_CHANGE = ("total_env_steps", "progress", "resume")
MAY_CHANGE_KEYS = ("stage.epochs",)  # a pretrain stage's budget, extended like total_env_steps
NOT_COMPARED_PREFIXES = ("paths.", "hydra.", "hydra/")
RESOLVED_BY_THE_RUN = ("env.solved_return",)  # null in a config, the env's own threshold in the run's saved one


@dataclass
class Resumption:
    cfg: Config
    run_dir: Path
    checkpoint: dict[str, Any]
    record: checkpoints.RunRecord


def _override_keys() -> list[str] | None:
    """Keys the user set on the command line, or None outside a Hydra app (then everything is compared)."""
    from hydra.core.hydra_config import HydraConfig

    return command_line_keys() if HydraConfig.initialized() else None


def _flat(cfg: Config) -> dict[str, Any]:
    return flatten(dataclasses.asdict(cfg))


def _saved(cfg: Config) -> tuple[Path, Config]:
    """The run dir `resume=` names and the config it was made with."""
    assert cfg.resume is not None
    tracking = absolute_tracking_uri(cfg.logger.tracking_uri) if cfg.logger.name == "mlflow" else None
    run_dir = checkpoints.find_run_dir(cfg.resume, tracking)
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"resume={cfg.resume}: {saved_path} is missing; this is not a run dir of this pipeline")
    return run_dir, load_config(saved_path)


def prepare(cfg: Config) -> Resumption:
    """Find the run, load its config and last checkpoint, and check the new command agrees with them. `cfg` is
    the command line's config, not validated (its defaults are not the run's); the saved config with the
    overrides a continuation may change is what gets validated, once. Whichever stage the run trains."""
    run_dir, saved = _saved(cfg)
    stage = saved.stage.name

    new_flat, old_flat = _flat(cfg), _flat(saved)
    given = _override_keys()
    compared = [
        k
        for k in new_flat
        if k.split(".")[0] not in MAY_CHANGE and k not in MAY_CHANGE_KEYS and not k.startswith(NOT_COMPARED_PREFIXES)
    ]
    if given is not None:  # on the command line only what was typed is compared; the rest is the saved config
        compared = [k for k in compared if any(k == key or k.startswith(key + ".") for key in given)]
    for key in compared:
        if key in RESOLVED_BY_THE_RUN and new_flat[key] is None:
            continue
        if new_flat[key] != old_flat.get(key):
            raise ConfigError(
                f"resume={cfg.resume}: that run was made with {key}={old_flat.get(key)}, not {new_flat[key]}; "
                "drop the override to continue it, or start a new run"
            )
    if given is None or "total_env_steps" in given:
        saved.total_env_steps = cfg.total_env_steps
    if given is None or "stage.epochs" in given:
        saved.stage.epochs = cfg.stage.epochs
    saved.progress = cfg.progress
    saved.resume = cfg.resume
    validate(saved)
    checkpoint = checkpoints.load(checkpoints.last_checkpoint(run_dir))
    if stage == "pretrain":
        epoch = int(checkpoint.get("counters", {}).get("epoch", 0))
        if checkpoint.get("finished") and epoch >= saved.stage.epochs:
            raise ConfigError(
                f"resume={cfg.resume}: the run already finished its stage.epochs={saved.stage.epochs} epochs; "
                "raise it (stage.epochs=...) to train further"
            )
    else:
        done = int(checkpoint.get("counters", {}).get("global_env_steps", 0))
        if done >= saved.total_env_steps:
            raise ConfigError(
                f"resume={cfg.resume}: the run already reached total_env_steps={saved.total_env_steps}; "
                f"raise it (total_env_steps=...) to train further"
            )
    return Resumption(saved, run_dir, checkpoint, checkpoints.RunRecord.load(run_dir))
