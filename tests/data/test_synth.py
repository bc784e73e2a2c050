import json

import pytest

from r1kit.data.ingest import ingest
from r1kit.data.synth import synthesize
from r1kit.errors import UserError
from r1kit.tasks import DIFFICULTIES
from r1kit.tasks.countdown import check_expression as check_countdown


def load(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_arithmetic_answers_are_right(tmp_path, difficulty):
    rows = load(synthesize("arithmetic", 300, tmp_path / "a.jsonl", difficulty=difficulty, seed=1))
    assert len(rows) == 300
    for row in rows:
        expression = row["question"].removeprefix("What is ").removesuffix("?").replace("×", "*")
        assert int(row["answer"]) == eval(expression)
        assert row["reasoning"].endswith(f"So the result is {row['answer']}.")
        assert row["solution"].endswith(f"\\boxed{{{row['answer']}}}")
    widths = {len(row["question"].split()[2]) for row in rows}
    assert widths == {DIFFICULTIES[difficulty].digits}


def test_worked_steps(tmp_path):
    rows = load(synthesize("arithmetic", 200, tmp_path / "a.jsonl", difficulty="hard", seed=3))
    addition = next(r for r in rows if " + " in r["question"])
    assert "carry" in addition["reasoning"]
    product = next(r for r in rows if " × " in r["question"])
    partials = [line for line in product["reasoning"].splitlines() if " × " in line and "=" in line]
    assert len(partials) >= 1


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_countdown_reference_solutions_verify(tmp_path, difficulty):
    rows = load(synthesize("countdown", 200, tmp_path / "c.jsonl", difficulty=difficulty, seed=2))
    level = DIFFICULTIES[difficulty]
    for row in rows:
        assert len(row["numbers"]) == level.numbers and max(row["numbers"]) <= level.max_number
        assert check_countdown(row["answer"], row["numbers"], row["target"]), row
        assert str(row["target"]) in row["question"]


def test_countdown_checker_rejects_cheating():
    assert check_countdown("(6 + 4) * 2", [2, 4, 6], 20)
    assert not check_countdown("6 * 6", [2, 4, 6], 36)  # 6 used twice
    assert not check_countdown("7 + 13", [2, 4, 6], 20)  # numbers not given
    assert not check_countdown("__import__('os')", [2], 2)
    assert not check_countdown("6 / 0", [6, 0], 1)
    assert not check_countdown("6 +", [6], 6)


def test_deterministic_per_seed(tmp_path):
    a = synthesize("countdown", 20, tmp_path / "a.jsonl", seed=5).read_text()
    assert synthesize("countdown", 20, tmp_path / "b.jsonl", seed=5).read_text() == a
    assert synthesize("countdown", 20, tmp_path / "c.jsonl", seed=6).read_text() != a


def test_synth_output_ingests_as_problems_with_metadata(tmp_path):
    path = synthesize("countdown", 5, tmp_path / "c.jsonl")
    records = list(ingest([path]))
    assert all(r["kind"] == "problem" and r["reject_reason"] is None for r in records)
    source = load(path)
    for record, row in zip(records, source):
        assert record["answer"] == row["answer"]
        assistant = record["messages"][1]
        assert assistant["reasoning"] == row["reasoning"] and assistant["content"] == row["solution"]
        assert json.loads(record["meta"]) == {
            "task": "countdown",
            "numbers": row["numbers"],
            "target": row["target"],
            "difficulty": "medium",
        }


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="unknown task 'sudoku'"):
        synthesize("sudoku", 3, tmp_path / "x.jsonl")
    with pytest.raises(UserError, match="unknown difficulty"):
        synthesize("arithmetic", 3, tmp_path / "x.jsonl", difficulty="insane")
    with pytest.raises(UserError, match="at least 1"):
        synthesize("arithmetic", 0, tmp_path / "x.jsonl")


def test_cli_synth(cli, tmp_path):
    done = cli(
        "data", "synth", "--task", "arithmetic", "--n", "7", "--out", str(tmp_path / "a.jsonl"), check=True
    )
    assert "wrote 7 medium arithmetic problems" in done.stdout
    assert len(load(tmp_path / "a.jsonl")) == 7


