"""Figures of a reconstruction (matplotlib is imported here, only when a
figure is asked for)."""
import numpy as np

from ._core import node_table

MAX_TIP_LABELS = 300   # more tips: no labels (they would overlap)


def _layout(tree):
    """x: distance from the root of each node; y: tips 0..n-1 in tree order,
    internal nodes at the mean of their children."""
    parent, length = tree.parents, tree.branch_lengths
    n, nt = tree.n_nodes, tree.n_tips
    x = np.zeros(n)
    for v in range(n - 2, -1, -1):                 # parents before children
        x[v] = x[parent[v]] + length[v]
    y = np.zeros(n)
    y[:nt] = np.arange(nt)
    total, count = np.zeros(n), np.zeros(n)
    for v in range(n - 1):                         # children before parents
        if v >= nt:
            y[v] = total[v] / count[v]
        total[parent[v]] += y[v]
        count[parent[v]] += 1
    if n > nt:
        y[n - 1] = total[n - 1] / count[n - 1]
    return x, y


def plot_reconstruction(rec, path_stem, formats=("svg", "png"), group=None):
    """Writes path_stem.<format>: two panels, the tree with each branch
    coloured and sized by its expected gains (left) and losses (right),
    summed over the families (or over one group's). Each branch is one line
    with id 'branch-<node>' in the SVG. Returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    tree = rec.tree
    parent = tree.parents
    n, nt = tree.n_nodes, tree.n_tips
    x, y = _layout(tree)
    labels = node_table(tree)["label"]
    height = 0.16 * nt + 1.5 if nt <= MAX_TIP_LABELS else 12.0 + 0.01 * nt
    height = max(4.0, min(40.0, height))
    gi = None if group is None else rec.groups.index(group)
    gains = rec.sum_gains.sum(axis=0) if gi is None else rec.sum_gains[gi]
    losses = rec.sum_losses.sum(axis=0) if gi is None else rec.sum_losses[gi]
    what_of = "" if group is None else f" ({group})"
    fig, axes = plt.subplots(1, 2, figsize=(14, height), sharey=True)
    for ax, what, values, cmap in ((axes[0], "gains", gains, "Reds"),
                                   (axes[1], "losses", losses, "Blues")):
        top = float(values[:-1].max()) if n > 1 and values[:-1].max() > 0 else 1.0
        norm = colors.Normalize(vmin=0.0, vmax=top)
        cmap_ = plt.get_cmap(cmap)
        for v in range(n - 1):
            p = parent[v]
            c = cmap_(0.15 + 0.85 * norm(values[v]))
            lw = 0.6 + 3.4 * norm(values[v])
            # one path per branch: the vertical connector, then the branch
            ax.plot([x[p], x[p], x[v]], [y[p], y[v], y[v]], color=c, lw=lw,
                    solid_capstyle="butt", gid=f"branch-{v}")
        if nt <= MAX_TIP_LABELS:
            for t in range(nt):
                ax.text(x[t], y[t], " " + labels[t], va="center", fontsize=6)
        ax.set_title(f"expected {what}{what_of} per branch (total {values.sum():.1f})")
        ax.set_xlabel("distance from the root")
        ax.set_yticks([])
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap_), ax=ax, shrink=0.5,
                     label=f"expected {what}")
    if nt > MAX_TIP_LABELS:
        fig.suptitle(f"{nt} tips (labels omitted above {MAX_TIP_LABELS})")
    fig.tight_layout()
    paths = []
    for fmt in formats:
        path = f"{path_stem}.{fmt}"
        fig.savefig(path, dpi=150 if fmt == "png" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def plot_groups(rec, path):
    """Expected gains against expected losses per group, per family of the
    group (groups.png)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    per = np.asarray([rec.group_sizes.get(g, 1) for g in rec.groups], dtype=float)
    gains = rec.sum_gains.sum(axis=1) / per
    losses = rec.sum_losses.sum(axis=1) / per
    ax.scatter(gains, losses)
    for g, a, b in zip(rec.groups, gains, losses):
        ax.annotate(str(g), (a, b), fontsize=7)
    lim = max(gains.max(), losses.max()) * 1.1 if len(gains) else 1
    ax.plot([0, lim], [0, lim], color="grey", lw=0.5)
    ax.set_xlabel("expected gains per family")
    ax.set_ylabel("expected losses per family")
    ax.set_title("gains and losses by group")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
