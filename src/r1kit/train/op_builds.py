"""The build folders of compiled ops, and the lock an interrupted build leaves behind.

DeepSpeed compiles its ops (CPU Adam for ZeRO offload, its shared-memory all-reduce on CPUs, fused kernels on
GPUs) on first use through torch's extension builder, one folder per op under `TORCH_EXTENSIONS_DIR` (by default
~/.cache/torch_extensions/py311_cpu and the like). A build holds `<op>/lock` open while it runs and deletes it at
the end; every other process that needs the op waits for the file to go, with no time limit and no message. A
build that is killed (Ctrl-C on a first ZeRO run, a preempted node, a test timeout) leaves the file behind, and
every later run that needs the op then waits forever.

r1kit looks for such files before a ZeRO run starts, and `r1kit doctor` reports them. A lock that a process on
this machine holds open is a build in progress. One that no process here holds and that is older than
`STALE_AFTER_MINUTES` is left from an interrupted build: a build takes minutes, not half an hour. A younger one
may be a build on another machine that shares the folder (a home directory on NFS).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

STALE_AFTER_MINUTES = 30


@dataclass(frozen=True)
class BuildLock:
    path: Path
    age_seconds: float
    held: bool
    """A process on this machine has the file open: a build in progress."""

    @property
    def stale(self) -> bool:
        return not self.held and self.age_seconds > STALE_AFTER_MINUTES * 60

    @property
    def op(self) -> str:
        return self.path.parent.name

    def describe(self) -> str:
        return f"{self.path} ({self.op}, {self.age_seconds / 60:.0f} min old)"


def build_root() -> Path:
    """Where torch's extension builder puts op folders."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def open_files() -> set[Path]:
    """The files this machine's processes have open, as far as we may see (our own processes at least)."""
    found: set[Path] = set()
    for process in psutil.process_iter():
        try:
            found.update(Path(f.path) for f in process.open_files())
        except psutil.Error:  # another user's process, or one that has just ended
            continue
    return found


def build_locks(root: Path | None = None) -> list[BuildLock]:
    """The op build locks under `root`: `<root>/<op>/lock`, or `<root>/<py311_cpu>/<op>/lock` in the default root."""
    root = build_root() if root is None else root
    paths = sorted({*root.glob("*/lock"), *root.glob("*/*/lock")})
    if not paths:
        return []
    held = open_files()
    now = time.time()
    locks = []
    for path in paths:
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:  # the build finished meanwhile
            continue
        locks.append(BuildLock(path, age, path.resolve() in held))
    return locks


def clear_stale_build_locks(root: Path | None = None) -> list[str]:
    """Remove the locks of interrupted builds, so that the op is built again instead of waited for. Returns what
    to tell the user: each lock removed, and each one that may belong to another machine's build."""
    messages = []
    for lock in build_locks(root):
        if lock.stale:
            lock.path.unlink(missing_ok=True)
            messages.append(
                f"removed {lock.describe()}: an interrupted build left it and no process holds it, so runs "
                f"that need {lock.op} no longer wait for it"
            )
        elif not lock.held:
            messages.append(
                f"{lock.describe()}: no process on this machine holds it. If no other machine is building "
                f"{lock.op} in this folder, remove the file: this run waits for it to go"
            )
    return messages
