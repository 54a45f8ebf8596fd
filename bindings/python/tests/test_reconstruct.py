"""Reconstruction from Python and the CLI: the arrays, the tables, the
figures. The values themselves are checked against brute force in
tests/test_reconstruct.c; here: a closed form on two tips, the sums against
the per-family values, the files' layout and validity."""
import gzip
import json

import numpy as np
import pytest

import npmodel as nm
import persiste
from conftest import EFM, cli


def test_two_tips_posterior_closed_form():
    """Root posterior on a 2-tip tree: pi_r P_ra P_rb / L, by hand."""
    tree = persiste.Tree.from_newick("(A:0.3,B:0.8);")
    data = persiste.Data.from_matrix(tree, np.array([[1, 0], [1, 1]]), ["A", "B"])
    lam, mu = 0.7, 1.3
    with persiste.Engine(tree, data, condition="none") as e:
        rec = e.reconstruct(np.log(lam), np.log(mu), per_family=True)
    s = lam + mu

    def p(t, a, b):
        e_ = -np.expm1(-s * t)
        p01, p10 = lam / s * e_, mu / s * e_
        return [[1 - p01, p01], [p10, 1 - p10]][a][b]
    pi = [mu / s, lam / s]
    for f, (a, b) in enumerate([(1, 0), (1, 1)]):
        joint = [pi[r] * p(0.3, r, a) * p(0.8, r, b) for r in (0, 1)]
        assert rec.present[f, 2] == pytest.approx(joint[1] / sum(joint), rel=1e-12)
        assert rec.present[f, 0] == 1.0 and rec.present[f, 1] == b
    # tip A present: where the root was absent, A gained it on its branch
    assert rec.gains[0, 0] >= 1 - rec.present[0, 2] - 1e-12


def test_sums_and_tables(rng):
    parent, length, names = nm.random_tree(25, rng)
    tree = persiste.Tree.from_newick(nm.newick(parent, length, names))
    states = persiste.simulate(persiste.Model(), tree, 300, 1.0, 1.5, seed=2)
    data = persiste.Data.from_matrix(tree, states, "tree")
    groups = [("cog" + "ABC"[i % 3]) if i % 7 else None for i in range(300)]
    with persiste.Engine(tree, data, error_absent=0.02, error_present=0.01) as e:
        rec = e.reconstruct(0.0, np.log(1.5), per_family=True, groups=groups)
    assert rec.groups == ["cogA", "cogB", "cogC"]
    for gi, g in enumerate(rec.groups):
        fam = [i for i, x in enumerate(groups) if x == g]
        np.testing.assert_allclose(rec.sum_gains[gi], rec.gains[fam].sum(axis=0), rtol=1e-12)
        np.testing.assert_allclose(rec.sum_present[gi], rec.present[fam].sum(axis=0),
                                   rtol=1e-12)
    b = rec.branches()
    assert set(b) >= {"node", "label", "parent", "tip_a", "tip_b", "length",
                      "expected_gains", "expected_losses", "gains:cogA", "losses:cogC"}
    tips = set(tree.tip_names)
    for v in range(tree.n_tips, tree.n_nodes):
        assert b["tip_a"][v] in tips and b["tip_b"][v] in tips
    assert b["tip_a"][0] == "" and b["expected_gains"][-1] == 0


def test_cli_reconstruct_files(tmp_path):
    pytest.importorskip("matplotlib")
    tree = tmp_path / "t.nwk"
    tree.write_text("((A:0.3,B:0.2)X:0.4,(C:0.5,D:0.1):0.3);")
    pam = tmp_path / "p.Rtab"
    pam.write_text("Gene\tA\tB\tC\tD\nf1\t1\t0\t1\t0\nf2\t0\t0\t1\t1\nf3\t1\t1\t1\t0\n")
    groups = tmp_path / "g.tsv"
    groups.write_text("f1\tmobile\nf2\tmobile\nf3\tcore\n")
    out = tmp_path / "out"
    d = json.loads(cli("reconstruct", "--tree", tree, "--pam", pam, "--groups", groups,
                       "--per-family", "--out", out, "--json").stdout)
    assert d["n_families"] == 3 and d["n_impossible"] == 0
    assert d["expected_gains_total"] > 0 and d["expected_losses_total"] > 0
    rows = [r.split("\t") for r in (out / "branches.tsv").read_text().splitlines()]
    head = rows[0]
    assert head[:8] == ["node", "label", "parent", "tip_a", "tip_b", "length",
                        "expected_gains", "expected_losses"]
    assert "gains:mobile" in head and "losses:core" in head and len(rows) == 8
    gains = sum(float(r[head.index("expected_gains")]) for r in rows[1:])
    assert gains == pytest.approx(d["expected_gains_total"], rel=1e-12)
    assert any(r[1] == "X" for r in rows[1:])
    nodes = (out / "nodes.tsv").read_text().splitlines()
    assert nodes[0].split("\t")[:4] == ["node", "label", "parent", "expected_present"]
    with gzip.open(out / "families.tsv.gz", "rt") as f:
        fam = f.read().splitlines()
    assert fam[0].split("\t") == ["family", "node", "p_present", "expected_gains",
                                  "expected_losses"] and len(fam) == 1 + 3 * 7
    assert (out / "tree.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (out / "tree.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    for v in range(6):                     # one element per branch, per panel
        assert svg.count(f'id="branch-{v}"') == 2, v
    p = cli("reconstruct", "--tree", tree, "--pam", pam, "--out", out, status=2)
    assert "exists" in p.stderr


def test_cli_reconstruct_efm_with_fit(tmp_path):
    pytest.importorskip("matplotlib")
    d = json.loads(cli("reconstruct", "--tree", EFM[0], "--pam", EFM[1], "--drop-extra-taxa",
                       "--threads", 2, "--out", tmp_path / "r", "--json").stdout)
    assert d["fit"]["converged"] and d["gain"] == pytest.approx(d["fit"]["gain"])
    assert d["expected_gains_total"] > 1000
