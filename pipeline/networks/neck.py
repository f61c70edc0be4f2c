"""Features → embedding, shared by every head: a 1x1-conv projection of a spatial map, a linear
projection, LayerNorm."""

from __future__ import annotations

from torch import nn

from pipeline.config.backbone import BackboneConfig


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
