"""`r1kit launch` (torchrun command lines, SLURM scripts) and `r1kit doctor --distributed`'s probe."""

import json
import os
import sys

import pytest
from launched import run_launched

from r1kit.errors import UserError
from r1kit.train.launch import LaunchSpec, launch_env, r1kit_command, slurm_script, torchrun_command


def test_single_node_is_standalone_and_multi_node_names_the_rendezvous():
    one = torchrun_command(LaunchSpec(["train", "sft", "r.yaml"], nproc_per_node=4))
    assert one[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--standalone" in one
    assert one[-5:] == ["-m", "r1kit", "train", "sft", "r.yaml"]
    many = torchrun_command(
        LaunchSpec(["train", "sft", "r.yaml"], 8, nnodes=2, node_rank=1, master_addr="10.0.0.1")
    )
    assert "--standalone" not in many
    assert many[many.index("--node-rank") + 1] == "1" and many[many.index("--master-addr") + 1] == "10.0.0.1"
    with pytest.raises(UserError, match="--master-addr"):
        torchrun_command(LaunchSpec(["train"], 8, nnodes=2))
    with pytest.raises(UserError, match="outside 0..1"):
        torchrun_command(LaunchSpec(["train"], 8, nnodes=2, node_rank=2, master_addr="h"))
    with pytest.raises(UserError, match="after --"):
        r1kit_command(["r1kit"])


def test_nccl_environment_defaults_and_passthrough():
    env = launch_env(
        LaunchSpec(["train"], nccl_debug="INFO", socket_ifname="ib0,eth", ib_disable=True), base={}
    )
    assert env == {
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        "NCCL_DEBUG": "INFO",
        "NCCL_SOCKET_IFNAME": "ib0,eth",
        "GLOO_SOCKET_IFNAME": "ib0,eth",
        "NCCL_IB_DISABLE": "1",
    }
    assert "NCCL_DEBUG" not in launch_env(LaunchSpec(["train"]), base={})  # only when asked
    assert (
        launch_env(LaunchSpec(["train"]), base={"TORCH_NCCL_ASYNC_ERROR_HANDLING": "0"})[
            "TORCH_NCCL_ASYNC_ERROR_HANDLING"
        ]
        == "0"
    )  # the user's own setting wins


def test_slurm_script_runs_one_torchrun_per_node(cli):
    script = slurm_script(
        LaunchSpec(["train", "sft", "my recipe.yaml"], 8, nnodes=4), job_name="r1", time_limit="2:00:00"
    )
    assert (
        "#SBATCH --nodes=4" in script
        and "#SBATCH --gpus-per-node=8" in script
        and "#SBATCH --time=2:00:00" in script
    )
    assert "--rdzv-backend c10d" in script and "-m r1kit train sft 'my recipe.yaml'" in script
    done = cli(
        "launch", "--nproc-per-node", "8", "--nnodes", "2", "--slurm", "--", "r1kit", "train", "sft", "r.yaml"
    )
    assert (
        done.returncode == 0
        and done.stdout.startswith("#!/bin/bash")
        and "srun torchrun --nnodes 2" in done.stdout
    )


@pytest.mark.multiprocess
def test_doctor_distributed_probes_all_reduce_across_launched_processes():
    command = [sys.executable, "-m", "r1kit", "launch", "--nproc-per-node", "2", "--", "r1kit", "doctor"]
    done = run_launched([*command, "--distributed", "--json"], timeout=300, env=dict(os.environ))
    checks = {c["name"]: c for c in json.loads(done.stdout)}  # one report: rank 0's
    assert checks["allreduce"]["status"] == "pass", checks["allreduce"]
    assert (
        "2 processes over gloo" in checks["allreduce"]["detail"] and "GB/s" in checks["allreduce"]["detail"]
    )
    assert checks["interfaces"]["status"] in ("pass", "warn") and checks["nccl"]["status"] == "pass"


def test_an_interface_setting_that_matches_nothing_fails(monkeypatch):
    from r1kit.doctor import FAIL, _interface_matches, check_network_interfaces

    assert _interface_matches(["eth0", "eth1", "ib0", "lo"], "eth") == ["eth0", "eth1"]
    assert _interface_matches(["eth0", "eth1", "ib0", "lo"], "=eth1,ib") == ["eth1", "ib0"]
    assert _interface_matches(["eth0", "ib0", "lo"], "^lo,ib") == ["eth0"]
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "nosuchnic")
    check = check_network_interfaces()
    assert check.status == FAIL and "NCCL_SOCKET_IFNAME=nosuchnic" in check.detail
