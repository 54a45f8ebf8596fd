#!/usr/bin/python3
"""Vectorised NumPy pruning (families along the vector axis, exact power-of-two
rescaling at every internal node), independent of persiste: its own Newick and
Rtab readers. Part of benchmarks/run.sh; also a module for simulate.py.

    /usr/bin/python3 benchmarks/numpy_pruning.py TREE RTAB RATES [--label L] [--budget S]

RATES: raw float64, six arrays of n_families (log gain, log loss) for the
global, two-class and per-family rate sets (written by simulate.py). Prints
one JSON line per rate set: median time of one evaluation (reading excluded)
and the total log-likelihood with conditioning none, stationary root.
"""
import argparse
import gzip
import json
import re
import statistics
import sys
import time

import numpy as np

RATE_SETS = ("global", "two-class", "per-family")


def read_newick(path):
    """(parent, length, names): nodes in pre-order (every parent before its
    children), root 0 with parent -1; names[v] is '' for unlabelled nodes."""
    text = open(path).read().strip()
    parent, length, names, stack, last, closed = [], [], [], [], -1, False
    for tok in re.findall(r"[(),;]|:[^,();]+|[^,():;]+", text):
        tok = tok.strip()
        if tok == ")":
            last, closed = stack.pop(), True
        elif tok.startswith(":"):
            length[last] = float(tok[1:])
        elif tok and tok not in ",;" and closed:
            names[last] = tok.strip("'")          # internal label
        elif tok == "(" or (tok and tok not in ",;"):
            parent.append(stack[-1] if stack else -1)
            length.append(0.0)
            names.append("" if tok == "(" else tok.strip("'"))
            last = len(parent) - 1
            if tok == "(":
                stack.append(last)
        if tok and tok in "(,;":
            closed = False
    return np.array(parent), np.array(length), names


def read_rtab(path):
    """(genome names, family names, states uint8 [genome, family])."""
    raw = (gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open)(path, "rb").read()
    lines = raw.rstrip(b"\n").split(b"\n")
    genomes = [g.decode() for g in lines[0].rstrip(b"\r").split(b"\t")[1:]]
    X = np.empty((len(lines) - 1, len(genomes)), dtype=np.uint8)
    families = []
    for i, line in enumerate(lines[1:]):
        name, cells = line.rstrip(b"\r").split(b"\t", 1)
        families.append(name.decode())
        if len(cells) == 2 * len(genomes) - 1:       # one character per cell
            X[i] = np.frombuffer(cells, dtype=np.uint8)[::2] - ord("0")
        else:
            X[i] = [int(c) for c in cells.split(b"\t")]
    return genomes, families, np.ascontiguousarray(X.T)


def bind(tree_path, rtab_path):
    """Tree arrays and the matrix rows in the tree's tip order (genomes of the
    table that are not tips are dropped)."""
    parent, length, names = read_newick(tree_path)
    genomes, families, X = read_rtab(rtab_path)
    row = {g: i for i, g in enumerate(genomes)}
    is_tip = np.ones(len(parent), dtype=bool)
    is_tip[parent[parent >= 0]] = False
    tip_rows = {v: row[names[v]] for v in np.flatnonzero(is_tip)}
    return parent, length, tip_rows, X


def pruning(parent, length, tip_rows, X, gain, loss):
    """Total log-likelihood (conditioning none, stationary root); gain/loss
    are arrays over families. Children are visited before parents by walking
    the pre-order backwards; only partials of open nodes are kept."""
    if np.all(gain == gain[0]) and np.all(loss == loss[0]):
        gain, loss = gain[0], loss[0]             # global rates: scalar matrices
    s = gain + loss
    p1, p0 = gain / s, loss / s
    live, logscale = {}, np.zeros(X.shape[1])
    for v in range(len(parent) - 1, -1, -1):
        if v in tip_rows:
            x = X[tip_rows[v]].astype(bool)
            L0, L1 = ~x * 1.0, x * 1.0
        else:
            L0, L1 = live.pop(v)
            m = np.maximum(L0, L1)
            e = np.frexp(m)[1]
            f = np.ldexp(1.0, -e)
            L0 *= f
            L1 *= f
            logscale += e
        if v == 0:
            break
        em = -np.expm1(-s * length[v])
        d = L1 - L0
        up0 = L0 + p1 * em * d
        up1 = L1 - p0 * em * d
        if parent[v] in live:
            P0, P1 = live[parent[v]]
            P0 *= up0
            P1 *= up1
        else:
            live[parent[v]] = (up0, up1)
    lnl = np.log(p0 * L0 + p1 * L1) + logscale * np.log(2.0)
    return float(np.sum(lnl))


def read_rates(path, n_families):
    r = np.fromfile(path, dtype=np.float64).reshape(6, n_families)
    return {k: (np.exp(r[2 * i]), np.exp(r[2 * i + 1])) for i, k in enumerate(RATE_SETS)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree")
    ap.add_argument("rtab")
    ap.add_argument("rates")
    ap.add_argument("--label", default="")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per rate set")
    a = ap.parse_args()
    parent, length, tip_rows, X = bind(a.tree, a.rtab)
    n_genomes, n_families = len(tip_rows), X.shape[1]
    patterns = len(np.unique(X[sorted(tip_rows.values())].T, axis=0))
    for task, (gain, loss) in read_rates(a.rates, n_families).items():
        times = []
        while not times or (sum(times) < a.budget and len(times) < 15) or len(times) < 2:
            t0 = time.perf_counter()
            lnl = pruning(parent, length, tip_rows, X, gain, loss)
            times.append(time.perf_counter() - t0)
            if times[0] > 3 * a.budget:       # one evaluation is all we can afford
                break
        print(json.dumps({"label": a.label, "genomes": n_genomes, "families": n_families,
                          "patterns": patterns, "impl": "numpy", "task": "lnL " + task,
                          "threads": 1, "median_s": statistics.median(times),
                          "reps": len(times), "lnL": lnl}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
