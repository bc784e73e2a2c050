"""The Prometheus endpoint of a training run, scraped over HTTP while the run trains and parsed with
prometheus_client's own parser."""

import json
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_endpoint_while_training(recipe_for, tmp_path):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(
        recipe_for(
            "train.max_steps=100000",
            "train.save_steps=50000",
            "train.eval_steps=50000",
            "train.metrics_port=0",
            "train.peak_tflops=1.0",
        ).to_yaml()
    )
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "r1kit", "train", "sft", str(recipe_path), "--out", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, samples = time.time() + 180, {}
        while time.time() < deadline:
            assert process.poll() is None, process.communicate()
            metrics_file = run_dir / "metrics.jsonl"
            if metrics_file.exists() and metrics_file.read_text().count('"split": "train"') >= 3:
                port = json.loads(metrics_file.read_text().splitlines()[0])["metrics_port"]
                samples = scrape(port)
                if (
                    samples.get("r1kit_train_step", 0) >= 3
                    and samples.get("r1kit_train_samples_per_second", 0) > 0
                ):
                    break
            time.sleep(0.3)
        assert samples["r1kit_train_step"] >= 3
        assert 0 < samples["r1kit_train_loss"] < 20
        assert samples["r1kit_train_learning_rate"] > 0
        assert samples["r1kit_train_grad_norm"] > 0
        assert samples["r1kit_train_tokens_per_second"] > 0
        assert samples["r1kit_train_samples_per_second"] > 0
        assert 0 < samples["r1kit_train_mfu"] < 1  # model FLOPs x tokens/s over the recipe's 1 TFLOP/s
    finally:
        process.terminate()
        process.communicate(timeout=120)
