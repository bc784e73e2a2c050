"""`r1kit launch`: run an r1kit command as several processes through torchrun, on one node or many, or print a
SLURM batch script that does; and the all-reduce probe that `r1kit doctor --distributed` runs across them.

torchrun is the launcher (r1kit adds none of its own): r1kit builds its command line and environment, and
passes on the signals it receives. A SIGTERM or SIGINT to `r1kit launch` (a pre-empted node, Ctrl-C, or the
launcher as a container's first process) goes to the training processes themselves, which decide together to
stop after the same step and save one checkpoint (train/callbacks.py): torchrun, told first, would allow them
only 30 s before killing them. A second signal goes to torchrun, which stops them at once. NCCL
defaults: asynchronous error handling on (a rank that dies fails the collective instead of hanging it until the
timeout), `NCCL_DEBUG` only when asked, and `NCCL_SOCKET_IFNAME` / `NCCL_IB_DISABLE` passed through. The
collective timeout is the recipe's `train.collective_timeout_minutes`, applied by the trainer.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from r1kit.errors import UserError


@dataclass
class LaunchSpec:
    command: list[str]
    """The r1kit command to run in every process, without the leading `r1kit`."""
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500
    nccl_debug: str | None = None
    socket_ifname: str | None = None
    ib_disable: bool = False
    env: dict[str, str] = field(default_factory=dict)


def r1kit_command(args: list[str]) -> list[str]:
    """The command after `--`, with its leading `r1kit` dropped: every process runs `python -m r1kit ...`."""
    if args and args[0] in ("r1kit", "python -m r1kit"):
        args = args[1:]
    if not args:
        raise UserError(
            "give the r1kit command to launch after --, e.g. r1kit launch --nproc-per-node 8 -- "
            "r1kit train sft recipe.yaml"
        )
    return args


def launch_env(spec: LaunchSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    if spec.nccl_debug:
        env["NCCL_DEBUG"] = spec.nccl_debug
    if spec.socket_ifname:
        env["NCCL_SOCKET_IFNAME"] = env["GLOO_SOCKET_IFNAME"] = spec.socket_ifname
    if spec.ib_disable:
        env["NCCL_IB_DISABLE"] = "1"
    env.update(spec.env)
    return env


def torchrun_command(spec: LaunchSpec, module: str = "r1kit") -> list[str]:
    """torchrun running `python -m <module> <spec.command>` in every process."""
    if spec.nproc_per_node < 1 or spec.nnodes < 1:
        raise UserError("--nproc-per-node and --nnodes must be at least 1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(spec.nproc_per_node)]
    if spec.nnodes == 1 and spec.master_addr is None:
        cmd.append("--standalone")
    else:
        if spec.master_addr is None:
            raise UserError(
                "a run on several nodes needs --master-addr (the address of the node with rank 0)"
            )
        if not 0 <= spec.node_rank < spec.nnodes:
            raise UserError(f"--node-rank {spec.node_rank} is outside 0..{spec.nnodes - 1}")
        cmd += [
            "--nnodes",
            str(spec.nnodes),
            "--node-rank",
            str(spec.node_rank),
            "--master-addr",
            spec.master_addr,
            "--master-port",
            str(spec.master_port),
        ]
    return [*cmd, "-m", module, *spec.command]


def run(spec: LaunchSpec) -> int:
    """Run torchrun in the foreground, passing signals on (see the module docstring); its exit status (a failed
    worker fails the launch), or 128 + the signal when a signal stopped the run (its checkpoint is saved)."""
    import signal

    process = subprocess.Popen(torchrun_command(spec), env=launch_env(spec))
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        targets = _children(process.pid) if len(received) == 1 else []
        for pid in targets or [process.pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = process.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + received[0] if received and code != 0 else code


def _children(pid: int) -> list[int]:
    """The processes torchrun started (the training processes)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def default_processes() -> int:
    """One process per GPU of this node, else one."""
    from r1kit.hardware import cuda_available

    if cuda_available():
        import torch

        return torch.cuda.device_count()
    return 1


def slurm_script(
    spec: LaunchSpec, *, job_name: str, time_limit: str | None = None, partition: str | None = None
) -> str:
    """A batch script for `sbatch`: one task per node, each running torchrun with c10d rendezvous on the first
    node of the allocation."""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={spec.nnodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={spec.nproc_per_node}",
        "#SBATCH --exclusive",
        "#SBATCH --output=%x-%j.out",
    ]
    if time_limit:
        lines.append(f"#SBATCH --time={time_limit}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += [
        "set -euo pipefail",
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"export MASTER_PORT={spec.master_port}",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(launch_env(spec, base={}).items())]
    command = " ".join(shlex.quote(arg) for arg in spec.command)
    lines.append(
        f"srun torchrun --nnodes {spec.nnodes} --nproc-per-node {spec.nproc_per_node} "
        "--rdzv-id $SLURM_JOB_ID --rdzv-backend c10d --rdzv-endpoint $MASTER_ADDR:$MASTER_PORT "
        f"-m r1kit {command}"
    )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- the probe


def allreduce_probe(small_repeats: int = 20, large_mib: int | None = None) -> dict | None:
    """All-reduce latency (4-byte tensors, median) and bus bandwidth (a large tensor) across the processes of
    the current torchrun launch, over NCCL on GPUs and gloo on CPUs. Returns the figures on rank 0, else None.
    Bus bandwidth is the algorithm bandwidth x 2(n-1)/n, the figure nccl-tests reports."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    try:
        device = torch.device("cuda") if cuda else torch.device("cpu")
        world = dist.get_world_size()

        def timed(tensor) -> float:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            dist.all_reduce(tensor)
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - start

        small = torch.ones(1, device=device)
        timed(small)  # warm-up: the first collective sets up the communicator
        latency = statistics.median(timed(small) for _ in range(small_repeats))
        large_mib = large_mib or (256 if cuda else 32)
        large = torch.ones(large_mib * 2**20 // 4, device=device)
        timed(large)
        seconds = statistics.median(timed(large) for _ in range(5))
        bus = large.numel() * 4 / seconds * 2 * (world - 1) / world
        correct = bool(torch.all(small == world ** (small_repeats + 1)).item())
        result = {
            "backend": backend,
            "processes": world,
            "latency_us": latency * 1e6,
            "bus_bandwidth_gbps": bus / 1e9,
            "size_mib": large_mib,
            "sum_correct": correct,
        }
        return result if dist.get_rank() == 0 else None
    finally:
        dist.destroy_process_group()


def probe_main() -> None:
    """Entry point of `python -m r1kit.train.launch` under torchrun: rank 0 prints the probe as JSON."""
    import json

    result = allreduce_probe()
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    probe_main()
