"""User-facing errors: one line that names the key and the fix, exit code 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration or input. The message is shown to the user as is, on one line."""


def one_line(ex: BaseException) -> str:
    """Squash an exception (and its cause) into a single readable line.

    Hydra and OmegaConf errors span several lines (available options, full_key, object_type); a user
    reading a failed command needs the first fact and the key it concerns, not the layout.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = ex
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = " ".join(str(current).split())
        if text and not any(text in p for p in parts):
            parts.append(text)
        current = current.__cause__
    return " | ".join(parts) if parts else type(ex).__name__


class RunFailure(RuntimeError):
    """A run that started and then failed for a known reason (e.g. a non-finite loss).

    Shown as one line with exit code 1; the MLflow run is FAILED with the same message.
    """
