"""The RL stage: build the learner from the config, fit it with Lightning, evaluate it, log the policy.
One tracked run per call (pipeline/run/session.py)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from pipeline.algos.build import build_module
from pipeline.algos.evaluate import EVAL_SEED_OFFSET, Evaluator
from pipeline.algos.loop import EnvLoop
from pipeline.config.root import Config
from pipeline.core.quiet import silence_known_noise
from pipeline.core.spec import EnvSpec
from pipeline.run.progress import EnvStepProgress
from pipeline.run.resume import Resumption
from pipeline.run.session import Session, env_label, save_backbone, weights_file
from pipeline.tracking import checkpoints
from pipeline.tracking.metrics import RunTarget
from pipeline.tracking.plots import plot_learning_curve


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
    """DDP ranks are spawned (never `ddp`, which re-runs the command line once per device: config/hardware.py)."""
    h = cfg.hardware
    if h.strategy == "ddp_spawn":
        from pytorch_lightning.strategies import DDPStrategy

        backend = "gloo" if h.accelerator == "cpu" else None
        return DDPStrategy(start_method="spawn", process_group_backend=backend)
    return "auto"


def _done_steps(module: EnvLoop) -> int:
    return int(module.resume_from["counters"]["global_env_steps"]) if module.resume_from else 0


def train(
    cfg: Config,
    spec: EnvSpec,
    resumption: Resumption | None = None,
    run_dir: Path | None = None,
    extra_tags: dict[str, str] | None = None,
    notes: tuple[str, ...] = (),
) -> RunResult:
    """Build everything before MLflow sees anything; then one tracked run that always ends. `cfg` is the
    job's validated config and `spec` its probed env (pipeline/run/job.py); `notes` are printed once the
    learner is built (a refused backbone needs no note)."""
    t_start = time.perf_counter()
    silence_known_noise()  # again: Hydra's job logging set-up runs after our import
    if cfg.hardware.threads > 0:
        torch.set_num_threads(cfg.hardware.threads)
    cfg.env.solved_return = spec.solved_return  # null resolved to the env's own threshold: logged as used
    pl.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, spec, weights_file(cfg))
    for note in notes:
        print(f"note: {note}", file=sys.stderr, flush=True)
    if resumption is not None:
        module.load_state_dict(resumption.checkpoint["state_dict"])
        module.resume_from = resumption.checkpoint
    run_name = f"{cfg.algo.name}-{cfg.backbone.name}-{env_label(cfg)}-s{cfg.seed}"
    session = Session(cfg, run_name, resumption, run_dir, extra_tags)

    def body(target: RunTarget | None) -> RunResult:
        module.run_target = target
        return _fit_and_log(cfg, module, session, target, t_start)

    return session.run(body)


def _fit_and_log(cfg: Config, module: EnvLoop, session: Session, target: RunTarget | None, t_start: float) -> RunResult:
    h, tracker, run_dir, run_name = cfg.hardware, session.tracker, session.run_dir, session.run_name
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
