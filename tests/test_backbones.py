"""Weights from a local file load bit-exactly, through timm as well; head init leaves them alone."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.config import to_config
from pipeline.envs import probe_env
from pipeline.networks import build_q_network
from tests.conftest import compose_cfg


def _build(overrides: list[str], outputs: Path):
    cfg = to_config(compose_cfg(overrides, outputs))
    return build_q_network(cfg.backbone, probe_env(cfg.env))


def test_mlp_weights_file_loads_exactly(outputs: Path, tmp_path: Path) -> None:
    source = _build([], outputs)
    path = tmp_path / "mlp.pth"
    torch.save(source.backbone.state_dict(), path)
    loaded = _build([f"backbone.weights={path}"], outputs)
    for (name, a), b in zip(source.backbone.state_dict().items(), loaded.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_timm_weights_file_loads_exactly_and_can_be_frozen(outputs: Path, tmp_path: Path) -> None:
    import timm

    reference = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=4)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    net = _build(["backbone=resnet18", f"backbone.weights={path}", "backbone.freeze=all"], outputs)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(net.backbone.model.state_dict()[name], tensor), name
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for p in net.head.parameters())
    net.train()
    assert not net.backbone.training  # a frozen backbone keeps its BatchNorm statistics
    q = net(torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8))
    assert q.shape == (2, 2) and torch.isfinite(q).all()
