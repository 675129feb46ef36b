"""Search on a token tree: eq. 12 (value-guided) versus eq. 13 (likelihood under pi*), beams, MCTS, greedy.

Section 5.2 of the paper considers the search problem of eq. 2 cut off after a partial expansion: pick the
next few actions to maximise the regularised reward collected along them plus the optimal value of the
state they lead to (eq. 12)::

    max_{a_0..a_{h-1}}  sum_{t<h} [ r(s_t, a_t) + beta * log pi_ref(a_t|s_t) ]  +  V*(s_h)

(the paper's partial expansion "of length K" has actions a_0..a_K, i.e. our ``horizon`` h = K + 1; we
keep K for the branching factor). Substituting eq. 10 and telescoping, the objective equals
``V*(s_0) + sum_{t<h} beta * log pi*(a_t|s_t)`` (eq. 13; the paper prints ``-V*(s_0)``, but the sign is
immaterial because the term is the same for every candidate). So value-guided search and likelihood search
on pi* choose the same actions, for every horizon and every beam width.

Everything here is exact and exhaustive where it can be (``K**h`` candidates). This module knows nothing
about learning: it is handed the tables (a reward, pi_ref, V*, pi*) from :mod:`qstar_lib.theory.tree`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qstar_lib.theory.tree import TreeMDP, enumerate_trajectories, trajectory_sums


def regularised_reward(tree: TreeMDP):
    """r(s, a) + beta * log pi_ref(a|s) per state-action: the per-step reward of the KL objective (eq. 2)."""
    return tuple(r + tree.beta * np.log(p) for r, p in zip(tree.reward, tree.pi_ref))


def _prefix_scores(per_step, horizon: int, tail=None) -> tuple[np.ndarray, np.ndarray]:
    """All K**h prefixes of length ``horizon`` and their score sum_{t<h} per_step + tail[h](s_h)."""
    depth, k = len(per_step), per_step[0].shape[1]
    if not 1 <= horizon <= depth:
        raise ValueError(f"horizon must be in 1..{depth}, got {horizon}")
    actions, states = enumerate_trajectories(horizon, k)  # (K**h, h) each
    scores = trajectory_sums(per_step, actions, states)  # (K**h,)
    if tail is not None:
        scores = scores + np.asarray(tail[horizon])  # the prefix n ends in state n at depth h
    return actions, scores


def exhaustive_search(per_step, horizon: int, tail=None) -> tuple[np.ndarray, float]:
    """argmax over all action prefixes of length ``horizon`` of sum_t per_step[t](s_t, a_t) + tail[h](s_h).

    With ``per_step = regularised_reward(tree)`` and ``tail = v_star`` this is eq. 12; with
    ``per_step = beta * log pi*`` and no tail it is eq. 13 (without its constant).

    Returns:
        (actions (h,), best score).
    """
    actions, scores = _prefix_scores(per_step, horizon, tail)
    best = int(np.argmax(scores))
    return actions[best], float(scores[best])


def search_margin(per_step, horizon: int, tail=None) -> float:
    """Gap between the best and the second-best prefix score (how far from a tie the argmax is)."""
    _, scores = _prefix_scores(per_step, horizon, tail)
    top2 = np.sort(scores)[-2:]
    return float(top2[1] - top2[0])


@dataclass
class BeamResult:
    actions: np.ndarray  # (D,) the best complete sequence
    score: float  # its score
    beams: list = field(default_factory=list)  # beams[t]: (width_t, t + 1) the prefixes kept after step t


def beam_search(per_step, width: int, tail=None) -> BeamResult:
    """Beam search to the leaves: keep the ``width`` best prefixes after every step.

    A prefix of length t+1 is scored by sum of ``per_step`` along it plus ``tail[t+1]`` of the state it
    reaches (no tail: plain likelihood beam search when ``per_step`` is log pi). Ties are broken by the
    lower prefix index, so two searches whose scores differ by a constant keep identical beams.
    """
    depth, k = len(per_step), per_step[0].shape[1]
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    prefixes = np.zeros((1, 0), dtype=np.int64)  # (W, t)
    states = np.zeros(1, dtype=np.int64)  # (W,) state index of each prefix at depth t
    acc = np.zeros(1)  # (W,) sum of per_step so far
    beams = []
    for t in range(depth):
        cand_acc = (acc[:, None] + per_step[t][states]).reshape(-1)  # (W*K,)
        cand_states = (states[:, None] * k + np.arange(k)).reshape(-1)  # (W*K,)
        cand_prefixes = np.concatenate(
            [np.repeat(prefixes, k, axis=0), np.tile(np.arange(k), len(states))[:, None]], axis=1
        )  # (W*K, t+1)
        score = cand_acc + (np.asarray(tail[t + 1])[cand_states] if tail is not None else 0.0)
        keep = np.lexsort((cand_states, -score))[:width]  # best score first, then lower state index
        prefixes, states, acc = cand_prefixes[keep], cand_states[keep], cand_acc[keep]
        beams.append(prefixes.copy())
    best = int(np.argmax(acc))
    return BeamResult(prefixes[best], float(acc[best]), beams)


def greedy_decode(table) -> np.ndarray:
    """Follow argmax_a table[d](s, a) from the root to a leaf: greedy decoding on r, pi_ref, pi* or Q*."""
    k = table[0].shape[1]
    state, actions = 0, []
    for level in table:
        a = int(np.argmax(level[state]))
        actions.append(a)
        state = state * k + a
    return np.array(actions, dtype=np.int64)


@dataclass
class MCTSResult:
    actions: np.ndarray  # (D,) the recommended complete sequence after the last simulation
    history: list  # history[n]: recommended sequence after n + 1 simulations (tuples)
    n_expanded: int  # states expanded (out of (K**D - 1) / (K - 1) non-terminal ones)


def mcts(tree: TreeMDP, v_star, n_simulations: int, c_uct: float = 0.5, seed: int = 0) -> MCTSResult:
    """UCT (Kocsis & Szepesvari 2006) on the tree, with V* as the leaf evaluator and max-backups.

    Each simulation descends from the root by the UCB rule ``Qhat + c * sqrt(log N / (1 + n_a))`` until it
    steps into a state not yet expanded, expands it, and backs up. ``Qhat(s, a)`` is the regularised reward
    r + beta log pi_ref plus the value of the child: the best ``Qhat`` of the child once it is expanded,
    ``V*(child)`` before (0 at a leaf). Because the soft value is an upper bound of the hard maximum
    (``V*(s) = beta logsumexp(Q*/beta) >= max_a Q*``), the estimates are optimistic and only tighten, so the
    recommendation (follow argmax Qhat from the root) converges to the maximiser of eq. 12 at full depth.
    A small uniform jitter (seeded) breaks exact ties in the UCB scores.
    """
    if n_simulations < 0:
        raise ValueError(f"n_simulations must be >= 0, got {n_simulations}")
    if c_uct < 0:
        raise ValueError(f"c_uct must be >= 0, got {c_uct}")
    rng = np.random.default_rng(seed)
    g = regularised_reward(tree)
    depth, k = tree.depth, tree.branching

    def child_values(d: int, i: int) -> np.ndarray:  # (K,) value of each child under the current estimates
        nxt = np.arange(i * k, i * k + k)
        return np.array([stats[(d + 1, j)]["value"] if (d + 1, j) in stats else v_star[d + 1][j] for j in nxt])

    stats: dict = {}

    def expand(d: int, i: int) -> None:
        q_hat = g[d][i] + child_values(d, i)  # (K,)
        stats[(d, i)] = {"q": q_hat, "n": np.zeros(k), "N": 0, "value": float(q_hat.max())}

    def recommend() -> tuple:
        d, i, out = 0, 0, []
        while d < depth:
            q = stats[(d, i)]["q"] if (d, i) in stats else g[d][i] + v_star[d + 1][i * k : i * k + k]
            a = int(np.argmax(q))
            out.append(a)
            d, i = d + 1, i * k + a
        return tuple(out)

    expand(0, 0)
    history = []
    for _ in range(n_simulations):
        path, d, i = [], 0, 0
        while d < depth and (d, i) in stats:  # selection
            s = stats[(d, i)]
            ucb = s["q"] + c_uct * np.sqrt(np.log(s["N"] + 1) / (1 + s["n"])) + 1e-12 * rng.random(k)
            a = int(np.argmax(ucb))
            path.append((d, i, a))
            d, i = d + 1, i * k + a
        if d < depth:
            expand(d, i)  # expansion; evaluation by V* of its children
        for d_p, i_p, a in reversed(path):  # max-backup
            s = stats[(d_p, i_p)]
            s["q"][a] = g[d_p][i_p, a] + (stats[(d_p + 1, i_p * k + a)]["value"] if d_p + 1 < depth else 0.0)
            s["value"] = float(s["q"].max())
            s["n"][a] += 1
            s["N"] += 1
        history.append(recommend())
    return MCTSResult(np.array(recommend(), dtype=np.int64), history, len(stats))


def first_stable_hit(history, target) -> int | None:
    """Number of simulations after which the recommendation equals ``target`` and never changes again."""
    target = tuple(int(a) for a in target)
    n = None
    for idx, rec in enumerate(history):
        if tuple(rec) == target:
            if n is None:
                n = idx + 1
        else:
            n = None
    return n
