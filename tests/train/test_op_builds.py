"""Locks left by interrupted builds of DeepSpeed's ops: found, told apart from a build in progress, and removed
before a ZeRO run would wait for them forever."""

import os
import subprocess
import sys
import time

import pytest

from r1kit import doctor
from r1kit.doctor import PASS, WARN
from r1kit.train.op_builds import STALE_AFTER_MINUTES, build_locks, clear_stale_build_locks
from r1kit.train.strategies import strategy_settings

HOUR_AGO = time.time() - 2 * STALE_AFTER_MINUTES * 60


def lock_file(root, op, *, age_from=None):
    path = root / op / "lock"
    path.parent.mkdir(parents=True)
    path.touch()
    if age_from is not None:
        os.utime(path, (age_from, age_from))
    return path


@pytest.fixture
def build_in_progress():
    """A real process holding a lock open, as torch's extension builder does while it compiles."""
    started = []

    def hold(path):
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; f = open(sys.argv[1]); print(1, flush=True); time.sleep(60)",
                path,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout.readline().strip() == "1"  # the file is open
        started.append(holder)

    yield hold
    for holder in started:
        holder.kill()
        holder.wait()


def test_an_old_lock_nobody_holds_is_removed_and_a_held_one_is_kept(tmp_path, monkeypatch, build_in_progress):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    interrupted = lock_file(tmp_path, "cpu_adam", age_from=HOUR_AGO)
    building = lock_file(tmp_path, "deepspeed_shm_comm", age_from=HOUR_AGO)
    build_in_progress(building)
    (tmp_path / "fused_adam").mkdir()  # a finished build: no lock

    found = {lock.op: lock for lock in build_locks()}
    assert set(found) == {"cpu_adam", "deepspeed_shm_comm"}
    assert found["cpu_adam"].stale and not found["cpu_adam"].held
    assert found["deepspeed_shm_comm"].held and not found["deepspeed_shm_comm"].stale

    messages = clear_stale_build_locks()
    assert not interrupted.exists() and building.exists()
    assert len(messages) == 1 and "removed" in messages[0] and "cpu_adam" in messages[0]


def test_a_recent_lock_nobody_here_holds_is_kept_and_reported(tmp_path):
    # The default root's layout: <root>/py311_cpu/<op>/lock. Another machine sharing the folder may be building.
    recent = lock_file(tmp_path / "py311_cpu", "cpu_adam")
    messages = clear_stale_build_locks(tmp_path)
    assert recent.exists()
    assert len(messages) == 1 and str(recent) in messages[0] and "remove the file" in messages[0]


def test_doctor_warns_about_an_interrupted_build(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert doctor.check_op_builds().status == PASS
    lock = lock_file(tmp_path, "cpu_adam", age_from=HOUR_AGO)
    check = doctor.check_op_builds()
    assert check.status == WARN and str(lock) in check.detail and "forever" in check.fix


def test_a_zero_run_clears_an_interrupted_build_before_deepspeed_starts(tmp_path, monkeypatch, capsys):
    from r1kit.config import load_recipe

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    interrupted = lock_file(tmp_path, "cpu_adam", age_from=HOUR_AGO)
    recipe = load_recipe(
        None, ["model.preset=tiny-qwen2", "train.strategy=zero3", "train.offload_optimizer=true"]
    )
    monkeypatch.setenv("LOCAL_RANK", "1")  # the machine's other processes leave it to local rank 0
    strategy_settings(recipe, "fp32", cuda=False)
    assert interrupted.exists()
    monkeypatch.setenv("LOCAL_RANK", "0")
    strategy_settings(recipe, "fp32", cuda=False)
    assert not interrupted.exists() and "cpu_adam" in capsys.readouterr().err
