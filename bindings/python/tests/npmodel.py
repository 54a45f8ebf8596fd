"""Independent oracles for the tests: a plain numpy pruning (probabilities,
per-node rescaling), a simulator of presence/absence under the model, and a
random tree generator. Trees are (parent, length, names) with the tips first
and every child before its parent (root last); tips are named 't0', 't1', ...,
internal nodes ''."""
import numpy as np


def random_tree(n_tips, rng, mean_length=0.2):
    """Random binary topology (random joins) with exponential branch lengths."""
    parent = np.full(2 * n_tips - 1, -1)
    alive = list(range(n_tips))
    for node in range(n_tips, 2 * n_tips - 1):
        a, b = rng.choice(len(alive), 2, replace=False)
        parent[alive[a]] = parent[alive[b]] = node
        alive = [x for i, x in enumerate(alive) if i not in (a, b)] + [node]
    length = rng.exponential(mean_length, 2 * n_tips - 1)
    length[-1] = 0.0
    return parent, length, [f"t{i}" for i in range(n_tips)] + [""] * (n_tips - 1)


def newick(parent, length, names):
    kids = {}
    for i, p in enumerate(parent):
        kids.setdefault(p, []).append(i)

    def sub(v):
        head = names[v] if v not in kids else "(" + ",".join(sub(c) for c in kids[v]) + ")"
        return f"{head}:{length[v]!r}"
    return sub(len(parent) - 1).rsplit(":", 1)[0] + ";"


def transition(gain, loss, t):
    """P01, P10 for branch length t (arrays broadcast)."""
    s = gain + loss
    e = -np.expm1(-s * t)
    return gain / s * e, loss / s * e


def pruning(parent, length, states, gain, loss, root="stationary", root_freq=0.5):
    """Unconditioned per-family log-likelihood. states[f, tip]: 0, 1 or 2
    (unknown); gain, loss: scalars or per-family arrays."""
    F, n_tips = states.shape
    gain = np.broadcast_to(np.asarray(gain, float), (F,))
    loss = np.broadcast_to(np.asarray(loss, float), (F,))
    n = len(parent)
    L = np.ones((n, F, 2))
    L[:n_tips, :, 0] = states.T != 1
    L[:n_tips, :, 1] = states.T != 0
    logscale = np.zeros(F)

    def rescale(v):
        m = L[v].max(axis=1)
        m = np.where(m > 0, m, 1.0)
        L[v] /= m[:, None]
        logscale[:] += np.log(m)
    for v in range(n - 1):                      # children before parents
        if v >= n_tips:
            rescale(v)
        p01, p10 = transition(gain, loss, length[v])
        up0 = (1 - p01) * L[v, :, 0] + p01 * L[v, :, 1]
        up1 = p10 * L[v, :, 0] + (1 - p10) * L[v, :, 1]
        L[parent[v], :, 0] *= up0
        L[parent[v], :, 1] *= up1
    rescale(n - 1)
    pi1 = {"stationary": gain / (gain + loss), "fixed": np.full(F, root_freq),
           "absent": np.zeros(F)}[root]
    with np.errstate(divide="ignore"):
        return np.log((1 - pi1) * L[-1, :, 0] + pi1 * L[-1, :, 1]) + logscale


def loglik(parent, length, states, gain, loss, condition="present", **root):
    """Per-family log-likelihood divided by P(observable), as the reference
    programs do: 'none'; 'present', 1 - P(all known tips absent); 'variable',
    1 - P(all absent) - P(all present), over each family's known cells (its
    unknown cells stay unknown, as IQ-TREE's +ASC_MIS); -inf where no known
    cell can make the family observable."""
    ll = pruning(parent, length, states, gain, loss, **root)
    if condition == "none":
        return ll

    def p_all(state):
        const = np.where(states == 2, 2, state).astype(states.dtype)
        return np.exp(pruning(parent, length, const, gain, loss, **root))
    known = (states != 2).sum(axis=1)
    p_observable = 1 - p_all(0) - (p_all(1) if condition == "variable" else 0)
    p_observable = np.where(known >= (2 if condition == "variable" else 1), p_observable, 0)
    with np.errstate(divide="ignore"):
        return np.where(p_observable > 0, ll - np.log(p_observable), -np.inf)


def simulate(parent, length, gain, loss, n_families, rng, condition="present"):
    """States (n_families x n_tips) simulated with a stationary root, keeping
    only the families the conditioning can observe. gain/loss: scalars or
    per-family arrays (of length n_families)."""
    n_tips = int(np.sum(~np.isin(np.arange(len(parent)), parent)))
    gain = np.broadcast_to(np.asarray(gain, float), (n_families,))
    loss = np.broadcast_to(np.asarray(loss, float), (n_families,))
    out = np.empty((n_families, n_tips), dtype=np.uint8)
    todo = np.arange(n_families)
    while todo.size:
        g, l = gain[todo], loss[todo]
        x = np.empty((len(parent), todo.size), dtype=bool)
        x[-1] = rng.random(todo.size) < g / (g + l)
        for v in range(len(parent) - 2, -1, -1):    # parents before children
            p01, p10 = transition(g, l, length[v])
            up = x[parent[v]]
            x[v] = np.where(up, rng.random(todo.size) >= p10, rng.random(todo.size) < p01)
        tips = x[:n_tips].T
        ok = np.ones(todo.size, dtype=bool)
        if condition != "none":
            ok &= tips.any(axis=1)
        if condition == "variable":
            ok &= ~tips.all(axis=1)
        out[todo[ok]] = tips[ok]
        todo = todo[~ok]
    return out
