#!/usr/bin/python3
"""Benchmark: what each model option costs, side by side in one run.

    /usr/bin/python3 benchmarks/python/bench_model.py [--threads 2] [--repeats 5]
                                                       [--simulated 1324x25420]

Run on purpose, not in the tests (needs the persiste package importable:
dev/setup installs it into .venv, so run it with .venv/bin/python). For the
bundled E. faecium clade (761 genomes) and a simulated table, times the
median of `repeats` lnL calls and gradient calls (with the model's own
derivatives) at one global rate pair, for the plain model on its fast paths,
the plain model on the general path (a category multiplier of 1 + 2^-52
sends it there), and each option on the general path. Prints a table with
the ratios to the plain model on the general path (the issue's "same path")
and to the fast paths.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import persiste

ROOT = Path(__file__).resolve().parents[2]


def timed(fn, repeats):
    fn()                                   # warm-up (workspace, site repeats)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def models(tree):
    n, nt = tree.n_nodes, tree.n_tips
    rng = np.random.default_rng(1)
    clade = np.zeros(n)
    clade[: n // 3] = 1
    lineage = (1 + clade, 1 + 2 * clade)
    near_one = ([1.0], [1.0 + 2.0 ** -52])
    return [
        ("plain, fast paths", dict()),
        ("plain, general path", dict(categories=near_one)),
        ("error, global", dict(error_absent=0.02, error_present=0.01)),
        ("error, per genome", dict(error_absent=rng.uniform(0, 0.05, nt),
                                   error_present=rng.uniform(0, 0.02, nt))),
        ("lineage multipliers", dict(lineage=lineage)),
        ("gamma, 4 categories", dict(gamma_alpha=0.5, n_categories=4)),
        ("error + gamma 4 + lineage", dict(error_absent=0.02, error_present=0.01,
                                           gamma_alpha=0.5, n_categories=4,
                                           lineage=lineage)),
        ("variable, error", dict(condition="variable", error_absent=0.02,
                                 error_present=0.01)),
        ("min_present 2, error", dict(min_present=2, error_absent=0.02,
                                      error_present=0.01)),
    ]


def bench(label, tree, data, threads, repeats, lg, ll):
    rows = []
    for name, kw in models(tree):
        model = persiste.Model(**kw)
        with persiste.Engine(tree, data, model=model, n_threads=threads) as e:
            t_lnl = timed(lambda: e.loglik(lg, ll), repeats)
            t_grad = timed(lambda: e.gradient(lg, ll, model_grad=True, branch=True), repeats)
        rows.append((name, t_lnl, t_grad))
    base_fast, base_gen = rows[0], rows[1]
    print(f"\n{label}: {data.n_families} families x {data.n_taxa} genomes, "
          f"{threads} thread(s), median of {repeats}")
    print(f"{'model':<28}{'lnL ms':>9}{'x plain':>9}{'x fast':>8}"
          f"{'grad ms':>10}{'x plain':>9}{'x fast':>8}")
    for name, a, b in rows:
        print(f"{name:<28}{a * 1e3:9.2f}{a / base_gen[1]:9.2f}{a / base_fast[1]:8.1f}"
              f"{b * 1e3:10.2f}{b / base_gen[2]:9.2f}{b / base_fast[2]:8.1f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--simulated", default="1324x25420",
                    help="GENOMESxFAMILIES of a simulated table ('' to skip)")
    args = ap.parse_args()
    d = ROOT / "data" / "efm-clade-powerbacgwas"
    tree = persiste.Tree.read(str(d / "efm_clade.tree.nwk"))
    data = persiste.Data.read(tree, str(d / "efm_clade.gene_presence_absence.Rtab.gz"),
                              drop_extra_taxa=True, drop_absent_families=True)
    bench("E. faecium clade (bundled)", tree, data, args.threads, args.repeats,
          np.log(32.0), np.log(27.0))
    if args.simulated:
        g, f = map(int, args.simulated.split("x"))
        rng = np.random.default_rng(7)
        sys.path.insert(0, str(ROOT / "bindings" / "python" / "tests"))
        import npmodel as nm
        parent, length, names = nm.random_tree(g, rng, mean_length=0.05)
        tree = persiste.Tree.from_newick(nm.newick(parent, length, names))
        states = persiste.simulate(persiste.Model(), tree, f, 1.0, 2.0, seed=3)
        data = persiste.Data.from_matrix(tree, states, taxon_names="tree")
        bench(f"simulated {g} x {f}", tree, data, args.threads, args.repeats,
              0.0, np.log(2.0))


if __name__ == "__main__":
    main()
