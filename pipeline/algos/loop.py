"""The environment loop every algorithm shares, as a LightningModule base class.

`training_step` is one *chunk* of env steps (a DQN chunk, a PPO rollout and its epochs, a tabular
batch), so Lightning's per-step cost is paid once per chunk, not once per env step. This class owns
what is the same for every family: counters on the global env-step clock (all vector envs, all
ranks), vector envs and episode bookkeeping, periodic deterministic evaluation and stop-on-solve, the
metric writer and progress, the NaN guard, atomic checkpoints with each rank's loop state and RNG,
resume, the DDP checks, and training videos (`logger.video_every_env_steps`). A family adds its learner
(`build_learner`, `training_step`, the learner's checkpoint state) and names the network that acts
(`policy`). Under DDP each rank owns its envs, gradients are averaged by DDP in `manual_backward`, and
rank 0 evaluates, records and writes metrics.
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

import gymnasium as gym
import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from pipeline.algos.evaluate import EVAL_SEED_OFFSET, Evaluator, record_episode
from pipeline.config.root import Config
from pipeline.core.errors import ConfigError, DiskFull, RunFailure, disk_full_reason
from pipeline.core.paths import weights_cache
from pipeline.core.spec import EnvSpec
from pipeline.core.startup import startup_s
from pipeline.envs import frame_rate, make_env, make_vector_env
from pipeline.tracking.checkpoints import CHECKPOINT_DIR, LAST, atomic_save
from pipeline.tracking.checkpoints import load as load_checkpoint
from pipeline.tracking.metrics import MetricWriter, RunTarget

log = logging.getLogger(__name__)

RESUME_SEED_STRIDE = 100_003


@dataclass
class LoopState:
    """Counters and the live rollout. A plain object: nn.Module.__setattr__ costs ~4 µs per assignment,
    and the loop assigns several of these every env step."""

    vec_steps: int = 0  # local vector-env steps on this rank
    steps_per_vec: int = 1  # env steps per vector step over all ranks: num_envs * world_size
    updates: int = 0
    episodes: int = 0
    resumes: int = 0  # how often this run was resumed (offsets the env seeds of each resumption)
    obs: np.ndarray | list[str] | None = None
    ep_return: np.ndarray | None = None
    ep_raw_return: np.ndarray | None = None  # the env's own reward, when a reward wrapper shapes it
    ep_length: np.ndarray | None = None


class _Ticks(IterableDataset):
    """Lightning wants a dataloader; the data come from the env, so each item is just a tick."""

    def __iter__(self):
        while True:
            yield 0


class EnvLoop(pl.LightningModule):
    """Base of every algorithm's LightningModule; see the module docstring for the split of work."""

    def __init__(self, cfg: Config, spec: EnvSpec, run_target: RunTarget | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.spec = spec
        self.run_target = run_target
        self.loop = LoopState()
        self.last_eval_step = -1
        self.last_eval_return = float("nan")
        self.solved = False
        self.progress: dict[str, float] = {}
        self.resume_from: dict[str, Any] | None = None  # set by train(): a loaded checkpoint to continue
        self.checkpoint_path: Path | None = None  # the last good checkpoint, named in failure messages
        self._checkpointed_step = 0
        self.optimizer: torch.optim.Optimizer | list[torch.optim.Optimizer] | None = None
        self.distill = None  # a Distiller: loaded (and checked against the env) before any training
        if cfg.distill.name != "none":
            from pipeline.algos.distill import Distiller

            self.distill = Distiller(cfg, spec)

    # ----------------------------------------------------------------- what a family provides
    @property
    def policy(self) -> nn.Module:
        """The network that acts: evaluated, logged as the MLflow model, `act(obs)` the greedy action."""
        raise NotImplementedError

    def vec_steps_per_chunk(self, world_size: int) -> int:
        raise NotImplementedError

    def build_learner(self) -> None:
        """Buffers and other learner state, built on the device before a checkpoint is restored."""

    def start_learner(self) -> None:
        """After restore and env reset: compiled forwards, fill levels; whatever needs both."""

    def learner_state(self) -> dict[str, Any] | None:
        """What a checkpoint keeps beyond weights and optimiser (e.g. the replay buffer)."""
        return None

    def load_learner_state(self, state: dict[str, Any] | None) -> None:
        """Inverse of `learner_state`."""

    def start_metrics(self) -> dict[str, float]:
        """Logged once at step 0 (next to the start-up time)."""
        return {}

    def make_train_env(self, num_envs: int) -> gym.vector.VectorEnv:
        return make_vector_env(self.cfg.env, num_envs, wrap=self.reward_wrapper())

    def reward_wrapper(self) -> Callable[[gym.Env], gym.Env] | None:
        """`reward=lm_similarity` on a text env: each training sub-env shaped by the goal similarity
        (evaluation envs stay unwrapped: evaluation reports the env's own reward)."""
        if self.cfg.reward.name == "env":
            return None
        from pipeline.algos.text_reward import GoalSimilarity, LMSimilarityReward

        scorer = GoalSimilarity(self.cfg.reward, weights_cache(self.cfg.paths.outputs))
        return lambda env: LMSimilarityReward(env, scorer)

    def final_artifacts(self, run_dir: Path) -> list[Path]:
        """Files the family adds to the run at the end (e.g. the Q-table and its heat-map)."""
        return []

    # ----------------------------------------------------------------- counters
    @property
    def global_env_steps(self) -> int:
        return self.loop.vec_steps * self.loop.steps_per_vec

    def chunks_needed(self, world_size: int, done_env_steps: int = 0) -> int:
        per_chunk = self.vec_steps_per_chunk(world_size) * self.cfg.env.num_envs * world_size
        return max(1, math.ceil((self.cfg.total_env_steps - done_env_steps) / per_chunk))

    # ----------------------------------------------------------------- Lightning plumbing
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Ticks(), batch_size=None)

    def configure_optimizers(self) -> torch.optim.Optimizer | list:
        return []  # no optimiser (a Q-table); `None` would make Lightning warn on every run

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
        self.build_learner()
        if self.trainer.optimizers:
            self.optimizer = self.optimizers(use_pl_optimizer=False)
        if self.resume_from is not None:
            self._restore(self.resume_from)
        self.env = self.make_train_env(n)
        # A resumed run starts fresh episodes (env internals are not checkpointed) on new seeds.
        env_seed = cfg.seed + rank * n + RESUME_SEED_STRIDE * self.loop.resumes
        self.loop.obs, _ = self.env.reset(seed=[env_seed + i for i in range(n)])
        self.loop.ep_return = np.zeros(n)
        self.loop.ep_raw_return = np.zeros(n)
        self.loop.ep_length = np.zeros(n, dtype=np.int64)
        self.recent_returns: deque[float] = deque(maxlen=20)  # the env's own reward (unshaped)
        self._pending_episodes: list[tuple[int, float, float, float]] = []
        self.start_learner()
        self.evaluator = None
        self.writer = None
        self.video_env: gym.Env | None = None
        self._video_step = -1
        if self.trainer.is_global_zero:
            self.evaluator = Evaluator(cfg.env, cfg.eval.episodes, cfg.seed + EVAL_SEED_OFFSET)
            if cfg.logger.video_every_env_steps:
                self.video_env = make_env(cfg.env, evaluation=True, render=True)
            if self.run_target is not None:
                self.writer = MetricWriter(self.run_target, cfg.logger.flush_every_s)
                # Start-up cost: process start (imports, env and network building) to the first env step.
                self.writer.log({"perf/startup_s": startup_s(), **self.start_metrics()}, 0)
        if self.distill is not None and cfg.distill.coef_auto:
            # The teacher's own return, on the same evaluation episodes: the target the student nears.
            from pipeline.algos.distill import teacher_policy

            probe = Evaluator(cfg.env, cfg.eval.episodes, cfg.seed + EVAL_SEED_OFFSET)
            self.distill.teacher_return = float(probe.run(teacher_policy(self.distill), torch.device("cpu")).mean())
            probe.close()
            if self.writer is not None:
                self.writer.log({"distill/teacher_return": self.distill.teacher_return}, 0)
        self._chunk_start = time.perf_counter()

    def on_train_end(self) -> None:
        if self.trainer.world_size > 1:
            self._check_replicas_in_sync()
        self._save_checkpoint()
        if self.video_env is not None and self._video_step != self.global_env_steps:
            self._record_video()  # the trained agent, whatever step the schedule last fell on
        if self.writer is not None:
            self.writer.flush()
        self.env.close()
        if self.evaluator is not None:
            self.evaluator.close()
        if self.video_env is not None:
            self.video_env.close()

    # ----------------------------------------------------------------- episodes
    def record_step(
        self, next_obs: Any, rewards: np.ndarray, done: np.ndarray, raw_rewards: np.ndarray | None = None
    ) -> None:
        """Advance the clock by one vector step and close the episodes that ended in it. `raw_rewards`:
        the env's own rewards when the learner's are shaped (both returns are logged)."""
        loop = self.loop
        loop.obs = next_obs
        loop.vec_steps += 1
        loop.ep_return += rewards
        loop.ep_raw_return += rewards if raw_rewards is None else raw_rewards
        loop.ep_length += 1
        finished = np.flatnonzero(done)
        if finished.size:
            step = self.global_env_steps
            for i in finished:
                raw = float(loop.ep_raw_return[i])
                self._pending_episodes.append((step, float(loop.ep_return[i]), float(loop.ep_length[i]), raw))
                self.recent_returns.append(raw)
            loop.episodes += finished.size
            loop.ep_return[finished] = 0.0
            loop.ep_raw_return[finished] = 0.0
            loop.ep_length[finished] = 0

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rank 0's loop state, RNG and learner state go into Lightning's checkpoint; other ranks write
        their own file."""
        state = self._rank_state()
        checkpoint["counters"] = state["loop"]
        if self.global_rank == 0:
            checkpoint["pipeline"] = state
        else:
            atomic_save(state, self._checkpoint_dir() / f"rank{self.global_rank}.pt")

    def _rank_state(self) -> dict[str, Any]:
        loop = self.loop
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
            "learner": self.learner_state(),
        }

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue where the checkpoint stopped: counters (so every schedule), RNG, learner, optimiser."""
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
        self.checkpoint_path, self._checkpointed_step = self._checkpoint_dir() / LAST, int(saved["global_env_steps"])
        self.last_eval_step, self.last_eval_return = saved["last_eval_step"], saved["last_eval_return"]
        self.rng.bit_generator.state = json.loads(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        self.load_learner_state(state["learner"])
        if self.optimizer is not None:  # one optimiser, or several (SAC: critics, actor, entropy coefficient)
            optimizers = self.optimizer if isinstance(self.optimizer, list) else [self.optimizer]
            for optimizer, saved_state in zip(optimizers, checkpoint["optimizer_states"], strict=True):
                optimizer.load_state_dict(saved_state)

    def _checkpoint_dir(self) -> Path:
        return Path(self.trainer.default_root_dir) / CHECKPOINT_DIR

    def _save_checkpoint(self) -> None:
        """Every rank calls it; rank 0 writes through `AtomicCheckpointIO` (a temporary file, then a
        rename), so a kill or a full disk mid-write leaves the previous checkpoint intact."""
        final = self._checkpoint_dir() / LAST
        try:
            self.trainer.save_checkpoint(final)
        except DiskFull as ex:
            run_dir = self._checkpoint_dir().parent
            then = (
                f"the previous checkpoint (step {self._checkpointed_step}) is intact: free some space, then "
                f"python -m pipeline resume={run_dir}"
                if self.checkpoint_path is not None
                else "no checkpoint was written before it: free some space and start again"
            )
            raise DiskFull(ex.path, ex.needed, what=f"at step {self.global_env_steps} writing", then=then) from None
        self.checkpoint_path = final
        self._checkpointed_step = self.global_env_steps

    # ----------------------------------------------------------------- end of a chunk
    def check_finite(self, total: torch.Tensor, what: str, fix: str) -> None:
        """NaN guard, once per chunk (one sync): a non-finite loss or gradient stops the run before
        anything non-finite reaches a checkpoint; every rank stops together."""
        bad = not bool(torch.isfinite(total))
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            last = self.checkpoint_path if self.checkpoint_path is not None else "none yet"
            raise RunFailure(
                f"non-finite {what} in the chunk before step {self.global_env_steps}; "
                f"last good checkpoint: {last}; {fix}, then resume"
            )

    def end_chunk(self, chunk_start_step: int, n_updates: int, metrics: dict[str, float]) -> None:
        """Write the chunk's metrics and episodes, evaluate and checkpoint on their schedules."""
        now = time.perf_counter()
        elapsed = max(now - self._chunk_start, 1e-9)
        self._chunk_start = now
        step = self.global_env_steps
        sps = (step - chunk_start_step) / elapsed
        metrics = {"perf/env_steps_per_s": sps, "perf/updates_per_s": n_updates / elapsed, **metrics}
        recent = float(np.mean(self.recent_returns)) if self.recent_returns else float("nan")
        if self.distill is not None:
            metrics |= self.distill.metrics()
            self.distill.update_coef(step, recent)
        self.progress = {
            "env_steps": step,
            "return": recent,
            "steps_per_s": sps,
            "eval": self.last_eval_return,
        }
        if self.writer is not None:
            self._log_episodes(step)
            self.writer.log(metrics, step)
        every = self.cfg.eval.every_env_steps
        if every and step // every != chunk_start_step // every and step < self.cfg.total_env_steps:
            self._evaluate()
            if self.cfg.eval.stop_on_solve and self.trainer.strategy.broadcast(self.solved, src=0):
                self.trainer.should_stop = True
        video_every = self.cfg.logger.video_every_env_steps
        if video_every and step // video_every != chunk_start_step // video_every:
            self._record_video()
        ckpt_every = self.cfg.checkpoint.every_env_steps
        if ckpt_every and step // ckpt_every != chunk_start_step // ckpt_every:
            self._save_checkpoint()

    def on_train_epoch_end(self) -> None:
        """Counters the caller reads back (also from a spawned rank 0), logged once: `self.log` costs
        ~1 ms a call. float64 keeps step counts exact past 2**24."""
        f64 = torch.float64
        self.log("env_steps", torch.tensor(self.global_env_steps, dtype=f64), logger=False)
        self.log("last_eval_step", torch.tensor(self.last_eval_step, dtype=f64), logger=False)

    def _log_episodes(self, step: int) -> None:
        """One point per chunk: the mean return and length of the episodes that ended in it, at the
        chunk's last step. A tabular learner ends thousands of episodes a second; one row each would
        flood the tracking store (and the chunk is at most a few hundred env steps for deep learners)."""
        if not self._pending_episodes:
            return
        _, rets, lens, raws = zip(*self._pending_episodes, strict=True)
        metrics = {
            "train/episode_return": float(np.mean(rets)),
            "train/episode_length": float(np.mean(lens)),
            "train/episodes": float(self.loop.episodes),
        }
        if self.cfg.reward.name != "env":  # the learner's return is shaped; the env's own is the one to compare
            metrics["train/episode_return_raw"] = float(np.mean(raws))
        self.writer.log(metrics, step)
        self._pending_episodes.clear()

    def _evaluate(self) -> None:
        step = self.global_env_steps
        self.last_eval_step = step
        if self.evaluator is None:
            return
        returns = self.evaluator.run(self.policy, self.device)
        self.last_eval_return = float(returns.mean())
        solved_at = self.spec.solved_return
        self.solved = solved_at is not None and self.last_eval_return >= solved_at
        if self.writer is not None:
            metrics = {"eval/return_mean": self.last_eval_return, "eval/return_std": float(returns.std())}
            if self.evaluator.success is not None:
                metrics["eval/success_rate"] = float(self.evaluator.success.mean())
            self.writer.log(metrics, step)

    def _record_video(self) -> None:
        """One greedy evaluation episode (the first evaluation seed), its raw rendered frames as
        `<run dir>/videos/step_<env step>.mp4` (a text agent's transcript: `transcripts/step_<env step>.txt`),
        logged under the same folder."""
        if self.video_env is None:
            return
        step = self.global_env_steps
        self._video_step = step
        policy, seed = self.policy, self.cfg.seed + EVAL_SEED_OFFSET
        stem = (
            Path(self.trainer.default_root_dir)
            / ("transcripts" if self.spec.is_text else "videos")
            / f"step_{step:09d}"
        )
        fps = frame_rate(self.video_env, self.cfg.env)
        was_training = policy.training
        policy.eval()
        try:
            episode, path = record_episode(
                self.video_env, policy, seed, stem, fps, self.spec.is_text, device=self.device
            )
        except OSError as ex:
            if disk_full_reason(ex) is None:
                raise
            raise DiskFull(stem.parent, what=f"at step {step} writing a video into") from ex
        finally:
            policy.train(was_training)
        if self.writer is not None:
            self.writer.client.log_artifact(self.writer.target.run_id, str(path), path.parent.name)
            self.writer.log({"video/return": episode.ret, "video/length": float(episode.length)}, step)

    def _check_replicas_in_sync(self) -> None:
        """DDP's promise, verified: every rank ends with bit-identical weights, or the run fails."""
        params = list(self.policy.parameters())
        flat = torch.cat([p.detach().flatten() for p in params])
        gathered = self.all_gather(flat)
        # Shared memory would make the ranks trivially equal (and step the weights once per rank).
        in_sync = bool((gathered == gathered[0]).all()) and not any(p.is_shared() for p in params)
        if self.writer is not None:
            self.writer.client.set_tag(self.writer.target.run_id, "ddp_replicas_in_sync", str(in_sync).lower())
        if not in_sync:
            raise RuntimeError("DDP replicas diverged: ranks hold different weights after training")
