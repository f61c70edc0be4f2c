"""From Hydra's composed config to a finished stage: the config converted and validated once (for `resume=`,
the run's own saved config with the overrides a continuation may change), checked against this machine,
the env probed and the algorithm checked against it — all before Lightning and MLflow load — then the
stage run: RL training or pretraining."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from pipeline.config.load import to_config
from pipeline.config.machine import check_machine
from pipeline.config.root import Config
from pipeline.core.spec import EnvSpec

if TYPE_CHECKING:  # heavy (torch, Lightning): imported when a job runs, after the fast refusals
    from pipeline.run.pretrain import PretrainResult
    from pipeline.run.resume import Resumption
    from pipeline.run.train import RunResult


@dataclass
class Job:
    cfg: Config  # what this job runs: the command line's config, or the resumed run's own
    resumption: Resumption | None = None  # resume=: the run dir, its checkpoint and its MLflow run
    spec: EnvSpec | None = None  # an RL stage's env, probed and checked against the algorithm
    notes: list[str] = field(default_factory=list)  # announcements printed once the learner is built

    @property
    def stage(self) -> str:
        return self.cfg.stage.name


def freeze_notes(raw: DictConfig, cfg: Config) -> list[str]:
    """A backbone frozen without the user asking (`freeze=auto` on a CPU) or frozen on random weights:
    what it means and the override that changes it."""
    b = cfg.backbone
    if b.freeze not in ("all", "partial") or b.is_text or cfg.stage.name != "rl":
        return []
    random = "" if b.has_weights else " on random weights (a random-features baseline)"
    pretrained = ""
    if not b.has_weights:
        pretrained = "; backbone.pretrained=true (hub) or backbone.weights=<file> loads pretrained ones"
    if OmegaConf.select(raw, "backbone.freeze") == "auto":
        return [
            f"no GPU in use: backbone={b.name} is frozen{random} and its features cached (backbone.freeze=auto); "
            f"backbone.freeze=none fine-tunes it, hours on a CPU{pretrained}"
        ]
    if not b.has_weights:
        return [f"backbone.freeze={b.freeze}: the backbone stays{random}{pretrained}"]
    return []


def prepare(raw: DictConfig) -> Job:
    """Everything that can refuse the job, in one line and before anything is created."""
    resuming = bool(OmegaConf.select(raw, "resume"))
    cfg = to_config(raw, validate=not resuming)  # resume=: the command line's defaults are not the run's
    resumption = None
    if resuming:
        from pipeline.run import resume

        resumption = resume.prepare(cfg)
        cfg = resumption.cfg
    check_machine(cfg.hardware)  # a GPU asked for where there is none
    job = Job(cfg, resumption, notes=[] if resuming else freeze_notes(raw, cfg))
    if job.stage == "rl":  # an algorithm that cannot use the env is refused before Lightning loads
        from pipeline.algos.build import check_env
        from pipeline.envs import check_renders, probe_env

        job.spec = probe_env(cfg.env)
        check_env(cfg, job.spec)
        if cfg.logger.video_every_env_steps:
            check_renders(cfg.env, "it cannot give training videos; set logger.video_every_env_steps=0")
    return job


def run(job: Job, run_dir: Path | None = None, extra_tags: dict[str, str] | None = None) -> RunResult | PretrainResult:
    """The job's stage, in one tracked run. `extra_tags` replace a sweep job's tags (a chained first stage)."""
    if job.stage == "pretrain":
        from pipeline.run.pretrain import pretrain

        return pretrain(job.cfg, job.resumption, run_dir, extra_tags)
    from pipeline.run.train import train

    assert job.spec is not None
    return train(job.cfg, job.spec, job.resumption, run_dir, extra_tags, tuple(job.notes))


def run_job(
    raw: DictConfig, run_dir: Path | None = None, extra_tags: dict[str, str] | None = None
) -> RunResult | PretrainResult:
    """`prepare` then `run`: what `python -m pipeline` does for one job, for code that composes its config
    (tests, benchmarks, the chained experiments' first stage)."""
    return run(prepare(raw), run_dir, extra_tags)
