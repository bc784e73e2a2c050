"""`r1kit eval --endpoint` against a real server: answers come over HTTP, reasoning apart, and are scored."""

import json

from scripted import REASONING, eval_gsm8k


def test_eval_an_endpoint(server, tmp_path, cli):
    options = [
        "--limit",
        "2",
        "--num-samples",
        "2",
        "--set",
        "eval.pass_k=[1,2]",
        "--set",
        "eval.max_new_tokens=40",
    ]
    done = cli(*eval_gsm8k(server, tmp_path / "eval", *options), check=True)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    gsm8k = report["suites"]["gsm8k"]
    # The scripted model answers \boxed{18} to everything: right for GSM8K's first problem only.
    assert gsm8k["accuracy"] == 0.5 and gsm8k["pass_at_k"] == {"1": 0.5, "2": 0.5}
    assert gsm8k["accuracy_stderr"] == 0.5  # per-problem accuracies 1 and 0
    assert gsm8k["examples"][0]["reasoning"] == REASONING and gsm8k["examples"][0]["correct"] is True
    assert gsm8k["speed"]["requests"] == 4 and gsm8k["speed"]["ttft_p50"] > 0
    assert report["model"].endswith("(tiny)") and report["settings"]["temperature"] == 0.6
    assert "gsm8k accuracy" in done.stdout and "50.0%" in done.stdout
    assert (tmp_path / "eval" / "plots" / "latency.png").stat().st_size > 1000


def test_an_unreachable_endpoint_is_a_clear_error(tmp_path, cli):
    done = cli(
        "eval", "--endpoint", "http://127.0.0.1:9/v1", "--suite", "gsm8k", "--out", str(tmp_path / "e")
    )
    assert done.returncode == 2 and "cannot list models" in done.stderr
