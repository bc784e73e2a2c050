"""Facts about the device, and the start-up guards for features only some machines can run.

A GPU-only feature asked for on a machine that cannot run it is refused with a message that says what is
missing and how to get it; r1kit never silently runs something else instead.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path

from r1kit.errors import UserError

# Memory (GB) and dense bf16 peak (FLOP/s) of common accelerators, from the vendors' data sheets. Ordered so
# that a name that contains another (L40S and L4, A100 and A10) comes first: CUDA device names are matched by
# substring.
ACCELERATORS: dict[str, tuple[float, float]] = {
    "H200": (141, 989e12),
    "H100": (80, 989e12),
    "A100": (80, 312e12),
    "A100-40GB": (40, 312e12),
    "L40S": (48, 362e12),
    "L4": (24, 121e12),
    "A10": (24, 125e12),
    "RTX 4090": (24, 165e12),
    "RTX 3090": (24, 71e12),
}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX), so bf16 autocast is a
    speed-up rather than an emulation."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def package_version(distribution: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def require_cuda(feature: str) -> None:
    """Refuse `feature` on a machine without a usable CUDA GPU."""
    if not cuda_available():
        raise UserError(
            f"{feature} needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False). "
            "Choose a CPU setting in the recipe, or run on a GPU machine."
        )


def require_module(module: str, extra: str, feature: str) -> None:
    """Refuse `feature` when the Python module it needs is not installed; name the extra that installs it."""
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{feature} needs the `{module}` package: pip install 'r1kit[{extra}]'")


def choose_precision(requested: str) -> str:
    """The precision a run uses: `bf16`, `fp16` or `fp32`.

    `auto`: bf16 on CUDA GPUs that support it (compute capability 8.0+), fp16 with loss scaling on older GPUs,
    bf16 autocast on CPUs with native bf16 matrix instructions, else fp32. An explicit choice the device
    cannot run is refused rather than silently replaced.
    """
    import torch

    cuda = torch.cuda.is_available()
    if requested == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if requested == "fp16" and not cuda:
        raise UserError(
            "train.precision: fp16 needs a CUDA GPU (loss scaling); on a CPU use bf16, fp32 or auto"
        )
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UserError(
            "train.precision: this GPU has no bf16 support (compute capability < 8.0); use fp16 or auto"
        )
    return requested
