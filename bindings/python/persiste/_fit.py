"""Maximum likelihood on log rates, rate designs and likelihood-ratio tests."""
from dataclasses import dataclass, field

import numpy as np

from ._core import InvalidArgumentError

# scipy is imported where a fit or a test needs it: `import persiste` and
# `persiste --version` stay fast.
Z95 = 1.959963984540054   # the normal distribution's 0.975 quantile


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
    groups[1:]})``; a continuous covariate ``Design(n, loss={"gc": gc})``;
    a clade that loses the genes of a set faster
    ``Design(n, lineage={"clade": (node_mask, "loss", family_mask)})``
    (without the family mask, every family's rate on the clade).
    """

    def __init__(self, n_families, gain=None, loss=None, offset=None, one_sided=None,
                 lineage=None):
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
        # lineage terms {name: (node mask, 'gain' | 'loss' | 'both'[, family
        # set])}: estimated by the fit as the model parameter
        # 'lineage:<name>' (see ModelParameters)
        self.lineage = dict(lineage or {})
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


class ModelParameters:
    """The model's own parameters that a fit estimates besides the rates:
    observation error (``error``: None, 'global' or 'per-genome'; on the
    logit scale) and the gamma shape (``alpha``: True to estimate it, on
    the log scale, with the model's categories). ``values`` hold the
    current transformed values; ``apply`` writes them into the model and
    ``chain`` turns the library's model gradient into theirs."""

    BOUND_LOGIT = (-20.0, 0.0)      # a, b in (2e-9, 1/2]: a + b < 1
    BOUND_LOG_ALPHA = (np.log(2e-3), np.log(5e3))

    def __init__(self, engine, error=None, alpha=False, lineage=None):
        if error not in (None, "global", "per-genome"):
            raise InvalidArgumentError("error must be None, 'global' or 'per-genome'")
        model, tree = engine.model, engine.tree
        self.engine, self.error, self.alpha = engine, error, bool(alpha)
        # lineage terms: {name: (node mask, 'gain' | 'loss' | 'both'[,
        # family mask])}, each one log multiplier on the branches of its
        # mask (on top of the model's own lineage multipliers, if any), for
        # every family or only those of its family mask
        self.lineage = {}
        for name, term in dict(lineage or {}).items():
            mask, which = term[0], term[1]
            fam = term[2] if len(term) > 2 else None
            if which not in ("gain", "loss", "both"):
                raise InvalidArgumentError(f"lineage term {name!r}: rate must be 'gain', "
                                           f"'loss' or 'both', not {which!r}")
            if np.shape(mask) != (tree.n_nodes,):
                raise InvalidArgumentError(f"lineage term {name!r}: the mask needs one "
                                           f"entry per node ({tree.n_nodes})")
            if fam is not None:
                fam = engine.family_index(fam)
            self.lineage[name] = (np.asarray(mask, dtype=bool), which, fam)
        base = model.lineage or (np.ones(tree.n_nodes), np.ones(tree.n_nodes))
        self.lineage_base = (np.array(base[0]), np.array(base[1]))
        self._make_groups()
        self.n_cat = model.n_categories
        if alpha and self.n_cat < 2:
            raise InvalidArgumentError("estimating alpha needs at least 2 gamma categories")
        names, values, bounds = [], [], []
        if error:
            n = 1 if error == "global" else tree.n_tips
            a0 = model.error_absent if model.error_absent is not None else np.full(n, 0.01)
            b0 = model.error_present if model.error_present is not None else np.full(n, 0.01)
            a0 = np.broadcast_to(np.clip(a0, 1e-6, 0.49), (n,)) if np.size(a0) in (1, n) \
                else np.full(n, 0.01)
            b0 = np.broadcast_to(np.clip(b0, 1e-6, 0.49), (n,)) if np.size(b0) in (1, n) \
                else np.full(n, 0.01)
            if n == 1:
                names += ["logit_error_absent", "logit_error_present"]
            else:
                tips = tree.tip_names
                names += [f"logit_error_absent:{t}" for t in tips]
                names += [f"logit_error_present:{t}" for t in tips]
            values += list(np.log(a0 / (1 - a0))) + list(np.log(b0 / (1 - b0)))
            bounds += [self.BOUND_LOGIT] * (2 * n)
            self.n_error = n
        else:
            self.n_error = 0
        if self.alpha:
            names.append("log_alpha")
            values.append(np.log(model.gamma_alpha or 1.0))
            bounds.append(self.BOUND_LOG_ALPHA)
        for name in self.lineage:
            names.append(f"lineage:{name}")
            values.append(0.0)
            bounds.append((-20.0, 20.0))
        self.names, self.start, self.bounds = names, np.array(values, dtype=float), bounds
        self.layout = None
        if names:   # the layout of the model gradient once the options are set
            self.apply(self.start)
            self.layout = self.targets[0][0].grad_layout(tree)

    def _make_groups(self):
        """Families with the same lineage terms form a group, evaluated with
        a model of its own on its own data (persiste_data_select): one group,
        the engine itself, unless a term has a family set."""
        engine = self.engine
        terms = list(self.lineage.values())
        self.groups = None
        self.targets = [(engine.model, np.ones(len(terms), dtype=bool))]
        if all(t[2] is None for t in terms):
            return
        from ._core import Engine
        member = np.column_stack([np.ones(engine.n_families, dtype=bool) if t[2] is None
                                  else t[2] for t in terms])
        rows, inverse = np.unique(member, axis=0, return_inverse=True)
        self.groups, self.targets = [], []
        for g, row in enumerate(rows):
            idx = np.flatnonzero(inverse.reshape(-1) == g)
            model = engine.model.copy()
            sub = Engine(engine.tree, engine.data.select(idx), model=model,
                         context=engine.context)
            self.groups.append((idx, sub))
            self.targets.append((model, row))

    def close(self):
        for _, sub in self.groups or []:
            sub.data.close()
            sub.close()
            sub.model.close()

    @property
    def n(self):
        return len(self.names)

    def apply(self, theta):
        for model, members in self.targets:
            if self.error:
                ne = self.n_error
                a = 1 / (1 + np.exp(-theta[:ne]))
                b = 1 / (1 + np.exp(-theta[ne:2 * ne]))
                model.set_error(a, b)
            if self.alpha:
                model.set_gamma(np.exp(theta[self.alpha_at]), self.n_cat, model.gamma_median)
            if self.lineage:
                g, l_ = self.lineage_base[0].copy(), self.lineage_base[1].copy()
                for (mask, which, _), b, on in zip(self.lineage.values(),
                                                   theta[self.lineage_at:], members):
                    if on and which in ("gain", "both"):
                        g[mask] *= np.exp(b)
                    if on and which in ("loss", "both"):
                        l_[mask] *= np.exp(b)
                model.set_lineage(g, l_)

    def gradient(self, log_gain, log_loss, weight):
        """The engine's gradient, group by group when the terms have family
        sets: (loglik, d_log_gain, d_log_loss, [d_model per target])."""
        model_grad = self.n > 0
        if self.groups is None:
            g = self.engine.gradient(log_gain, log_loss, weight=weight if model_grad else None,
                                     model_grad=model_grad)
            return g.loglik, g.d_log_gain, g.d_log_loss, [g.d_model]
        n = self.engine.n_families
        lg, ll = np.broadcast_to(log_gain, (n,)), np.broadcast_to(log_loss, (n,))
        out = np.empty((3, n))
        d_models = []
        self.engine.n_evaluations += 1
        for idx, sub in self.groups:
            g = sub.gradient(lg[idx], ll[idx], weight=weight[idx], model_grad=model_grad)
            out[0, idx], out[1, idx], out[2, idx] = g.loglik, g.d_log_gain, g.d_log_loss
            d_models.append(g.d_model)
        return out[0], out[1], out[2], d_models

    @property
    def alpha_at(self):
        return 2 * self.n_error

    @property
    def lineage_at(self):
        return 2 * self.n_error + int(self.alpha)

    def chain(self, theta, d_models):
        """d lnL / d theta from the library's model gradients (one per
        target: the sum over the groups)."""
        members = [m for _, m in self.targets]
        return sum(self._chain(theta, d, m) for d, m in zip(d_models, members))

    def _chain(self, theta, d_model, members):
        out = []
        if self.error:
            ne = self.n_error
            a = 1 / (1 + np.exp(-theta[:ne]))
            b = 1 / (1 + np.exp(-theta[ne:2 * ne]))
            # d/dlogit a = d/dlog a * (1 - a)
            out += list(d_model[self.layout["error_absent"]] * (1 - a))
            out += list(d_model[self.layout["error_present"]] * (1 - b))
        if self.alpha:
            # d log r_k / d log alpha by central differences of the
            # discretisation itself (a smooth function of alpha alone)
            from ._core import gamma_categories
            la, h = theta[self.alpha_at], 1e-5
            med = self.engine.model.gamma_median
            dr = (np.log(gamma_categories(np.exp(la + h), self.n_cat, med))
                  - np.log(gamma_categories(np.exp(la - h), self.n_cat, med))) / (2 * h)
            d_r = d_model[self.layout["category_gain"]] + d_model[self.layout["category_loss"]]
            out.append(float(d_r @ dr))
        for (mask, which, _), on in zip(self.lineage.values(), members):
            d = 0.0
            if not on:
                pass
            elif which in ("gain", "both"):
                d += d_model[self.layout["lineage_gain"]][mask].sum()
            if on and which in ("loss", "both"):
                d += d_model[self.layout["lineage_loss"]][mask].sum()
            out.append(float(d))
        return np.array(out, dtype=float)


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
    model_names: list = field(default_factory=list)  # of the model parameters
    model_info: dict = field(default_factory=dict)   # the model's settings

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
                if n not in ("log_gain", "log_loss") and n not in self.model_names}

    def _model_value(self, name):
        if name in self.names:
            i = self.names.index(name)
            return float(self.coef[i]), float(self.se[i])
        return None, None

    def model_dict(self):
        """The model's settings and estimates (JSON keys of the CLI)."""
        info = dict(self.model_info)
        for key in ("error_absent", "error_present"):
            v, se = self._model_value(f"logit_{key}")
            if v is not None:
                info[key] = float(1 / (1 + np.exp(-v)))
            info[f"se_logit_{key}"] = se
        v, se = self._model_value("log_alpha")
        if v is not None:
            info["alpha"] = float(np.exp(v))
        info["se_log_alpha"] = se
        return info

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
                "message": self.message, **self.model_dict()}


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


