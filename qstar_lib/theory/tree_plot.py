"""Figures of the tree chapter: the tree with its values, and the DPO credit-assignment curve.

Matplotlib only. The layout needs no recursion: in a complete K-ary tree the state ``i`` at depth ``d``
owns the leaves ``i * K**(D-d) .. (i+1) * K**(D-d) - 1``, so it is drawn above their midpoint.
It knows nothing about how the numbers were computed; it is handed a tree and its soft solution.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D

from qstar_lib.plots import COLORS, REWARD_CMAP, new_figure
from qstar_lib.theory.tree import SoftSolution, TreeMDP, trajectory_states

PATH_STYLES = (
    {"color": COLORS["policy"], "lw": 4.0, "ls": "-", "alpha": 0.85},
    {"color": COLORS["rejected"], "lw": 2.5, "ls": "--", "alpha": 0.9},
    {"color": COLORS["accent"], "lw": 2.5, "ls": ":", "alpha": 0.95},
    {"color": COLORS["chosen"], "lw": 2.0, "ls": "-.", "alpha": 0.9},
)


def node_positions(depth: int, branching: int) -> list[np.ndarray]:
    """x[d] (K**d,): horizontal position of every state at depth d; the leaves of ``depth`` sit at 0, 1, ..."""
    k = branching
    return [(np.arange(k**d) * k ** (depth - d) + (k ** (depth - d) - 1) / 2.0) for d in range(depth + 1)]


def plot_tree(
    tree: TreeMDP,
    solution: SoftSolution,
    paths: dict | None = None,
    ax=None,
    max_depth: int | None = None,
    label_depth: int = 1,
    title: str | None = None,
):
    """Draw the tree top-down: nodes coloured by V*(s), edges as wide as pi*(a|s), paths highlighted.

    Args:
        paths: ``{label: actions}`` complete or partial action sequences from the root to overlay (the first
            is drawn as the main, solid path; the next ones dashed/dotted).
        max_depth: draw only the first ``max_depth`` levels (large trees); default: all when K**D <= 256.
        label_depth: write pi*(a|s) on the edges leaving states at depth < label_depth.

    Returns:
        the matplotlib Axes.
    """
    k = tree.branching
    if max_depth is None:
        max_depth = tree.depth if k**tree.depth <= 256 else max(1, int(np.log(256) / np.log(k)))
    depth = min(max_depth, tree.depth)
    if ax is None:
        _, ax = new_figure(figsize=(min(14.0, max(7.5, 3.0 + 0.13 * k**depth)), 1.3 + 1.25 * depth))
    xs = node_positions(depth, k)
    v_all = np.concatenate([solution.v_star[d] for d in range(min(depth + 1, tree.depth))])
    norm = Normalize(vmin=float(v_all.min()), vmax=float(v_all.max()))

    _draw_edges(ax, xs, solution, depth, k, label_depth)

    handles = _draw_paths(ax, xs, paths, depth, k)

    size = max(12.0, 260.0 / np.sqrt(k ** max(depth - 1, 0)))
    for d in range(depth + 1):
        terminal = d == tree.depth
        colors = "#d0d0d0" if terminal else _cmap()(norm(solution.v_star[d]))
        ax.scatter(
            xs[d],
            np.full(k**d, -d),
            s=size * (0.5 if terminal else 1.0) / (1 + 0.6 * d),
            c=colors,
            edgecolors="#333333",
            linewidths=0.5,
            zorder=3,
        )
        if not terminal and k**d <= 9:  # room for the numbers: write V* beside the node
            for x, v in zip(xs[d], solution.v_star[d]):
                ax.text(
                    x + 0.012 * k**depth + 0.1,
                    -d + 0.12,
                    f"{v:.2f}",
                    fontsize=8,
                    ha="left",
                    va="bottom",
                    color="#222222",
                    zorder=5,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
                )
    handles.append(Line2D([], [], color="#9a9a9a", lw=4, label=r"edge width $\propto \pi^*(a|s)$"))
    if depth == tree.depth:
        handles.append(
            Line2D(
                [], [], color="#d0d0d0", marker="o", ls="", markeredgecolor="#333333", label=r"terminal state, $V^*=0$"
            )
        )

    ax.figure.colorbar(_scalar_mappable(norm), ax=ax, fraction=0.025, pad=0.01, label=r"$V^*(s)$")
    _style_axes(ax, depth, tree.depth, k)
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        fontsize=9,
        ncol=min(len(handles), 2 if k**depth < 30 else 3),
    )
    if title:
        ax.set_title(title)
    return ax


def _draw_paths(ax, xs, paths: dict | None, depth: int, k: int) -> list:
    """Overlay action sequences from the root (the first solid, the next dashed/dotted); legend handles."""
    handles = []
    for style, (label, actions) in zip(PATH_STYLES, (paths or {}).items()):
        actions = np.asarray(actions, dtype=np.int64)[:depth]
        states = trajectory_states(actions, k)
        pts = [(xs[t][states[t]], -t) for t in range(len(actions))]
        pts.append((xs[len(actions)][states[-1] * k + actions[-1]], -len(actions)))
        ax.plot(*zip(*pts), zorder=2, solid_capstyle="round", **style)
        handles.append(Line2D([], [], label=label, **style))
    return handles


def _draw_edges(ax, xs, solution: SoftSolution, depth: int, k: int, label_depth: int) -> None:
    """Edges as wide as pi*(a|s); pi* written on the edges leaving states at depth < label_depth."""
    segments, widths = [], []
    for d in range(depth):
        parent_x = np.repeat(xs[d], k)  # (K**(d+1),)
        for px, cx, p in zip(parent_x, xs[d + 1], solution.pi_star[d].reshape(-1)):
            segments.append([(px, -d), (cx, -(d + 1))])
            widths.append(0.3 + 6.0 * p)
    ax.add_collection(LineCollection(segments, linewidths=widths, colors="#9a9a9a", alpha=0.7, zorder=1))
    for d in range(min(label_depth, depth)):  # pi* on the top edges, where there is room
        for i in range(k**d):
            for a in range(k):
                cx = xs[d + 1][i * k + a]
                ax.text(
                    (xs[d][i] + cx) / 2,
                    -(d + 0.5),
                    f"{solution.pi_star[d][i, a]:.2f}",
                    fontsize=8,
                    ha="center",
                    va="center",
                    zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
                )


def _style_axes(ax, depth: int, tree_depth: int, k: int) -> None:
    """Depth labels on the y axis, no x axis, room for the legend below."""
    ticks = [f"depth {d}" for d in range(depth + 1)]
    if depth < tree_depth:
        ticks[-1] += f"\n(of {tree_depth}, not drawn)"
    ax.set_yticks([-d for d in range(depth + 1)], ticks)
    ax.tick_params(axis="y", length=0)
    ax.set_xticks([])
    ax.grid(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_xlim(-1, k**depth)
    ax.set_ylim(-depth - 0.4, 0.6)


def _cmap():
    """The colormap object behind the book's ``REWARD_CMAP`` name (red = low, green = high)."""
    return matplotlib.colormaps[REWARD_CMAP]


