"""`r1kit launch`: a command as several processes through torchrun, or a SLURM script."""

from __future__ import annotations

from typing import Annotated

import typer

from r1kit.cli.common import app


@app.command("launch", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def launch_cmd(
    ctx: typer.Context,
    nproc_per_node: Annotated[
        int | None,
        typer.Option("--nproc-per-node", help="Processes per node (default: the GPUs of this node, else 1)."),
    ] = None,
    nnodes: Annotated[int, typer.Option("--nnodes", help="Nodes taking part.")] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", help="This node's rank (0 .. nnodes-1).")] = 0,
    master_addr: Annotated[
        str | None, typer.Option("--master-addr", help="Address of the rank-0 node.")
    ] = None,
    master_port: Annotated[int, typer.Option("--master-port", help="Port of the rank-0 node.")] = 29500,
    nccl_debug: Annotated[
        str | None, typer.Option("--nccl-debug", help="NCCL_DEBUG level (INFO, WARN).")
    ] = None,
    socket_ifname: Annotated[
        str | None,
        typer.Option(
            "--nccl-socket-ifname", help="Network interface(s) for NCCL and gloo (NCCL_SOCKET_IFNAME)."
        ),
    ] = None,
    ib_disable: Annotated[bool, typer.Option("--nccl-ib-disable", help="Do not use InfiniBand.")] = False,
    slurm: Annotated[
        bool, typer.Option("--slurm", help="Print a SLURM batch script instead of running.")
    ] = False,
    job_name: Annotated[str, typer.Option("--job-name", help="SLURM job name.")] = "r1kit",
    time_limit: Annotated[str | None, typer.Option("--time", help="SLURM time limit, e.g. 24:00:00.")] = None,
    partition: Annotated[str | None, typer.Option("--partition", help="SLURM partition.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the torchrun command and exit.")] = False,
) -> None:
    """Run an r1kit command as several processes through torchrun: r1kit launch --nproc-per-node 8 -- r1kit train
    sft recipe.yaml. Multi-node: the same command on every node with --nnodes, --node-rank and --master-addr."""
    import shlex

    from r1kit.train.launch import (
        LaunchSpec,
        default_processes,
        r1kit_command,
        run,
        slurm_script,
        torchrun_command,
    )

    spec = LaunchSpec(
        r1kit_command(list(ctx.args)),
        nproc_per_node or default_processes(),
        nnodes,
        node_rank,
        master_addr,
        master_port,
        nccl_debug,
        socket_ifname,
        ib_disable,
    )
    if slurm:
        print(slurm_script(spec, job_name=job_name, time_limit=time_limit, partition=partition), end="")
        return
    if dry_run:
        print(" ".join(shlex.quote(arg) for arg in torchrun_command(spec)))
        return
    code = run(spec)
    if code:
        raise typer.Exit(code)
