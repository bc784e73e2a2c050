"""The quality gates of .pre-commit-config.yaml pass on every tracked file, and they catch what they are for.

pre-commit runs the hooks with the tools of this environment (the test extra pins them), exactly as
`pre-commit run --all-files` does for a developer."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOK_NAMES = (
    "ruff lint",
    "ruff format",
    "files end in one newline",
    "no trailing whitespace",
    "no large files",
)


def pre_commit(cwd: Path, *args: str, skip: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env["SKIP"] = skip
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", "--all-files", "--color", "never", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.slow
def test_the_tree_passes_every_gate():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: pre-commit lists the files to check through git")
    done = pre_commit(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for name in (*HOOK_NAMES, "mypy (the public API", "YAML parses", "TOML parses"):
        assert any(line.startswith(name) and line.endswith("Passed") for line in done.stdout.splitlines()), (
            name
        )


def test_the_gates_catch_bad_files(tmp_path):
    """A repository with this project's hooks and ruff settings, and one file for each kind of mistake."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    shutil.copy(ROOT / ".pre-commit-config.yaml", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "undefined.py").write_text("print(undefined_name)\n")
    (tmp_path / "unformatted.py").write_text("x = {  'a':1 }\n")
    (tmp_path / "no_newline.txt").write_text("the end")
    (tmp_path / "trailing.md").write_text("a line   \n")
    (tmp_path / "big.bin").write_bytes(os.urandom(600 * 1024))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    done = pre_commit(tmp_path, skip="mypy")  # mypy checks the package's files, which this repository lacks
    assert done.returncode != 0
    lines = done.stdout.splitlines()
    for name in HOOK_NAMES:
        assert any(line.startswith(name) and line.endswith("Failed") for line in lines), (name, done.stdout)
    assert "big.bin" in done.stdout and "F821" in done.stdout  # names the file and the rule
    # the fixers fixed what they can
    assert (tmp_path / "no_newline.txt").read_text() == "the end\n"
    assert (tmp_path / "unformatted.py").read_text() == 'x = {"a": 1}\n'
    assert (tmp_path / "trailing.md").read_text() == "a line\n"
