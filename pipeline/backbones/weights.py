"""Where backbone weights come from, and how they are fitted into a freshly built backbone.

Sources (`backbone.weights`): a local `.safetensors` / `.pth` / `.pt` file, or an MLflow URI —
`runs:/<run_id>/<path>` or `models:/<name>/<version>` — naming a weights file or a model directory
that holds one (every run of this pipeline logs `weights/backbone.safetensors`, and the same file
inside its logged model). Hub weights (`backbone.pretrained=true`) are timm's own code, in `timm.py`.

Loading is strict about what matters and says what it did: every parameter of the backbone must be
filled with a tensor of the right shape; a classifier or stages beyond a `feature_layer` cut in the
file are skipped; a first convolution trained on RGB is adapted to grayscale or frame stacks the way
timm adapts it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from pipeline.core.errors import ConfigError, one_line

log = logging.getLogger(__name__)

BACKBONE_FILE = "backbone.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
URI_SCHEMES = ("runs:/", "models:/")


def is_mlflow_uri(weights: str) -> bool:
    return weights.startswith(URI_SCHEMES)


def needs_resolving(weights: str) -> bool:
    """Sources that become a local file only with the run's store or cache (see `resolve`)."""
    return weights.startswith((*URI_SCHEMES, "packaged:"))


def resolve(weights: str, tracking_uri: str, cache_dir: Path) -> Path:
    """A local weights file for `backbone.weights`: the path itself, the file an MLflow URI names, or
    (`packaged:tf_efficientnet_lite0`) the packaged EfficientNet-Lite0 converted once into the cache; for
    text backbones a Hugging Face folder (`packaged:all-minilm-l6-v2` is the packaged MiniLM, extracted)."""
    if weights.startswith("packaged:"):
        from pipeline.backbones.packaged import resolve_packaged

        return resolve_packaged(weights, cache_dir)
    if not is_mlflow_uri(weights):
        path = Path(weights).expanduser()
        if path.is_dir() and (path / "config.json").is_file():  # a Hugging Face model folder
            return path
        if not path.is_file():
            raise ConfigError(
                f"backbone.weights={weights}: no such file; give a .safetensors/.pth path or an MLflow URI "
                "(runs:/<run_id>/weights/backbone.safetensors, models:/<name>/<version>)"
            )
        return path
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    dest = cache_dir / weights.replace(":/", "_").replace("/", "_")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=weights, dst_path=str(dest)))
    except Exception as ex:
        raise ConfigError(
            f"backbone.weights={weights}: cannot fetch it from the MLflow store {tracking_uri} ({one_line(ex)}); "
            "check the run id / model name and logger.tracking_uri"
        ) from None
    if local.is_file():
        return local
    found = sorted(local.rglob(BACKBONE_FILE)) or sorted(p for p in local.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    if len(found) != 1:
        what = "no weights file" if not found else f"{len(found)} weights files"
        raise ConfigError(
            f"backbone.weights={weights}: {what} under that URI; name the file, e.g. runs:/<id>/weights/{BACKBONE_FILE}"
        )
    return found[0]


EXPECTED = (
    "expected a safetensors file, a torch state dict (.pt/.pth written by torch.save) or an MLflow URI "
    "(runs:/<id>/weights/backbone.safetensors, models:/<name>/<version>)"
)


def describe_file(path: Path) -> str:
    """What a file looks like from its size and first bytes, for an error message."""
    from pipeline.core.errors import human_bytes

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as ex:
        return f"unreadable ({ex.strerror or ex})"
    if not head:
        return "an empty file"
    kinds = (
        (b"PK\x03\x04", "a zip archive"),
        (b"\x1f\x8b", "gzip-compressed data"),
        (b"\x89HDF", "an HDF5 file (Keras weights?)"),
        (b"\x80", "a Python pickle, not a torch file"),
        (b"<", "HTML or XML (a saved web page?)"),
    )
    kind = next((k for magic, k in kinds if head.startswith(magic)), None)
    if kind is None and len(head) >= 9 and head[8:9] == b"{":
        kind = "a safetensors header"
    if kind is None:
        try:
            text = head.decode("utf-8")
            kind = f"text starting {text[:32]!r}" if text.isprintable() or text.strip() else None
        except UnicodeDecodeError:
            kind = None
    return f"{human_bytes(size)} of {kind or 'binary data starting 0x' + head[:8].hex()}"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file; unwraps {'state_dict': ...} / {'model': ...} and DDP's 'module.' prefix."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise ConfigError(
            f"backbone.weights={path}: not a weights file this pipeline reads; {EXPECTED}; "
            f"this file is {describe_file(path)}"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        held = f"a {type(state).__name__}"
        if isinstance(state, dict):
            odd = next(k for k, v in state.items() if not isinstance(v, torch.Tensor))
            held = f"a dict whose {odd!r} is a {type(state[odd]).__name__}"
        raise ConfigError(f"backbone.weights={path}: expected a dict of tensors (a state dict), this file holds {held}")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_into(module: nn.Module, path: Path, source: str, first_conv: str | None = None) -> None:
    """Fill every tensor of `module` from the file; refuse a file that leaves any of them unset."""
    state = read_state_dict(path)
    own = module.state_dict()
    if first_conv and f"{first_conv}.weight" in state and f"{first_conv}.weight" in own:
        key = f"{first_conv}.weight"
        want, have = own[key].shape[1], state[key].shape[1]
        if want != have:
            from timm.models import adapt_input_conv

            try:
                state[key] = adapt_input_conv(want, state[key])
            except NotImplementedError:
                raise ConfigError(
                    f"backbone.weights={source}: its first conv takes {have} channels, this backbone {want}, "
                    "and only RGB weights can be adapted; match env.frame_stack / backbone.stack to the run "
                    "that saved them"
                ) from None
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(
            f"backbone.weights={source}: lacks {len(missing)} of this backbone's tensors (first: {missing[0]}); "
            "it was saved from a different model or a shallower backbone.feature_layer"
        )
    wrong = [k for k in own if state[k].shape != own[k].shape]
    if wrong:
        k = wrong[0]
        raise ConfigError(
            f"backbone.weights={source}: {k} has shape {tuple(state[k].shape)}, this backbone needs "
            f"{tuple(own[k].shape)}; it was saved from a different model or configuration"
        )
    skipped = [k for k in state if k not in own]
    module.load_state_dict({k: state[k] for k in own}, strict=True)
    if skipped:
        log.info(
            "backbone.weights=%s: %d tensors not used by this backbone (e.g. %s)", source, len(skipped), skipped[0]
        )


def check_hub(name: str, timeout_s: float = 1.5) -> None:
    """Fail in seconds, not after the hub client's retries, when the hub cannot be reached."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return  # timm reads the local cache only, and fails at once if the weights are not there
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
    except OSError as ex:
        raise ConfigError(
            f"backbone.pretrained=true: the Hugging Face hub is unreachable ({ex.strerror or ex}) for {name}; "
            "pass a local file with backbone.weights=/path/to/weights.safetensors "
            "(or set HF_HUB_OFFLINE=1 to use weights already in your cache)"
        ) from None
