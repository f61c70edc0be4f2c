"""The freeze rule image and text encoders share (`backbone.freeze`: none, all, or partial up to
`freeze_until`), and which modules are BatchNorm. `encoder.apply_policy` and `text.apply_freeze` apply it."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pipeline.config.backbone import BackboneConfig
from pipeline.core.errors import ConfigError

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def frozen_names(params: list[tuple[str, nn.Parameter]], cfg: BackboneConfig, parts: Callable[[], str]) -> set[str]:
    """The parameter names `backbone.freeze` fixes: none, all, or those up to and including the last one
    under the prefix `freeze_until` (that stage or block and everything before it). `parts` lists the
    model's stages for the error naming an unknown prefix."""
    if cfg.freeze == "all":
        return {n for n, _ in params}
    if cfg.freeze != "partial":
        return set()
    stage = cfg.freeze_until
    hits = [i for i, (n, _) in enumerate(params) if n == stage or n.startswith(f"{stage}.")]
    if not hits:
        raise ConfigError(f"backbone.freeze_until={stage}: no such stage in {cfg.name}; its stages in order: {parts()}")
    return {n for n, _ in params[: hits[-1] + 1]}
