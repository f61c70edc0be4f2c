"""Structured schema of the config groups, registered in Hydra's ConfigStore.

Hydra merges every group's YAML into these dataclasses, so an unknown key or a wrong type is refused
while composing. Ranges and cross-group combinations are checked by `validate`, which raises
`ConfigError` with a message that names the key and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline.errors import ConfigError

OWN_BACKBONES = ("mlp", "nature_cnn", "small_cnn", "bow")
VECTOR_BACKBONES = ("mlp",)
TEXT_OWN_BACKBONES = ("bow",)


@dataclass
class TextWorldConfig:
    """A seeded family of generated TextWorld games (pipeline/envs/textworld.py)."""

    world_size: int = 3
    nb_objects: int = 4
    quest_length: int = 3
    train_games: int = 1
    held_out_games: int = 1
    game_seed: int = 1
    intermediate_rewards: bool = False
    cache_dir: str | None = None


@dataclass
class EnvConfig:
    name: str = MISSING
    id: str = MISSING
    kind: str = "gym"
    obs_mode: str = "auto"
    num_envs: int = 1
    frame_size: int = 84
    frame_stack: int = 4
    max_episode_steps: int | None = None
    solved_return: float | None = None
    clip_rewards: bool = False
    sticky_actions: float = 0.0
    noop_max: int = 30
    frame_skip: int = 4
    fire_reset: bool = True
    textworld: TextWorldConfig = field(default_factory=TextWorldConfig)


@dataclass
class BackboneConfig:
    name: str = MISSING
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    features_dim: int = 512
    channels: list[int] = field(default_factory=lambda: [16])
    pretrained: bool = False
    weights: str | None = None
    feature_layer: int | None = None
    pool: str = "avg"
    pool_channels: int = 32
    embed_dim: int = 0
    layer_norm: bool = False
    stack: str = "channels"
    resize: bool = False
    input_size: int | None = None
    freeze: str = "none"
    freeze_until: str | None = None
    bn: str = "auto"
    lr_mult: float = 1.0
    layer_decay: float | None = None
    cache_features: bool = True
    library: str = "auto"
    pooling: str = "auto"
    normalize: bool | None = None
    max_tokens: int = 128
    vocab_buckets: int = 8192

    @property
    def is_text(self) -> bool:
        return self.library == "transformers" or self.name in TEXT_OWN_BACKBONES

    @property
    def takes_images(self) -> bool:
        return self.name not in VECTOR_BACKBONES and not self.is_text

    @property
    def is_timm(self) -> bool:
        return self.name not in OWN_BACKBONES and not self.is_text

    @property
    def has_weights(self) -> bool:
        return bool(self.pretrained or self.weights)


@dataclass
class PriorConfig:
    """A causal language model as an action prior on text envs (CALM / SayCan style; pipeline/prior.py)."""

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
    lr_end: float = 0.5
    lr_decay_steps: int = 100_000
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
    lr: float = 3e-4
    lr_end: float | None = None
    n_steps: int = 128
    epochs: int = 4
    minibatches: int = 1
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float | None = 0.2
    clip_range_end: float | None = None
    normalize_advantage: bool = True
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    ortho_init: bool = True
    critic: CriticConfig = field(default_factory=CriticConfig)


ALGO_SCHEMAS: dict[str, type] = {"dqn": DQNConfig, "tabular": TabularConfig, "policy_gradient": PolicyGradientConfig}
AlgoConfig = DQNConfig | TabularConfig | PolicyGradientConfig


@dataclass
class HardwareConfig:
    name: str = MISSING
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    threads: int = 1
    compile: bool = False
    channels_last: bool = False
    deterministic: bool = False


@dataclass
class LoggerConfig:
    name: str = MISSING
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    artifact_location: str = "outputs/mlartifacts"
    experiment: str = "pipeline"
    run_name: str | None = None
    log_model: bool = True
    flush_every_s: float = 5.0


@dataclass
class EvalConfig:
    every_env_steps: int = 2_000
    episodes: int = 10
    stop_on_solve: bool = True


@dataclass
class CheckpointConfig:
    every_env_steps: int = 10_000
    buffer: bool = True
    buffer_max_gb: float = 4.0


@dataclass
class StageConfig:
    """What the job trains: an RL run, or a backbone without environment reward (pipeline/pretrain.py)."""

    name: str = "rl"
    objective: str = "supervised"
    dataset: str = "digits"
    frames: int = 20_000
    collect_policy: str = "random"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    val_fraction: float = 0.2
    register_as: str | None = None


@dataclass
class DistillConfig:
    """Distillation from a frozen teacher policy (pipeline/distill.py)."""

    name: str = "none"
    teacher: str | None = None
    temperature: float = 1.0
    coef_start: float = 1.0
    coef_end: float = 0.0
    coef_steps: int = 50_000
    coef_auto: bool = False


@dataclass
class RewardConfig:
    """What the learner is rewarded with: the env's own reward, or that plus a language-model bonus."""

    name: str = "env"
    goal: str = ""
    weight: float = 1.0
    threshold: float = 0.0
    once_per_episode: bool = True
    encoder: str = "packaged:all-minilm-l6-v2"


