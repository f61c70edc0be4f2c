"""`python -m pipeline.report [sweep=<parent run id>|last] [key=value ...]` — the comparison report of a sweep.

Reads a sweep from MLflow (a parent run tagged `sweep_parent=true`; its jobs are child runs tagged
`sweep_id=<parent run id>`), groups the FINISHED jobs by the config keys that varied (seed and per-run
bookkeeping left out), and writes into `<out>/<sweep id>/`:

- `curves.png`: per group, the IQM over seeds of the metric at each eval step with a 95% bootstrap band;
- `final_iqm.png`: per group, the IQM of `eval/final_return_mean` with its 95% interval and each run;
- `report.md` and `report.html`: the answer (pairwise probability of improvement, stated in words) on
  top, the table (n seeds, final IQM [95% CI], mean, steps to the threshold), the groups, the runs
  left out (FAILED, KILLED...) and the command that produced the report.

Every file is also logged as an artifact of the parent run under `report/`. The statistics are
rliable's: stratified bootstrap intervals (`get_interval_estimates`) of the interquartile mean
(`aggregate_iqm`) and of the probability of improvement (`probability_of_improvement`), with a fixed
seed so the same data always give the same report.

Curves: runs of one group are aligned on the union of their eval steps; a run with no point at a step
holds its last value (a run that stopped early once solved stays at its solved return), and the curve
starts at the first step that every run of the group has reached.
"""

from __future__ import annotations

import html
import itertools
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, one_line

DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"
DEFAULT_METRIC = "eval/return_mean"
DEFAULT_OUT = Path("outputs/reports")
FINAL_METRIC = "eval/final_return_mean"  # the score compared between groups (one value per run)
THRESHOLD_PARAM = "env.solved_return"  # the default threshold, per run, when none is given

REPS = 2000  # bootstrap resamples: ±0.01 on a CI bound's tail probability, a second or two per report
SEED = 0  # the bootstrap's seed: the same data always give the same intervals
MIN_SEEDS = 3  # fewer seeds in a group than this and the report makes no statement about it
CONFIDENCE = 0.95

# Keys that differ between runs without being what the sweep compares.
IGNORED_KEYS = ("seed",)
IGNORED_PREFIXES = ("paths.", "logger.", "checkpoint.", "progress", "resume")
# Label keys tried first (a key implied by the keys already in a label is left out of it).
LABEL_PRIORITY = ("algo.name", "backbone.name", "backbone.weights", "env.name", "env.id")

USAGE = (
    "usage: python -m pipeline.report [sweep=<parent run id>|last] [tracking_uri=sqlite:///outputs/mlflow.db] "
    "[metric=eval/return_mean] [threshold=<float>] [out=outputs/reports]"
)


@dataclass
class RunData:
    """One finished job: its params, its metric history (step → value), its final score."""

    run_id: str
    name: str
    params: dict[str, str]
    history: dict[int, float]
    final: float
    threshold: float | None


@dataclass
class GroupStats:
    label: str
    values: dict[str, str]  # every varying key of the group
    runs: list[RunData]
    iqm: float = float("nan")
    ci: tuple[float, float] = (float("nan"), float("nan"))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    curve: np.ndarray = field(default_factory=lambda: np.zeros((3, 0)))  # IQM, lower, upper per step
    reached: list[int] = field(default_factory=list)  # steps at which runs first reached the threshold

    @property
    def finals(self) -> np.ndarray:
        return np.array([r.final for r in self.runs], dtype=np.float64)

    @property
    def seeds(self) -> str:
        return ", ".join(r.params.get("seed", "?") for r in self.runs)


@dataclass
class Report:
    sweep_id: str
    title: str
    metric: str
    groups: list[GroupStats]
    varying: list[str]
    answer: list[str]  # markdown lines, with `code` and **bold** only
    threshold_label: str | None  # e.g. "≥ 475", None when no threshold is known
    left_out: list[str]
    command: str


