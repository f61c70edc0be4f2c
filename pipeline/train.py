"""Build everything from the config, fit, evaluate, log the policy. One MLflow run per call."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from pipeline import checkpoints, resume
from pipeline._quiet import silence_known_noise
from pipeline.algos import build_module, check_env
from pipeline.algos.base import EVAL_SEED_OFFSET, EnvLoop
from pipeline.config import Config, command_line_keys, to_config
from pipeline.envs import EnvSpec, probe_env
from pipeline.errors import ConfigError, DiskFull, Interrupted, disk_full_reason
from pipeline.evaluate import Evaluator
from pipeline.progress import EnvStepProgress
from pipeline.sweep import sweep_tags
from pipeline.tracking import RunTarget, Tracker, flatten, git_commit, plot_learning_curve


@dataclass
class RunResult:
    run_id: str | None
    env_steps: int
    eval_return_mean: float
    eval_return_std: float
    solved: bool
    train_s: float  # trainer.fit alone: env interaction, updates, periodic evaluation
    wall_s: float  # from the call to the end of the final evaluation
    model_uri: str | None
    run_dir: Path
    tracking_uri: str | None = None  # the store the run is in (a resumed run's own, not the default)


def _strategy(cfg: Config) -> object:
    """DDP ranks are spawned (never `ddp`, which re-runs the command line once per device: config.py)."""
    h = cfg.hardware
    if h.strategy == "ddp_spawn":
        from pytorch_lightning.strategies import DDPStrategy

        backend = "gloo" if h.accelerator == "cpu" else None
        return DDPStrategy(start_method="spawn", process_group_backend=backend)
    return "auto"


def _done_steps(module: EnvLoop) -> int:
    return int(module.resume_from["counters"]["global_env_steps"]) if module.resume_from else 0


def _hydra_tags() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    tags = {"hydra.overrides": " ".join(hc.overrides.task) or "(none)"}
    if hc.job.get("num") is not None:
        tags["hydra.job_num"] = str(hc.job.num)
    return tags


def env_label(cfg: Config) -> str:
    """The env in a run's name: the option (`cartpole`), or the id when the command line changed it."""
    if "env.id" in command_line_keys():
        return cfg.env.id.replace("/", "_")
    return cfg.env.name


def default_run_dir(cfg: Config) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.outputs) / "runs" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def _weights_file(cfg: Config) -> str | None:
    """`backbone.weights` as a local file (an MLflow URI is fetched into the outputs cache)."""
    if not cfg.backbone.weights:
        return None
    from pipeline.backbones.weights import resolve
    from pipeline.tracking import absolute_tracking_uri

    cache = Path(cfg.paths.outputs) / "cache" / "weights"
    return str(resolve(cfg.backbone.weights, absolute_tracking_uri(cfg.logger.tracking_uri), cache))


def save_backbone(policy: torch.nn.Module, run_dir: Path) -> Path:
    """The backbone's weights (its own key names), for `backbone.weights=runs:/<id>/weights/...` later."""
    from safetensors.torch import save_file

    from pipeline.backbones.weights import BACKBONE_FILE

    path = run_dir / "weights" / BACKBONE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = policy.encoder.backbone_module().state_dict()
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
    return path


def _ensure_writable(run_dir: Path, outputs: str) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as ex:
        raise ConfigError(
            f"paths.outputs={outputs}: cannot write {run_dir} ({ex.strerror or ex}); "
            "point paths.outputs at a writable directory"
        ) from None


