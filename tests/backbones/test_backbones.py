"""Backbones: every config builds and trains; weights load from files and MLflow URIs (made here) and
stay untouched by head construction; freeze and BatchNorm policies hold bit-exactly through training;
the frozen-feature cache gives the Q-values of the uncached path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.config.load import to_config
from pipeline.core.errors import ConfigError
from pipeline.envs import make_vector_env, probe_env
from pipeline.networks.q import build_q_network, param_groups, target_copy
from tests.conftest import CONF, TINY, compose_cfg, run_cli

TEXT_CONFIGS = ("minilm", "bow", "hf")  # text encoders: tests/backbones/test_text_encoders.py
TIMM_CONFIGS = sorted(
    p.stem
    for p in (CONF / "backbone").glob("*.yaml")
    if p.stem not in ("mlp", "nature_cnn", "small_cnn", *TEXT_CONFIGS)
)
PIXEL_ENV = ["env=minatar_breakout", "env.obs_mode=pixels", "env.frame_size=64"]
CHUNK = [  # one training chunk with a few gradient steps
    "total_env_steps=64",
    "algo.learning_starts=32",
    "algo.batch_size=8",
    "algo.chunk_steps=64",
    "eval.every_env_steps=0",
    "eval.episodes=1",
    "checkpoint.every_env_steps=0",
    "env.max_episode_steps=50",
    "logger=none",
    "progress=false",
]


def _cfg(overrides: list[str], outputs: Path):
    return to_config(compose_cfg(overrides, outputs))


def _build(overrides: list[str], outputs: Path):
    cfg = _cfg(overrides, outputs)
    return build_q_network(cfg.backbone, probe_env(cfg.env))


def _save_random(name: str, path: Path, **kwargs) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(1)
    state = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).state_dict()
    # Like trained weights: non-default BatchNorm statistics (so "kept" and "reset" are told apart), and
    # no zero-initialised BN scales (timm zero-inits each block's last one, which would stop gradients).
    bump = {"running_mean": 0.01, "running_var": 0.5}
    bn_scales = {k.replace("running_mean", "weight") for k in state if k.endswith("running_mean")}
    state = {k: (v + bump.get(k.rsplit(".", 1)[-1], 0)).contiguous() for k, v in state.items()}
    state |= {k: torch.ones_like(state[k]) for k in bn_scales}
    save_file(state, str(path))
    return state


def _train(overrides: list[str], outputs: Path) -> dict[str, torch.Tensor]:
    """A real (tiny) run; returns the trained network's state from its last checkpoint."""
    from pipeline.run.job import run_job

    result = run_job(compose_cfg([*overrides, *CHUNK], outputs), outputs / "run")
    ckpt = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {k.removeprefix("q_net."): v for k, v in ckpt["state_dict"].items() if k.startswith("q_net.")}


@pytest.mark.parametrize("backbone", ["mlp", "nature_cnn", "small_cnn", *TIMM_CONFIGS])
def test_every_backbone_config_trains_a_chunk_on_pixels(backbone: str, outputs: Path) -> None:
    from pipeline.run.job import run_job

    overrides = [f"backbone={backbone}", *PIXEL_ENV, *CHUNK]
    result = run_job(compose_cfg(overrides, outputs), outputs / "run")
    assert result.env_steps == 64 and np.isfinite(result.eval_return_mean)


def test_weights_files_load_bit_exactly_and_head_init_leaves_them(outputs: Path, tmp_path: Path) -> None:
    state = _save_random("resnet18", tmp_path / "r18.safetensors")
    net = _build(["backbone=resnet18", f"backbone.weights={tmp_path / 'r18.safetensors'}", *PIXEL_ENV], outputs)
    loaded = net.encoder.backbone_module().state_dict()
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    # .pth of our own backbone, with the DDP prefix some trainers leave
    source = _build(["backbone=small_cnn", *PIXEL_ENV], outputs)
    own = source.encoder.backbone_module().state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in own.items()}}, tmp_path / "cnn.pth")
    again = _build(["backbone=small_cnn", f"backbone.weights={tmp_path / 'cnn.pth'}", *PIXEL_ENV], outputs)
    for name, tensor in own.items():
        assert torch.equal(again.encoder.backbone_module().state_dict()[name], tensor), name