# ---------------------------------------------------------------- reading the sweep from MLflow


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import absolute_tracking_uri, check_server

    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and not Path(tracking_uri[len(prefix) :]).is_file():
        raise ConfigError(
            f"tracking_uri={tracking_uri}: no MLflow store there; run a sweep first (python -m pipeline -m ...) "
            "or pass tracking_uri=<the store the sweep logged to>"
        )
    try:  # an http(s) server must answer: one line, not a minute of retries
        check_server(tracking_uri)
    except ConfigError as ex:  # the message names the training key; name this command's
        raise ConfigError(str(ex).replace("logger.tracking_uri=", "tracking_uri=", 1)) from None
    return MlflowClient(tracking_uri=absolute_tracking_uri(tracking_uri))


def _search(client: Any, experiment_ids: list[str], filter_string: str, **kwargs: Any) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token, **kwargs)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _find_parent(client: Any, sweep: str, tracking_uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    if sweep == "last":
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(
            experiment_ids, "tags.sweep_parent = 'true'", order_by=["attributes.start_time DESC"], max_results=1
        )
        if not found:
            raise ConfigError(
                f"sweep=last: no sweep in {tracking_uri}; run one (python -m pipeline -m seed=0,1,2 ...) "
                "or pass tracking_uri=<the store the sweep logged to>"
            )
        return found[0]
    try:
        run = client.get_run(sweep)
    except MlflowException:
        raise ConfigError(
            f"sweep={sweep}: no such run in {tracking_uri}; pass the run id of a sweep's parent run "
            "(tag sweep_parent=true) or sweep=last"
        ) from None
    if run.data.tags.get("sweep_parent") != "true":
        parent = run.data.tags.get("sweep_id")
        hint = f"it is a job of sweep {parent}: pass sweep={parent}" if parent else "pass sweep=last"
        raise ConfigError(f"sweep={sweep}: this run is not a sweep's parent run (tag sweep_parent=true); {hint}")
    return run


def _threshold_of(params: dict[str, str]) -> float | None:
    try:
        return float(params[THRESHOLD_PARAM])
    except (KeyError, ValueError):  # absent, or "null"
        return None


def _load(client: Any, run: Any, metric: str) -> RunData | None:
    """A finished job's data, or None when it never logged the metric."""
    points = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: (m.step, m.timestamp))
    if not points:
        return None
    history = {int(m.step): float(m.value) for m in points}  # the last value logged at a step wins
    final = run.data.metrics.get(FINAL_METRIC, history[max(history)])
    params = dict(run.data.params)
    return RunData(run.info.run_id, run.info.run_name or run.info.run_id, params, history, final, _threshold_of(params))


# ---------------------------------------------------------------- grouping


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def _varying_keys(runs: list[RunData]) -> list[str]:
    keys = sorted({k for r in runs for k in r.params if not _ignored(k)})
    return [k for k in keys if len({r.params.get(k, "null") for r in runs}) > 1]


def _label_keys(runs: list[RunData], varying: list[str]) -> list[str]:
    """The varying keys worth showing: a key whose value follows from the keys already kept is left out."""
    order = sorted(varying, key=lambda k: (LABEL_PRIORITY.index(k) if k in LABEL_PRIORITY else len(LABEL_PRIORITY), k))
    kept: list[str] = []
    blocks = 1
    for key in order:
        n = len({tuple(r.params.get(k, "null") for k in [*kept, key]) for r in runs})
        if n > blocks:
            kept.append(key)
            blocks = n
    return kept


def _short_values(runs: list[RunData], key: str) -> dict[str, str]:
    """Long path-like values by their file name, where the file names still tell the groups apart."""
    values = sorted({r.params.get(key, "null") for r in runs})
    short = {v: v.rstrip("/").rsplit("/", 1)[-1] if "/" in v else v for v in values}
    return short if len(set(short.values())) == len(values) else {v: v for v in values}


