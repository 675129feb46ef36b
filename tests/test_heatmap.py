"""qstar_lib.eval.heatmap: token display, HTML escaping and spaces, colours, the matplotlib figure (80 tokens),
and the ipywidgets explorer built without a kernel."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from qstar_lib.data import fig1_example, token_labels  # noqa: E402
from qstar_lib.eval.heatmap import (  # noqa: E402
    HeatmapHTML,
    display_token,
    pair_explorer,
    pair_rows,
    score_color,
    show_token_heatmap,
    token_heatmap_figure,
    token_heatmap_html,
    tokens_from_ids,
)


# ------------------------------------------------------------------------------------------------ tokens
@pytest.mark.parametrize(
    "token,text",
    [
        ("Ġwas", " was"),
        ("ĠĠ", "  "),
        ("Ċ", "\n"),
        ("▁was", " was"),
        ("<0x0A>", "\n"),
        ("was", "was"),
        ("café", "café"),
        (" was", " was"),
    ],
)
def test_display_token_turns_markers_into_spaces(token, text):
    assert display_token(token) == text


def test_tokens_from_ids_match_the_text(tiny_tokenizer):
    text = " he earns 250k, a management position"
    ids = tiny_tokenizer(text, add_special_tokens=False).input_ids
    toks = tokens_from_ids(tiny_tokenizer, ids + [tiny_tokenizer.eos_token_id])
    assert "".join(toks[:-1]) == text and toks[-1] == "⟨eos⟩"


# ------------------------------------------------------------------------------------------------ colours
def test_colours_are_symmetric_red_low_green_high():
    low, _ = score_color(-1.0, 1.0)
    high, _ = score_color(1.0, 1.0)
    mid, fg_mid = score_color(0.0, 1.0)
    r_lo, g_lo = int(low[1:3], 16), int(low[3:5], 16)
    r_hi, g_hi = int(high[1:3], 16), int(high[3:5], 16)
    assert r_lo > g_lo and g_hi > r_hi  # red for negative, green for positive
    assert fg_mid == "#111111" and score_color(-1.0, 1.0)[1] == "#ffffff"  # readable text on dark boxes
    assert score_color(-5.0, 1.0) == score_color(-1.0, 1.0)  # clipped to the scale


# --------------------------------------------------------------------------------------------------- HTML
def spans(html_text: str) -> list[str]:
    return re.findall(r"<span title=[^>]*>(.*?)</span>", html_text, flags=re.S)


def test_html_escapes_script_and_attributes():
    tokens = ["<script>", "alert('x')", "</script>", ' "quoted" & more']
    out = token_heatmap_html(tokens, [0.1, -0.2, 0.3, 0.0], title="<b>t</b>")
    assert "<script>" not in out and "</script>" not in out and "<b>t</b>" not in out
    assert "&lt;script&gt;" in out and "&amp;" in out
    for attr in re.findall(r'title="([^"]*)"', out):  # no raw quote or bracket can close an attribute early
        assert "<" not in attr and ">" not in attr


def test_html_keeps_leading_spaces_and_marks_errors():
    tokens = ["ĠI", "Ġearn", "Ġ2", "50", "k", ".\n"]
    out = token_heatmap_html(tokens, [0.0, 0.1, -1.0, -0.8, -0.2, 0.05], labels=[0, 0, 1, 1, 1, 0])
    assert spans(out) == [" I", " earn", " 2", "50", "k", ".\n"]
    assert "white-space:pre-wrap" in out
    assert out.count("text-decoration:underline") == 3
    assert "(planted error)" in out and "lower = more suspicious" in out
    assert "-1.000" in out  # the value is in the tooltip
    assert isinstance(out, str) and isinstance(out, HeatmapHTML) and out._repr_html_() == str(out)
    assert show_token_heatmap(tokens, [0.0] * 6).data.startswith("<div")


def test_html_scale_and_bad_input():
    a = token_heatmap_html(["a", "b"], [0.0, 0.5], vmax=1.0)
    b = token_heatmap_html(["a", "b"], [0.0, 0.5])  # vmax = 0.5: "b" at the green end
    assert a != b and score_color(0.5, 0.5)[0] in b and score_color(0.5, 1.0)[0] in a
    assert spans(token_heatmap_html(["a"], [0.0])) == ["a"]  # all-zero scores do not divide by zero
    with pytest.raises(ValueError, match="3 tokens"):
        token_heatmap_html(["a", "b", "c"], [0.0, 1.0])
    with pytest.raises(ValueError, match="labels"):
        token_heatmap_html(["a"], [0.0], labels=[1, 0])
    with pytest.raises(ValueError, match="vmax"):
        token_heatmap_html(["a"], [0.0], vmax=0.0)


# ------------------------------------------------------------------------------------------------ figure
def test_figure_builds_with_80_tokens(tmp_path):
    rng = np.random.default_rng(0)
    words = ("Ġmy Ġboyfriend Ġwas Ġoffered Ġ2 50 k Ġfor Ġa Ġm an age ment Ġp os ition , Ġshould ĠI Ġmove ?").split()
    tokens = [words[i % len(words)] for i in range(80)]
    labels = [1 if 4 <= i % len(words) <= 6 else 0 for i in range(80)]
    scores = rng.normal(0, 0.2, 80) - 0.5 * np.array(labels)
    fig = token_heatmap_figure([("rejected", tokens, scores, labels)], show_values=True)
    panel = fig.axes[0]
    boxes = [p for p in panel.patches if isinstance(p, Rectangle)]
    assert len(boxes) == 80
    assert len(panel.lines) == sum(labels)  # one underline per planted-error token
    assert len(fig.axes) == 2  # the panel and the colourbar
    x_right = max(b.get_x() + b.get_width() for b in boxes)
    assert x_right <= panel.get_xlim()[1] + 1e-9  # wrapped inside the panel
    assert len({round(b.get_y(), 6) for b in boxes}) >= 3  # 80 tokens take several lines
    fig.savefig(tmp_path / "heat80.png")
    assert (tmp_path / "heat80.png").stat().st_size > 10_000
    plt.close(fig)


def test_figure_side_by_side_shares_one_scale(tiny_tokenizer):
    rec = fig1_example()
    rows = []
    for side in ("chosen", "rejected"):
        ids = tiny_tokenizer(rec[side], add_special_tokens=False).input_ids
        lab = token_labels(rec[side], rec["errors"], tiny_tokenizer) if side == "rejected" else None
        rows.append((side, tokens_from_ids(tiny_tokenizer, ids), np.linspace(-0.3, 0.1, len(ids)), lab))
    fig = token_heatmap_figure(rows)
    left, right = fig.axes[0].get_position(), fig.axes[1].get_position()
    assert left.x1 <= right.x0 and abs(left.y0 - right.y0) < 1e-9  # chosen left, rejected right
    cbar = fig.axes[2]
    assert cbar.get_xlim() == pytest.approx((-0.3, 0.3))  # symmetric around 0, shared
    plt.close(fig)
    fig = token_heatmap_figure(rows, ncols=1)  # stacked
    assert fig.axes[0].get_position().y0 > fig.axes[1].get_position().y0
    plt.close(fig)
    with pytest.raises(ValueError, match="rows\\[0\\]"):
        token_heatmap_figure([("x", ["a"], [0.0])])


# ---------------------------------------------------------------------------------------------- explorer
def fake_scored(records, tok):
    """score_pairs-shaped rows with made-up rewards (no model needed), carrying the records' token labels."""
    from qstar_lib.lm.collate import planted_labels

    rows = []
    for k, rec in enumerate(records):
        row = planted_labels(rec, tok)
        for side in ("chosen", "rejected"):
            ids = tok(rec[side], add_special_tokens=False).input_ids + [tok.eos_token_id]
            rewards = list(np.linspace(-0.2, 0.2, len(ids)) * (k + 1))
            row.update({f"{side}_ids": ids, f"{side}_rewards": rewards, f"{side}_reward": float(sum(rewards))})
        row["margin"] = row["chosen_reward"] - row["rejected_reward"]
        rows.append(row)
    return rows


