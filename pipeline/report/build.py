"""The comparison report of one sweep, written into `<out>/<sweep id>/` and logged to its parent run."""

from __future__ import annotations

import shlex
from pathlib import Path

from pipeline.core.errors import ConfigError
from pipeline.report.data import (
    DEFAULT_METRIC,
    DEFAULT_TRACKING_URI,
    THRESHOLD_PARAM,
    Report,
    RunData,
    client_for,
    find_parent,
    group_runs,
    load_evaluation,
    load_run,
    newest_video,
    search_all,
)
from pipeline.report.render import html_page, markdown, plot_curves, plot_final
from pipeline.report.stats import analyse, answer_lines

DEFAULT_OUT = Path("outputs/reports")


def make_report(
    tracking_uri: str = DEFAULT_TRACKING_URI,
    sweep: str = "last",
    metric: str = DEFAULT_METRIC,
    threshold: float | None = None,
    out: Path = DEFAULT_OUT,
) -> Path:
    """Write the sweep's report into `<out>/<sweep id>/`, log it to the parent run; return report.md's path."""
    client = client_for(tracking_uri)
    parent = find_parent(client, sweep, tracking_uri)
    sweep_id = parent.info.run_id
    from pipeline.tracking.orphans import reap_orphans

    reap_orphans(client, [parent.info.experiment_id], by="the report")  # a job killed with -9 is not RUNNING
    children = [
        r
        for r in search_all(client, [parent.info.experiment_id], f"tags.sweep_id = '{sweep_id}'")
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
        data = load_run(client, child, metric)
        if data is None:
            left_out.append(f"{name}: FINISHED without any `{metric}` point")
        else:
            data.video, data.evaluation = newest_video(client, child), load_evaluation(client, child)
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

    varying, groups = group_runs(runs)
    for g in groups:
        analyse(g, threshold)
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
        answer=answer_lines(groups),
        threshold_label=threshold_label,
        left_out=left_out,
        command=shlex.join(["python", "-m", "pipeline.report", *parts, f"out={out}"]),
    )

    folder = Path(out) / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    plot_curves(groups, metric, single, folder / "curves.png", report.title)
    plot_final(groups, folder / "final_iqm.png", report.title)
    (folder / "report.md").write_text(markdown(report), encoding="utf-8")
    (folder / "report.html").write_text(html_page(report), encoding="utf-8")
    for name in ("report.md", "report.html", "curves.png", "final_iqm.png"):
        client.log_artifact(sweep_id, str(folder / name), "report")
    return folder / "report.md"
