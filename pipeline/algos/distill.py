"""Knowledge distillation from a frozen teacher policy (any MLflow policy this pipeline logged).

`distill=policy` is policy distillation (Rusu et al., 2016) in its on-policy, DAgger-style form: the
student acts with its own policy and learns only KL(teacher ‖ student) on the states it visits — no
environment reward. `distill=kickstart` (Schmitt et al., 2018) adds λ·KL to the RL loss, λ on a
linear schedule in env steps or, with `distill.coef_auto`, lowered as the student's return nears the
teacher's. Teacher and student may differ in backbone and size (each model carries its own input
preprocessing); both see the env's observation. Outputs are Q-values or action logits; either becomes
a distribution with softmax(out / τ).

The teacher is loaded once, checked against the env before any training (it must load and produce
one output per action), kept in eval mode, and run under inference mode on the learner's device.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config.distill import DistillConfig
from pipeline.config.root import Config
from pipeline.core.errors import ConfigError, one_line
from pipeline.core.schedules import linear_schedule
from pipeline.core.spec import EnvSpec
from pipeline.envs import make_env


def kl_teacher_student(teacher_logp: torch.Tensor, student_out: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) per batch, mean; scaled by τ² so gradients keep their size across τ
    (Hinton et al., 2015). `teacher_logp` is already log softmax(teacher / τ)."""
    student_logp = F.log_softmax(student_out.float() / temperature, dim=-1)
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(dim=-1).mean()
    return kl * temperature**2


class Distiller:
    """A frozen teacher and the distillation term the learners add: λ · KL(teacher ‖ student).

    λ is 1 for policy distillation; for kickstarting it follows `coef` and is refreshed at the end of
    every chunk (`update_coef`). Keeps the chunk's mean KL and the teacher's forward time for logging."""

    def __init__(self, cfg: Config, spec: EnvSpec):
        d: DistillConfig = cfg.distill
        self.cfg = d
        self.model = load_teacher(d.teacher, cfg)
        example = _example_obs(cfg)
        try:
            with torch.inference_mode():
                out = self.model(example)
        except Exception as ex:
            raise ConfigError(
                f"distill.teacher={d.teacher}: cannot act on env={cfg.env.name}'s observations {spec.obs_shape} "
                f"({one_line(ex)}); give a teacher trained on the same observation space"
            ) from None
        if out.ndim != 2 or out.shape[1] != spec.n_actions:
            raise ConfigError(
                f"distill.teacher={d.teacher}: it outputs {tuple(out.shape[1:])} values per observation, env="
                f"{cfg.env.name} has {spec.n_actions} actions; give a teacher trained on the same action space"
            )
        self.seconds = 0.0
        self.calls = 0
        self.teacher_return: float | None = None
        self.coef_now = self.coef(0, float("nan"))
        self._kl_sum = torch.zeros(())
        self._terms = 0

    @property
    def only(self) -> bool:
        """Policy distillation: the teacher is the only learning signal (no environment reward)."""
        return self.cfg.name == "policy"

    def term(self, obs: torch.Tensor, student_out: torch.Tensor, teacher_logp: torch.Tensor | None = None):
        """λ · KL(teacher ‖ student) on a batch; `teacher_logp` when already computed for these obs."""
        logp = self.log_probs(obs) if teacher_logp is None else teacher_logp
        kl = kl_teacher_student(logp, student_out, self.cfg.temperature)
        self._kl_sum = self._kl_sum.to(kl.device) + kl.detach()
        self._terms += 1
        return kl if self.only else self.coef_now * kl

    def update_coef(self, step: int, student_return: float) -> None:
        self.coef_now = self.coef(step, student_return)

    def metrics(self) -> dict[str, float]:
        out = {"train/distill_coef": self.coef_now, "perf/teacher_ms": self.ms_per_call()}
        if self._terms:
            out["train/distill_kl"] = float(self._kl_sum) / self._terms
        self._kl_sum, self._terms = torch.zeros(()), 0
        return out

    @torch.inference_mode()
    def log_probs(self, obs: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.model(obs.cpu())  # torch.export'ed programs load on the CPU; the outputs go back
        logp = F.log_softmax(out.float() / self.cfg.temperature, dim=-1).to(obs.device)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return logp.clone()  # a normal tensor: usable in the student's autograd graph as a constant

    def ms_per_call(self) -> float:
        return 1000 * self.seconds / max(self.calls, 1)

    def coef(self, step: int, student_return: float) -> float:
        """λ of kickstarting: the linear schedule in env steps, or (`coef_auto`) set by how far the
        student's recent return is below the teacher's, whatever the step:

            gap = clip((teacher - student) / |teacher|, 0, 1);   λ = coef_end + (coef_start - coef_end) · gap

        λ is coef_start while the student is a whole |teacher return| or more behind, falls linearly
        as it closes in, and is coef_end once it matches or beats the teacher; coef_start until the
        student has finished an episode (its return is unknown). Why not the earlier 1 - student /
        teacher: that ratio inverts for negative returns (teacher -100, student -500 gave λ = 0, and a
        student better than its teacher a positive λ) and gave λ = 0 throughout for a teacher at 0;
        here a teacher at 0 measures the gap in units of 1 reward. With coef_end = 0 and a positive
        teacher return the two rules agree."""
        d = self.cfg
        if d.name == "policy":
            return 1.0
        if not d.coef_auto:
            return linear_schedule(d.coef_start, d.coef_end, d.coef_steps, step)
        if self.teacher_return is None or not np.isfinite(student_return):
            return d.coef_start
        scale = abs(self.teacher_return) or 1.0
        gap = float(np.clip((self.teacher_return - student_return) / scale, 0.0, 1.0))
        return d.coef_end + (d.coef_start - d.coef_end) * gap


class _Greedy(nn.Module):
    """The teacher as a policy the Evaluator can run (it calls `act`, `.eval()` and `.train()`). The
    exported teacher is held outside the module tree: torch.export'ed modules refuse `.eval()`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._teacher = [model]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self._teacher[0](obs.cpu())

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward(obs).argmax(dim=-1)


def teacher_policy(distiller: Distiller) -> nn.Module:
    return _Greedy(distiller.model)


def load_teacher(uri: str, cfg: Config) -> nn.Module:
    import mlflow
    import mlflow.pytorch

    from pipeline.tracking.store import absolute_tracking_uri

    mlflow.set_tracking_uri(absolute_tracking_uri(cfg.logger.tracking_uri))
    try:
        model = mlflow.pytorch.load_model(uri)
    except Exception as ex:
        raise ConfigError(
            f"distill.teacher={uri}: cannot load it ({one_line(ex)[:200]}); give an MLflow policy URI such as "
            "runs:/<run id>/policy or models:/<name>/<version>"
        ) from None
    return model  # exported in eval mode (torch.export'ed modules refuse .eval() / .train())


def _example_obs(cfg: Config) -> torch.Tensor:
    env = make_env(cfg.env)
    try:
        obs, _ = env.reset(seed=cfg.seed)
    finally:
        env.close()
    return torch.as_tensor(np.stack([obs, obs]))
