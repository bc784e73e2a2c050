"""The reference data ships inside the package, so a clone or an install needs nothing beside it; an override
folder is read instead when R1KIT_SHARED_DATA names one."""

import json
import os
import subprocess
import sys

import pytest

import r1kit
from r1kit.errors import UserError
from r1kit.paths import reference_dir, reference_file, reference_rows


def test_the_reference_sets_ship_with_their_licenses(monkeypatch):
    monkeypatch.delenv("R1KIT_SHARED_DATA", raising=False)
    folder = reference_dir()
    assert folder.is_relative_to(r1kit.__path__[0])
    gsm8k, math500 = reference_rows("gsm8k"), reference_rows("math500")
    assert len(gsm8k) == 1319 and gsm8k[0]["answer"].endswith("#### 18")
    assert len(math500) == 500 and {"problem", "solution", "answer", "subject", "level"} <= set(math500[0])
    for license_file in (
        "gsm8k/LICENSE",
        "math500/LICENSE.prm800k",
        "chat_templates/LICENSE.DeepSeek-R1-Distill-Qwen-32B",
    ):
        assert "MIT License" in (folder / license_file).read_text()
    config = json.loads(
        (folder / "chat_templates" / "DeepSeek-R1-Distill-Qwen-32B.tokenizer_config.json").read_text()
    )
    assert "<｜Assistant｜>" in config["chat_template"]


def test_an_override_folder_is_read_instead(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n")
    monkeypatch.setenv("R1KIT_SHARED_DATA", str(tmp_path))
    assert reference_file("gsm8k") == tmp_path / "gsm8k" / "test.jsonl"
    assert reference_rows("gsm8k") == [{"question": "q", "answer": "#### 1"}]
    with pytest.raises(UserError, match="no test.jsonl or test.jsonl.gz"):
        reference_rows("math500")
    monkeypatch.setenv("R1KIT_SHARED_DATA", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no such folder"):
        reference_dir()


def test_eval_and_decontamination_run_from_a_folder_with_nothing_beside_it(tmp_path):
    """`data clean` rejects a GSM8K test question as contaminated, and the gsm8k suite loads, in a process whose
    working folder has no shared/ beside it and with no R1KIT_SHARED_DATA."""
    question = reference_rows("gsm8k")[0]["question"]
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"question": question, "answer": "18"}) + "\n")
    script = (
        "import sys, json; from r1kit.data.clean import clean; from r1kit.config import DataConfig; "
        "from r1kit.eval.suites import gsm8k; "
        "r = clean([sys.argv[1]], sys.argv[2], DataConfig(semantic={'enabled': False})); "
        "print(json.dumps([r.report['rejected'], len(gsm8k('', 3))]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "R1KIT_SHARED_DATA"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(inputs), str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rejected, problems = json.loads(done.stdout.strip().splitlines()[-1])
    assert rejected == {"eval_overlap": 1} and problems == 3
