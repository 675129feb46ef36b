"""One house style for every figure in the book.

It knows nothing about the experiments: chapters build their own figures and call :func:`apply_style`
(once, at import of this module) and :func:`new_figure` so that fonts, sizes and colours match.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

#: Colours used with one meaning across the book.
COLORS = {
    "chosen": "#1b7837",
    "rejected": "#b2182b",
    "reference": "#6a6a6a",
    "policy": "#2166ac",
    "accent": "#e08214",
}
#: Diverging colormap for per-token rewards: red = negative credit, green = positive.
REWARD_CMAP = "RdYlGn"


def apply_style() -> None:
    """Set the matplotlib rcParams of the book (idempotent)."""
    plt.rcParams.update(
        {
            "figure.figsize": (7.0, 4.0),
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.frameon": False,
            "font.size": 10,
        }
    )


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """``plt.subplots`` in the house style."""
    apply_style()
    return plt.subplots(nrows, ncols, **kwargs)


apply_style()
