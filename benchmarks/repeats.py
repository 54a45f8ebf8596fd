#!/usr/bin/python3
"""Site repeats: how many distinct tip patterns lie below each internal node
of a tree, over the families of a table. Families with the same pattern below
a node share that node's partial, so the sum over nodes of the distinct
patterns is the work of a pruning that computes each once, against nodes x
families for the dense pruning the benchmark's floor counts.

    /usr/bin/python3 benchmarks/repeats.py TREE RTAB

Unknown cells count as a third state. The classes are built bottom-up as a
pruning with repeats would build them: a node's class of a family is the
pair of its children's classes, numbered in order of first appearance.
Prints a table by the number of tips below and the total fraction.
"""
import sys

import numpy as np

from numpy_pruning import bind


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    parent, _, tip_rows, X = bind(sys.argv[1], sys.argv[2])
    n_nodes, n_fam = len(parent), X.shape[1]
    children = [[] for _ in range(n_nodes)]
    for v in range(1, n_nodes):
        children[parent[v]].append(v)
    cls = [None] * n_nodes   # class of each family below v
    tips = np.zeros(n_nodes, dtype=np.int64)
    rows = []                # (tips below, distinct patterns) per internal node
    for v in reversed(range(n_nodes)):   # pre-order reversed: children first
        if not children[v]:
            cls[v] = X[tip_rows[v]].astype(np.int64)
            tips[v] = 1
            continue
        key = cls[children[v][0]]
        tips[v] = tips[children[v][0]]
        for c in children[v][1:]:
            # pair (key, class of c) -> one number, then renumbered densely
            key = key * (int(cls[c].max()) + 1) + cls[c]
            key = np.unique(key, return_inverse=True)[1].astype(np.int64)
            tips[v] += tips[c]
        cls[v] = key
        rows.append((tips[v], int(key.max()) + 1))
        for c in children[v]:
            cls[c] = None
    rows = np.array(rows)
    print(f"{len(rows)} internal nodes, {n_fam} families")
    print("| tips below | nodes | distinct patterns per node (mean) |")
    print("|---|---|---|")
    bounds = [2, 3, 6, 21, 101, 501, 2001, 10001, 10**9]
    for lo, hi in zip(bounds, bounds[1:]):
        m = (rows[:, 0] >= lo) & (rows[:, 0] < hi)
        if m.any():
            print(f"| {lo}-{hi - 1} | {m.sum()} | {rows[m, 1].mean():.1f} |")
    total = rows[:, 1].sum()
    print(f"distinct (node, pattern) pairs: {total} of {len(rows) * n_fam} "
          f"(node x family): {total / (len(rows) * n_fam):.4f}")


if __name__ == "__main__":
    main()
