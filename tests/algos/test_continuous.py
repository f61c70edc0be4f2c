"""Continuous actions: SAC, TD3 and Gaussian PPO on Pendulum — the squashed-Gaussian density, augmentation and
Polyak updates by hand, learning within a CI budget, the logged model acting inside the bounds, resume after
kill -9 with the entropy coefficient intact, and the refusals."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.algos.policy_gradient import gaussian_terms
from pipeline.algos.sac import polyak, random_shift
from pipeline.config.load import to_config
from pipeline.core.errors import ConfigError
from pipeline.envs import make_env, probe_env
from pipeline.evaluate.__main__ import main as evaluate_main
from pipeline.networks.continuous import squashed_sample
from pipeline.networks.normalize import RunningNorm
from pipeline.run.job import run_job
from tests.conftest import compose_cfg, run_cli

PENDULUM = ["env=pendulum", "progress=false", "eval.episodes=5", "hardware.threads=1"]


def _random_return(outputs: Path, episodes: int = 5) -> float:
    """A uniformly random policy's mean return on the same evaluation seeds (the bar a learner must clear)."""
    cfg = to_config(compose_cfg(PENDULUM, outputs))
    env = make_env(cfg.env, evaluation=True)
    rng = np.random.default_rng(0)
    total = 0.0
    for k in range(episodes):
        env.reset(seed=1_000_000 + k)
        done = False
        while not done:
            _, r, term, trunc, _ = env.step(rng.uniform(-2, 2, size=1).astype(np.float32))
            total += r
            done = term or trunc
    return total / episodes