def _groups(runs: list[RunData]) -> tuple[list[str], list[GroupStats]]:
    varying = _varying_keys(runs)
    label_keys = _label_keys(runs, varying)
    shorten = {k: _short_values(runs, k) for k in label_keys}
    by_values: dict[tuple[str, ...], list[RunData]] = {}
    for run in runs:
        by_values.setdefault(tuple(run.params.get(k, "null") for k in varying), []).append(run)
    groups = []
    for values, members in by_values.items():
        named = dict(zip(varying, values, strict=True))
        label = ", ".join(f"{k}={shorten[k][named[k]]}" for k in label_keys) or "all runs"
        members.sort(key=lambda r: (_as_number(r.params.get("seed")), r.name))
        groups.append(GroupStats(label, named, members))
    return varying, groups


def _as_number(text: str | None) -> float:
    try:
        return float(text) if text is not None else float("inf")
    except ValueError:
        return float("inf")


# ---------------------------------------------------------------- statistics (rliable)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """rliable's resampling draws from NumPy's global generator: seed it, then give the caller's state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@contextmanager
def _quiet_logging() -> Iterator[None]:
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

    with _seeded(SEED), _quiet_logging():
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


def _analyse(group: GroupStats, threshold: float | None) -> None:
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


def _fmt(x: float) -> str:
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


def _answer(groups: list[GroupStats]) -> list[str]:
    if len(groups) < 2:
        return ["one group only (no config key varied among the finished runs): nothing to compare"]
    return [_compare(a, b) for a, b in itertools.combinations(groups, 2)]


# ---------------------------------------------------------------- figures


