"""`r1kit doctor`: is this machine ready to train? Each check says pass, warn or fail, and how to fix it.

Checks read the machine (/proc, /sys, nvidia-smi, installed package metadata) without importing the heavy
optional packages (vLLM, DeepSpeed), so the doctor stays fast and cannot be crashed by a broken install.
A fail means a run would not work; a warn means it would work, slower or smaller than it could.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from r1kit.hardware import cpu_flags, cpu_has_native_bf16, package_version

GIB = 1024**3
RUN_DISK_GIB = 5
"""Free space a run needs by default: the checkpoints of a small model's run."""
PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str
    """pass, warn or fail."""
    detail: str
    fix: str = ""
    """One line that makes the check pass; empty when it passes."""

    def to_dict(self) -> dict:
        return asdict(self)


def _nvidia_smi(*args: str) -> str | None:
    """Output of nvidia-smi with `args`, or None where there is no working nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


# ------------------------------------------------------------------------------------------------- system


def check_os() -> Check:
    system, kernel = platform.system(), platform.release()
    if system == "Linux":
        return Check("os", PASS, f"Linux {kernel}")
    return Check("os", WARN, f"{system} {kernel}", "Distributed training (NCCL, DeepSpeed) needs Linux")


def check_cpu() -> Check:
    logical, physical = psutil.cpu_count(logical=True) or 0, psutil.cpu_count(logical=False) or 0
    flags = cpu_flags()
    isa = [name for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if name in flags]
    detail = f"{logical} logical / {physical} physical cores; {' '.join(isa) or 'no AVX2'}"
    if flags and "avx2" not in flags and platform.machine() in ("x86_64", "AMD64"):
        return Check(
            "cpu", WARN, detail, "This x86 CPU lacks AVX2: PyTorch CPU kernels run several times slower"
        )
    if logical < 4:
        return Check("cpu", WARN, detail, "Fine for tiny models; data loading and CPU training want 8+ cores")
    return Check("cpu", PASS, detail)


def check_cpu_bf16() -> Check:
    if cpu_has_native_bf16():
        return Check("cpu_bf16", PASS, "native bf16 matrix instructions: CPU training uses bf16 autocast")
    return Check(
        "cpu_bf16",
        WARN,
        "no AVX512-BF16/AMX: CPU training runs in fp32",
        "CPU training is ~2x faster on a CPU with AVX512-BF16 or AMX (Intel Sapphire Rapids, AMD Zen 4)",
    )


def check_memory() -> Check:
    memory = psutil.virtual_memory()
    detail = f"{memory.total / GIB:.1f} GiB total, {memory.available / GIB:.1f} GiB available"
    if memory.total < 4 * GIB:
        return Check("memory", FAIL, detail, "Even tiny runs need ~4 GiB RAM: use a larger machine")
    if memory.total < 16 * GIB:
        return Check(
            "memory", WARN, detail, "Loading 7B checkpoints needs 16+ GiB RAM (more with CPU offload)"
        )
    return Check("memory", PASS, detail)


def _is_rotational(path: Path) -> bool | None:
    """True for a spinning disk under `path`, None when /sys does not say."""
    dev = os.stat(path).st_dev
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    for candidate in (sys_dev / "queue/rotational", sys_dev / "../queue/rotational"):
        try:
            return candidate.read_text().strip() == "1"
        except OSError:
            continue
    return None


def check_disk(path: Path, need_gib: float = RUN_DISK_GIB) -> Check:
    """Free space at `path`: fails below `need_gib`, what the run is expected to write."""
    usage = shutil.disk_usage(path)
    rotational = _is_rotational(path)
    kind = {True: "rotational disk", False: "SSD/NVMe", None: "disk type unknown"}[rotational]
    detail = f"{usage.free / GIB:.0f} GiB free of {usage.total / GIB:.0f} GiB at {path} ({kind})"
    if usage.free < need_gib * GIB:
        return Check("disk", FAIL, detail, f"Free disk space: this run needs about {need_gib:g} GiB")
    if usage.free < 50 * GIB:
        return Check("disk", WARN, detail, "A 7B run writes ~15 GiB per full checkpoint: keep 50+ GiB free")
    if rotational:
        # Virtual disks often report rotational=1 whatever backs them, so this stays a warning.
        return Check(
            "disk", WARN, detail, "Put datasets and checkpoints on SSD/NVMe: loading and saving are I/O bound"
        )
    return Check("disk", PASS, detail)


def check_swap() -> Check:
    swap = psutil.swap_memory()
    if swap.total == 0:
        return Check(
            "swap", PASS, "no swap (running out of memory stops a run at once instead of slowing it)"
        )
    detail = f"{swap.total / GIB:.1f} GiB swap, {swap.percent:.0f}% used"
    if swap.percent > 25:
        return Check("swap", WARN, detail, "Memory is short and pages are swapped: training will crawl")
    return Check("swap", PASS, detail)


def check_transparent_hugepages() -> Check:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return Check("transparent_hugepages", PASS, "not reported by this kernel")
    mode = text[text.find("[") + 1 : text.find("]")] if "[" in text else text.strip()
    if mode == "never":
        return Check(
            "transparent_hugepages",
            WARN,
            "never",
            "echo madvise | sudo tee /sys/kernel/mm/transparent_hugepage/enabled",
        )
    return Check("transparent_hugepages", PASS, mode)


def check_open_files() -> Check:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        return Check(
            "open_files",
            WARN,
            f"ulimit -n is {soft}",
            "ulimit -n 65536 (data workers and sharded checkpoints open many files)",
        )
    return Check(
        "open_files", PASS, f"ulimit -n is {'unlimited' if soft == resource.RLIM_INFINITY else soft}"
    )


def check_shm() -> Check:
    if not Path("/dev/shm").is_dir():
        return Check("shm", WARN, "no /dev/shm", "DataLoader workers and NCCL need shared memory")
    size = shutil.disk_usage("/dev/shm").total
    detail = f"/dev/shm is {size / GIB:.1f} GiB"
    if size < 1 * GIB:
        return Check("shm", WARN, detail, "In Docker, run with --shm-size=16g (or --ipc=host)")
    return Check("shm", PASS, detail)


def check_python() -> Check:
    version = platform.python_version()
    return Check("python", PASS, f"{version} ({sys.executable})")


# ------------------------------------------------------------------------------------------ torch and GPUs


def _driver_cuda_version() -> str | None:
    """Highest CUDA version the installed NVIDIA driver supports, from nvidia-smi's banner."""
    banner = _nvidia_smi()
    if banner and "CUDA Version:" in banner:
        return banner.split("CUDA Version:")[1].split()[0]
    return None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("torch", FAIL, "not installed", "make setup (installs the CPU build without a GPU)")]
    checks = []
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    checks.append(Check("torch", PASS, f"{torch.__version__} ({build})"))
    driver_cuda = _driver_cuda_version()
    gpus_listed = _nvidia_smi("-L")
    if (
        torch.version.cuda
        and driver_cuda
        and _version_tuple(driver_cuda) < _version_tuple(torch.version.cuda)
    ):
        checks.append(
            Check(
                "cuda_match",
                FAIL,
                f"torch built for CUDA {torch.version.cuda}, driver supports {driver_cuda}",
                "Upgrade the NVIDIA driver, or install a torch build for an older CUDA",
            )
        )
    elif gpus_listed and not torch.version.cuda:
        checks.append(
            Check(
                "cuda_match",
                FAIL,
                "nvidia-smi lists GPUs but torch is a CPU build",
                "Install a CUDA build of torch (pip install torch) and re-run make setup",
            )
        )
    elif torch.version.cuda:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        nccl = ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else "n/a"
        checks.append(
            Check(
                "cuda_match",
                PASS,
                f"CUDA {torch.version.cuda}, driver supports {driver_cuda}, cuDNN {cudnn}, NCCL {nccl}",
            )
        )
    checks.append(check_gpus(torch))
    return checks


