"""Heads on a backbone. The Q-network is also the policy that MLflow logs and serves."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.backbones import ObsPreprocess, build_backbone
from pipeline.config import BackboneConfig
from pipeline.envs import EnvSpec


class QNetwork(nn.Module):
    """Raw observation batch → Q-values, one per action. `act` is the greedy policy."""

    def __init__(self, preprocess: ObsPreprocess, backbone: nn.Module, n_actions: int, freeze_backbone: bool):
        super().__init__()
        self.preprocess = preprocess
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, n_actions)
        self.freeze_backbone = freeze_backbone
        # No initialisation code touches the backbone: it keeps the weights it was built with.

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.preprocess(obs)))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward(obs).argmax(dim=-1)

    def train(self, mode: bool = True) -> QNetwork:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # a frozen backbone keeps its BatchNorm statistics
        return self


def build_q_network(cfg: BackboneConfig, spec: EnvSpec) -> QNetwork:
    preprocess, backbone = build_backbone(cfg, spec)
    return QNetwork(preprocess, backbone, spec.n_actions, freeze_backbone=cfg.freeze == "all")
