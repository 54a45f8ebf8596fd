"""The model options from Python and the CLI: observation error, gamma rate
categories, lineage multipliers, at least k presences, exclusion of the
families the conditioning cannot observe, simulation, and the recovery of
simulated parameters by fits. Oracles: hand-written closed forms, scipy's
gamma distribution, invariances (a lineage multiplier on every branch is a
longer tree; neutral options are the plain model) and simulation."""
import json

import numpy as np
import pytest
from scipy import special, stats

import npmodel as nm
import persiste
from conftest import EFM, cli


def tree_from(parent, length, names):
    return persiste.Tree.from_newick(nm.newick(parent, length, names))


# ---- gamma categories -------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.05, 0.5, 1.0, 3.7, 80.0])
@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_gamma_categories_match_scipy(alpha, k):
    q = stats.gamma.ppf(np.arange(1, k) / k, alpha, scale=1 / alpha)
    edges = np.concatenate([[0.0], q, [np.inf]])
    mean = k * np.diff(special.gammainc(alpha + 1, alpha * edges))
    np.testing.assert_allclose(persiste.gamma_categories(alpha, k), mean, rtol=1e-8)
    med = stats.gamma.ppf((2 * np.arange(k) + 1) / (2 * k), alpha, scale=1 / alpha)
    np.testing.assert_allclose(persiste.gamma_categories(alpha, k, median=True),
                               med * k / med.sum(), rtol=1e-8)


def test_gamma_yang_1994():
    np.testing.assert_allclose(persiste.gamma_categories(0.5, 4),
                               [0.033388, 0.251916, 0.820268, 2.894428], atol=1e-6)


# ---- the options against closed forms and invariances -----------------------

def test_error_two_tips_closed_form():
    """L(obs) = sum_root pi sum_true P(root->true) e(obs|true), written out."""
    tree = persiste.Tree.from_newick("(A:0.3,B:0.8);")
    states = np.array([[a, b] for a in (0, 1, 2) for b in (0, 1, 2)], dtype=np.uint8)
    data = persiste.Data.from_matrix(tree, states, taxon_names="tree")
    lam, mu, ea, eb = 0.7, 1.3, np.array([0.1, 0.05]), np.array([0.02, 0.2])

    def p(t):
        s = lam + mu
        e = -np.expm1(-s * t)
        return np.array([[1 - lam / s * e, lam / s * e], [mu / s * e, 1 - mu / s * e]])

    def emit(g):   # rows: true state; columns: observed 0, 1, unknown
        return np.array([[1 - eb[g], eb[g], 1.0], [ea[g], 1 - ea[g], 1.0]])
    pi = np.array([mu, lam]) / (lam + mu)
    fa, fb = p(0.3) @ emit(0), p(0.8) @ emit(1)     # [root][observed]
    lik = np.einsum("r,ra,rb->ab", pi, fa, fb)
    for condition in ("none", "present", "variable"):
        model = persiste.Model(condition, error_absent=ea, error_present=eb)
        with persiste.Engine(tree, data, model=model) as e:
            got = e.loglik(np.log(lam), np.log(mu))
        for f, (a, b) in enumerate(states):
            known = [x for x in (a, b) if x != 2]
            ka, kb = (slice(0, 2) if a != 2 else [2]), (slice(0, 2) if b != 2 else [2])
            sub = lik[ka][:, kb]
            if condition == "none":
                norm = 1.0
            elif condition == "present":   # some observed presence among known cells
                norm = sub.sum() - (sub[0, 0] if len(known) == 2 else sub.flat[0])
            else:                          # both an observed 0 and an observed 1
                norm = sub[0, 1] + sub[1, 0] if len(known) == 2 else 0.0
            want = np.log(lik[a, b] / norm) if norm > 0 else -np.inf
            assert got[f] == pytest.approx(want, rel=1e-12, abs=1e-12), (condition, a, b)