def train(
    raw_cfg: DictConfig,
    run_dir: Path | None = None,
    extra_tags: dict[str, str] | None = None,
    spec: EnvSpec | None = None,
) -> RunResult:
    """Validate and build everything before MLflow sees anything; then one tracked run that always ends.
    `extra_tags` replace the sweep's job tags (a chained experiment's first stage is not a job); `spec`:
    the env already probed and checked for this config (the CLI does it before heavy imports)."""
    t_start = time.perf_counter()
    silence_known_noise()  # again: Hydra's job logging set-up runs after our import
    cfg = to_config(raw_cfg)
    resumption = resume.prepare(cfg) if cfg.resume else None
    if resumption is not None:
        cfg, run_dir = resumption.cfg, resumption.run_dir
        from pipeline.hardware import check_machine

        check_machine(cfg.hardware)  # the saved config's hardware, on this machine
    if cfg.hardware.threads > 0:
        torch.set_num_threads(cfg.hardware.threads)
    if spec is None:
        spec = probe_env(cfg.env)
        check_env(cfg, spec)
    cfg.env.solved_return = spec.solved_return  # null resolved to the env's own threshold: logged as used
    weights_file = _weights_file(cfg)
    pl.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, spec, weights_file)
    if resumption is None:
        announce_freeze(raw_cfg, cfg)  # once the backbone is built: a refused one needs no note
    if resumption is not None:
        module.load_state_dict(resumption.checkpoint["state_dict"])
        module.resume_from = resumption.checkpoint
    run_dir = Path(run_dir or default_run_dir(cfg))
    run_name = cfg.logger.run_name or f"{cfg.algo.name}-{cfg.backbone.name}-{env_label(cfg)}-s{cfg.seed}"

    tracker: Tracker | None = None
    if cfg.logger.name == "mlflow":
        uri = resumption.record.tracking_uri if resumption and resumption.record.tracking_uri else None
        tracker = Tracker(uri or cfg.logger.tracking_uri, cfg.logger.experiment, cfg.logger.artifact_location)
    _ensure_writable(run_dir, cfg.paths.outputs)
    if resumption is None:
        write_config(cfg, run_dir)

    def body() -> RunResult:
        target: RunTarget | None = None
        if tracker is not None:
            tags = {"git_commit": git_commit(), "run_dir": str(run_dir.resolve()), **_hydra_tags()}
            tags |= extra_tags if extra_tags is not None else sweep_tags()
            if resumption is not None and resumption.record.run_id:
                done = resumption.checkpoint["counters"]["global_env_steps"]
                tags["resumed_at_step"] = str(done)
                target = tracker.resume(resumption.record.run_id, tags)
            else:
                target = tracker.start(run_name, flatten(dataclasses.asdict(cfg)), tags)
                tracker.log_artifact(run_dir / "config.yaml")
            module.run_target = target
        record = checkpoints.RunRecord(target.run_id if target else None, tracker.tracking_uri if tracker else None)
        record.save(run_dir)
        return _fit_and_log(cfg, module, tracker, target, run_dir, run_name, t_start)

    try:
        return body() if tracker is None else tracker.run_to_end(body)
    except Interrupted as ex:
        ex.run_dir = run_dir  # type: ignore[attr-defined]  # named in the entry point's one line
        raise


def announce_freeze(raw_cfg: DictConfig, cfg: Config) -> None:
    """One line when the backbone is frozen without the user asking (`freeze=auto` on a CPU), or frozen on
    random weights: what it means and the override that changes it."""
    b = cfg.backbone
    if b.freeze not in ("all", "partial") or b.is_text:
        return
    random = "" if b.has_weights else " on random weights (a random-features baseline)"
    pretrained = ""
    if not b.has_weights:
        pretrained = "; backbone.pretrained=true (hub) or backbone.weights=<file> loads pretrained ones"
    if OmegaConf.select(raw_cfg, "backbone.freeze") == "auto":
        message = (
            f"no GPU in use: backbone={b.name} is frozen{random} and its features cached (backbone.freeze=auto); "
            f"backbone.freeze=none fine-tunes it, hours on a CPU{pretrained}"
        )
    elif not b.has_weights:
        message = f"backbone.freeze={b.freeze}: the backbone stays{random}{pretrained}"
    else:
        return
    print(f"note: {message}", file=sys.stderr, flush=True)


