"""DQN, Double DQN and their extensions (dueling, n-step, prioritised replay) as one LightningModule.

Read it top to bottom: `training_step` is one chunk — `algo.chunk_steps` env steps, with the gradient
rounds and target syncs that fall inside it (the loop itself is `EnvLoop`'s). Every schedule runs on
the global env-step counter. Under DDP each rank owns its replay buffer and the target net (a no-grad
submodule DDP ignores) syncs on every rank at the same step. The final evaluation is run/train.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.algos.buffers import Batch, ReplayLearner
from pipeline.algos.loop import EnvLoop
from pipeline.algos.optim import adam, clip_grad_norm
from pipeline.config.algo import DQNConfig
from pipeline.config.root import Config
from pipeline.core.schedules import linear_schedule
from pipeline.core.spec import EnvSpec
from pipeline.networks.q import QNetwork, build_q_network, param_groups, target_copy
from pipeline.tracking.metrics import RunTarget


def bootstrap_target(
    returns: torch.Tensor,
    discounts: torch.Tensor,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """R + discount · V(s_{t+m}): the n-step form (R the discounted sum of m rewards, discount γ^m, 0 at a
    terminal). DQN: V = max_a Q_target. Double DQN: Q_target at argmax_a Q_online."""
    if next_q_online is None:
        next_v = next_q_target.max(dim=1).values
    else:
        next_v = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return returns + discounts * next_v


@dataclass
class Forwards:
    """The callables the gradient step uses: the networks themselves, or their torch.compile'd versions."""

    q: Callable[[torch.Tensor], torch.Tensor]
    target: Callable[[torch.Tensor], torch.Tensor]


