"""`hardware` group: Lightning's accelerator, devices, strategy and precision, torch threads, compile
(conf/hardware/*.yaml documents each key). What this machine can run is checked in `machine.py`."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from pipeline.config.check import one_of, require

STRATEGIES = ("auto", "ddp_spawn", "ddp")
PRECISIONS = ("32-true", "bf16-mixed")
ACCELERATORS = ("cpu", "gpu", "cuda", "auto")


@dataclass
class HardwareConfig:
    name: str = MISSING
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    threads: int = 0
    compile: bool = False
    channels_last: bool = True
    deterministic: bool = False


def check_hardware(h: HardwareConfig) -> None:
    one_of(h.accelerator, ACCELERATORS, "hardware.accelerator")
    require(h.devices >= 1, "hardware.devices", h.devices, "must be >= 1")
    one_of(h.strategy, STRATEGIES, "hardware.strategy")
    one_of(h.precision, PRECISIONS, "hardware.precision")
    require(h.threads >= 0, "hardware.threads", h.threads, "must be >= 0 (0 = auto)")
    require(
        h.strategy != "ddp",
        "hardware.strategy",
        h.strategy,
        "Lightning's ddp re-runs this command once per device, so one job would log one MLflow run per device; "
        "use hardware.strategy=ddp_spawn (hardware=ddp_cpu on CPUs, hardware=ddp on GPUs)",
    )
    require(
        not (h.devices > 1 and h.strategy == "auto"),
        "hardware.strategy",
        h.strategy,
        "several devices need a DDP strategy; use hardware=ddp_cpu or hardware=ddp",
    )
