"""The encoder a head sits on: our own networks (MLP, Nature CNN, small CNN) or any timm model.

`build_backbone` returns an `Encoder`: raw observation batch → features, with the preprocessing
(uint8 → [0, 1] → the model's own mean/std, optional resize to its pretrained input size) inside it,
so it runs once, on the device. The fine-tuning policy (what is frozen, what BatchNorm does) is set
here and kept by `Encoder.train`, so "frozen" stays frozen whatever calls `.train()`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbones.own import MLP, NatureCNN, SmallCNN
from pipeline.backbones.policy import BN_TYPES, frozen_names
from pipeline.config.backbone import OWN_BACKBONES, BackboneConfig
from pipeline.core.errors import ConfigError, one_line
from pipeline.core.spec import EnvSpec

log = logging.getLogger(__name__)


class Encoder(nn.Module):
    """obs → features: a vector [B, D], or a spatial map [B, C, h, w] when a conv projection follows."""

    def __init__(
        self,
        body: nn.Module,
        spec: EnvSpec,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        per_frame: int = 0,
        resize: tuple[int, int] | None = None,
        pool: bool = False,
    ):
        super().__init__()
        self.body = body
        self.is_image = spec.is_image
        self.per_frame = per_frame  # >0: each of this many stacked frames is encoded on its own (as RGB)
        self.resize = resize
        self.pool = pool
        n = len(mean) if mean else 0
        self.register_buffer("mean", torch.tensor(mean or [], dtype=torch.float32).view(1, n, 1, 1))
        self.register_buffer("std", torch.tensor(std or [], dtype=torch.float32).view(1, n, 1, 1))
        self.frozen = False  # every parameter fixed and no BatchNorm adapting: a pure function of obs
        self._eval_modules: list[nn.Module] = []  # kept in eval mode whatever .train() is asked
        with torch.no_grad():
            was = self.training
            self.eval()
            probe = torch.from_numpy(np.zeros((1, *spec.obs_shape), dtype=spec.obs_dtype))
            self.out_shape: tuple[int, ...] = tuple(self.forward(probe).shape[1:])
            self.train(was)

    @property
    def out_dim(self) -> int:
        return int(torch.tensor(self.out_shape).prod())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float()
        if not self.is_image:
            return self.body(x)
        x = x / 255.0
        batch = x.shape[0]
        if self.per_frame:
            x = x.reshape(batch * self.per_frame, 1, *x.shape[2:]).expand(-1, 3, -1, -1)
        if self.mean.numel():
            x = (x - self.mean) / self.std
        if self.resize is not None:
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False)
        f = self.body(x)
        if self.pool and f.dim() == 4:
            f = f.mean(dim=(2, 3))
        if self.per_frame:
            f = f.reshape(batch, self.per_frame * f.shape[1], *f.shape[2:])
        return f

    def backbone_module(self) -> nn.Module:
        """The module whose state dict is 'the backbone weights' (timm's own key names for timm models)."""
        return getattr(self.body, "model", self.body)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode and not self.frozen)  # a frozen encoder: dropout and statistics fixed too
        for module in self._eval_modules:
            module.eval()
        return self


def _own(cfg: BackboneConfig, spec: EnvSpec) -> nn.Module:
    if cfg.name == "mlp":
        n_in = int(torch.tensor(spec.obs_shape).prod())
        return MLP(n_in, list(cfg.hidden_sizes), flatten=len(spec.obs_shape) > 1, activation=cfg.activation)
    if len(spec.obs_shape) != 3:
        raise ConfigError(
            f"backbone={cfg.name}: takes image-like observations [C, H, W], this env gives {spec.obs_shape}; "
            "use backbone=mlp or env.obs_mode=pixels"
        )
    if cfg.name == "nature_cnn":
        if min(spec.obs_shape[1:]) < 36:
            raise ConfigError(
                f"backbone=nature_cnn: its 8x8/4 convs need frames of at least 36x36, this env gives "
                f"{spec.obs_shape[1:]}; use backbone=small_cnn"
            )
        return NatureCNN(spec.obs_shape, cfg.features_dim)
    return SmallCNN(spec.obs_shape, list(cfg.channels), cfg.features_dim)


def apply_policy(encoder: Encoder, cfg: BackboneConfig) -> None:
    """Freeze what `backbone.freeze` says; BatchNorm as `backbone.bn` says; remember what stays in eval."""
    module = encoder.backbone_module()
    params = list(module.named_parameters())
    frozen = frozen_names(
        params,
        cfg,
        lambda: ", ".join(n for n, m in module.named_children() if any(True for _ in m.parameters())),
    )
    bn = cfg.bn if cfg.bn != "auto" else ("frozen" if cfg.has_weights else "train")
    eval_modules: list[nn.Module] = []
    for name, sub in module.named_modules():
        if not isinstance(sub, BN_TYPES):
            continue
        own = [f"{name}.{p}" if name else p for p, _ in sub.named_parameters(recurse=False)]
        in_frozen_part = bool(own) and all(p in frozen for p in own)
        if bn in ("frozen", "adapt"):
            frozen.update(own)  # affine parameters fixed; `adapt` still updates the statistics
        if bn == "frozen" or (in_frozen_part and bn != "adapt"):
            eval_modules.append(sub)
    for name, p in params:
        p.requires_grad_(name not in frozen)
    encoder._eval_modules = eval_modules
    all_fixed = all(not p.requires_grad for p in module.parameters())
    adapting = bn == "adapt" and any(isinstance(m, BN_TYPES) for m in module.modules())
    encoder.frozen = all_fixed and not adapting


