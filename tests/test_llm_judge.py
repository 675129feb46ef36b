"""The LLM judge against a stub OpenAI-compatible server on 127.0.0.1 (no network, a few seconds).

The stub prefers whichever summary contains the word GOOD, so the true winner is known whatever side it
was shown on; scripted failures (500, slow answers, unreadable text, a server that echoes the key back)
check retries, error counting and that the API key never leaks into messages or logs.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from qstar_lib import scale
from qstar_lib.eval.llm_judge import (
    JUDGE_PROMPT,
    Comparison,
    JudgeHTTPError,
    LLMJudge,
    build_prompt,
    parse_preference,
    summarize,
)
from qstar_lib.stats import bootstrap_ci

KEY = "sk-test-Zq8VfKx3SECRET"
POST = "I moved to a new city for a job and miss my friends. Should I go back?"


def _prefer_good(body: dict) -> tuple[int, str]:
    """A well-behaved judge: prefers the summary that contains GOOD."""
    prompt = body["messages"][0]["content"]
    summary_a = re.search(r"Summary A:\n(.*?)\n\nSummary B:", prompt, re.S).group(1)
    letter = "A" if "GOOD" in summary_a else "B"
    return 200, f"Comparison: Summary {letter} keeps the key point.\nPreferred: {letter}"


class StubServer:
    """OpenAI chat-completions stub. ``behaviour(body) -> (status, text[, raw])`` decides each answer.

    A 200 wraps ``text`` as the assistant message (unless ``raw``); other codes send ``text`` as the body.
    ``delay`` seconds are slept before answering. Every request is recorded (path, headers, body).
    """

    def __init__(self):
        self.behaviour = _prefer_good
        self.delay = 0.0
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if stub.delay:
                    threading.Event().wait(stub.delay)
                status, text, *raw = stub.behaviour(body)
                if status == 200 and not raw:
                    payload = {
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                    }
                    data = json.dumps(payload).encode()
                else:
                    data = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    server = StubServer()
    yield server
    server.close()


def _judge(stub, **kw) -> LLMJudge:
    sleeps = []
    kw = {"seed": 0, "timeout": 2.0, "max_retries": 2, "backoff": 0.5, "sleep": sleeps.append, **kw}
    judge = LLMJudge(base_url=stub.base_url, model="judge-model", api_key=KEY, **kw)
    judge.sleeps = sleeps  # the backoff waits it asked for (not slept)
    return judge


def _assert_no_key(*texts):
    for text in texts:
        assert KEY not in str(text)


# ------------------------------------------------------------------------------------------ protocol


def test_request_is_an_openai_chat_completion_with_bearer_key(stub):
    comparison = _judge(stub).compare(POST, "GOOD: wants to go back", "misses friends", candidate_side="B")
    (request,) = stub.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["body"] == {
        "model": "judge-model",
        "messages": [{"role": "user", "content": build_prompt(POST, "misses friends", "GOOD: wants to go back")}],
        "temperature": 0,
    }
    assert (comparison.outcome, comparison.preferred, comparison.attempts) == ("win", "B", 1)


def test_prompt_is_the_appendix_h_prompt_filled_in_one_pass():
    assert "does a better job of summarizing the most important points" in JUDGE_PROMPT
    assert 'state only "A" or "B"' in JUDGE_PROMPT
    prompt = build_prompt("the post {summary_a}", "{summary_b}", "second")
    assert "Post:\nthe post {summary_a}\n" in prompt  # placeholders inside texts stay literal
    assert "Summary A:\n{summary_b}\n\nSummary B:\nsecond\n" in prompt


# -------------------------------------------------------------------------------- order and parsing


def test_order_is_randomised_and_mapped_back_to_the_candidate(stub):
    n = 40
    posts, refs = [POST] * n, [f"reference {i}" for i in range(n)]
    comparisons, summary = _judge(stub).evaluate(posts, [f"GOOD candidate {i}" for i in range(n)], refs)
    assert 5 < summary.n_candidate_on_a < n - 5  # both sides were used
    for c, request in zip(comparisons, stub.requests):  # the recorded side is the side that was sent
        shown_a = re.search(r"Summary A:\n(.*?)\n", request["body"]["messages"][0]["content"]).group(1)
        assert shown_a.startswith("GOOD") == (c.candidate_side == "A")
    assert (summary.win_rate, summary.n, summary.n_unparsable, summary.n_errors) == (1.0, n, 0, 0)
    # the same judge preferring the reference: every comparison is a loss, whichever side
    _, losing = _judge(stub).evaluate(posts, [f"candidate {i}" for i in range(n)], [f"GOOD {r}" for r in refs])
    assert (losing.win_rate, losing.n) == (0.0, n)
    # the same seed draws the same sides
    again, _ = _judge(stub).evaluate(posts[:10], ["GOOD"] * 10, refs[:10])
    assert [c.candidate_side for c in again] == [c.candidate_side for c in comparisons[:10]]


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("Comparison: A is shorter.\nPreferred: A", "A"),
        ("Comparison: B covers more. Preferred: B", "B"),
        ('Comparison: x\nPreferred: "b".', "B"),
        ("comparison: x\npreferred: 'a'", "A"),
        ("**Preferred:** B", "B"),
        ("Preferred - Summary A!", "A"),
        ("I preferred A at first, but on reflection...\nPreferred: B", "B"),
        ("Summary A misses the point; B states it.\nB", "B"),
        ("I preferred a shorter one.\nB", "B"),
        ("Preferred summary: a", "A"),
        ('Both are fine.\n"A".\n', "A"),
        ("Comparison: neither is good.", None),
        ("Preferred: AB", None),
        ("Preferred: Both", None),
        ("", None),
    ],
)
def test_parse_preference(answer, letter):
    assert parse_preference(answer) == letter


def test_unparsable_answer_is_counted_not_lost(stub, caplog):
    judge = _judge(stub)
    judge.compare(POST, "GOOD one", "ref")
    stub.behaviour = lambda body: (200, f"I refuse to choose. (debug: Authorization: Bearer {KEY})")
    with caplog.at_level(logging.DEBUG):
        bad = judge.compare(POST, "GOOD two", "ref")
    assert bad.outcome == "unparsable" and bad.preferred is None and bad.candidate_won is None
    stub.behaviour = _prefer_good
    summary = summarize([bad, bad, judge.compare(POST, "GOOD three", "ref")])
    assert (summary.n, summary.n_unparsable, summary.n_errors, summary.win_rate) == (1, 2, 0, 1.0)
    assert "unparsable" in caplog.text
    _assert_no_key(bad.answer, bad.detail, repr(bad), caplog.text, summary)


# ------------------------------------------------------------------------------------ HTTP failures


def test_persistent_500_is_an_error_after_bounded_retries(stub, caplog):
    stub.behaviour = lambda body: (500, json.dumps({"error": f"upstream failed for key {KEY}"}))
    judge = _judge(stub, max_retries=2, backoff=0.5)
    with caplog.at_level(logging.DEBUG):
        comparisons, summary = judge.evaluate([POST], ["GOOD"], ["ref"])
        with pytest.raises(JudgeHTTPError) as raised:
            judge.complete("hello")
    (c,) = comparisons
    assert (c.outcome, c.attempts, len(stub.requests)) == ("error", 3, 6)
    assert judge.sleeps == [0.5, 1.0, 0.5, 1.0]  # exponential backoff, bounded count
    assert (summary.n, summary.n_errors) == (0, 1) and summary.win_rate != summary.win_rate  # nan
    assert "HTTP 500" in c.detail and "***" in c.detail
    _assert_no_key(c.detail, repr(c), str(raised.value), repr(raised.value), caplog.text)


def test_transient_500_then_success_is_retried(stub):
    answers = iter([(503, "busy"), (500, "oops")])
    stub.behaviour = lambda body: next(answers, None) or _prefer_good(body)
    c = _judge(stub, max_retries=3).compare(POST, "GOOD", "ref")
    assert (c.outcome, c.attempts, len(stub.requests)) == ("win", 3, 3)


def test_client_error_is_not_retried(stub):
    stub.behaviour = lambda body: (401, '{"error": "bad key"}')
    c = _judge(stub, max_retries=3).compare(POST, "GOOD", "ref")
    assert (c.outcome, c.attempts, len(stub.requests)) == ("error", 1, 1)
    assert "HTTP 401" in c.detail


def test_timeout_is_retried_then_an_error(stub, caplog):
    stub.delay = 0.6
    judge = _judge(stub, timeout=0.15, max_retries=1)
    with caplog.at_level(logging.DEBUG):
        c = judge.compare(POST, "GOOD", "ref")
    assert (c.outcome, c.attempts) == ("error", 2)
    assert "no response" in c.detail
    _assert_no_key(c.detail, caplog.text)


def test_connection_refused_is_an_error():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = []
    judge = LLMJudge(f"http://127.0.0.1:{port}/v1", "m", KEY, timeout=1.0, max_retries=2, sleep=sleeps.append)
    c = judge.compare(POST, "GOOD", "ref")
    assert (c.outcome, c.attempts, len(sleeps)) == ("error", 3, 2)
    _assert_no_key(c.detail)


MALFORMED = ['{"choices": []}', "<html>gateway</html>", '{"choices": [{"message": {"content": 3}}]}']


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_response_is_an_error_not_retried(stub, raw):
    stub.behaviour = lambda body: (200, raw, True)
    c = _judge(stub).compare(POST, "GOOD", "ref")
    assert (c.outcome, c.attempts) == ("error", 1)


# ------------------------------------------------------------------------------ key and configuration


def test_key_is_masked_in_repr_and_str(stub):
    judge = _judge(stub)
    assert "***" in repr(judge) and stub.base_url in repr(judge)
    _assert_no_key(repr(judge), str(judge), f"{judge}")


def test_from_env_reads_the_mapping_it_is_given(stub, monkeypatch):
    environ = {"QSTAR_JUDGE_BASE_URL": stub.base_url + "/", "QSTAR_JUDGE_MODEL": "m", "QSTAR_JUDGE_API_KEY": KEY}
    judge = LLMJudge.from_env(environ, seed=3)
    assert (judge.base_url, judge.model, judge.api_key, judge.seed) == (stub.base_url, "m", KEY, 3)
    with pytest.raises(ValueError, match="QSTAR_JUDGE_MODEL") as raised:
        LLMJudge.from_env({"QSTAR_JUDGE_BASE_URL": stub.base_url, "QSTAR_JUDGE_API_KEY": KEY})
    _assert_no_key(str(raised.value))
    # with no mapping, the values come from scale.judge_endpoint() (the project's one env reader)
    endpoint = {"base_url": stub.base_url, "model": "from-scale", "api_key": KEY}
    monkeypatch.setattr(scale, "judge_endpoint", lambda: endpoint, raising=False)
    assert LLMJudge.from_env().model == "from-scale"
    monkeypatch.delattr(scale, "judge_endpoint")
    with pytest.raises(RuntimeError, match="judge_endpoint"):
        LLMJudge.from_env()


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="base_url"):
        LLMJudge("file:///etc/passwd", "m")
    with pytest.raises(ValueError, match="model"):
        LLMJudge("http://127.0.0.1:1", "")


# ------------------------------------------------------------------------------------------ summary


def test_bootstrap_ci_is_seeded_and_brackets_the_rate():
    wins = [True] * 30 + [False] * 10
    low, high = bootstrap_ci(wins, seed=1, binomial=True)
    assert (low, high) == bootstrap_ci(wins, seed=1, binomial=True)
    assert 0.5 < low < 0.75 < high < 0.95
    assert bootstrap_ci([True] * 5, binomial=True) == (1.0, 1.0)
    assert all(x != x for x in bootstrap_ci([], binomial=True))  # nan, nan
    comparisons = [Comparison("A", "win" if w else "loss") for w in wins]
    summary = summarize(comparisons, seed=1)  # the judge's interval is this binomial bootstrap
    assert (summary.ci_low, summary.ci_high) == (low, high)


def test_bootstrap_ci_agrees_with_naive_resampling():
    """The binomial shortcut has the distribution of resampling comparisons with replacement."""
    rng = np.random.default_rng(0)
    wins = rng.random(60) < 0.6  # (N,)
    resampled = wins[rng.integers(0, wins.size, size=(20000, wins.size))].mean(axis=1)  # (n_boot,), naive
    naive = np.quantile(resampled, [0.025, 0.975])
    assert np.allclose(bootstrap_ci(wins, n_boot=20000, binomial=True), naive, atol=0.02)
    assert np.allclose(bootstrap_ci(wins, n_boot=20000), naive, atol=0.02)  # the resampling bootstrap itself
    with pytest.raises(ValueError, match="True/False"):
        bootstrap_ci([0.5, 1.0], binomial=True)