def test_gamma_is_a_mixture_of_scaled_rates(rng):
    parent, length, names = nm.random_tree(12, rng)
    tree = tree_from(parent, length, names)
    states = rng.integers(0, 2, size=(50, 12)).astype(np.uint8)
    data = persiste.Data.from_matrix(tree, states, taxon_names=names[:12])
    r = persiste.gamma_categories(0.7, 4)
    with persiste.Engine(tree, data, model=persiste.Model("none", gamma_alpha=0.7,
                                                          n_categories=4)) as e:
        got = e.loglik(np.log(0.8), np.log(1.5))
    each = [nm.loglik(parent, length, states, 0.8 * rk, 1.5 * rk, "none") for rk in r]
    want = np.log(np.mean(np.exp(each), axis=0))
    np.testing.assert_allclose(got, want, rtol=1e-11)


def test_lineage_everywhere_is_a_longer_tree(rng):
    parent, length, names = nm.random_tree(15, rng)
    tree = tree_from(parent, length, names)
    longer = tree_from(parent, length * 2.5, names)
    states = rng.integers(0, 3, size=(40, 15)).astype(np.uint8)
    for cond in ("none", "present", "variable"):
        a = persiste.Engine(tree, persiste.Data.from_matrix(tree, states, taxon_names="tree"),
                            model=persiste.Model(cond, lineage=(np.full(tree.n_nodes, 2.5),
                                                                np.full(tree.n_nodes, 2.5))))
        b = persiste.Engine(longer, persiste.Data.from_matrix(longer, states, taxon_names="tree"), condition=cond)
        np.testing.assert_allclose(a.loglik(-1.0, -0.5), b.loglik(-1.0, -0.5), rtol=1e-11)


def test_neutral_options_are_the_plain_model(rng):
    parent, length, names = nm.random_tree(30, rng)
    tree = tree_from(parent, length, names)
    states = rng.integers(0, 2, size=(200, 30)).astype(np.uint8)
    data = persiste.Data.from_matrix(tree, states, taxon_names="tree")
    n = tree.n_nodes
    neutral = persiste.Model(error_absent=0.0, error_present=0.0,
                             categories=([1.0], [1.0]), lineage=(np.ones(n), np.ones(n)),
                             min_present=1)
    with persiste.Engine(tree, data) as plain, persiste.Engine(tree, data, model=neutral) as e:
        a, b = plain.gradient(-1.0, -0.2), e.gradient(-1.0, -0.2)
    assert np.array_equal(a.loglik, b.loglik) and np.array_equal(a.d_log_gain, b.d_log_gain)


def test_clade_nodes_and_lineage_rows():
    tree = persiste.Tree.from_newick("((A:1,B:1)X:1,(C:1,(D:1,E:1):1):1);")
    labels = tree.labels
    x = persiste.clade_node(tree, "X")
    assert persiste.clade_node(tree, "A,B") == x
    de = persiste.clade_node(tree, "D,E")
    assert {labels[v] for v in range(tree.n_tips) if tree.parents[v] == de} == {"D", "E"}
    cde = persiste.clade_node(tree, "C, E")
    g, l_ = persiste.lineage_multipliers(tree, [("C,E", 2.0, 3.0), ("D", 5.0, 7.0)])
    inside = {v for v in range(tree.n_nodes)
              if v == cde or any(a == cde for a in _ancestors(tree, v))}
    for v in range(tree.n_nodes):
        want = (5.0, 7.0) if labels[v] == "D" else (2.0, 3.0) if v in inside else (1.0, 1.0)
        assert (g[v], l_[v]) == want, labels[v]
    with pytest.raises(persiste.NamesError, match="'Q' is not a tip"):
        persiste.clade_node(tree, "A,Q")


def _ancestors(tree, v):
    p = tree.parents
    while p[v] >= 0:
        v = p[v]
        yield v


def test_observable_excludes_by_name():
    tree = persiste.Tree.from_newick("((A:1,B:1):1,C:1);")
    states = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [1, 1, 2], [2, 2, 0]], dtype=np.uint8)
    data = persiste.Data.from_matrix(tree, states, "tree", family_names=list("abcde"))
    kept = data.observable(persiste.Model("variable"))
    assert kept.family_names == ["c"] and kept.dropped_families == list("abde")
    kept = data.observable(persiste.Model("present", min_present=2))
    assert kept.family_names == ["b", "d"]


# ---- simulation and recovery -----------------------------------------------

