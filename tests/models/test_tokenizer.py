import json

import pytest
from transformers import AutoTokenizer

from r1kit.errors import UserError
from r1kit.models.tokenizer import train_tokenizer
from r1kit.r1format import ASSISTANT, BOS, EOS, PAD, THINK_CLOSE, THINK_OPEN, USER

TEXTS = [
    "Janet's ducks lay 16 eggs per day.  She eats 3 for breakfast.\n",
    "<think>\n16 - 3 = 13\n</think>\n\n\\boxed{13}",
    "小明有 5 个苹果，吃了 2 个，还剩几个？",
    "Ünïcödé, emoji 🙂 and tabs\tand -1,234.5",
    " leading space and trailing space ",
]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def released_template(reference_data):
    path = reference_data / "chat_templates" / "DeepSeek-R1-Distill-Qwen-32B.tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8"))["chat_template"]


@pytest.mark.parametrize("text", TEXTS)
def test_bpe_round_trip(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_special_tokens(tokenizer):
    assert len(tokenizer) == 1024
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (BOS, EOS, PAD)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    for token in (BOS, EOS, PAD, USER, ASSISTANT, THINK_OPEN, THINK_CLOSE):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, token
    # <think> tags are ordinary tokens: a decoder that skips special tokens keeps them.
    ids = tokenizer(f"{THINK_OPEN}x{THINK_CLOSE}y{EOS}", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == f"{THINK_OPEN}x{THINK_CLOSE}y"
    assert THINK_OPEN not in tokenizer.all_special_tokens


def test_digits_are_split(tokenizer):
    tokens = tokenizer.tokenize("12345")
    assert list(tokens) == list("12345")


CONVERSATION = [
    {"role": "system", "content": "You are a careful math tutor."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "<think>\n2 + 3 = 5\n</think>\n\n5"},
    {"role": "user", "content": "And times 4?"},
]


def test_inference_prompt_matches_the_released_template(tokenizer, released_template):
    ours = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    theirs = tokenizer.apply_chat_template(
        CONVERSATION, tokenize=False, add_generation_prompt=True, chat_template=released_template
    )
    assert ours == theirs
    # Reasoning of earlier turns is stripped, as the released template does.
    assert "2 + 3 = 5" not in ours
    assert ours == (
        f"{BOS}You are a careful math tutor.{USER}What is 2 + 3?{ASSISTANT}\n\n5{EOS}{USER}And times 4?{ASSISTANT}"
    )


def test_training_example_keeps_the_final_think_block(tokenizer, released_template):
    example = CONVERSATION + [{"role": "assistant", "content": "<think>\n5 * 4 = 20\n</think>\n\n20"}]
    ours = tokenizer.apply_chat_template(example, tokenize=False)
    theirs = tokenizer.apply_chat_template(example, tokenize=False, chat_template=released_template)
    prefix = theirs.rsplit(ASSISTANT, 1)[0]
    assert ours.startswith(prefix + ASSISTANT)
    assert ours.endswith(f"{ASSISTANT}<think>\n5 * 4 = 20\n</think>\n\n20{EOS}")
    # The released template drops the reasoning the model is meant to learn.
    assert theirs.endswith(f"{ASSISTANT}\n\n20{EOS}")


def test_reasoning_content_field_renders_as_a_think_block(tokenizer):
    with_field = [CONVERSATION[1], {"role": "assistant", "reasoning_content": "2 + 3 = 5", "content": "5"}]
    inline = [CONVERSATION[1], {"role": "assistant", "content": "<think>\n2 + 3 = 5\n</think>\n\n5"}]
    assert tokenizer.apply_chat_template(with_field, tokenize=False) == tokenizer.apply_chat_template(
        inline, tokenize=False
    )


def test_assistant_mask_covers_answers_and_eos_only(tokenizer):
    example = CONVERSATION + [{"role": "assistant", "content": "<think>\n5 * 4 = 20\n</think>\n\n20"}]
    encoded = tokenizer.apply_chat_template(example, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    assert len(ids) == len(mask)
    masked = [i for i, m in zip(ids, mask) if m]
    assert tokenizer.decode(masked) == f"\n\n5{EOS}<think>\n5 * 4 = 20\n</think>\n\n20{EOS}"
    # Prompt tokens (system, user turns, role markers) are never trained on.
    unmasked = tokenizer.decode([i for i, m in zip(ids, mask) if not m])
    assert unmasked == (
        f"{BOS}You are a careful math tutor.{USER}What is 2 + 3?{ASSISTANT}{USER}And times 4?{ASSISTANT}"
    )


def test_unigram_round_trip_and_template(tmp_path, reference_data):
    result = train_tokenizer(
        [reference_data / "gsm8k" / "test.jsonl"],
        tmp_path / "uni",
        vocab_size=1500,
        type="unigram",
        character_coverage=0.999,
    )
    tokenizer = AutoTokenizer.from_pretrained(result.out_dir)
    assert len(tokenizer) <= 1500
    assert tokenizer.unk_token == "<unk>" and tokenizer.unk_token_id == 0
    for text in TEXTS:  # characters never seen in training (Chinese, emoji) fall back to bytes
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert tokenizer.unk_token_id not in ids
    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith(f"{USER}And times 4?{ASSISTANT}")
    ids = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert tokenizer.decode(ids) == rendered


def test_a_model_folder_keeps_its_tokenizer_kind(tmp_path):
    """A model made with a unigram tokenizer loads that tokenizer back, not its architecture's (transformers
    picks Qwen2's byte-level BPE class for a folder whose config.json says qwen2, which splits text otherwise)."""
    from r1kit.models.create import init_model
    from r1kit.models.load import load_tokenizer

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"line {i} of some words to learn" for i in range(200)))
    train_tokenizer([texts], tmp_path / "uni", vocab_size=300, type="unigram")
    init_model("tiny-qwen2", tmp_path / "uni", tmp_path / "model", seed=0)
    trained, reloaded = load_tokenizer(tmp_path / "uni"), load_tokenizer(tmp_path / "model")
    for text in ["line 5 of words", *TEXTS]:
        assert reloaded.encode(text) == trained.encode(text), text


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"   \n\n", "is empty"),
        (b"good line\ncaf\xe9 au lait\n", r"input.txt:2: not UTF-8 text \(byte 0xe9"),
    ],
)
def test_bad_text_inputs(tmp_path, content, message):
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        train_tokenizer([path], tmp_path / "out", vocab_size=500)
    assert not (tmp_path / "out").exists()


def test_bad_jsonl_names_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"data.jsonl:3: not valid JSON"):
        train_tokenizer([path], tmp_path / "out", vocab_size=500)


def test_missing_input_and_tiny_vocab(tmp_path):
    with pytest.raises(UserError, match="not found"):
        train_tokenizer([tmp_path / "nope.txt"], tmp_path / "out")
    (tmp_path / "a.txt").write_text("some text\n")
    with pytest.raises(UserError, match="too small"):
        train_tokenizer([tmp_path / "a.txt"], tmp_path / "out", vocab_size=100)
