"""DQN and Double DQN as one LightningModule.

Read it top to bottom: `training_step` is one *chunk* — `algo.chunk_steps` env steps, with the
gradient rounds and target syncs that fall inside it — so Lightning's per-step cost is paid once per
chunk, not once per env step. Every schedule runs on the global env-step counter (all vector envs,
all ranks). Under DDP each rank owns its envs and replay buffer, gradients are averaged by DDP in
`manual_backward`, the target net (a no-grad submodule DDP ignores) syncs on every rank at the same
step, and rank 0 evaluates and writes metrics. The final evaluation is the caller's (train.py).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from pipeline.buffers import ReplayBuffer
from pipeline.checkpoints import CHECKPOINT_DIR, LAST, atomic_save
from pipeline.checkpoints import load as load_checkpoint
from pipeline.config import Config
from pipeline.envs import EnvSpec, make_vector_env
from pipeline.errors import ConfigError, RunFailure
from pipeline.evaluate import Evaluator
from pipeline.networks import QNetwork, build_q_network, param_groups, target_copy
from pipeline.optim import clip_grad_norm
from pipeline.startup import startup_s
from pipeline.tracking import MetricWriter, RunTarget

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1_000_000
RESUME_SEED_STRIDE = 100_003


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """Linear interpolation from `start` at step 0 to `end` at `duration`, constant after."""
    frac = min(max(step, 0) / duration, 1.0)
    return start + frac * (end - start)


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
class LoopState:
    """Counters and the live rollout. A plain object: nn.Module.__setattr__ costs ~4 µs per assignment,
    and the loop assigns several of these every env step."""

    vec_steps: int = 0  # local vector-env steps on this rank
    steps_per_vec: int = 1  # env steps per vector step over all ranks: num_envs * world_size
    updates: int = 0
    episodes: int = 0
    resumes: int = 0  # how often this run was resumed (offsets the env seeds of each resumption)
    obs: np.ndarray | None = None
    ep_return: np.ndarray | None = None
    ep_length: np.ndarray | None = None


@dataclass
class Forwards:
    """The callables the gradient step uses: the networks themselves, or their torch.compile'd versions."""

    q: Callable[[torch.Tensor], torch.Tensor]
    target: Callable[[torch.Tensor], torch.Tensor]


class _Ticks(IterableDataset):
    """Lightning wants a dataloader; the data come from the env, so each item is just a tick."""

    def __iter__(self):
        while True:
            yield 0


