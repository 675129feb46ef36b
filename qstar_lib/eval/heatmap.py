"""Token heatmaps like the paper's Fig. 1: every token of a summary coloured by its per-token score.

Three views of the same thing, all with :data:`qstar_lib.plots.REWARD_CMAP` on a scale symmetric around 0
(red = negative = suspicious, yellow = 0, green = positive) and planted-error tokens underlined:

* :func:`token_heatmap_html`: inline-styled HTML for a notebook (a ``str`` that Jupyter also displays);
* :func:`token_heatmap_figure`: a matplotlib figure for the rendered book (wrapped token boxes + colourbar);
* :func:`pair_explorer`: an ipywidgets browser over scored pairs (chosen and rejected side by side).

Tokens are strings as the tokenizer shows them; byte-level BPE markers (``"Ġ"`` for a space, ``"Ċ"`` for a
newline) and SentencePiece's ``"▁"`` are turned back into spaces/newlines (:func:`display_token`), so the
text reads as written. The scores are typically ``row["rejected_rewards"]`` of
:func:`qstar_lib.lm.logps.score_pairs`, or any score of :mod:`qstar_lib.eval.credit` (lower = more suspicious).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from qstar_lib.eval.credit import align_scores
from qstar_lib.plots import REWARD_CMAP

__all__ = [
    "HeatmapHTML",
    "display_token",
    "pair_explorer",
    "pair_rows",
    "score_color",
    "show_token_heatmap",
    "token_heatmap_figure",
    "token_heatmap_html",
    "tokens_from_ids",
]


# ---------------------------------------------------------------------------------------------------
# Tokens and colours
# ---------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: the printable character byte-level BPE uses for each byte."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def display_token(token: str) -> str:
    """The text a token stands for: byte-level markers (``Ġ`` space, ``Ċ`` newline, ...) and ``▁`` -> spaces.

    A token is byte-decoded only when it contains one of the remapped characters (code points 256-323), so
    an already readable token (``" was"``, ``"café"``) is returned unchanged. SentencePiece byte tokens
    ``<0x0A>`` become the byte they name.
    """
    if any(256 <= ord(c) < 324 for c in token):
        dec = _byte_decoder()
        if all(c in dec for c in token):
            return bytes(dec[c] for c in token).decode("utf-8", errors="replace")
    if token.startswith("<0x") and token.endswith(">") and len(token) == 6:
        try:
            return bytes([int(token[3:5], 16)]).decode("utf-8", errors="replace")
        except ValueError:
            pass
    return token.replace("▁", " ")


def tokens_from_ids(tokenizer, ids: Sequence[int]) -> list[str]:
    """One readable string per token id (``tokenizer.decode([id])``; the EOS shows as ``"⟨eos⟩"``)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    return ["⟨eos⟩" if i == eos else tokenizer.decode([int(i)]) for i in ids]


def _vmax(scores: Sequence[float], vmax: float | None) -> float:
    if vmax is not None:
        if not vmax > 0:
            raise ValueError(f"vmax must be > 0, got {vmax}")
        return float(vmax)
    m = float(np.max(np.abs(scores))) if len(scores) else 0.0
    return m if m > 0 else 1.0  # all zero: every token sits at the neutral middle colour


def score_color(score: float, vmax: float) -> tuple[str, str]:
    """(background hex, text hex) for ``score`` on the symmetric scale [-vmax, vmax] of REWARD_CMAP."""
    import matplotlib
    from matplotlib.colors import to_hex

    x = min(max((score + vmax) / (2 * vmax), 0.0), 1.0)
    r, g, b, _ = matplotlib.colormaps[REWARD_CMAP](x)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return to_hex((r, g, b)), ("#ffffff" if luminance < 0.45 else "#111111")


def _check(
    tokens: Sequence[str], scores: Sequence[float], labels: Sequence[int] | None
) -> tuple[np.ndarray, list[int]]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) != len(tokens):
        raise ValueError(f"scores has shape {s.shape} for {len(tokens)} tokens")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contains NaN or infinite values")
    lab = [0] * len(tokens) if labels is None else [int(v) for v in labels]
    if len(lab) != len(tokens):
        raise ValueError(f"labels has {len(lab)} entries for {len(tokens)} tokens")
    return s, lab