@dataclass
class PathsConfig:
    outputs: str = "outputs"


@dataclass
class Config:
    env: EnvConfig = MISSING
    backbone: BackboneConfig = MISSING
    algo: Any = MISSING  # one of ALGO_SCHEMAS: each algo YAML extends its family's schema
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    seed: int = 0
    total_env_steps: int = 50_000
    progress: bool = True
    resume: str | None = None


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    for family, node in ALGO_SCHEMAS.items():
        store.store(group="algo", name=f"{family}_schema", node=node)


OBS_MODES = ("auto", "state", "pixels", "text")
ENV_KINDS = ("gym", "atari", "minatar", "digits", "text", "textworld")
TEXT_ENV_KINDS = ("text", "textworld")
LIBRARIES = ("auto", "timm", "transformers")
POOLINGS = ("auto", "mean", "cls", "last")
REWARDS = ("env", "lm_similarity")
FREEZE = ("auto", "none", "all", "partial")
BN_POLICIES = ("auto", "frozen", "adapt", "train")
POOLS = ("avg", "conv")
STACKS = ("channels", "shared")
STRATEGIES = ("auto", "ddp_spawn", "ddp")
PRECISIONS = ("32-true", "bf16-mixed")
ACCELERATORS = ("cpu", "gpu", "cuda", "auto")
LOGGERS = ("mlflow", "none")
ACTIVATIONS = ("relu", "tanh")
CRITIC_BACKBONES = ("shared", "separate", "same-as-actor-frozen")


