"""An OpenAI-compatible chat endpoint on 127.0.0.1 that answers the Appendix-H prompt with the gold judge.

Why: the LLM judge (:mod:`qstar_lib.eval.llm_judge`) talks HTTP to a model we do not have offline. This server
lets a reader run the *whole* judging path (prompt building, A/B shuffling, HTTP, parsing, bootstrap
intervals) on a laptop, and check it: because the server decides with the deterministic gold judge
(:mod:`qstar_lib.eval.judge`), the win rate that comes back over HTTP must equal the gold judge's own win rate
on the same pairs. Swap the base URL for a real endpoint and nothing else changes.

``POST .../chat/completions`` with ``{"model", "messages": [{"role": "user", "content": <prompt>}]}``:
the server reads the post and the two summaries out of the prompt (the layout of
:data:`qstar_lib.eval.llm_judge.JUDGE_PROMPT`), finds the record whose ``prompt`` is that post, and answers
``"Comparison: ...\\nPreferred: A"`` (or ``B``). When the gold judge scores both summaries the same, it says
so and prefers neither, which the client counts as *unparsable*, as it would a real model that refuses to
choose. A prompt it cannot read or a post it does not know is a 400 with a JSON error message.

It knows nothing about models: it compares strings through :func:`qstar_lib.eval.judge.score_summary`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from qstar_lib.eval.judge import TIE_TOL, score_summary
from qstar_lib.eval.llm_judge import JUDGE_PROMPT

_HEAD, _REST = JUDGE_PROMPT.split("{post}")
_MID_A, _REST = _REST.split("{summary_a}")
_MID_B, _TAIL = _REST.split("{summary_b}")
_PROMPT_RE = re.compile(
    re.escape(_HEAD)
    + r"(?P<post>.*)"
    + re.escape(_MID_A)
    + r"(?P<a>.*)"
    + re.escape(_MID_B)
    + r"(?P<b>.*)"
    + re.escape(_TAIL)
    + r"\Z",
    flags=re.DOTALL,
)


def parse_judge_prompt(prompt: str) -> tuple[str, str, str]:
    """``(post, summary_a, summary_b)`` from a filled Appendix-H prompt; ValueError if it is not one."""
    m = _PROMPT_RE.match(prompt)
    if m is None:
        raise ValueError("not an Appendix-H judge prompt (see qstar_lib.eval.llm_judge.JUDGE_PROMPT)")
    return m.group("post"), m.group("a"), m.group("b")


def gold_answer(record: Mapping, summary_a: str, summary_b: str) -> str:
    """The answer a careful judge with the gold judge's knowledge would give, in the Appendix-H format."""
    a, b = score_summary(summary_a, record), score_summary(summary_b, record)
    if abs(a.score - b.score) <= TIE_TOL:
        return (
            f"Comparison: Both summaries score {a.score:.2f} against the post's facts, so neither is better.\n"
            "Preferred: neither"
        )
    best = "A" if a.score > b.score else "B"
    return (
        f"Comparison: Summary {best} states the post's facts more faithfully (gold-judge score "
        f"{max(a.score, b.score):.2f} against {min(a.score, b.score):.2f}).\nPreferred: {best}"
    )


class GoldJudgeServer:
    """Serve the gold judge as an OpenAI-compatible endpoint for ``records`` (a context manager).

    ``base_url`` (``http://127.0.0.1:<port>/v1``) is what :class:`qstar_lib.eval.llm_judge.LLMJudge` takes.
    ``requests`` counts the chat requests served. Posts are matched on ``record["prompt"].strip()``.
    """

    def __init__(self, records: Sequence[Mapping]) -> None:
        self.by_post: dict[str, Mapping] = {}
        for i, record in enumerate(records):
            prompt = record.get("prompt") if isinstance(record, Mapping) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"record {i}: field 'prompt' must be a non-empty string")
            self.by_post[prompt.strip()] = record
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                    prompt = body["messages"][-1]["content"]
                    post, summary_a, summary_b = parse_judge_prompt(prompt)
                except (ValueError, KeyError, IndexError, TypeError) as err:
                    return self._send(400, {"error": {"message": f"bad request: {err}"}})
                record = server.by_post.get(post.strip())
                if record is None:
                    return self._send(400, {"error": {"message": "unknown post: not among the server's records"}})
                server.requests += 1
                answer = gold_answer(record, summary_a, summary_b)
                self._send(
                    200,
                    {
                        "object": "chat.completion",
                        "model": body.get("model", "gold-judge"),
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}
                        ],
                    },
                )

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet: the client reports what matters
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> GoldJudgeServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
