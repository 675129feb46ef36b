"""The Bellman-telescoping derivation of token-level DPO, done in sympy (paper Sections 3-4.1 and 5.4).

Every function returns a sympy object; the identities are returned as *residuals* (left side minus
right side) that :func:`reduce_identity` simplifies to exactly ``0``. The horizon ``T`` may be a
positive integer or the positive-integer symbol :data:`T`, so the telescoping is checked for a general
horizon, not only for a few concrete lengths.

It knows nothing about language models, tensors or training: the only numbers here are the random
values of :func:`numeric_trajectory_check` and :func:`numeric_kl_check`, which evaluate the same
expressions with ``lambdify`` as an independent cross-check.

Conventions (the paper's token-level MDP, Section 3.1): a trajectory of ``T`` actions visits
``s_0, ..., s_T``; transitions are deterministic (``s_{t+1} = s_t | a_t``) and ``s_T`` is terminal, so
``V*(s_T) = 0``. The soft Bellman equation is the paper's eq. 7 with the KL penalty inside the reward
``Q*(s_t, a_t) = r(s_t, a_t) + beta log pi_ref(a_t|s_t) + V*(s_{t+1})``, and the optimal policy is
eq. 5, ``pi*(a|s) = exp((Q*(s, a) - V*(s)) / beta)``. Short names: ``r[t] = r(s_t, a_t)``,
``q_star[t] = Q*(s_t, a_t)``, ``v_star[t] = V*(s_t)``, ``pi_star[t] = pi*(a_t|s_t)``, ``pi_ref[t] = pi_ref(a_t|s_t)``.
"""

from __future__ import annotations

import numbers

import numpy as np
import sympy as sp

# ---------------------------------------------------------------- symbols of one trajectory
# Display names may be LaTeX (sympy prints a name containing "{" verbatim), so the book shows pi_ref as
# \pi_{\mathrm{ref}}; the Python names stay ASCII.
beta = sp.Symbol("beta", positive=True)  # the KL weight of eq. 2
T = sp.Symbol("T", integer=True, positive=True)  # horizon: number of actions in a trajectory
t = sp.Symbol("t", integer=True, nonnegative=True)  # time step
r = sp.IndexedBase("r")  # r[t] = r(s_t, a_t)
q_star = sp.IndexedBase("Q^*")  # q_star[t] = Q*(s_t, a_t)
v_star = sp.IndexedBase("V^*")  # v_star[t] = V*(s_t); v_star[T] = 0 at the terminal state
pi_star = sp.IndexedBase("pi^*", positive=True)  # pi_star[t] = pi*(a_t|s_t)
pi_ref = sp.IndexedBase(r"\pi_{\mathrm{ref}}", positive=True)  # pi_ref[t] = pi_ref(a_t|s_t)

# ---------------------------------------------------------------- two trajectories from one s_0
N = sp.Symbol("N", integer=True, positive=True)  # length of the preferred ("win") trajectory
M = sp.Symbol("M", integer=True, positive=True)  # length of the dispreferred ("loss") trajectory
v0_star = sp.Symbol("V^*_0", real=True)  # V*(s_0), shared because both trajectories start at the same prompt
r_w, r_l = sp.IndexedBase("r^w"), sp.IndexedBase("r^l")
pi_star_w = sp.IndexedBase("pi^*_w", positive=True)
pi_star_l = sp.IndexedBase("pi^*_l", positive=True)
pi_theta_w = sp.IndexedBase(r"\pi^{w}_{\theta}", positive=True)
pi_theta_l = sp.IndexedBase(r"\pi^{l}_{\theta}", positive=True)
pi_ref_w = sp.IndexedBase(r"\pi^{w}_{\mathrm{ref}}", positive=True)
pi_ref_l = sp.IndexedBase(r"\pi^{l}_{\mathrm{ref}}", positive=True)

# ---------------------------------------------------------------- the bandit (whole response = one action)
pi_theta_yw = sp.Symbol(r"\pi_{\theta}(y^{w}|x)", positive=True)  # pi_theta(y_w | x)
pi_theta_yl = sp.Symbol(r"\pi_{\theta}(y^{l}|x)", positive=True)  # pi_theta(y_l | x)
pi_ref_yw = sp.Symbol(r"\pi_{\mathrm{ref}}(y^{w}|x)", positive=True)  # pi_ref(y_w | x)
pi_ref_yl = sp.Symbol(r"\pi_{\mathrm{ref}}(y^{l}|x)", positive=True)  # pi_ref(y_l | x)