def check_gpus(torch) -> Check:
    if not torch.cuda.is_available():
        return Check(
            "gpu",
            WARN,
            "no CUDA GPU: CPU mode (tiny and small models only)",
            "Run on a machine with an NVIDIA GPU for 7B+ models",
        )
    lines = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        bf16 = "bf16" if props.major >= 8 else "no bf16 (fp16 + loss scaling)"
        lines.append(
            f"{index}: {props.name} {props.total_memory / GIB:.0f} GiB sm_{props.major}{props.minor} {bf16}"
        )
    driver = _nvidia_smi("--query-gpu=driver_version", "--format=csv,noheader")
    detail = "; ".join(lines) + (f"; driver {driver.splitlines()[0]}" if driver else "")
    return Check("gpu", PASS, detail)


def check_interconnect() -> Check:
    infiniband = (
        sorted(p.name for p in Path("/sys/class/infiniband").glob("*"))
        if Path("/sys/class/infiniband").is_dir()
        else []
    )
    nvlink_status = _nvidia_smi("nvlink", "-s")
    nvlink = bool(nvlink_status and "GB/s" in nvlink_status)
    gpu_list = _nvidia_smi("-L") or ""
    num_gpus = sum(1 for line in gpu_list.splitlines() if line.startswith("GPU "))
    detail = f"NVLink: {'yes' if nvlink else 'no'}; InfiniBand: {', '.join(infiniband) or 'none'}"
    if num_gpus >= 2 and not nvlink:
        return Check(
            "interconnect",
            WARN,
            detail,
            "GPUs talk over PCIe: prefer ZeRO-2/DDP over ZeRO-3 or tensor parallelism",
        )
    return Check("interconnect", PASS, detail)


