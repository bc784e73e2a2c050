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
