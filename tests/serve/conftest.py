"""Fixtures of the server tests: the scripted model (scripted.py) and one running server for the session."""

import pytest
from scripted import API_KEY, make_scripted_model, start_server


@pytest.fixture(scope="session")
def scripted_model_dir(tmp_path_factory, tokenizer_dir):
    return make_scripted_model(tokenizer_dir, tmp_path_factory.mktemp("scripted") / "scripted")


@pytest.fixture(scope="session")
def server(scripted_model_dir):
    server = start_server(scripted_model_dir, "--max-batch-size", "8")
    yield server
    assert server.stop() == 0


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