def check_nccl_env() -> Check:
    nccl_vars = {k: v for k, v in os.environ.items() if k.startswith("NCCL_")}
    detail = ", ".join(f"{k}={v}" for k, v in sorted(nccl_vars.items())) or "no NCCL_* variables set"
    has_infiniband = Path("/sys/class/infiniband").is_dir() and any(Path("/sys/class/infiniband").iterdir())
    if nccl_vars.get("NCCL_IB_DISABLE") == "1" and has_infiniband:
        return Check(
            "nccl_env",
            WARN,
            detail,
            "NCCL_IB_DISABLE=1 with InfiniBand present: unset it for fast multi-node",
        )
    if nccl_vars.get("NCCL_DEBUG", "").upper() in ("INFO", "TRACE"):
        return Check("nccl_env", WARN, detail, "NCCL_DEBUG=INFO floods logs: set it only while debugging")
    return Check("nccl_env", PASS, detail)


# ------------------------------------------------------------------------------------------------ packages

REQUIRED = ["transformers", "tokenizers", "safetensors", "pydantic", "trl", "peft", "accelerate", "datasets"]
# (distribution, what it is for, whether it needs a CUDA GPU)
OPTIONAL = [
    ("deepspeed", "ZeRO-1/2/3 and CPU offload", False),
    ("vllm", "fast rollouts and serving", True),
    ("bitsandbytes", "QLoRA and NF4 export", True),
    ("flash-attn", "flash_attention_2 kernels", True),
    ("liger-kernel", "fused Triton kernels", True),
]


def check_training_stack() -> Check:
    versions = {name: package_version(name) for name in REQUIRED}
    detail = ", ".join(f"{k} {v or 'missing'}" for k, v in versions.items())
    missing = [k for k in REQUIRED if versions[k] is None]
    if missing:
        return Check("training_stack", FAIL, detail, f"pip install -e . (missing: {', '.join(missing)})")
    return Check("training_stack", PASS, detail)


def check_optional(cuda: bool) -> list[Check]:
    checks = []
    for distribution, purpose, needs_cuda in OPTIONAL:
        version = package_version(distribution)
        name = f"optional:{distribution}"
        if version is None:
            extra = "gpu" if needs_cuda else distribution
            checks.append(Check(name, PASS, f"not installed ({purpose}; pip install 'r1kit[{extra}]')"))
        elif needs_cuda and not cuda:
            checks.append(
                Check(
                    name,
                    WARN,
                    f"{version} installed, unusable without a CUDA GPU",
                    f"{purpose} is refused on this machine; uninstall it or use a GPU machine",
                )
            )
        else:
            checks.append(Check(name, PASS, f"{version} ({purpose})"))
    return checks


def check_op_builds() -> Check:
    """Locks left by interrupted builds of DeepSpeed's ops: a run that needs the op would wait for them forever."""
    from r1kit.train.op_builds import STALE_AFTER_MINUTES, build_locks

    if package_version("torch") is None:
        return Check("op_builds", PASS, "torch is not installed: no op has been built")
    locks = [lock for lock in build_locks() if not lock.held]
    if not locks:
        return Check("op_builds", PASS, "no interrupted op build")
    return Check(
        "op_builds",
        WARN,
        "; ".join(lock.describe() for lock in locks),
        "Interrupted builds left these locks: a ZeRO run that needs the op would wait for them forever. r1kit's "
        f"ZeRO runs remove those older than {STALE_AFTER_MINUTES} minutes; remove younger ones if no other "
        "machine is building",
    )


# ------------------------------------------------------------------------------------------- distributed


