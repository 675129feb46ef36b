"""Tests of the gold judge (qstar_lib.eval.judge), whose definition is book/gold_judge.md."""

from __future__ import annotations

import collections

import pytest

from qstar_lib.data import fig1_example, synthetic_tldr
from qstar_lib.data.synthetic import PAIR_KINDS
from qstar_lib.eval.judge import WORD_BUDGET, JudgeScore, compare, score_summary, win_rate

N_PER_KIND = 120  # x 6 kinds, across all 10 families


@pytest.fixture(scope="module")
def records():
    return synthetic_tldr(N_PER_KIND * len(PAIR_KINDS), seed=11, split="test", kinds={k: 1.0 for k in PAIR_KINDS})


def test_chosen_beats_rejected_for_every_kind(records):
    wins = collections.defaultdict(list)
    for r in records:
        wins[r["kind"]].append(compare(r, r["chosen"], r["rejected"]))
    rates = {k: sum(v == 1.0 for v in w) / len(w) for k, w in wins.items()}
    print("chosen-beats-rejected rate per kind:", {k: round(v, 4) for k, v in sorted(rates.items())})
    assert set(rates) == set(PAIR_KINDS)
    for kind, rate in rates.items():
        assert rate >= 0.99, (kind, rate)


def test_chosen_summaries_get_full_marks(records):
    for r in records:
        s = score_summary(r["chosen"], r)
        assert (s.n_correct, s.n_contradicted, s.n_invented) == (s.n_facts, 0, 0), (r["chosen"], s)
        assert s.n_words <= WORD_BUDGET and s.score == pytest.approx(1.0)


def test_rejected_errors_are_counted_by_kind(records):
    for r in records:
        s = score_summary(r["rejected"], r)
        kinds = [e["kind"] for e in r["errors"]]
        if "in_post_swap" in kinds:
            assert s.n_contradicted >= 1, (r["rejected"], s)
        if "absent_value" in kinds or "inserted_claim" in kinds:
            assert s.n_invented >= 1, (r["rejected"], s)
        if r["kind"] == "omission":
            assert s.n_correct == s.n_facts - len(r["errors"])
        if r["kind"] == "verbosity":
            assert s.n_words > WORD_BUDGET and s.n_correct == s.n_facts


def _revert(record: dict, error: dict) -> str:
    """The rejected summary with one planted error put back to the true text (a claim removed with the
    space before it). A value's span starts where it first differs from the true value (data v2)."""
    text, start, end = record["rejected"], error["start"], error["end"]
    if not error["true"]:
        start -= 1 if start > 0 and text[start - 1] == " " else 0
    else:
        start = end - len(error["planted"])
        assert text[start:end] == error["planted"], (text, error)
    return text[:start] + error["true"] + text[end:]


def test_fewer_errors_score_higher_and_win(records):
    """No ceiling between imperfect summaries: flawless > one error > two errors, in score and in compare."""
    two = [r for r in records if r["kind"] == "two_errors"]
    assert len({r["family"] for r in two}) >= 10
    for r in two:
        flawless, both = r["chosen"], r["rejected"]
        for error in r["errors"]:
            one = _revert(r, error)
            scores = [score_summary(x, r).score for x in (flawless, one, both)]
            assert scores[0] > scores[1] > scores[2], (one, scores)
            assert compare(r, one, both) == 1.0 and compare(r, both, one) == 0.0
            assert compare(r, flawless, one) == 1.0 and compare(r, flawless, both) == 1.0


def test_deterministic(records):
    r = records[7]
    first = [score_summary(x, r) for x in (r["chosen"], r["rejected"])]
    again = [score_summary(x, r) for x in (r["chosen"], r["rejected"])]
    assert first == again and all(isinstance(s, JudgeScore) for s in first)
    assert [compare(r, r["chosen"], r["rejected"]) for _ in range(3)] == [1.0] * 3


def test_ties_and_symmetry(records):
    r = records[0]
    assert compare(r, r["chosen"], r["chosen"]) == 0.5
    assert compare(r, r["rejected"], r["chosen"]) == 0.0
    assert compare(r, " ok", " fine") == 0.5  # neither states a fact: a tie
    for r in records[:50]:
        assert compare(r, r["chosen"], r["rejected"]) + compare(r, r["rejected"], r["chosen"]) == 1.0
    assert win_rate(records[:10], [r["chosen"] for r in records[:10]], [r["rejected"] for r in records[:10]]) == 1.0


def test_fig1_free_text():
    r = fig1_example()  # asked 38k-45k, offered 38k
    good = score_summary(" They offered me $38,000 after I said my range was 38 000 to 45k. Should I counter?", r)
    assert (good.n_correct, good.n_contradicted, good.n_invented) == (3, 0, 0)
    bad = score_summary(r["rejected"], r)
    assert bad.n_invented == 2 and set(bad.invented) == {"250k", "management position"}
    swapped = score_summary(" I asked for 38k to 45k and was offered 45k. Should I negotiate?", r)
    assert swapped.n_contradicted == 1 and swapped.contradicted == ("offered",) and swapped.n_correct == 2
    assert compare(r, r["chosen"], r["rejected"]) == 1.0


def test_invented_numbers_in_free_text():
    r = fig1_example()
    s = score_summary(" Offered 38k, and the company has 500 employees and a 12 month probation.", r)
    assert set(s.invented) == {"500", "12"}
    # numbers that are in the post but play no key role are neither credited nor penalised
    s2 = score_summary(" Offered 38k; the average is 41k.", r)
    assert s2.n_invented == 0 and s2.n_contradicted == 0 and s2.n_correct == 1


def test_invented_names_and_places(records):
    r = next(x for x in records if x["family"] == "travel_budget")
    dest = r["facts"]["dest_city"]
    other = "Reykjavik" if "Reykjavik" not in r["prompt"] else "Taipei"
    s = score_summary(r["chosen"].replace(dest, other), r)
    assert other in s.invented and s.n_correct == s.n_facts - 1


def test_length_penalty():
    r = fig1_example()
    short = " I asked for 38k to 45k and was offered 38k. Should I negotiate?"
    padded = short + " It is a long story and I have been thinking about it all week without an answer." * 3
    assert score_summary(short, r).score == pytest.approx(1.0)
    assert score_summary(padded, r).n_words > WORD_BUDGET
    assert compare(r, short, padded) == 1.0


def test_case_of_the_records_own_values_does_not_matter(records):
    for r in records[:60]:
        s = score_summary(r["chosen"].lower(), r)
        assert s.n_correct == s.n_facts and s.n_contradicted == 0, (r["chosen"], s)