def _scalar_mappable(norm):
    sm = ScalarMappable(norm=norm, cmap=_cmap())
    sm.set_array([])
    return sm


def plot_advantage_recovery(n_pairs, metrics, ax=None):
    """Correlation (left axis) and RMSE (right panel) between learned and true advantages vs number of pairs.

    Args:
        n_pairs: (M,) numbers of preference pairs.
        metrics: list of M lists (one per size) of dicts from ``tree_dpo.advantage_agreement`` (one per seed).
    """
    if ax is None:
        _, ax = new_figure(1, 2, figsize=(9.0, 3.4))
    n_pairs = np.asarray(n_pairs)
    for panel, key, label in ((ax[0], "corr", "correlation"), (ax[1], "rmse", "RMSE")):
        values = np.array([[m[key] for m in row] for row in metrics])  # (M, seeds)
        for j, col in enumerate(values.T):
            panel.plot(n_pairs, col, color=COLORS["reference"], alpha=0.35, lw=1, label="one tree" if j == 0 else None)
        panel.plot(n_pairs, values.mean(axis=1), "o-", color=COLORS["policy"], lw=2, label="mean over trees")
        panel.set_xscale("log")
        panel.set_xlabel("preference pairs")
        panel.set_ylabel(label)
    ax[0].set_ylim(min(0.0, ax[0].get_ylim()[0]), 1.02)
    ax[0].axhline(1.0, color=COLORS["chosen"], lw=1, ls=":")
    ax[1].set_ylim(0, None)
    ax[0].set_title(r"learned $\beta\log\pi_\theta/\pi_{ref}$ vs $r+V^*(s')-V^*(s)$", fontsize=10)
    ax[1].set_title("error on visited state-actions", fontsize=10)
    ax[0].legend(loc="lower right")
    ax[0].figure.tight_layout()
    return ax