def _plot_curves(groups: list[GroupStats], metric: str, threshold: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for g in groups:
        (line,) = ax.plot(g.steps, g.curve[0], marker="o", markersize=3, label=f"{g.label} (n={len(g.runs)})")
        ax.fill_between(g.steps, g.curve[1], g.curve[2], color=line.get_color(), alpha=0.2, linewidth=0)
    if threshold is not None:
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"{metric}: IQM over seeds")
    ax.set_title(f"{title.split(' (')[0]}\nIQM over seeds with 95% bootstrap CI", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_final(groups: list[GroupStats], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(groups)))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, g in enumerate(groups):
        y = len(groups) - 1 - i  # best on top
        color = colors[i % len(colors)]
        ax.barh(y, g.ci[1] - g.ci[0], left=g.ci[0], height=0.5, color=color, alpha=0.3)
        ax.plot([g.iqm, g.iqm], [y - 0.25, y + 0.25], color=color, linewidth=2.5)
        ax.plot(g.finals, np.full(len(g.runs), y), "o", color=color, markersize=3, alpha=0.8)
    ax.set_yticks([len(groups) - 1 - i for i in range(len(groups))], [g.label for g in groups], fontsize=8)
    ax.set_xlabel(f"{FINAL_METRIC}: IQM (line), 95% CI (bar), runs (dots)")
    ax.set_title(title.split(" (")[0], fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- the pages


def _table(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["group", "n", f"final IQM [{CONFIDENCE:.0%} CI]", "mean"]
    if report.threshold_label:
        header += [f"steps to {report.threshold_label} (median)", "reached"]
    rows = []
    for g in report.groups:
        row = [g.label, str(len(g.runs)), f"{_fmt(g.iqm)} [{_fmt(g.ci[0])}, {_fmt(g.ci[1])}]", _fmt(g.finals.mean())]
        if report.threshold_label:
            row += [f"{np.median(g.reached):.0f}" if g.reached else "–", f"{len(g.reached)}/{len(g.runs)}"]
        rows.append(row)
    return header, rows


def _notes(report: Report) -> list[str]:
    notes = [
        f"IQM = interquartile mean over seeds of `{FINAL_METRIC}`; intervals are {CONFIDENCE:.0%} stratified "
        f"bootstrap CIs (rliable, {REPS} resamples, seed {SEED}). P(improvement) = probability that a run of "
        "the first group scores higher than a run of the second; a difference is stated when its CI excludes "
        "0.5 (each pair at 95%, no correction for multiple pairs).",
    ]
    if report.threshold_label:
        notes.append(
            f"Steps to {report.threshold_label}: the first eval step at which a run's `{report.metric}` reached it; "
            "median over the runs that did."
        )
    return notes


def _curve_note(report: Report) -> str:
    return (
        f"IQM over seeds of `{report.metric}` at each eval step with its {CONFIDENCE:.0%} bootstrap band; "
        "a run that stopped early (solved) holds its last value."
    )


def _markdown(report: Report) -> str:
    header, rows = _table(report)
    lines = [f"# Sweep report: {report.title}", "", "## Answer", ""]
    lines += [f"- {a}" for a in report.answer]
    lines += ["", "## Final performance", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", *(line for note in _notes(report) for line in (note, "")), "![final IQM](final_iqm.png)"]
    lines += ["", "## Learning curves", ""]
    lines += [
        _curve_note(report),
        "",
        "![learning curves](curves.png)",
        "",
        "## Groups",
        "",
        "Varying keys: " + (", ".join(f"`{k}`" for k in report.varying) or "none"),
        "",
    ]
    for g in report.groups:
        values = ", ".join(f"`{k}={v}`" for k, v in g.values.items()) or "—"
        lines.append(f"- **{g.label}**: {values}; seeds {g.seeds}")
    lines += ["", "## Runs left out", ""]
    lines += [f"- {x}" for x in report.left_out] or ["none"]
    lines += ["", "## Command", "", "```", report.command, "```", ""]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """The answer's markdown subset (`code`, **bold**) as HTML."""
    out = html.escape(text)
    for marker, tag in (("**", "strong"), ("`", "code")):
        parts = out.split(marker)
        out = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(parts))
    return out


def _html(report: Report) -> str:
    header, rows = _table(report)
    esc = html.escape
    table = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>\n"
    table += "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    groups = "".join(
        f"<li><strong>{esc(g.label)}</strong>: "
        + esc(", ".join(f"{k}={v}" for k, v in g.values.items()) or "—")
        + f"; seeds {esc(g.seeds)}</li>\n"
        for g in report.groups
    )
    left_out = "".join(f"<li>{_inline_html(x)}</li>\n" for x in report.left_out) or "<li>none</li>\n"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sweep report: {esc(report.title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
code, pre {{ background: #f4f4f4; }} pre {{ white-space: pre-wrap; }}
img {{ max-width: 100%; }} .note {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>Sweep report: {esc(report.title)}</h1>
<h2>Answer</h2>
<ul>
{"".join(f"<li>{_inline_html(a)}</li>" for a in report.answer)}
</ul>
<h2>Final performance</h2>
<table>
{table}</table>
{"".join(f'<p class="note">{_inline_html(n)}</p>' for n in _notes(report))}
<img src="final_iqm.png" alt="final IQM">
<h2>Learning curves</h2>
<p class="note">{_inline_html(_curve_note(report))}</p>
<img src="curves.png" alt="learning curves">
<h2>Groups</h2>
<p>Varying keys: {esc(", ".join(report.varying) or "none")}</p>
<ul>
{groups}</ul>
<h2>Runs left out</h2>
<ul>
{left_out}</ul>
<h2>Command</h2>
<pre>{esc(report.command)}</pre>
</body></html>
"""


# ---------------------------------------------------------------- entry points


def make_report(
    tracking_uri: str = DEFAULT_TRACKING_URI,
    sweep: str = "last",
    metric: str = DEFAULT_METRIC,
    threshold: float | None = None,
    out: Path = DEFAULT_OUT,
) -> Path:
    """Write the sweep's report into `<out>/<sweep id>/`, log it to the parent run; return report.md's path."""
    client = _client(tracking_uri)
    parent = _find_parent(client, sweep, tracking_uri)
    sweep_id = parent.info.run_id
    from pipeline.tracking import reap_orphans

    reap_orphans(client, [parent.info.experiment_id], by="the report")  # a job killed with -9 is not RUNNING
    children = [
        r
        for r in _search(client, [parent.info.experiment_id], f"tags.sweep_id = '{sweep_id}'")
        if r.info.run_id != sweep_id
    ]
    runs: list[RunData] = []
    left_out: list[str] = []
    for child in sorted(children, key=lambda r: r.info.start_time or 0):
        name = f"`{child.info.run_name}` (`{child.info.run_id}`)"
        if child.info.status != "FINISHED":
            error = child.data.tags.get("error", "")
            left_out.append(f"{name}: {child.info.status}" + (f": {' '.join(error.split())[:300]}" if error else ""))
            continue
        data = _load(client, child, metric)
        if data is None:
            left_out.append(f"{name}: FINISHED without any `{metric}` point")
        else:
            runs.append(data)
    if not runs:
        raise ConfigError(
            f"sweep={sweep_id}: no finished run with metric {metric} among its {len(children)} job(s); "
            f"wait for the sweep to finish, or pass metric=<a metric its runs logged> (default {DEFAULT_METRIC})"
        )

    # One threshold for every run (the argument, or a solved_return the runs share), else each run's own.
    own = {r.threshold for r in runs}
    single = threshold if threshold is not None else (next(iter(own)) if len(own) == 1 else None)
    threshold_label = f"≥ {single:g}" if single is not None else None
    if single is None and own != {None}:
        threshold_label = f"`{THRESHOLD_PARAM}`"

    varying, groups = _groups(runs)
    for g in groups:
        _analyse(g, threshold)
    groups.sort(key=lambda g: (-g.iqm, g.label))
    experiment = client.get_experiment(parent.info.experiment_id).name
    parts = [f"sweep={sweep_id}", f"tracking_uri={tracking_uri}", f"metric={metric}"]
    parts += [f"threshold={threshold}"] if threshold is not None else []
    report = Report(
        sweep_id=sweep_id,
        title=f"{experiment} / {parent.info.run_name or sweep_id} ({sweep_id})",
        metric=metric,
        groups=groups,
        varying=varying,
        answer=_answer(groups),
        threshold_label=threshold_label,
        left_out=left_out,
        command=shlex.join(["python", "-m", "pipeline.report", *parts, f"out={out}"]),
    )

    folder = Path(out) / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    _plot_curves(groups, metric, single, folder / "curves.png", report.title)
    _plot_final(groups, folder / "final_iqm.png", report.title)
    (folder / "report.md").write_text(_markdown(report), encoding="utf-8")
    (folder / "report.html").write_text(_html(report), encoding="utf-8")
    for name in ("report.md", "report.html", "curves.png", "final_iqm.png"):
        client.log_artifact(sweep_id, str(folder / name), "report")
    return folder / "report.md"


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """`key=value` arguments → make_report's keyword arguments."""
    kwargs: dict[str, Any] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("sweep", "tracking_uri", "metric", "threshold", "out"):
            raise ConfigError(f"unknown argument {arg!r}; {USAGE.removeprefix('usage: ')}")
        if not value:
            raise ConfigError(f"{key}= needs a value; {USAGE.removeprefix('usage: ')}")
        if key == "threshold":
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise ConfigError(f"threshold={value}: not a number, e.g. threshold=475") from None
        elif key == "out":
            kwargs[key] = Path(value)
        else:
            kwargs[key] = value
    return kwargs


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in args):
        print(USAGE)
        return 0
    try:
        path = make_report(**parse_args(args))
    except ConfigError as ex:
        print(f"error: {one_line(ex)}", file=sys.stderr, flush=True)
        return 2
    print(f"report: {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
