"""`python -m pipeline.evaluate` and training videos: what a user watches and quotes after training.

One tiny CartPole run (with training videos every 256 steps) is shared by the module; each test evaluates it
or checks what it logged. Videos are decoded with the writer's own reader (PyAV) and compared with the
episodes they claim to show.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.algos.evaluate import EVAL_SEED_OFFSET, Acting
from pipeline.evaluate.__main__ import main as evaluate_main
from pipeline.evaluate.saliency import saliency_map
from pipeline.report.stats import episode_statistics
from pipeline.run.job import run_job
from pipeline.tracking.video import read_mp4, write_mp4
from tests.conftest import TINY, compose_cfg, run_cli

VIDEO_EVERY = ["logger.video_every_env_steps=256"]


def _store(outputs: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")


def _evaluation_runs(outputs: Path) -> list:
    client = _store(outputs)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, "tags.evaluation = 'true'")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny Double-DQN CartPole run with training videos at 256 and 512 env steps; (outputs, run id)."""
    outputs = tmp_path_factory.mktemp("evaluate") / "outputs"
    outputs.mkdir()
    result = run_job(compose_cfg([*TINY, *VIDEO_EVERY], outputs), outputs / "run")
    assert result.run_id is not None
    return outputs, result.run_id


def _download(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dst)))


def test_training_logs_a_video_at_each_promised_step(trained: tuple[Path, str], tmp_path: Path) -> None:
    outputs, run_id = trained
    client = _store(outputs)
    videos = sorted(a.path for a in client.list_artifacts(run_id, "videos"))
    assert videos == ["videos/step_000000256.mp4", "videos/step_000000512.mp4"]
    lengths = {m.step: m.value for m in client.get_metric_history(run_id, "video/length")}
    assert sorted(lengths) == [256, 512]
    for name in videos:
        frames = read_mp4(_download(client, run_id, name, tmp_path))
        step = int(name.split("_")[-1].removesuffix(".mp4"))
        assert len(frames) == lengths[step]  # one frame per action of the recorded episode
        assert frames[0].shape == (400, 600, 3)  # CartPole's raw render, not the policy's state vector
        assert float(np.std(frames[0])) > 5  # a drawn cart and pole, not a blank frame


