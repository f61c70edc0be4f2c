"""Backbones: the feature extractor a head sits on (MLP, Nature CNN, or any timm model).

A backbone is an `nn.Module` with an `out_dim` attribute that maps a *preprocessed* float batch to
`[batch, out_dim]` features. Preprocessing (uint8 → float, the model's own mean/std) is a separate
module, `ObsPreprocess`, so it runs once, on the device, inside the network.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torch import nn

from pipeline.config import BackboneConfig
from pipeline.envs import EnvSpec
from pipeline.errors import ConfigError, one_line


class ObsPreprocess(nn.Module):
    """uint8 frames → float in [0, 1] → (x - mean) / std per channel; vectors pass through as float."""

    def __init__(self, is_image: bool, mean: list[float] | None = None, std: list[float] | None = None):
        super().__init__()
        self.is_image = is_image
        channels = len(mean) if mean else 0
        self.register_buffer("mean", torch.tensor(mean or [], dtype=torch.float32).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(std or [], dtype=torch.float32).view(1, channels, 1, 1))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float()
        if self.is_image:
            x = x / 255.0
            if self.mean.numel():
                x = (x - self.mean) / self.std
        return x


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden_sizes: list[int], flatten: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()] if flatten else []
        for size in hidden_sizes:
            layers += [nn.Linear(in_dim, size), nn.ReLU()]
            in_dim = size
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NatureCNN(nn.Module):
    """The convolutional torso of Mnih et al. (2015), sized from the actual input."""

    def __init__(self, in_shape: tuple[int, ...], features_dim: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_shape[0], 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.convs(torch.zeros(1, *in_shape)).shape[1]
        self.fc = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())
        self.out_dim = features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x))


class TimmBackbone(nn.Module):
    """Any timm model with its classifier removed; the pooled features are the embedding."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.out_dim = int(model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def _load_local_weights(module: nn.Module, path: str) -> None:
    try:
        module.load_state_dict(_load_state_dict(path), strict=True)
    except Exception as ex:
        raise ConfigError(f"backbone.weights={path}: cannot load into this backbone ({one_line(ex)})") from None


def _check_hub(name: str, timeout_s: float = 1.5) -> None:
    """Fail in seconds, not after timm's retries, when the hub cannot be reached and we are not offline."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return  # timm reads the local cache and fails at once if the weights are not there
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
    except OSError as ex:
        raise ConfigError(
            f"backbone.pretrained=true: the Hugging Face hub is unreachable ({ex.strerror or ex}) for {name}; "
            "pass a local file with backbone.weights=/path/to/weights.safetensors "
            "(or set HF_HUB_OFFLINE=1 to use weights already in your cache)"
        ) from None


def _build_timm(cfg: BackboneConfig, spec: EnvSpec) -> tuple[nn.Module, list[float], list[float]]:
    import timm

    if not timm.is_model(cfg.name):
        close = timm.list_models(f"*{cfg.name.split('_')[0]}*")[:5]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ConfigError(f"backbone.name={cfg.name}: not a timm model{hint}; see timm.list_models()")
    in_chans = spec.obs_shape[0]
    kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
    if cfg.weights:
        kwargs["pretrained_cfg_overlay"] = {"file": cfg.weights}
    pretrained = bool(cfg.pretrained or cfg.weights)
    if cfg.pretrained:
        _check_hub(cfg.name)
    try:
        model = timm.create_model(cfg.name, pretrained=pretrained, **kwargs)
    except Exception as ex:
        if cfg.weights:
            raise ConfigError(f"backbone.weights={cfg.weights}: cannot load ({one_line(ex)})") from None
        raise ConfigError(
            f"backbone.pretrained=true: cannot fetch {cfg.name} weights from the hub ({type(ex).__name__}); "
            "offline, pass a local file with backbone.weights=/path/to/weights.safetensors"
        ) from None
    data_cfg = model.pretrained_cfg
    rgb_mean = list(data_cfg.get("mean", (0.485, 0.456, 0.406)))
    rgb_std = list(data_cfg.get("std", (0.229, 0.224, 0.225)))
    # Grayscale frames and frame stacks: every channel gets the average RGB statistics.
    mean = [sum(rgb_mean) / len(rgb_mean)] * in_chans if in_chans != len(rgb_mean) else rgb_mean
    std = [sum(rgb_std) / len(rgb_std)] * in_chans if in_chans != len(rgb_std) else rgb_std
    return TimmBackbone(model), mean, std


def build_backbone(cfg: BackboneConfig, spec: EnvSpec) -> tuple[ObsPreprocess, nn.Module]:
    """Return (preprocessing, backbone) for this env; weights loaded, nothing re-initialised later."""
    if cfg.weights and not Path(cfg.weights).is_file():
        raise ConfigError(f"backbone.weights={cfg.weights}: no such file; give the path of a .pth/.safetensors")
    if cfg.name == "mlp":
        n_in = 1
        for dim in spec.obs_shape:
            n_in *= dim
        backbone: nn.Module = MLP(n_in, list(cfg.hidden_sizes), flatten=len(spec.obs_shape) > 1)
        preprocess = ObsPreprocess(is_image=False)
    elif cfg.name == "nature_cnn":
        backbone = NatureCNN(spec.obs_shape, cfg.features_dim)
        preprocess = ObsPreprocess(is_image=True)
    else:
        backbone, mean, std = _build_timm(cfg, spec)
        preprocess = ObsPreprocess(is_image=True, mean=mean, std=std)
    if cfg.weights and cfg.name in ("mlp", "nature_cnn"):
        _load_local_weights(backbone, cfg.weights)
    if cfg.freeze == "all":
        backbone.requires_grad_(False)
    return preprocess, backbone