def _model_info(engine):
    info = engine.model.settings(engine.tree)
    del info["lineage"]
    return info


def fit(engine, design=None, start=None, progress=None, bound=50.0, fit_error=None,
        fit_alpha=False, fit_lineage=None):
    """Maximum-likelihood fit of a Design (default: one global gain and loss
    rate) by L-BFGS-B on log rates with the library's exact gradient, one
    Newton step from the finite-difference Hessian of that gradient, and
    standard errors from the observed information. Families with zero
    likelihood at the start are left out and listed in ``impossible``.
    ``progress(iteration, loglik)`` is called once per iteration.
    ``fit_error`` ('global' or 'per-genome') also estimates the observation
    error rates, ``fit_alpha`` the gamma shape of the model's categories;
    ``start`` may then include their values (logit, log) after the
    coefficients. Per-genome error rates get no standard errors (the
    Hessian covers the coefficients and the global parameters).
    ``fit_lineage`` {name: (node mask, 'gain' | 'loss' | 'both')} estimates
    one rate multiplier per term on the branches of its mask (a clade that
    sheds genes), named 'lineage:<name>' in the result (log scale)."""
    design = design or Design(engine.n_families)
    mp = ModelParameters(engine, fit_error, fit_alpha,
                         {**design.lineage, **(fit_lineage or {})})
    p_d = design.n_parameters
    if start is not None and len(start) == p_d + mp.n:
        mp.apply(np.asarray(start[p_d:], dtype=float))
    elif mp.n:
        mp.apply(mp.start)
    if design.n_families != engine.n_families:
        raise InvalidArgumentError(f"design is for {design.n_families} families, "
                                   f"data has {engine.n_families}")
    evals0 = engine.n_evaluations
    if start is None:
        coef0, possible = _start(engine, design)
        coef0 = np.concatenate([coef0, mp.start])
    else:
        coef0 = np.asarray(start, dtype=np.float64)
        if len(coef0) == p_d:
            coef0 = np.concatenate([coef0, mp.start])
        possible = np.isfinite(engine.loglik(*design.rates(coef0[:p_d])))
    n_possible = int(possible.sum())
    if n_possible == 0:
        raise InvalidArgumentError("every family is impossible under the model")
    w = possible.astype(np.float64)
    scale = 1.0 / n_possible

    last = {}

    def evaluate(coef):
        if last.get("coef") is not None and np.array_equal(last["coef"], coef):
            return last["ll"], last["grad"]
        if mp.n:
            mp.apply(coef[p_d:])
        loglik, d_gain, d_loss, d_models = mp.gradient(*design.rates(coef[:p_d]), w)
        ll = np.where(possible, loglik, 0.0).sum()
        grad = design.chain(d_gain * w, d_loss * w)
        if mp.n:
            grad = np.concatenate([grad, mp.chain(coef[p_d:], d_models)])
        last.update(coef=np.array(coef), ll=ll, grad=grad)
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

    from scipy import optimize
    res = optimize.minimize(objective, coef0, jac=True, method="L-BFGS-B",
                            bounds=[(-bound, bound)] * p_d + mp.bounds, callback=callback,
                            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000})
    coef = res.x
    ll, grad = evaluate(coef)
    # the Hessian over the coefficients and the global model parameters;
    # per-genome error rates are held at their estimates
    n_h = p_d if mp.error == "per-genome" else len(coef)
    if n_h < len(coef):
        def grad_h(c):
            return evaluate(np.concatenate([c, coef[n_h:]]))[1][:n_h]
        H = _hessian(grad_h, coef[:n_h])
        full_grad = grad
        grad = grad[:n_h]
    else:
        H = _hessian(lambda c: evaluate(c)[1], coef)
    try:
        np.linalg.cholesky(-H)                   # observed information > 0
        cov = np.linalg.inv(-H)
    except np.linalg.LinAlgError:
        cov = None
    if cov is not None:                          # one Newton step, if it helps
        step = np.zeros(len(coef))
        step[:n_h] = cov @ grad
        lo = np.array([b[0] for b in [(-bound, bound)] * p_d + mp.bounds])
        hi = np.array([b[1] for b in [(-bound, bound)] * p_d + mp.bounds])
        if np.all((coef + step >= lo) & (coef + step <= hi)):
            ll_new, grad_new = evaluate(coef + step)
            if ll_new >= ll:
                coef, ll, grad = coef + step, ll_new, grad_new[:n_h]
        se, decrement = np.sqrt(np.diag(cov)), float(grad @ cov @ grad)
    else:
        cov = np.full_like(H, np.nan)
        se, decrement = np.full(n_h, np.nan), np.inf
    if n_h < len(coef):
        se = np.concatenate([se, np.full(len(coef) - n_h, np.nan)])
        decrement += float(np.abs(full_grad[n_h:]).max() > 1e-3 * max(1.0, abs(ll)))
    if mp.n:
        evaluate(coef)                           # the model holds the estimates
    converged = bool(np.isfinite(ll) and decrement < 1e-6)
    left_out = np.flatnonzero(~possible)
    names = engine.data.family_names if left_out.size else []
    mp.close()
    return FitResult(list(design.names) + mp.names, coef, se, cov, float(ll), converged,
                     str(res.message) if converged else
                     f"not converged ({res.message}; observed information "
                     f"{'not ' if np.isnan(se).any() else ''}positive definite)",
                     engine.n_evaluations - evals0, n_possible, engine.n_taxa,
                     [names[i] for i in left_out], design, list(mp.names),
                     _model_info(engine))