def test_evaluate_last_prints_the_summary_and_logs_a_nested_evaluation_run(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    outputs, run_id = trained
    proc = run_cli(
        ["model=last", "episodes=4", "video=true"],
        outputs,
        entry=["-m", "pipeline.evaluate"],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IQM" in proc.stdout and "95% CI" in proc.stdout and run_id in proc.stdout
    [evaluation] = _evaluation_runs(outputs)
    assert evaluation.info.status == "FINISHED"
    tags = evaluation.data.tags
    assert tags["mlflow.parentRunId"] == run_id and tags["evaluation_of"] == run_id
    assert tags["model_uri"] == _store(outputs).get_run(run_id).data.tags["policy_uri"]
    metrics = evaluation.data.metrics
    for stat in ("mean", "iqm", "iqm_ci_low", "iqm_ci_high", "median", "std", "min", "max"):
        assert f"eval/return_{stat}" in metrics
    assert metrics["eval/return_iqm_ci_low"] <= metrics["eval/return_iqm"] <= metrics["eval/return_iqm_ci_high"]

    client = _store(outputs)
    eval_id = evaluation.info.run_id
    with _download(client, eval_id, "episodes.csv", tmp_path).open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in rows] == [EVAL_SEED_OFFSET + k for k in range(4)]  # the run's own seeds
    returns = [float(r["return"]) for r in rows]
    assert metrics["eval/return_mean"] == pytest.approx(np.mean(returns))
    # The same greedy policy on the same seeds as the training run's final evaluation (its first 2 episodes).
    final = client.get_run(run_id).data.metrics["eval/final_return_mean"]
    assert np.mean(returns[:2]) == pytest.approx(final)
    summary = json.loads(_download(client, eval_id, "summary.json", tmp_path).read_text())
    assert summary["statistics"]["iqm"] == pytest.approx(metrics["eval/return_iqm"])

    [video] = [a.path for a in client.list_artifacts(eval_id, "videos")]
    assert video == "videos/episode_0.mp4"
    frames = read_mp4(_download(client, eval_id, video, tmp_path))
    assert len(frames) == int(rows[0]["length"])  # frame count = episode length
    assert all(float(np.std(f)) > 5 for f in frames[:: max(1, len(frames) // 5)])  # non-blank


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=0123456789abcdef0123456789abcdef"], "no MLflow run 0123456789abcdef0123456789abcdef"),
        (["model=runs:/0123456789abcdef0123456789abcdef/policy"], "no MLflow run"),
        (["model=models:/nope/1"], "model=models:/nope/1: not found"),
        (["model=garbage"], "not a model reference; use last, a run id"),
        (["env.id=Acrobot-v1"], "the policy does not take env.id=Acrobot-v1's observations (shape (6,)"),
        (["env.id=Pendulum-v1"], "a policy for discrete actions cannot act in env.id=Pendulum-v1, whose actions are"),
        (["env.id=pipeline/TrafficLight-v0", "video=true"], "cannot render frames"),
        (["saliency=true"], "saliency maps are for pixel agents"),
        (["env.nope=1"], "env.nope=1: Key 'nope' not in 'EnvConfig'"),
        (["episodes=0"], "episodes=0: must be >= 1"),
        (["colour=red"], "unknown key 'colour'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    trained: tuple[Path, str], args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs, _ = trained
    before = {r.info.run_id for r in _evaluation_runs(outputs)}
    dirs_before = set((outputs / "evaluations").rglob("*")) if (outputs / "evaluations").exists() else set()
    assert evaluate_main([*args, f"paths.outputs={outputs}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert not [line for line in err if "Traceback" in line]
    after = _evaluation_runs(outputs)
    assert {r.info.run_id for r in after} == before  # no evaluation run created (none left RUNNING)
    now = set((outputs / "evaluations").rglob("*")) if (outputs / "evaluations").exists() else set()
    assert now == dirs_before


def test_a_missing_store_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_main([f"paths.outputs={tmp_path}"]) == 2
    assert "no MLflow store there; train a policy first (make run)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_training_videos_from_an_env_that_draws_nothing_are_refused(outputs: Path) -> None:
    proc = run_cli(["env=traffic_light", "algo=q_learning", "logger.video_every_env_steps=100"], outputs)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: env.id=pipeline/TrafficLight-v0 cannot render frames (its render modes: none); it cannot give "
        "training videos; set logger.video_every_env_steps=0"
    )
    assert not (outputs / "mlflow.db").exists() and not (outputs / "runs").exists()


def test_a_pixel_agent_gets_its_video_and_a_saliency_grid(outputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pixels = ["env=minatar_breakout", "backbone=small_cnn", "algo=dqn", "logger.video_every_env_steps=0"]
    run_job(compose_cfg([*pixels, *TINY], outputs), outputs / "run")
    code = evaluate_main(["episodes=2", "video=true", "saliency=true", "saliency_frames=4", f"paths.outputs={outputs}"])
    assert code == 0, capsys.readouterr().err
    [evaluation] = _evaluation_runs(outputs)
    client = _store(outputs)
    [png] = [a.path for a in client.list_artifacts(evaluation.info.run_id, "saliency")]
    from PIL import Image

    with Image.open(_download(client, evaluation.info.run_id, png, outputs / "dl")) as image:
        assert image.size[0] > 300 and image.size[1] > 200
    frames = read_mp4(_download(client, evaluation.info.run_id, "videos/episode_0.mp4", outputs / "dl"))
    assert frames[0].shape[2] == 3 and frames[0].shape[0] > 10  # the rendered picture, not the 10x10 grid


def test_saliency_lights_up_where_the_policy_looks() -> None:
    """A policy that reads only the top-left corner: the map's mass sits there."""

    def corner_policy(obs: torch.Tensor) -> torch.Tensor:
        x = obs.float()[:, :, :12, :12].mean(dim=(1, 2, 3))
        return torch.stack([x, -x], dim=-1)

    rng = np.random.default_rng(0)
    obs = rng.integers(0, 255, size=(3, 48, 48), dtype=np.uint8)
    heat = saliency_map(corner_policy, obs, torch.device("cpu"))
    assert heat.shape == (48, 48) and heat.max() == pytest.approx(1.0)
    assert heat[:16, :16].mean() > 5 * heat[24:, 24:].mean()


def test_a_text_agent_records_a_transcript(outputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_job(compose_cfg(["env=traffic_light_text", "backbone=bow", "algo=dqn", *TINY], outputs), outputs / "run")
    assert evaluate_main(["episodes=2", "video=true", f"paths.outputs={outputs}"]) == 0, capsys.readouterr().err
    [evaluation] = _evaluation_runs(outputs)
    client = _store(outputs)
    path = _download(client, evaluation.info.run_id, "transcripts/episode_0.txt", outputs / "dl")
    text = path.read_text()
    with _download(client, evaluation.info.run_id, "episodes.csv", outputs / "dl").open() as f:
        first = next(csv.DictReader(f))
    assert text.count("\n> ") == int(first["length"])  # one chosen command per step
    assert "commands: " in text and f"# return {float(first['return']):g}" in text


def test_stochastic_acting_samples_logits_and_explores_values() -> None:
    rng = np.random.default_rng(0)
    logits = torch.tensor([[0.0, np.log(3.0)]]).repeat(4000, 1)  # p = 0.25, 0.75
    sampled = Acting(stochastic=True, logits=True).choose(logits, rng)
    assert 0.72 < sampled.mean() < 0.78
    values = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(4000, 1)
    explored = Acting(stochastic=True, epsilon=0.2).choose(values, rng)
    assert 0.82 < (explored == 0).mean() < 0.88  # 0.8 greedy + 0.2 / 4 at random
    assert (Acting().choose(values, rng) == 0).all()


def test_a_sampled_text_actor_critic_draws_from_each_states_own_commands() -> None:
    """Text PPO's logits are its DRRN scores over each state's commands (no ε: it has no eps_end)."""

    class Scores:
        def q_values(self, states: list[str], commands: list[list[str]]) -> tuple[torch.Tensor, list[int]]:
            return torch.tensor([0.0, float(np.log(3.0)), 5.0][: sum(map(len, commands))]), [len(c) for c in commands]

    rng = np.random.default_rng(0)
    acting = Acting(stochastic=True, logits=True)
    draws = [acting.choose_text(Scores(), ["s", "t"], [["a", "b"], ["c"]], rng) for _ in range(4000)]
    assert 0.72 < np.mean([d[0] for d in draws]) < 0.78  # p(b) = 3 / (1 + 3)
    assert {d[1] for d in draws} == {0}  # a single command is always it
    assert acting.choose_text(Scores(), ["s", "t"], [["a", "b"], []], rng)[1] == 0  # nothing to choose


def test_episode_statistics_are_the_reports_interquartile_mean_with_an_interval() -> None:
    import scipy.stats

    returns = np.array([10.0, 12, 9, 500, 11, 13, 12, 10, 9, 8])
    s = episode_statistics(returns)
    assert s["iqm"] == pytest.approx(scipy.stats.trim_mean(returns, 0.25))
    assert s["mean"] == pytest.approx(returns.mean()) and s["median"] == pytest.approx(10.5)
    assert s["iqm_ci_low"] < s["iqm"] < s["iqm_ci_high"] < s["mean_ci_high"]
    assert episode_statistics(returns) == s  # fixed bootstrap seed: the same data, the same intervals


def test_the_writer_is_atomic_and_keeps_every_frame(tmp_path: Path) -> None:
    frames = [np.full((33, 47, 3), v, dtype=np.uint8) for v in range(0, 250, 10)]  # odd sides: padded
    path = write_mp4(frames, tmp_path / "clip.mp4", fps=10)
    decoded = read_mp4(path)
    assert len(decoded) == len(frames) and decoded[0].shape == (34, 48, 3)
    assert abs(float(decoded[-1].mean()) - 240) < 4
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary left

    from pipeline.tracking.video import VideoWriter

    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "broken.mp4") as writer:
        writer.add(frames[0])
        raise RuntimeError("stopped mid-episode")
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # the half-written one is gone
