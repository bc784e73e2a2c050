import json
from collections import namedtuple

from r1kit import doctor
from r1kit.doctor import FAIL, PASS, WARN, Check

Usage = namedtuple("Usage", "total used free")


def test_json_schema_and_exit_code(cli):
    done = cli("doctor", "--json")
    checks = json.loads(done.stdout)
    assert isinstance(checks, list) and len(checks) >= 15
    for check in checks:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in (PASS, WARN, FAIL)
        assert check["detail"]
        # Every problem comes with a one-line fix.
        assert (check["status"] == PASS) == (check["fix"] == ""), check
    names = {c["name"] for c in checks}
    assert {
        "os",
        "cpu",
        "memory",
        "disk",
        "swap",
        "transparent_hugepages",
        "open_files",
        "shm",
        "python",
        "torch",
        "gpu",
        "interconnect",
        "nccl_env",
        "training_stack",
        "optional:deepspeed",
        "optional:vllm",
        "optional:bitsandbytes",
        "optional:flash-attn",
    } <= names
    expected_rc = 1 if any(c["status"] == FAIL for c in checks) else 0
    assert done.returncode == expected_rc, done.stderr


def test_cpu_only_machine_is_a_warning_not_a_crash(cli):
    import torch

    checks = {c["name"]: c for c in json.loads(cli("doctor", "--json").stdout)}
    if not torch.cuda.is_available():
        assert checks["gpu"]["status"] == WARN and "CPU mode" in checks["gpu"]["detail"]


def test_table_output(cli):
    done = cli("doctor")
    assert "memory" in done.stdout and "training_stack" in done.stdout
    assert "Traceback" not in done.stderr


def test_disk_check_thresholds(tmp_path, monkeypatch):
    gib = doctor.GIB
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _p: Usage(500 * gib, 498 * gib, 2 * gib))
    check = doctor.check_disk(tmp_path)
    assert check.status == FAIL and "needs about 5 GiB" in check.fix
    assert doctor.check_disk(tmp_path, need_gib=1).status == WARN  # a small run (the demo) fits in 2 GiB
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _p: Usage(500 * gib, 480 * gib, 20 * gib))
    assert doctor.check_disk(tmp_path).status == WARN
    monkeypatch.setattr(doctor, "_is_rotational", lambda _p: False)
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _p: Usage(500 * gib, 100 * gib, 400 * gib))
    check = doctor.check_disk(tmp_path)
    assert check.status == PASS and "SSD" in check.detail


def test_nccl_environment(monkeypatch):
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    check = doctor.check_nccl_env()
    assert check.status == WARN and "NCCL_DEBUG=INFO" in check.detail
    monkeypatch.setenv("NCCL_DEBUG", "WARN")
    assert doctor.check_nccl_env().status == PASS


def test_optional_gpu_package_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(doctor, "package_version", lambda name: "1.0" if name == "bitsandbytes" else None)
    checks = {c.name: c for c in doctor.check_optional(cuda=False)}
    assert checks["optional:bitsandbytes"].status == WARN
    assert checks["optional:vllm"].status == PASS and "not installed" in checks["optional:vllm"].detail
    assert doctor.check_optional(cuda=True)[2].status == PASS


def test_failing_check_exits_1(cli, monkeypatch):
    # In-process, so the failing check can be injected.
    from typer.testing import CliRunner

    from r1kit.cli import app

    monkeypatch.setattr(doctor, "run_checks", lambda path: [Check("memory", FAIL, "1 GiB", "bigger machine")])
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)[0]["status"] == FAIL
