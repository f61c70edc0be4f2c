"""The report as files: learning curves and final IQMs as PNGs, the answer and the table as Markdown and
HTML."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from pipeline.report.data import FINAL_METRIC, GroupStats, Report
from pipeline.report.stats import CONFIDENCE, REPS, SEED, fmt


def plot_curves(groups: list[GroupStats], metric: str, threshold: float | None, path: Path, title: str) -> None:
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


def plot_final(groups: list[GroupStats], path: Path, title: str) -> None:
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


def _table(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["group", "n", f"final IQM [{CONFIDENCE:.0%} CI]", "mean"]
    if report.threshold_label:
        header += [f"steps to {report.threshold_label} (median)", "reached"]
    rows = []
    for g in report.groups:
        row = [g.label, str(len(g.runs)), f"{fmt(g.iqm)} [{fmt(g.ci[0])}, {fmt(g.ci[1])}]", fmt(g.finals.mean())]
        if report.threshold_label:
            row += [f"{np.median(g.reached):.0f}" if g.reached else "–", f"{len(g.reached)}/{len(g.runs)}"]
        rows.append(row)
    return header, rows


def _runs_table(report: Report) -> tuple[list[str], list[list[tuple[str, str | None]]]]:
    """One row per run: its final score, its newest evaluation (`python -m pipeline.evaluate`) and its newest
    video. Cells are (text, link or None)."""
    header = ["run", "group", "seed", "final", f"evaluation IQM [{CONFIDENCE:.0%} CI]", "video"]
    rows = []
    for g in report.groups:
        for r in g.runs:
            e = r.evaluation
            evaluation: tuple[str, str | None] = ("–", None)
            if e is not None:
                evaluation = (f"{fmt(e.iqm)} [{fmt(e.ci[0])}, {fmt(e.ci[1])}] over {e.episodes} episodes", e.video)
            video = r.video or (e.video if e is not None else None)
            rows.append(
                [
                    (r.name, None),
                    (g.label, None),
                    (r.params.get("seed", "?"), None),
                    (fmt(r.final), None),
                    evaluation,
                    ("mp4" if video else "–", video),
                ]
            )
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


def markdown(report: Report) -> str:
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
    run_header, run_rows = _runs_table(report)
    lines += ["", "## Runs", "", "| " + " | ".join(run_header) + " |", "|" + "---|" * len(run_header)]
    for row in run_rows:
        cells = [f"[{text}]({link})" if link else text for text, link in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", _runs_note(), ""]
    lines += ["", "## Runs left out", ""]
    lines += [f"- {x}" for x in report.left_out] or ["none"]
    lines += ["", "## Command", "", "```", report.command, "```", ""]
    return "\n".join(lines)


def _runs_note() -> str:
    return (
        "Evaluation: the newest `python -m pipeline.evaluate` run of the run's policy (IQM over its episodes, "
        "rliable's bootstrap CI); video: the run's newest training video, else its evaluation's."
    )


def _inline_html(text: str) -> str:
    """The answer's markdown subset (`code`, **bold**) as HTML."""
    out = html.escape(text)
    for marker, tag in (("**", "strong"), ("`", "code")):
        parts = out.split(marker)
        out = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(parts))
    return out


def html_page(report: Report) -> str:
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
    run_header, run_rows = _runs_table(report)
    runs = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in run_header) + "</tr>\n"
    runs += "".join(
        "<tr>"
        + "".join(
            f'<td><a href="{esc(link)}">{esc(text)}</a></td>' if link else f"<td>{esc(text)}</td>" for text, link in row
        )
        + "</tr>\n"
        for row in run_rows
    )
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
<h2>Runs</h2>
<table>
{runs}</table>
<p class="note">{_inline_html(_runs_note())}</p>
<h2>Runs left out</h2>
<ul>
{left_out}</ul>
<h2>Command</h2>
<pre>{esc(report.command)}</pre>
</body></html>
"""
