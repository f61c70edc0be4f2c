"""Heads on a backbone. The Q-network is also the policy that MLflow logs and serves.

A network is `encoder` (backbone with its preprocessing; possibly frozen) then `head` (a small
projection, the LayerNorm'd embedding, then the output layer). Head initialisation is PyTorch's
default on the head's own layers only: nothing here touches the encoder's weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pipeline.backbones import Encoder, build_backbone
from pipeline.config import BackboneConfig
from pipeline.envs import EnvSpec


def neck(cfg: BackboneConfig, feature_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """Features → embedding: 1x1-conv projection of a spatial map (never a flatten of the full map),
    optional linear projection, LayerNorm. Returns the module and the embedding size."""
    layers: list[nn.Module] = []
    if len(feature_shape) == 3:  # a spatial map (backbone.pool=conv)
        c, h, w = feature_shape
        layers += [nn.Conv2d(c, cfg.pool_channels, 1), nn.ReLU(), nn.Flatten()]
        dim = cfg.pool_channels * h * w
    else:
        dim = int(feature_shape[0])
    if cfg.embed_dim:
        layers.append(nn.Linear(dim, cfg.embed_dim))
        dim = cfg.embed_dim
    if cfg.layer_norm:
        layers.append(nn.LayerNorm(dim))
    if cfg.embed_dim:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers), dim


class QHead(nn.Module):
    """Embedding → Q-values. Dueling (Wang et al., 2016): Q = V + A - mean(A), from two linear streams."""

    def __init__(self, cfg: BackboneConfig, feature_shape: tuple[int, ...], n_actions: int, dueling: bool = False):
        super().__init__()
        self.neck, dim = neck(cfg, feature_shape)
        self.out = nn.Linear(dim, n_actions)
        self.value = nn.Linear(dim, 1) if dueling else None
        self._has_neck = len(self.neck) > 0  # an empty neck is skipped: a module call costs ~4 µs

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.neck(features) if self._has_neck else features
        if self.value is None:
            return self.out(z)
        advantage = self.out(z)
        return self.value(z) + advantage - advantage.mean(dim=-1, keepdim=True)


class QNetwork(nn.Module):
    """Raw observation batch → Q-values, one per action. `act` is the greedy policy."""

    def __init__(self, encoder: Encoder, head: QHead):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward(obs).argmax(dim=-1)


def build_q_network(
    cfg: BackboneConfig, spec: EnvSpec, weights_file: str | None = None, dueling: bool = False
) -> QNetwork:
    encoder = build_backbone(cfg, spec, weights_file)
    return QNetwork(encoder, QHead(cfg, encoder.out_shape, spec.n_actions, dueling))


def target_copy(net: QNetwork) -> QNetwork:
    """The target network: a frozen encoder is shared (it computes the same function), the rest copied."""
    target = QNetwork(net.encoder, copy.deepcopy(net.head)) if net.encoder.frozen else copy.deepcopy(net)
    return target.requires_grad_(False).eval()


def param_groups(net: QNetwork, cfg: BackboneConfig, lr: float) -> list[dict]:
    """Optimiser groups: the head at `lr`; the backbone at `lr * backbone.lr_mult`, scaled per stage by
    `backbone.layer_decay` (timm's layer grouping) when set. Frozen parameters are left out."""
    groups: list[dict] = [{"name": "head", "params": [p for p in net.head.parameters() if p.requires_grad], "lr": lr}]
    return [g for g in groups if g["params"]] + encoder_param_groups(net.encoder, cfg, lr, "backbone")


class ActorCritic(nn.Module):
    """Raw observation batch → action logits (`forward`, the served policy) and V(s) (`value`).

    `critic` says where the value function's features come from: `shared` (the actor's encoder, one
    pass, trained by both losses), `separate` (its own copy of the backbone, same weights source and
    fine-tuning policy), or `same-as-actor-frozen` (a frozen copy of the actor's backbone as loaded:
    the pretrained model itself is the value-function approximator while the actor fine-tunes)."""

    def __init__(self, encoder: Encoder, actor: QHead, critic_encoder: Encoder | None, critic: QHead):
        super().__init__()
        self.encoder = encoder
        self.actor = actor
        self.critic_encoder = critic_encoder  # None: shared with the actor
        self.critic = critic

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.encoder(obs))

    def logits_and_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(obs)
        critic_features = features if self.critic_encoder is None else self.critic_encoder(obs)
        return self.actor(features), self.critic(critic_features).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder if self.critic_encoder is None else self.critic_encoder
        return self.critic(encoder(obs)).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward(obs).argmax(dim=-1)

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
    cfg: BackboneConfig, spec: EnvSpec, critic: str, weights_file: str | None = None, ortho_init: bool = True
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
    return ActorCritic(encoder, actor_head, critic_encoder, critic_head)


def encoder_param_groups(encoder: Encoder, cfg: BackboneConfig, lr: float, prefix: str) -> list[dict]:
    """One encoder's trainable parameters at `lr * backbone.lr_mult`, per stage with `layer_decay`."""
    module = encoder.backbone_module()
    base = lr * cfg.lr_mult
    groups: list[dict] = []
    if cfg.layer_decay is not None:
        from timm.optim import param_groups_layer_decay

        for i, g in enumerate(param_groups_layer_decay(module, weight_decay=0.0, layer_decay=cfg.layer_decay)):
            params = [p for p in g["params"] if p.requires_grad]
            groups.append({"name": f"{prefix}.{i}", "params": params, "lr": base * g.get("lr_scale", 1.0)})
    else:
        groups.append({"name": prefix, "params": [p for p in module.parameters() if p.requires_grad], "lr": base})
    return [g for g in groups if g["params"]]


def actor_critic_param_groups(net: ActorCritic, cfg: BackboneConfig, lr: float) -> list[dict]:
    heads = [p for h in net.heads() for p in h.parameters() if p.requires_grad]
    groups = [{"name": "heads", "params": heads, "lr": lr}]
    for i, encoder in enumerate(net.encoders()):
        groups += encoder_param_groups(encoder, cfg, lr, "backbone" if i == 0 else "critic_backbone")
    return groups


def merge_equal_lr(groups: list[dict]) -> list[dict]:
    """Groups that share a learning rate, as one: a fused Adam step per group costs ~30 µs of overhead,
    paid on every update of a small network."""
    merged: dict[float, dict] = {}
    for g in groups:
        into = merged.setdefault(g["lr"], {"name": g["name"], "params": [], "lr": g["lr"]})
        if into["params"]:
            into["name"] += f"+{g['name']}"
        into["params"] += g["params"]
    return list(merged.values())
