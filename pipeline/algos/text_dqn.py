"""DQN on text: a DRRN (He et al., 2016) that scores each admissible command of a text state.

The same `algo=dqn|double_dqn` settings drive it as on arrays (ε schedule, replay, target syncs, Double
DQN's argmax/evaluate split, Huber loss, gradient clipping), all on the global env-step clock; what
changes is that the action set is a list of strings that differs from state to state. Replay keeps the
strings (`TextReplay`); a frozen encoder's embeddings come from its cache, so after the first visit a
state or command costs a lookup. The target's max runs over the next state's own command list.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.algos.buffers import TextReplay
from pipeline.algos.dqn import ValueLearner
from pipeline.algos.optim import clip_grad_norm
from pipeline.algos.text_prior import build_prior
from pipeline.algos.text_progress import TextProgress
from pipeline.backbones.text import apply_freeze, build_text_encoder
from pipeline.config.root import Config
from pipeline.core.paths import weights_cache
from pipeline.core.spec import EnvSpec
from pipeline.networks.q import param_groups
from pipeline.networks.text import DRRN, DRRNHead, set_argmax, set_max
from pipeline.tracking.metrics import RunTarget


class TextDQN(ValueLearner):
    def __init__(
        self, cfg: Config, spec: EnvSpec, run_target: RunTarget | None = None, weights_file: str | None = None
    ):
        super().__init__(cfg, spec, run_target)
        encoder = build_text_encoder(cfg.backbone, weights_file, weights_cache(cfg.paths.outputs))
        apply_freeze(encoder, cfg.backbone)
        prior = build_prior(self.algo.prior)
        self.q_net = DRRN(
            encoder, hidden=cfg.backbone.embed_dim or 128, prior=prior, prior_weight=self.algo.prior.weight
        )
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

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(param_groups(self.q_net, self.cfg.backbone, self.algo.lr), lr=self.algo.lr)

    def build_learner(self) -> None:
        self.buffer = TextReplay(self.algo.buffer_size, seed=self.cfg.seed + self.global_rank)

    def start_learner(self) -> None:
        self.grad_params = [p for p in self.q_net.parameters() if p.requires_grad]
        self._min_fill = self.algo.batch_size
        self.q_net.eval()

    def chunk_metrics(self) -> dict[str, float]:
        return self.text_progress.metrics(self.q_net.cache)

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
            online_q = self.q_net.head(*pairs) if self.algo.double else None
        else:
            pairs = self.target_net.embed_pairs(states, sets)
            target_q = self.target_net.head(*pairs)
            online_q = self.q_net.q_values(states, sets)[0] if self.algo.double else None
        owner = pairs[2]
        if online_q is None:
            return set_max(target_q, owner, n)
        best = set_argmax(online_q, owner, n)
        if target_q.numel() == 0:  # every next state terminal
            return target_q.new_zeros(n)
        return torch.where(best >= 0, target_q.index_select(0, best.clamp(min=0)), 0.0)

    def _learn(self, n_updates: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """`n_updates` gradient steps, each on its own sampled batch of strings."""
        sums = torch.zeros(3, device=self.device)
        for _ in range(n_updates):
            sums += torch.stack(self._learn_one())
        return sums[0], sums[1], sums[2], n_updates

    def _learn_one(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = self.algo
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
        gnorm = clip_grad_norm(self.grad_params, a.max_grad_norm)
        self.optimizer.step()
        self.q_net.eval()
        self.loop.updates += 1
        return loss.detach(), q.detach().mean(), gnorm.detach().to(loss.device)

    def _sync_pair(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """A frozen encoder: the heads (its embeddings are shared, from the cache); else the networks."""
        if self.target_net is None:
            return self.q_net.head, self.target_head
        return self.q_net, self.target_net
