"""The Q-network: encoder (the backbone with its preprocessing; possibly frozen) then head (the neck, then
one Q-value per action; dueling optional). It is also the policy that MLflow logs and serves. Head
initialisation is PyTorch's default on the head's own layers only: nothing here touches the encoder."""

from __future__ import annotations

import copy

import torch
from torch import nn

from pipeline.backbones.encoder import Encoder, build_backbone
from pipeline.config.backbone import BackboneConfig
from pipeline.core.spec import EnvSpec
from pipeline.networks.groups import encoder_param_groups
from pipeline.networks.neck import neck


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
