import json

import pytest

from r1kit.config import DataConfig, QualityConfig
from r1kit.data import quality, stages
from r1kit.data.records import message, new_record
from r1kit.errors import UserError
from r1kit.paths import reference_rows


def chat(user: str, assistant: str, reasoning=None):
    return new_record(
        "t:1", "chat", messages=[message("user", user), message("assistant", assistant, reasoning)]
    )


def run(row, *fns, cfg=None):
    cfg = cfg or DataConfig()
    for fn in fns:
        if row["reject_reason"] is None:
            fn(row, cfg)
    return row


def test_unicode_normalisation():
    row = run(chat("ｆｕｌｌ　ｗｉｄｔｈ ﬁne", "ok"), stages.normalize_unicode)
    assert row["messages"][0]["content"] == "full width fine"
    nfc = run(chat("cafe\u0301", "ok"), stages.normalize_unicode, cfg=DataConfig(unicode_form="NFC"))
    assert nfc["messages"][0]["content"] == "café"


def test_html_removed_think_tags_and_math_kept():
    text = "<p>Hello&nbsp;<b>world</b> &amp; 3 &lt; 5</p><script>alert(1)</script><!-- note -->\x07done"
    assert stages.strip_html(text) == "Hello\xa0world & 3 < 5done"
    assert (
        stages.strip_html("<think>\nif a < b and c > d\n</think>\n\nx")
        == "<think>\nif a < b and c > d\n</think>\n\nx"
    )
    assert stages.strip_html("line\ttab\r\nnext") == "line\ttab\r\nnext"


@pytest.mark.parametrize(
    "text",
    [
        "std::vector<int> v; std::map<std::string, int> m;",
        "if a<b and c>d then swap",
        "&lt;think&gt; is the opening tag; &lt;｜User｜&gt; starts a user turn",
    ],
)
def test_code_math_and_escaped_r1_tags_are_text(text):
    """Measured before: `std::vector v;`, `if ad then`, and a real `<think>` from `&lt;think&gt;`."""
    assert stages.strip_html(text) == text


def test_markup_around_code_goes_and_the_code_stays():
    text = "<p>Use <code>std::vector&lt;int&gt;</code> or std::vector<int> here.</p><br/>&lt;/think&gt;"
    assert stages.strip_html(text) == "Use std::vector<int> or std::vector<int> here.&lt;/think&gt;"


def test_a_stage_that_rewrites_a_record_notes_it():
    row = run(chat("<p>Hello <b>there</b></p>", "fine"), stages.clean_html)
    assert row["messages"][0]["content"] == "Hello there"
    assert json.loads(row["modified"]) == {
        "html": "markup, entities or control characters removed in 1 field"
    }
    untouched = run(chat("std::vector<int> v;", "fine"), stages.clean_html)
    assert untouched["modified"] is None


def test_length_bounds():
    cfg = DataConfig(min_chars=10, max_chars=50)
    assert run(chat("hi", "yo"), stages.check_length, cfg=cfg)["reject_reason"] == "too_short"
    assert run(chat("x" * 60, "yo"), stages.check_length, cfg=cfg)["reject_reason"] == "too_long"
    assert (
        run(chat("a fine question", "a fine answer"), stages.check_length, cfg=cfg)["reject_reason"] is None
    )
    emptied = run(chat("<b></b>", "answer here"), stages.clean_html, stages.check_length, cfg=DataConfig())
    assert emptied["reject_reason"] == "empty_turn"


def test_quality_rules_and_levels():
    cfg = QualityConfig()
    good = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    assert quality.score(good, cfg).level == 5
    spam = "\n".join(["BUY NOW click here"] * 10)
    result = quality.score(spam, cfg)
    assert "duplicate_lines>0.3" in result.failed and any(
        f.startswith("repeated_3gram") for f in result.failed
    )
    assert result.level <= 3
    symbols = quality.score("$$$ ### @@@ ~~~ ^^^ |||| ++++ ====", cfg)
    assert any(f.startswith("symbol_ratio") for f in symbols.failed)
    digits = quality.score("1234 5678 9012 3456 7890 1234", cfg)
    assert any(f.startswith("digit_ratio") for f in digits.failed)
    assert "words<3" in quality.score("Hi", cfg).failed


def test_an_answer_made_of_one_repeated_sentence_is_rejected():
    advert = chat("Which GPU should I buy to train a small model?", "Buy cheap GPUs now! " * 10)
    row = run(advert, stages.check_quality)
    assert row["reject_reason"] == "low_quality"
    assert row["reject_detail"].startswith("level 1: repeated_text=0.90>0.6")
    # A reasoning trace stuck in a loop is judged on its own, not diluted by the answer beside it.
    looping = chat("What is 2 + 2?", "The answer is 4.", reasoning="Let me add two and two again. " * 8)
    assert run(looping, stages.check_quality)["reject_reason"] == "low_quality"