def test_squashed_gaussian_density_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 3), torch.randn(64, 3).clamp(-2, 1)
    action, logp = squashed_sample(mean, log_std)
    assert action.abs().max() < 1
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform(cache_size=1)]
    )
    expected = dist.log_prob(action.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    torch.testing.assert_close(logp, expected, atol=2e-3, rtol=1e-3)


def test_gaussian_terms_match_torch_normal() -> None:
    mean, log_std, actions = torch.randn(8, 2), torch.tensor([-0.5, 0.3]), torch.randn(8, 2)
    logp, entropy = gaussian_terms(mean, log_std, actions)
    normal = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(logp, normal.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, normal.entropy()[0].sum())


def test_random_shift_crops_a_padded_frame() -> None:
    frames = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    shifted = random_shift(frames, 2, g)
    assert shifted.shape == frames.shape
    padded = torch.nn.functional.pad(frames, (2, 2, 2, 2), mode="replicate")
    for i in range(2):  # each sample is one 8x8 window of its padded stack, the same for all its channels
        windows = [
            (y, x) for y in range(5) for x in range(5) if torch.equal(padded[i, :, y : y + 8, x : x + 8], shifted[i])
        ]
        assert len(windows) >= 1


def test_running_norm_merges_batches_like_one_big_batch() -> None:
    data = torch.randn(1000, 3, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]) + 3
    norm = RunningNorm((3,))
    for chunk in data.split(137):
        norm.update(chunk)
    torch.testing.assert_close(norm.mean, data.mean(0), rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(norm.var, data.var(0, unbiased=False), rtol=1e-3, atol=1e-4)
    out = norm(data.float())
    assert out.mean(0).abs().max() < 0.05 and (out.std(0) - 1).abs().max() < 0.05


def test_polyak_moves_the_target_by_tau() -> None:
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = target.weight.detach().clone()
    polyak(target, online, 0.25)
    torch.testing.assert_close(target.weight, 0.75 * before + 0.25 * online.weight.detach())


def test_sac_learns_pendulum_and_the_logged_policy_acts_within_the_bounds(
    outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = compose_cfg([*PENDULUM, "algo=sac", "total_env_steps=4000", "eval.every_env_steps=1000"], outputs)
    result = run_job(cfg)
    random = _random_return(outputs)
    # Measured: solved (−152 ≥ −200, the preset's threshold) at 3,072 steps in 37 s; seeds 1–3 reach −174 to −465
    # by 4k steps (RL-Zoo trains 20k). A random policy scores about −1,100 on these seeds.
    assert result.eval_return_mean >= -400 > random + 500, (result.eval_return_mean, random)
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["algo.name"] == "sac" and run.info.status == "FINISHED"
    history = client.get_metric_history(result.run_id, "train/ent_coef")
    assert history and history[-1].value < 0.5  # tuned down from 1.0 towards the target entropy
    for key in ("train/critic_loss", "train/actor_loss", "train/entropy", "eval/final_return_mean"):
        assert key in run.data.metrics
    policy = mlflow.pytorch.load_model(result.model_uri)
    env = make_env(to_config(cfg).env, evaluation=True)
    obs, _ = env.reset(seed=3)
    with torch.no_grad():
        action = policy(torch.as_tensor(np.stack([obs] * 16)) * torch.linspace(0.1, 5, 16)[:, None]).numpy()
    assert action.shape == (16, 1) and np.all(np.abs(action) <= 2.0)  # Pendulum's torque bounds, even off-data
    env.close()

    # python -m pipeline.evaluate: the mean action, recorded; sampling is refused (the graph serves the mean).
    assert evaluate_main(["stochastic=true", f"paths.outputs={outputs}"]) == 2
    assert "serves its mean action" in capsys.readouterr().err
    code = evaluate_main(["episodes=3", "video=true", f"paths.outputs={outputs}"])
    assert code == 0
    [evaluation] = [r for r in client.search_runs([run.info.experiment_id]) if "evaluation_of" in r.data.tags]
    assert evaluation.data.metrics["eval/return_mean"] > random + 500
    assert [a.path for a in client.list_artifacts(evaluation.info.run_id, "videos")] == ["videos/episode_0.mp4"]
    # A policy for one torque cannot drive two: refused before any run or file.
    if "pipeline/TwoTorques-v0" not in gym.registry:
        gym.register("pipeline/TwoTorques-v0", "tests.algos.test_continuous:TwoTorques", max_episode_steps=5)
    assert evaluate_main(["env.id=pipeline/TwoTorques-v0", f"paths.outputs={outputs}"]) == 2
    assert "the policy outputs a 1-dimensional action, env.id=pipeline/TwoTorques-v0 has 2-dimensional" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("algo", "steps", "extra"),
    [
        ("td3", 4000, ["algo.gamma=0.98"]),  # measured: −662 at 4k, solved (−153) at 6k steps
        ("ppo", 20000, ["env.num_envs=4", "algo.n_steps=512", "algo.gamma=0.9", "algo.gae_lambda=0.95",
                        "algo.epochs=10", "algo.minibatches=32", "algo.lr_end=null",
                        "algo.normalize_reward=true"]),  # measured: solved (−177) at 20k steps; −894 without
    ],
)  # fmt: skip
def test_td3_and_gaussian_ppo_improve_on_pendulum(algo: str, steps: int, extra: list[str], outputs: Path) -> None:
    cfg = compose_cfg(
        [*PENDULUM, f"algo={algo}", f"total_env_steps={steps}", "eval.every_env_steps=0", *extra], outputs
    )
    result = run_job(cfg)
    random = _random_return(outputs)
    assert result.eval_return_mean > random + 200, (result.eval_return_mean, random)
    policy = mlflow.pytorch.load_model(result.model_uri)
    assert policy(torch.full((4, 3), 50.0)).abs().max() <= 2.0  # clipped (PPO) / squashed (TD3) into the bounds


def test_ppo_observation_statistics_are_learned_and_saved_with_the_policy(outputs: Path) -> None:
    cfg = compose_cfg([*PENDULUM, "algo=ppo", "env.num_envs=2", "algo.n_steps=256", "algo.normalize_obs=true",
                       "total_env_steps=2048", "eval.every_env_steps=0", "eval.episodes=1"], outputs)  # fmt: skip
    result = run_job(cfg)
    state = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    weights = state["state_dict"]
    assert float(weights["net.obs_norm.count"]) == pytest.approx(2048, abs=1)  # every rollout, merged after its update
    assert abs(float(weights["net.obs_norm.mean"][0])) < 1 and 0 < float(weights["net.obs_norm.var"][2]) < 64
    # The served graph normalises by itself: the same observation far off the statistics still gives a bounded action.
    policy = mlflow.pytorch.load_model(result.model_uri)
    assert policy(torch.tensor([[1.0, 0.0, 8.0]])).abs().max() <= 2.0


def test_sac_resumes_after_kill_9_with_its_entropy_coefficient(outputs: Path) -> None:
    run_dir = outputs / "killed"
    cmd = [sys.executable, "-m", "pipeline", *PENDULUM, "algo=sac", "total_env_steps=2000", "eval.every_env_steps=0",
           "checkpoint.every_env_steps=500", "logger.flush_every_s=0", "algo.chunk_steps=100",
           f"hydra.run.dir={run_dir}", f"paths.outputs={outputs}"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoints" / "last.ckpt"

    def saved_step() -> int:
        try:
            return int(torch.load(ckpt, map_location="cpu", weights_only=True)["counters"]["global_env_steps"])
        except (FileNotFoundError, RuntimeError, EOFError, KeyError):
            return -1

    deadline = time.monotonic() + 180
    while saved_step() < 1000 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = saved_step()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    saved_alpha = math.exp(float(state["state_dict"]["log_ent_coef"]))
    assert saved_alpha < 0.9  # it had been tuned away from its start (1.0)
    assert len(state["optimizer_states"]) == 3  # critics, actor, entropy coefficient

    resumed = run_cli([f"resume={run_dir}"], outputs)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["resumed_at_step"] == str(killed_at)
    after = [m for m in client.get_metric_history(run.info.run_id, "train/ent_coef") if m.step > killed_at]
    first = min(after, key=lambda m: m.step)
    # One chunk (100 updates) after the checkpoint: near the saved value; a restart from 1.0 would be ~0.9.
    assert first.value < saved_alpha * 1.05 and first.value > saved_alpha * 0.7, (first.value, saved_alpha)


SHORT = ["total_env_steps=300", "algo.learning_starts=100", "algo.batch_size=32", "algo.chunk_steps=100",
         "eval.every_env_steps=0", "eval.episodes=1", "env.max_episode_steps=40", "progress=false"]  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        ["env=halfcheetah", "algo=sac"],  # MuJoCo, state
        ["env=dmc", "env.obs_mode=pixels", "algo=sac", "backbone=resnet18", "backbone.freeze=all"],  # pixels, timm
        ["env=highway", "algo=td3"],  # driving
        ["env=fetch_reach", "algo=sac"],  # a robot arm
    ],
    ids=["halfcheetah", "dmc-pixels-resnet18", "highway", "fetch_reach"],
)
def test_control_envs_train_log_a_model_and_act_within_their_bounds(overrides: list[str], outputs: Path) -> None:
    cfg = compose_cfg([*overrides, *SHORT], outputs)
    result = run_job(cfg)
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and result.env_steps == 300
    assert "train/critic_loss" in run.data.metrics  # it updated (learning_starts < budget)
    if "env=fetch_reach" in overrides:  # gymnasium's is_success flag becomes the evaluation's success rate
        assert 0.0 <= run.data.metrics["eval/final_success_rate"] <= 1.0
    spec = probe_env(to_config(cfg).env)
    policy = mlflow.pytorch.load_model(result.model_uri)
    env = make_env(to_config(cfg).env, evaluation=True)
    obs, _ = env.reset(seed=5)
    for _ in range(5):
        with torch.no_grad():
            action = policy(torch.as_tensor(np.asarray(obs)[None]))[0].numpy()
        assert action.shape == (spec.n_actions,)
        assert np.all(action >= np.array(spec.action_low) - 1e-6) and np.all(
            action <= np.array(spec.action_high) + 1e-6
        )
        obs, *_ = env.step(action)
    env.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["env=pendulum", "algo=dqn"], "continuous actions (1-dimensional Box); use algo=sac, td3 or ppo"),
        (["env=cartpole", "algo=sac"], "has discrete actions (2 of them); sac acts with a continuous policy"),
        (["env=pendulum", "algo=sac", "algo.tau=0"], "algo.tau=0"),
        (["env=pendulum", "algo=td3", "algo.tau=1.5"], "must be in (0, 1]"),
        (["env=pendulum", "algo=sac", "algo.ent_coef=0"], "algo.ent_coef=0"),
        (["env=pendulum", "algo=sac", "algo.ent_coef=-0.1"], "a fixed number > 0"),
        (["env=pendulum", "algo=sac", "algo.ent_coef=auto_0"], "auto_<initial value > 0>"),
        (["env=pendulum", "algo=sac", "algo.augment=shift"], "random shifts move pixels"),
        (["env=pendulum", "algo=sac", "hardware=ddp_cpu"], "trains in one process"),
        (["env=pendulum", "algo=sac", "hardware.compile=true"], "torch.compile is wired for DQN's update only"),
        (
            ["env=pendulum", "algo=ppo", "algo.normalize_obs=true", "env.obs_mode=pixels", "backbone=nature_cnn"],
            "running statistics are for state vectors",
        ),
    ],
)
def test_bad_continuous_configs_are_refused_before_anything_runs(
    overrides: list[str], message: str, outputs: Path
) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        run_job(compose_cfg([*overrides, "progress=false"], outputs))
    assert message in str(info.value)
    assert not (outputs / "mlflow.db").exists() and not (outputs / "runs").exists()


