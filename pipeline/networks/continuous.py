"""Networks for continuous actions with twin Q critics (SAC, TD3): an actor (tanh-squashed Gaussian or
deterministic) and two critics Q(s, a), on a backbone.

Two layouts, chosen by the observations:
- **images**: one encoder (the backbone) shared by actor and critics. The critics' loss trains it; the actor
  reads its features detached (SAC-AE / DrQ): the actor's gradient through a shared encoder destabilises it.
  Actor and each critic have their own neck and `algo.hidden_sizes` MLP on the features. A frozen encoder's
  features can be cached in the replay buffer, so updates run the heads alone.
- **state vectors**: the actor and each critic own a backbone (SB3's and CleanRL's layout: no shared trunk);
  a critic's backbone reads [state, action].

Actions live in [-1, 1]^A inside the learner (buffer, losses); `forward` maps the actor's mean action to the
env's bounds, so the logged MLflow model outputs actions the env accepts.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbones.encoder import Encoder, build_backbone
from pipeline.config.backbone import BackboneConfig
from pipeline.core.spec import EnvSpec
from pipeline.networks.groups import encoder_param_groups
from pipeline.networks.neck import neck

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's clamp of the actor's log-std
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def mlp(in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(in_dim, size), nn.ReLU()]
        in_dim = size
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Features → (mean, log-std) of the pre-tanh Gaussian; `log_std` is None for a deterministic actor (TD3)."""

    def __init__(self, pre: nn.Module, in_dim: int, hidden: list[int], n_actions: int, gaussian: bool):
        super().__init__()
        self.pre = pre
        self.body = mlp(in_dim, hidden, 2 * n_actions if gaussian else n_actions)
        self.n_actions = n_actions
        self.gaussian = gaussian

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.body(self.pre(z))
        if not self.gaussian:
            return out, None
        mean, log_std = out.split(self.n_actions, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


class Critic(nn.Module):
    """(features, action) → Q: the action joins after the neck (images) or at the input (state vectors)."""

    def __init__(self, pre: nn.Module, body: nn.Module):
        super().__init__()
        self.pre = pre
        self.body = body

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([self.pre(z), action], dim=-1)).squeeze(-1)


def squashed_sample(mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A reparameterised sample tanh(u), u ~ N(mean, std), and its log-density with tanh's change of
    variables (the numerically stable form: log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)))."""
    std = log_std.exp()
    noise = torch.randn_like(mean)
    u = mean + std * noise
    logp = (-0.5 * noise.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
    logp = logp - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), logp


class ContinuousActorCritic(nn.Module):
    """Raw observation batch → the actor's mean action in the env's bounds (`forward`, the served policy);
    `encode`, `actor` and `critics` for the learner."""

    def __init__(self, encoder: Encoder | None, actor: Actor, critics: nn.ModuleList, spec: EnvSpec):
        super().__init__()
        self.shared_encoder = encoder  # images: shared by actor and critics; state vectors: None (each owns one)
        self.shared = encoder is not None
        self.actor = actor
        self.critics = critics
        low = torch.tensor(spec.action_low, dtype=torch.float32)
        high = torch.tensor(spec.action_high, dtype=torch.float32)
        self.register_buffer("action_mid", (high + low) / 2)
        self.register_buffer("action_half", (high - low) / 2)

    @property
    def encoder(self) -> Encoder:
        """The backbone a run saves as its weights: the shared one, or the actor's own."""
        return self.shared_encoder if self.shared_encoder is not None else self.actor.pre

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """What the heads read and the feature cache stores: the shared encoder's features, or the raw state."""
        return self.shared_encoder(obs) if self.shared_encoder is not None else obs.float().flatten(1)

    def actor_out(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.actor(z)

    def to_env(self, unit_action: torch.Tensor) -> torch.Tensor:
        return self.action_mid + self.action_half * unit_action

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        mean, _ = self.actor_out(self.encode(obs))
        return self.to_env(torch.tanh(mean))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward(obs)

    def q_values(self, z: torch.Tensor, action: torch.Tensor, critics: nn.ModuleList | None = None) -> torch.Tensor:
        """[2, B]: both critics' Q(s, a) (`critics`: the target copies)."""
        return torch.stack([c(z, action) for c in (critics if critics is not None else self.critics)])

    def encoders(self) -> list[Encoder]:
        if self.shared_encoder is not None:
            return [self.shared_encoder]
        return [self.actor.pre, *(c.body[0] for c in self.critics)]


def build_continuous_actor_critic(
    cfg: BackboneConfig, spec: EnvSpec, hidden: list[int], gaussian: bool, weights_file: str | None = None
) -> ContinuousActorCritic:
    a = spec.n_actions
    encoder = build_backbone(cfg, spec, weights_file)
    if spec.is_image:
        actor_neck, dim = neck(cfg, encoder.out_shape)
        actor = Actor(actor_neck, dim, hidden, a, gaussian)
        critics = []
        for _ in range(2):
            critic_neck, dim = neck(cfg, encoder.out_shape)
            critics.append(Critic(critic_neck, mlp(dim + a, hidden, 1)))
        return ContinuousActorCritic(encoder, actor, nn.ModuleList(critics), spec)
    actor = Actor(encoder, encoder.out_dim, [], a, gaussian)
    # A critic's backbone reads [state, action]: the same architecture, its own (fresh) weights.
    state_action = dataclasses.replace(
        spec, obs_shape=(int(np.prod(spec.obs_shape)) + a,), obs_dtype=np.dtype(np.float32)
    )
    fresh = dataclasses.replace(cfg, weights=None, pretrained=False, freeze="none")
    critics = []
    for _ in range(2):
        body = build_backbone(fresh, state_action)
        critics.append(Critic(nn.Identity(), nn.Sequential(body, nn.Linear(body.out_dim, 1))))
    return ContinuousActorCritic(None, actor, nn.ModuleList(critics), spec)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: a copy whose parameters take no gradient (DDP's reducer and optimisers skip it)."""
    return copy.deepcopy(module).requires_grad_(False).eval()


def actor_param_groups(net: ContinuousActorCritic, cfg: BackboneConfig, lr: float) -> list[dict]:
    """The actor's head, and on state vectors its own backbone (at `lr * backbone.lr_mult`)."""
    head = [p for p in net.actor.body.parameters() if p.requires_grad]
    groups = [{"name": "actor", "params": head, "lr": lr}]
    if not net.shared:
        groups += encoder_param_groups(net.actor.pre, cfg, lr, "actor_backbone")
    else:  # the actor's own neck
        groups[0]["params"] += [p for p in net.actor.pre.parameters() if p.requires_grad]
    return groups


def critic_param_groups(net: ContinuousActorCritic, cfg: BackboneConfig, lr: float) -> list[dict]:
    """Both critics, and a shared image encoder (trained by the critics' loss alone)."""
    groups = [{"name": "critics", "params": [p for p in net.critics.parameters() if p.requires_grad], "lr": lr}]
    if net.shared:
        groups += encoder_param_groups(net.encoder, cfg, lr, "backbone")
    return [g for g in groups if g["params"]]