# ---------------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------------
class HeatmapHTML(str):
    """An HTML string that Jupyter renders as HTML (it has ``_repr_html_``) and that is still a ``str``."""

    def _repr_html_(self) -> str:
        return str(self)


def token_heatmap_html(
    tokens: Sequence[str],
    scores: Sequence[float],
    labels: Sequence[int] | None = None,
    vmax: float | None = None,
    *,
    title: str | None = None,
    fmt: str = "{:+.3f}",
    legend: bool = True,
) -> HeatmapHTML:
    """Inline-styled HTML: each token a ``<span>`` coloured by its score, planted-error tokens underlined.

    The scale is symmetric, [-vmax, vmax] with vmax = max |score| unless given (pass one vmax to compare
    several heatmaps); red is negative (lower score = more suspicious), green positive. Each span's tooltip
    shows the token and its value. Text is HTML-escaped; whitespace is kept (``white-space: pre-wrap``), so
    leading spaces and newlines of tokens show as written. Returns a :class:`HeatmapHTML`, a ``str`` that
    Jupyter displays as HTML (or see :func:`show_token_heatmap`).
    """
    s, lab = _check(tokens, scores, labels)
    vm = _vmax(s, vmax)
    spans = []
    for tok, v, is_err in zip(tokens, s, lab):
        text = display_token(tok)
        bg, fg = score_color(float(v), vm)
        tip = f"{text!r}: {fmt.format(v)}" + (" (planted error)" if is_err else "")
        style = f"background-color:{bg};color:{fg};border-radius:2px;padding:1px 0;"
        if is_err:
            style += (
                "text-decoration:underline;text-decoration-color:#000000;text-decoration-thickness:2px;"
                "text-underline-offset:4px;text-decoration-skip-ink:none;"
            )
        spans.append(f'<span title="{html.escape(tip, quote=True)}" style="{style}">{html.escape(text)}</span>')
    parts = ['<div class="qstar-heatmap" style="font-family:sans-serif;line-height:1.9;">']
    if title:
        parts.append(f'<div style="font-weight:bold;margin-bottom:2px;">{html.escape(title)}</div>')
    parts.append('<div style="white-space:pre-wrap;word-wrap:break-word;">' + "".join(spans) + "</div>")
    if legend:
        lo, _ = score_color(-vm, vm)
        hi, _ = score_color(vm, vm)
        mid, _ = score_color(0.0, vm)
        parts.append(
            f'<div style="font-size:0.8em;color:#555;">'
            f'<span style="display:inline-block;width:120px;height:0.8em;vertical-align:middle;'
            f'background:linear-gradient(to right,{lo},{mid},{hi});"></span> '
            f"{html.escape(fmt.format(-vm))} to {html.escape(fmt.format(vm))}; lower = more suspicious"
            + ("; <u>underlined</u> = planted error" if any(lab) else "")
            + "</div>"
        )
    parts.append("</div>")
    return HeatmapHTML("".join(parts))


def show_token_heatmap(
    tokens: Sequence[str],
    scores: Sequence[float],
    labels: Sequence[int] | None = None,
    vmax: float | None = None,
    **kwargs,
):
    """:func:`token_heatmap_html` wrapped in ``IPython.display.HTML`` (for ``display(...)``)."""
    from IPython.display import HTML

    return HTML(str(token_heatmap_html(tokens, scores, labels, vmax, **kwargs)))


