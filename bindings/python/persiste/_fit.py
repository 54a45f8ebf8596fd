"""Maximum likelihood on log rates, rate designs and likelihood-ratio tests."""
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

from ._core import InvalidArgumentError

Z95 = stats.norm.ppf(0.975)


class Design:
    """Per-family log rates as linear models:

        log gain_f = b_gain[0] + sum_k X[f, k] b_gain[k] + offset_f
        log loss_f = b_loss[0] + sum_k Z[f, k] b_loss[k]

    ``gain`` and ``loss`` map a covariate name to a per-family vector (a
    boolean family set gives a rate multiplier exp(b) for that set; a
    continuous covariate a log-linear effect). ``one_sided`` optionally names
    one coefficient and the sign of its alternative, e.g.
    ``("loss:retained", -1)``: the tested effect is one-sided.

    Examples (n families): retention bias ``Design(n, loss={"set": mask})``;
    gain bias ``Design(n, gain={"set": mask})``; one loss multiplier per
    pathway against a reference group ``Design(n, loss={g: labels == g for g in
    groups[1:]})``; a continuous covariate ``Design(n, loss={"gc": gc})``.
    """

    def __init__(self, n_families, gain=None, loss=None, offset=None, one_sided=None):
        def matrix(covariates):
            cols = [np.ones(n_families)]
            for name, v in (covariates or {}).items():
                v = np.asarray(v, dtype=np.float64)
                if v.shape != (n_families,):
                    raise InvalidArgumentError(
                        f"covariate {name!r} has shape {v.shape}, expected ({n_families},)")
                cols.append(v)
            return np.column_stack(cols)
        self.n_families = n_families
        self.X, self.Z = matrix(gain), matrix(loss)
        self.offset = np.zeros(n_families) if offset is None else \
            np.broadcast_to(np.asarray(offset, dtype=np.float64), (n_families,))
        self.names = (["log_gain"] + [f"gain:{k}" for k in gain or {}]
                      + ["log_loss"] + [f"loss:{k}" for k in loss or {}])
        if one_sided is not None and one_sided[0] not in self.names:
            raise InvalidArgumentError(f"one_sided names unknown coefficient {one_sided[0]!r}")
        self.one_sided = one_sided

    @property
    def n_parameters(self):
        return self.X.shape[1] + self.Z.shape[1]

    def rates(self, coef):
        """(log_gain, log_loss) per family."""
        pg = self.X.shape[1]
        return self.X @ coef[:pg] + self.offset, self.Z @ coef[pg:]

    def chain(self, d_log_gain, d_log_loss):
        """Gradient with respect to the coefficients (chain rule)."""
        return np.concatenate([self.X.T @ d_log_gain, self.Z.T @ d_log_loss])


@dataclass
class FitResult:
    names: list
    coef: np.ndarray
    se: np.ndarray
    cov: np.ndarray
    loglik: float
    converged: bool
    message: str
    n_evaluations: int
    n_fitted: int             # families in the fit (impossible ones left out)
    n_taxa: int
    impossible: list          # names of families with zero likelihood
    design: Design = field(repr=False)

    def __getitem__(self, name):
        return self.coef[self.names.index(name)]

    @property
    def n_parameters(self):
        return len(self.coef)

    @property
    def aic(self):
        return 2 * self.n_parameters - 2 * self.loglik

    @property
    def gain(self):
        return float(np.exp(self["log_gain"]))

    @property
    def loss(self):
        return float(np.exp(self["log_loss"]))

    @property
    def pi1(self):
        return self.gain / (self.gain + self.loss)

    @property
    def se_log_gain(self):
        return float(self.se[self.names.index("log_gain")])

    @property
    def se_log_loss(self):
        return float(self.se[self.names.index("log_loss")])

    def effects(self):
        """{name: (multiplier exp(b), 95% lower, 95% upper)} of the non-intercept
        coefficients."""
        return {n: tuple(float(v) for v in np.exp([b, b - Z95 * s, b + Z95 * s]))
                for n, b, s in zip(self.names, self.coef, self.se)
                if n not in ("log_gain", "log_loss")}

    def to_dict(self):
        return {"loglik": self.loglik, "gain": self.gain, "loss": self.loss, "pi1": self.pi1,
                "se_log_gain": self.se_log_gain, "se_log_loss": self.se_log_loss,
                "coefficients": dict(zip(self.names, map(float, self.coef))),
                "se": dict(zip(self.names, map(float, self.se))),
                "multipliers": {n: {"estimate": m, "ci95": [lo, hi]}
                                for n, (m, lo, hi) in self.effects().items()},
                "aic": self.aic, "n_parameters": self.n_parameters,
                "n_fitted": self.n_fitted, "n_taxa": self.n_taxa,
                "n_evaluations": self.n_evaluations, "converged": self.converged,
                "message": self.message}


