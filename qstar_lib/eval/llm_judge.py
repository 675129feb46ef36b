"""An LLM judge over any OpenAI-compatible chat endpoint, with the paper's Appendix H comparison prompt.

The paper scores TL;DR summaries by asking GPT-4 which of two summaries better covers a post's most
important points, against the dataset's preferred summary, shuffling which one is shown as "A"
(its Appendix H; the prompt goes back to the DPO paper). :data:`JUDGE_PROMPT` reproduces that prompt
word for word (one field per line, as in the DPO paper), attributed to Rafailov et al. (2024), because
a judge is only comparable when it is asked the same question. The offline book uses the gold judge
(:mod:`qstar_lib.eval.judge`); this module is for readers who have an endpoint (OpenAI, vLLM, llama.cpp
server, Ollama, ...).

What it guarantees:

* ``POST {base_url}/chat/completions`` with ``{"model", "messages", "temperature": 0}``, standard
  library only (``urllib.request``), a timeout on every request.
* The A/B order is drawn per comparison from a seeded RNG; the side the candidate was shown on is
  recorded and the judge's letter is mapped back to candidate-vs-reference.
* "Preferred: A/B" is parsed leniently (case, quotes, markdown, trailing punctuation, or a last line that
  is only the letter). An answer it cannot read is counted as ``unparsable``, never as a loss or tie.
* Server errors (5xx, 429), timeouts and refused connections are retried with exponential backoff a
  bounded number of times, then counted as ``error``. Neither kind enters the win rate; both are reported.
* The API key is never printed: ``repr``/``str`` mask it, and it is scrubbed from every message this
  module raises, logs or stores (even if a server echoes it back).

Environment variables are read only by :mod:`qstar_lib.scale` (project rule), so :meth:`LLMJudge.from_env`
takes the mapping (``QSTAR_JUDGE_BASE_URL``, ``QSTAR_JUDGE_MODEL``, ``QSTAR_JUDGE_API_KEY``) as an argument.

It knows nothing about models or data sets: it compares strings.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from qstar_lib.stats import bootstrap_ci

log = logging.getLogger(__name__)

ENV_BASE_URL = "QSTAR_JUDGE_BASE_URL"
ENV_MODEL = "QSTAR_JUDGE_MODEL"
ENV_API_KEY = "QSTAR_JUDGE_API_KEY"

#: The comparison prompt of the paper's Appendix H (Rafailov, Hejna, Park, Finn 2024; first used in the
#: DPO paper), reproduced word for word as the judge's prompt so that win rates are measured the same way.
#: ``{post}``, ``{summary_a}``, ``{summary_b}`` are filled in by :func:`build_prompt` in one pass.
JUDGE_PROMPT = """Which of the following summaries does a better job of summarizing the most \
important points in the given forum post?

Post:
{post}

Summary A:
{summary_a}

Summary B:
{summary_b}

