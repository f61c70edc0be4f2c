"""`python -m pipeline [group=option ...] [key=value ...]` — the one entry point.

Any configuration or input error becomes one line on stderr and exit code 2, with no traceback
unless HYDRA_FULL_ERROR=1; a job refused that way leaves no run dir and no MLflow run behind.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import register_configs, to_config
from pipeline.errors import ConfigError, RunFailure, one_line

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

register_configs()
_job_started = False  # distinguishes Hydra failing to create the run dir from errors inside the job


def _remove_refused_run_dir(outputs_root: str) -> None:
    """Hydra writes <run dir>/.hydra before the job runs; a refused job should leave nothing."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    if not run_dir.is_dir() or any(p.name not in (".hydra", "__main__.log") for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    root = Path(outputs_root).resolve()
    parent = run_dir.parent
    while parent != root and root in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def job(cfg: DictConfig) -> float:
    global _job_started
    _job_started = True
    from pipeline import sweep
    from pipeline.startup import mark_job_start

    mark_job_start()
    in_sweep = sweep.in_sweep()
    try:
        first = to_config(cfg)  # fast refusal of a bad config, before torch and MLflow load
        stage = first.stage.name
        if first.resume:  # `resume=<run>` continues whichever stage that run is
            from pipeline.resume import saved_stage

            stage = saved_stage(first)
        if stage == "pretrain":
            return _pretrain(cfg, in_sweep)
        spec = None
        if not first.resume:  # an algorithm that cannot use the env is refused before Lightning and MLflow load
            from pipeline.algos import check_env
            from pipeline.envs import probe_env

            spec = probe_env(first.env)
            check_env(first, spec)
        from pipeline.train import train

        result = train(cfg, spec=spec)
    except Exception as ex:
        refused = isinstance(ex, ConfigError)  # bad input (exit 2) vs a run that failed (exit 1)
        if refused:
            _remove_refused_run_dir(cfg.paths.outputs)
        if in_sweep:  # one job's failure is reported at the end of the sweep; the others go on
            sweep.record_job("refused" if refused else "failed", error=f"{type(ex).__name__}: {one_line(ex)}")
            print(f"error: job failed: {one_line(ex)}", file=sys.stderr, flush=True)
            return float("nan")
        if not isinstance(ex, ConfigError | RunFailure) or os.environ.get("PIPELINE_TRACEBACK") == "1":
            raise
        # Exit from inside the job: Hydra would otherwise print its own multi-line report first.
        print(f"error: {ex}", file=sys.stderr, flush=True)
        raise SystemExit(2 if refused else 1) from None
    if in_sweep:
        sweep.record_job("finished", value=result.eval_return_mean, run_id=result.run_id)
    status = "solved" if result.solved else "finished"
    print(
        f"{status}: eval return {result.eval_return_mean:.1f} ± {result.eval_return_std:.1f} "
        f"after {result.env_steps} env steps in {result.wall_s:.1f} s",
        flush=True,
    )
    if result.run_id:
        print(f"mlflow run {result.run_id}  policy {result.model_uri}", flush=True)
        print(f"open the UI: make ui   (mlflow ui --backend-store-uri {cfg.logger.tracking_uri})", flush=True)
    return result.eval_return_mean


def _pretrain(cfg: DictConfig, in_sweep: bool) -> float:
    from pipeline import sweep
    from pipeline.pretrain import pretrain

    result = pretrain(cfg)
    if in_sweep:
        sweep.record_job("finished", value=result.val_accuracy, run_id=result.run_id)
    print(
        f"pretrained ({result.objective}): validation accuracy {result.val_accuracy:.3f}, loss "
        f"{result.train_loss_first:.3f} -> {result.train_loss_last:.3f} in {result.wall_s:.1f} s",
        flush=True,
    )
    if result.run_id:
        print(f"mlflow run {result.run_id}  backbone.weights=runs:/{result.run_id}/weights/backbone.safetensors")
    return result.val_accuracy


def main() -> None:
    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["PIPELINE_TRACEBACK"] = "1" if user_wants_traceback else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's multi-line report
    try:
        job()
    except (ConfigError, HydraException, OmegaConfBaseException) as ex:
        if user_wants_traceback:
            raise
        message = one_line(ex)
        if "hydra/launcher" in message:  # sweep=slurm / sweep=ray without their plugins
            message += "; install the cluster launchers with: pip install -e '.[cluster]'"
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    except OSError as ex:
        if user_wants_traceback or _job_started:
            raise
        print(
            f"error: cannot create the run dir ({ex.strerror or ex}: {ex.filename}); "
            "point paths.outputs at a writable directory",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