def test_dqn_on_pendulum_from_the_command_line_is_one_line_and_exit_2(outputs: Path) -> None:
    proc = run_cli(["env=pendulum", "algo=dqn"], outputs)
    assert proc.returncode == 2
    assert "use algo=sac, td3 or ppo" in proc.stderr and "Traceback" not in proc.stderr
    assert not (outputs / "mlflow.db").exists()


def test_probe_reads_bounds_and_refuses_unbounded_actions(outputs: Path) -> None:
    spec = probe_env(to_config(compose_cfg(["env=pendulum"], outputs)).env)
    assert spec.continuous and spec.n_actions == 1 and spec.action_low == (-2.0,) and spec.action_high == (2.0,)
    if "pipeline/Unbounded-v0" not in gym.registry:
        gym.register("pipeline/Unbounded-v0", "tests.algos.test_continuous:UnboundedEnv", max_episode_steps=5)
    cfg = to_config(compose_cfg(["env=pendulum", "env.id=pipeline/Unbounded-v0"], outputs)).env
    with pytest.raises(ConfigError, match="its actions are unbounded"):
        probe_env(cfg)


class _Box(gym.Env):
    """A Pendulum-shaped observation with the action box a test needs."""

    observation_space = gym.spaces.Box(-8, 8, (3,), np.float32)
    action_space: gym.spaces.Box

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