# ---------------------------------------------------------------------------------------------------
# Matplotlib figure
# ---------------------------------------------------------------------------------------------------
def _layout(tokens: Sequence[str], width_in: float, fontsize: float, measure) -> tuple[list[tuple], int]:
    """Place tokens as boxes on wrapped lines. Returns ([(line, x, w, text)], n_lines); units are inches."""
    space = measure("a b") - measure("ab")
    pad = fontsize / 72 * 0.12  # a little colour either side of the glyphs
    out, line, x = [], 0, 0.0
    for tok in tokens:
        text = display_token(tok)
        n_breaks = text.count("\n")
        lead = len(text) - len(text.lstrip(" \t"))
        body = text.strip(" \t\n") or ("↵" if n_breaks else "")
        if body:
            w, gap = measure(body) + 2 * pad, (lead * space if x > 0 else 0.0)
        else:  # a token of spaces only: a coloured gap as wide as its spaces
            w, gap = max(lead, 1) * space, 0.0
        if x > 0 and x + gap + w > width_in:
            line, x, gap = line + 1, 0.0, 0.0
        out.append((line, x + gap, w, body))
        x += gap + w
        if n_breaks:
            line, x = line + n_breaks, 0.0
    return out, (max(p[0] for p in out) + 1 if out else 1)


def _checked_panels(rows: Sequence[tuple]) -> list[tuple]:
    """``(title, tokens, scores, labels)`` panels, checked: scores as a float array, labels as 0/1 ints."""
    if not rows:
        raise ValueError("token_heatmap_figure needs at least one panel")
    panels = []
    for i, row in enumerate(rows):
        if len(row) != 4:
            raise ValueError(f"rows[{i}] must be (title, tokens, scores, labels), got {len(row)} items")
        title, tokens, scores, labels = row
        s, lab = _check(tokens, scores, labels)
        panels.append((str(title), list(tokens), s, lab))
    return panels


def _draw_panel(
    ax,
    panel: tuple,
    placed: list[tuple],
    *,
    width: float,
    height: float,
    title_h: float,
    line_h: float,
    box_h: float,
    fontsize: float,
    vmax: float,
    show_values: bool,
) -> None:
    """One panel of :func:`token_heatmap_figure`: its title, then the placed token boxes (units: inches)."""
    from matplotlib.patches import Rectangle

    title, _, s, lab = panel
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # inches from the top of the panel
    ax.axis("off")
    ax.text(0, title_h * 0.45, title, fontsize=fontsize + 1, fontweight="bold", va="center", ha="left")
    for (line, x, w, body), v, is_err in zip(placed, s, lab):
        y = title_h + line * line_h
        bg, fg = score_color(float(v), vmax)
        ax.add_patch(Rectangle((x, y), w, box_h, facecolor=bg, edgecolor="white", linewidth=0.6))
        ax.text(x + w / 2, y + box_h / 2, body, fontsize=fontsize, color=fg, ha="center", va="center_baseline")
        if is_err:
            ax.plot([x, x + w], [y + box_h + 0.03] * 2, color="black", linewidth=1.8, solid_capstyle="butt")
        if show_values:
            ax.text(
                x + w / 2,
                y + box_h + 0.1,
                f"{v:+.2f}",
                fontsize=fontsize * 0.55,
                color="#444",
                ha="center",
                va="center",
            )


def _draw_grid(fig, panels, layouts, grid_h, ncols: int, frame: tuple, geometry: dict) -> None:
    """One axes per panel, row by row, in a figure whose size and gaps (inches) are ``frame``."""
    W, H, margin, panel_width, gap_x, gap_y = frame
    nrows = len(grid_h)
    top = margin
    for r in range(nrows):
        for c in range(ncols):
            j = r * ncols + c
            if j >= len(panels):
                break
            x0 = margin + c * (panel_width + gap_x)
            ax = fig.add_axes((x0 / W, 1 - (top + grid_h[r]) / H, panel_width / W, grid_h[r] / H))
            _draw_panel(
                ax,
                panels[j],
                layouts[j][0],
                width=panel_width,
                height=grid_h[r],
                **geometry,
            )
        top += grid_h[r] + gap_y


