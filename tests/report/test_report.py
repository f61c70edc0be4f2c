"""The sweep report: groups, rliable statistics, the stated answer, artifacts; on synthetic MLflow runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from pipeline.core.errors import ConfigError
from pipeline.report.__main__ import main
from pipeline.report.build import make_report

PRETRAINED = "outputs/weights/tf_efficientnet_lite0.safetensors"
STEPS = list(range(2000, 20001, 2000))  # eval every 2k env steps up to 20k


def _uri(root: Path) -> str:
    return f"sqlite:///{root}/mlflow.db"


def _child(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    seed: int,
    weights: str,
    curve: list[float],
    status: str = "FINISHED",
) -> str:
    """One job as the sweep logs it: flattened config as params, eval history on the env-step axis."""
    run = client.create_run(
        experiment_id,
        run_name=f"job-{weights.rsplit('/', 1)[-1]}-{seed}",
        tags={"sweep_id": parent_id, "mlflow.parentRunId": parent_id},
    )
    run_id = run.info.run_id
    params = {
        "seed": seed,
        "algo.name": "dqn",
        "env.name": "cartpole",
        "env.solved_return": 475.0,
        "backbone.name": "tf_efficientnet_lite0",
        "backbone.weights": weights,
        "backbone.freeze": "all" if weights != "null" else "none",  # coupled to weights: not in the label
        "paths.outputs": f"outputs/runs/{run_id}",  # differs per run: bookkeeping, never a group key
        "logger.run_name": f"job-{seed}",
        "resume": "null",
    }
    steps = STEPS[: len(curve)]  # a shorter curve = a run that stopped early once solved
    metrics = [Metric("eval/return_mean", v, 0, s) for s, v in zip(steps, curve, strict=True)]
    metrics.append(Metric("eval/final_return_mean", curve[-1], 0, steps[-1]))
    metrics += [Metric("train/episode_return", v / 2, 0, s) for s, v in zip(steps, curve, strict=True)]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    client.set_tag(run_id, "solved", str(curve[-1] >= 475).lower())
    if status == "FAILED":
        client.set_tag(run_id, "error", "RunFailure: non-finite loss at env step 4000")
    client.set_terminated(run_id, status)
    return run_id


def _sweep(root: Path, finals_a: list[float], finals_b: list[float], name: str = "sweep") -> str:
    """A parent run and its jobs: group A (pretrained weights) and B (scratch), one curve per seed, one FAILED."""
    client = MlflowClient(tracking_uri=_uri(root))
    experiment_id = client.create_experiment("pipeline", artifact_location=(root / "mlartifacts").as_uri())
    parent = client.create_run(experiment_id, run_name=name, tags={"sweep_parent": "true"})
    parent_id = parent.info.run_id
    client.set_tag(parent_id, "sweep_id", parent_id)
    for weights, finals in ((PRETRAINED, finals_a), ("null", finals_b)):
        for seed, final in enumerate(finals):
            curve = [final * (1 - np.exp(-s / 3000)) for s in STEPS]
            if final >= 475:  # solved: stops at the first eval at or past the threshold
                curve = curve[: next(i for i, v in enumerate(curve) if v >= 475) + 1]
            curve[-1] = final  # the final evaluation
            _child(client, experiment_id, parent_id, seed, weights, curve)
    _child(client, experiment_id, parent_id, 9, "outputs/weights/other.safetensors", [10.0, 12.0], status="FAILED")
    client.set_terminated(parent_id, "FINISHED")
    return parent_id


def _table(md: str) -> dict[str, tuple[int, float, float, float]]:
    """The report's table: group → (n, IQM, CI low, CI high)."""
    rows = {}
    for label, n, iqm, lo, hi in re.findall(r"^\| (.+?) \| (\d+) \| ([\d.]+) \[([\d.]+), ([\d.]+)\] \|", md, re.M):
        rows[label] = (int(n), float(iqm), float(lo), float(hi))
    return rows


