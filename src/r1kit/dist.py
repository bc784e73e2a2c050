"""Rank handling in one place: which process writes files and prints lines.

torchrun and DeepSpeed export RANK/LOCAL_RANK/WORLD_SIZE to every worker; reading the environment (rather than
torch.distributed) works before the process group exists and in processes that never join one.
"""

import os

from rich.console import Console

console = Console(stderr=True)


def rank() -> int:
    """Global rank of this process (0 when not launched by torchrun or DeepSpeed)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on the process that writes shared outputs (configs, reports, metrics)."""
    return rank() == 0


def print0(*args, **kwargs) -> None:
    """Print a status line (to stderr, keeping stdout for results) on the main process only."""
    if is_main_process():
        console.print(*args, **kwargs)


def _group_size() -> int:
    """Processes in the initialized process group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def max_over_ranks(value: float, device=None) -> float:
    """The largest of every process's `value` (all processes must call it at the same point; `device`: where
    the backend reduces, the GPU for NCCL). Without a process group, `value` itself."""
    if _group_size() == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def barrier() -> None:
    """Wait until every process of the group gets here (nothing without a process group)."""
    if _group_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def wait_for(path, timeout: float, what: str) -> None:
    """On a process other than the main one: wait until `path` exists (the main process publishes it whole),
    for work done once per run before the processes form a group (cleaning the data, saving the base model)."""
    import time
    from pathlib import Path

    from r1kit.errors import UserError

    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise UserError(
                f"process {rank()} waited {timeout:.0f} s for {what} ({path}), which process 0 writes"
            )
        time.sleep(0.2)