def _colorbar(fig, mappable, label: str, W: float, H: float, margin: float, fontsize: float) -> None:
    """The shared horizontal colourbar under the panels (figure of W x H inches)."""
    cw = min(4.0, W - 2 * margin)
    cax = fig.add_axes(((W - cw) / 2 / W, (margin + 0.38) / H, cw / W, 0.12 / H))
    cb = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    cb.set_label(label, fontsize=fontsize - 1)
    cb.ax.tick_params(labelsize=fontsize - 2)
    cb.ax.grid(False)


def token_heatmap_figure(
    rows: Sequence[tuple],
    *,
    ncols: int | None = None,
    vmax: float | None = None,
    panel_width: float = 5.6,
    fontsize: float = 10.0,
    show_values: bool = False,
    cbar_label: str = r"per-token score  $\beta \log \pi_\theta / \pi_{\mathrm{ref}}$",
    suptitle: str | None = None,
):
    """Token heatmaps as a matplotlib figure, like the paper's Fig. 1: wrapped text boxes coloured by score.

    Args:
        rows: panels ``(title, tokens, scores, labels)`` (labels may be None); e.g. chosen then rejected.
        ncols: panels per row of the figure (default 2 for two panels, side by side, else 1: stacked).
        vmax: half-width of the symmetric colour scale; default the largest |score| over all panels, so
            colours compare across panels. Red = negative (lower score = more suspicious), green = positive.
        panel_width: width of one panel in inches (tokens wrap inside it; 40-80 tokens take 4-8 lines).
        show_values: also print each token's value under it (small; for short texts).
        cbar_label: label of the shared horizontal colourbar.

    Planted-error tokens (label 1) are underlined with a black bar. Tokens that continue a word (no leading
    space) are drawn touching the previous box, so word pieces read as one word; a token made only of
    spaces is a coloured gap, a newline token a "↵" box followed by a line break. Returns the Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.font_manager import FontProperties

    from qstar_lib import plots

    panels = _checked_panels(rows)
    vm = _vmax(np.concatenate([p[2] for p in panels]), vmax)
    ncols = ncols or (2 if len(panels) == 2 else 1)
    nrows = math.ceil(len(panels) / ncols)

    plots.apply_style()
    fig = plt.figure()
    renderer = fig.canvas.get_renderer()
    prop = FontProperties(size=fontsize)

    def measure(t: str) -> float:
        w, _, _ = renderer.get_text_width_height_descent(t, prop, ismath=False)
        return w / fig.dpi  # pixels -> inches

    line_h = fontsize / 72 * (2.6 if show_values else 1.75)
    box_h = fontsize / 72 * 1.35
    title_h, gap_x, gap_y, cbar_h, margin = 0.32, 0.35, 0.25, 0.75, 0.08
    layouts = [_layout(p[1], panel_width, fontsize, measure) for p in panels]
    grid_h = [
        max(layouts[j][1] for j in range(r * ncols, min((r + 1) * ncols, len(panels)))) * line_h + title_h
        for r in range(nrows)
    ]
    W = 2 * margin + ncols * panel_width + (ncols - 1) * gap_x
    H = 2 * margin + sum(grid_h) + (nrows - 1) * gap_y + cbar_h
    fig.set_size_inches(W, H)

    cmap = plt.get_cmap(REWARD_CMAP)
    norm = Normalize(-vm, vm)
    geometry = dict(title_h=title_h, line_h=line_h, box_h=box_h, fontsize=fontsize, vmax=vm, show_values=show_values)
    _draw_grid(fig, panels, layouts, grid_h, ncols, (W, H, margin, panel_width, gap_x, gap_y), geometry)
    label = cbar_label + ("   (underlined: planted error)" if any(any(p[3]) for p in panels) else "")
    _colorbar(fig, ScalarMappable(norm=norm, cmap=cmap), label, W, H, margin, fontsize)
    if suptitle:
        fig.suptitle(suptitle, y=1 + 0.25 / H, fontsize=fontsize + 2)
    return fig


# ---------------------------------------------------------------------------------------------------
# Scored pairs -> panels, and the explorer
# ---------------------------------------------------------------------------------------------------
def pair_rows(scored_row: Mapping, tokenizer, *, key: str = "rewards") -> list[tuple]:
    """The two panels ``(title, tokens, scores, labels)`` of one pair: chosen, then rejected.

    ``scored_row`` is one :func:`qstar_lib.lm.logps.score_pairs` row (``{side}_ids``, ``{side}_{key}``,
    ``{side}_reward``); tokens come from its ids (the EOS included, shown as ``⟨eos⟩``, never labelled).
    Rejected tokens are labelled with the row's ``rejected_labels`` (a planted-error record's, see
    :func:`qstar_lib.lm.collate.planted_labels`), with the credit metrics' policy: a completion cut by
    ``max_length`` raises (:func:`qstar_lib.eval.credit.align_scores`) instead of hiding error tokens.
    """
    out = []
    for side in ("chosen", "rejected"):
        ids = list(scored_row[f"{side}_ids"])
        scores = list(scored_row[f"{side}_{key}"])
        if len(scores) != len(ids):
            raise ValueError(f"{side}_{key} has {len(scores)} values for {len(ids)} ids")
        lab = [0] * len(ids)
        if side == "rejected" and "rejected_labels" in scored_row:
            labels = [int(v) for v in scored_row["rejected_labels"]]
            align_scores(scores, len(labels), record=scored_row.get("id"))  # ids: the labelled tokens (+ EOS)
            lab[: len(labels)] = labels
        total = scored_row.get(f"{side}_reward", float(np.sum(scores)))
        out.append((f"{side}   (sum {total:+.3f})", tokens_from_ids(tokenizer, ids), scores, lab))
    return out


def pair_explorer(scored: Sequence[Mapping], tokenizer, *, vmax: float | None = None, index: int = 0):
    """An ipywidgets browser over :func:`qstar_lib.lm.logps.score_pairs` rows: pick a pair, see both heatmaps.

    A ``Dropdown`` (``"i: kind (id)"``) selects the pair; below it an ``HTML`` summary (kind, planted
    values, chosen/rejected sequence rewards, margin) and the chosen and rejected heatmaps side by side
    (:func:`token_heatmap_html`, one colour scale for the whole set so pairs compare). Building it needs no
    running kernel; returns the ``VBox`` ``[dropdown, summary, HBox([chosen, rejected])]``.
    """
    import ipywidgets as w

    if not scored:
        raise ValueError("pair_explorer needs at least one pair")
    if vmax is None:
        every = np.concatenate([np.abs(r[f"{s}_rewards"]) for r in scored for s in ("chosen", "rejected")] + [[0.0]])
        vmax = _vmax(every, None)
    options = [(f"{i}: {row.get('kind', '?')} ({row.get('id', i)})", i) for i, row in enumerate(scored)]
    pick = w.Dropdown(options=options, value=index, description="pair", layout=w.Layout(width="420px"))
    summary = w.HTML()
    chosen = w.HTML(layout=w.Layout(width="50%"))
    rejected = w.HTML(layout=w.Layout(width="50%"))

    def show(i: int) -> None:
        row = scored[i]
        panels = pair_rows(row, tokenizer)
        planted = [f"{e.get('planted', '')!r} ({e['kind']})" for e in row.get("rejected_errors", [])]
        margin = row.get("margin", row["chosen_reward"] - row["rejected_reward"])
        summary.value = (
            f"<b>{html.escape(str(row.get('kind', '')))}</b> &nbsp; planted: "
            f"{html.escape(', '.join(planted) or 'none')} &nbsp; | &nbsp; chosen reward "
            f"{row['chosen_reward']:+.3f}, rejected reward {row['rejected_reward']:+.3f}, "
            f"margin {margin:+.3f}"
        )
        for box, (title, toks, sc, lab) in zip((chosen, rejected), panels):
            box.value = str(token_heatmap_html(toks, sc, lab, vmax, title=title, legend=box is rejected))

    pick.observe(lambda change: show(change["new"]), names="value")
    show(index)
    return w.VBox([pick, summary, w.HBox([chosen, rejected])])