@dataclass
class TestResult:
    null: FitResult
    alt: FitResult
    statistic: float
    df: int
    p_value: float
    one_sided: bool
    bootstrap: dict = None   # parametric bootstrap: n, seed, p_value, statistics

    @property
    def delta_loglik(self):
        return self.alt.loglik - self.null.loglik

    def to_dict(self):
        out = {"delta_loglik": self.delta_loglik, "statistic": self.statistic,
               "df": self.df, "p_value": self.p_value, "one_sided": self.one_sided}
        if self.bootstrap:
            out["bootstrap"] = {k: v for k, v in self.bootstrap.items() if k != "statistics"}
        return {**out,
                "aic_null": self.null.aic, "aic_alt": self.alt.aic,
                "null": self.null.to_dict(), "alt": self.alt.to_dict()}


def lrt(null, alt):
    """Likelihood-ratio test of nested fits: chi-square with df = difference in
    parameters, or, when alt.design.one_sided is set (one tested coefficient
    with a signed alternative), the 50:50 mixture of chi-square(0) and (1)."""
    df = alt.n_parameters - null.n_parameters
    if df < 1:
        raise InvalidArgumentError("the alternative must have more parameters than the null")
    from scipy import stats
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


def retention_test(engine, families, alternative="less", null=None, progress=None,
                   fit_error=None, fit_alpha=False, fit_lineage=None, bootstrap=0, seed=1):
    """Do the listed families (names, indices or a mask) have a different loss
    rate from the rest? alternative 'less' (retained: one-sided, the default),
    'greater' or 'two-sided'. The fitted loss multiplier is
    ``result.alt.effects()['loss:set']``. ``bootstrap`` N > 0 adds a
    parametric bootstrap p-value (``result.bootstrap``) from N tables
    simulated under the null fit from ``seed``: for small data, where the
    chi-square approximation is doubtful."""
    signs = {"less": -1, "greater": 1, "two-sided": None}
    if alternative not in signs:
        raise InvalidArgumentError(f"alternative must be one of {', '.join(signs)}")
    mask = engine.family_index(families)
    if not 0 < mask.sum() < engine.n_families:
        raise InvalidArgumentError("the family set must be neither empty nor every family")
    sign = signs[alternative]
    design = Design(engine.n_families, loss={"set": mask},
                    one_sided=None if sign is None else ("loss:set", sign))
    opts = dict(progress=progress, fit_error=fit_error, fit_alpha=fit_alpha,
                fit_lineage=fit_lineage)
    null = null or fit(engine, **opts)
    start = np.concatenate([[null["log_gain"], null["log_loss"], 0.0],
                            null.coef[len(null.design.names):]])
    res = lrt(null, fit(engine, design, start=start, **opts))
    if bootstrap:
        res.bootstrap = _bootstrap(engine, mask, design, null, res, int(bootstrap), seed,
                                   dict(opts, progress=None))
    return res


