"""Known, harmless library chatter, silenced once per process (spawned DDP ranks included).

Each filter names a message we understand; anything else still reaches the user.
"""

from __future__ import annotations

import logging
import os
import warnings

_MESSAGES = (
    r".*does not have many workers.*",  # our dataloader yields ticks; the data come from the env
    r".*`training_step` returned `None`.*",  # manual optimisation returns nothing by design
    r".*module\(s\) in eval mode.*",  # target and frozen networks are in eval mode on purpose
    r".*isinstance\(treespec, LeafSpec\).*",  # Lightning's own deprecation, not ours to fix
    r".*`weights_only` was not set.*",  # Lightning's spawn launcher reloading its own weights file
    r".*all_gather is deprecated.*",  # Lightning's all_gather implementation detail
    r".*No complete tensor found in the group.*",  # torch.export packing channels_last weights (CPU: exact)
)


def silence_known_noise() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per model logged
    for pattern in _MESSAGES:
        warnings.filterwarnings("ignore", pattern)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
