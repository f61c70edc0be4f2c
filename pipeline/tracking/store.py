"""Where runs are tracked: an MLflow store URI made absolute (spawned processes agree on it), and an HTTP
server checked to answer before anything is trained."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import ConfigError


def absolute_tracking_uri(uri: str) -> str:
    """Anchor a relative SQLite path at the current directory, so spawned processes agree on it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return uri


def check_server(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """An HTTP tracking URI must answer within seconds, before anything is trained or written."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except (urllib.error.URLError, OSError, ValueError) as ex:
        reason = getattr(ex, "reason", ex)
        raise ConfigError(
            f"logger.tracking_uri={tracking_uri}: no MLflow server answers there ({reason}); start one "
            "(mlflow server --host 127.0.0.1) or drop the override to use the local SQLite store"
        ) from None
