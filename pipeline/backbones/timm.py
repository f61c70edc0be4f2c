"""Any timm model as a backbone: classifier removed, optionally cut after a stage (keeping the spatial
map), with weights from the hub (timm's own loading) or from a file fitted by `weights.load_into`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.backbones.weights import check_hub, load_into
from pipeline.config.backbone import BackboneConfig
from pipeline.core.errors import ConfigError, one_line


class TimmBody(nn.Module):
    """timm model → pooled features [B, D], or the map after stage `feature_layer` [B, C, h, w]."""

    def __init__(self, model: nn.Module, feature_layer: int | None):
        super().__init__()
        self.model = model
        self.feature_layer = feature_layer
        if feature_layer is not None:
            model.prune_intermediate_layers(indices=[feature_layer], prune_head=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_layer is None:
            return self.model(x)
        return self.model.forward_intermediates(x, indices=[self.feature_layer], intermediates_only=True)[-1]


def _no_such_model(name: str) -> ConfigError:
    import timm

    close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
    hint = f" (close: {', '.join(close)})" if close else ""
    return ConfigError(f"backbone.name={name}: not a timm model{hint}; see timm.list_models()")


def create(cfg: BackboneConfig, in_chans: int, weights_file: str | None) -> tuple[TimmBody, dict]:
    """Build the model and load its weights; returns the body and the model's pretrained config."""
    import timm

    if not timm.is_model(cfg.name):
        raise _no_such_model(cfg.name)
    kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
    optional: dict = {}
    if timm.get_pretrained_cfg(cfg.name) is not None and timm.get_pretrained_cfg(cfg.name).fixed_input_size:
        # ViT-style models: position embeddings follow the frame size; frames not divisible by the
        # patch size are padded. Only some families take these keywords: the others are built without.
        optional = {"dynamic_img_size": True, "dynamic_img_pad": True}
    if cfg.pretrained:
        check_hub(cfg.name)
    try:
        try:
            model = timm.create_model(cfg.name, pretrained=cfg.pretrained, **kwargs, **optional)
        except TypeError as ex:
            if not optional or not any(f"'{k}'" in str(ex) for k in optional):
                raise
            model = timm.create_model(cfg.name, pretrained=cfg.pretrained, **kwargs)
    except Exception as ex:
        if cfg.pretrained:
            raise ConfigError(
                f"backbone.pretrained=true: cannot fetch {cfg.name} weights from the hub ({type(ex).__name__}); "
                "offline, pass a local file with backbone.weights=/path/to/weights.safetensors"
            ) from None
        raise ConfigError(f"backbone.name={cfg.name}: timm cannot build it ({one_line(ex)})") from None
    data_cfg = dict(model.pretrained_cfg)
    n_stages = len(model.feature_info) if hasattr(model, "feature_info") else None
    if cfg.feature_layer is not None:
        if not hasattr(model, "forward_intermediates"):
            raise ConfigError(f"backbone.feature_layer={cfg.feature_layer}: timm cannot cut {cfg.name}; set it to null")
        if n_stages is not None and not 0 <= cfg.feature_layer < n_stages:
            raise ConfigError(
                f"backbone.feature_layer={cfg.feature_layer}: {cfg.name} has stages 0..{n_stages - 1}; "
                "pick one of them or null (the pooled output)"
            )
    body = TimmBody(model, cfg.feature_layer)
    if weights_file is not None:  # after the cut: a file needs only the stages the body keeps
        load_into(model, Path(weights_file), cfg.weights or weights_file, first_conv=data_cfg.get("first_conv"))
    return body, data_cfg