def test_worked_solutions_are_not_mistaken_for_repetition():
    """Real step-by-step solutions repeat numbers and set phrases; none of GSM8K's or MATH-500's trips the rule."""
    cfg = QualityConfig()
    gsm8k = [row["answer"] for row in reference_rows("gsm8k")]
    math500 = [row["solution"] for row in reference_rows("math500")]
    failing = [t for t in gsm8k + math500 if quality.score(t, cfg).level == 1]
    assert len(gsm8k) > 1000 and len(math500) == 500 and failing == []


def test_chinese_words_counted_per_character():
    assert len(quality.words("小明有五个苹果")) == 7
    assert quality.words("我有 3 apples") == ["我", "有", "3", "apples"]
    cfg = QualityConfig()
    result = quality.score("小明有五个苹果，吃了两个，还剩下三个苹果。", cfg)
    assert result.level == 5, result.failed  # no mean-word-length rule misfiring on Chinese


def test_quality_stage_rejects_below_min_level():
    strict = DataConfig(quality={"min_level": 5})
    row = run(chat("Hi", "Yo"), stages.check_quality, cfg=strict)
    assert row["reject_reason"] == "low_quality" and row["reject_detail"] == "level 4: words<3"
    assert run(chat("Hi", "Yo"), stages.check_quality)["reject_reason"] is None  # level 4 >= default 2
    fine = run(chat("How many eggs are left after breakfast?", "Nine eggs are left."), stages.check_quality)
    assert fine["reject_reason"] is None and fine["quality"] == 5


def test_toxicity_blocklists():
    cfg = DataConfig()
    assert run(chat("what the FUCK is this", "no"), stages.check_toxicity)["reject_reason"] == "toxic"
    # Word boundaries: "Scunthorpe" and "class" do not match.
    assert (
        run(chat("Scunthorpe is a town in England", "classic"), stages.check_toxicity)["reject_reason"]
        is None
    )
    assert run(chat("你真是个傻逼", "好的"), stages.check_toxicity)["reject_reason"] == "toxic"
    custom = DataConfig(toxicity={"extra_words": ["frobnicate"]})
    assert (
        run(chat("please frobnicate it", "no"), stages.check_toxicity, cfg=custom)["reject_reason"] == "toxic"
    )
    lenient = DataConfig(toxicity={"threshold": 1.5})
    assert run(chat("shit happens", "ok"), stages.check_toxicity, cfg=lenient)["reject_reason"] is None
    assert cfg.toxicity.enabled


def test_toxicity_scores_terms_with_a_harmless_sense_instead_of_rejecting():
    physics = chat(
        "What is the retarded potential of a moving charge?",
        "The retarded potential is evaluated at the retarded time, so the field lags the charge.",
    )
    kept = run(physics, stages.check_toxicity)
    assert kept["reject_reason"] is None and kept["toxicity"] == 0.25  # distinct terms count once
    assert run(chat("A clean question here", "and a clean answer"), stages.check_toxicity)["toxicity"] == 0
    # Several weighted terms together add up to a rejection, and the detail names each term and its weight.
    abuse = run(chat("you retarded bitch", "shut up you pussy"), stages.check_toxicity)
    assert abuse["reject_reason"] == "toxic"
    assert abuse["reject_detail"] == "score 1.25 >= 1: bitch (0.5), pussy (0.5), retarded (0.25)"
    slur = run(chat("some text", "fuck off"), stages.check_toxicity)
    assert slur["reject_detail"] == "score 1 >= 1: fuck (1)"


def test_wordlist_weights_are_validated(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("mild term 0.3\n420\n", encoding="utf-8")
    cfg = DataConfig(toxicity={"wordlists": [str(path)], "threshold": 0.5})
    assert run(chat("a mild term here", "x"), stages.check_toxicity, cfg=cfg)["toxicity"] == 0.3
    assert run(chat("blaze 420 now", "x"), stages.check_toxicity, cfg=cfg)["reject_reason"] == "toxic"
    path = tmp_path / "bad.txt"  # lists are read once per path
    path.write_text("# header\nbad word 3\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.txt:2: .*between 0 and 1"):
        run(chat("x", "y"), stages.check_toxicity, cfg=DataConfig(toxicity={"wordlists": [str(path)]}))


def test_user_wordlist_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my list\nbadword\n", encoding="utf-8")
    cfg = DataConfig(toxicity={"wordlists": [str(path)]})
    assert run(chat("a badword here", "x"), stages.check_toxicity, cfg=cfg)["reject_reason"] == "toxic"
    assert run(chat("fuck", "x"), stages.check_toxicity, cfg=cfg)["reject_reason"] is None
