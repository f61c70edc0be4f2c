"""Tabular Q-learning, SARSA and expected SARSA over discrete states, vectorised over env copies.

One chunk is `algo.chunk_steps` env steps. Each vector step is a handful of numpy operations for all
copies at once: ε-greedy actions (random tie-breaking), one `TableEnv` step, the bootstrap value of
the next state (max for Q-learning, the next ε-greedy action for SARSA, the ε-greedy expectation for
expected SARSA), and one batched update. When several copies update the same (state, action) in one
step, the table moves by the mean of their updates: a batched step toward their mean target, never
`k` times the learning rate. The table is a float64 buffer of a tiny `nn.Module`, so the shared loop
checkpoints, evaluates and logs it like any network.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from pipeline.algos.loop import EnvLoop
from pipeline.algos.text_reward import shape_table_env
from pipeline.config.algo import TabularConfig
from pipeline.config.root import Config
from pipeline.core.errors import ConfigError
from pipeline.core.paths import weights_cache
from pipeline.core.schedules import linear_schedule
from pipeline.core.spec import EnvSpec
from pipeline.envs import make_env, make_vector_env
from pipeline.envs.table import make_table_env
from pipeline.tracking.metrics import RunTarget


class QTable(nn.Module):
    """state index → Q-values; `act` is the greedy policy. Served like any other policy."""

    def __init__(self, n_states: int, n_actions: int, init: float = 0.0):
        super().__init__()
        self.register_buffer("q", torch.full((n_states, n_actions), float(init), dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q[obs.long()]

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward(obs).argmax(dim=-1)


def td_targets(
    update: str,
    q: np.ndarray,
    rewards: np.ndarray,
    next_states: np.ndarray,
    terminated: np.ndarray,
    gamma: float,
    eps: float,
    next_actions: np.ndarray | None = None,
) -> np.ndarray:
    """r + γ·V(s') (no bootstrap at a terminal): V = max Q (Q-learning), Q(s', a') for the next action
    taken (SARSA), or its expectation under the ε-greedy policy (expected SARSA)."""
    next_q = q[next_states]
    if update == "q_learning":
        v = next_q.max(axis=1)
    elif update == "sarsa":
        assert next_actions is not None
        v = next_q[np.arange(len(next_states)), next_actions]
    else:
        v = (1.0 - eps) * next_q.max(axis=1) + eps * next_q.mean(axis=1)
    return rewards + gamma * v * ~terminated


def batched_update(q: np.ndarray, states: np.ndarray, actions: np.ndarray, targets: np.ndarray, lr: float) -> float:
    """Q(s, a) += lr · (target − Q(s, a)), in place; duplicates of one (s, a) move by their mean update.
    Returns the mean absolute TD error."""
    n_actions = q.shape[1]
    flat = q.reshape(-1)
    idx = states * n_actions + actions
    td = targets - flat[idx]
    sums = np.bincount(idx, weights=td, minlength=flat.size)
    counts = np.bincount(idx, minlength=flat.size)
    hit = counts > 0
    flat[hit] += lr * sums[hit] / counts[hit]
    return float(np.abs(td).mean())


class Tabular(EnvLoop):
    def __init__(self, cfg: Config, spec: EnvSpec, run_target: RunTarget | None = None):
        super().__init__(cfg, spec, run_target)
        assert isinstance(cfg.algo, TabularConfig) and spec.n_states is not None
        self.algo: TabularConfig = cfg.algo
        self.table = QTable(spec.n_states, spec.n_actions, cfg.algo.init_q)

    @property
    def policy(self) -> QTable:
        return self.table

    def vec_steps_per_chunk(self, world_size: int) -> int:
        return max(1, self.algo.chunk_steps // self.cfg.env.num_envs)

    def epsilon(self, step: int) -> float:
        return linear_schedule(self.algo.eps_start, self.algo.eps_end, self.algo.eps_decay_steps, step)

    def lr(self, step: int) -> float:
        return linear_schedule(self.algo.lr_start, self.algo.lr_end, self.algo.lr_decay_steps, step)

    def make_train_env(self, num_envs: int) -> gym.vector.VectorEnv:
        # The fast path when the env publishes its transition table; any other discrete env still works.
        table = make_table_env(self.cfg.env, num_envs)
        if self.cfg.reward.name != "env":
            if table is None:
                raise ConfigError(f"reward=lm_similarity: env={self.cfg.env.name} publishes no transition table")
            self.shaping_similarity = shape_table_env(table, self.cfg.reward, weights_cache(self.cfg.paths.outputs))
            return table
        return table or make_vector_env(self.cfg.env, num_envs)

    def start_learner(self) -> None:
        self.q = self.table.q.numpy()  # shares memory with the buffer: updates land in checkpoints
        self.next_actions: np.ndarray | None = None  # SARSA: the actions already chosen for loop.obs

    def _policy_actions(self, states: np.ndarray, eps: float) -> np.ndarray:
        """ε-greedy, ties broken at random (an all-zero row must not always pick action 0)."""
        q = self.q[states]
        noise = self.rng.random(q.shape)
        greedy = np.argmax(q + 1e-9 * noise * (q == q.max(axis=1, keepdims=True)), axis=1)
        explore = self.rng.random(len(states)) < eps
        return np.where(explore, self.rng.integers(0, q.shape[1], size=len(states)), greedy)

    def training_step(self, batch: object, batch_idx: int) -> None:
        a, loop = self.algo, self.loop
        chunk_start = self.global_env_steps
        td_sum, n_vec = 0.0, 0
        for _ in range(self.vec_steps_per_chunk(1)):
            step = self.global_env_steps
            if step >= self.cfg.total_env_steps:
                break
            eps, lr = self.epsilon(step), self.lr(step)
            obs = loop.obs
            actions = self.next_actions if self.next_actions is not None else self._policy_actions(obs, eps)
            next_obs, rewards, terminated, truncated, info = self.env.step(actions)
            done = terminated | truncated
            # The true next state of a finished copy (its obs is already the next episode's start).
            final = np.where(done, info["final_obs"], next_obs) if done.any() else next_obs
            after = None
            if a.update == "sarsa":
                after = self._policy_actions(final, eps)
                self.next_actions = np.where(done, self._policy_actions(next_obs, eps), after) if done.any() else after
            targets = td_targets(a.update, self.q, rewards, final, terminated, a.gamma, eps, after)
            td_sum += batched_update(self.q, obs, actions, targets, lr)
            n_vec += 1
            self.record_step(next_obs, rewards, done, raw_rewards=info.get("raw_reward"))
        n = self.cfg.env.num_envs
        self.loop.updates += n_vec * n
        step = self.global_env_steps
        metrics = {"train/epsilon": self.epsilon(step), "train/lr": self.lr(step)}
        if n_vec:
            metrics["train/td_error"] = td_sum / n_vec
        self.check_finite(torch.tensor(td_sum), "TD error", "lower algo.lr_start or raise algo.init_q")
        self.end_chunk(chunk_start, n_vec * n, metrics)

    def final_artifacts(self, run_dir: Path) -> list[Path]:
        from pipeline.tracking.plots import plot_q_table

        q = self.q if hasattr(self, "q") else self.table.q.numpy()
        env = make_env(self.cfg.env)
        try:
            u = env.unwrapped
            state_names = getattr(u, "state_names", None)
            action_names = getattr(u, "action_names", None) or _ACTION_NAMES.get(type(u).__name__)
            grid = _grid_shape(u)
        finally:
            env.close()
        csv = run_dir / "q_table.csv"
        header = ",".join(["state", *(action_names or [f"a{i}" for i in range(q.shape[1])])])
        rows = [f"{state_names[s] if state_names else s}," + ",".join(f"{v:.6g}" for v in q[s]) for s in range(len(q))]
        csv.write_text("\n".join([header, *rows]) + "\n")
        unvisited = np.all(q == self.algo.init_q, axis=1)
        png = plot_q_table(q, run_dir / "q_table.png", self.cfg.env.name, grid, action_names, state_names, unvisited)
        return [csv, png]


# Action names of gymnasium's toy-text envs, in their action order (arrows draw the grid worlds' policy).
_ACTION_NAMES = {
    "FrozenLakeEnv": ["left", "down", "right", "up"],
    "CliffWalkingEnv": ["up", "right", "down", "left"],
    "TaxiEnv": ["south", "north", "east", "west", "pickup", "dropoff"],
}


def _grid_shape(env: gym.Env) -> tuple[int, int] | None:
    """Rows × columns for grid worlds whose state is the cell index; None otherwise."""
    if hasattr(env, "desc"):  # FrozenLake
        return tuple(env.desc.shape)
    if type(env).__name__ == "CliffWalkingEnv":
        return tuple(env.shape)
    return None