def test_rgb_weights_adapt_to_frame_stacks_and_bad_files_are_refused(outputs: Path, tmp_path: Path) -> None:
    state = _save_random("resnet18", tmp_path / "r18.safetensors")
    stacked = _build(
        ["backbone=resnet18", f"backbone.weights={tmp_path / 'r18.safetensors'}", "env=cartpole_pixels"], outputs
    )
    conv = stacked.encoder.backbone_module().conv1.weight
    assert conv.shape[1] == 4  # timm's in_chans adaptation of the RGB kernel
    rgb = state["conv1.weight"]  # timm: RGB kernels repeated over the 4 channels, scaled by 3/4
    assert torch.allclose(conv, rgb[:, [0, 1, 2, 0]] * 3 / 4)
    shared = _build(
        [
            "backbone=resnet18",
            f"backbone.weights={tmp_path / 'r18.safetensors'}",
            "env=cartpole_pixels",
            "backbone.stack=shared",
        ],
        outputs,
    )
    assert torch.equal(shared.encoder.backbone_module().conv1.weight, state["conv1.weight"])  # RGB kept as is
    assert shared.encoder.out_shape == (4 * 512,)  # one encoder per frame, features concatenated
    broken = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    save_file(broken, str(tmp_path / "short.safetensors"))
    with pytest.raises(ConfigError, match=r"lacks \d+ of this backbone's tensors \(first: layer4"):
        _build(["backbone=resnet18", f"backbone.weights={tmp_path / 'short.safetensors'}", *PIXEL_ENV], outputs)
    # ...but a backbone cut after stage 2 needs none of layer3/4
    cut = _build(
        [
            "backbone=resnet18",
            f"backbone.weights={tmp_path / 'short.safetensors'}",
            "backbone.feature_layer=2",
            *PIXEL_ENV,
        ],
        outputs,
    )
    assert cut.encoder.out_shape == (128,)
    with pytest.raises(ConfigError, match=r"backbone\.weights=.*no such file"):
        _build(["backbone=resnet18", f"backbone.weights={tmp_path / 'missing.pth'}", *PIXEL_ENV], outputs)


