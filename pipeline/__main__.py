"""`python -m pipeline [group=option ...] [key=value ...]` — the one entry point.

Any configuration or input error becomes one line on stderr and exit code 2, with no traceback
unless HYDRA_FULL_ERROR=1; a job refused that way leaves no run dir and no MLflow run behind. A run
that fails for a known reason (a non-finite loss, a full disk) is one line and exit code 1; SIGINT or
SIGTERM at any moment ends the run KILLED and exits 128 + the signal (pipeline/core/signals.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pipeline.config.root import register_configs
from pipeline.core.errors import ConfigError, Interrupted, RunFailure, disk_full_reason, one_line
from pipeline.core.signals import GUARD, stop_children

if TYPE_CHECKING:
    pass

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
    from pipeline.core.startup import mark_job_start
    from pipeline.run import sweep

    mark_job_start()
    in_sweep = sweep.in_sweep()
    try:
        from pipeline.run.job import prepare, run

        todo = prepare(cfg)  # validated once; every refusal happens here, before Lightning and MLflow load
        result = run(todo)
    except Interrupted as ex:
        stop_children()  # spawned DDP ranks must not outlive the job
        if in_sweep:
            sweep.record_job("killed", error=str(ex))
        run_dir = getattr(ex, "run_dir", None)  # set once the tracked run began
        if run_dir is None:
            _remove_refused_run_dir(cfg.paths.outputs)
            print(f"error: {ex} before the run started; nothing was tracked", file=sys.stderr, flush=True)
            raise SystemExit(ex.exit_code) from None
        has_checkpoint = (Path(run_dir) / "checkpoints" / "last.ckpt").is_file()
        hint = f"; resume it: python -m pipeline resume={run_dir}" if has_checkpoint else ""
        print(f"error: {ex}: the run ended KILLED{hint}", file=sys.stderr, flush=True)
        raise SystemExit(ex.exit_code) from None
    except Exception as ex:
        refused = isinstance(ex, ConfigError)  # bad input (exit 2) vs a run that failed (exit 1)
        if refused:
            _remove_refused_run_dir(cfg.paths.outputs)
        full = None if isinstance(ex, ConfigError | RunFailure) else disk_full_reason(ex)
        if in_sweep:  # one job's failure is reported at the end of the sweep; the others go on
            sweep.record_job("refused" if refused else "failed", error=f"{type(ex).__name__}: {full or one_line(ex)}")
            print(f"error: job failed: {full or one_line(ex)}", file=sys.stderr, flush=True)
            return float("nan")
        known = isinstance(ex, ConfigError | RunFailure) or full is not None
        if not known or os.environ.get("PIPELINE_TRACEBACK") == "1":
            raise
        # Exit from inside the job: Hydra would otherwise print its own multi-line report first.
        print(f"error: {full or ex}", file=sys.stderr, flush=True)
        raise SystemExit(2 if refused else 1) from None
    if todo.stage == "pretrain":
        return _report_pretrain(result, in_sweep)
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
        from pipeline.core.paths import DEFAULT_TRACKING_URI
        from pipeline.tracking.store import absolute_tracking_uri

        ui = f"mlflow ui --backend-store-uri {result.tracking_uri}"  # the store this run is in (a resumed run's own)
        if result.tracking_uri == absolute_tracking_uri(DEFAULT_TRACKING_URI):
            ui = f"make ui   ({ui})"
        print(f"open the UI: {ui}", flush=True)
    return result.eval_return_mean


def _report_pretrain(result, in_sweep: bool) -> float:
    from pipeline.run import sweep

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


def _argv_text_error(args: list[str]) -> str | None:
    """An override holding bytes that are not UTF-8 (Python keeps them as surrogates): refused before
    Hydra, which would pass them on to MLflow."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as ex:
            raw = arg.encode("utf-8", "surrogateescape")
            key = raw.split(b"=", 1)[0].decode("utf-8", "replace")
            return (
                f"{key}: {raw!r} is not UTF-8 text (byte 0x{raw[ex.start : ex.start + 1].hex()}); "
                "type it again in UTF-8 (check the terminal's locale, e.g. LANG=C.UTF-8)"
            )
    return None


def _yaml_error(ex: BaseException) -> str | None:
    """A YAML syntax error in a config file (ours or a --config-dir's): the file, line and column."""
    import yaml

    current: BaseException | None = ex
    while current is not None:
        if isinstance(current, yaml.MarkedYAMLError) and current.problem_mark is not None:
            mark = current.problem_mark
            what = " ".join(f"{current.problem or 'syntax error'}".split())
            return f"{mark.name}:{mark.line + 1}:{mark.column + 1}: YAML syntax error ({what}); fix that line"
        if isinstance(current, yaml.YAMLError):
            return f"YAML error ({one_line(current)}); fix the config file"
        current = current.__cause__ or current.__context__
    return None


def _grammar_hint(message: str) -> str:
    """Hydra's lexer refuses unquoted non-ASCII values (and a few characters) with a terse message."""
    if "LexerNoViableAltException" not in message and "mismatched input" not in message:
        return message
    override = message.split("LexerNoViableAltException:", 1)[-1].split(" ^", 1)[0].strip()
    key, _, value = override.partition("=")
    if value and not value.isascii():
        return f"{override}: Hydra needs quotes around a value with non-ASCII characters; write {key}='{value}'"
    return message


def main() -> None:
    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["PIPELINE_TRACEBACK"] = "1" if user_wants_traceback else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's multi-line report
    bad_text = _argv_text_error(sys.argv[1:])
    if bad_text is not None:
        print(f"error: {bad_text}", file=sys.stderr, flush=True)
        sys.exit(2)
    try:
        with GUARD.installed():  # from before the run starts until after it ended
            job()
    except (ConfigError, HydraException, OmegaConfBaseException) as ex:
        if user_wants_traceback:
            raise
        message = _yaml_error(ex) or _grammar_hint(one_line(ex))
        if "hydra/launcher" in message:  # sweep=slurm / sweep=ray without their plugins
            message += "; install the cluster launchers with: pip install -e '.[cluster]'"
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Interrupted as ex:  # a signal outside the job (composing the config, creating the run dir)
        print(f"error: {ex} before the job started; nothing was run", file=sys.stderr, flush=True)
        sys.exit(ex.exit_code)
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
    except Exception as ex:
        message = None if user_wants_traceback else _yaml_error(ex)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