FIRST provide a one-sentence comparison of the two summaries, explaining which you \
prefer and why. SECOND, on a new line, state only "A" or "B" to indicate your choice. Your response \
should use the format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"A" or "B">"""

_PLACEHOLDER_RE = re.compile(r"\{(post|summary_a|summary_b)\}")
# "Preferred: A", "**Preferred:** 'b'.", "Preferred summary - A": a separator (: - =) is required, so the
# article in "I preferred a shorter one" is not read as a vote; the letter must stand alone
_PREFERRED_RE = re.compile(
    r"preferred(?:\s+summary)?\W{0,3}[:=-]\W{0,6}(?:summary\W{0,3})?([ab])(?![a-z0-9])", flags=re.IGNORECASE
)
# a last line holding only the letter: "B", '"A".', "**A**", "Summary B"
_LAST_LINE_RE = re.compile(r"^\W*(?:summary\W*)?([ab])\W*$", flags=re.IGNORECASE)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
"""HTTP codes worth retrying (overload, rate limit, server errors); other 4xx codes are final."""

OUTCOMES = ("win", "loss", "unparsable", "error")


def build_prompt(post: str, summary_a: str, summary_b: str) -> str:
    """The Appendix H prompt with the post and the two summaries filled in.

    One regex pass, so a summary that itself contains ``{summary_b}`` is not substituted twice.
    """
    values = {"post": post.strip(), "summary_a": summary_a.strip(), "summary_b": summary_b.strip()}
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], JUDGE_PROMPT)


def parse_preference(answer: str) -> str | None:
    """``"A"`` or ``"B"`` from the judge's answer, or ``None`` when it cannot be read.

    The last ``Preferred: X`` wins (the format puts it at the end; a comparison sentence may mention a
    letter before). Without one, a last non-empty line that is only the letter is accepted.
    """
    if not isinstance(answer, str):
        return None
    found = _PREFERRED_RE.findall(answer)
    if found:
        return found[-1].upper()
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    if lines and (m := _LAST_LINE_RE.match(lines[-1].strip())):
        return m.group(1).upper()
    return None


@dataclass(frozen=True)
class Comparison:
    """One judged pair. ``candidate_side`` is where the candidate was shown ("A" or "B").

    ``outcome`` is ``win``/``loss`` (candidate preferred or not), ``unparsable`` (answer unreadable) or
    ``error`` (no answer after retries). ``answer`` is the judge's raw text (key scrubbed), ``detail``
    why an unparsable/error outcome happened, ``attempts`` the number of HTTP requests made.
    """

    candidate_side: str
    outcome: str
    preferred: str | None = None
    answer: str = ""
    detail: str = ""
    attempts: int = 0

    @property
    def candidate_won(self) -> bool | None:
        """True/False for a decided comparison, ``None`` for unparsable or error."""
        return {"win": True, "loss": False}.get(self.outcome)


@dataclass(frozen=True)
class JudgeSummary:
    """Win rate of candidates over references among *decided* comparisons, with what was left out.

    ``n`` counts decided comparisons (the win rate's denominator); ``n_unparsable`` and ``n_errors``
    are reported next to it, never folded in; ``n_total = n + n_unparsable + n_errors``.
    """

    win_rate: float
    n: int
    n_wins: int
    n_unparsable: int
    n_errors: int
    ci_low: float
    ci_high: float
    confidence: float = 0.95
    n_candidate_on_a: int = 0

    @property
    def n_total(self) -> int:
        return self.n + self.n_unparsable + self.n_errors

    def __str__(self) -> str:
        return (
            f"win rate {self.win_rate:.3f} ({self.confidence:.0%} bootstrap CI {self.ci_low:.3f}-{self.ci_high:.3f}) "
            f"over n={self.n} decided; {self.n_unparsable} unparsable, {self.n_errors} errors of {self.n_total}"
        )


def summarize(
    comparisons: Sequence[Comparison], *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> JudgeSummary:
    """Aggregate comparisons: win rate over decided ones and a bootstrap CI; unparsable/errors counted."""
    for i, c in enumerate(comparisons):
        if c.outcome not in OUTCOMES:
            raise ValueError(f"comparison {i}: outcome {c.outcome!r} is not one of {OUTCOMES}")
    decided = [c.candidate_won for c in comparisons if c.candidate_won is not None]
    n_wins = int(sum(decided))
    # decided outcomes are 0/1: the binomial shortcut of the bootstrap (no (n_boot, N) array)
    low, high = bootstrap_ci(decided, confidence=confidence, n_boot=n_boot, seed=seed, binomial=True)
    return JudgeSummary(
        win_rate=n_wins / len(decided) if decided else float("nan"),
        n=len(decided),
        n_wins=n_wins,
        n_unparsable=sum(c.outcome == "unparsable" for c in comparisons),
        n_errors=sum(c.outcome == "error" for c in comparisons),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        n_candidate_on_a=sum(c.candidate_side == "A" for c in comparisons),
    )


class JudgeHTTPError(RuntimeError):
    """A request that failed for good (after retries, or a final 4xx); its message never holds the key."""

    def __init__(self, message: str, *, retryable: bool, attempts: int = 0):
        super().__init__(message)
        self.retryable = retryable
        self.attempts = attempts


@dataclass
class LLMJudge:
    """Pairwise judge: candidate vs reference summary of a post, via an OpenAI-compatible endpoint.

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1`` (``/chat/completions``
            is appended).
        model: the model name the endpoint expects.
        api_key: sent as ``Authorization: Bearer <key>``; empty means no header (local servers). Masked in
            ``repr`` and scrubbed from every message.
        seed: seeds the A/B order (one draw per comparison, in call order).
        timeout: seconds per request (connect and read).
        max_retries: extra attempts after a retryable failure (so at most ``1 + max_retries`` requests).
        backoff: first wait in seconds; doubles each retry, capped at ``max_backoff``.
        sleep: the waiting function (tests pass a no-op).
    """

    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    seed: int = 0
    timeout: float = 60.0
    max_retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self):
        if not re.match(r"^https?://", self.base_url or ""):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise ValueError("model must be a non-empty model name")
        if not (self.timeout > 0):
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")
        self.base_url = self.base_url.rstrip("/")
        self._rng = random.Random(self.seed)

    def __repr__(self) -> str:
        key = "***" if self.api_key else "''"
        return (
            f"LLMJudge(base_url={self.base_url!r}, model={self.model!r}, api_key={key}, seed={self.seed}, "
            f"timeout={self.timeout}, max_retries={self.max_retries})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs) -> LLMJudge:
        """A judge configured from ``QSTAR_JUDGE_BASE_URL``, ``QSTAR_JUDGE_MODEL``, ``QSTAR_JUDGE_API_KEY``.

        ``environ`` is the mapping to read them from (e.g. ``os.environ`` passed by the caller). With
        ``None``, the values come from ``qstar_lib.scale.judge_endpoint()``, the project's one reader of
        environment variables. ``kwargs`` (seed, timeout, ...) go to the constructor.
        """
        if environ is None:
            from qstar_lib import scale

            if not hasattr(scale, "judge_endpoint"):
                raise RuntimeError(
                    "qstar_lib.scale.judge_endpoint() is missing; pass the mapping: LLMJudge.from_env(os.environ)"
                )
            endpoint = dict(scale.judge_endpoint())
        else:
            endpoint = {
                "base_url": environ.get(ENV_BASE_URL, ""),
                "model": environ.get(ENV_MODEL, ""),
                "api_key": environ.get(ENV_API_KEY, ""),
            }
        for name, var in (("base_url", ENV_BASE_URL), ("model", ENV_MODEL)):
            if not (endpoint.get(name) or "").strip():
                raise ValueError(f"${var} is not set: the LLM judge needs an endpoint {name}")
        return cls(
            base_url=endpoint["base_url"].strip(),
            model=endpoint["model"].strip(),
            api_key=(endpoint.get("api_key") or "").strip(),
            **kwargs,
        )

    # ------------------------------------------------------------------------------------------ HTTP

    def _scrub(self, text: str) -> str:
        """``text`` with the API key replaced by ``***`` (servers sometimes echo headers back)."""
        text = str(text)
        return text.replace(self.api_key, "***") if self.api_key else text

    def _request_once(self, prompt: str) -> str:
        body = json.dumps(
            {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
        ).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            try:
                snippet = e.read(300).decode("utf-8", "replace")
            except Exception:  # a broken body must not hide the status code
                snippet = ""
            raise JudgeHTTPError(
                self._scrub(f"HTTP {e.code} from {self.base_url}/chat/completions: {snippet}"),
                retryable=e.code in RETRY_STATUS,
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise JudgeHTTPError(
                self._scrub(f"no response from {self.base_url}/chat/completions: {type(e).__name__}: {reason}"),
                retryable=True,
            ) from None
        try:
            payload = json.loads(raw.decode("utf-8"))
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise JudgeHTTPError(
                self._scrub(f"response is not a chat completion ({type(e).__name__}): {raw[:300]!r}"),
                retryable=False,
            ) from None
        if not isinstance(content, str):
            raise JudgeHTTPError(f"message content is {type(content).__name__}, not text", retryable=False)
        return content

    def complete(self, prompt: str) -> tuple[str, int]:
        """The endpoint's answer to one user message, and the number of requests it took.

        Retryable failures (5xx, 429, timeouts, refused connections) are retried ``max_retries`` times
        with exponential backoff; then, or at once for a final failure, :class:`JudgeHTTPError` is raised.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._request_once(prompt), attempt
            except JudgeHTTPError as e:
                if not e.retryable or attempt > self.max_retries:
                    e.attempts = attempt
                    raise
                wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                log.warning("judge request %d failed (%s); retrying in %.2fs", attempt, e, wait)
                self.sleep(wait)

    # --------------------------------------------------------------------------------------- judging

    def compare(self, post: str, candidate: str, reference: str, *, candidate_side: str | None = None) -> Comparison:
        """Judge one candidate summary against the reference; the side is random unless given.

        Never raises for a bad answer or a failed request: those become ``unparsable`` / ``error``.
        """
        side = candidate_side if candidate_side is not None else self._rng.choice("AB")
        if side not in ("A", "B"):
            raise ValueError(f"candidate_side must be 'A' or 'B', got {candidate_side!r}")
        summary_a, summary_b = (candidate, reference) if side == "A" else (reference, candidate)
        prompt = build_prompt(post, summary_a, summary_b)
        try:
            answer, attempts = self.complete(prompt)
        except JudgeHTTPError as e:
            log.warning("judge request failed after %d attempt(s): %s", e.attempts, e)
            return Comparison(candidate_side=side, outcome="error", detail=self._scrub(e), attempts=e.attempts)
        answer = self._scrub(answer)
        preferred = parse_preference(answer)
        if preferred is None:
            log.warning("unparsable judge answer: %r", answer[:200])
            return Comparison(
                candidate_side=side,
                outcome="unparsable",
                answer=answer,
                attempts=attempts,
                detail="no 'Preferred: A/B' and no last line with only A or B",
            )
        outcome = "win" if preferred == side else "loss"
        return Comparison(candidate_side=side, outcome=outcome, preferred=preferred, answer=answer, attempts=attempts)

    def evaluate(
        self,
        posts: Sequence[str],
        candidates: Sequence[str],
        references: Sequence[str],
        *,
        confidence: float = 0.95,
        n_boot: int = 2000,
    ) -> tuple[list[Comparison], JudgeSummary]:
        """Judge ``candidates[i]`` against ``references[i]`` on ``posts[i]``; return all comparisons and the summary."""
        if not (len(posts) == len(candidates) == len(references)):
            raise ValueError(
                "posts, candidates and references must have one length; "
                f"got {len(posts)}, {len(candidates)}, {len(references)}"
            )
        for name, texts in (("posts", posts), ("candidates", candidates), ("references", references)):
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise TypeError(f"{name}[{i}] is {type(text).__name__}, not str")
        comparisons = [self.compare(p, c, r) for p, c, r in zip(posts, candidates, references)]
        return comparisons, summarize(comparisons, confidence=confidence, n_boot=n_boot, seed=self.seed)
