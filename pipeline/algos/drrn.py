"""DQN on text: a DRRN (He et al., 2016) that scores each admissible command of a text state.

The same `algo=dqn|double_dqn` settings drive it as on arrays (ε schedule, replay, target syncs, Double
DQN's argmax/evaluate split, Huber loss, gradient clipping), all on the global env-step clock; what
changes is that the action set is a list of strings that differs from state to state. Replay keeps the
strings (`TextReplay`); a frozen encoder's embeddings come from its cache, so after the first visit a
state or command costs a lookup. The target's max runs over the next state's own command list.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.algos.base import EnvLoop, linear_schedule
from pipeline.algos.text_progress import TextProgress
from pipeline.backbones.text import apply_freeze, build_text_encoder
from pipeline.buffers import TextReplay
from pipeline.config import Config, DQNConfig
from pipeline.envs import EnvSpec
from pipeline.networks import param_groups
from pipeline.networks_text import DRRN, DRRNHead, set_argmax, set_max
from pipeline.optim import clip_grad_norm
from pipeline.prior import build_prior
from pipeline.tracking import RunTarget


def weights_cache_dir(cfg: Config) -> Path:
    return Path(cfg.paths.outputs) / "cache" / "weights"


class TextDQN(EnvLoop):
    def __init__(
        self, cfg: Config, spec: EnvSpec, run_target: RunTarget | None = None, weights_file: str | None = None
    ):
        super().__init__(cfg, spec, run_target)
        assert isinstance(cfg.algo, DQNConfig)
        self.a: DQNConfig = cfg.algo
        encoder = build_text_encoder(cfg.backbone, weights_file, weights_cache_dir(cfg))
        apply_freeze(encoder, cfg.backbone)
        prior = build_prior(self.a.prior)
        self.q_net = DRRN(encoder, hidden=cfg.backbone.embed_dim or 128, prior=prior, prior_weight=self.a.prior.weight)
        # The target: a copy of the head alone when the encoder is frozen (its embeddings are the online
        # ones, from the cache), else of the whole network.
        frozen = encoder.frozen
        self.target_head: DRRNHead | None = copy.deepcopy(self.q_net.head) if frozen else None
        self.target_net: DRRN | None = None
        if not frozen:
            self.target_net = DRRN(copy.deepcopy(encoder), hidden=cfg.backbone.embed_dim or 128)
            self.target_net.load_state_dict(self.q_net.state_dict(), strict=False)  # the prior acts, never targets
        for p in (self.target_head or self.target_net).parameters():
            p.requires_grad_(False)
        self.text_progress = TextProgress()

    @property
    def policy(self) -> DRRN:
        return self.q_net

    def epsilon(self, step: int) -> float:
        a = self.a
        return linear_schedule(a.eps_start, a.eps_end, a.eps_decay_steps, step)

    def vec_steps_per_chunk(self, world_size: int) -> int:
        return max(1, self.a.chunk_steps // (self.cfg.env.num_envs * world_size))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(param_groups(self.q_net, self.cfg.backbone, self.a.lr), lr=self.a.lr)

    def build_learner(self) -> None:
        self.buffer = TextReplay(self.a.buffer_size, seed=self.cfg.seed + self.global_rank)

    def start_learner(self) -> None:
        self.grad_params = [p for p in self.q_net.parameters() if p.requires_grad]
        self.q_net.eval()

    def train(self, mode: bool = True) -> TextDQN:
        super().train(mode)
        for target in (self.target_head, self.target_net):
            if target is not None:
                target.eval()
        return self

    def learner_state(self) -> dict[str, Any] | None:
        state: dict[str, Any] = self.text_progress.state()
        if self.cfg.checkpoint.buffer:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_learner_state(self, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
        self.text_progress.load(state)

    def start_metrics(self) -> dict[str, float]:
        return {"model/encoder_params": float(sum(p.numel() for p in self.q_net.encoder.parameters()))}

    # ----------------------------------------------------------------- the chunk
    def training_step(self, batch: Any, batch_idx: int) -> None:
        a = self.a
        per_vec = self.loop.steps_per_vec
        chunk_start_step = self.global_env_steps
        loss_sum, q_sum, n_updates = 0.0, 0.0, 0
        for _ in range(self.vec_steps_per_chunk(self.trainer.world_size)):
            if self.global_env_steps >= self.cfg.total_env_steps:
                break
            self._collect(self.epsilon(self.global_env_steps))
            step, prev = self.global_env_steps, self.global_env_steps - per_vec
            if step // a.target_update_interval != prev // a.target_update_interval:
                self._sync_target()
            rounds = step // a.train_freq - prev // a.train_freq
            if rounds and step >= a.learning_starts and len(self.buffer) >= a.batch_size:
                for _ in range(rounds * a.gradient_steps):
                    loss, q_mean = self._learn()
                    loss_sum += loss
                    q_sum += q_mean
                    n_updates += 1
        self.check_finite(torch.tensor(loss_sum + q_sum), "loss or Q-value", "lower algo.lr or algo.max_grad_norm")
        metrics = {"train/epsilon": self.epsilon(self.global_env_steps)}
        if n_updates:
            metrics["train/loss"] = loss_sum / n_updates
            metrics["train/q_mean"] = q_sum / n_updates
        metrics |= self.text_progress.metrics(self.q_net.cache)
        self.end_chunk(chunk_start_step, n_updates, metrics)

    def _collect(self, eps: float) -> None:
        states: list[str] = self.loop.obs
        sets = [list(s) for s in self.env.admissible]
        n = len(states)
        explore = self.rng.random(n) < eps
        greedy = self.q_net.act_text(states, sets) if not explore.all() else [0] * n
        actions = [
            int(self.rng.integers(len(s))) if e and s else g for e, s, g in zip(explore, sets, greedy, strict=True)
        ]
        next_obs, rewards, terminated, truncated, info = self.env.step(actions)
        done = terminated | truncated
        for i in range(n):
            if not sets[i]:
                continue
            if done[i]:
                next_state, next_set = info["final_obs"][i], info["final_admissible"][i]
            else:
                next_state, next_set = next_obs[i], self.env.admissible[i]
            command = sets[i][actions[i]]
            self.buffer.add(states[i], command, float(rewards[i]), bool(terminated[i]), next_state, next_set)
        if self.env.reports_wins:
            self.text_progress.note(info, done, self.global_env_steps + self.loop.steps_per_vec)
        self.record_step(next_obs, rewards, done, raw_rewards=info["raw_reward"])

    def _next_values(self, states: list[str], sets: list[list[str]]) -> torch.Tensor:
        """The bootstrap value of each next state over its own commands: the target's max, or with Double
        DQN the target's Q of the online argmax; 0 for a state with no commands."""
        n = len(states)
        if self.target_net is None:  # frozen encoder: one embedding lookup serves the target and online heads
            pairs = self.q_net.embed_pairs(states, sets)
            target_q = self.target_head(*pairs)
            online_q = self.q_net.head(*pairs) if self.a.double else None
        else:
            pairs = self.target_net.embed_pairs(states, sets)
            target_q = self.target_net.head(*pairs)
            online_q = self.q_net.q_values(states, sets)[0] if self.a.double else None
        owner = pairs[2]
        if online_q is None:
            return set_max(target_q, owner, n)
        best = set_argmax(online_q, owner, n)
        if target_q.numel() == 0:  # every next state terminal
            return target_q.new_zeros(n)
        return torch.where(best >= 0, target_q.index_select(0, best.clamp(min=0)), 0.0)

    def _learn(self) -> tuple[float, float]:
        a = self.a
        b = self.buffer.sample(a.batch_size)
        with torch.no_grad():  # before train(): targets without dropout, from the embedding caches
            next_v = self._next_values(b["next_states"], b["next_sets"])
            not_done = (~b["terminated"]).float().to(next_v.device)
            target = b["rewards"].to(next_v.device) + a.gamma * not_done * next_v
        self.q_net.train()
        q, _ = self.q_net.q_values(b["states"], [[act] for act in b["actions"]])
        loss = F.huber_loss(q, target, delta=a.huber_delta)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        clip_grad_norm(self.grad_params, a.max_grad_norm)
        self.optimizer.step()
        self.q_net.eval()
        self.loop.updates += 1
        return float(loss.detach()), float(q.detach().mean())

    @torch.no_grad()
    def _sync_target(self) -> None:
        source, dest = (self.q_net.head, self.target_head) if self.target_net is None else (self.q_net, self.target_net)
        online = source.state_dict()
        for name, t in dest.state_dict().items():
            if self.a.tau >= 1.0 or not t.is_floating_point():
                t.copy_(online[name])
            else:
                t.lerp_(online[name], self.a.tau)