def _start(engine, design):
    """Null-model start: pi1 = 1/2, total rate on a coarse grid around one
    change per root-to-tip path (loglik evaluations only)."""
    parent, length = engine.tree.parents, engine.tree.branch_lengths
    depth = np.zeros(len(parent))
    for i in range(len(parent) - 2, -1, -1):      # root last, children first
        depth[i] = depth[parent[i]] + length[i]
    tips = depth[:engine.tree.n_tips]
    s0 = 1.0 / max(tips.mean(), 1e-12)
    best = None
    for log_s in np.log(s0) + np.log(4.0) * np.arange(-3, 4):
        ll = engine.loglik(log_s - np.log(2), log_s - np.log(2))
        total = ll[np.isfinite(ll)].sum()
        if best is None or total > best[0]:
            best = (total, log_s - np.log(2), ll)
    coef = np.zeros(design.n_parameters)
    coef[0] = coef[design.X.shape[1]] = best[1]
    return coef, np.isfinite(best[2])


def _hessian(grad, coef, h=1e-4):
    """Symmetrised central differences of the exact gradient."""
    p = len(coef)
    H = np.empty((p, p))
    for j in range(p):
        e = np.zeros(p)
        e[j] = h
        H[:, j] = (grad(coef + e) - grad(coef - e)) / (2 * h)
    return (H + H.T) / 2


def fit(engine, design=None, start=None, progress=None, bound=50.0):
    """Maximum-likelihood fit of a Design (default: one global gain and loss
    rate) by L-BFGS-B on log rates with the library's exact gradient, one
    Newton step from the finite-difference Hessian of that gradient, and
    standard errors from the observed information. Families with zero
    likelihood at the start are left out and listed in ``impossible``.
    ``progress(iteration, loglik)`` is called once per iteration."""
    design = design or Design(engine.n_families)
    if design.n_families != engine.n_families:
        raise InvalidArgumentError(f"design is for {design.n_families} families, "
                                   f"data has {engine.n_families}")
    evals0 = engine.n_evaluations
    if start is None:
        coef0, possible = _start(engine, design)
    else:
        coef0 = np.asarray(start, dtype=np.float64)
        possible = np.isfinite(engine.loglik(*design.rates(coef0)))
    n_possible = int(possible.sum())
    if n_possible == 0:
        raise InvalidArgumentError("every family is impossible under the model")
    w = possible.astype(np.float64)
    scale = 1.0 / n_possible

    last = {}

    def evaluate(coef):
        if last.get("coef") is not None and np.array_equal(last["coef"], coef):
            return last["ll"], last["grad"]
        g = engine.gradient(*design.rates(coef))
        ll = np.where(possible, g.loglik, 0.0).sum()
        last.update(coef=np.array(coef), ll=ll, grad=design.chain(g.d_log_gain * w,
                                                                  g.d_log_loss * w))
        return ll, last["grad"]

    def objective(coef):
        ll, grad = evaluate(coef)
        if not np.isfinite(ll):
            return 1e300, np.zeros_like(coef)
        return -ll * scale, -grad * scale

    iteration = [0]

    def callback(coef):
        iteration[0] += 1
        if progress:
            progress(iteration[0], evaluate(coef)[0])

    res = optimize.minimize(objective, coef0, jac=True, method="L-BFGS-B",
                            bounds=[(-bound, bound)] * len(coef0), callback=callback,
                            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000})
    coef = res.x
    ll, grad = evaluate(coef)
    H = _hessian(lambda c: evaluate(c)[1], coef)
    try:
        np.linalg.cholesky(-H)                   # observed information > 0
        cov = np.linalg.inv(-H)
    except np.linalg.LinAlgError:
        cov = None
    if cov is not None:                          # one Newton step, if it helps
        ll_new, grad_new = evaluate(coef + cov @ grad)
        if ll_new >= ll:
            coef, ll, grad = coef + cov @ grad, ll_new, grad_new
        se, decrement = np.sqrt(np.diag(cov)), float(grad @ cov @ grad)
    else:
        cov = np.full_like(H, np.nan)
        se, decrement = np.full(len(coef), np.nan), np.inf
    converged = bool(np.isfinite(ll) and decrement < 1e-6)
    left_out = np.flatnonzero(~possible)
    names = engine.data.family_names if left_out.size else []
    return FitResult(list(design.names), coef, se, cov, float(ll), converged,
                     str(res.message) if converged else
                     f"not converged ({res.message}; observed information "
                     f"{'not ' if np.isnan(se).any() else ''}positive definite)",
                     engine.n_evaluations - evals0, n_possible, engine.n_taxa,
                     [names[i] for i in left_out], design)