def test_feature_layer_with_conv_projection_stays_small(outputs: Path) -> None:
    net = _build(["backbone=resnet18", "backbone.feature_layer=3", "backbone.pool=conv", *PIXEL_ENV], outputs)
    assert len(net.encoder.out_shape) == 3  # the spatial map is kept
    head_params = sum(p.numel() for p in net.head.parameters())
    assert head_params < 500_000, head_params  # 1x1 conv to 32 channels, never a flatten of the full map
    q = net(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
    assert q.shape == (2, 3)
    assert isinstance(net.head.neck[-2], torch.nn.LayerNorm)  # the embedding is normalised before the head


def test_mlflow_uris_seed_a_backbone_from_an_earlier_run(outputs: Path) -> None:
    import mlflow

    from pipeline.run.job import run_job

    first = run_job(compose_cfg(["backbone=small_cnn", *PIXEL_ENV, *TINY], outputs), outputs / "first")
    saved = load_file(str(first.run_dir / "weights" / "backbone.safetensors"))
    uri = f"runs:/{first.run_id}/weights/backbone.safetensors"
    from pipeline.run.session import weights_file

    cfg = _cfg(["backbone=small_cnn", f"backbone.weights={uri}", *PIXEL_ENV], outputs)
    net = build_q_network(cfg.backbone, probe_env(cfg.env), weights_file(cfg))
    for name, tensor in saved.items():
        assert torch.equal(net.encoder.backbone_module().state_dict()[name], tensor), name
    mlflow.set_tracking_uri(f"sqlite:///{outputs}/mlflow.db")
    version = mlflow.register_model(first.model_uri, "cnn-backbone").version
    cfg = _cfg(["backbone=small_cnn", f"backbone.weights=models:/cnn-backbone/{version}", *PIXEL_ENV], outputs)
    net = build_q_network(cfg.backbone, probe_env(cfg.env), weights_file(cfg))
    for name, tensor in saved.items():
        assert torch.equal(net.encoder.backbone_module().state_dict()[name], tensor), name
    cfg = _cfg(
        ["backbone=small_cnn", "backbone.weights=runs:/0123456789abcdef/weights/x.safetensors", *PIXEL_ENV], outputs
    )
    with pytest.raises(ConfigError, match=r"backbone\.weights=runs:/0123456789abcdef.*cannot fetch it"):
        weights_file(cfg)


def test_hub_offline_fails_with_one_line_naming_the_local_file_option(
    outputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's path: HF_HUB_OFFLINE=1 (set by run_cli) and an empty cache; nothing is written."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    proc = run_cli(["backbone=resnet18", "backbone.pretrained=true", *PIXEL_ENV], outputs, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot fetch resnet18 weights from the hub" in lines[0], proc.stderr
    assert "backbone.weights=/path/to/weights.safetensors" in lines[0]
    assert list(outputs.iterdir()) == []


def _bn_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith(prefix) and ("bn" in k or "downsample.1" in k)}


def test_frozen_backbone_is_bit_identical_after_training(outputs: Path, tmp_path: Path) -> None:
    weights = tmp_path / "r18.safetensors"
    saved = _save_random("resnet18", weights, in_chans=3)
    trained = _train(["backbone=resnet18", f"backbone.weights={weights}", "backbone.freeze=all", *PIXEL_ENV], outputs)
    body = {k.removeprefix("encoder.body.model."): v for k, v in trained.items() if k.startswith("encoder.body.model.")}
    assert set(body) == set(saved)
    for name, tensor in saved.items():  # parameters and BatchNorm buffers, num_batches_tracked included
        assert torch.equal(body[name], tensor), name
    head = [k for k in trained if k.startswith("head.")]
    assert head  # the head did train (checked against construction in the BN test below)


@pytest.mark.parametrize(
    ("policy", "stats_move", "affine_moves"),
    [("frozen", False, False), ("adapt", True, False), ("train", True, True)],
)
def test_batchnorm_policies_while_fine_tuning(
    policy: str, stats_move: bool, affine_moves: bool, outputs: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "r18.safetensors"
    saved = _save_random("resnet18", weights)
    fine_tune = ["backbone=resnet18", "backbone.freeze=none", f"backbone.weights={weights}"]  # not auto's CPU freeze
    trained = _train([*fine_tune, f"backbone.bn={policy}", *PIXEL_ENV], outputs)
    body = {k.removeprefix("encoder.body.model."): v for k, v in trained.items() if k.startswith("encoder.body.model.")}
    assert not torch.equal(body["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])  # it fine-tuned
    stats_changed = not torch.equal(body["bn1.running_mean"], saved["bn1.running_mean"])
    affine_changed = not torch.equal(body["bn1.weight"], saved["bn1.weight"])
    assert (stats_changed, affine_changed) == (stats_move, affine_moves)


def test_partial_freeze_keeps_the_stages_up_to_the_named_one(outputs: Path, tmp_path: Path) -> None:
    weights = tmp_path / "r18.safetensors"
    saved = _save_random("resnet18", weights)
    overrides = [
        "backbone=resnet18",
        f"backbone.weights={weights}",
        "backbone.freeze=partial",
        "backbone.freeze_until=layer2",
    ]
    trained = _train([*overrides, "backbone.bn=train", *PIXEL_ENV], outputs)
    body = {k.removeprefix("encoder.body.model."): v for k, v in trained.items() if k.startswith("encoder.body.model.")}
    for name, tensor in saved.items():
        frozen = name.startswith(("conv1", "bn1", "layer1.", "layer2."))
        if frozen or "num_batches" not in name:
            assert torch.equal(body[name], tensor) == frozen, name
    with pytest.raises(
        ConfigError, match=r"freeze_until=layer9: no such stage in resnet18; its stages in order: conv1"
    ):
        _build([*overrides[:3], "backbone.freeze_until=layer9", *PIXEL_ENV], outputs)


def test_learning_rates_per_group(outputs: Path, tmp_path: Path) -> None:
    weights = tmp_path / "r18.safetensors"
    _save_random("resnet18", weights)
    fine_tune = ["backbone=resnet18", "backbone.freeze=none", f"backbone.weights={weights}"]
    cfg = _cfg([*fine_tune, "backbone.lr_mult=0.1", *PIXEL_ENV], outputs)
    net = build_q_network(cfg.backbone, probe_env(cfg.env))
    groups = {g["name"]: g["lr"] for g in param_groups(net, cfg.backbone, 1e-3)}
    assert groups == {"head": 1e-3, "backbone": pytest.approx(1e-4)}
    cfg = _cfg(["backbone=resnet18", "backbone.freeze=none", "backbone.layer_decay=0.5", *PIXEL_ENV], outputs)
    net = build_q_network(cfg.backbone, probe_env(cfg.env))
    lrs = [g["lr"] for g in param_groups(net, cfg.backbone, 1e-3) if g["name"] != "head"]
    assert max(lrs) == pytest.approx(1e-3) and min(lrs) <= 1e-3 * 0.5**8  # the top block at full lr, the stem slowest
    n_params = sum(len(g["params"]) for g in param_groups(net, cfg.backbone, 1e-3))
    assert n_params == sum(1 for p in net.parameters() if p.requires_grad)


def test_feature_cache_gives_the_q_values_of_the_uncached_path(outputs: Path, tmp_path: Path) -> None:
    """The same transitions through both buffers: cached features → head equals frames → full network,
    for obs and next obs (time-limit finals included); the target network shares the frozen encoder."""
    from pipeline.algos.buffers import ReplayBuffer

    weights = tmp_path / "r18.safetensors"
    _save_random("resnet18", weights)
    cfg = _cfg(
        [
            "backbone=resnet18",
            f"backbone.weights={weights}",
            "backbone.freeze=all",
            "env=cartpole_pixels",
            "env.max_episode_steps=12",
            "env.num_envs=2",
        ],
        outputs,
    )
    spec = probe_env(cfg.env)
    net = build_q_network(cfg.backbone, spec).eval()
    target = target_copy(net)
    assert net.encoder.frozen and target.encoder is net.encoder and target.head is not net.head
    frames = ReplayBuffer(100, spec.obs_shape, spec.obs_dtype, 2, spec.frame_stack, seed=5)
    feats = ReplayBuffer(100, net.encoder.out_shape, torch.float32, 2, 1, seed=5)
    env = make_vector_env(cfg.env, 2)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        for _ in range(30):
            actions = rng.integers(0, 2, size=2)
            next_obs, rewards, terminated, truncated, info = env.step(actions)
            cut = np.flatnonzero(truncated & ~terminated)
            finals = {int(i): info["final_obs"][i] for i in cut}
            frames.add(obs, actions, rewards, terminated, truncated, finals)
            feat_finals = {i: net.encoder(torch.as_tensor(f[None]))[0] for i, f in finals.items()}
            feats.add(net.encoder(torch.as_tensor(obs)), actions, rewards, terminated, truncated, feat_finals)
            obs = next_obs
    env.close()
    assert frames.finals, "the time limit must have cut an episode"
    a, b = frames.sample(32, 2), feats.sample(32, 2)
    with torch.inference_mode():
        for i in range(2):
            torch.testing.assert_close(net(a.obs[i]), net.head(b.obs[i]), rtol=1e-5, atol=1e-5)
            live = a.terminated[i] == 0
            torch.testing.assert_close(
                target(a.next_obs[i])[live], target.head(b.next_obs[i])[live], rtol=1e-5, atol=1e-5
            )
    assert feats.bytes_per_transition() < frames.bytes_per_transition()
