"""Where things live under `paths.outputs`: one place for each path more than one module needs."""

from __future__ import annotations

from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"  # the store `make ui` serves


def weights_cache(outputs: str | Path) -> Path:
    """Weights fetched from MLflow, converted from packages (EfficientNet-Lite0, MiniLM) or extracted once."""
    return Path(outputs) / "cache" / "weights"


def textworld_cache(outputs: str | Path) -> Path:
    """Generated TextWorld game families (pipeline/envs/textworld.py)."""
    return Path(outputs) / "textworld"
