#!/usr/bin/python3
"""Benchmark data, from fixed seeds. Part of benchmarks/run.sh.

    simulate.py DIR NxF [NxF ...] [--gzip NxF]
        For each size: DIR/NxF.nwk (coalescent tree of N genomes), DIR/NxF.Rtab
        (F families simulated under the gain/loss model, each present in at
        least one genome) and DIR/NxF.rates. Existing files are kept.
    simulate.py --real NAME TREE RTAB GAIN LOSS DIR
        DIR/NAME.rates for a bundled data set, and DIR/NAME-unique.Rtab: the
        same table with every repeated column (pattern) changed by flipping
        cells until it is unique.

Tree: Kingman coalescent (random pairs joined at exponential waiting times),
scaled to root height 1: short tip branches, long deep ones, as in bacterial
trees. Families: loss rate mu_f = 2 exp(0.8 z), frequency pi_f ~ Beta(0.6, 0.6)
clipped to [0.02, 0.98], gain pi/(1-pi) mu; stationary root; families absent
everywhere are redrawn. This mixes core-like, rare and mobile families.
RATES: raw float64, six arrays of F (log gain, log loss) for three rate sets:
global (gain 1, loss 2), two-class (a random 10% of families with loss x4) and
per-family (the simulating rates).
"""
import argparse
import gzip
import shutil
import sys
from pathlib import Path

import numpy as np

import numpy_pruning as nps

GLOBAL_GAIN, GLOBAL_LOSS = 1.0, 2.0


def coalescent(n, rng):
    """parent, length: tips 0..n-1, every parent numbered after its children."""
    parent = np.full(2 * n - 1, -1)
    height = np.zeros(2 * n - 1)
    live, t = list(range(n)), 0.0
    for node in range(n, 2 * n - 1):
        k = len(live)
        t += rng.exponential(2.0 / (k * (k - 1)))
        for _ in range(2):
            i = rng.integers(len(live))
            live[i], live[-1] = live[-1], live[i]
            parent[live.pop()] = node
        height[node] = t
        live.append(node)
    height /= t
    length = np.where(parent >= 0, height[parent] - height, 0.0)
    return parent, length


def newick(parent, length, names):
    kids = [[] for _ in parent]
    for v, p in enumerate(parent[:-1]):
        kids[p].append(v)
    out, todo = [], [(len(parent) - 1, 0)]         # iterative: (node, step)
    while todo:
        v, step = todo.pop()
        if not kids[v]:
            out.append(f"{names[v]}:{length[v]!r}")
        elif step < len(kids[v]):
            out.append("(" if step == 0 else ",")
            todo += [(v, step + 1), (kids[v][step], 0)]
        else:
            out.append(")" if v == len(parent) - 1 else f"):{length[v]!r}")
    return "".join(out) + ";\n"


def simulate(parent, length, gain, loss, rng, chunk=4096):
    """states [genome, family]; families absent everywhere are redrawn."""
    n = (len(parent) + 1) // 2
    out = np.empty((n, len(gain)), dtype=np.uint8)
    todo = np.arange(len(gain))
    while todo.size:
        f = todo[:chunk]
        g, l = gain[f], loss[f]
        s = g + l
        x = np.empty((len(parent), f.size), dtype=bool)
        x[-1] = rng.random(f.size) < g / s
        for v in range(len(parent) - 2, -1, -1):    # parents before children
            em = -np.expm1(-s * length[v])
            u = rng.random(f.size)
            x[v] = np.where(x[parent[v]], u >= l / s * em, u < g / s * em)
        ok = x[:n].any(axis=0)
        out[:, f[ok]] = x[:n, ok]
        todo = np.concatenate([todo[chunk:], f[~ok]])
    return out


def write_rtab(path, genomes, families, X):
    """X [genome, family] of 0/1 as a Roary .Rtab (one row per family)."""
    with open(path, "wb") as out:
        out.write(("Gene\t" + "\t".join(genomes) + "\n").encode())
        for i in range(0, X.shape[1], 2048):
            rows = X[:, i:i + 2048].T
            cells = np.full((rows.shape[0], 2 * rows.shape[1]), ord("\t"), dtype=np.uint8)
            cells[:, 0::2] = rows + ord("0")
            cells[:, -1] = ord("\n")
            out.write(b"".join(families[i + k].encode() + b"\t" + r.tobytes()
                               for k, r in enumerate(cells)))


def write_rates(path, per_family_gain, per_family_loss, gain, loss, rng):
    F = len(per_family_gain)
    slow = rng.random(F) < 0.1
    sets = [np.full(F, gain), np.full(F, loss),
            np.full(F, gain), np.where(slow, 4 * loss, loss),
            per_family_gain, per_family_loss]
    np.log(np.array(sets)).tofile(path)


def simulated(directory, size, seed):
    n, F = map(int, size.split("x"))
    paths = [directory / f"{size}{ext}" for ext in (".nwk", ".Rtab", ".rates")]
    if all(p.exists() for p in paths):
        return
    parent, length = coalescent(n, np.random.default_rng([seed, n]))  # one tree per N
    rng = np.random.default_rng([seed, n, F])
    loss = 2 * np.exp(0.8 * rng.standard_normal(F))
    pi = np.clip(rng.beta(0.6, 0.6, F), 0.02, 0.98)
    gain = pi / (1 - pi) * loss
    genomes = [f"g{i + 1}" for i in range(n)]
    X = simulate(parent, length, gain, loss, rng)
    write_rtab(paths[1], genomes, [f"fam{i + 1}" for i in range(F)], X)
    write_rates(paths[2], gain, loss, GLOBAL_GAIN, GLOBAL_LOSS, rng)
    paths[0].write_text(newick(parent, length, genomes + [""] * (n - 1)))


def real(name, tree, rtab, gain, loss, directory, seed):
    """Rates for a bundled data set and a copy whose columns are all distinct."""
    rng = np.random.default_rng(seed)
    parent, length, tip_rows, X = nps.bind(tree, rtab)
    genomes, families, _ = nps.read_rtab(rtab)
    F = X.shape[1]
    jitter = np.exp(0.3 * rng.standard_normal((2, F)))
    write_rates(directory / f"{name}.rates", gain * jitter[0], loss * jitter[1], gain, loss, rng)
    rows = np.array(sorted(tip_rows.values()))
    seen = set()
    for f in range(F):
        col = X[rows, f]
        while col.tobytes() in seen:
            col[rng.integers(len(rows))] ^= 1
        seen.add(col.tobytes())
        X[rows, f] = col
    write_rtab(directory / f"{name}-unique.Rtab", genomes, families, X)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("args", nargs="+")
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--gzip", action="append", default=[], help="also write NxF.Rtab.gz")
    ap.add_argument("--seed", type=int, default=20240611)
    a = ap.parse_args()
    if a.real:
        name, tree, rtab, gain, loss, directory = a.args
        real(name, tree, rtab, float(gain), float(loss), Path(directory), a.seed)
        return 0
    directory = Path(a.args[0])
    directory.mkdir(parents=True, exist_ok=True)
    for size in a.args[1:]:
        simulated(directory, size, a.seed)
    for size in a.gzip:
        gz = directory / f"{size}.Rtab.gz"
        if not gz.exists():
            with open(directory / f"{size}.Rtab", "rb") as src, gzip.open(f"{gz}.tmp", "wb", 6) as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            Path(f"{gz}.tmp").rename(gz)
    return 0


if __name__ == "__main__":
    sys.exit(main())
