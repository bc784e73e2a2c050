"""lm-evaluation-harness, the field's evaluation client, scores `r1kit serve` as r1kit's own `eval` does.

lm-eval runs as users run it (its command, `local-chat-completions`, the chat template applied by the server, no
tokenizer), on a local GSM8K file of the problems `r1kit eval --suite gsm8k` asks, with r1kit's instruction
and greedy decoding on both sides. The scripted model answers \\boxed{18}: right for the first problem only."""

import json
import os
import subprocess
import sys

from scripted import API_KEY, eval_gsm8k

from r1kit.config import EvalConfig

LIMIT = 3
TASK = r"""
task: r1kit_gsm8k_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: DATA
test_split: test
output_type: generate_until
doc_to_text: !function prompts.prompt
doc_to_target: "{{answer.split('####')[-1].strip()}}"
generation_kwargs:
  until: []
  do_sample: false
  temperature: 0
  max_gen_toks: 40
filter_list:
  - name: boxed
    filter:
      - function: regex
        regex_pattern: '\\boxed\{([^}]*)\}'
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def test_lm_eval_scores_the_server_as_r1kit_eval_does(server, reference_data, tmp_path, cli):
    lines = (reference_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:LIMIT]
    (tmp_path / "gsm8k.jsonl").write_text("\n".join(lines) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "r1kit_gsm8k_local.yaml").write_text(TASK.replace("DATA", str(tmp_path / "gsm8k.jsonl")))
    instruction = EvalConfig().instruction
    (tasks / "prompts.py").write_text(
        f"def prompt(doc):\n    return doc['question'] + '\\n' + {instruction!r}\n"
    )
    env = dict(os.environ, OPENAI_API_KEY=API_KEY, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "--model",
            "local-chat-completions",
            "--model_args",
            f"base_url={server.url}/v1/chat/completions,model=tiny,tokenizer_backend=none,max_retries=1",
            "--tasks",
            "r1kit_gsm8k_local",
            "--include_path",
            str(tasks),
            "--apply_chat_template",
            "--log_samples",
            "--output_path",
            str(tmp_path / "lm_eval"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [results_file] = (tmp_path / "lm_eval").rglob("results_*.json")
    [samples_file] = (tmp_path / "lm_eval").rglob("samples_r1kit_gsm8k_local_*.jsonl")
    theirs = json.loads(results_file.read_text())["results"]["r1kit_gsm8k_local"]["exact_match,boxed"]
    samples = sorted(map(json.loads, samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])

    options = ["--limit", str(LIMIT), "--set", "eval.temperature=0", "--set", "eval.max_new_tokens=40"]
    cli(*eval_gsm8k(server, tmp_path / "eval", *options), check=True)
    ours = json.loads((tmp_path / "eval" / "report.json").read_text())["suites"]["gsm8k"]
    assert theirs == ours["exact_match"] == ours["accuracy"] == 1 / LIMIT
    # The same prompts got the same completions (reasoning apart, in reasoning_content, which lm-eval ignores).
    assert len(samples) == LIMIT == len(ours["examples"])
    for sample, example in zip(samples, ours["examples"]):
        [context] = sample["arguments"]["gen_args_0"]["arg_0"]  # the chat lm-eval sent, as JSON
        assert json.loads(context) == [{"role": "user", "content": example["prompt"]}]
        assert sample["resps"] == [[example["answer"]]]
        assert sample["exact_match"] == float(example["correct"])