class DQN(pl.LightningModule):
    def __init__(
        self, cfg: Config, spec: EnvSpec, run_target: RunTarget | None = None, weights_file: str | None = None
    ):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.spec = spec
        self.run_target = run_target
        self.q_net: QNetwork = build_q_network(cfg.backbone, spec, weights_file, dueling=cfg.algo.dueling)
        if cfg.hardware.channels_last and spec.is_image:
            self.q_net = self.q_net.to(memory_format=torch.channels_last)
        # A submodule (moved and checkpointed with the rest) whose parameters need no grad, so DDP's
        # reducer ignores them; `train()` below keeps it in eval mode. A frozen encoder is shared.
        self.target_net: QNetwork = target_copy(self.q_net)
        # Frozen-feature cache: the frozen encoder runs once per env step (on the vector envs' batch) and
        # the buffer stores its features; gradient steps and targets then run the heads alone.
        self.cache_features = self.q_net.encoder.frozen and cfg.backbone.cache_features
        self.loop = LoopState()
        self.last_eval_step = -1
        self.last_eval_return = float("nan")
        self.solved = False
        self.progress: dict[str, float] = {}
        self.resume_from: dict[str, Any] | None = None  # set by train(): a loaded checkpoint to continue
        self.restored_buffer = False
        self._warned_buffer = False
        self._min_fill = 1
        self.checkpoint_path: Path | None = None  # the last good checkpoint, named in failure messages

    # ----------------------------------------------------------------- counters and schedules
    @property
    def global_env_steps(self) -> int:
        return self.loop.vec_steps * self.loop.steps_per_vec

    def epsilon(self, step: int) -> float:
        a = self.cfg.algo
        return linear_schedule(a.eps_start, a.eps_end, a.eps_decay_steps, step)

    def chunks_needed(self, world_size: int, done_env_steps: int = 0) -> int:
        per_chunk = self._vec_steps_per_chunk(world_size) * self.cfg.env.num_envs * world_size
        return max(1, math.ceil((self.cfg.total_env_steps - done_env_steps) / per_chunk))

    def _vec_steps_per_chunk(self, world_size: int) -> int:
        return max(1, self.cfg.algo.chunk_steps // (self.cfg.env.num_envs * world_size))

    # ----------------------------------------------------------------- Lightning plumbing
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Ticks(), batch_size=None)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = param_groups(self.q_net, self.cfg.backbone, self.cfg.algo.lr)
        fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        return torch.optim.Adam(groups, lr=self.cfg.algo.lr, fused=fused)

    def setup(self, stage: str) -> None:
        """Spawned DDP ranks receive this module through torch.multiprocessing, which moves CPU tensors
        to shared memory: every rank would then step the *same* parameters (and a resumed optimiser
        state). Each rank gets its own copy here, before DDP wraps the module and the optimiser exists."""
        if self.trainer.world_size > 1:
            for tensor in [*self.parameters(), *self.buffers()]:
                if tensor.is_shared():
                    tensor.data = tensor.data.clone()
            if self.resume_from is not None:
                self.resume_from = copy.deepcopy(self.resume_from)

    def on_train_start(self) -> None:
        cfg, rank = self.cfg, self.global_rank
        if cfg.hardware.threads > 0:
            torch.set_num_threads(cfg.hardware.threads)
        if self.device.type == "cpu":
            # Lightning asks torch for NVML-based CUDA checks (fork safety); Adam.step then probes NVML on
            # every call, 33 µs each on a CUDA build without a GPU (measured). Ranks here are spawned, not
            # forked, and train on the CPU, so the default check is safe.
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
        # One process: plain autograd. DDP: Lightning's manual_backward, which arms DDP's gradient
        # all-reduce. Its hooks cost ~0.1 ms per call (measured), a tax on small networks.
        self._backward = self.manual_backward if self.trainer.world_size > 1 else torch.Tensor.backward
        n = cfg.env.num_envs
        self.loop.steps_per_vec = n * self.trainer.world_size
        self.rng = np.random.default_rng(cfg.seed + 7919 * (rank + 1))
        if self.cache_features:
            item_shape, item_dtype, stack = self.q_net.encoder.out_shape, torch.float32, 1
        else:
            item_shape, item_dtype, stack = self.spec.obs_shape, self.spec.obs_dtype, self.spec.frame_stack
        a = cfg.algo
        self.buffer = ReplayBuffer(
            a.buffer_size,
            item_shape,
            item_dtype,
            n,
            stack,
            self.device,
            seed=cfg.seed + rank,
            n_step=a.n_step,
            gamma=a.gamma,
            priority_alpha=a.per_alpha if a.prioritized else None,
        )
        self.optimizer = self.optimizers(use_pl_optimizer=False)
        if self.resume_from is not None:
            self._restore(self.resume_from)
        self.env = make_vector_env(cfg.env, n)
        # A resumed run starts fresh episodes (env internals are not checkpointed) on new seeds.
        env_seed = cfg.seed + rank * n + RESUME_SEED_STRIDE * self.loop.resumes
        self.loop.obs, _ = self.env.reset(seed=[env_seed + i for i in range(n)])
        self.loop.ep_return = np.zeros(n)
        self.loop.ep_length = np.zeros(n, dtype=np.int64)
        self.recent_returns: deque[float] = deque(maxlen=20)
        self._pending_episodes: list[tuple[int, float, float]] = []
        self.grad_params = [p for p in self.q_net.parameters() if p.requires_grad]
        compile_ = torch.compile if cfg.hardware.compile else (lambda net: net)
        # Plain attributes of a plain object: assigned to the module, they would be registered as
        # submodules and duplicated in every checkpoint.
        if self.cache_features:
            self.fwd = Forwards(q=compile_(self.q_net.head), target=compile_(self.target_net.head))
        else:
            self.fwd = Forwards(q=compile_(self.q_net), target=compile_(self.target_net))
        self.q_net.eval()  # acting mode; gradient rounds switch to train mode
        # A resume without the buffer waits until it holds learning_starts transitions again.
        refill = self.resume_from is not None and not self.restored_buffer
        per_rank_start = cfg.algo.learning_starts // self.trainer.world_size
        self._min_fill = min(max(cfg.algo.batch_size, per_rank_start if refill else 0), cfg.algo.buffer_size)
        self.evaluator = None
        self.writer = None
        if self.trainer.is_global_zero:
            self.evaluator = Evaluator(cfg.env, cfg.eval.episodes, cfg.seed + EVAL_SEED_OFFSET)
            if self.run_target is not None:
                self.writer = MetricWriter(self.run_target, cfg.logger.flush_every_s)
                # Start-up cost: process start (imports, env and network building) to the first env step.
                startup = {"perf/startup_s": startup_s()}
                self.writer.log({"replay/bytes_per_transition": self.buffer.bytes_per_transition(), **startup}, 0)
                if self.resume_from is not None:
                    run_id = self.run_target.run_id
                    self.writer.client.set_tag(run_id, "resume_buffer_restored", str(self.restored_buffer).lower())
                    self.writer.client.set_tag(run_id, "resume_buffer_size", str(self.buffer.stored()))
        self._chunk_start = time.perf_counter()

    def on_train_end(self) -> None:
        if self.trainer.world_size > 1:
            self._check_replicas_in_sync()
        self._save_checkpoint()
        if self.writer is not None:
            self.writer.flush()
        self.env.close()
        if self.evaluator is not None:
            self.evaluator.close()

    def train(self, mode: bool = True) -> DQN:
        super().train(mode)
        self.target_net.eval()
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rank 0's loop state, RNG and buffer go into Lightning's checkpoint; other ranks write their own."""
        state = self._rank_state()
        checkpoint["counters"] = state["loop"]
        if self.global_rank == 0:
            checkpoint["pipeline"] = state
        else:
            atomic_save(state, self._checkpoint_dir() / f"rank{self.global_rank}.pt")

    def _rank_state(self) -> dict[str, Any]:
        loop = self.loop
        include_buffer = self.cfg.checkpoint.buffer
        limit = self.cfg.checkpoint.buffer_max_gb * 2**30
        if include_buffer and self.buffer.nbytes() > limit:
            include_buffer = False
            if not self._warned_buffer:
                log.warning(
                    "replay buffer (%.1f GB) is above checkpoint.buffer_max_gb=%s: checkpoints leave it out "
                    "and a resumed run refills it",
                    self.buffer.nbytes() / 2**30,
                    self.cfg.checkpoint.buffer_max_gb,
                )
                self._warned_buffer = True
        return {
            "loop": {
                "vec_steps": loop.vec_steps,
                "global_env_steps": self.global_env_steps,
                "world_size": self.trainer.world_size,
                "updates": loop.updates,
                "episodes": loop.episodes,
                "resumes": loop.resumes,
                "last_eval_step": self.last_eval_step,
                "last_eval_return": self.last_eval_return,
            },
            "rng": {
                "numpy": json.dumps(self.rng.bit_generator.state),
                "torch": torch.get_rng_state(),
            },
            "buffer": self.buffer.state_dict(self._items(self.loop.obs)) if include_buffer else None,
        }

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue where the checkpoint stopped: counters (so ε and every schedule), RNG, buffer, optimiser."""
        if self.global_rank == 0:
            state = checkpoint["pipeline"]
        else:
            state = load_checkpoint(self._checkpoint_dir() / f"rank{self.global_rank}.pt")
        saved = state["loop"]
        if saved["world_size"] != self.trainer.world_size:
            raise ConfigError(
                f"resume: the run trained on {saved['world_size']} device(s), this one has "
                f"{self.trainer.world_size}; resume with the same hardware settings"
            )
        loop = self.loop
        loop.vec_steps, loop.updates, loop.episodes = saved["vec_steps"], saved["updates"], saved["episodes"]
        loop.resumes = saved["resumes"] + 1
        self.last_eval_step, self.last_eval_return = saved["last_eval_step"], saved["last_eval_return"]
        self.rng.bit_generator.state = json.loads(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["buffer"] is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.optimizer.load_state_dict(checkpoint["optimizer_states"][0])
        self.restored_buffer = state["buffer"] is not None

    # ----------------------------------------------------------------- the chunk
    def training_step(self, batch: Any, batch_idx: int) -> None:
        a = self.cfg.algo
        per_vec = self.loop.steps_per_vec
        chunk_start_step = self.global_env_steps
        loss_sum = torch.zeros((), device=self.device)
        q_sum = torch.zeros((), device=self.device)
        gnorm_sum = torch.zeros((), device=self.device)
        n_updates = 0
        for _ in range(self._vec_steps_per_chunk(self.trainer.world_size)):
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
        self._check_finite(loss_sum + q_sum + gnorm_sum)
        self._end_chunk(chunk_start_step, loss_sum, q_sum, n_updates)

    def _check_finite(self, total: torch.Tensor) -> None:
        """NaN guard, once per chunk (one sync): a non-finite loss, Q-value or gradient stops the run
        before anything non-finite reaches a checkpoint; every rank stops together."""
        bad = not bool(torch.isfinite(total))
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            last = self.checkpoint_path if self.checkpoint_path is not None else "none yet"
            raise RunFailure(
                f"non-finite loss, Q-value or gradient within the {self.cfg.algo.chunk_steps} env steps before "
                f"step {self.global_env_steps}; last good checkpoint: {last}; lower algo.lr or "
                "algo.max_grad_norm, then resume"
            )

    @torch.inference_mode()
    def _items(self, obs: np.ndarray) -> np.ndarray | torch.Tensor:
        """What the buffer stores for these observations: themselves, or their frozen features."""
        if not self.cache_features:
            return obs
        return self.q_net.encoder(torch.from_numpy(np.asarray(obs)).to(self.device))

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
        loop = self.loop
        actions, items = self._act(loop.obs, eps)
        next_obs, rewards, terminated, truncated, info = self.env.step(actions)
        finished = np.flatnonzero(terminated | truncated)
        finals = None
        cut = np.flatnonzero(truncated & ~terminated)
        if cut.size:  # a time limit: the target bootstraps from the final obs, not the reset one
            final_obs = np.stack([info["final_obs"][i] for i in cut])
            finals = dict(zip(cut.tolist(), self._items(final_obs), strict=True))
        train_rewards = np.sign(rewards) if self.cfg.env.clip_rewards else rewards
        self.buffer.add(items, actions, train_rewards, terminated, truncated, finals)
        loop.obs = next_obs
        loop.vec_steps += 1
        loop.ep_return += rewards
        loop.ep_length += 1
        if finished.size:
            step = self.global_env_steps
            for i in finished:
                self._pending_episodes.append((step, float(loop.ep_return[i]), float(loop.ep_length[i])))
                self.recent_returns.append(float(loop.ep_return[i]))
            loop.episodes += finished.size
            loop.ep_return[finished] = 0.0
            loop.ep_length[finished] = 0

    def _learn(self, n_updates: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """`n_updates` gradient steps on batches drawn in one gather (the buffer is fixed meanwhile)."""
        a = self.cfg.algo
        beta = linear_schedule(a.per_beta_start, a.per_beta_end, self.cfg.total_env_steps, self.global_env_steps)
        batch = self.buffer.sample(a.batch_size, n_updates, beta=beta)
        prioritized = a.prioritized
        self.q_net.train()
        loss_sum = torch.zeros((), device=self.device)
        q_sum = torch.zeros((), device=self.device)
        gnorm_sum = torch.zeros((), device=self.device)
        for i in range(n_updates):
            obs, next_obs = batch.obs[i], batch.next_obs[i]
            with torch.no_grad():
                next_q_online = self.fwd.q(next_obs) if a.double else None
                next_q = self.fwd.target(next_obs)
                target = bootstrap_target(batch.rewards[i], batch.discounts[i], next_q, next_q_online)
            q = self.fwd.q(obs).gather(1, batch.actions[i].unsqueeze(1)).squeeze(1)
            if prioritized:  # importance-weighted loss; the TD errors become the new priorities
                per_item = F.huber_loss(q, target, delta=a.huber_delta, reduction="none")
                loss = (batch.weights[i] * per_item).mean()
                self.buffer.update_priorities(batch.indices[i], q.detach() - target, a.per_eps)
            else:
                loss = F.huber_loss(q, target, delta=a.huber_delta)
            self.optimizer.zero_grad(set_to_none=True)
            self._backward(loss)
            gnorm_sum += clip_grad_norm(self.grad_params, a.max_grad_norm)
            self.optimizer.step()
            loss_sum += loss.detach()
            q_sum += q.detach().mean()
        self.q_net.eval()
        self.loop.updates += n_updates
        return loss_sum, q_sum, gnorm_sum, n_updates

    @torch.no_grad()
    def _sync_target(self) -> None:
        tau = self.cfg.algo.tau
        shared = self.target_net.encoder is self.q_net.encoder
        source, dest = (self.q_net.head, self.target_net.head) if shared else (self.q_net, self.target_net)
        online = source.state_dict()
        for name, t in dest.state_dict().items():
            o = online[name]
            if tau >= 1.0 or not t.is_floating_point():
                t.copy_(o)
            else:
                t.lerp_(o, tau)

    def _end_chunk(self, chunk_start_step: int, loss_sum: torch.Tensor, q_sum: torch.Tensor, n_updates: int) -> None:
        now = time.perf_counter()
        elapsed = max(now - self._chunk_start, 1e-9)
        self._chunk_start = now
        step = self.global_env_steps
        sps = (step - chunk_start_step) / elapsed
        metrics = {
            "train/epsilon": self.epsilon(step),
            "perf/env_steps_per_s": sps,
            "perf/updates_per_s": n_updates / elapsed,
        }
        if n_updates:
            metrics["train/loss"] = float(loss_sum) / n_updates
            metrics["train/q_mean"] = float(q_sum) / n_updates
        self.progress = {
            "env_steps": step,
            "return": float(np.mean(self.recent_returns)) if self.recent_returns else float("nan"),
            "steps_per_s": sps,
            "eval": self.last_eval_return,
        }
        if self.writer is not None:
            self._log_episodes()
            self.writer.log(metrics, step)
        every = self.cfg.eval.every_env_steps
        if every and step // every != chunk_start_step // every and step < self.cfg.total_env_steps:
            self._evaluate()
            if self.cfg.eval.stop_on_solve and self.trainer.strategy.broadcast(self.solved, src=0):
                self.trainer.should_stop = True
        ckpt_every = self.cfg.checkpoint.every_env_steps
        if ckpt_every and step // ckpt_every != chunk_start_step // ckpt_every:
            self._save_checkpoint()
        # Read back by the caller (also from a spawned rank 0); float64 keeps step counts exact past 2**24.
        f64 = torch.float64
        self.log("env_steps", torch.tensor(step, dtype=f64), logger=False)
        self.log("last_eval_step", torch.tensor(self.last_eval_step, dtype=f64), logger=False)

    def _log_episodes(self) -> None:
        by_step: dict[int, list[tuple[float, float]]] = {}
        for step, ret, length in self._pending_episodes:
            by_step.setdefault(step, []).append((ret, length))
        for step, items in by_step.items():
            rets, lens = zip(*items, strict=True)
            self.writer.log(
                {"train/episode_return": float(np.mean(rets)), "train/episode_length": float(np.mean(lens))},
                step,
            )
        self._pending_episodes.clear()

    def _evaluate(self) -> None:
        step = self.global_env_steps
        self.last_eval_step = step
        if self.evaluator is None:
            return
        returns = self.evaluator.run(self.q_net, self.device)
        self.last_eval_return = float(returns.mean())
        solved_at = self.spec.solved_return
        self.solved = solved_at is not None and self.last_eval_return >= solved_at
        if self.writer is not None:
            self.writer.log({"eval/return_mean": self.last_eval_return, "eval/return_std": float(returns.std())}, step)

    def _check_replicas_in_sync(self) -> None:
        """DDP's promise, verified: every rank ends with bit-identical weights, or the run fails."""
        flat = torch.cat([p.detach().flatten() for p in self.q_net.parameters()])
        gathered = self.all_gather(flat)
        # Shared memory would make the ranks trivially equal (and step the weights once per rank).
        in_sync = bool((gathered == gathered[0]).all()) and not any(p.is_shared() for p in self.q_net.parameters())
        if self.writer is not None:
            self.writer.client.set_tag(self.writer.target.run_id, "ddp_replicas_in_sync", str(in_sync).lower())
        if not in_sync:
            raise RuntimeError("DDP replicas diverged: ranks hold different weights after training")

    def _checkpoint_dir(self) -> Path:
        return Path(self.trainer.default_root_dir) / CHECKPOINT_DIR

    def _save_checkpoint(self) -> None:
        """Write to a temporary file, then rename: a kill mid-write leaves the previous checkpoint intact."""
        final = self._checkpoint_dir() / LAST
        tmp = final.with_name(f".{LAST}.tmp")
        self.trainer.save_checkpoint(tmp)  # every rank calls it; rank 0 writes, then all meet at a barrier
        if self.trainer.is_global_zero:
            os.replace(tmp, final)
        self.checkpoint_path = final
