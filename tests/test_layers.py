"""The layer contract (pyproject.toml's [tool.importlinter]): no module imports from a layer above its own,
function-level imports included, r1format imports nothing else from r1kit, and GRPO does not reach into SFT."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path, src: Path) -> subprocess.CompletedProcess:
    script = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    return subprocess.run(
        [sys.executable, "-c", script], cwd=root, env={"PYTHONPATH": str(src)}, capture_output=True, text=True
    )


def test_the_layers_hold():
    done = lint_imports(ROOT, ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 3 kept, 0 broken." in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract is not vacuous: r1format importing the config (a layer up), even inside a function, fails."""
    shutil.copytree(
        ROOT / "src" / "r1kit", tmp_path / "src" / "r1kit", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    r1format = tmp_path / "src" / "r1kit" / "r1format.py"
    r1format.write_text(r1format.read_text() + "\n\ndef _upward():\n    from r1kit.config import Recipe\n")
    done = lint_imports(tmp_path, tmp_path / "src")
    assert done.returncode == 1
    assert "r1kit.r1format is not allowed to import r1kit.config" in done.stdout
