"""`backbone` group: the feature extractor (ours, any timm model, or a text encoder), its weights and its
fine-tuning policy (conf/backbone/*.yaml documents each key)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from pipeline.config.check import one_of, require

OWN_BACKBONES = ("mlp", "nature_cnn", "small_cnn", "bow")
VECTOR_BACKBONES = ("mlp",)
TEXT_OWN_BACKBONES = ("bow",)
LIBRARIES = ("auto", "timm", "transformers")
POOLINGS = ("auto", "mean", "cls", "last")
FREEZE = ("auto", "none", "all", "partial")
BN_POLICIES = ("auto", "frozen", "adapt", "train")
POOLS = ("avg", "conv")
STACKS = ("channels", "shared")
ACTIVATIONS = ("relu", "tanh")


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


def check_backbone(b: BackboneConfig) -> None:
    one_of(b.freeze, FREEZE, "backbone.freeze")
    require(
        not (b.freeze == "partial" and not b.freeze_until),
        "backbone.freeze",
        b.freeze,
        "partial freezing needs the last frozen stage, e.g. backbone.freeze_until=layer2",
    )
    one_of(b.bn, BN_POLICIES, "backbone.bn")
    one_of(b.pool, POOLS, "backbone.pool")
    one_of(b.stack, STACKS, "backbone.stack")
    require(
        not (b.pool == "conv" and b.feature_layer is None),
        "backbone.pool",
        b.pool,
        "a 1x1-conv projection needs a spatial map; set backbone.feature_layer=<stage> or backbone.pool=avg",
    )
    require(b.pool_channels >= 1, "backbone.pool_channels", b.pool_channels, "must be >= 1")
    require(
        b.input_size is None or b.input_size >= 16,
        "backbone.input_size",
        b.input_size,
        "must be >= 16 pixels, or null (the model's pretrained input size)",
    )
    require(b.embed_dim >= 0, "backbone.embed_dim", b.embed_dim, "must be >= 0 (0 = no projection)")
    require(b.lr_mult >= 0, "backbone.lr_mult", b.lr_mult, "must be >= 0 (0 = the backbone does not move)")
    require(
        b.layer_decay is None or 0 < b.layer_decay <= 1,
        "backbone.layer_decay",
        b.layer_decay,
        "must be in (0, 1] or null (off)",
    )
    require(
        not (b.layer_decay is not None and not b.is_timm),
        "backbone.layer_decay",
        b.layer_decay,
        f"layer-wise decay needs a timm backbone's stage structure; {b.name} has none: set it to null",
    )
    require(
        not (b.is_timm is False and (b.feature_layer is not None or b.resize or b.stack != "channels")),
        "backbone.feature_layer",
        b.feature_layer,
        f"feature_layer / resize / stack apply to timm backbones, not {b.name}; leave them at their defaults",
    )
    require(
        not (b.pretrained and not b.is_timm and b.library != "transformers"),
        "backbone.pretrained",
        b.pretrained,
        f"{b.name} has no hub weights; give backbone.weights=<file or MLflow URI> or pretrained=false",
    )
    require(all(c > 0 for c in b.channels), "backbone.channels", b.channels, "conv widths must be > 0")
    one_of(b.activation, ACTIVATIONS, "backbone.activation")
    require(
        not (b.activation != "relu" and b.name != "mlp"),
        "backbone.activation",
        b.activation,
        f"the activation choice applies to backbone=mlp; {b.name} has its own: leave it at relu",
    )
    require(all(s > 0 for s in b.hidden_sizes), "backbone.hidden_sizes", b.hidden_sizes, "sizes must be > 0")
    require(b.features_dim > 0, "backbone.features_dim", b.features_dim, "must be > 0")
    require(
        not (b.pretrained and b.weights),
        "backbone.weights",
        b.weights,
        "give either backbone.pretrained=true (hub) or backbone.weights=<file>, not both",
    )
    one_of(b.library, LIBRARIES, "backbone.library")
    one_of(b.pooling, POOLINGS, "backbone.pooling")
    require(b.max_tokens >= 8, "backbone.max_tokens", b.max_tokens, "must be >= 8 tokens")
    require(b.vocab_buckets >= 16, "backbone.vocab_buckets", b.vocab_buckets, "must be >= 16")
