"""The statistics of a report, rliable's: stratified bootstrap intervals of the interquartile mean and of
the probability of improvement, with a fixed seed so the same data always give the same report."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from pipeline.report.data import GroupStats, RunData

REPS = 2000  # bootstrap resamples: ±0.01 on a CI bound's tail probability, a second or two per report

SEED = 0  # the bootstrap's seed: the same data always give the same intervals

MIN_SEEDS = 3  # fewer seeds in a group than this and the report makes no statement about it

CONFIDENCE = 0.95


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """rliable's resampling draws from NumPy's global generator: seed it, then give the caller's state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@contextmanager
def quiet_logging() -> Iterator[None]:
    """rliable logs an INFO line per estimate ("Calculating estimates for x ...")."""
    import logging

    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _interval(scores: np.ndarray | list[np.ndarray], func: Callable[..., np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate and 95% stratified-bootstrap interval (2 × len) of `func` on one score set."""
    from rliable import library as rly

    with seeded(SEED), quiet_logging():
        points, intervals = rly.get_interval_estimates(
            {"x": scores}, func, reps=REPS, confidence_interval_size=CONFIDENCE
        )
    return np.asarray(points["x"], dtype=np.float64), np.asarray(intervals["x"], dtype=np.float64)


def _aligned(runs: list[RunData]) -> tuple[np.ndarray, np.ndarray]:
    """Steps and a runs × steps matrix: union of the eval steps, each run holding its last value."""
    start = max(min(r.history) for r in runs)
    steps = np.array(sorted({s for r in runs for s in r.history if s >= start}), dtype=np.int64)
    matrix = np.empty((len(runs), len(steps)))
    for i, run in enumerate(runs):
        own = np.array(sorted(run.history), dtype=np.int64)
        values = np.array([run.history[s] for s in own])
        matrix[i] = values[np.searchsorted(own, steps, side="right") - 1]
    return steps, matrix


def analyse(group: GroupStats, threshold: float | None) -> None:
    import scipy.stats
    from rliable import metrics

    finals = group.finals[:, None]  # runs × tasks (one task)
    point, interval = _interval(finals, lambda x: np.array([metrics.aggregate_iqm(x)]))
    group.iqm, group.ci = float(point[0]), (float(interval[0, 0]), float(interval[1, 0]))

    steps, matrix = _aligned(group.runs)
    scores = matrix[:, None, :]  # runs × tasks × steps, rliable's layout for curves
    # aggregate_iqm at every step in one call: scipy's trim_mean over runs (axis 0), the same 25 % trimmed
    # mean as metrics.aggregate_iqm, without one call per step and resample (a minute for 50 steps).
    curve, band = _interval(scores, lambda x: np.ravel(scipy.stats.trim_mean(x, proportiontocut=0.25, axis=0)))
    group.steps, group.curve = steps, np.vstack([curve, band])

    for run in group.runs:
        target = threshold if threshold is not None else run.threshold
        if target is None:
            continue
        hit = [s for s, v in sorted(run.history.items()) if v >= target]
        if hit:
            group.reached.append(hit[0])


def fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def _compare(a: GroupStats, b: GroupStats) -> str:
    """One sentence on a pair: who beats whom, or no significant difference, or too few seeds to say."""
    from rliable import metrics

    point, interval = _interval(
        [a.finals[:, None], b.finals[:, None]],
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
    )
    p, lo, hi = float(point[0]), float(interval[0, 0]), float(interval[1, 0])
    if p < 0.5:  # state it from the side of the better group: P(B > A) = 1 − P(A > B)
        a, b, p, lo, hi = b, a, 1 - p, 1 - hi, 1 - lo
    stat = f"P(improvement)={p:.2f} [{lo:.2f}, {hi:.2f}]"
    if min(len(a.runs), len(b.runs)) < MIN_SEEDS:
        return (
            f"sample too small for a statement on `{a.label}` vs `{b.label}` ({len(a.runs)} and {len(b.runs)} "
            f"seeds; at least {MIN_SEEDS} per group needed): {stat}"
        )
    if lo > 0.5:
        return f"**`{a.label}` beats `{b.label}`**: {stat}"
    return f"no significant difference between `{a.label}` and `{b.label}` ({stat})"


def answer_lines(groups: list[GroupStats]) -> list[str]:
    if len(groups) < 2:
        return ["one group only (no config key varied among the finished runs): nothing to compare"]
    return [_compare(a, b) for a, b in itertools.combinations(groups, 2)]


def episode_statistics(returns: np.ndarray) -> dict[str, float]:
    """What a paper quotes for one policy's evaluation episodes: mean, IQM (each with its 95 % bootstrap
    interval, rliable's, as for the report's groups), median, std, min and max."""
    from rliable import metrics

    x = np.asarray(returns, dtype=np.float64)
    out = {
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "std": float(x.std()),
        "min": float(x.min()),
        "max": float(x.max()),
    }
    if len(x) < 2:  # no resampling of a single episode: the interval is the point
        out |= {"iqm": out["mean"], "iqm_ci_low": out["mean"], "iqm_ci_high": out["mean"]}
        return out | {"mean_ci_low": out["mean"], "mean_ci_high": out["mean"]}
    point, interval = _interval(x[:, None], lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s)]))
    out |= {"iqm": float(point[0]), "iqm_ci_low": float(interval[0, 0]), "iqm_ci_high": float(interval[1, 0])}
    return out | {"mean_ci_low": float(interval[0, 1]), "mean_ci_high": float(interval[1, 1])}