def test_simulate_is_seeded_and_conditioned(rng):
    parent, length, names = nm.random_tree(20, rng)
    tree = tree_from(parent, length, names)
    model = persiste.Model("variable", error_absent=0.1, error_present=0.05)
    a = persiste.simulate(model, tree, 500, 0.5, 0.8, seed=7)
    assert np.array_equal(a, persiste.simulate(model, tree, 500, 0.5, 0.8, seed=7))
    assert not np.array_equal(a, persiste.simulate(model, tree, 500, 0.5, 0.8, seed=8))
    assert a.any(axis=1).all() and (~a.astype(bool)).any(axis=1).all()


def _fit_recovers(estimate, se, truth, what):
    assert abs(estimate - truth) < 3 * se, f"{what}: {estimate} +/- {se}, truth {truth}"


def test_fit_recovers_error_rates(rng):
    parent, length, names = nm.random_tree(60, rng, mean_length=0.3)
    tree = tree_from(parent, length, names)
    a, b = 0.08, 0.03
    sim = persiste.Model("present", error_absent=a, error_present=b)
    states = persiste.simulate(sim, tree, 4000, 0.6, 0.9, seed=11)
    data = persiste.Data.from_matrix(tree, states, taxon_names="tree")
    with persiste.Engine(tree, data, model=persiste.Model("present")) as e:
        f = e.fit(fit_error="global")
    for name, truth in (("logit_error_absent", a), ("logit_error_present", b)):
        _fit_recovers(f[name], f.se[f.names.index(name)], np.log(truth / (1 - truth)), name)
    _fit_recovers(f["log_gain"], f.se_log_gain, np.log(0.6), "log_gain")
    d = f.to_dict()
    assert d["error_absent"] == pytest.approx(1 / (1 + np.exp(-f["logit_error_absent"])))


def test_fit_recovers_alpha(rng):
    parent, length, names = nm.random_tree(40, rng, mean_length=0.3)
    tree = tree_from(parent, length, names)
    sim = persiste.Model("present", gamma_alpha=0.6, n_categories=4)
    states = persiste.simulate(sim, tree, 4000, 0.8, 1.2, seed=5)
    data = persiste.Data.from_matrix(tree, states, taxon_names="tree")
    model = persiste.Model("present", gamma_alpha=1.0, n_categories=4)
    with persiste.Engine(tree, data, model=model, n_threads=2) as e:
        f = e.fit(fit_alpha=True)
    _fit_recovers(f["log_alpha"], f.se[f.names.index("log_alpha")], np.log(0.6), "log_alpha")
    assert f.to_dict()["n_categories"] == 4


def test_lineage_test_recovers_a_clade_multiplier(rng):
    parent, length, names = nm.random_tree(50, rng, mean_length=0.3)
    tree = tree_from(parent, length, names)
    root_kids = np.flatnonzero(tree.parents == tree.n_nodes - 1)
    mask = persiste.clade_mask(tree, root_kids[np.argmax(root_kids)])
    g = np.ones(tree.n_nodes)
    lm = np.where(mask, 3.0, 1.0)
    states = persiste.simulate(persiste.Model("present", lineage=(g, lm)), tree, 3000,
                               0.5, 0.7, seed=3)
    data = persiste.Data.from_matrix(tree, states, taxon_names="tree")
    with persiste.Engine(tree, data) as e:
        res = persiste.lineage_test(e, mask, "loss")
        assert e.model.lineage is None or np.all(e.model.lineage[1] == 1)
    b = res.alt["lineage:clade"]
    _fit_recovers(b, res.alt.se[res.alt.names.index("lineage:clade")], np.log(3.0),
                  "lineage multiplier")
    assert res.p_value < 1e-6


# ---- CLI --------------------------------------------------------------------

