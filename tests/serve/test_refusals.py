"""`r1kit serve` refuses what it cannot run, before loading anything, with a message and exit status 2."""


def test_vllm_without_a_gpu_is_refused(scripted_model_dir, cli):
    done = cli("serve", "--model", str(scripted_model_dir), "--engine", "vllm", "--port", "0")
    assert done.returncode == 2 and "vllm needs a CUDA GPU" in done.stderr


def test_an_adapter_folder_is_refused_with_the_way_forward(tmp_path, cli):
    (tmp_path / "adapter_config.json").write_text("{}")
    done = cli("serve", "--model", str(tmp_path), "--port", "0")
    assert done.returncode == 2 and "r1kit export" in done.stderr


def test_bad_settings_name_the_field(scripted_model_dir, cli):
    done = cli("serve", "--model", str(scripted_model_dir), "--port", "70000")
    assert done.returncode == 2 and "serve.port" in done.stderr
    done = cli("serve", "--model", str(scripted_model_dir), "--engine", "tgi")
    assert done.returncode == 2 and "serve.engine" in done.stderr


def test_a_model_without_a_chat_template_refuses_chats_with_a_400(scripted_model_dir, tmp_path):
    """Chats need the template; plain completions do not. (A 500 once, when the error type changed.)"""
    import json
    import shutil
    import urllib.error
    import urllib.request

    from scripted import API_KEY, start_server

    model_dir = tmp_path / "no-template"
    shutil.copytree(scripted_model_dir, model_dir)
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    (model_dir / "chat_template.jinja").unlink(missing_ok=True)
    server = start_server(model_dir)
    try:

        def post(path, body):
            request = urllib.request.Request(
                server.url + path,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        status, body = post(
            "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert status == 400 and "use /v1/completions" in body["error"]["message"]
        status, body = post("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 2})
        assert status == 200
    finally:
        assert server.stop() == 0