# ---------------------------------------------------------------- one state, a finite action set (eq. 16)
n = sp.Symbol("n", integer=True, positive=True)  # number of actions
i = sp.Symbol("i", integer=True, nonnegative=True)  # action index
pi_a = sp.IndexedBase("pi", positive=True)  # pi_a[i] = pi(a_i|s)
pi_ref_a = sp.IndexedBase(r"\pi_{\mathrm{ref}}", positive=True)  # pi_ref_a[i] = pi_ref(a_i|s)


def _check_length(value, name: str = "T"):
    """A horizon must be a positive integer (an ``int`` or a sympy integer symbol/expression)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        return sp.Integer(value)
    if isinstance(value, sp.Basic):
        if value.is_integer and value.is_positive:
            return value
        raise ValueError(f"{name} must be a positive integer (symbol or number), got {value!r}")
    raise ValueError(f"{name} must be a positive integer, got {value!r} of type {type(value).__name__}")


def reduce_identity(expr: sp.Expr) -> sp.Expr:
    """Bring a residual to its simplest form; an identity holds when this returns exactly ``0``.

    Two routes, tried in order. First every ``Sum`` is treated as an opaque real number (enough when
    an identity only moves whole sums around, as in the Bradley-Terry and DPO steps; if it holds for
    every real value of the sums, it holds for the sums). Otherwise logs are split, sums over the same
    range are merged by ``sp.simplify`` (so matching terms cancel inside one sum) and ``doit``
    evaluates what is left, e.g. the telescoping ``Sum(v_star[t] - v_star[t+1])``.
    Logs are split with ``force=True``: every log argument in this module is a probability, so positive.
    """
    expr = sp.sympify(expr)
    sums = expr.atoms(sp.Sum)
    if sums:
        opaque = expr.xreplace({s: sp.Dummy(real=True) for s in sums})
        # logcombine first: simplify alone depends on the (hash-seeded) order of the terms here
        if sp.simplify(sp.logcombine(opaque, force=True)) == 0 or sp.simplify(opaque) == 0:
            return sp.Integer(0)
    expr = sp.simplify(sp.expand_log(expr, force=True))
    return sp.simplify(sp.expand_log(expr.doit(), force=True))


def telescope(expr: sp.Expr) -> sp.Expr:
    """Evaluate the value part of a trajectory sum: Sum(f_t + V_t - V_{t+1}) -> Sum(f_t) + V_0 - V_T.

    The summand is split into its terms that contain V* (summed in closed form by sympy, which
    recognises the telescoping difference) and the rest (left as a Sum). This is the paper's step
    "re-arranging the sum to isolate t = 0" (Section 4.1), done for any horizon, symbolic or not.
    """

    def split(s: sp.Sum) -> sp.Expr:
        value_terms, other_terms = [], []
        for term in sp.Add.make_args(sp.expand(s.function)):
            (value_terms if term.has(v_star) else other_terms).append(term)
        return sp.Sum(sp.Add(*other_terms), *s.limits) + sp.Sum(sp.Add(*value_terms), *s.limits).doit()

    return sp.sympify(expr).replace(lambda e: isinstance(e, sp.Sum), split)


def sigmoid(x: sp.Expr) -> sp.Expr:
    """The logistic function sigma(x) = 1 / (1 + exp(-x)) of eq. 4, 8 and 9."""
    return 1 / (1 + sp.exp(-x))


# ---------------------------------------------------------------- the two ingredients
def bellman_q(step=t) -> sp.Expr:
    """Eq. 7 (non-terminal case): Q*(s_t, a_t) = r(s_t, a_t) + beta log pi_ref(a_t|s_t) + V*(s_{t+1}).

    The terminal case of eq. 7 is the same formula with V*(s_T) = 0, which is how we treat it.
    """
    return r[step] + beta * sp.log(pi_ref[step]) + v_star[step + 1]


def reward_from_bellman(step=t) -> sp.Expr:
    """Eq. 7 solved for the reward: r(s_t, a_t) = Q*(s_t, a_t) - beta log pi_ref(a_t|s_t) - V*(s_{t+1})."""
    return q_star[step] - beta * sp.log(pi_ref[step]) - v_star[step + 1]


def q_from_policy(step=t) -> sp.Expr:
    """Eq. 5 log-linearised: beta log pi*(a_t|s_t) = Q*(s_t, a_t) - V*(s_t), so Q* = V* + beta log pi*."""
    return v_star[step] + beta * sp.log(pi_star[step])


def soft_value(q_values: list) -> sp.Expr:
    """Eq. 6: V*(s) = beta log sum_a exp(Q*(s, a) / beta) over a finite list of action values."""
    return beta * sp.log(sum(sp.exp(q / beta) for q in q_values))


def reward_from_policy(step=t) -> sp.Expr:
    """Eq. 7 with eq. 5 substituted: r_t = beta log pi*_t / pi_ref_t + V*(s_t) - V*(s_{t+1}).

    The per-step reward is the implicit reward plus a difference of consecutive values: a potential-
    based shaping term, which is what makes the sum over a trajectory telescope.
    """
    return reward_from_bellman(step).subs(q_star[step], q_from_policy(step))


def implicit_reward(step=t) -> sp.Expr:
    """The per-token implicit reward beta log pi*(a_t|s_t) / pi_ref(a_t|s_t) (the summand of eq. 8)."""
    return beta * sp.log(pi_star[step] / pi_ref[step])


# ---------------------------------------------------------------- sums over a trajectory
def reward_sum(horizon=T) -> sp.Sum:
    """The return sum_{t=0}^{T-1} r(s_t, a_t) of one trajectory (the exponent of eq. 1)."""
    horizon = _check_length(horizon)
    return sp.Sum(r[t], (t, 0, horizon - 1))


def reward_sum_in_policy(horizon=T) -> sp.Sum:
    """The return written with pi*, pi_ref and V*: eq. 7 inverted, then eq. 5 substituted."""
    horizon = _check_length(horizon)
    return sp.Sum(reward_from_policy(t), (t, 0, horizon - 1))


def implicit_return(horizon=T, policy=pi_star, reference=pi_ref) -> sp.Sum:
    """sum_{t=0}^{T-1} beta log policy(a_t|s_t) / reference(a_t|s_t): the summed implicit reward of eq. 8."""
    horizon = _check_length(horizon)
    return sp.Sum(beta * sp.log(policy[t] / reference[t]), (t, 0, horizon - 1))


def telescoping_residual(horizon=T) -> sp.Expr:
    """sum_{t=0}^{T-1} (V_{t+1} - V_t) - (V_T - V_0); :func:`reduce_identity` makes it 0 for any T >= 1."""
    horizon = _check_length(horizon)
    return sp.Sum(v_star[t + 1] - v_star[t], (t, 0, horizon - 1)) - (v_star[horizon] - v_star[0])


def telescoped_return(horizon=T, terminal: bool = True) -> sp.Expr:
    """The right side of the telescoping identity (paper Section 4.1, after eq. 7):

        sum_t r(s_t, a_t) = V*(s_0) - V*(s_T) + sum_t beta log pi*(a_t|s_t) / pi_ref(a_t|s_t),

    with V*(s_T) = 0 when ``terminal`` (the trajectory ends at EOS).
    """
    horizon = _check_length(horizon)
    tail = 0 if terminal else v_star[horizon]
    return v_star[0] - tail + implicit_return(horizon)


def trajectory_identity_residual(horizon=T, terminal: bool = True) -> sp.Expr:
    """Return with Bellman (eq. 7) and eq. 5 substituted and telescoped, minus :func:`telescoped_return`.

    With ``terminal`` the end value V*(s_T) is set to 0 (paper Section 3.1) once the sum is evaluated.
    The result reduces to 0 for a symbolic horizon ``T`` and for every concrete T >= 1.
    """
    horizon = _check_length(horizon)
    lhs = telescope(reward_sum_in_policy(horizon))
    if terminal:
        lhs = lhs.subs(v_star[horizon], 0)
    return lhs - telescoped_return(horizon, terminal=terminal)


def induction_proof() -> dict[str, sp.Expr]:
    """The telescoping identity proved by induction on T, both residuals for sympy to reduce to 0.

    P(T): L(T) = R(T) with L(T) = sum_{t<T} r_t (eq. 7 and 5 substituted) and
    R(T) = V_0 - V_T + sum_{t<T} beta log pi*_t / pi_ref_t (no terminal condition yet, so P holds for
    every prefix). ``base`` is L(1) - R(1); ``step`` is [L(T+1) - L(T)] - [R(T+1) - R(T)] for the symbol T.
    If both are 0, L(T+1) - R(T+1) = (L(T) - R(T)) + step = 0 follows from P(T), hence P holds for all T.
    """

    def residual(h):
        return reward_sum_in_policy(h) - telescoped_return(h, terminal=False)

    base = residual(1)
    step = (reward_sum_in_policy(T + 1) - reward_sum_in_policy(T)) - (
        telescoped_return(T + 1, terminal=False) - telescoped_return(T, terminal=False)
    )
    return {"base": base, "step": step}


def concrete_expansion(horizon: int) -> dict[str, sp.Expr]:
    """The identity written out for a concrete horizon (a sanity check beside the symbolic one).

    Returns ``steps`` (the list of per-step rewards of eq. 7 + 5), ``terms`` (the same as one
    unevaluated sum, so each term shows), ``value_terms`` (their V* parts, V_t - V_{t+1}, unevaluated),
    ``telescoped`` (what the V* parts add up to: V_0 - V_T) and ``residual`` (the written-out return
    minus the right side of the telescoping identity, with V_T = 0).
    """
    horizon = _check_length(horizon)
    if not horizon.is_Integer:
        raise ValueError(f"horizon must be a concrete integer here, got {horizon!r}")
    steps = range(int(horizon))
    terms = sp.Add(*[reward_from_policy(k) for k in steps], evaluate=False)
    value_terms = sp.Add(*[v_star[k] - v_star[k + 1] for k in steps], evaluate=False)
    telescoped = sp.Add(*[v_star[k] - v_star[k + 1] for k in steps])
    lhs = sum(reward_from_policy(k) for k in steps).subs(v_star[horizon], 0)
    residual = sp.expand_log(lhs - telescoped_return(horizon).doit())
    return {
        "steps": [reward_from_policy(k) for k in steps],
        "terms": terms,
        "value_terms": value_terms,
        "telescoped": telescoped,
        "residual": residual,
    }


# ---------------------------------------------------------------- Bradley-Terry -> DPO
def bradley_terry(return_w: sp.Expr, return_l: sp.Expr) -> sp.Expr:
    """Eq. 1: p(tau_w > tau_l) = exp(R_w) / (exp(R_w) + exp(R_l)) for the two returns R."""
    return sp.exp(return_w) / (sp.exp(return_w) + sp.exp(return_l))


def token_bradley_terry(n_w=N, n_l=M) -> sp.Expr:
    """Eq. 1 with per-token rewards: two trajectories of lengths N and M summed step by step."""
    n_w, n_l = _check_length(n_w, "N"), _check_length(n_l, "M")
    return bradley_terry(sp.Sum(r_w[t], (t, 0, n_w - 1)), sp.Sum(r_l[t], (t, 0, n_l - 1)))


def policy_preference(n_w=N, n_l=M) -> sp.Expr:
    """Eq. 1 after each return is replaced by V*(s_0) + summed implicit reward (the telescoping identity).

    Both trajectories start at the same prompt s_0, so both carry the same V*(s_0) = ``v0_star``.
    """
    n_w, n_l = _check_length(n_w, "N"), _check_length(n_l, "M")
    return_w = v0_star + implicit_return(n_w, pi_star_w, pi_ref_w)
    return_l = v0_star + implicit_return(n_l, pi_star_l, pi_ref_l)
    return bradley_terry(return_w, return_l)


def token_margin(n_w=N, n_l=M, policy=(pi_star_w, pi_star_l)) -> sp.Expr:
    """The argument of sigma in eq. 8 and 9: summed implicit reward of tau_w minus that of tau_l."""
    n_w, n_l = _check_length(n_w, "N"), _check_length(n_l, "M")
    return implicit_return(n_w, policy[0], pi_ref_w) - implicit_return(n_l, policy[1], pi_ref_l)


def policy_preference_sigmoid(n_w=N, n_l=M, policy=(pi_star_w, pi_star_l)) -> sp.Expr:
    """Eq. 8: sigma(sum_t beta log pi*/pi_ref on tau_w - the same sum on tau_l); no V*(s_0) left."""
    return sigmoid(token_margin(n_w, n_l, policy))


def v0_cancellation_residual(n_w=N, n_l=M) -> dict[str, sp.Expr]:
    """Two residuals that reduce to 0: eq. 1 (with V*(s_0) inside) minus eq. 8, and d/dV*(s_0) of eq. 1."""
    preference = policy_preference(n_w, n_l)
    return {
        "difference": preference - policy_preference_sigmoid(n_w, n_l),
        "derivative": sp.diff(preference, v0_star),
    }


def token_dpo_loss(n_w=N, n_l=M) -> sp.Expr:
    """Eq. 9 for one pair: -log sigma(beta sum log pi_theta/pi_ref over tau_w - the same over tau_l).

    The paper writes pi* inside eq. 9; the loss is a function of the learned policy pi_theta, which
    takes pi*'s place in eq. 8.
    """
    return -sp.log(policy_preference_sigmoid(n_w, n_l, policy=(pi_theta_w, pi_theta_l)))


def dpo_loss_residual(n_w=N, n_l=M) -> sp.Expr:
    """-log of eq. 1 (returns via telescoping, pi* -> pi_theta) minus eq. 9: reduces to 0.

    The negative log-likelihood of the Bradley-Terry model is the per-pair term of
    D_KL(p_data || p_pi_theta) that depends on pi_theta, so this is the token-level DPO loss.
    """
    nll = -sp.log(policy_preference(n_w, n_l)).xreplace({pi_star_w: pi_theta_w, pi_star_l: pi_theta_l})
    return nll - token_dpo_loss(n_w, n_l)


def bandit_dpo_loss() -> sp.Expr:
    """Eq. 4 for one pair: -log sigma(beta log pi_theta(y_w|x)/pi_ref(y_w|x) - beta log pi_theta(y_l|x)/pi_ref(y_l|x))."""
    margin = beta * sp.log(pi_theta_yw / pi_ref_yw) - beta * sp.log(pi_theta_yl / pi_ref_yl)
    return -sp.log(sigmoid(margin))


def bandit_reduction_residual() -> sp.Expr:
    """Eq. 9 with T = 1 (s_0 = x, the whole response y is the single action a_0) minus eq. 4: reduces to 0."""
    one_step = token_dpo_loss(1, 1).doit()
    bandit = {
        pi_theta_w[0]: pi_theta_yw,
        pi_theta_l[0]: pi_theta_yl,
        pi_ref_w[0]: pi_ref_yw,
        pi_ref_l[0]: pi_ref_yl,
    }
    return one_step.xreplace(bandit) - bandit_dpo_loss()


# ---------------------------------------------------------------- eq. 16
def expected_implicit_reward(size=n) -> sp.Sum:
    """Left side of eq. 16: E_{a ~ pi_ref}[beta log pi(a|s) / pi_ref(a|s)] over ``size`` actions."""
    size = _check_length(size, "n")
    return sp.Sum(pi_ref_a[i] * beta * sp.log(pi_a[i] / pi_ref_a[i]), (i, 0, size - 1))


def kl_divergence(size=n) -> sp.Sum:
    """D_KL(pi_ref || pi) = sum_a pi_ref(a|s) log pi_ref(a|s) / pi(a|s) over ``size`` actions."""
    size = _check_length(size, "n")
    return sp.Sum(pi_ref_a[i] * sp.log(pi_ref_a[i] / pi_a[i]), (i, 0, size - 1))


def normalisation(size=n) -> dict[str, sp.Expr]:
    """The constraints sum_a pi(a|s) = 1 and sum_a pi_ref(a|s) = 1, written as expressions equal to 0."""
    size = _check_length(size, "n")
    return {
        "pi": sp.Sum(pi_a[i], (i, 0, size - 1)) - 1,
        "pi_ref": sp.Sum(pi_ref_a[i], (i, 0, size - 1)) - 1,
    }


def kl_identity_residual(size=n, normalised: bool = True) -> sp.Expr:
    """Eq. 16 as a residual: E_{pi_ref}[beta log pi/pi_ref] + beta D_KL(pi_ref || pi); reduces to 0.

    For a concrete ``size`` with ``normalised``, the last probability of each distribution is
    eliminated with sum = 1, so the identity is checked on the probability simplex itself. (The
    identity is pure algebra of logarithms and holds without the constraint; normalisation is what
    makes D_KL >= 0, hence the expected implicit reward <= 0, the point of the paper's Section 5.4.)
    """
    size = _check_length(size, "n")
    residual = expected_implicit_reward(size) + beta * kl_divergence(size)
    if normalised and size.is_Integer:
        residual = residual.doit().xreplace(simplex_substitution(int(size)))
    return residual


def simplex_substitution(size: int) -> dict:
    """Solve the constraints of :func:`normalisation` for the last probability of pi and of pi_ref."""
    size = int(_check_length(size, "n"))
    last = size - 1
    constraints = normalisation(size)
    return {
        pi_a[last]: sp.solve(constraints["pi"].doit(), pi_a[last])[0],
        pi_ref_a[last]: sp.solve(constraints["pi_ref"].doit(), pi_ref_a[last])[0],
    }


# ---------------------------------------------------------------- numeric cross-checks (lambdify)
def numeric_function(expr: sp.Expr):
    """Compile ``expr`` with ``lambdify`` into ``f(values)``, where ``values`` maps every symbol and
    IndexedBase of ``expr`` to numbers. An IndexedBase ``x`` is read as ``x[k] = values[x][k]``, so
    an array of shape (K, B) evaluates B cases at once, and the result then has shape (B,)."""
    expr = sp.sympify(expr).doit()
    bases = sorted({a.base for a in expr.atoms(sp.Indexed)}, key=str)
    index_labels = {b.label for b in bases}
    symbols = sorted((s for s in expr.free_symbols if isinstance(s, sp.Symbol) and s not in index_labels), key=str)
    # plain identifiers for lambdify: names like 'pi^*' are not valid Python
    renamed = {b: sp.IndexedBase(f"_b{k}") for k, b in enumerate(bases)}
    renamed.update({s: sp.Symbol(f"_s{k}") for k, s in enumerate(symbols)})
    needed = [*bases, *symbols]
    compiled = sp.lambdify([renamed[x] for x in needed], expr.xreplace(renamed), modules="numpy")

    def f(values: dict):
        missing = [str(x) for x in needed if x not in values]
        if missing:
            raise ValueError(f"no value given for {missing}")
        return compiled(*[np.asarray(values[x], dtype=np.float64) for x in needed])

    return f


def evaluate(expr: sp.Expr, values: dict) -> float:
    """``expr`` at one point: :func:`numeric_function` applied once, as a float."""
    return float(numeric_function(expr)(values))


def numeric_trajectory_check(horizon: int, seed: int = 0, n_actions: int = 5, beta_value: float | None = None):
    """Both sides of the telescoping identity on random numbers that satisfy eq. 5-7 exactly.

    Random logits play Q* (any language model is a soft Q-function for some reward, Section 4.1), a random
    pi_ref and a random trajectory are drawn; V* comes from eq. 6, V*(s_T) = 0, pi* from eq. 5 and the
    reward from eq. 7. Returns (sum of rewards, V*(s_0) + summed implicit reward), each computed by
    lambdifying the symbolic expressions :func:`reward_sum` and :func:`telescoped_return`.
    """
    horizon = int(_check_length(horizon))
    rng = np.random.default_rng(seed)
    b = float(beta_value) if beta_value is not None else float(rng.uniform(0.05, 2.0))
    logits = rng.normal(scale=3.0, size=(horizon, n_actions))  # (T, A) Q*(s_t, .)
    ref = rng.dirichlet(np.ones(n_actions), size=horizon)  # (T, A) pi_ref(.|s_t)
    actions = rng.integers(n_actions, size=horizon)  # (T,)
    steps = np.arange(horizon)
    v = np.append(b * np.logaddexp.reduce(logits / b, axis=1), 0.0)  # (T+1,) eq. 6, V*(s_T) = 0
    q_taken = logits[steps, actions]  # (T,)
    policy = np.exp((q_taken - v[:-1]) / b)  # (T,) eq. 5
    ref_taken = ref[steps, actions]  # (T,)
    rewards = q_taken - b * np.log(ref_taken) - v[1:]  # (T,) eq. 7 solved for r
    values = {r: rewards, v_star: v, pi_star: policy, pi_ref: ref_taken, beta: b}
    return evaluate(reward_sum(horizon), values), evaluate(telescoped_return(horizon), values)


def numeric_kl_check(size: int, seed: int = 0, beta_value: float = 1.0):
    """Both sides of eq. 16 for two random distributions over ``size`` actions.

    Returns (E_{pi_ref}[beta log pi/pi_ref] from :func:`expected_implicit_reward`, -beta D_KL(pi_ref||pi)
    computed directly in numpy); they agree to rounding and both are <= 0.
    """
    size = int(_check_length(size, "n"))
    rng = np.random.default_rng(seed)
    policy = rng.dirichlet(np.ones(size))  # (A,)
    ref = rng.dirichlet(np.ones(size))  # (A,)
    lhs = evaluate(expected_implicit_reward(size), {pi_a: policy, pi_ref_a: ref, beta: beta_value})
    rhs = -beta_value * float(np.sum(ref * (np.log(ref) - np.log(policy))))
    return lhs, rhs