def test_cli_simulate_then_fit_error(tmp_path, rng):
    parent, length, names = nm.random_tree(40, rng, mean_length=0.3)
    tree_file = tmp_path / "t.nwk"
    tree_file.write_text(nm.newick(parent, length, names))
    pam = tmp_path / "pam.Rtab"
    cli("simulate", "--tree", tree_file, "--gain", 0.6, "--loss", 0.9, "--families", 3000,
        "--seed", 4, "--error-absent", 0.1, "--error-present", 0.02, "--out", pam)
    lines = pam.read_text().splitlines()
    header = lines[0].split("\t")
    assert header[0] == "Gene" and sorted(header[1:]) == sorted(names[:40])
    assert len(lines) == 3001
    p = cli("simulate", "--tree", tree_file, "--gain", 0.6, "--loss", 0.9, "--families", 3,
            "--out", pam, status=2)
    assert "exists" in p.stderr and len(pam.read_text().splitlines()) == 3001
    d = json.loads(cli("fit", "--tree", tree_file, "--pam", pam, "--fit-error",
                       "--json").stdout)
    for key, truth in (("error_absent", 0.1), ("error_present", 0.02)):
        se = d[f"se_logit_{key}"]
        assert abs(np.log(d[key] / (1 - d[key])) - np.log(truth / (1 - truth))) < 3 * se
    assert d["n_categories"] == 1 and d["alpha"] is None and d["min_present"] == 1
    assert d["n_excluded"] == 0 and d["excluded"] == []


def test_cli_variable_reports_excluded(tmp_path):
    tree = tmp_path / "t.nwk"
    tree.write_text("((A:1,B:1):1,C:1);")
    pam = tmp_path / "p.Rtab"
    pam.write_text("Gene\tA\tB\tC\ncore\t1\t1\t1\nvar\t1\t0\t1\nnone\t0\t0\t0\nv2\t0\t1\t1\n")
    d = json.loads(cli("loglik", "--tree", tree, "--pam", pam, "--gain", 1, "--loss", 1,
                       "--condition", "variable", "--json").stdout)
    assert d["n_excluded"] == 2 and sorted(d["excluded"]) == ["core", "none"]
    assert d["n_families"] == 2
    d = json.loads(cli("loglik", "--tree", tree, "--pam", pam, "--gain", 1, "--loss", 1,
                       "--min-present", 3, "--json").stdout)
    assert d["excluded"] == ["var", "none", "v2"] and d["min_present"] == 3


def test_cli_bad_model_files(tmp_path):
    tree = tmp_path / "t.nwk"
    tree.write_text("((A:1,B:1):1,C:1);")
    pam = tmp_path / "p.Rtab"
    pam.write_text("Gene\tA\tB\tC\nx\t1\t0\t1\n")
    err = tmp_path / "err.tsv"
    err.write_text("A\t0.1\t0.01\nB\t0.1\tlots\n")
    p = cli("loglik", "--tree", tree, "--pam", pam, "--gain", 1, "--loss", 1,
            "--error-file", err, status=2)
    assert f"{err}, line 2, column 3" in p.stderr
    err.write_text("Z\t0.1\t0.01\n")
    p = cli("loglik", "--tree", tree, "--pam", pam, "--gain", 1, "--loss", 1,
            "--error-file", err, status=2)
    assert "genome 'Z'" in p.stderr
    lin = tmp_path / "lin.tsv"
    lin.write_text("A,Q\t1\t2\n")
    p = cli("loglik", "--tree", tree, "--pam", pam, "--gain", 1, "--loss", 1,
            "--lineage-file", lin, status=2)
    assert "'Q' is not a tip" in p.stderr
    p = cli("loglik", "--tree", tree, "--pam", pam, "--gain", 1, "--loss", 1,
            "--categories", 4, status=2)
    assert "--gamma-alpha" in p.stderr


def test_cli_error_file_equals_api(tmp_path):
    tree = tmp_path / "t.nwk"
    tree.write_text("((A:0.5,B:0.2):0.3,(C:0.4,D:0.1):0.6);")
    pam = tmp_path / "p.Rtab"
    pam.write_text("Gene\tA\tB\tC\tD\nx\t1\t0\t1\t0\ny\t0\t0\t1\t1\n")
    err = tmp_path / "err.tsv"
    err.write_text("# genome a b\nA\t0.1\t0.01\nC\t0.2\t0.05\n")
    lin = tmp_path / "lin.tsv"
    lin.write_text("C,D\t2\t0.5\n")
    d = json.loads(cli("loglik", "--tree", tree, "--pam", pam, "--gain", 0.7, "--loss", 1.1,
                       "--error-file", err, "--lineage-file", lin, "--gamma-alpha", 0.8,
                       "--categories", 3, "--json").stdout)
    t = persiste.Tree.read(str(tree))
    model = persiste.Model(error_absent={"A": 0.1, "C": 0.2},
                           error_present={"A": 0.01, "C": 0.05}, tree=t,
                           gamma_alpha=0.8, n_categories=3,
                           lineage=persiste.lineage_multipliers(t, [("C,D", 2, 0.5)]))
    with persiste.Engine(t, persiste.Data.read(t, str(pam)), model=model) as e:
        want = e.loglik(np.log(0.7), np.log(1.1)).sum()
    assert d["loglik"] == pytest.approx(want, rel=1e-13)
    assert d["error_absent"] == {"A": 0.1, "B": 0.0, "C": 0.2, "D": 0.0}
    assert d["alpha"] == 0.8 and d["n_categories"] == 3


