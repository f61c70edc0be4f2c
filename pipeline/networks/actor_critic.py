"""Actor-critic on a backbone: action logits, or the mean of a diagonal Gaussian over continuous actions (a
state-independent log-std beside it), and V(s), the critic's features from the actor's encoder, its own copy,
or a frozen copy of the pretrained one."""

from __future__ import annotations

import copy

import torch
from torch import nn

from pipeline.backbones.encoder import Encoder, build_backbone
from pipeline.config.backbone import BackboneConfig
from pipeline.core.spec import EnvSpec
from pipeline.networks.groups import encoder_param_groups
from pipeline.networks.normalize import RunningNorm
from pipeline.networks.q import QHead


class ActorCritic(nn.Module):
    """Raw observation batch → action logits (`forward`, the served policy) and V(s) (`value`).

    `critic` says where the value function's features come from: `shared` (the actor's encoder, one
    pass, trained by both losses), `separate` (its own copy of the backbone, same weights source and
    fine-tuning policy), or `same-as-actor-frozen` (a frozen copy of the actor's backbone as loaded:
    the pretrained model itself is the value-function approximator while the actor fine-tunes)."""

    def __init__(
        self,
        encoder: Encoder,
        actor: QHead,
        critic_encoder: Encoder | None,
        critic: QHead,
        spec: EnvSpec | None = None,
        log_std_init: float = 0.0,
        normalize_obs: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.actor = actor
        self.critic_encoder = critic_encoder  # None: shared with the actor
        self.critic = critic
        # `algo.normalize_obs`: state vectors standardised by running statistics (updated by the learner after
        # each update, so a rollout and its epochs see the same statistics); part of the served policy.
        self.obs_norm = RunningNorm(spec.obs_shape) if normalize_obs and spec is not None else None
        # Continuous actions: the actor outputs the Gaussian's mean; `forward` serves it clipped to the bounds.
        self.continuous = spec is not None and spec.continuous
        self.log_std: nn.Parameter | None = None
        if self.continuous:
            assert spec is not None
            self.log_std = nn.Parameter(torch.full((spec.n_actions,), float(log_std_init)))
            self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32))
            self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32))

    def normalized(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.obs_norm is None else self.obs_norm(obs.float())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs = self.normalized(obs)
        out = self.actor(self.encoder(obs))
        return torch.clamp(out, self.action_low, self.action_high) if self.continuous else out

    def logits_and_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = self.normalized(obs)
        features = self.encoder(obs)
        critic_features = features if self.critic_encoder is None else self.critic_encoder(obs)
        return self.actor(features), self.critic(critic_features).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        obs = self.normalized(obs)
        encoder = self.encoder if self.critic_encoder is None else self.critic_encoder
        return self.critic(encoder(obs)).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward(obs) if self.continuous else self.forward(obs).argmax(dim=-1)

    def heads(self) -> list[nn.Module]:
        return [self.actor, self.critic]

    def encoders(self) -> list[Encoder]:
        return [self.encoder] if self.critic_encoder is None else [self.encoder, self.critic_encoder]


def orthogonal_init_(head: nn.Module, out_gain: float) -> None:
    """Orthogonal weights, zero biases (Engstrom et al., 2020's PPO detail) on one head's own layers:
    gain √2 inside, `out_gain` on its output layer. Encoders are never passed here."""
    layers = [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for i, layer in enumerate(layers):
        is_out = i == len(layers) - 1 or (getattr(head, "value", None) is layer)
        nn.init.orthogonal_(layer.weight, gain=out_gain if is_out else 2**0.5)
        nn.init.zeros_(layer.bias)


def build_actor_critic(
    cfg: BackboneConfig,
    spec: EnvSpec,
    critic: str,
    weights_file: str | None = None,
    ortho_init: bool = True,
    log_std_init: float = 0.0,
    normalize_obs: bool = False,
) -> ActorCritic:
    encoder = build_backbone(cfg, spec, weights_file)
    if critic == "shared":
        critic_encoder = None
    elif critic == "separate":
        critic_encoder = build_backbone(cfg, spec, weights_file)
    else:  # same-as-actor-frozen
        critic_encoder = copy.deepcopy(encoder)
        critic_encoder.requires_grad_(False)
        critic_encoder.frozen = True  # Encoder.train keeps a frozen encoder in eval mode (BN, dropout)
        critic_encoder.eval()
    actor_head = QHead(cfg, encoder.out_shape, spec.n_actions)
    critic_head = QHead(cfg, (critic_encoder or encoder).out_shape, 1)
    if ortho_init:
        orthogonal_init_(actor_head, out_gain=0.01)  # near-uniform initial policy
        orthogonal_init_(critic_head, out_gain=1.0)
    return ActorCritic(encoder, actor_head, critic_encoder, critic_head, spec, log_std_init, normalize_obs)


def actor_critic_param_groups(net: ActorCritic, cfg: BackboneConfig, lr: float) -> list[dict]:
    heads = [p for h in net.heads() for p in h.parameters() if p.requires_grad]
    log_std = getattr(net, "log_std", None)  # a Gaussian policy's (text actor-critics have none)
    if log_std is not None:
        heads.append(log_std)
    groups = [{"name": "heads", "params": heads, "lr": lr}]
    for i, encoder in enumerate(net.encoders()):
        groups += encoder_param_groups(encoder, cfg, lr, "backbone" if i == 0 else "critic_backbone")
    return groups
