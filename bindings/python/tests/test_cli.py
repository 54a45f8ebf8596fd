"""The persiste command line end to end (python -m persiste and the console
script), its JSON, reports, progress and every bad-input path."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

import npmodel as nm
from conftest import EFM, EFM_RESISTANCE, HARRIS, HARRIS_REF

HARRIS_ARGS = ["--tree", str(HARRIS[0]), "--pam", str(HARRIS[1])]
EFM_ARGS = ["--tree", str(EFM[0]), "--pam", str(EFM[1])]


def run(*args, status=0):
    p = subprocess.run([sys.executable, "-m", "persiste", *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == status, p.stderr
    assert "Traceback" not in p.stderr
    return p


def run_json(*args):
    return json.loads(run(*args, "--json").stdout)


def fails(*args, fragments=()):
    """Exit status 2, one line on stderr naming the problem, nothing on stdout."""
    p = run(*args, status=2)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("persiste: error: "), p.stderr
    assert p.stdout == ""
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.mark.parametrize("condition", ["none", "present"])
def test_loglik_json_matches_reference(condition, tmp_path):
    out = tmp_path / "per_family.tsv"
    j = run_json("loglik", *HARRIS_ARGS, "--gain", 0.14, "--loss", 0.35,
                 "--condition", condition, "--per-family", out)
    total, first = HARRIS_REF[condition]
    assert j["loglik"] == pytest.approx(total, rel=1e-12)
    assert (j["n_families"], j["n_taxa"], j["gain"], j["loss"]) == (20822, 30, 0.14, 0.35)
    assert j["pi1"] == pytest.approx(0.14 / 0.49) and j["n_impossible"] == 0
    rows = np.genfromtxt(out, delimiter="\t", names=True, dtype=None, encoding="utf-8")
    assert rows.dtype.names == ("family", "loglik", "d_log_gain", "d_log_loss")
    assert len(rows) == 20822
    np.testing.assert_allclose(rows["loglik"][:5], first, rtol=1e-11)
    assert rows["d_log_gain"].sum() == pytest.approx(j["d_log_gain"], rel=1e-9)


def test_loglik_report_is_readable():
    text = run("loglik", *HARRIS_ARGS, "--gain", 0.14, "--loss", 0.35).stdout
    assert "lnL       -201262.4335841" in text and "30 tips" in text
    assert "20822 families x 30 genomes" in text


def test_fit_json_and_report():
    j = run_json("fit", *HARRIS_ARGS)
    for key in ("loglik", "gain", "loss", "pi1", "n_families", "n_taxa",
                "se_log_gain", "se_log_loss", "converged", "n_evaluations", "aic"):
        assert key in j
    assert j["converged"] and j["gain"] == pytest.approx(0.139, abs=5e-4)
    assert j["loss"] == pytest.approx(0.355, abs=5e-4)
    assert 0 < j["se_log_gain"] < 0.05 and 0 < j["se_log_loss"] < 0.05
    text = run("fit", *HARRIS_ARGS).stdout
    assert f"lnL         {j['loglik']:.6f}" in text and "converged" in text
    assert "pi1" in text and "95% CI" in text


def test_efm_main_job_drops_reference_genome_and_tests_resistance_genes():
    fails("fit", *EFM_ARGS, fragments=["Enterococcus_faecium_Aus0004_v1.prokka",
                                       "--drop-extra-taxa", str(EFM[1])])
    j = run_json("test", *EFM_ARGS, "--drop-extra-taxa", "--families", EFM_RESISTANCE,
                 "--alternative", "two-sided")
    assert j["dropped_taxa"] == ["Enterococcus_faecium_Aus0004_v1.prokka"]
    assert (j["n_families"], j["n_taxa"], j["n_dropped_families"]) == (5357, 761, 86)
    assert sorted(j["listed_absent_skipped"]) == ["ermC", "vatD"] and j["n_listed"] == 42
    assert j["loglik"] == pytest.approx(-477505.280, abs=1e-3) and j["df"] == 1
    assert j["delta_loglik"] > 0 and j["p_value"] == pytest.approx(
        stats.chi2.sf(2 * j["delta_loglik"], 1), rel=1e-6, abs=1e-300)
    m = j["loss_multiplier"]
    assert m["ci95"][0] < m["estimate"] < m["ci95"][1]
    text = run("test", *EFM_ARGS, "--drop-extra-taxa", "--families", EFM_RESISTANCE).stdout
    assert "dropped   1 table genome(s) not in the tree: Enterococcus_faecium_Aus0004_v1" in text
    assert "loss multiplier of the listed families" in text and "chi-bar-square" in text


@pytest.fixture(scope="module")
def retention_files(tmp_path_factory):
    """Simulated tree and table where families g0..g99 have a 3x lower loss."""
    d = tmp_path_factory.mktemp("sim")
    rng = np.random.default_rng(11)
    par, le, names = nm.random_tree(25, rng, 0.25)
    loss = np.where(np.arange(600) < 100, 1 / 3, 1.0)
    X = nm.simulate(par, le, 0.5, loss, 600, rng)
    (d / "tree.nwk").write_text(nm.newick(par, le, names))
    rows = ["Gene\t" + "\t".join(names[:25])]
    rows += [f"g{f}\t" + "\t".join(map(str, X[f])) for f in range(600)]
    (d / "pam.Rtab").write_text("\n".join(rows) + "\n")
    (d / "set.txt").write_text("# retained\n" + "\n".join(f"g{f}" for f in range(100)) + "\n\n")
    return d


def test_retention_test_on_simulated_files(retention_files):
    d = retention_files
    j = run_json("test", "--tree", d / "tree.nwk", "--pam", d / "pam.Rtab",
                 "--families", d / "set.txt")
    m = j["loss_multiplier"]
    assert m["ci95"][0] < 1 / 3 < m["ci95"][1] and m["ci95"][1] < 1
    assert j["one_sided"] and j["p_value"] < 1e-6 and j["n_listed"] == 100
    assert j["alt"]["loglik"] - j["null"]["loglik"] == pytest.approx(j["delta_loglik"])


def test_progress_goes_to_stderr(retention_files):
    d = retention_files
    p = run("fit", "--tree", d / "tree.nwk", "--pam", d / "pam.Rtab", "--json",
            "--progress", "always")
    assert "persiste: fit: iteration 1, lnL" in p.stderr
    assert json.loads(p.stdout)["converged"]
    assert run("fit", "--tree", d / "tree.nwk", "--pam", d / "pam.Rtab").stderr == ""


@pytest.fixture
def zero_branch(tmp_path):
    (tmp_path / "t.nwk").write_text("((a:0,b:0):0.5,(c:0.4,d:0.6):0.3);")
    (tmp_path / "p.tsv").write_text("Gene\ta\tb\tc\td\nokA\t1\t1\t0\t1\nbadB\t1\t0\t1\t1\n"
                                    "okC\t0\t0\t1\t0\nbadD\t0\t1\t0\t0\nokE\t1\t1\t1\t0\n")
    return ["--tree", tmp_path / "t.nwk", "--pam", tmp_path / "p.tsv"]


def test_impossible_families_are_reported(zero_branch):
    j = run_json("fit", *zero_branch)
    assert j["n_impossible"] == 2 and j["impossible_families"] == ["badB", "badD"]
    assert any("--min-branch-length" in r for r in j["remedies"]) and j["n_families"] == 5
    text = run("fit", *zero_branch).stdout
    assert "IMPOSSIBLE 2 families" in text and "badB, badD" in text and "remedies" in text
    j = run_json("loglik", *zero_branch, "--gain", 1, "--loss", 1)
    assert j["loglik"] is None and j["impossible_families"] == ["badB", "badD"]
    j = run_json("fit", *zero_branch, "--min-branch-length", 1e-4)
    assert j["n_impossible"] == 0 and j["remedies"] == []


def test_console_script_and_version():
    assert run("--version").stdout.startswith("persiste 0.1")
    script = shutil.which("persiste", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("no console script beside this interpreter (meson build tree)")
    p = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("persiste 0.1")


def test_bad_input_exits_2_with_one_line(tmp_path, retention_files):
    d = retention_files
    sim = ["--tree", d / "tree.nwk", "--pam", d / "pam.Rtab"]
    (tmp_path / "bad.nwk").write_text("((a:1,b:1);")
    (tmp_path / "unknown.txt").write_text("g1\n# comment\nnot_a_gene\n")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    (tmp_path / "dup.Rtab").write_text("Gene\tt0\tt0\ng1\t1\t0\n")
    fails(fragments=["required"])
    fails("fit", fragments=["--tree", "--pam"])
    fails("frobnicate", *sim, fragments=["frobnicate"])
    fails("fit", "--tree", tmp_path / "missing.nwk", "--pam", d / "pam.Rtab",
          fragments=["missing.nwk", "cannot open"])
    fails("fit", "--tree", tmp_path / "bad.nwk", "--pam", d / "pam.Rtab",
          fragments=["bad.nwk", "line 1, column"])
    fails("fit", "--tree", d / "tree.nwk", "--pam", tmp_path / "missing.Rtab",
          fragments=["missing.Rtab"])
    fails("fit", "--tree", d / "tree.nwk", "--pam", tmp_path / "dup.Rtab", fragments=["t0"])
    fails("fit", *sim, "--condition", "sometimes", fragments=["--condition", "sometimes"])
    fails("loglik", *sim, "--gain", -1, "--loss", 1, fragments=["--gain", "positive"])
    fails("loglik", *sim, "--gain", "nan", "--loss", 1, fragments=["--gain"])
    fails("loglik", *sim, "--gain", 1, "--loss", 1, "--per-family", tmp_path,
          fragments=["--per-family", str(tmp_path)])
    fails("fit", *sim, "--min-branch-length", -1, fragments=["--min-branch-length"])
    fails("fit", *sim, "--threads", 1000, fragments=["thread"])
    fails("test", *sim, "--families", tmp_path / "unknown.txt",
          fragments=["unknown.txt", "line 3", "not_a_gene"])
    fails("test", *sim, "--families", tmp_path / "empty.txt", fragments=["empty.txt"])
    fails("test", *sim, "--families", tmp_path / "nope.txt", fragments=["nope.txt"])
    fails("test", *sim, "--families", d / "pam.Rtab", fragments=["Gene"])