def test_cli_test_under_error_and_gamma():
    p = cli("test", "--tree", EFM[0], "--pam", EFM[1], "--drop-extra-taxa", "--families",
            str(EFM[0].parents[2] / "bindings/python/persiste/data/efm_resistance_genes.txt"),
            "--error-absent", 0.01, "--error-present", 0.01, "--json", "--threads", 2)
    d = json.loads(p.stdout)
    assert d["error_absent"] == 0.01 and d["p_value"] >= 0 and np.isfinite(d["delta_loglik"])


# ---- labelled tables (pandas) -----------------------------------------------

def test_dataframe_binds_by_labels(rng):
    pd = pytest.importorskip("pandas")
    tree = persiste.Tree.from_newick("((A:0.3,B:0.2):0.4,(C:0.5,D:0.1):0.2);")
    X = rng.integers(0, 2, size=(30, 4)).astype(np.uint8)
    families = [f"fam{i}" for i in range(30)]
    df = pd.DataFrame(X, index=families, columns=["A", "B", "C", "D"])
    want = persiste.Engine(tree, persiste.Data.from_matrix(tree, X, ["A", "B", "C", "D"]))
    want = want.loglik(-0.5, -0.3)
    swapped = df[["B", "A", "D", "C"]]               # genome columns in another order
    for table in (df, swapped, swapped.T):           # and genomes in the rows
        data = persiste.Data.from_matrix(tree, table)
        assert data.family_names == families
        with persiste.Engine(tree, data) as e:
            np.testing.assert_array_equal(e.loglik(-0.5, -0.3), want)


def test_unlabelled_array_is_refused():
    tree = persiste.Tree.from_newick("(A:1,B:1);")
    with pytest.raises(persiste.InvalidArgumentError, match="taxon_names"):
        persiste.Data.from_matrix(tree, np.array([[1, 0]]))
    assert persiste.Data.from_matrix(tree, np.array([[1, 0]]), "tree").n_families == 1


def test_gene_set_lost_faster_in_a_clade(rng):
    """A lineage term with a family set: only those families lose genes
    faster on the clade; the fit recovers the multiplier and the others'
    rates are untouched (their own fit matches)."""
    parent, length, names = nm.random_tree(50, rng, mean_length=0.3)
    tree = tree_from(parent, length, names)
    root_kids = np.flatnonzero(tree.parents == tree.n_nodes - 1)
    mask = persiste.clade_mask(tree, root_kids[np.argmax(root_kids)])
    one = np.ones(tree.n_nodes)
    in_set = persiste.simulate(persiste.Model(lineage=(one, np.where(mask, 4.0, 1.0))),
                               tree, 1500, 0.5, 0.7, seed=21)
    rest = persiste.simulate(persiste.Model(), tree, 2500, 0.5, 0.7, seed=22)
    states = np.vstack([in_set, rest])
    data = persiste.Data.from_matrix(tree, states, "tree")
    fam = np.arange(4000) < 1500
    with persiste.Engine(tree, data) as e:
        res = persiste.lineage_test(e, mask, "loss", families=fam)
    i = res.alt.names.index("lineage:clade")
    _fit_recovers(res.alt.coef[i], res.alt.se[i], np.log(4.0), "gene-set clade multiplier")
    _fit_recovers(res.alt["log_loss"], res.alt.se_log_loss, np.log(0.7), "log_loss")
    assert res.p_value < 1e-10 and res.df == 1