class ValueLearner(EnvLoop):
    """What DQN on arrays and DQN on text (the DRRN, text_dqn.py) share: ε-greedy on the env-step clock, the
    chunk — collect, target syncs and training rounds where their schedules fall — and hard or Polyak
    target syncs. A learner provides `_collect(eps)`, `_learn(n) -> (loss, Q, grad-norm sums, n)` and
    `_sync_pair()` (the online and target modules to copy between)."""

    def __init__(self, cfg: Config, spec: EnvSpec, run_target: RunTarget | None = None):
        super().__init__(cfg, spec, run_target)
        assert isinstance(cfg.algo, DQNConfig)
        self.algo: DQNConfig = cfg.algo
        self._min_fill = 1  # transitions in the buffer before a gradient step may sample it

    def epsilon(self, step: int) -> float:
        a = self.algo
        return linear_schedule(a.eps_start, a.eps_end, a.eps_decay_steps, step)

    def vec_steps_per_chunk(self, world_size: int) -> int:
        return max(1, self.algo.chunk_steps // (self.cfg.env.num_envs * world_size))

    def chunk_metrics(self) -> dict[str, float]:
        """Metrics a learner adds to each chunk's."""
        return {}

    # ----------------------------------------------------------------- the chunk
    def training_step(self, batch: Any, batch_idx: int) -> None:
        a = self.algo
        per_vec = self.loop.steps_per_vec
        chunk_start_step = self.global_env_steps
        loss_sum = torch.zeros((), device=self.device)
        q_sum = torch.zeros((), device=self.device)
        gnorm_sum = torch.zeros((), device=self.device)
        n_updates = 0
        for _ in range(self.vec_steps_per_chunk(self.trainer.world_size)):
            if self.global_env_steps >= self.cfg.total_env_steps:
                break
            self._collect(self.epsilon(self.global_env_steps))
            step, prev = self.global_env_steps, self.global_env_steps - per_vec
            if step // a.target_update_interval != prev // a.target_update_interval:
                self._sync_target()
            rounds = step // a.train_freq - prev // a.train_freq
            if rounds and step >= a.learning_starts and len(self.buffer) >= self._min_fill:
                loss, q_mean, gnorm, n = self._learn(rounds * a.gradient_steps)
                loss_sum += loss
                q_sum += q_mean
                gnorm_sum += gnorm
                n_updates += n
        self.check_finite(
            loss_sum + q_sum + gnorm_sum, "loss, Q-value or gradient", "lower algo.lr or algo.max_grad_norm"
        )
        metrics = {"train/epsilon": self.epsilon(self.global_env_steps)}
        if n_updates:
            metrics["train/loss"] = float(loss_sum) / n_updates
            metrics["train/q_mean"] = float(q_sum) / n_updates
        self.end_chunk(chunk_start_step, n_updates, metrics | self.chunk_metrics())

    def _collect(self, eps: float) -> None:
        actions, items = self._act(self.loop.obs, eps)
        self.step_and_store(items, actions, actions)

    def _learn(self, n_updates: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        raise NotImplementedError

    def _sync_pair(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        raise NotImplementedError

    @torch.no_grad()
    def _sync_target(self) -> None:
        """Target ← online (`algo.tau=1`), or ← lerp(target, online, tau) (Polyak); integer buffers copied."""
        source, dest = self._sync_pair()
        tau = self.algo.tau
        online = source.state_dict()
        for name, t in dest.state_dict().items():
            o = online[name]
            if tau >= 1.0 or not t.is_floating_point():
                t.copy_(o)
            else:
                t.lerp_(o, tau)


class DQN(ReplayLearner, ValueLearner):
    def __init__(
        self, cfg: Config, spec: EnvSpec, run_target: RunTarget | None = None, weights_file: str | None = None
    ):
        super().__init__(cfg, spec, run_target)
        self.q_net: QNetwork = build_q_network(cfg.backbone, spec, weights_file, dueling=cfg.algo.dueling)
        if cfg.hardware.channels_last and spec.is_image:
            self.q_net = self.q_net.to(memory_format=torch.channels_last)
        # A submodule (moved and checkpointed with the rest) whose parameters need no grad, so DDP's
        # reducer ignores them; `train()` below keeps it in eval mode. A frozen encoder is shared.
        self.target_net: QNetwork = target_copy(self.q_net)
        # Frozen-feature cache: the frozen encoder runs once per env step (on the vector envs' batch) and
        # the buffer stores its features; gradient steps and targets then run the heads alone.
        self.cache_features = self.q_net.encoder.frozen and cfg.backbone.cache_features

    @property
    def policy(self) -> QNetwork:
        return self.q_net

    @property
    def feature_encoder(self) -> torch.nn.Module:
        return self.q_net.encoder

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = param_groups(self.q_net, self.cfg.backbone, self.algo.lr)
        return adam(groups, self.algo.lr)

    def build_learner(self) -> None:
        a = self.algo
        self.build_replay(
            a.buffer_size, a.gamma, n_step=a.n_step, priority_alpha=a.per_alpha if a.prioritized else None
        )

    def start_learner(self) -> None:
        cfg = self.cfg
        self.grad_params = [p for p in self.q_net.parameters() if p.requires_grad]
        compile_ = torch.compile if cfg.hardware.compile else (lambda net: net)
        # Plain attributes of a plain object: assigned to the module, they would be registered as
        # submodules and duplicated in every checkpoint.
        if self.cache_features:
            self.fwd = Forwards(q=compile_(self.q_net.head), target=compile_(self.target_net.head))
        else:
            self.fwd = Forwards(q=compile_(self.q_net), target=compile_(self.target_net))
        self.q_net.eval()  # acting mode; gradient rounds switch to train mode
        a = self.algo
        self._min_fill = self.replay_min_fill(a.batch_size, a.learning_starts, a.buffer_size, self.trainer.world_size)

    def start_metrics(self) -> dict[str, float]:
        return self.replay_start_metrics()

    def train(self, mode: bool = True) -> DQN:
        super().train(mode)
        self.target_net.eval()
        return self

    # ----------------------------------------------------------------- acting and learning
    @torch.inference_mode()
    def _act(self, obs: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray | torch.Tensor]:
        """ε-greedy actions, and the buffer items of `obs` (computed once, for acting and storing)."""
        n = obs.shape[0]
        actions = self.rng.integers(0, self.spec.n_actions, size=n)
        explore = self.rng.random(n) < eps
        items = self._items(obs)
        if not explore.all():
            q = self.q_net.head(items) if self.cache_features else self.q_net(torch.from_numpy(obs).to(self.device))
            actions = np.where(explore, actions, q.argmax(dim=1).cpu().numpy())
        return actions, items

    def _collect(self, eps: float) -> None:
        actions, items = self._act(self.loop.obs, eps)
        next_obs, rewards, terminated, truncated, info = self.env.step(actions)
        finals = None
        cut = np.flatnonzero(truncated & ~terminated)
        if cut.size:  # a time limit: the target bootstraps from the final obs, not the reset one
            final_obs = np.stack([info["final_obs"][i] for i in cut])
            finals = dict(zip(cut.tolist(), self._items(final_obs), strict=True))
        train_rewards = np.sign(rewards) if self.cfg.env.clip_rewards else rewards
        self.buffer.add(items, actions, train_rewards, terminated, truncated, finals)
        self.record_step(next_obs, rewards, terminated | truncated)

    def _learn(self, n_updates: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """`n_updates` gradient steps on batches drawn in one gather (the buffer is fixed meanwhile)."""
        a = self.algo
        beta = linear_schedule(a.per_beta_start, a.per_beta_end, self.cfg.total_env_steps, self.global_env_steps)
        batch = self.buffer.sample(a.batch_size, n_updates, beta=beta)
        self.q_net.train()
        loss_sum = torch.zeros((), device=self.device)
        q_sum = torch.zeros((), device=self.device)
        gnorm_sum = torch.zeros((), device=self.device)
        distill = self.distill
        for i in range(n_updates):
            obs = batch.obs[i]
            q_all = self.fwd.q(obs)
            q = q_all.gather(1, batch.actions[i].unsqueeze(1)).squeeze(1)
            if distill is not None and distill.only:  # policy distillation: the teacher is the only target
                loss = distill.term(obs, q_all)
            else:
                loss = self._td_loss(batch, i, q)
                if distill is not None:  # kickstarting: TD loss + λ · KL(teacher ‖ student)
                    loss = loss + distill.term(obs, q_all)
            self.optimizer.zero_grad(set_to_none=True)
            self._backward(loss)
            gnorm_sum += clip_grad_norm(self.grad_params, a.max_grad_norm)
            self.optimizer.step()
            loss_sum += loss.detach()
            q_sum += q.detach().mean()
        self.q_net.eval()
        self.loop.updates += n_updates
        return loss_sum, q_sum, gnorm_sum, n_updates

    def _td_loss(self, batch: Batch, i: int, q: torch.Tensor) -> torch.Tensor:
        """Huber TD loss of minibatch `i`; with prioritised replay importance-weighted, and its TD errors
        become the sampled transitions' new priorities."""
        a = self.algo
        with torch.no_grad():
            next_obs = batch.next_obs[i]
            next_q_online = self.fwd.q(next_obs) if a.double else None
            next_q = self.fwd.target(next_obs)
            target = bootstrap_target(batch.rewards[i], batch.discounts[i], next_q, next_q_online)
        if not a.prioritized:
            return F.huber_loss(q, target, delta=a.huber_delta)
        per_item = F.huber_loss(q, target, delta=a.huber_delta, reduction="none")
        self.buffer.update_priorities(batch.indices[i], q.detach() - target, a.per_eps)
        return (batch.weights[i] * per_item).mean()

    def _sync_pair(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """A frozen encoder is shared by both networks: only the heads are copied."""
        if self.target_net.encoder is self.q_net.encoder:
            return self.q_net.head, self.target_net.head
        return self.q_net, self.target_net