def _image_stats(data_cfg: dict, channels: int) -> tuple[list[float], list[float]]:
    """The model's own mean/std; for grayscale frames or frame stacks every channel gets the RGB average."""
    mean = [float(v) for v in data_cfg.get("mean", (0.485, 0.456, 0.406))]
    std = [float(v) for v in data_cfg.get("std", (0.229, 0.224, 0.225))]
    if channels == len(mean):
        return mean, std
    return [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels


def build_backbone(cfg: BackboneConfig, spec: EnvSpec, weights_file: str | None = None) -> Encoder:
    """The encoder for this env, weights loaded and the fine-tuning policy applied; nothing re-initialises it
    later. `weights_file` is `backbone.weights` resolved to a local file (see `weights.resolve`)."""
    if weights_file is None and cfg.weights:
        from pipeline.backbones.weights import needs_resolving, resolve

        if needs_resolving(cfg.weights):
            raise ValueError("an MLflow/packaged source must be resolved to a file first: pass weights_file")
        weights_file = str(resolve(cfg.weights, "", Path()))
    if cfg.name in OWN_BACKBONES:
        body = _own(cfg, spec)
        if weights_file is not None:
            from pipeline.backbones.weights import load_into

            load_into(body, Path(weights_file), cfg.weights or weights_file)
        encoder = Encoder(body, spec, pool=True)
    else:
        if not spec.is_image:
            raise ConfigError(f"backbone={cfg.name}: timm models take images; this env gives {spec.obs_shape}")
        encoder = _timm_encoder(cfg, spec, weights_file)
    apply_policy(encoder, cfg)
    return encoder


def _timm_encoder(cfg: BackboneConfig, spec: EnvSpec, weights_file: str | None) -> Encoder:
    """A timm model on these frames. Some families take only sizes their strides or windows divide, only
    their own input size (fixed position embeddings), or only RGB: where the frames as configured fail,
    the model is rebuilt with frames resized on the device to the next multiple of 32, then to its own
    input size, then with each stacked frame encoded as RGB; `cfg` records what was used (the run logs it).
    `backbone.resize=true` resizes to `backbone.input_size`, or to the model's pretrained size when null."""
    from pipeline.backbones import timm as timm_backbone

    stacked = spec.frame_stack > 1
    frame = max(spec.obs_shape[1:])
    # (resize, input_size) to try: as configured, then the next multiple of 32, then the model's own size
    sizes = [(cfg.resize, cfg.input_size)]
    if not cfg.resize:
        sizes += [(True, -(-frame // 32) * 32)] if frame % 32 else []
        sizes += [(True, None)]
    stacks = [cfg.stack] + (["shared"] if stacked and cfg.stack == "channels" else [])
    first_error: Exception | None = None
    for stack in stacks:
        for resize, input_size in sizes:
            per_frame = spec.frame_stack if (stack == "shared" and stacked) else 0
            in_chans = 3 if per_frame else spec.obs_shape[0]
            body, data_cfg = timm_backbone.create(cfg, in_chans, weights_file)
            mean, std = _image_stats(data_cfg, in_chans)
            size = None if not resize else (input_size, input_size) if input_size else data_cfg["input_size"][-2:]
            try:
                shape = tuple(size) if size else None
                encoder = Encoder(body, spec, mean, std, per_frame=per_frame, resize=shape, pool=cfg.pool == "avg")
            except Exception as ex:  # the probe forward at the frame size: try the next way to feed it
                first_error = first_error or ex
                continue
            if (stack, resize, input_size) != (cfg.stack, cfg.resize, cfg.input_size):
                used = f"backbone.stack={stack}"
                if size:
                    used += f" backbone.resize=true backbone.input_size={input_size or 'null'} ({size[0]}x{size[1]})"
                why = one_line(first_error)[:120] if first_error else ""
                log.warning(
                    "backbone.name=%s cannot take %s frames as configured (%s); using %s",
                    cfg.name,
                    "x".join(map(str, spec.obs_shape)),
                    why,
                    used,
                )
                cfg.stack, cfg.resize, cfg.input_size = stack, resize, input_size
            return encoder
    assert first_error is not None
    raise ConfigError(
        f"backbone.name={cfg.name}: timm builds it, but it cannot encode {'x'.join(map(str, spec.obs_shape))} "
        f"frames, resized or not ({one_line(first_error)[:200]}); pick another model"
    )
