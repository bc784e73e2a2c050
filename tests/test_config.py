from pathlib import Path

import pytest
import yaml

from r1kit.config import Recipe, build_recipe, describe_fields, load_recipe
from r1kit.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_a_valid_recipe():
    recipe = load_recipe(None)
    assert recipe.train.learning_rate == 2e-5
    assert recipe.serve.host == "127.0.0.1"
    assert recipe.model.trust_remote_code is False
    assert recipe.run_dir == Path("runs/r1kit-run")


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.name


def test_every_field_has_a_description():
    rows = describe_fields(Recipe)
    assert len(rows) > 60
    undocumented = [name for name, _type, _default, description in rows if not description]
    assert undocumented == []
    # Sections are documented too.
    assert all(field.description for field in Recipe.model_fields.values())


def test_overrides_are_parsed_and_validated(tmp_path):
    path = write(tmp_path, "name: base\ntrain:\n  learning_rate: 1.0e-4\n")
    recipe = load_recipe(
        path,
        [
            "train.learning_rate=3e-5",
            "train.lora.r=8",
            "train.lora.target_modules=[q_proj, v_proj]",
            "eval.limit=5",
            "model.preset=tiny-qwen2",
            "train.max_steps=null",
        ],
    )
    assert recipe.train.learning_rate == 3e-5
    assert recipe.train.lora.r == 8
    assert recipe.train.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.eval.limit == 5
    assert recipe.model.preset == "tiny-qwen2"
    assert recipe.train.max_steps is None


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    # PyYAML alone reads `3e-5` as a string; passed through `extra` it would reach TRL as text.
    recipe = load_recipe(write(tmp_path, "train:\n  learning_rate: 3e-5\n  extra: {min_lr: 1e-6}\n"))
    assert recipe.train.learning_rate == 3e-5
    assert recipe.train.extra == {"min_lr": 1e-6}


def error_of(raw, overrides=()) -> str:
    with pytest.raises(UserError) as info:
        build_recipe(raw, "r.yaml", list(overrides))
    return str(info.value)


def test_unknown_key_names_the_path_and_allowed_keys():
    message = error_of({"train": {"learning_rat": 1e-4}})
    assert "train.learning_rat: unknown key" in message
    assert "learning_rate" in message.split("allowed keys here:")[1]


def test_unknown_top_level_section():
    message = error_of({"trainer": {}})
    assert "trainer: unknown key" in message and "train" in message


def test_wrong_type_and_impossible_values_are_all_reported():
    message = error_of(
        {
            "train": {"learning_rate": -1, "per_device_batch_size": "two", "lr_scheduler": "triangle"},
            "serve": {"port": 70000},
        }
    )
    assert "train.learning_rate: Input should be greater than 0 (got -1)" in message
    assert "train.per_device_batch_size: Input should be a valid integer" in message
    assert "train.lr_scheduler:" in message and "'cosine'" in message and "(got 'triangle')" in message
    assert "serve.port: Input should be less than or equal to 65535" in message


def test_bad_preset_lists_the_presets():
    message = error_of({"model": {"preset": "huge"}})
    assert "model.preset" in message and "'tiny-deepseek-v3'" in message and "'small-qwen2'" in message


def test_cross_field_rules():
    assert "offload_optimizer needs strategy zero2 or zero3" in error_of(
        {"train": {"offload_optimizer": True}}
    )
    assert "offload_parameters needs strategy zero3" in error_of(
        {"train": {"strategy": "zero2", "offload_parameters": True}}
    )
    assert "not both" in error_of({"model": {"path": "x", "preset": "tiny-qwen2"}})
    assert "during_training_samples needs during_training: true" in error_of(
        {"eval": {"during_training_samples": 8}}
    )
    assert "1 sample cannot mix right and wrong" in error_of(
        {"eval": {"during_training": True, "during_training_samples": 1}}
    )
    # a ranking metric the run would never log fails here, not at the first validation minutes in
    assert "eval_accuracy is logged only with eval.during_training: true" in error_of(
        {"train": {"metric_for_best_model": "accuracy"}}
    )
    assert "eval_mixed_groups is logged only with eval.during_training_samples" in error_of(
        {"train": {"metric_for_best_model": "eval_mixed_groups"}, "eval": {"during_training": True}}
    )
    build_recipe(
        {
            "train": {"metric_for_best_model": "eval_sampled_accuracy"},
            "eval": {"during_training": True, "during_training_samples": 4},
        },
        "test",
    )


def test_override_errors():
    assert "expected KEY=VALUE" in error_of({}, ["train.learning_rate"])
    assert "train.learning_rate is a value, not a section" in error_of(
        {"train": {"learning_rate": 1.0}}, ["train.learning_rate.x=1"]
    )
    assert "train.learning_rate: Input should be a valid number" in error_of({}, ["train.learning_rate.x=1"])
    assert "train.bogus: unknown key" in error_of({}, ["train.bogus=1"])


def test_yaml_problems_name_the_file_and_line(tmp_path):
    with pytest.raises(
        UserError, match=r"recipe.yaml:3:\d+: not valid YAML: key 'learning_rate' appears twice"
    ):
        load_recipe(write(tmp_path, "train:\n  learning_rate: 1.0\n  learning_rate: 2.0\n"))
    with pytest.raises(UserError, match="a recipe is a YAML mapping"):
        load_recipe(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(UserError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_recipe(tmp_path / "latin1.yaml")


def test_resolved_config_round_trips(tmp_path):
    recipe = load_recipe(None, ["name=trial", "train.lora.r=4", "grpo.rewards={accuracy: 1.0}"])
    written = recipe.save(tmp_path / "run")
    assert written == tmp_path / "run" / "config.yaml"
    data = yaml.safe_load(written.read_text())
    assert data["train"]["lora"]["r"] == 4 and data["name"] == "trial"
    assert load_recipe(written) == recipe


def test_only_rank_zero_writes_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert load_recipe(None).save(tmp_path) is None
    assert not (tmp_path / "config.yaml").exists()
