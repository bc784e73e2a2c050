import numpy as np

from r1kit.data import dedup


def test_exact_key_folds_case_space_and_punctuation():
    assert dedup.exact_key("What  is 2+3?\n") == dedup.exact_key("what is 2 + 3")
    assert dedup.exact_key("a b") != dedup.exact_key("a c")


def test_first_of_equal_pairs_later_rows_with_the_earliest():
    keys = np.array([5, 7, 5, 9, 7, 5])
    later, first = dedup.first_of_equal(keys, np.arange(6))
    assert dict(zip(later.tolist(), first.tolist())) == {2: 0, 5: 0, 4: 1}
    # Rows outside `candidates` (already rejected) are ignored.
    later, first = dedup.first_of_equal(keys, np.array([2, 3, 5]))
    assert dict(zip(later.tolist(), first.tolist())) == {5: 2}


def test_minhash_estimates_jaccard():
    base = " ".join(f"word{i}" for i in range(200))
    near = base.replace("word100", "changed")
    far = " ".join(f"other{i}" for i in range(200))
    sig = lambda t: dedup.signature(t, 128, 5)  # noqa: E731
    assert dedup.estimated_jaccard(sig(base), sig(base)) == 1.0
    assert dedup.estimated_jaccard(sig(base), sig(near)) > 0.85
    assert dedup.estimated_jaccard(sig(base), sig(far)) < 0.1


def test_lsh_params_cover_the_signature():
    bands, rows = dedup.lsh_params(0.8, 128)
    assert bands * rows <= 128 and bands > 1
