"""Schedules on the env-step clock (ε, learning rates, clip ranges, distillation weights)."""

from __future__ import annotations


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """Linear interpolation from `start` at step 0 to `end` at `duration`, constant after."""
    frac = min(max(step, 0) / duration, 1.0)
    return start + frac * (end - start)