@dataclass
class TestResult:
    null: FitResult
    alt: FitResult
    statistic: float
    df: int
    p_value: float
    one_sided: bool

    @property
    def delta_loglik(self):
        return self.alt.loglik - self.null.loglik

    def to_dict(self):
        return {"delta_loglik": self.delta_loglik, "statistic": self.statistic,
                "df": self.df, "p_value": self.p_value, "one_sided": self.one_sided,
                "aic_null": self.null.aic, "aic_alt": self.alt.aic,
                "null": self.null.to_dict(), "alt": self.alt.to_dict()}


def lrt(null, alt):
    """Likelihood-ratio test of nested fits: chi-square with df = difference in
    parameters, or, when alt.design.one_sided is set (one tested coefficient
    with a signed alternative), the 50:50 mixture of chi-square(0) and (1)."""
    df = alt.n_parameters - null.n_parameters
    if df < 1:
        raise InvalidArgumentError("the alternative must have more parameters than the null")
    stat = max(0.0, 2.0 * (alt.loglik - null.loglik))
    one_sided = alt.design.one_sided
    if one_sided is not None:
        if df != 1:
            raise InvalidArgumentError("a one-sided test needs exactly one extra parameter")
        name, sign = one_sided
        if sign * alt[name] <= 0:
            stat = 0.0
        p = 0.5 * stats.chi2.sf(stat, 1) if stat > 0 else 1.0
    else:
        p = float(stats.chi2.sf(stat, df))
    return TestResult(null, alt, stat, df, float(p), one_sided is not None)


def retention_test(engine, families, alternative="less", null=None, progress=None):
    """Do the listed families (names, indices or a mask) have a different loss
    rate from the rest? alternative 'less' (retained: one-sided, the default),
    'greater' or 'two-sided'. The fitted loss multiplier is
    ``result.alt.effects()['loss:set']``."""
    signs = {"less": -1, "greater": 1, "two-sided": None}
    if alternative not in signs:
        raise InvalidArgumentError(f"alternative must be one of {', '.join(signs)}")
    mask = engine.family_index(families)
    if not 0 < mask.sum() < engine.n_families:
        raise InvalidArgumentError("the family set must be neither empty nor every family")
    sign = signs[alternative]
    design = Design(engine.n_families, loss={"set": mask},
                    one_sided=None if sign is None else ("loss:set", sign))
    null = null or fit(engine, progress=progress)
    start = np.array([null["log_gain"], null["log_loss"], 0.0])
    return lrt(null, fit(engine, design, start=start, progress=progress))
