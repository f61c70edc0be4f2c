"""Old module paths, kept importable after the layout regroup (issue 17): a pickled policy logged before it
(a text policy pickles class paths such as `pipeline.networks_text.DRRN`) and user code importing the old
flat modules (`pipeline.train`, `pipeline.tracking`, ...) load the modules that hold those names now.

Installed from `pipeline/__init__.py`: a finder that answers only for the names below, which no longer
exist as files, by importing the new module and registering it under the old name too.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

MOVED = {
    "pipeline.networks_text": "pipeline.networks.text",
    "pipeline.prior": "pipeline.algos.text_prior",
    "pipeline.rewards": "pipeline.algos.text_reward",
    "pipeline.algos.drrn": "pipeline.algos.text_dqn",
    "pipeline.algos.base": "pipeline.algos.loop",
    "pipeline.envs.traffic_light_text": "pipeline.envs.text_traffic_light",
    "pipeline.packaged_weights": "pipeline.backbones.packaged",
    "pipeline.errors": "pipeline.core.errors",
    "pipeline.signals": "pipeline.core.signals",
    "pipeline.startup": "pipeline.core.startup",
    "pipeline.hardware": "pipeline.config.machine",
    "pipeline.buffers": "pipeline.algos.buffers",
    "pipeline.sumtree": "pipeline.algos.sumtree",
    "pipeline.optim": "pipeline.algos.optim",
    "pipeline.evaluate": "pipeline.algos.evaluate",
    "pipeline.distill": "pipeline.algos.distill",
    "pipeline.checkpoints": "pipeline.tracking.checkpoints",
    "pipeline.plots": "pipeline.tracking.plots",
    "pipeline.train": "pipeline.run.train",
    "pipeline.pretrain": "pipeline.run.pretrain",
    "pipeline.resume": "pipeline.run.resume",
    "pipeline.chain": "pipeline.run.chain",
    "pipeline.progress": "pipeline.run.progress",
    "pipeline.sweep": "pipeline.run.sweep",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The new module is already executed; the old name is an alias of it."""


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
