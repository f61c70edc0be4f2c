"""Any timm model is a backbone: one small model of every timm family (random weights) builds on rendered
CartPole frames (4 stacked 84x84 grayscale), encodes them, acts and takes a DQN gradient step. Families
that take only their own input size or RGB get frames resized / encoded per frame, and say so.

FAMILIES holds the smallest model of each family of timm 1.0.31, by parameter count (counted on the meta
device over `timm.list_models(module=...)`); a family this list does not know (a newer timm) is tested
with its first model, under -m slow. Families above 12 M parameters run under -m slow too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config.load import to_config
from pipeline.envs import make_vector_env, probe_env
from pipeline.networks.q import build_q_network, param_groups, target_copy
from tests.conftest import compose_cfg

FAMILIES: dict[str, tuple[str, float]] = {  # timm module: (smallest model, million parameters)
    "beit": ("beit_base_patch16_224", 85.8),
    "byoanet": ("halonet_h1", 7.6),
    "byobnet": ("test_byobnet", 0.2),
    "cait": ("cait_xxs24_224", 11.8),
    "coat": ("coat_tiny", 5.3),
    "convit": ("convit_tiny", 5.5),
    "convmixer": ("convmixer_768_32", 20.3),
    "convnext": ("test_convnext", 0.2),
    "cpubone": ("cpubone_nano", 4.9),
    "crossvit": ("crossvit_tiny_240", 6.7),
    "csatv2": ("csatv2", 10.7),
    "cspnet": ("cs3darknet_focus_s", 2.8),
    "cspnext": ("cspnext_tiny", 2.3),
    "davit": ("davit_tiny", 27.6),
    "deepseek_vit": ("deepseek_vit_412m", 411.8),
    "deit": ("deit_tiny_patch16_224", 5.5),
    "densenet": ("densenet121", 7.0),
    "dla": ("dla46x_c", 0.8),
    "dpn": ("dpn48b", 8.3),
    "edgenext": ("edgenext_xx_small", 1.2),
    "efficientformer": ("efficientformer_l1", 11.4),
    "efficientformer_v2": ("efficientformerv2_s0", 3.2),
    "efficientnet": ("test_efficientnet", 0.1),
    "efficientvim": ("efficientvim_m1", 5.7),
    "efficientvit_mit": ("efficientvit_b0", 2.1),
    "efficientvit_msra": ("efficientvit_m0", 2.2),
    "eva": ("vit_tiny_patch16_dinov3_qkvb", 5.5),
    "fasternet": ("fasternet_t0", 2.6),
    "fastvit": ("fastvit_t8", 3.3),
    "focalnet": ("focalnet_tiny_srf", 27.7),
    "gcvit": ("gcvit_xxtiny", 11.5),
    "gemma4_vit": ("gemma4_vit_167m", 167.4),
    "ghostnet": ("ghostnet_050", 1.3),
    "hardcorenas": ("hardcorenas_b", 3.9),
    "hgnet": ("hgnetv2_b0", 3.9),
    "hiera": ("hiera_tiny_224", 27.1),
    "hieradet_sam2": ("sam2_hiera_tiny", 26.9),
    "hrnet": ("hrnet_w18_small", 11.1),
    "iformer": ("iformer_t", 2.6),
    "inception_next": ("inception_next_atto", 3.2),
    "inception_resnet_v2": ("inception_resnet_v2", 54.3),
    "inception_v3": ("inception_v3", 21.8),
    "inception_v4": ("inception_v4", 41.1),
    "lcnetv2": ("lcnetv2_small", 2.8),
    "levit": ("levit_128s", 7.0),
    "lowformer": ("lowformer_b0", 12.5),
    "mambaout": ("test_mambaout", 0.2),
    "maxxvit": ("test_coatnet", 0.4),
    "metaformer": ("poolformerv2_s12", 11.4),
    "mlp_mixer": ("gmlp_ti16_224", 5.7),
    "mobilenetv3": ("lcnet_035", 0.4),
    "mobilenetv5": ("mobilenetv5_base", 80.6),
    "mobilevit": ("mobilevit_xxs", 1.0),
    "mvitv2": ("mvitv2_tiny", 23.4),
    "naflexvit": ("naflexvit_base_patch16_parfac_gap", 85.7),
    "nasnet": ("nasnetalarge", 84.7),
    "nest": ("nest_tiny", 16.7),
    "nextvit": ("nextvit_small", 30.7),
    "nfnet": ("test_nfnet", 0.2),
    "pit": ("pit_ti_224", 4.6),
    "pnasnet": ("pnasnet5large", 81.7),
    "pvt_v2": ("pvt_v2_b0", 3.4),
    "qwen3_vit": ("qwen3_vit_88m", 87.4),
    "rdnet": ("rdnet_tiny", 22.8),
    "regnet": ("regnetx_002", 2.3),
    "repghost": ("repghostnet_050", 1.0),
    "repvit": ("repvit_m1", 4.7),
    "res2net": ("res2next50", 22.6),
    "resnest": ("resnest14d", 8.6),
    "resnet": ("test_resnet", 0.4),
    "resnetv2": ("resnetv2_18", 11.2),
    "rexnet": ("rexnet_100", 3.5),
    "selecsls": ("selecsls42", 29.1),
    "senet": ("legacy_seresnet18", 11.3),
    "sequencer": ("sequencer2d_s", 27.3),
    "shvit": ("shvit_s1", 6.0),
    "sknet": ("skresnet18", 11.4),
    "starnet": ("starnet_s050", 0.4),
    "swiftformer": ("swiftformer_xs", 3.0),
    "swin_transformer": ("swin_tiny_patch4_window7_224", 27.5),
    "swin_transformer_v2": ("swinv2_tiny_window8_256", 27.6),
    "swin_transformer_v2_cr": ("swinv2_cr_tiny_224", 27.6),
    "tiny_vit": ("tiny_vit_5m_224", 5.1),
    "tnt": ("tnt_s_legacy_patch16_224", 23.4),
    "tresnet": ("tresnet_m", 29.3),
    "twins": ("twins_svt_small", 23.5),
    "vgg": ("vgg11", 128.8),
    "visformer": ("visformer_tiny", 9.9),
    "vision_transformer": ("test_vit", 0.3),
    "vision_transformer_hybrid": ("vit_tiny_r_s16_p8_224", 6.1),
    "vision_transformer_relpos": ("test_vit_relpos", 0.8),
    "vision_transformer_sam": ("samvit_base_patch16_224", 85.7),
    "vitamin": ("vitamin_small_224", 21.9),
    "volo": ("volo_d1_224", 25.9),
    "vovnet": ("ese_vovnet19b_slim_dw", 1.4),
    "xception": ("legacy_xception", 20.8),
    "xception_aligned": ("xception41p", 24.9),
    "xcit": ("xcit_nano_12_p8_224", 2.9),
}
CI_MAX_MPARAMS = 12.0


def _cases() -> list:
    import timm

    cases = []
    for module in timm.list_modules():
        name, mparams = FAMILIES.get(module, (timm.list_models(module=module)[0], float("inf")))
        slow = mparams > CI_MAX_MPARAMS
        cases.append(pytest.param(name, id=f"{module}:{name}", marks=[pytest.mark.slow] if slow else []))
    return cases


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    cfg = to_config(compose_cfg(["env=cartpole_pixels", "backbone=nature_cnn"], tmp_path_factory.mktemp("o")))
    env = make_vector_env(cfg.env, 2)
    obs, _ = env.reset(seed=0)
    next_obs, *_ = env.step(np.array([0, 1]))
    env.close()
    return obs, next_obs


@pytest.mark.parametrize("name", _cases())
def test_every_timm_family_builds_acts_and_learns(name: str, frames, outputs: Path) -> None:
    overrides = ["env=cartpole_pixels", "backbone=resnet18", f"backbone.name={name}", "backbone.freeze=none"]
    cfg = to_config(compose_cfg(overrides, outputs))
    spec = probe_env(cfg.env)
    torch.manual_seed(0)
    net = build_q_network(cfg.backbone, spec)
    target = target_copy(net)
    obs, next_obs = (torch.from_numpy(f) for f in frames)
    actions = net.act(obs)
    assert actions.shape == (2,) and ((actions >= 0) & (actions < spec.n_actions)).all()
    optimizer = torch.optim.Adam(param_groups(net, cfg.backbone, 1e-3), lr=1e-3)
    before = [p.detach().clone() for p in net.encoder.parameters() if p.requires_grad]
    net.train()
    q = net(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        td_target = torch.ones(2) + 0.99 * target(next_obs).max(dim=1).values
    loss = F.huber_loss(q, td_target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    after = [p.detach() for p in net.encoder.parameters() if p.requires_grad]
    assert before and any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), (
        "the backbone did not learn"
    )


def test_efficientvit_m0_the_reported_one_runs_from_the_command_line(outputs: Path) -> None:
    from tests.conftest import run_cli

    proc = run_cli(
        [
            "algo=dqn",
            "backbone=resnet18",
            "backbone.name=efficientvit_m0",
            "total_env_steps=64",
            "algo.learning_starts=32",
            "algo.batch_size=4",
            "algo.chunk_steps=32",
            "eval.episodes=1",
            "eval.every_env_steps=0",
            "env.max_episode_steps=20",
            "logger=none",
        ],
        outputs,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
