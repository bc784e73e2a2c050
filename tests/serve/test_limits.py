"""Back-pressure, deadlines, exposure and health: a full server says so with 503 and Retry-After, a request
past its deadline ends with 504 and frees its place, a server reachable from other machines needs a key, and
`/health` and `/ready` tell a dead engine and a full queue from a live one."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from scripted import API_KEY, start_server

LONG = 2000  # tokens: random text from a raw prompt runs to max_tokens, far past a 1 s deadline


def post(url, body, key=API_KEY, timeout=60):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def long_completion(**fields):
    return {"model": "tiny", "prompt": "Janet", "max_tokens": LONG, "temperature": 1.0, **fields}


def test_a_full_queue_gets_503_with_retry_after_and_deadlines_free_places(scripted_model_dir):
    server = start_server(
        scripted_model_dir,
        "--max-batch-size",
        "1",
        "--set",
        "serve.max_queue_size=1",
        "--set",
        "serve.request_timeout=1",
        "--set",
        f"serve.max_tokens_limit={LONG}",
    )
    try:
        url = server.url + "/v1/completions"
        replies = {}

        def send(name, body):
            replies[name] = post(url, body)

        threads = [threading.Thread(target=send, args=("running", long_completion()))]
        threads[0].start()
        time.sleep(0.3)  # decoding: the one batch place is taken
        threads.append(threading.Thread(target=send, args=("waiting", long_completion())))
        threads[1].start()
        time.sleep(0.2)  # the one queue place is taken
        full = post(url, long_completion())
        ready = get(server.url + "/ready")
        for thread in threads:
            thread.join(60)
        streamed = post(url, long_completion(stream=True))
        after = post(url, {"model": "tiny", "prompt": "Janet", "max_tokens": 4})
        ready_after = get(server.url + "/ready")
    finally:
        assert server.stop() == 0
    status, headers, body = full
    assert (
        status == 503 and headers["Retry-After"] == "1" and "waiting" in json.loads(body)["error"]["message"]
    )
    assert ready == (503, {"status": "queue full", "queue_depth": 1, "batch_size": 1})
    for name in ("running", "waiting"):
        status, _, body = replies[name]
        assert status == 504 and "serve.request_timeout" in json.loads(body)["error"]["message"], (name, body)
    status, _, body = streamed  # a stream past its deadline ends with the error as its last event
    events = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
    assert status == 200 and len(events) > 2 and "serve.request_timeout" in events[-1], events[-3:]
    assert after[0] == 200, "the places the late requests held are free again"
    assert ready_after[0] == 200 and ready_after[1]["status"] == "ready"


def serve_command(model_dir, *args):
    return [sys.executable, "-m", "r1kit", "serve", "--model", str(model_dir), "--port", "0", *args]


def test_a_server_reachable_from_other_machines_needs_a_key(scripted_model_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("R1KIT_API_KEY")}
    done = subprocess.run(
        serve_command(scripted_model_dir, "--host", "0.0.0.0"),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2 and "--insecure-no-key" in done.stderr and "R1KIT_API_KEY" in done.stderr
    server = start_server(scripted_model_dir, "--host", "0.0.0.0", "--insecure-no-key", env=env)
    try:
        assert "without an API key" in (server.stderr())
        assert get(server.url + "/v1/models")[0] == 200  # open to anyone, as asked
    finally:
        assert server.stop() == 0


def test_the_key_from_a_file(scripted_model_dir, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("R1KIT_API_KEY")}
    server = start_server(scripted_model_dir, env={**env, "R1KIT_API_KEY_FILE": str(key_file)})
    try:
        body = {"model": "tiny", "prompt": "Janet", "max_tokens": 2}
        assert post(server.url + "/v1/completions", body, key="from-a-file")[0] == 200
        assert post(server.url + "/v1/completions", body, key=API_KEY)[0] == 401
    finally:
        assert server.stop() == 0
    empty = tmp_path / "empty"
    empty.write_text("\n")
    done = subprocess.run(
        serve_command(scripted_model_dir, "--api-key-file", str(empty)),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2 and "is empty" in done.stderr


def test_health_fails_when_the_engine_has_stopped(scripted_model_dir):
    """Liveness tells a dead engine thread from a live one (Kubernetes then restarts the pod)."""
    import uvicorn

    from r1kit.engine.batching import TransformersEngine
    from r1kit.models.load import load_model, load_tokenizer
    from r1kit.serve.app import create_app
    from r1kit.serve.server import bind

    tokenizer = load_tokenizer(scripted_model_dir)
    engine = TransformersEngine(load_model(scripted_model_dir, dtype="float32"), tokenizer)
    app = create_app(engine, tokenizer, model_name="tiny")
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        assert get(url + "/health") == (200, {"status": "ok", "engine": "transformers"})
        engine.shutdown(timeout=5)  # the worker thread ends, as it would if it died
        assert get(url + "/health") == (503, {"status": "engine stopped", "engine": "transformers"})
        assert get(url + "/ready")[1]["status"] == "engine stopped"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.parametrize("section", ["serve"])
def test_the_api_key_is_never_written_to_a_run_folder(tmp_path, section):
    from r1kit.config import load_recipe

    recipe = load_recipe(None, [f"{section}.api_key=s3cret"])
    assert recipe.serve.api_key == "s3cret"
    assert "s3cret" not in recipe.to_yaml()
    recipe.save(tmp_path)
    assert "s3cret" not in (tmp_path / "config.yaml").read_text()