def check_nccl() -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check("nccl", PASS, "no CUDA GPU: processes talk over gloo (TCP)")
    if not torch.distributed.is_nccl_available():
        return Check(
            "nccl", FAIL, "this torch build has no NCCL", "Install a CUDA build of torch from pytorch.org"
        )
    version = ".".join(map(str, torch.cuda.nccl.version()))
    return Check("nccl", PASS, f"NCCL {version}")


def _interface_matches(names: list[str], spec: str) -> list[str]:
    """Interfaces NCCL/gloo would pick for a NCCL_SOCKET_IFNAME value: comma-separated prefixes, `=` for exact
    names, a leading `^` to exclude."""
    exclude = spec.startswith("^")
    patterns = spec.lstrip("^").split(",")

    def hit(name: str) -> bool:
        return any(name == p[1:] if p.startswith("=") else name.startswith(p) for p in patterns if p)

    return [n for n in names if hit(n) != exclude]


def check_network_interfaces() -> Check:
    import socket

    names = sorted({name for _, name in socket.if_nameindex()})
    detail = "interfaces: " + ", ".join(names)
    for variable in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        spec = os.environ.get(variable)
        if spec and not _interface_matches(names, spec):
            return Check(
                "interfaces",
                FAIL,
                f"{variable}={spec} matches none of {', '.join(names)}",
                f"Set {variable} to the interface the nodes reach each other on",
            )
    if not [n for n in names if n != "lo"]:
        return Check("interfaces", WARN, detail, "Only loopback: this machine cannot reach other nodes")
    return Check("interfaces", PASS, detail)


def check_allreduce(processes: int = 2) -> Check:
    """The all-reduce probe across the processes of this launch (under `r1kit launch`), or across `processes`
    local processes that torchrun starts for it."""
    import json

    from r1kit.dist import world_size

    if world_size() > 1:
        from r1kit.train.launch import allreduce_probe

        result = allreduce_probe()
        if result is None:  # not rank 0: rank 0 reports
            return Check("allreduce", PASS, "probed (reported by rank 0)")
    else:
        from r1kit.train.launch import LaunchSpec, launch_env, torchrun_command

        spec = LaunchSpec([], nproc_per_node=processes, env={"OMP_NUM_THREADS": "1"})
        try:
            done = subprocess.run(
                torchrun_command(spec, module="r1kit.train.launch"),
                capture_output=True,
                text=True,
                timeout=300,
                env=launch_env(spec),
            )
        except subprocess.TimeoutExpired:
            return Check(
                "allreduce",
                FAIL,
                f"{processes} local processes did not finish an all-reduce in 300 s",
                "Check the firewall and NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME",
            )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return Check(
                "allreduce",
                FAIL,
                f"the probe failed: {tail}",
                "Run with NCCL_DEBUG=INFO (r1kit launch --nccl-debug INFO) to see why",
            )
        result = json.loads(lines[-1])
    detail = (
        f"{result['processes']} processes over {result['backend']}: latency {result['latency_us']:.0f} us, "
        f"bus bandwidth {result['bus_bandwidth_gbps']:.2f} GB/s ({result['size_mib']} MiB)"
    )
    if not result["sum_correct"]:
        return Check(
            "allreduce", FAIL, detail + "; wrong sums", "The collective returned wrong values: check drivers"
        )
    return Check("allreduce", PASS, detail)


def run_distributed_checks() -> list[Check]:
    """`doctor --distributed`: NCCL, network interfaces and an all-reduce probe (multi-node readiness)."""
    return [check_nccl(), check_network_interfaces(), check_allreduce()]


def run_checks(path: str | Path = ".", disk_need_gib: float = RUN_DISK_GIB) -> list[Check]:
    """Run every check; `path` is where datasets and checkpoints will be written, `disk_need_gib` how much.

    The demo knows it writes far less than the default.
    """
    checks: list[Check] = []
    simple: list[Callable[[], Check]] = [
        check_os,
        check_cpu,
        check_cpu_bf16,
        check_memory,
        check_swap,
        check_transparent_hugepages,
        check_open_files,
        check_shm,
        check_python,
    ]
    checks += [fn() for fn in simple]
    checks.append(check_disk(Path(path), disk_need_gib))
    checks += check_torch()
    checks += [check_interconnect(), check_nccl_env(), check_training_stack(), check_op_builds()]
    cuda = any(c.name == "gpu" and c.status == PASS for c in checks)
    checks += check_optional(cuda)
    return checks
