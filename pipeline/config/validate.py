"""The whole config: each group's own checks, then the combinations across groups (an image backbone on
state vectors, a text encoder on arrays, a budget that never reaches `learning_starts`, a Q-table on a
GPU, distillation into a table ...). Every message names the key and the fix."""

from __future__ import annotations

from pipeline.config.algo import (
    ContinuousQConfig,
    DQNConfig,
    PolicyGradientConfig,
    TabularConfig,
    check_continuous_q,
    check_dqn,
    check_policy_gradient,
    check_tabular,
)
from pipeline.config.backbone import check_backbone
from pipeline.config.check import require
from pipeline.config.distill import check_distill
from pipeline.config.env import check_env
from pipeline.config.hardware import check_hardware
from pipeline.config.logger import check_logger
from pipeline.config.reward import check_reward
from pipeline.config.root import Config
from pipeline.config.stage import check_stage
from pipeline.core.errors import ConfigError


def validate(cfg: Config) -> None:
    """Ranges and combinations the types alone cannot express; raises ConfigError on the first problem."""
    require(cfg.total_env_steps > 0, "total_env_steps", cfg.total_env_steps, "must be > 0")
    require(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    check_env(cfg.env)
    check_backbone(cfg.backbone)
    _observations(cfg)
    check_reward(cfg.reward)
    _algo(cfg)
    check_stage(cfg.stage)
    check_distill(cfg.distill)
    _distill(cfg)
    check_hardware(cfg.hardware)
    check_logger(cfg.logger)
    require(cfg.eval.episodes >= 1, "eval.episodes", cfg.eval.episodes, "must be >= 1")
    require(cfg.eval.every_env_steps >= 0, "eval.every_env_steps", cfg.eval.every_env_steps, "must be >= 0 (0 = off)")
    ck = cfg.checkpoint
    require(ck.buffer_max_gb >= 0, "checkpoint.buffer_max_gb", ck.buffer_max_gb, "must be >= 0")
    require(
        ck.every_env_steps >= 0, "checkpoint.every_env_steps", ck.every_env_steps, "must be >= 0 (0 = only the last)"
    )


def _observations(cfg: Config) -> None:
    """What the env gives and what the backbone takes agree: images, vectors or text."""
    e, b = cfg.env, cfg.backbone
    rendered = e.kind in ("gym", "dmc", "highway")  # observed as state vectors or rendered frames, by choice
    if rendered and b.takes_images and e.obs_mode == "state":
        raise ConfigError(
            f"env.obs_mode=state: backbone={b.name} takes images; set env.obs_mode=pixels (or auto), "
            "or use backbone=mlp for state vectors"
        )
    if rendered and not b.takes_images and e.obs_mode == "pixels":
        raise ConfigError(
            f"env.obs_mode=pixels: backbone={b.name} takes vectors; use backbone=nature_cnn or "
            "backbone=resnet18 for images, or env.obs_mode=state"
        )
    require(
        not (e.is_text and not b.is_text),
        "backbone",
        b.name,
        f"env={e.name} observes text; use a text backbone: backbone=minilm, backbone=bow or backbone=hf",
    )
    require(
        not (b.is_text and not e.is_text),
        "backbone",
        b.name,
        f"a text encoder needs a text env (env=textworld, env=traffic_light_text); env={e.name} gives arrays",
    )


def _reaches_learning_starts(cfg: Config) -> None:
    a = cfg.algo
    require(
        a.learning_starts < cfg.total_env_steps,
        "algo.learning_starts",
        a.learning_starts,
        f"never reached within total_env_steps={cfg.total_env_steps}; lower it or raise the budget",
    )


def _algo(cfg: Config) -> None:
    a, h = cfg.algo, cfg.hardware
    if isinstance(a, DQNConfig):
        check_dqn(a)
        _reaches_learning_starts(cfg)
        require(
            not (a.prior.model and not cfg.env.is_text),
            "algo.prior.model",
            a.prior.model,
            f"a language-model prior scores text commands; env={cfg.env.name} has none: use a text env or drop it",
        )
    elif isinstance(a, TabularConfig):
        check_tabular(a)
        require(
            h.accelerator == "cpu" and h.devices == 1,
            "hardware",
            h.name,
            f"a Q-table lives in one process on the CPU; use hardware=cpu with algo={a.name}",
        )
    elif isinstance(a, ContinuousQConfig):
        check_continuous_q(a)
        _reaches_learning_starts(cfg)
        require(
            not (a.augment == "shift" and not cfg.backbone.takes_images),
            "algo.augment",
            a.augment,
            f"random shifts move pixels; backbone={cfg.backbone.name} reads state vectors: set algo.augment=none",
        )
        require(
            not (a.augment == "shift" and cfg.backbone.freeze == "all" and cfg.backbone.cache_features),
            "algo.augment",
            a.augment,
            "a frozen encoder's cached features cannot be shifted: set backbone.cache_features=false "
            "(augment the frames, encode every update) or algo.augment=none",
        )
        require(
            h.devices == 1,
            "hardware",
            h.name,
            f"algo={a.name} trains in one process (its three optimisers are not wired for DDP); use hardware=cpu "
            "or hardware=gpu",
        )
    else:
        assert isinstance(a, PolicyGradientConfig)
        check_policy_gradient(a)
        require(
            not (a.normalize_obs and (cfg.backbone.takes_images or cfg.env.is_text)),
            "algo.normalize_obs",
            a.normalize_obs,
            "running statistics are for state vectors; images are normalised by the backbone's own statistics: "
            "set algo.normalize_obs=false",
        )
        rollout = a.n_steps * cfg.env.num_envs
        require(
            1 <= a.minibatches <= rollout,
            "algo.minibatches",
            a.minibatches,
            f"must be in 1..{rollout} (the rollout, algo.n_steps x env.num_envs, split into this many)",
        )
        require(
            not (a.critic.backbone == "same-as-actor-frozen" and not cfg.backbone.has_weights),
            "algo.critic.backbone",
            a.critic.backbone,
            "a frozen copy of a random backbone is a fixed random projection; give backbone.weights=<file or "
            "MLflow URI> (or pretrained=true), or use algo.critic.backbone=separate",
        )
    if not isinstance(a, DQNConfig):
        require(
            h.precision == "32-true",
            "hardware.precision",
            h.precision,
            f"mixed precision is wired for DQN only; use hardware.precision=32-true with algo={a.name}",
        )
        require(
            not h.compile,
            "hardware.compile",
            h.compile,
            f"torch.compile is wired for DQN's update only; set hardware.compile=false with algo={a.name}",
        )


def _distill(cfg: Config) -> None:
    if cfg.distill.name == "none":
        return
    require(
        not isinstance(cfg.algo, TabularConfig),
        "distill",
        cfg.distill.name,
        f"distillation trains a network; algo={cfg.algo.name} is a table: use algo=dqn or algo=ppo",
    )
    require(
        not (isinstance(cfg.algo, DQNConfig) and cfg.backbone.freeze == "all" and cfg.backbone.cache_features),
        "backbone.cache_features",
        cfg.backbone.cache_features,
        "the replay buffer holds features, but the teacher needs observations: set backbone.cache_features=false",
    )