def write_config(cfg: Config, run_dir: Path) -> None:
    """The resolved config, the file `resume=` reads back; a full disk here is one line, before any run."""
    path = run_dir / "config.yaml"
    try:
        path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    except OSError as ex:
        path.unlink(missing_ok=True)
        reason = disk_full_reason(ex)
        if reason is None:
            raise
        raise DiskFull(path) from None


def _fit_and_log(
    cfg: Config,
    module: EnvLoop,
    tracker: Tracker | None,
    target: RunTarget | None,
    run_dir: Path,
    run_name: str,
    t_start: float,
) -> RunResult:
    h = cfg.hardware
    callbacks = [EnvStepProgress(cfg.total_env_steps, run_name)] if cfg.progress else []
    trainer = pl.Trainer(
        accelerator=h.accelerator,
        devices=h.devices,
        strategy=_strategy(cfg),
        precision=h.precision,
        max_epochs=1,
        limit_train_batches=module.chunks_needed(h.devices, done_env_steps=_done_steps(module)),
        deterministic=h.deterministic,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
        callbacks=callbacks,
        plugins=[checkpoints.AtomicCheckpointIO()],
    )
    t_fit = time.perf_counter()
    trainer.fit(module)
    train_s = time.perf_counter() - t_fit
    metrics = trainer.callback_metrics  # rank 0's counters, also when it ran in a spawned process
    env_steps = int(metrics["env_steps"])
    already_evaluated = int(metrics["last_eval_step"]) == env_steps

    # The final evaluation: the same fixed-seed episodes as the periodic ones, on the trained policy.
    policy = module.policy.to("cpu").eval()
    evaluator = Evaluator(cfg.env, cfg.eval.episodes, cfg.seed + EVAL_SEED_OFFSET)
    text = module.spec.is_text
    try:
        returns = evaluator.run(policy, torch.device("cpu"))
        example = None if text else np.stack([evaluator.env.reset(seed=cfg.seed)[0][0]] * 2)  # real observations
    finally:
        evaluator.close()
    mean, std = float(returns.mean()), float(returns.std())
    success = evaluator.success
    solved_at = module.spec.solved_return
    solved = solved_at is not None and mean >= solved_at
    wall_s = time.perf_counter() - t_start

    artifacts = module.final_artifacts(run_dir)  # in the run dir with or without MLflow
    model_uri = None
    if tracker is not None and target is not None:
        final = {"eval/final_return_mean": mean, "eval/final_return_std": std, "perf/wall_s": wall_s}
        if not already_evaluated:  # the curve ends at the last step (once: a stop on solve evaluated it)
            final |= {"eval/return_mean": mean, "eval/return_std": std}
            if success is not None:
                final["eval/success_rate"] = float(success.mean())
        if success is not None:
            final["eval/final_success_rate"] = float(success.mean())
        tracker.mlflow.log_metrics({**final, "train/env_steps": env_steps}, step=env_steps)
        tracker.set_tags({"solved": str(solved).lower()})
        tracker.log_artifact(plot_learning_curve(target, run_dir / "learning_curve.png", run_name))
        for path in artifacts:
            tracker.log_artifact(path)
        extra_files = []
        # A network on a backbone (not a Q-table); a frozen text encoder is its weights source unchanged.
        if hasattr(policy, "encoder") and not (text and policy.encoder.frozen):
            extra_files.append(save_backbone(policy, run_dir))
            tracker.log_artifact(extra_files[0], "weights")
        if cfg.logger.log_model and text:
            model_uri = tracker.log_pickled_model(policy, "policy")  # DRRN: act_text(states, command lists)
        elif cfg.logger.log_model:
            model_uri = tracker.log_torch_model(policy, example, "policy", extra_files)  # Q-values or logits
    return RunResult(
        run_id=target.run_id if target else None,
        env_steps=env_steps,
        eval_return_mean=mean,
        eval_return_std=std,
        solved=solved,
        train_s=train_s,
        wall_s=wall_s,
        model_uri=model_uri,
        run_dir=run_dir,
        tracking_uri=tracker.tracking_uri if tracker is not None else None,
    )