class UnboundedEnv(_Box):
    action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


class TwoTorques(_Box):
    action_space = gym.spaces.Box(-2, 2, (2,), np.float32)


def test_pixels_share_one_encoder_that_only_the_critics_train_on_shifted_frames(outputs: Path) -> None:
    from pipeline.algos.sac import ContinuousQ

    overrides = ["env=pendulum", "env.obs_mode=pixels", "backbone=small_cnn", "algo=sac", "algo.augment=shift",
                 "algo.buffer_size=64", "algo.batch_size=8"]  # fmt: skip
    cfg = to_config(compose_cfg(overrides, outputs))
    spec = probe_env(cfg.env)
    learner = ContinuousQ(cfg, spec)
    learner.build_learner()
    net = learner.net
    assert net.shared and learner.augment and not learner.cache_features
    encoder_params = {id(p) for p in net.shared_encoder.parameters()}
    critics, actor = learner.configure_optimizers()[:2]
    assert encoder_params <= {id(p) for g in critics.param_groups for p in g["params"]}  # the critics train it
    assert not encoder_params & {id(p) for g in actor.param_groups for p in g["params"]}  # the actor does not
    frames = torch.randint(0, 255, (8, *spec.obs_shape), dtype=torch.uint8)
    first, second = learner._features(frames), learner._features(frames)
    assert first.shape == second.shape and not torch.equal(first, second)  # a new random shift at every update
    mean, _ = net.actor_out(first.detach())
    mean.sum().backward()
    assert all(p.grad is None for p in net.shared_encoder.parameters())  # detached: no actor gradient reaches it
