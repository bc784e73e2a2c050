"""r1kit: from raw data to a served DeepSeek-R1-style reasoning model, driven by one YAML recipe."""

import os as _os

# Set before anything imports torch. PyTorch's OpenMP threads spin-wait by default; on a shared CPU box that
# makes every op 2-10x slower whenever another process runs, and PASSIVE costs nothing measurable when alone.
# Only where no NVIDIA driver is present (GPU runs do their heavy work off the CPU); a user's value wins.
if not _os.path.exists("/dev/nvidiactl"):
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