def _check(ok: bool, key: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {fix}")


def check_text(tree: Any, prefix: str = "") -> None:
    """Every string of the config must be UTF-8 text: MLflow stores params, tags and names as UTF-8, and a
    stray byte from the shell (a latin-1 terminal, `$'\\xff'`) would fail after the run was created."""
    items = vars(tree).items() if hasattr(tree, "__dataclass_fields__") else enumerate(tree)
    for key, value in items:
        name = f"{prefix}{key}" if not isinstance(key, int) else f"{prefix.rstrip('.')}[{key}]"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as ex:
                raw = value.encode("utf-8", "surrogateescape")
                bad = raw[ex.start : ex.start + 1]
                raise ConfigError(
                    f"{name}={raw!r}: not UTF-8 text (byte 0x{bad.hex()} at position {ex.start}); "
                    "type it again in UTF-8 (check the terminal's locale, e.g. LANG=C.UTF-8)"
                ) from None
        elif hasattr(value, "__dataclass_fields__") or isinstance(value, list):
            check_text(value, f"{name}.")


def to_config(cfg: DictConfig) -> Config:
    """Resolve and validate a composed config; raises ConfigError on the first problem."""
    conf = OmegaConf.to_object(cfg)
    assert isinstance(conf, Config)
    check_text(conf)
    resolve_obs_mode(conf)
    resolve_freeze(conf)
    resolve_threads(conf)
    if "env.id" in command_line_keys() and "env.solved_return" not in command_line_keys():
        conf.env.solved_return = None  # another env than the option's: its own reward_threshold, not the option's
    if conf.env.kind == "textworld" and not conf.env.textworld.cache_dir:  # generated games live with the outputs
        conf.env.textworld.cache_dir = str(Path(conf.paths.outputs) / "textworld")
    validate(conf)
    return conf


def command_line_keys() -> list[str]:
    """Keys set on the command line of this Hydra job (none outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task]


def load_config(path: Path) -> Config:
    """A run dir's saved `config.yaml` back into the typed schema (the algo node by its family)."""
    raw = OmegaConf.load(path)
    family = OmegaConf.select(raw, "algo.family", default="dqn")
    if family not in ALGO_SCHEMAS:
        raise ConfigError(f"{path}: algo.family={family} is not one of {', '.join(ALGO_SCHEMAS)}")
    schema = OmegaConf.structured(Config)
    schema.algo = OmegaConf.structured(ALGO_SCHEMAS[family])
    conf = OmegaConf.to_object(OmegaConf.merge(schema, raw))
    assert isinstance(conf, Config)
    return conf


def resolve_obs_mode(cfg: Config) -> None:
    """`obs_mode=auto` follows the backbone: image backbones see rendered frames, the MLP sees state.
    Atari and digits are pixels only; MinAtar's native channel grid suits our own CNNs, while timm
    models (pretrained on photographs) get its RGB picture."""
    e = cfg.env
    if e.obs_mode != "auto":
        return
    if e.kind in TEXT_ENV_KINDS:
        e.obs_mode = "text"
    elif e.kind in ("atari", "digits"):
        e.obs_mode = "pixels"
    elif e.kind == "minatar":
        e.obs_mode = "pixels" if cfg.backbone.is_timm else "state"
    else:
        e.obs_mode = "pixels" if cfg.backbone.takes_images else "state"


def resolve_freeze(cfg: Config) -> None:
    """`backbone.freeze=auto`: a timm model is fine-tuned on a GPU, and frozen with its features cached on
    the CPU, where fine-tuning it runs at a few env steps per second (ResNet-18 on 2 cores: ~3/s, measured).
    Everything else (our own small networks, a pretraining stage) trains: `none`."""
    b = cfg.backbone
    if b.freeze != "auto":
        return
    if not b.is_timm or cfg.stage.name == "pretrain":
        b.freeze = "none"
        return
    accelerator = cfg.hardware.accelerator
    if accelerator == "auto":
        from pipeline.hardware import cuda_devices

        accelerator = "gpu" if cuda_devices() else "cpu"
    b.freeze = "none" if accelerator in ("gpu", "cuda") else "all"


def resolve_threads(cfg: Config) -> None:
    """`hardware.threads=0`: one per core (or OMP_NUM_THREADS) when a timm backbone's convolutions run, else 1:
    small networks are fastest on one thread (measured), and DDP ranks each get their own process."""
    h = cfg.hardware
    if h.threads != 0:
        return
    cores = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    h.threads = max(1, cores // h.devices) if cfg.backbone.is_timm else 1


def validate(cfg: Config) -> None:
    """Ranges and combinations the types alone cannot express. Messages name the key and the fix."""
    e, b, h, lg = cfg.env, cfg.backbone, cfg.hardware, cfg.logger
    _check(cfg.total_env_steps > 0, "total_env_steps", cfg.total_env_steps, "must be > 0")
    _check(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    _check(e.kind in ENV_KINDS, "env.kind", e.kind, f"use one of {', '.join(ENV_KINDS)}")
    _check(e.obs_mode in OBS_MODES, "env.obs_mode", e.obs_mode, f"use one of {', '.join(OBS_MODES)}")
    _check(
        not (e.kind in ("atari", "digits") and e.obs_mode == "state"),
        "env.obs_mode",
        e.obs_mode,
        f"{e.name} is observed through images only; set env.obs_mode=pixels (or auto)",
    )
    _check(0.0 <= e.sticky_actions < 1.0, "env.sticky_actions", e.sticky_actions, "must be in [0, 1)")
    _check(e.noop_max >= 0, "env.noop_max", e.noop_max, "must be >= 0")
    _check(e.frame_skip >= 1, "env.frame_skip", e.frame_skip, "must be >= 1")
    _check(e.num_envs >= 1, "env.num_envs", e.num_envs, "must be >= 1")
    _check(e.frame_size >= 16, "env.frame_size", e.frame_size, "must be >= 16 pixels")
    _check(e.frame_stack >= 1, "env.frame_stack", e.frame_stack, "must be >= 1")
    _check(b.freeze in FREEZE, "backbone.freeze", b.freeze, f"use one of {', '.join(FREEZE)}")
    _check(
        not (b.freeze == "partial" and not b.freeze_until),
        "backbone.freeze",
        b.freeze,
        "partial freezing needs the last frozen stage, e.g. backbone.freeze_until=layer2",
    )
    _check(b.bn in BN_POLICIES, "backbone.bn", b.bn, f"use one of {', '.join(BN_POLICIES)}")
    _check(b.pool in POOLS, "backbone.pool", b.pool, f"use one of {', '.join(POOLS)}")
    _check(b.stack in STACKS, "backbone.stack", b.stack, f"use one of {', '.join(STACKS)}")
    _check(
        not (b.pool == "conv" and b.feature_layer is None),
        "backbone.pool",
        b.pool,
        "a 1x1-conv projection needs a spatial map; set backbone.feature_layer=<stage> or backbone.pool=avg",
    )
    _check(b.pool_channels >= 1, "backbone.pool_channels", b.pool_channels, "must be >= 1")
    _check(
        b.input_size is None or b.input_size >= 16,
        "backbone.input_size",
        b.input_size,
        "must be >= 16 pixels, or null (the model's pretrained input size)",
    )
    _check(b.embed_dim >= 0, "backbone.embed_dim", b.embed_dim, "must be >= 0 (0 = no projection)")
    _check(b.lr_mult >= 0, "backbone.lr_mult", b.lr_mult, "must be >= 0 (0 = the backbone does not move)")
    _check(
        b.layer_decay is None or 0 < b.layer_decay <= 1,
        "backbone.layer_decay",
        b.layer_decay,
        "must be in (0, 1] or null (off)",
    )
    _check(
        not (b.layer_decay is not None and not b.is_timm),
        "backbone.layer_decay",
        b.layer_decay,
        f"layer-wise decay needs a timm backbone's stage structure; {b.name} has none: set it to null",
    )
    _check(
        not (b.is_timm is False and (b.feature_layer is not None or b.resize or b.stack != "channels")),
        "backbone.feature_layer",
        b.feature_layer,
        f"feature_layer / resize / stack apply to timm backbones, not {b.name}; leave them at their defaults",
    )
    _check(
        not (b.pretrained and not b.is_timm and b.library != "transformers"),
        "backbone.pretrained",
        b.pretrained,
        f"{b.name} has no hub weights; give backbone.weights=<file or MLflow URI> or pretrained=false",
    )
    _check(all(c > 0 for c in b.channels), "backbone.channels", b.channels, "conv widths must be > 0")
    _check(b.activation in ACTIVATIONS, "backbone.activation", b.activation, f"use one of {', '.join(ACTIVATIONS)}")
    _check(
        not (b.activation != "relu" and b.name != "mlp"),
        "backbone.activation",
        b.activation,
        f"the activation choice applies to backbone=mlp; {b.name} has its own: leave it at relu",
    )
    _check(all(s > 0 for s in b.hidden_sizes), "backbone.hidden_sizes", b.hidden_sizes, "sizes must be > 0")
    _check(b.features_dim > 0, "backbone.features_dim", b.features_dim, "must be > 0")
    _check(
        not (b.pretrained and b.weights),
        "backbone.weights",
        b.weights,
        "give either backbone.pretrained=true (hub) or backbone.weights=<file>, not both",
    )
    if e.kind == "gym" and b.takes_images and e.obs_mode == "state":
        raise ConfigError(
            f"env.obs_mode=state: backbone={b.name} takes images; set env.obs_mode=pixels (or auto), "
            "or use backbone=mlp for state vectors"
        )
    if e.kind == "gym" and not b.takes_images and e.obs_mode == "pixels":
        raise ConfigError(
            f"env.obs_mode=pixels: backbone={b.name} takes vectors; use backbone=nature_cnn or "
            "backbone=resnet18 for images, or env.obs_mode=state"
        )
    _validate_text(cfg)
    _validate_algo(cfg)
    _validate_stage(cfg.stage)
    _validate_distill(cfg)
    _check(h.accelerator in ACCELERATORS, "hardware.accelerator", h.accelerator, f"use one of {ACCELERATORS}")
    _check(h.devices >= 1, "hardware.devices", h.devices, "must be >= 1")
    _check(h.strategy in STRATEGIES, "hardware.strategy", h.strategy, f"use one of {', '.join(STRATEGIES)}")
    _check(h.precision in PRECISIONS, "hardware.precision", h.precision, f"use one of {', '.join(PRECISIONS)}")
    _check(h.threads >= 0, "hardware.threads", h.threads, "must be >= 0 (0 = auto)")
    _check(
        h.strategy != "ddp",
        "hardware.strategy",
        h.strategy,
        "Lightning's ddp re-runs this command once per device, so one job would log one MLflow run per device; "
        "use hardware.strategy=ddp_spawn (hardware=ddp_cpu on CPUs, hardware=ddp on GPUs)",
    )
    _check(
        not (h.devices > 1 and h.strategy == "auto"),
        "hardware.strategy",
        h.strategy,
        "several devices need a DDP strategy; use hardware=ddp_cpu or hardware=ddp",
    )
    _check(lg.name in LOGGERS, "logger.name", lg.name, "use logger=mlflow or logger=none")
    _check(lg.flush_every_s >= 0, "logger.flush_every_s", lg.flush_every_s, "must be >= 0")
    _check(cfg.eval.episodes >= 1, "eval.episodes", cfg.eval.episodes, "must be >= 1")
    _check(
        cfg.eval.every_env_steps >= 0,
        "eval.every_env_steps",
        cfg.eval.every_env_steps,
        "must be >= 0 (0 = off)",
    )
    _check(cfg.checkpoint.buffer_max_gb >= 0, "checkpoint.buffer_max_gb", cfg.checkpoint.buffer_max_gb, "must be >= 0")
    _check(
        cfg.checkpoint.every_env_steps >= 0,
        "checkpoint.every_env_steps",
        cfg.checkpoint.every_env_steps,
        "must be >= 0 (0 = only the last)",
    )


def _validate_text(cfg: Config) -> None:
    """Text envs and text backbones go together; the LM reward needs text or a describer."""
    e, b, r = cfg.env, cfg.backbone, cfg.reward
    _check(b.library in LIBRARIES, "backbone.library", b.library, f"use one of {', '.join(LIBRARIES)}")
    _check(b.pooling in POOLINGS, "backbone.pooling", b.pooling, f"use one of {', '.join(POOLINGS)}")
    _check(b.max_tokens >= 8, "backbone.max_tokens", b.max_tokens, "must be >= 8 tokens")
    _check(b.vocab_buckets >= 16, "backbone.vocab_buckets", b.vocab_buckets, "must be >= 16")
    text_env = e.kind in TEXT_ENV_KINDS
    _check(
        not (text_env and not b.is_text),
        "backbone",
        b.name,
        f"env={e.name} observes text; use a text backbone: backbone=minilm, backbone=bow or backbone=hf",
    )
    _check(
        not (b.is_text and not text_env),
        "backbone",
        b.name,
        f"a text encoder needs a text env (env=textworld, env=traffic_light_text); env={e.name} gives arrays",
    )
    tw = e.textworld
    for key, val, low in (
        ("world_size", tw.world_size, 1),
        ("nb_objects", tw.nb_objects, 0),
        ("quest_length", tw.quest_length, 1),
        ("train_games", tw.train_games, 1),
        ("held_out_games", tw.held_out_games, 0),
        ("game_seed", tw.game_seed, 0),
    ):
        _check(val >= low, f"env.textworld.{key}", val, f"must be >= {low}")
    _check(r.name in REWARDS, "reward", r.name, f"use one of {', '.join(REWARDS)}")
    if r.name == "lm_similarity":
        _check(bool(r.goal.strip()), "reward.goal", repr(r.goal), "describe the goal in words, e.g. reward.goal='...'")
        _check(r.weight > 0, "reward.weight", r.weight, "must be > 0")
        _check(-1.0 <= r.threshold < 1.0, "reward.threshold", r.threshold, "a cosine similarity: must be in [-1, 1)")


def _validate_algo(cfg: Config) -> None:
    a, h = cfg.algo, cfg.hardware
    if isinstance(a, DQNConfig):
        _validate_dqn(cfg, a)
    elif isinstance(a, TabularConfig):
        _validate_tabular(cfg, a)
    else:
        _validate_policy_gradient(cfg, a)
    if not isinstance(a, DQNConfig):
        _check(
            h.precision == "32-true",
            "hardware.precision",
            h.precision,
            f"mixed precision is wired for DQN only; use hardware.precision=32-true with algo={a.name}",
        )


def _validate_dqn(cfg: Config, a: DQNConfig) -> None:
    _check(a.lr > 0, "algo.lr", a.lr, "learning rate must be > 0, e.g. algo.lr=1e-3")
    _check(a.batch_size >= 1, "algo.batch_size", a.batch_size, "must be >= 1")
    _check(a.buffer_size >= 1, "algo.buffer_size", a.buffer_size, "must be >= 1")
    _check(
        a.batch_size <= a.buffer_size,
        "algo.batch_size",
        a.batch_size,
        f"larger than algo.buffer_size={a.buffer_size}; lower the batch or raise the buffer",
    )
    _check(
        a.learning_starts >= a.batch_size,
        "algo.learning_starts",
        a.learning_starts,
        f"must be >= algo.batch_size={a.batch_size} so the first batch can be sampled",
    )
    _check(
        a.learning_starts < cfg.total_env_steps,
        "algo.learning_starts",
        a.learning_starts,
        f"never reached within total_env_steps={cfg.total_env_steps}; lower it or raise the budget",
    )
    _check(0.0 < a.gamma <= 1.0, "algo.gamma", a.gamma, "must be in (0, 1]")
    _check(a.train_freq >= 1, "algo.train_freq", a.train_freq, "must be >= 1 env step")
    _check(a.gradient_steps >= 1, "algo.gradient_steps", a.gradient_steps, "must be >= 1")
    _check(a.target_update_interval >= 1, "algo.target_update_interval", a.target_update_interval, "must be >= 1")
    _check(0.0 < a.tau <= 1.0, "algo.tau", a.tau, "must be in (0, 1]; 1.0 is a hard copy")
    for key, val in (("algo.eps_start", a.eps_start), ("algo.eps_end", a.eps_end)):
        _check(0.0 <= val <= 1.0, key, val, "must be in [0, 1]")
    _check(a.eps_decay_steps >= 1, "algo.eps_decay_steps", a.eps_decay_steps, "must be >= 1")
    _check(a.max_grad_norm > 0, "algo.max_grad_norm", a.max_grad_norm, "must be > 0")
    _check(a.huber_delta > 0, "algo.huber_delta", a.huber_delta, "must be > 0")
    _check(a.chunk_steps >= 1, "algo.chunk_steps", a.chunk_steps, "must be >= 1")
    _check(1 <= a.n_step <= 20, "algo.n_step", a.n_step, "must be in 1..20 (1 = one-step TD)")
    _check(0.0 <= a.per_alpha <= 1.0, "algo.per_alpha", a.per_alpha, "must be in [0, 1] (0 = uniform)")
    for key, val in (("algo.per_beta_start", a.per_beta_start), ("algo.per_beta_end", a.per_beta_end)):
        _check(0.0 <= val <= 1.0, key, val, "must be in [0, 1]")
    _check(a.per_eps > 0, "algo.per_eps", a.per_eps, "must be > 0 so every transition can be drawn")
    _check(a.prior.weight >= 0, "algo.prior.weight", a.prior.weight, "must be >= 0 (0 = no prior)")
    _check(
        not (a.prior.model and cfg.env.kind not in TEXT_ENV_KINDS),
        "algo.prior.model",
        a.prior.model,
        f"a language-model prior scores text commands; env={cfg.env.name} has none: use a text env or drop it",
    )
    _check(
        not (a.prior.weight > 0 and not a.prior.model),
        "algo.prior.weight",
        a.prior.weight,
        "a prior weight needs a prior: set algo.prior.model=<causal LM folder or hub id>",
    )


TABULAR_UPDATES = ("q_learning", "sarsa", "expected_sarsa")


def _validate_tabular(cfg: Config, a: TabularConfig) -> None:
    h = cfg.hardware
    _check(a.update in TABULAR_UPDATES, "algo.update", a.update, f"use one of {', '.join(TABULAR_UPDATES)}")
    _check(0.0 < a.gamma <= 1.0, "algo.gamma", a.gamma, "must be in (0, 1]")
    for key, val in (("algo.lr_start", a.lr_start), ("algo.lr_end", a.lr_end)):
        _check(0.0 < val <= 1.0, key, val, "must be in (0, 1]")
    for key, val in (("algo.eps_start", a.eps_start), ("algo.eps_end", a.eps_end)):
        _check(0.0 <= val <= 1.0, key, val, "must be in [0, 1]")
    _check(a.eps_decay_steps >= 1, "algo.eps_decay_steps", a.eps_decay_steps, "must be >= 1")
    _check(a.lr_decay_steps >= 1, "algo.lr_decay_steps", a.lr_decay_steps, "must be >= 1")
    _check(a.chunk_steps >= 1, "algo.chunk_steps", a.chunk_steps, "must be >= 1")
    _check(
        h.accelerator == "cpu" and h.devices == 1,
        "hardware",
        h.name,
        f"a Q-table lives in one process on the CPU; use hardware=cpu with algo={a.name}",
    )


def _validate_policy_gradient(cfg: Config, a: PolicyGradientConfig) -> None:
    _check(a.lr > 0, "algo.lr", a.lr, "learning rate must be > 0, e.g. algo.lr=3e-4")
    _check(a.lr_end is None or a.lr_end >= 0, "algo.lr_end", a.lr_end, "must be >= 0 or null (constant lr)")
    _check(a.n_steps >= 1, "algo.n_steps", a.n_steps, "must be >= 1 env step per env per rollout")
    _check(a.epochs >= 1, "algo.epochs", a.epochs, "must be >= 1")
    rollout = a.n_steps * cfg.env.num_envs
    _check(
        1 <= a.minibatches <= rollout,
        "algo.minibatches",
        a.minibatches,
        f"must be in 1..{rollout} (the rollout, algo.n_steps x env.num_envs, split into this many)",
    )
    _check(0.0 < a.gamma <= 1.0, "algo.gamma", a.gamma, "must be in (0, 1]")
    _check(0.0 <= a.gae_lambda <= 1.0, "algo.gae_lambda", a.gae_lambda, "must be in [0, 1] (1 = Monte-Carlo returns)")
    _check(a.clip_range is None or a.clip_range > 0, "algo.clip_range", a.clip_range, "must be > 0, or null (no clip)")
    _check(
        a.clip_range_end is None or (a.clip_range is not None and a.clip_range_end >= 0),
        "algo.clip_range_end",
        a.clip_range_end,
        "a clip schedule needs algo.clip_range set and an end >= 0; or null (constant)",
    )
    _check(a.ent_coef >= 0, "algo.ent_coef", a.ent_coef, "must be >= 0")
    _check(a.max_grad_norm > 0, "algo.max_grad_norm", a.max_grad_norm, "must be > 0")
    _check(a.target_kl is None or a.target_kl > 0, "algo.target_kl", a.target_kl, "must be > 0 or null (off)")
    c = a.critic
    _check(
        c.backbone in CRITIC_BACKBONES,
        "algo.critic.backbone",
        c.backbone,
        f"use one of {', '.join(CRITIC_BACKBONES)}",
    )
    _check(c.coef > 0, "algo.critic.coef", c.coef, "must be > 0")
    _check(c.clip_range is None or c.clip_range > 0, "algo.critic.clip_range", c.clip_range, "must be > 0 or null")
    _check(
        not (c.backbone == "same-as-actor-frozen" and not cfg.backbone.has_weights),
        "algo.critic.backbone",
        c.backbone,
        "a frozen copy of a random backbone is a fixed random projection; give backbone.weights=<file or "
        "MLflow URI> (or pretrained=true), or use algo.critic.backbone=separate",
    )


STAGES = ("rl", "pretrain")
OBJECTIVES = ("supervised", "inverse_dynamics")


def _validate_stage(s: StageConfig) -> None:
    _check(s.name in STAGES, "stage", s.name, f"use one of {', '.join(STAGES)}")
    _check(s.objective in OBJECTIVES, "stage.objective", s.objective, f"use one of {', '.join(OBJECTIVES)}")
    _check(s.epochs >= 1, "stage.epochs", s.epochs, "must be >= 1")
    _check(s.batch_size >= 1, "stage.batch_size", s.batch_size, "must be >= 1")
    _check(s.lr > 0, "stage.lr", s.lr, "must be > 0")
    _check(0 < s.val_fraction < 1, "stage.val_fraction", s.val_fraction, "must be in (0, 1)")
    at_least = f"collect at least 2 x stage.batch_size={s.batch_size}"
    _check(s.frames >= 2 * s.batch_size, "stage.frames", s.frames, at_least)
    _check(
        s.collect_policy == "random" or s.collect_policy.startswith(("runs:/", "models:/")),
        "stage.collect_policy",
        s.collect_policy,
        "use random or an MLflow model URI (runs:/<id>/policy, models:/<name>/<version>)",
    )


DISTILL = ("none", "policy", "kickstart")


def _validate_distill(cfg: Config) -> None:
    d = cfg.distill
    _check(d.name in DISTILL, "distill", d.name, f"use one of {', '.join(DISTILL)}")
    if d.name == "none":
        return
    _check(
        bool(d.teacher) and str(d.teacher).startswith(("runs:/", "models:/")),
        "distill.teacher",
        d.teacher,
        "give the teacher policy's MLflow URI (the policy_uri tag of its run, or models:/<name>/<version>)",
    )
    _check(
        not isinstance(cfg.algo, TabularConfig),
        "distill",
        d.name,
        f"distillation trains a network; algo={cfg.algo.name} is a table: use algo=dqn or algo=ppo",
    )
    _check(d.temperature > 0, "distill.temperature", d.temperature, "must be > 0")
    for key, val in (("distill.coef_start", d.coef_start), ("distill.coef_end", d.coef_end)):
        _check(val >= 0, key, val, "must be >= 0")
    _check(d.coef_steps >= 1, "distill.coef_steps", d.coef_steps, "must be >= 1")
    _check(
        not (isinstance(cfg.algo, DQNConfig) and cfg.backbone.freeze == "all" and cfg.backbone.cache_features),
        "backbone.cache_features",
        cfg.backbone.cache_features,
        "the replay buffer holds features, but the teacher needs observations: set backbone.cache_features=false",
    )