def _bootstrap(engine, mask, design, null, res, n, seed, opts):
    """Parametric bootstrap of the retention test's statistic: n tables
    simulated under the null fit (the C simulator, with the model's
    options and conditioning; each family keeps its unknown cells), each
    refitted under the null and the alternative. p = (1 + #{statistic >=
    observed}) / (n + 1)."""
    from ._core import Data, Engine, simulate
    tree, data = engine.tree, engine.data
    unknown = np.array([data.states(f) == 2 for f in range(data.n_families)])
    # the null's model (its fitted error and alpha are in engine.model now)
    model = engine.model
    stats_ = []
    for b in range(n):
        states = simulate(model, tree, data.n_families, null.gain, null.loss,
                          seed=int(seed) * 1000003 + b)
        states[unknown] = 2
        sim = Data.from_matrix(tree, states, "tree",
                               family_names=data.family_names)
        with Engine(tree, sim, model=model.copy(), context=engine.context) as e:
            e._own.append(e.model)
            try:
                null_b = fit(e, **opts)
                start = np.concatenate([[null_b["log_gain"], null_b["log_loss"], 0.0],
                                        null_b.coef[len(null_b.design.names):]])
                stats_.append(lrt(null_b, fit(e, Design(e.n_families, loss={"set": mask},
                                                         one_sided=design.one_sided),
                                              start=start, **opts)).statistic)
            except InvalidArgumentError:
                stats_.append(0.0)         # nothing to fit: the null holds
        sim.close()
    stats_ = np.array(stats_)
    p = (1 + np.count_nonzero(stats_ >= res.statistic - 1e-9)) / (n + 1)
    return {"n": n, "seed": int(seed), "p_value": float(p), "statistics": stats_}


