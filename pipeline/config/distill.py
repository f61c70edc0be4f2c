"""`distill` group: learning from a frozen teacher policy — policy distillation or kickstarting
(pipeline/algos/distill.py; conf/distill/*.yaml documents each key)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.check import one_of, require

DISTILL = ("none", "policy", "kickstart")


@dataclass
class DistillConfig:
    """Distillation from a frozen teacher policy (pipeline/algos/distill.py)."""

    name: str = "none"
    teacher: str | None = None
    temperature: float = 1.0
    coef_start: float = 1.0
    coef_end: float = 0.0
    coef_steps: int = 50_000
    coef_auto: bool = False


def check_distill(d: DistillConfig) -> None:
    one_of(d.name, DISTILL, "distill")
    if d.name == "none":
        return
    require(
        bool(d.teacher) and str(d.teacher).startswith(("runs:/", "models:/")),
        "distill.teacher",
        d.teacher,
        "give the teacher policy's MLflow URI (the policy_uri tag of its run, or models:/<name>/<version>)",
    )
    require(d.temperature > 0, "distill.temperature", d.temperature, "must be > 0")
    for key, val in (("distill.coef_start", d.coef_start), ("distill.coef_end", d.coef_end)):
        require(val >= 0, key, val, "must be >= 0")
    require(d.coef_steps >= 1, "distill.coef_steps", d.coef_steps, "must be >= 1")