def test_report_states_the_winner_and_logs_its_files(tmp_path: Path) -> None:
    # Pretrained: finals around 490 (solved, stopping early); scratch: around 200.
    sweep_id = _sweep(tmp_path, [480.0, 495.0, 500.0, 488.0, 476.0], [150.0, 210.0, 190.0, 230.0, 170.0])
    path = make_report(_uri(tmp_path), sweep="last", out=tmp_path / "reports")

    folder = tmp_path / "reports" / sweep_id
    assert path == folder / "report.md"
    files = {"report.md", "report.html", "curves.png", "final_iqm.png"}
    assert {p.name for p in folder.iterdir()} == files
    assert all((folder / f).stat().st_size > 0 for f in files)
    client = MlflowClient(tracking_uri=_uri(tmp_path))
    assert {a.path for a in client.list_artifacts(sweep_id, "report")} == {f"report/{f}" for f in files}

    md = path.read_text()
    rows = _table(md)
    pretrained, scratch = "backbone.weights=tf_efficientnet_lite0.safetensors", "backbone.weights=null"
    assert set(rows) == {pretrained, scratch}  # freeze follows weights; seed, paths, run names never group
    assert rows[pretrained][0] == rows[scratch][0] == 5  # the FAILED job is not counted...
    assert rows[pretrained][1] == pytest.approx(np.mean([480, 488, 495]), abs=0.05)  # IQM of 5 = middle 3
    assert rows[scratch][1] == pytest.approx(190.0, abs=0.05)
    assert rows[pretrained][2] > rows[scratch][3]  # intervals apart
    assert list(rows) == [pretrained, scratch]  # best first

    answer = md.split("## Answer")[1].split("##")[0]
    assert f"**`{pretrained}` beats `{scratch}`**: P(improvement)=1.00 [1.00, 1.00]" in answer
    assert md.index("## Answer") < md.index("## Final performance")
    assert "5/5" in md and "0/5" in md  # steps to ≥ 475 (env.solved_return): all pretrained, no scratch run
    failed = md.split("## Runs left out")[1]
    assert "FAILED" in failed and "non-finite loss" in failed  # ...but listed
    assert f"python -m pipeline.report sweep={sweep_id}" in md

    page = (folder / "report.html").read_text()
    assert '<img src="curves.png"' in page and '<img src="final_iqm.png"' in page
    assert "<strong><code>" in page and "FAILED" in page

    again = make_report(_uri(tmp_path), sweep=sweep_id, out=tmp_path / "again").read_text()
    assert again.replace("again", "reports") == md  # fixed bootstrap seed: the same data, the same report


def test_same_distribution_gives_no_significant_difference(tmp_path: Path) -> None:
    _sweep(tmp_path, [150.0, 260.0, 190.0, 330.0, 220.0], [170.0, 310.0, 200.0, 240.0, 280.0])
    md = make_report(_uri(tmp_path), out=tmp_path / "reports").read_text()
    answer = md.split("## Answer")[1].split("##")[0]
    assert "no significant difference between" in answer and "beats" not in answer
    p, lo, hi = map(float, re.search(r"P\(improvement\)=([\d.]+) \[([\d.]+), ([\d.]+)\]", answer).groups())
    assert lo < 0.5 < hi and p >= 0.5


def test_too_few_seeds_makes_no_statement(tmp_path: Path) -> None:
    _sweep(tmp_path, [480.0, 495.0], [150.0, 210.0])
    md = make_report(_uri(tmp_path), out=tmp_path / "reports").read_text()
    answer = md.split("## Answer")[1].split("##")[0]
    assert "sample too small for a statement" in answer and "beats" not in answer