def lineage_test(engine, clade, rate="loss", families=None, null=None, progress=None,
                 fit_error=None, fit_alpha=False):
    """Does a clade (a node mask over the tree, e.g. from
    persiste.lineage_multipliers or clade_node) gain or lose genes at another
    rate than the rest of the tree? A likelihood-ratio test of one lineage
    multiplier on the clade's branches (``rate`` 'gain', 'loss' or 'both';
    chi-square, 1 df). The estimate is ``result.alt['lineage:clade']``
    (log scale). With ``families`` (names, indices or a mask) the
    multiplier applies to those families only: "is this gene set lost
    faster in that clade?"."""
    mask = np.asarray(clade, dtype=bool)
    opts = dict(progress=progress, fit_error=fit_error, fit_alpha=fit_alpha)
    null = null or fit(engine, **opts)
    start = np.concatenate([null.coef, [0.0]])
    model = engine.model
    before = model.lineage
    try:
        term = (mask, rate) if families is None else (mask, rate, families)
        alt = fit(engine, start=start, fit_lineage={"clade": term}, **opts)
    finally:   # the fit leaves its multipliers in the model: put back the model's own
        if before is None:
            model.set_lineage(np.ones(engine.tree.n_nodes), np.ones(engine.tree.n_nodes))
        else:
            model.set_lineage(*before)
    return lrt(null, alt)
