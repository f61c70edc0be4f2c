"""`algo` group: one schema per algorithm family — value-based (DQN and its extensions), tabular, policy
gradient, continuous-action actor-critics with twin critics (SAC, TD3) — each with the checks of its own keys
(conf/algo/*.yaml documents each key)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from pipeline.config.check import one_of, require

TABULAR_UPDATES = ("q_learning", "sarsa", "expected_sarsa")
CRITIC_BACKBONES = ("shared", "separate", "same-as-actor-frozen")


@dataclass
class PriorConfig:
    """A causal language model as an action prior on text envs (CALM / SayCan style; pipeline/algos/text_prior.py)."""

    model: str | None = None
    weight: float = 0.0
    max_tokens: int = 256


@dataclass
class DQNConfig:
    """Value-based deep RL: DQN, Double DQN and the extensions (dueling, n-step, prioritised replay)."""

    name: str = MISSING
    family: str = "dqn"
    double: bool = False
    lr: float = 1e-3
    batch_size: int = 64
    buffer_size: int = 50_000
    learning_starts: int = 1_000
    gamma: float = 0.99
    train_freq: int = 4
    gradient_steps: int = 1
    target_update_interval: int = 100
    tau: float = 1.0
    eps_start: float = 1.0
    eps_end: float = 0.02
    eps_decay_steps: int = 5_000
    max_grad_norm: float = 10.0
    huber_delta: float = 1.0
    chunk_steps: int = 256
    dueling: bool = False
    n_step: int = 1
    prioritized: bool = False
    per_alpha: float = 0.6
    per_beta_start: float = 0.4
    per_beta_end: float = 1.0
    per_eps: float = 1e-6
    prior: PriorConfig = field(default_factory=PriorConfig)


@dataclass
class TabularConfig:
    """A Q-table over discrete observations: Q-learning, SARSA or expected SARSA."""

    name: str = MISSING
    family: str = "tabular"
    update: str = "q_learning"
    gamma: float = 0.99
    lr_start: float = 0.5
    lr_end: float = 0.01
    lr_decay_steps: int = 200_000
    eps_start: float = 1.0
    eps_end: float = 0.1
    eps_decay_steps: int = 10_000
    init_q: float = 0.0
    chunk_steps: int = 8192


@dataclass
class CriticConfig:
    backbone: str = "shared"
    coef: float = 0.5
    clip_range: float | None = None


@dataclass
class PolicyGradientConfig:
    """On-policy actor-critic: PPO, and REINFORCE with a learned baseline (the same loop, other settings)."""

    name: str = MISSING
    family: str = "policy_gradient"
    lr: float = 1e-3
    lr_end: float | None = 0.0
    n_steps: int = 32
    epochs: int = 20
    minibatches: int = 1
    gamma: float = 0.98
    gae_lambda: float = 0.8
    clip_range: float | None = 0.2
    clip_range_end: float | None = 0.0
    normalize_advantage: bool = True
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    ortho_init: bool = True
    log_std_init: float = 0.0
    normalize_obs: bool = False
    normalize_reward: bool = False
    critic: CriticConfig = field(default_factory=CriticConfig)


@dataclass
class ContinuousQConfig:
    """Off-policy actor-critic for continuous actions with twin Q critics: what SAC and TD3 share."""

    name: str = MISSING
    family: str = MISSING
    lr: float = 1e-3
    critic_lr: float | None = None
    batch_size: int = 256
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    gamma: float = 0.99
    tau: float = 0.005
    train_freq: int = 1
    gradient_steps: int = 1
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    max_grad_norm: float | None = None
    augment: str = "none"
    augment_pad: int = 4
    chunk_steps: int = 256


@dataclass
class SACConfig(ContinuousQConfig):
    """Soft actor-critic (Haarnoja et al., 2018): tanh-squashed Gaussian actor, entropy tuned to a target."""

    family: str = "sac"
    ent_coef: str = "auto"
    target_entropy: float | None = None
    ent_lr: float | None = None
    target_update_interval: int = 1


@dataclass
class TD3Config(ContinuousQConfig):
    """TD3 (Fujimoto et al., 2018): deterministic actor, target policy smoothing, delayed actor updates."""

    family: str = "td3"
    policy_delay: int = 2
    target_noise: float = 0.2
    target_noise_clip: float = 0.5
    action_noise: float = 0.1
    action_noise_end: float | None = None
    action_noise_decay_steps: int = 100_000


ALGO_SCHEMAS: dict[str, type] = {
    "dqn": DQNConfig,
    "tabular": TabularConfig,
    "policy_gradient": PolicyGradientConfig,
    "sac": SACConfig,
    "td3": TD3Config,
}
AlgoConfig = DQNConfig | TabularConfig | PolicyGradientConfig | SACConfig | TD3Config
AUGMENTATIONS = ("none", "shift")


def parse_ent_coef(value: str) -> tuple[bool, float]:
    """`algo.ent_coef`: 'auto' (tuned, starting at 1), 'auto_<start>' (tuned from <start>) or a fixed number.
    Returns (tuned, initial value); raises ValueError on anything else."""
    if value == "auto":
        return True, 1.0
    if value.startswith("auto_"):
        return True, float(value[5:])
    return False, float(value)


def check_continuous_q(a: ContinuousQConfig) -> None:
    require(a.lr > 0, "algo.lr", a.lr, "learning rate must be > 0, e.g. algo.lr=3e-4")
    require(a.critic_lr is None or a.critic_lr > 0, "algo.critic_lr", a.critic_lr, "must be > 0, or null (= algo.lr)")
    require(a.batch_size >= 1, "algo.batch_size", a.batch_size, "must be >= 1")
    require(
        a.batch_size <= a.buffer_size,
        "algo.batch_size",
        a.batch_size,
        f"larger than algo.buffer_size={a.buffer_size}; lower the batch or raise the buffer",
    )
    require(a.learning_starts >= 0, "algo.learning_starts", a.learning_starts, "must be >= 0 env steps")
    require(0.0 < a.gamma <= 1.0, "algo.gamma", a.gamma, "must be in (0, 1]")
    require(0.0 < a.tau <= 1.0, "algo.tau", a.tau, "must be in (0, 1]; 1.0 is a hard copy every update")
    require(a.train_freq >= 1, "algo.train_freq", a.train_freq, "must be >= 1 env step")
    require(a.gradient_steps >= 1, "algo.gradient_steps", a.gradient_steps, "must be >= 1")
    require(all(h >= 1 for h in a.hidden_sizes), "algo.hidden_sizes", a.hidden_sizes, "every layer needs >= 1 unit")
    require(
        a.max_grad_norm is None or a.max_grad_norm > 0, "algo.max_grad_norm", a.max_grad_norm, "must be > 0 or null"
    )
    one_of(a.augment, AUGMENTATIONS, "algo.augment")
    require(a.augment_pad >= 1, "algo.augment_pad", a.augment_pad, "must be >= 1 pixel")
    require(a.chunk_steps >= 1, "algo.chunk_steps", a.chunk_steps, "must be >= 1")
    if isinstance(a, SACConfig):
        try:
            start = parse_ent_coef(a.ent_coef)[1]
        except ValueError:
            start = float("nan")
        require(
            start > 0,
            "algo.ent_coef",
            a.ent_coef,
            "must be auto, auto_<initial value > 0> (tuned) or a fixed number > 0, e.g. algo.ent_coef=0.1",
        )
        require(a.ent_lr is None or a.ent_lr > 0, "algo.ent_lr", a.ent_lr, "must be > 0, or null (= algo.lr)")
        require(a.target_update_interval >= 1, "algo.target_update_interval", a.target_update_interval, "must be >= 1")
    if isinstance(a, TD3Config):
        require(a.policy_delay >= 1, "algo.policy_delay", a.policy_delay, "must be >= 1 critic update")
        require(a.target_noise >= 0, "algo.target_noise", a.target_noise, "must be >= 0 (0 = no smoothing)")
        require(a.target_noise_clip > 0, "algo.target_noise_clip", a.target_noise_clip, "must be > 0")
        require(a.action_noise >= 0, "algo.action_noise", a.action_noise, "must be >= 0")
        require(
            a.action_noise_end is None or a.action_noise_end >= 0,
            "algo.action_noise_end",
            a.action_noise_end,
            "must be >= 0, or null (constant noise)",
        )
        require(
            a.action_noise_decay_steps >= 1, "algo.action_noise_decay_steps", a.action_noise_decay_steps, "must be >= 1"
        )


def check_dqn(a: DQNConfig) -> None:
    require(a.lr > 0, "algo.lr", a.lr, "learning rate must be > 0, e.g. algo.lr=1e-3")
    require(a.batch_size >= 1, "algo.batch_size", a.batch_size, "must be >= 1")
    require(a.buffer_size >= 1, "algo.buffer_size", a.buffer_size, "must be >= 1")
    require(
        a.batch_size <= a.buffer_size,
        "algo.batch_size",
        a.batch_size,
        f"larger than algo.buffer_size={a.buffer_size}; lower the batch or raise the buffer",
    )
    require(
        a.learning_starts >= a.batch_size,
        "algo.learning_starts",
        a.learning_starts,
        f"must be >= algo.batch_size={a.batch_size} so the first batch can be sampled",
    )
    require(0.0 < a.gamma <= 1.0, "algo.gamma", a.gamma, "must be in (0, 1]")
    require(a.train_freq >= 1, "algo.train_freq", a.train_freq, "must be >= 1 env step")
    require(a.gradient_steps >= 1, "algo.gradient_steps", a.gradient_steps, "must be >= 1")
    require(a.target_update_interval >= 1, "algo.target_update_interval", a.target_update_interval, "must be >= 1")
    require(0.0 < a.tau <= 1.0, "algo.tau", a.tau, "must be in (0, 1]; 1.0 is a hard copy")
    for key, val in (("algo.eps_start", a.eps_start), ("algo.eps_end", a.eps_end)):
        require(0.0 <= val <= 1.0, key, val, "must be in [0, 1]")
    require(a.eps_decay_steps >= 1, "algo.eps_decay_steps", a.eps_decay_steps, "must be >= 1")
    require(a.max_grad_norm > 0, "algo.max_grad_norm", a.max_grad_norm, "must be > 0")
    require(a.huber_delta > 0, "algo.huber_delta", a.huber_delta, "must be > 0")
    require(a.chunk_steps >= 1, "algo.chunk_steps", a.chunk_steps, "must be >= 1")
    require(1 <= a.n_step <= 20, "algo.n_step", a.n_step, "must be in 1..20 (1 = one-step TD)")
    require(0.0 <= a.per_alpha <= 1.0, "algo.per_alpha", a.per_alpha, "must be in [0, 1] (0 = uniform)")
    for key, val in (("algo.per_beta_start", a.per_beta_start), ("algo.per_beta_end", a.per_beta_end)):
        require(0.0 <= val <= 1.0, key, val, "must be in [0, 1]")
    require(a.per_eps > 0, "algo.per_eps", a.per_eps, "must be > 0 so every transition can be drawn")
    require(a.prior.weight >= 0, "algo.prior.weight", a.prior.weight, "must be >= 0 (0 = no prior)")
    require(
        not (a.prior.weight > 0 and not a.prior.model),
        "algo.prior.weight",
        a.prior.weight,
        "a prior weight needs a prior: set algo.prior.model=<causal LM folder or hub id>",
    )


def check_tabular(a: TabularConfig) -> None:
    one_of(a.update, TABULAR_UPDATES, "algo.update")
    require(0.0 < a.gamma <= 1.0, "algo.gamma", a.gamma, "must be in (0, 1]")
    for key, val in (("algo.lr_start", a.lr_start), ("algo.lr_end", a.lr_end)):
        require(0.0 < val <= 1.0, key, val, "must be in (0, 1]")
    for key, val in (("algo.eps_start", a.eps_start), ("algo.eps_end", a.eps_end)):
        require(0.0 <= val <= 1.0, key, val, "must be in [0, 1]")
    require(a.eps_decay_steps >= 1, "algo.eps_decay_steps", a.eps_decay_steps, "must be >= 1")
    require(a.lr_decay_steps >= 1, "algo.lr_decay_steps", a.lr_decay_steps, "must be >= 1")
    require(a.chunk_steps >= 1, "algo.chunk_steps", a.chunk_steps, "must be >= 1")


def check_policy_gradient(a: PolicyGradientConfig) -> None:
    require(a.lr > 0, "algo.lr", a.lr, "learning rate must be > 0, e.g. algo.lr=3e-4")
    require(a.lr_end is None or a.lr_end >= 0, "algo.lr_end", a.lr_end, "must be >= 0 or null (constant lr)")
    require(a.n_steps >= 1, "algo.n_steps", a.n_steps, "must be >= 1 env step per env per rollout")
    require(a.epochs >= 1, "algo.epochs", a.epochs, "must be >= 1")
    require(0.0 < a.gamma <= 1.0, "algo.gamma", a.gamma, "must be in (0, 1]")
    require(0.0 <= a.gae_lambda <= 1.0, "algo.gae_lambda", a.gae_lambda, "must be in [0, 1] (1 = Monte-Carlo returns)")
    require(a.clip_range is None or a.clip_range > 0, "algo.clip_range", a.clip_range, "must be > 0, or null (no clip)")
    require(
        a.clip_range_end is None or (a.clip_range is not None and a.clip_range_end >= 0),
        "algo.clip_range_end",
        a.clip_range_end,
        "a clip schedule needs algo.clip_range set and an end >= 0; or null (constant)",
    )
    require(a.ent_coef >= 0, "algo.ent_coef", a.ent_coef, "must be >= 0")
    require(a.max_grad_norm > 0, "algo.max_grad_norm", a.max_grad_norm, "must be > 0")
    require(a.target_kl is None or a.target_kl > 0, "algo.target_kl", a.target_kl, "must be > 0 or null (off)")
    c = a.critic
    one_of(c.backbone, CRITIC_BACKBONES, "algo.critic.backbone")
    require(c.coef > 0, "algo.critic.coef", c.coef, "must be > 0")
    require(c.clip_range is None or c.clip_range > 0, "algo.critic.clip_range", c.clip_range, "must be > 0 or null")
