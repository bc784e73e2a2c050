"""SIGTERM lets a request in flight finish, then the server exits 0."""

import json
import time
import urllib.request

from scripted import API_KEY, start_server


def test_sigterm_finishes_the_stream_in_flight(scripted_model_dir):
    server = start_server(scripted_model_dir)
    request = urllib.request.Request(
        server.url + "/v1/completions",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        data=json.dumps(
            {"model": "tiny", "prompt": "Janet", "max_tokens": 400, "temperature": 1.0, "stream": True}
        ).encode(),
    )
    chunks, finish = [], None
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            choice = json.loads(data)["choices"][0]
            chunks.append(choice["text"])
            finish = choice["finish_reason"] or finish
            if len(chunks) == 5:
                server.process.send_signal(15)  # SIGTERM mid-stream
                time.sleep(0.5)
                try:  # no new connections while draining
                    urllib.request.urlopen(server.url + "/health", timeout=2)
                    accepted_new = True
                except OSError:
                    accepted_new = False
    assert finish == "length" and len([c for c in chunks if c]) >= 100, (
        finish,
        len(chunks),
        "".join(chunks)[-200:],
    )
    assert not accepted_new
    assert server.process.wait(timeout=60) == 0, server.stderr()
    assert "stopped after finishing in-flight requests" in server.process.stdout.read()
