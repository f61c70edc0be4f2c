"""The one way a config check refuses: `key=value: fix`, as a ConfigError (exit 2 at the entry point)."""

from __future__ import annotations

from typing import Any

from pipeline.core.errors import ConfigError


def require(ok: bool, key: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {fix}")


def one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    require(value in allowed, key, value, f"use one of {', '.join(allowed)}")