def test_explicit_threshold_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep_id = _sweep(tmp_path, [480.0, 495.0, 500.0], [150.0, 210.0, 190.0])
    uri, out = _uri(tmp_path), tmp_path / "reports"

    assert main([f"tracking_uri={uri}", f"sweep={sweep_id}", "threshold=100", f"out={out}"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == f"report: {out / sweep_id / 'report.md'}"
    md = (out / sweep_id / "report.md").read_text()
    assert "steps to ≥ 100 (median)" in md and "3/3" in md and "0/3" not in md

    assert main([f"tracking_uri={uri}", "sweep=0123abcd", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sweep=0123abcd: no such run in ") and "sweep=last" in err
    assert len(err.splitlines()) == 1

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name("pipeline").experiment_id
    child = client.search_runs([experiment_id], f"tags.sweep_id = '{sweep_id}'", max_results=2)
    job = next(r.info.run_id for r in child if r.info.run_id != sweep_id)
    assert main([f"tracking_uri={uri}", f"sweep={job}"]) == 2
    assert f"pass sweep={sweep_id}" in capsys.readouterr().err

    assert main([f"tracking_uri={uri}", "metric=eval/nope"]) == 2
    assert "no finished run with metric eval/nope" in capsys.readouterr().err

    assert main(["sweeps=last"]) == 2
    assert "unknown argument 'sweeps=last'" in capsys.readouterr().err
    assert main(["threshold=high"]) == 2
    assert "threshold=high: not a number" in capsys.readouterr().err
    assert main([f"tracking_uri=sqlite:///{tmp_path}/none.db"]) == 2
    assert "no MLflow store there" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="sweep=last: no sweep in"):
        empty = tmp_path / "empty"
        empty.mkdir()
        MlflowClient(tracking_uri=_uri(empty)).create_experiment("pipeline")
        make_report(_uri(empty), out=out)


def test_report_links_each_runs_newest_video_and_its_evaluation(tmp_path: Path) -> None:
    sweep_id = _sweep(tmp_path, [480.0, 495.0, 500.0], [150.0, 210.0, 190.0])
    client = MlflowClient(tracking_uri=_uri(tmp_path))
    jobs = client.search_runs(
        [client.get_experiment_by_name("pipeline").experiment_id],
        f"tags.sweep_id = '{sweep_id}' and attributes.status = 'FINISHED'",
    )
    job = next(r for r in jobs if r.info.run_id != sweep_id and r.data.params["seed"] == "1")
    for step in (256, 1024):  # the newest (highest step) is the one linked
        video = tmp_path / f"step_{step:09d}.mp4"
        video.write_bytes(b"\0")
        client.log_artifact(job.info.run_id, str(video), "videos")
    evaluation = client.create_run(
        job.info.experiment_id,
        run_name="eval",
        tags={"evaluation": "true", "evaluation_of": job.info.run_id, "mlflow.parentRunId": job.info.run_id},
    )
    client.log_batch(
        evaluation.info.run_id,
        metrics=[
            Metric(k, v, 0, 0)
            for k, v in {
                "eval/return_iqm": 498.5,
                "eval/return_iqm_ci_low": 490.0,
                "eval/return_iqm_ci_high": 500.0,
                "eval/return_mean": 497.0,
                "eval/episodes": 30.0,
            }.items()
        ],
    )
    client.set_terminated(evaluation.info.run_id, "FINISHED")

    md = make_report(_uri(tmp_path), sweep=sweep_id, out=tmp_path / "reports").read_text()
    runs = md.split("## Runs\n")[1].split("## Runs left out")[0]
    [row] = [line for line in runs.splitlines() if line.startswith(f"| {job.info.run_name} |")]
    assert "498.5 [490.0, 500.0] over 30 episodes" in row
    assert f"[mp4]({job.info.artifact_uri}/videos/step_000001024.mp4)" in row
    others = [line for line in runs.splitlines() if line.startswith("| job-") and line != row]
    assert len(others) == 5 and all(line.endswith("| – | – |") for line in others)
    assert _table(md)["backbone.weights=tf_efficientnet_lite0.safetensors"][0] == 3  # the evaluation is no job
    page = (tmp_path / "reports" / sweep_id / "report.html").read_text()
    assert f'<a href="{job.info.artifact_uri}/videos/step_000001024.mp4">mp4</a>' in page
