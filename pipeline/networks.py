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

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.neck(features)
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
    module = net.encoder.backbone_module()
    base = lr * cfg.lr_mult
    if cfg.layer_decay is not None:
        from timm.optim import param_groups_layer_decay

        for i, g in enumerate(param_groups_layer_decay(module, weight_decay=0.0, layer_decay=cfg.layer_decay)):
            params = [p for p in g["params"] if p.requires_grad]
            if params:
                groups.append({"name": f"backbone.{i}", "params": params, "lr": base * g.get("lr_scale", 1.0)})
    else:
        params = [p for p in module.parameters() if p.requires_grad]
        if params:
            groups.append({"name": "backbone", "params": params, "lr": base})
    return [g for g in groups if g["params"]]
