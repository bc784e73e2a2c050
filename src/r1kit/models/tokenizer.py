"""Tokenizer training with the DeepSeek-R1 special tokens and chat template.

`train_tokenizer` trains either a byte-level BPE model (the DeepSeek/Qwen kind: every byte sequence encodes,
nothing maps to <unk>) or a SentencePiece unigram model (trained by the `sentencepiece` library, so
`character_coverage` means what SentencePiece users expect, with byte fallback for the uncovered characters),
and saves a Hugging Face tokenizer folder that `AutoTokenizer.from_pretrained` loads.

The tokens it adds and the chat template it sets are the R1 format's (r1format.py says which and why).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from r1kit.errors import UserError
from r1kit.r1format import BOS, EOS, PAD, REASONING_TOKENS, SPECIAL_TOKENS, chat_template

if TYPE_CHECKING:
    from r1kit.config import TokenizerConfig

# Pre-tokenization for byte-level BPE: letters with an optional leading non-letter, single digits (numbers
# split digit by digit, as the Qwen and DeepSeek tokenizers do, which helps arithmetic), punctuation runs,
# newlines, and whitespace. CJK text falls in \p{L} and is left to the BPE merges.
_BPE_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass
class TokenizerResult:
    out_dir: Path
    vocab_size: int
    num_texts: int
    num_chars: int


# --------------------------------------------------------------------------------------------- input text


def _strings_in(value) -> Iterator[str]:
    """Every string inside a JSON value (record fields, message lists, nested objects)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in(item)


def read_texts(path: str | Path) -> Iterator[str]:
    """Training text of one file, read by the data stage's readers (any format it ingests): each line of a
    text file, or every string field of each record. The first unreadable line stops with its file:line."""
    from r1kit.data.ingest import FORMATS, Malformed, read_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer input not found: {path}")
    line_end = "\n" if FORMATS.get(path.suffix.lower(), "text") == "text" else ""
    for source, obj, _raw in read_file(path, text_split="line"):
        if isinstance(obj, Malformed):
            hint = "; convert it first, e.g. `iconv -f GBK -t UTF-8`" if obj.reason == "not_utf8" else ""
            raise UserError(f"{source}: {obj}{hint}")
        for text in _strings_in(obj):
            yield text + line_end


class _Corpus:
    """The input texts. Construction reads every file once, so a missing, empty, non-UTF-8 or malformed
    input is reported before training starts; iteration then streams the texts again for the trainer."""

    def __init__(self, paths: list[str | Path]):
        if not paths:
            raise UserError("tokenizer training needs at least one --input file")
        self.paths = [Path(p) for p in paths]
        self.num_texts = self.num_chars = 0
        for path in self.paths:
            num_texts_before = self.num_texts
            for text in self._texts(path):
                self.num_texts += 1
                self.num_chars += len(text)
            if self.num_texts == num_texts_before:
                raise UserError(f"tokenizer input {path} is empty: it holds no text to train on")

    def _texts(self, path: Path) -> Iterator[str]:
        return (text for text in read_texts(path) if text.strip())

    def __iter__(self) -> Iterator[str]:
        for path in self.paths:
            yield from self._texts(path)


# ------------------------------------------------------------------------------------------------ training


def _train_bpe(corpus: _Corpus, vocab_size: int, min_frequency: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_BPE_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def _train_unigram(corpus: _Corpus, vocab_size: int, character_coverage: float):
    import io

    import sentencepiece as spm
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    model_bytes = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus),
            model_writer=model_bytes,
            model_type="unigram",
            vocab_size=vocab_size,
            # A soft limit: a small corpus yields fewer pieces instead of failing.
            hard_vocab_limit=False,
            character_coverage=character_coverage,
            byte_fallback=True,
            split_digits=True,
            add_dummy_prefix=False,
            # Keep text exactly as given (no NFKC, no whitespace folding) so decode(encode(x)) == x.
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise UserError(f"SentencePiece could not train a unigram model: {exc}") from None
    processor = spm.SentencePieceProcessor(model_proto=model_bytes.getvalue())
    # SentencePiece writes a space as "▁" inside its pieces. Spelling the pieces with real spaces (and
    # splitting input before each space, as SentencePiece's trainer did) keeps the vocabulary free of that
    # symbol, so decoding needs no space substitution, which would also rewrite the "▁" inside DeepSeek's
    # special tokens such as <｜end▁of▁sentence｜>.
    vocab = [
        (processor.id_to_piece(i).replace("▁", " "), processor.get_score(i))
        for i in range(processor.get_piece_size())
    ]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[^ ]+| +"), behavior="isolated")
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


def wrap_tokenizer(tokenizer, *, unk_token: str | None = None, model_max_length: int = 32768):
    """Turn a `tokenizers.Tokenizer` into a transformers tokenizer with r1kit's tokens and chat template."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in REASONING_TOKENS])
    # Plain-text encoding (pretraining) starts with BOS like the released tokenizer; the chat template writes
    # BOS itself and is encoded without special tokens, so chats get exactly one.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=unk_token,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        chat_template=chat_template(),
    )


def train_from_config(cfg: TokenizerConfig, out_dir: str | Path) -> TokenizerResult:
    """Train with the settings of a recipe's `tokenizer` section."""
    return train_tokenizer(
        cfg.inputs,
        out_dir,
        vocab_size=cfg.vocab_size,
        type=cfg.type,
        min_frequency=cfg.min_frequency,
        character_coverage=cfg.character_coverage,
    )


def train_tokenizer(
    inputs: list[str | Path],
    out_dir: str | Path,
    *,
    vocab_size: int = 8192,
    type: str = "bpe",
    min_frequency: int = 2,
    character_coverage: float = 0.9995,
) -> TokenizerResult:
    """Train a tokenizer on `inputs` and save it as a Hugging Face tokenizer folder in `out_dir`."""
    num_added = len(SPECIAL_TOKENS) + len(REASONING_TOKENS)
    if vocab_size < 256 + num_added + 1:
        raise UserError(f"vocab_size {vocab_size} is too small: it must exceed {256 + num_added}")
    corpus = _Corpus(inputs)
    if type == "bpe":
        tokenizer = _train_bpe(corpus, vocab_size - num_added, min_frequency)
    elif type == "unigram":
        tokenizer = _train_unigram(corpus, vocab_size - num_added, character_coverage)
    else:
        raise UserError(f"unknown tokenizer type {type!r}: choose bpe or unigram")
    # SentencePiece's id 0 is <unk>; with byte fallback it is never produced, but it is declared.
    hf_tokenizer = wrap_tokenizer(tokenizer, unk_token="<unk>" if type == "unigram" else None)
    out_dir = Path(out_dir)
    hf_tokenizer.save_pretrained(out_dir)
    return TokenizerResult(out_dir, len(hf_tokenizer), corpus.num_texts, corpus.num_chars)