def test_addition_with_a_mixed_cold_start(tmp_path):
    import json

    from r1kit.data.ingest import ingest
    from r1kit.data.synth import synthesize

    path = synthesize(
        "addition", 400, tmp_path / "add.jsonl", difficulty="medium", seed=3, reasoning_share=0.4
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    worked = [r for r in rows if "reasoning" in r]
    assert 0.3 < len(worked) / len(rows) < 0.5
    for r in rows:
        a, b = (int(x) for x in r["question"].removeprefix("What is ").removesuffix("?").split(" + "))
        assert r["answer"] == str(a + b) and 10 <= a <= 9999 and 10 <= b <= 9999
    # one line per column, each naming the numbers left to add: the last line's total leads the answer, the
    # other lines give its remaining digits from the right
    for r in worked:
        lines = r["reasoning"].splitlines()
        a, b = (int(x) for x in r["question"].removeprefix("What is ").removesuffix("?").split(" + "))
        assert len(lines) == max(len(str(a)), len(str(b)))
        assert lines[0].startswith(f"{a}+{b}: {a % 10}+{b % 10}=")
        totals = [line.rsplit("=", 1)[1] for line in lines]
        assert totals[-1] + "".join(t[-1] for t in reversed(totals[:-1])) == r["answer"]
    # the same problems as the all-worked set of that seed, so that a mixed phase after an all-worked cold
    # start brings no new problems
    all_worked = synthesize("addition", 400, tmp_path / "worked.jsonl", difficulty="medium", seed=3)
    assert [r["question"] for r in rows] == [
        json.loads(line)["question"] for line in all_worked.read_text().splitlines()
    ]
    # An empty think block survives ingestion as "" (answered without thinking), not as no block at all.
    assistants = [rec["messages"][-1] for rec in ingest([path])]
    assert sum(m["reasoning"] == "" for m in assistants) == len(rows) - len(worked)


def test_running_addition_writes_the_answer_so_far_on_each_line(tmp_path):
    import json

    from r1kit.data.synth import synthesize

    def rows(task):
        path = synthesize(task, 300, tmp_path / f"{task}.jsonl", difficulty="medium", seed=5)
        return [json.loads(line) for line in path.read_text().splitlines()]

    plain, running = rows("addition"), rows("addition-running")
    assert [r["question"] for r in running] == [r["question"] for r in plain]  # same seed, same problems
    for p, r in zip(plain, running):
        assert r["answer"] == p["answer"] and r["solution"] == p["solution"]
        assert (r["task"], p["task"]) == ("addition-running", "addition")
        lines = [line.split(" | ") for line in r["reasoning"].splitlines()]
        # the plain form's lines, each followed by the answer's digits so far; the last one is the answer
        assert [work for work, _ in lines] == p["reasoning"].splitlines()
        so_far = [digits for _, digits in lines]
        assert so_far[-1] == r["answer"]
        for i, (work, digits) in enumerate(lines):
            total = work.rsplit("=", 1)[1]
            previous = so_far[i - 1] if i else ""
            assert digits == (total if i == len(lines) - 1 else total[-1]) + previous
    assert any(len(r["reasoning"].splitlines()) == 4 and r["answer"].startswith("1") for r in running)


def test_labelled_addition_letters_each_line_from_the_ones_column(tmp_path):
    import json
    import string

    from r1kit.data.synth import synthesize

    def rows(task, difficulty):
        path = synthesize(task, 200, tmp_path / f"{task}-{difficulty}.jsonl", difficulty=difficulty, seed=5)
        return [json.loads(line) for line in path.read_text().splitlines()]

    for difficulty in ("medium", "hard"):  # hard: up to 6 columns
        plain, labelled = rows("addition", difficulty), rows("addition-labelled", difficulty)
        assert [r["question"] for r in labelled] == [r["question"] for r in plain]  # same seed, same problems
        for p, r in zip(plain, labelled):
            assert (r["answer"], r["solution"], r["task"]) == (
                p["answer"],
                p["solution"],
                "addition-labelled",
            )
            lines = r["reasoning"].splitlines()
            assert [line.split(" ", 1)[0] for line in lines] == list(string.ascii_lowercase[: len(lines)])
            assert [line.split(" ", 1)[1] for line in lines] == p["reasoning"].splitlines()
    assert max(len(r["reasoning"].splitlines()) for r in labelled) == 6


def test_addition_of_chosen_lengths_and_answer_only_records():
    import random

    from r1kit.data.synth import answer_only
    from r1kit.tasks.addition import generate

    rng = random.Random(0)
    records = [generate(rng, DIFFICULTIES["medium"], digits=(3, 3)) for _ in range(50)]
    for r in records:
        a, b = (int(x) for x in r["question"].removeprefix("What is ").removesuffix("?").split(" + "))
        assert 100 <= a <= 999 and 100 <= b <= 999 and r["answer"] == str(a + b)
    with pytest.raises(ValueError, match="digits must be"):
        generate(rng, DIFFICULTIES["medium"], digits=(3, 2))
    bare = answer_only(records[0])
    assert "reasoning" not in bare and "reasoning" in records[0]  # the record given is left as it was
    assert bare["solution"] == "<think>\n\n</think>\n\n" + records[0]["solution"]
    assert {k: v for k, v in bare.items() if k != "solution"} == {
        k: v for k, v in records[0].items() if k not in ("reasoning", "solution")
    }
