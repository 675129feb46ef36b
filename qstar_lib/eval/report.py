"""One self-contained HTML page of per-token rewards: every pair's heatmaps, sortable, and the credit table.

TRL trains DPO but exposes no per-token rewards (its issue #1830); ``python -m qstar_lib score --html
report.html`` writes this page beside the JSONL so that anyone with a policy and a reference checkpoint can
look at where the implicit reward ``beta log pi/pi_ref`` (paper eq. 10) sits. The page has no external
resource (no CDN, no script file): inline styles and a few lines of inline JavaScript that reorder the pairs
by margin. When the records carry planted-error spans, the planted tokens are underlined and the page opens
with the credit table of :func:`qstar_lib.eval.credit_tables.credit_report`.

The module also measures how concentrated the reward gap is (:func:`gap_concentration`): the share of a
pair's tokens that carries 80% of the reward gap between chosen and rejected, the quantity selective-token
methods build on.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np

from qstar_lib.eval.heatmap import _vmax, pair_rows, token_heatmap_html

__all__ = ["gap_concentration", "gap_share_curve", "report_html"]

_SORT_JS = """
function qstarSort(key) {
  const box = document.getElementById('qstar-pairs');
  const items = Array.from(box.children);
  items.sort((a, b) => key === 'index' ? a.dataset.index - b.dataset.index
                                       : (key === 'asc' ? 1 : -1) * (a.dataset.margin - b.dataset.margin));
  items.forEach(el => box.appendChild(el));
}
"""


def _contributions(row: Mapping) -> np.ndarray:
    """Each token's share of the pair's reward gap: the chosen tokens' rewards and minus the rejected ones',
    after the tokens the two summaries share at their start (same state, same token, same reward: they
    cancel exactly in the gap, and counted in absolute value they would count twice)."""
    c, r = np.asarray(row["chosen_rewards"]), np.asarray(row["rejected_rewards"])
    k = 0
    if "chosen_ids" in row and "rejected_ids" in row:
        a, b = list(row["chosen_ids"]), list(row["rejected_ids"])
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
    return np.concatenate([c[k:], -r[k:]])  # (Tc + Tr - 2k,)


def gap_share_curve(scored: Sequence[Mapping], grid: int = 101) -> tuple[np.ndarray, np.ndarray, int]:
    """The mean "share of the reward gap carried by the top x of tokens" curve over the pairs: each token's
    contribution to the gap (a chosen token's reward, minus a rejected token's; the shared opening tokens,
    which cancel, left out) taken in absolute value and
    sorted largest first; x = share of tokens, y = cumulative |contribution| / total. Absolute values keep
    y in [0, 1] when contributions of both signs cancel (a signed cumulative sum can pass 100% of the gap
    at the first token). Returns (x, y, pairs used); pairs whose rewards are all 0 are left out. A curve
    that rises at once means a few tokens carry the gap; the diagonal means it is spread evenly."""
    xs = np.linspace(0.0, 1.0, grid)  # (G,)
    curves = []
    for row in scored:
        c = np.sort(np.abs(_contributions(row)))[::-1]
        total = c.sum()
        if total <= 0 or not len(c):
            continue
        x = np.arange(len(c) + 1) / len(c)  # (T + 1,)
        y = np.concatenate([[0.0], np.cumsum(c)]) / total  # (T + 1,)
        curves.append(np.interp(xs, x, y))
    if not curves:
        return xs, np.full(grid, np.nan), 0
    return xs, np.mean(curves, axis=0), len(curves)


def gap_concentration(scored: Sequence[Mapping], share: float = 0.8) -> np.ndarray:
    """Per pair (rewards not all 0), the smallest share of its tokens, chosen and rejected, largest
    |contribution| first, that carries ``share`` of the pair's total |contribution| to the reward gap.
    (N,) floats; 1/T would be one token, ``share`` an even spread."""
    out = []
    for row in scored:
        c = np.sort(np.abs(_contributions(row)))[::-1]
        total = c.sum()
        if total > 0 and len(c):
            k = int(np.searchsorted(np.cumsum(c), share * total - 1e-12)) + 1
            out.append(min(k, len(c)) / len(c))
    return np.asarray(out)


def _pair_block(i: int, row: Mapping, tokenizer, vmax: float) -> str:
    panels = pair_rows(row, tokenizer)
    planted = [f"{e.get('planted', '')!r} ({e['kind']})" for e in row.get("rejected_errors", [])]
    head = (
        f"<b>#{i}</b> {html.escape(str(row.get('id', '')))} &nbsp; {html.escape(str(row.get('kind', '')))}"
        f" &nbsp; margin <b>{row['margin']:+.3f}</b>"
        + (f" &nbsp; planted: {html.escape(', '.join(planted))}" if planted else "")
    )
    cells = "".join(
        f'<div style="flex:1;min-width:300px;">{token_heatmap_html(t, s, lab, vmax, title=title, legend=False)}</div>'
        for title, t, s, lab in panels
    )
    return (
        f'<div class="pair" data-index="{i}" data-margin="{row["margin"]:.6g}" '
        f'style="border-top:1px solid #ddd;padding:6px 0;"><div>{head}</div>'
        f'<div style="display:flex;gap:16px;flex-wrap:wrap;">{cells}</div></div>'
    )


def report_html(scored: Sequence[Mapping], tokenizer, *, title: str = "Per-token implicit rewards") -> str:
    """The page for :func:`qstar_lib.lm.logps.score_pairs` rows (``margin``, ``{side}_rewards``, ids; the
    planted-error labels when the records had ``errors``). One colour scale for every pair."""
    if not scored:
        raise ValueError("report_html needs at least one scored pair")
    every = np.concatenate([np.abs(r[f"{s}_rewards"]) for r in scored for s in ("chosen", "rejected")] + [[0.0]])
    vmax = _vmax(every, None)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><script>{_SORT_JS}</script></head>",
        "<body style='font-family:sans-serif;max-width:1200px;margin:auto;'>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(scored)} pairs; colour: beta log pi/pi_ref per token, red negative (lower = more suspicious),"
        f" scale &plusmn;{vmax:.3f}; <u>underlined</u>: planted-error tokens.</p>",
    ]
    if all("rejected_labels" in r for r in scored) and any(r.get("rejected_errors") for r in scored):
        parts.append(_credit_section(scored))
    parts.append(
        "<p>Sort: <button onclick=\"qstarSort('asc')\">margin, lowest first</button> "
        "<button onclick=\"qstarSort('desc')\">margin, highest first</button> "
        "<button onclick=\"qstarSort('index')\">file order</button></p><div id='qstar-pairs'>"
    )
    parts += [_pair_block(i, row, tokenizer, vmax) for i, row in enumerate(scored)]
    parts.append("</div></body></html>")
    return "".join(parts)


def _credit_section(scored: Sequence[Mapping]) -> str:
    import warnings

    from qstar_lib.eval.credit_tables import credit_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unlabelled pairs (omission, verbosity) are simply left out
        table = credit_report(scored, n_boot=200)
    keep = [
        c for c in table.columns if c[1] in ("n", "auroc_rec", "auroc_rec_lo", "auroc_rec_hi", "top1", "top1_chance")
    ]
    shown = table[keep].round(3)
    return (
        "<h2>Credit table</h2><p>Per-record AUROC among each error's candidate tokens (chance 0.5) with a 95% "
        "bootstrap interval, top-1 localisation and its chance level, per error kind.</p>"
        + shown.to_html(border=0, na_rep="")
    )
