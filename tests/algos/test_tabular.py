"""Tabular Q-learning, SARSA and expected SARSA: update rules by hand, the vectorised table env against
gymnasium's own stepping, the textbook CliffWalking result, Taxi, artifacts, and refusals."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.algos.tabular import batched_update, td_targets
from pipeline.envs.table import TableEnv
from pipeline.run.job import run_job
from tests.conftest import compose_cfg, run_cli

# Three states, two actions; rows are states.
Q = np.array([[0.0, 1.0], [2.0, 4.0], [-1.0, 3.0]])


def test_td_targets_match_hand_computed_values() -> None:
    rewards = np.array([1.0, -1.0])
    next_states = np.array([1, 2])
    terminated = np.array([False, True])
    gamma, eps = 0.9, 0.2
    # Q-learning: r + γ max Q(s'); the terminal one is r alone.
    assert td_targets("q_learning", Q, rewards, next_states, terminated, gamma, eps) == pytest.approx([4.6, -1.0])
    # SARSA: r + γ Q(s', a') for the next action actually chosen (a' = 0 in state 1).
    sarsa = td_targets("sarsa", Q, rewards, next_states, terminated, gamma, eps, next_actions=np.array([0, 1]))
    assert sarsa == pytest.approx([1 + 0.9 * 2.0, -1.0])
    # Expected SARSA: r + γ [(1-ε) max Q(s') + ε mean Q(s')] = 1 + 0.9 (0.8*4 + 0.2*3) = 4.42.
    assert td_targets("expected_sarsa", Q, rewards, next_states, terminated, gamma, eps) == pytest.approx([4.42, -1])


def test_batched_update_moves_duplicates_by_their_mean() -> None:
    q = Q.copy()
    # (s=0, a=1) twice with targets 3 and 5: mean TD error 3; (s=2, a=0) once with target 1: TD error 2.
    batched_update(q, np.array([0, 0, 2]), np.array([1, 1, 0]), np.array([3.0, 5.0, 1.0]), lr=0.5)
    expected = Q.copy()
    expected[0, 1] += 0.5 * 3.0
    expected[2, 0] += 0.5 * 2.0
    np.testing.assert_allclose(q, expected)


@pytest.mark.parametrize("env_id", ["Taxi-v4", "CliffWalking-v1"])
def test_table_env_steps_like_gymnasium_on_deterministic_envs(env_id: str) -> None:
    env = gym.make(env_id, max_episode_steps=50)
    table = TableEnv(env, num_envs=1, max_episode_steps=50)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    table.reset(seed=0)
    table.state[:] = obs  # the same start; from here both must agree step for step
    for _ in range(400):
        action = int(rng.integers(env.action_space.n))
        obs, reward, terminated, truncated, _ = env.step(action)
        _, t_reward, t_term, t_trunc, info = table.step(np.array([action]))
        assert (info["final_obs"][0], t_reward[0], t_term[0], t_trunc[0]) == (obs, reward, terminated, truncated)
        if terminated or truncated:
            obs, _ = env.reset()
            table.state[:] = obs


def test_table_env_samples_slippery_moves_with_the_tables_probabilities() -> None:
    env = gym.make("FrozenLake-v1")
    table = TableEnv(env, num_envs=30_000, max_episode_steps=100)
    table.reset(seed=0)
    table.state[:] = 5 + 1  # state 6 (row 1, col 2), action 1 (down): thirds to 5 (hole), 10 and 7 (hole)
    _, _, terminated, _, info = table.step(np.full(30_000, 1))
    landed = np.bincount(info["final_obs"], minlength=16) / 30_000
    expected = {s: 0.0 for s in range(16)}
    for p, s2, _, _ in env.unwrapped.P[6][1]:
        expected[s2] += p
    for s in range(16):
        assert landed[s] == pytest.approx(expected[s], abs=0.015)
    assert terminated.mean() == pytest.approx(expected[5] + expected[7], abs=0.015)  # both are holes


CLIFF = ["env=cliffwalking", "total_env_steps=200000", "eval.every_env_steps=0", "eval.stop_on_solve=false"]


@pytest.mark.parametrize(("algo", "expected"), [("q_learning", -13.0), ("sarsa", -17.0), ("expected_sarsa", -17.0)])
def test_cliffwalking_textbook_result(algo: str, expected: float, outputs: Path) -> None:
    """Sutton & Barto, Example 6.6: Q-learning learns the optimal path along the cliff (-13); SARSA,
    learning the value of its ε-greedy behaviour, the safe path two rows up (-17)."""
    cfg = compose_cfg([f"algo={algo}", *CLIFF, "logger=none", "progress=false"], outputs)
    assert run_job(cfg).eval_return_mean == expected


def test_taxi_greedy_policy_and_logged_artifacts(outputs: Path) -> None:
    overrides = ["algo=q_learning", "env=taxi", "total_env_steps=300000", "eval.every_env_steps=100000"]
    cfg = compose_cfg([*overrides, "eval.episodes=100", "eval.stop_on_solve=false", "progress=false"], outputs)
    result = run_job(cfg)
    assert result.eval_return_mean >= 7.5  # optimal is about 8; random play about -770
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    run = client.get_run(result.run_id)
    assert run.data.params["algo.update"] == "q_learning" and run.data.metrics["train/lr"] < 0.5
    assert {a.path for a in client.list_artifacts(result.run_id)} >= {"q_table.csv", "q_table.png"}
    header, *rows = (result.run_dir / "q_table.csv").read_text().splitlines()
    assert header == "state,south,north,east,west,pickup,dropoff" and len(rows) == 500
    policy = mlflow.pytorch.load_model(result.model_uri)  # the served table acts like the trained one
    states = torch.arange(500)
    table = np.array([[float(v) for v in row.split(",")[1:]] for row in rows])
    np.testing.assert_allclose(policy(states).numpy(), table, rtol=1e-5, atol=1e-5)  # csv: 6 digits


def test_frozenlake_grid_heat_map(outputs: Path) -> None:
    cfg = compose_cfg(["algo=expected_sarsa", "env=frozenlake", "total_env_steps=50000", "logger=none"], outputs)
    result = run_job(cfg)
    png = result.run_dir / "q_table.png"
    assert png.stat().st_size > 5_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_tabular_algorithm_on_continuous_observations_is_refused(outputs: Path) -> None:
    out = run_cli(["algo=q_learning", "env=cartpole"], outputs)
    assert out.returncode == 2
    lines = [line for line in out.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "a Q-table needs a discrete observation space" in lines[0]
    assert "env=frozenlake" in lines[0]
    assert not (outputs / "mlflow.db").exists() and not (outputs / "runs").exists()


def test_deep_algorithm_on_discrete_states_is_refused(outputs: Path) -> None:
    out = run_cli(["algo=dqn", "env=taxi"], outputs)
    assert out.returncode == 2 and "use a tabular algorithm (algo=q_learning" in out.stderr
