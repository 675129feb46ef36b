"""The local gold-judge endpoint: the LLM-judge client over real HTTP must reproduce the gold judge."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from qstar_lib.data import synthetic_tldr
from qstar_lib.eval.judge import compare
from qstar_lib.eval.judge_server import GoldJudgeServer, parse_judge_prompt
from qstar_lib.eval.llm_judge import LLMJudge, build_prompt


@pytest.fixture(scope="module")
def records():
    return synthetic_tldr(24, seed=5, split="test")


def test_prompt_round_trip():
    post, a, b = "SUBREDDIT: r/x\nPOST: I earn 38k.\nTL;DR:", "earns 38k", "earns 250k"
    assert parse_judge_prompt(build_prompt(post, a, b)) == (post.strip(), a, b)
    with pytest.raises(ValueError, match="Appendix-H"):
        parse_judge_prompt("Which summary is better?")


def test_http_win_rate_equals_the_gold_judge(records):
    candidates = [r["chosen"] if i % 3 else r["rejected"] for i, r in enumerate(records)]
    references = [r["rejected"] if i % 3 else r["chosen"] for i, r in enumerate(records)]
    gold = [compare(r, c, ref) for r, c, ref in zip(records, candidates, references)]
    with GoldJudgeServer(records) as server:
        judge = LLMJudge(base_url=server.base_url, model="gold-judge", seed=1, max_retries=0)
        comparisons, summary = judge.evaluate([r["prompt"] for r in records], candidates, references)
        assert server.requests == len(records)
    assert 0 < summary.n_candidate_on_a < len(records)  # both orders were shown
    for c, g in zip(comparisons, gold):
        assert c.outcome == ("unparsable" if g == 0.5 else "win" if g == 1.0 else "loss")
    decided = [g for g in gold if g != 0.5]
    assert summary.n == len(decided) and summary.win_rate == pytest.approx(sum(decided) / len(decided))


def test_bad_requests_are_400_with_a_message(records):
    with GoldJudgeServer(records[:2]) as server:
        url = server.base_url + "/chat/completions"
        for payload, expected in (
            (b"{not json", "bad request"),
            (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), "Appendix-H"),
            (
                json.dumps({"messages": [{"role": "user", "content": build_prompt("other", "a", "b")}]}).encode(),
                "unknown post",
            ),
        ):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(urllib.request.Request(url, data=payload, method="POST"), timeout=5)
            assert err.value.code == 400 and expected in err.value.read().decode()
    with pytest.raises(ValueError, match="record 0: field 'prompt'"):
        GoldJudgeServer([{"prompt": ""}])
