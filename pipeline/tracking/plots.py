"""Pictures logged as run artifacts: the learning curve (read back from MLflow) and learned Q-tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.tracking.metrics import RunTarget

ARROWS = {"left": "←", "down": "↓", "right": "→", "up": "↑"}


def plot_q_table(
    q: np.ndarray,
    path: Path,
    title: str,
    grid: tuple[int, int] | None = None,
    action_names: list[str] | None = None,
    state_names: list[str] | None = None,
    unvisited: np.ndarray | None = None,
) -> Path:
    """Grid worlds: one cell per state, coloured by max_a Q, marked with the greedy action (grey, no
    mark: never updated, e.g. cliffs, holes, goals). Other tables: the whole table, states × actions,
    with the greedy action outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_states, n_actions = q.shape
    names = action_names or [str(a) for a in range(n_actions)]
    greedy = q.argmax(axis=1)
    if grid is not None and grid[0] * grid[1] == n_states:
        rows, cols = grid
        fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * cols + 1.5), max(3.0, 0.7 * rows + 1.0)))
        skip = unvisited if unvisited is not None else np.zeros(n_states, dtype=bool)
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
        image = ax.imshow(np.ma.masked_array(q.max(axis=1), skip).reshape(rows, cols), cmap=cmap)
        for s in range(n_states):
            if skip[s]:
                continue
            r, c = divmod(s, cols)
            name = names[greedy[s]]
            ax.text(c, r, ARROWS.get(name, name), ha="center", va="center", color="white", fontsize=12)
        ax.set_xticks(range(cols))
        ax.set_yticks(range(rows))
        fig.colorbar(image, ax=ax, label="max_a Q(s, a)")
        ax.set_title(f"{title}: greedy action and value per cell")
    else:
        height = min(12.0, max(2.5, 0.02 * n_states + 2.0))
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * n_actions + 2.0), height))
        image = ax.imshow(q, aspect="auto", cmap="viridis", interpolation="nearest")
        if n_states <= 40:  # small tables: outline the greedy action of each state
            for s in range(n_states):
                ax.add_patch(plt.Rectangle((greedy[s] - 0.5, s - 0.5), 1, 1, fill=False, ec="red", lw=2))
            ax.set_yticks(range(n_states), state_names or [str(s) for s in range(n_states)])
        ax.set_xticks(range(n_actions), names, rotation=30)
        ax.set_ylabel("state")
        fig.colorbar(image, ax=ax, label="Q(s, a)")
        ax.set_title(f"{title}: Q-table")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_learning_curve(target: RunTarget, path: Path, title: str) -> Path:
    """Training episode returns and evaluation returns against env steps, read back from MLflow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=target.tracking_uri)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("train/episode_return", "-"), ("eval/return_mean", "o-")):
        history = sorted(client.get_metric_history(target.run_id, key), key=lambda m: m.step)
        if history:
            ax.plot([m.step for m in history], [m.value for m in history], style, label=key, alpha=0.85)
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
