#!/usr/bin/python3
"""Benchmark: null fit and retention test with persiste against a plain numpy
pruning with finite-difference gradients (what the upstream project does).

    /usr/bin/python3 benchmarks/python/bench_fit.py [--sizes 50x500,100x1000,1324x25420]
                                                    [--threads N] [--numpy-max-families N]

Run on purpose, not in the tests. Needs the persiste package importable
(installed, or PYTHONPATH=<meson build>/bindings/python). Every data set is
simulated with a fixed seed (random tree, then presence/absence under the
model conditioned on presence, gain 1, loss 2) and written as Newick + Rtab:
persiste timings include reading those files; numpy timings are the fits
alone. The numpy model and simulator are bindings/python/tests/npmodel.py.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import optimize

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python" / "tests"))
import npmodel as nm  # noqa: E402

import persiste  # noqa: E402


def write_files(directory, par, le, names, X):
    n_tips = X.shape[1]
    tree, pam = directory / "tree.nwk", directory / "pam.Rtab"
    tree.write_text(nm.newick(par, le, names))
    cells = np.full((X.shape[0], 2 * n_tips), ord("\t"), dtype=np.uint8)
    cells[:, 0::2] = X + ord("0")           # "d\td\t...d\n"
    cells[:, -1] = ord("\n")
    with open(pam, "wb") as f:
        f.write(("Gene\t" + "\t".join(names[:n_tips]) + "\n").encode())
        for i in range(0, X.shape[0], 4096):
            f.write(b"".join(b"g%d\t" % (i + k) + r.tobytes()
                             for k, r in enumerate(cells[i:i + 4096])))
    return tree, pam


def numpy_loglik(par, le, X, log_gain, log_loss):
    """Total present-conditioned log-likelihood; the conditioning is computed
    once per distinct rate pair."""
    gain, loss = np.exp(log_gain), np.exp(log_loss)
    ll = nm.pruning(par, le, X, gain, loss)
    pairs, index = np.unique(np.column_stack([gain, loss]), axis=0, return_inverse=True)
    zeros = np.zeros((len(pairs), X.shape[1]), dtype=X.dtype)
    p0 = np.exp(nm.pruning(par, le, zeros, pairs[:, 0], pairs[:, 1]))
    return float((ll - np.log1p(-p0[index.ravel()])).sum())


def numpy_fit(par, le, X, loss_columns, start):
    """L-BFGS-B on log rates (log loss = Z b), gradient by scipy's finite
    differences. Returns (lnL, function evaluations)."""
    n = X.shape[0]
    Z = np.column_stack([np.ones(n)] + [c.astype(float) for c in loss_columns])
    count = [0]

    def f(coef):
        count[0] += 1
        return -numpy_loglik(par, le, X, np.full(n, coef[0]), Z @ coef[1:]) / n
    res = optimize.minimize(f, start, method="L-BFGS-B")
    return -res.fun * n, count[0]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench(n_tips, n_families, args):
    rng = np.random.default_rng(20240 + n_tips)
    par, le, names = nm.random_tree(n_tips, rng, mean_length=0.05)
    X = nm.simulate(par, le, 1.0, 2.0, n_families, rng)
    in_set = rng.random(n_families) < 0.1
    with tempfile.TemporaryDirectory() as tmp:
        tree_file, pam_file = write_files(Path(tmp), par, le, names, X)

        def load():
            tree = persiste.Tree.read(tree_file)
            data = persiste.Data.read(tree, pam_file)
            return persiste.Engine(tree, data, n_threads=args.threads)
        t_null, null = timed(lambda: load().fit())
        t_test, test = timed(lambda: load().retention_test(in_set))
        engine = load()
        one_ll = min(timed(lambda: engine.loglik(0.0, 0.5))[0] for _ in range(5))
        one_gr = min(timed(lambda: engine.gradient(0.0, 0.5))[0] for _ in range(5))
        lg, ll = np.zeros(n_families), np.where(in_set, 0.2, 0.5)
        two_gr = min(timed(lambda: engine.gradient(lg, ll))[0] for _ in range(5))
    size = f"{n_tips}x{n_families}"
    print(f"# {size}: one evaluation: loglik {one_ll * 1e3:.2f} ms, gradient "
          f"{one_gr * 1e3:.2f} ms (global rates), {two_gr * 1e3:.2f} ms (two rate pairs)",
          file=sys.stderr)
    nan = (float("nan"), (float("nan"), 0))
    start = np.array([null["log_gain"], null["log_loss"]]) - 0.5
    if n_families <= args.numpy_max_families:
        print(f"# {size}: numpy fits ...", file=sys.stderr, flush=True)
        t_np0, (ll_np0, e_np0) = timed(lambda: numpy_fit(par, le, X, [], start))
        t_np1, (ll_np1, e_np1) = timed(lambda: numpy_fit(par, le, X, [in_set],
                                                         np.append(start, 0.0)))
    else:
        (t_np0, (ll_np0, e_np0)), (t_np1, (ll_np1, e_np1)) = nan, nan
    return [(size, "null fit", t_null, null.n_evaluations, t_np0, e_np0,
             null.loglik - ll_np0),
            (size, "retention test", t_test, test.null.n_evaluations + test.alt.n_evaluations,
             t_np0 + t_np1, e_np0 + e_np1, test.alt.loglik - ll_np1)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="50x500,100x1000,1324x25420",
                   help="comma-separated TIPSxFAMILIES")
    p.add_argument("--threads", type=int, default=1, help="persiste worker threads")
    p.add_argument("--numpy-max-families", type=int, default=10**9,
                   help="skip the numpy baseline above this many families")
    args = p.parse_args()
    print(f"persiste {persiste.version()}, threads {args.threads}", file=sys.stderr)
    rows = []
    for size in args.sizes.split(","):
        n_tips, n_families = map(int, size.split("x"))
        rows += bench(n_tips, n_families, args)
    head = ("size", "task", "persiste s", "evals", "numpy+FD s", "evals", "ratio", "lnL diff")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for size, task, tp, ep, tn, en, diff in rows:
        print(f"| {size} | {task} | {tp:.3f} | {ep} | {tn:.2f} | {en} | {tn / tp:.0f}x "
              f"| {diff:.2g} |")


if __name__ == "__main__":
    main()
