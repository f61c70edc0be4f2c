"""The `hardware` group against the machine the job runs on, checked before anything is built.

`config/validate.py` checks what a config says; this checks what the machine can do with it (a CUDA device,
enough of them, bf16 support, a compiler for torch.compile) so that a mismatch is one line naming the
fix instead of a Lightning traceback after the run was created.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.config.hardware import HardwareConfig
from pipeline.core.errors import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cpu_has_bf16() -> bool:
    """bf16 arithmetic in hardware (AVX512-BF16 or AMX); without it autocast emulates bf16, slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if flags:
        return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def uses_gpu(h: HardwareConfig) -> bool:
    return h.accelerator in GPU_ACCELERATORS or (h.accelerator == "auto" and cuda_devices() > 0)


def check_machine(h: HardwareConfig) -> None:
    """Refuse, in one line naming the fix, a hardware config this machine cannot run."""
    n = cuda_devices() if h.accelerator in (*GPU_ACCELERATORS, "auto") else 0
    if h.accelerator in GPU_ACCELERATORS and n == 0:
        raise ConfigError(
            f"hardware={h.name} (accelerator={h.accelerator}): no CUDA device here; "
            "use hardware=cpu, or hardware=ddp_cpu for two processes"
        )
    gpu = h.accelerator in GPU_ACCELERATORS or (h.accelerator == "auto" and n > 0)
    if gpu and h.devices > n:
        fix = f"set hardware.devices={n}" + (", or use hardware=gpu" if n == 1 else "")
        raise ConfigError(f"hardware.devices={h.devices}: this machine has {n} CUDA device(s); {fix}")
    if h.precision == "bf16-mixed":
        import torch

        if gpu and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                "hardware.precision=bf16-mixed: this GPU has no bf16 support (it needs Ampere or newer); "
                "use hardware.precision=32-true"
            )
        if not gpu and not cpu_has_bf16():
            raise ConfigError(
                "hardware.precision=bf16-mixed: this CPU has no bf16 instructions (AVX512-BF16 or AMX), so "
                "autocast would emulate them, slower than fp32; use hardware.precision=32-true"
            )
    if h.compile and not gpu and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise ConfigError(
            "hardware.compile=true: torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH; "
            "install one or set hardware.compile=false"
        )
