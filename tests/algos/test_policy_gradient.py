"""PPO and REINFORCE: GAE and the clipped objective by hand, heads-only init that leaves a pretrained
backbone untouched, the frozen pretrained critic, learning CartPole, MLflow curves, DDP."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from pipeline.algos.policy_gradient import gae, ppo_losses
from pipeline.config.load import to_config
from pipeline.core.errors import ConfigError
from pipeline.envs import probe_env
from pipeline.networks.actor_critic import build_actor_critic
from pipeline.run.job import run_job
from tests.conftest import compose_cfg

# RL-Zoo's CartPole set with SB3's PPO network (separate tanh MLPs [64, 64]).
ZOO = [
    "algo=ppo",
    "env.num_envs=8",
    "backbone.hidden_sizes=[64,64]",
    "backbone.activation=tanh",
    "algo.critic.backbone=separate",
]


def test_gae_matches_a_hand_computed_trajectory() -> None:
    rewards = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    values = np.array([[0.5], [1.0], [1.5]], dtype=np.float32)
    dones = np.array([[0.0], [1.0], [0.0]], dtype=np.float32)  # the episode ends at t=1
    last = np.array([2.0], dtype=np.float32)
    adv, ret = gae(rewards, values, dones, last, gamma=0.9, lam=0.8)
    # t=2: δ = 3 + 0.9·2 − 1.5 = 3.3; t=1 (terminal): δ = 2 − 1 = 1; t=0: δ = 1 + 0.9·1 − 0.5 = 1.4,
    # A = 1.4 + 0.9·0.8·1 = 2.12. Returns = A + V.
    np.testing.assert_allclose(adv[:, 0], [2.12, 1.0, 3.3], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], [2.62, 2.0, 4.8], rtol=1e-6)
    # λ = 1: Monte-Carlo returns within the episode (1 + 0.9·2), bootstrap only past the rollout's end.
    _, mc = gae(rewards, values, dones, last, gamma=0.9, lam=1.0)
    np.testing.assert_allclose(mc[:, 0], [2.8, 2.0, 4.8], rtol=1e-6)


def test_ppo_ratio_clip_and_value_clip_on_a_fixed_batch() -> None:
    logits = torch.zeros(4, 2, requires_grad=True)  # π(a|s) = 0.5 for both actions
    actions = torch.tensor([0, 0, 1, 1])
    ratios = torch.tensor([1.5, 0.5, 0.5, 1.5])
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0])
    old_logp = math.log(0.5) - ratios.log()
    values = torch.ones(4, requires_grad=True)
    out = ppo_losses(
        logits, values, actions, old_logp, torch.zeros(4), advantages, torch.full((4,), 2.0), 0.2, 0.2
    )  # fmt: skip
    # min(r·A, clip(r, 0.8, 1.2)·A): 1.2, 0.5, −0.8, −1.5 → loss = −mean = 0.15
    assert out["policy_loss"].item() == pytest.approx(-(1.2 + 0.5 - 0.8 - 1.5) / 4)
    assert float(out["clip_fraction"]) == 1.0
    assert float(out["approx_kl"]) == pytest.approx(float(((ratios - 1) - ratios.log()).mean()), rel=1e-5)
    assert out["entropy"].item() == pytest.approx(math.log(2))
    # Value clip: old 0, new 1, return 2, clip 0.2 → max((1−2)², (0.2−2)²) = 3.24
    assert out["value_loss"].item() == pytest.approx(3.24)
    out["policy_loss"].backward()
    grads = logits.grad.abs().sum(dim=1)
    # Clipped where the ratio already moved past 1 ± ε in the advantage's direction (samples 0 and 2);
    # where it moved against it, the unclipped term is the pessimistic one and still pushes (1 and 3).
    assert grads[0] == 0 and grads[2] == 0
    assert grads[1] > 0 and grads[3] > 0
    without = ppo_losses(logits, values, actions, old_logp, torch.zeros(4), advantages, torch.zeros(4), None, None)
    assert without["policy_loss"].item() == pytest.approx(-float((ratios * advantages).mean()))


def _mlp_weights(path: Path) -> dict[str, torch.Tensor]:
    """A 'pretrained' MLP made here: random weights saved to a file."""
    torch.manual_seed(3)
    state = {
        "net.0.weight": torch.randn(64, 4),
        "net.0.bias": torch.randn(64),
        "net.2.weight": torch.randn(64, 64),
        "net.2.bias": torch.randn(64),
    }
    save_file(state, str(path))
    return state


@pytest.mark.parametrize("critic", ["shared", "separate", "same-as-actor-frozen"])
def test_head_init_leaves_pretrained_backbone_weights_bit_identical(critic: str, outputs: Path, tmp_path: Path) -> None:
    saved = _mlp_weights(tmp_path / "mlp.safetensors")
    overrides = ["algo=ppo", "backbone.hidden_sizes=[64,64]", f"backbone.weights={tmp_path / 'mlp.safetensors'}"]
    cfg = to_config(compose_cfg([*overrides, f"algo.critic.backbone={critic}"], outputs))
    net = build_actor_critic(cfg.backbone, probe_env(cfg.env), critic, str(tmp_path / "mlp.safetensors"))
    for encoder in net.encoders():
        loaded = encoder.backbone_module().state_dict()
        assert set(loaded) == set(saved)
        for name, tensor in saved.items():
            assert torch.equal(loaded[name], tensor), name
    out = net.actor.out.weight  # orthogonal rows with gain 0.01: W Wᵀ = 1e-4 I
    torch.testing.assert_close(out @ out.T, 1e-4 * torch.eye(out.shape[0]), atol=1e-7, rtol=0)
    assert torch.count_nonzero(net.actor.out.bias) == 0 and torch.count_nonzero(net.critic.out.bias) == 0


def test_frozen_pretrained_critic_stays_bit_identical_while_the_actor_fine_tunes(outputs: Path, tmp_path: Path) -> None:
    saved = _mlp_weights(tmp_path / "mlp.safetensors")
    overrides = [
        *ZOO,
        "backbone.activation=relu",
        f"backbone.weights={tmp_path / 'mlp.safetensors'}",
        "algo.critic.backbone=same-as-actor-frozen",
        "total_env_steps=2048",
        "eval.every_env_steps=0",
        "logger=none",
        "progress=false",
    ]
    result = run_job(compose_cfg(overrides, outputs))
    state = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu")["state_dict"]
    for name, tensor in saved.items():
        assert torch.equal(state[f"net.critic_encoder.body.{name}"], tensor), name
    assert not torch.equal(state["net.encoder.body.net.0.weight"], saved["net.0.weight"])  # the actor learned


def test_frozen_copy_of_a_random_backbone_is_refused(outputs: Path) -> None:
    with pytest.raises(ConfigError, match=r"algo\.critic\.backbone=same-as-actor-frozen: .*backbone\.weights="):
        to_config(compose_cfg(["algo=ppo", "algo.critic.backbone=same-as-actor-frozen"], outputs))


def test_ppo_solves_cartpole_and_logs_policy_curves(outputs: Path) -> None:
    cfg = compose_cfg([*ZOO, "total_env_steps=100000", "eval.every_env_steps=5000", "progress=false"], outputs)
    result = run_job(cfg)
    assert result.solved and result.eval_return_mean >= 475
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    run_id = result.run_id
    for key in ("train/entropy", "train/approx_kl", "train/clip_fraction", "train/value_loss", "train/lr"):
        assert len(client.get_metric_history(run_id, key)) > 5, key
    entropy = [m.value for m in client.get_metric_history(run_id, "train/entropy")]
    assert entropy[0] > 0.65 and entropy[-1] < entropy[0]  # near-uniform at first (ln 2 = 0.69), then sharper
    lr = [m.value for m in client.get_metric_history(run_id, "train/lr")]
    assert lr[0] < 1e-3 and all(a >= b for a, b in itertools.pairwise(lr))  # linear decay
    policy = mlflow.pytorch.load_model(result.model_uri)
    logits = policy(torch.tensor([[0.0, 0.0, 0.1, 0.5], [0.0, 0.0, -0.1, -0.5]]))
    assert logits.argmax(dim=1).tolist() == [1, 0]  # pole falling right: push right; left: push left


def test_reinforce_solves_cartpole(outputs: Path) -> None:
    overrides = ["algo=reinforce", "env.num_envs=8", "total_env_steps=300000", "eval.every_env_steps=10000"]
    result = run_job(compose_cfg([*overrides, "logger=none", "progress=false"], outputs))
    assert result.solved and result.eval_return_mean >= 475


def test_ppo_ddp_cpu_two_ranks_stay_in_sync(outputs: Path) -> None:
    overrides = [*ZOO, "hardware=ddp_cpu", "total_env_steps=2048", "eval.every_env_steps=1024", "eval.episodes=2"]
    result = run_job(compose_cfg([*overrides, "progress=false"], outputs))
    assert result.env_steps == 2048  # 2 ranks x 8 envs x 32 steps = 512 per rollout, 4 rollouts
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    run = client.get_run(result.run_id)
    assert run.data.tags["ddp_replicas_in_sync"] == "true" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(result.run_id, "train/approx_kl")] == [512, 1024, 1536, 2048]


@pytest.mark.parametrize(
    "overrides",
    [
        ["env=minatar_breakout", "backbone=small_cnn"],  # MinAtar's channel grid
        ["env=breakout", "backbone=nature_cnn", "env.max_episode_steps=200"],  # Atari frame stacks
        ["env=minatar_breakout", "backbone=resnet18", "env.frame_size=32", "algo.critic.backbone=separate"],
    ],
    ids=["minatar-small_cnn", "atari-nature_cnn", "minatar-resnet18-separate"],
)
def test_ppo_trains_on_pixel_envs(overrides: list[str], outputs: Path) -> None:
    budget = ["env.num_envs=2", "algo.n_steps=16", "algo.epochs=2", "algo.minibatches=2", "total_env_steps=64"]
    cfg = compose_cfg(["algo=ppo", *overrides, *budget, "eval.every_env_steps=0", "eval.episodes=1"], outputs)
    result = run_job(cfg)
    assert result.env_steps == 64 and np.isfinite(result.eval_return_mean)
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    losses = [m.value for m in client.get_metric_history(result.run_id, "train/value_loss")]
    assert len(losses) == 2 and all(np.isfinite(losses))
