"""Measuring what the models do: credit-assignment metrics, their baselines and table, token heatmaps, the
gold judge, the LLM judge and its local server, the Figure 2 beam sweep and best-of-n.

Names are exported lazily (PEP 562): ``from qstar_lib.eval import X`` loads only the module that
defines ``X``."""

from __future__ import annotations

import importlib

#: exported name -> the module of this package that defines it
_EXPORTS = {
    "DEFAULT_METHODS": "baselines",
    "base_surprisal": "baselines",
    "credit_scores": "baselines",
    "random_scores": "baselines",
    "sft_surprisal": "baselines",
    "surprisal_scores": "baselines",
    "uniform_share": "baselines",
    "MIN_BINS": "credit",
    "align_scores": "credit",
    "auroc": "credit",
    "error_token_auroc": "credit",
    "pair_accuracy": "credit",
    "stitching_rate": "credit",
    "top1_localisation": "credit",
    "where_is_the_minimum": "credit",
    "CI": "credit_table",
    "SINGLE_KINDS": "credit_table",
    "TABLE_KINDS": "credit_table",
    "credit_report": "credit_table",
    "credit_table": "credit_table",
    "credit_targets": "credit_table",
    "minimum_table": "credit_table",
    "HeatmapHTML": "heatmap",
    "display_token": "heatmap",
    "pair_explorer": "heatmap",
    "pair_rows": "heatmap",
    "score_color": "heatmap",
    "show_token_heatmap": "heatmap",
    "token_heatmap_figure": "heatmap",
    "token_heatmap_html": "heatmap",
    "tokens_from_ids": "heatmap",
    "AFTER_WINDOW": "judge",
    "CONTRADICTION_WEIGHT": "judge",
    "CUE_WINDOW": "judge",
    "INVENTION_WEIGHT": "judge",
    "JudgeScore": "judge",
    "LENGTH_PENALTY": "judge",
    "NUMBER_WORDS": "judge",
    "TIE_TOL": "judge",
    "WORD_BUDGET": "judge",
    "compare": "judge",
    "score_summary": "judge",
    "win_rate": "judge",
    "GoldJudgeServer": "judge_server",
    "gold_answer": "judge_server",
    "parse_judge_prompt": "judge_server",
    "Comparison": "llm_judge",
    "ENV_API_KEY": "llm_judge",
    "ENV_BASE_URL": "llm_judge",
    "ENV_MODEL": "llm_judge",
    "JUDGE_PROMPT": "llm_judge",
    "JudgeHTTPError": "llm_judge",
    "JudgeSummary": "llm_judge",
    "LLMJudge": "llm_judge",
    "OUTCOMES": "llm_judge",
    "RETRY_STATUS": "llm_judge",
    "build_prompt": "llm_judge",
    "parse_preference": "llm_judge",
    "summarize": "llm_judge",
    "BestOfN": "sweep",
    "SWEEP_COLUMNS": "sweep",
    "beam_sweep": "sweep",
    "best_of_n": "sweep",
    "best_of_n_comparison": "sweep",
    "implicit_rewards": "sweep",
    "plot_beam_sweep": "sweep",
    "summary_stats": "sweep",
}
__all__ = sorted(_EXPORTS) + [
    "baselines",
    "credit",
    "credit_table",
    "heatmap",
    "judge",
    "llm_judge",
    "judge_server",
    "sweep",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in ("baselines", "credit", "credit_table", "heatmap", "judge", "llm_judge", "judge_server", "sweep"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
