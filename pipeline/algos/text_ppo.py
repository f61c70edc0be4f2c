"""PPO and REINFORCE on text envs: a softmax over each state's admissible commands.

The policy scores every (state, command) pair with the DRRN head (the same encoder embeds both) and the
critic reads the state embedding. Command lists differ in length, so a minibatch's scores are padded
into [batch, longest list] with a large negative number: padded commands get probability 0 (and add 0
to the entropy) and PolicyGradient's PPO losses apply unchanged. The rollout keeps the strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.algos.policy_gradient import PolicyGradient
from pipeline.algos.text_progress import TextProgress
from pipeline.backbones.text import apply_freeze, build_text_encoder
from pipeline.config.root import Config
from pipeline.core.paths import weights_cache
from pipeline.core.spec import EnvSpec
from pipeline.networks.text import DRRN
from pipeline.tracking.metrics import RunTarget

PAD_LOGIT = -1e9  # a padded command: probability 0, entropy term 0 (not -inf, whose 0 * -inf is NaN)


@dataclass
class TextBatch:
    """States and their command lists; indexable by a tensor of positions, like an observation tensor."""

    states: list[str]
    sets: list[list[str]]

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, index: torch.Tensor) -> TextBatch:
        rows = index.tolist()
        return TextBatch([self.states[i] for i in rows], [self.sets[i] for i in rows])


class TextActorCritic(DRRN):
    """DRRN scores as logits over each state's commands, and V(s) from the state embedding."""

    def __init__(self, encoder: nn.Module, hidden: int = 128):
        super().__init__(encoder, hidden)
        self.critic = nn.Sequential(nn.Linear(encoder.out_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def logits_and_value(self, batch: TextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        counts = [len(s) for s in batch.sets]
        state_emb, action_emb, owner = self.embed_pairs(batch.states, batch.sets)
        scores = self.head(state_emb, action_emb, owner)
        logits = scores.new_full((len(counts), max(counts)), PAD_LOGIT)
        column = torch.cat([torch.arange(c, device=scores.device) for c in counts])
        logits[owner, column] = scores
        return logits, self.critic(state_emb).squeeze(-1)

    def value(self, states: list[str]) -> torch.Tensor:
        return self.critic(self.embed(list(states))).squeeze(-1)

    def heads(self) -> list[nn.Module]:
        return [self.head, self.critic]

    def encoders(self) -> list[nn.Module]:  # what actor_critic_param_groups puts at backbone.lr_mult
        return [self.encoder]


class TextPolicyGradient(PolicyGradient):
    """PPO / REINFORCE over admissible commands. Everything else (GAE, clipping, schedules, KL stop, DDP)
    is PolicyGradient's; the hooks below swap the array rollout for strings."""

    def __init__(
        self, cfg: Config, spec: EnvSpec, run_target: RunTarget | None = None, weights_file: str | None = None
    ):
        super().__init__(cfg, spec, run_target, weights_file)
        self.text_progress = TextProgress()

    def _build_net(self, weights_file: str | None) -> TextActorCritic:  # type: ignore[override]
        encoder = build_text_encoder(self.cfg.backbone, weights_file, weights_cache(self.cfg.paths.outputs))
        apply_freeze(encoder, self.cfg.backbone)
        return TextActorCritic(encoder, hidden=self.cfg.backbone.embed_dim or 128)

    def start_metrics(self) -> dict[str, float]:
        return {"model/encoder_params": float(sum(p.numel() for p in self.net.encoder.parameters()))}

    def learner_state(self) -> dict[str, Any] | None:
        return self.text_progress.state()

    def load_learner_state(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.text_progress.load(state)

    @torch.inference_mode()
    def _policy_step(self, obs: list[str]) -> tuple[TextBatch, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch = TextBatch(list(obs), [list(s) for s in self.env.admissible])
        logits, value = self.net.logits_and_value(batch)
        logp_all = F.log_softmax(logits.float(), dim=-1)
        actions = torch.distributions.Categorical(logits=logp_all).sample()
        return batch, actions, (logp_all.gather(1, actions.unsqueeze(1)).squeeze(1), value.float())

    @torch.inference_mode()
    def _values(self, obs: Any) -> np.ndarray:
        return self.net.value([str(s) for s in obs]).float().cpu().numpy()

    def _empty_rollout_obs(self, steps: int, num_envs: int) -> list[TextBatch]:
        return []  # one TextBatch per vector step

    def _store_obs(self, t: int, x: TextBatch) -> None:
        del self.rollout_obs[t:]  # a new rollout starts at t = 0
        self.rollout_obs.append(x)

    def _rollout_obs(self, t: int) -> TextBatch:
        steps = self.rollout_obs[:t]  # [t][num_envs], flattened in the same order as the tensors' reshape
        return TextBatch([s for b in steps for s in b.states], [a for b in steps for a in b.sets])

    def _after_step(self, info: dict[str, Any], done: np.ndarray) -> None:
        if self.env.reports_wins:
            self.text_progress.note(info, done, self.global_env_steps + self.loop.steps_per_vec)

    def _update(self, t: int, advantages: np.ndarray, returns: np.ndarray) -> dict[str, float]:
        return super()._update(t, advantages, returns) | self.text_progress.metrics(self.net.cache)
