"""A tiny model with scripted answers, and a real `r1kit serve` process on a loopback port.

The scripted model is a real Qwen2 checkpoint whose attention and MLP outputs are zeroed, so each position's
logits depend on its own token only; its embeddings and LM head then map every token of SCRIPT to the next. After the
chat template's assistant tag it answers `<think>...</think>...` greedily and, at R1's temperature, with
probability ~1. From a token outside the script (a raw completion of "Janet", say) it samples random text
that runs to max_tokens, which the seeding and shutdown tests need."""

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

SCRIPT = "<think>Count the eggs she sold</think>Nine dollars: \\boxed{18}"  # no token twice
REASONING, ANSWER = "Count the eggs she sold", "Nine dollars: \\boxed{18}"  # right for GSM8K's first problem
API_KEY = "test-key"
MAX_TOKENS_LIMIT = 512


def eval_gsm8k(server, out, *options: str) -> list[str]:
    """The `r1kit eval` command scoring the server's answers to GSM8K (with the tests' key) into `out`."""
    return ["eval", "--endpoint", server.url + "/v1", "--api-key", API_KEY, "--suite", "gsm8k", *options,
            "--out", str(out)]  # fmt: skip


def make_scripted_model(tokenizer_dir, out_dir):
    import torch

    from r1kit.models.create import init_model
    from r1kit.models.load import load_model, load_tokenizer

    init_model("tiny-qwen2", tokenizer_dir, out_dir, seed=0)
    tokenizer, model = load_tokenizer(out_dir), load_model(out_dir, dtype="float32")
    assistant = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"][-1]
    chain = [assistant, *tokenizer(SCRIPT, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert len(set(chain[:-1])) == len(chain) - 1, "the script must not repeat a token"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        # Script token i owns hidden dimension i alone: its successor's logit is 8 * 3 = 24 (RMSNorm scales a
        # unit vector by sqrt(64)), every other logit 0. Every other token has zeros there and a 1 in the last
        # dimension, where the script's tokens (the assistant tag included) and EOS weigh -3: from them, sampling
        # never enters the script nor ends, and draws from the rest of the vocabulary until max_tokens.
        embeddings = model.model.embed_tokens.weight  # (V, 64)
        free = embeddings.shape[1] - 1
        embeddings[:, : len(chain) - 1] = 0.0
        embeddings[:, free] = 1.0
        head = torch.zeros_like(embeddings)
        for i, (token, successor) in enumerate(zip(chain, chain[1:])):
            embeddings[token] = 0.0
            embeddings[token, i] = 1.0
            head[successor, i] = 3.0
            head[successor, free] = -3.0
        head[chain[0], free] = -3.0  # nor is the assistant tag drawn, which would start the script
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(out_dir)
    return out_dir


class Server:
    def __init__(self, process: subprocess.Popen, url: str, log):
        self.process, self.url, self.log = process, url, log

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def start_server(model_dir, *args: str, env: dict | None = None) -> Server:
    """A server on a free loopback port, with the tests' API key unless `env` is given."""
    env = dict(os.environ, R1KIT_API_KEY=API_KEY) if env is None else env
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks on a full pipe
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "r1kit",
            "serve",
            "--model",
            str(model_dir),
            "--port",
            "0",
            "--model-name",
            "tiny",
            "--set",
            f"serve.max_tokens_limit={MAX_TOKENS_LIMIT}",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    line = process.stdout.readline()  # "r1kit serve: http://127.0.0.1:PORT (...)", printed once bound
    if not line.startswith("r1kit serve: "):
        process.kill()
        log.seek(0)
        raise AssertionError(f"server did not start: {line}{log.read()}")
    url = line.split()[2]
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return Server(process, url, log)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not answer /health within 60 s")