def test_pair_rows_label_only_rejected_errors(tiny_tokenizer):
    rec = fig1_example()
    (t_c, toks_c, _, lab_c), (t_r, toks_r, _, lab_r) = pair_rows(fake_scored([rec], tiny_tokenizer)[0], tiny_tokenizer)
    assert t_c.startswith("chosen") and t_r.startswith("rejected")
    assert sum(lab_c) == 0 and lab_r[-1] == 0 and toks_r[-1] == "⟨eos⟩"
    flagged = "".join(t for t, lab in zip(toks_r, lab_r) if lab)
    assert flagged.replace(" ", "") == "250kforamanagementposition"  # a space-only token is not labelled


def test_pair_explorer_builds_without_a_kernel(tiny_tokenizer):
    import ipywidgets as w

    from qstar_lib.data import synthetic_tldr

    records = [fig1_example()] + synthetic_tldr(3, seed=0, split="test")
    ui = pair_explorer(fake_scored(records, tiny_tokenizer), tiny_tokenizer)
    assert isinstance(ui, w.VBox)
    pick, summary, both = ui.children
    assert isinstance(pick, w.Dropdown) and len(pick.options) == 4
    assert isinstance(summary, w.HTML) and "two_errors" in summary.value and "250k" in summary.value
    chosen, rejected = both.children
    assert "chosen" in chosen.value and "text-decoration:underline" in rejected.value
    first = rejected.value
    pick.value = 2  # choosing another pair redraws both heatmaps and the summary
    assert rejected.value != first and records[2]["kind"] in summary.value
    with pytest.raises(ValueError, match="at least one pair"):
        pair_explorer([], tiny_tokenizer)


def test_pair_rows_refuse_a_truncated_labelled_completion(tiny_tokenizer):
    """One truncation policy with the credit metrics: a cut completion raises instead of hiding error tokens."""
    rec = fig1_example()
    row = fake_scored([rec], tiny_tokenizer)[0]
    cut = {**row, "rejected_ids": row["rejected_ids"][:5], "rejected_rewards": row["rejected_rewards"][:5]}
    with pytest.raises(ValueError, match="truncated"):
        pair_rows(cut, tiny_tokenizer)
    unlabelled = {k: v for k, v in cut.items() if not k.startswith("rejected_labels")}
    assert sum(pair_rows(unlabelled, tiny_tokenizer)[1][3]) == 0  # a row without planted errors: nothing to hide
