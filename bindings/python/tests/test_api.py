"""The Pythonic API against independent oracles (numpy pruning, finite
differences, REFERENCE.md values) and its error paths."""
import os
import gc
import threading
import weakref

import numpy as np
import pytest

import npmodel as nm
import persiste
from conftest import EFM, EFM_REF, HARRIS, HARRIS_REF

CONDITIONS = ["none", "present", "variable"]
ROOTS = [{"root": "stationary"}, {"root": "fixed", "root_freq": 0.3}, {"root": "absent"}]


@pytest.fixture(scope="module")
def small():
    """10-tip random tree, 300 families with about 5% unknown cells."""
    rng = np.random.default_rng(7)
    par, le, names = nm.random_tree(10, rng)
    X = nm.simulate(par, le, 0.6, 1.1, 300, rng, condition="none")
    X[rng.random(X.shape) < 0.05] = 2
    tree = persiste.Tree.from_parents(par, le, names)
    return par, le, names[:10], X, tree, persiste.Data.from_matrix(tree, X, names[:10])


def clades(parent, labels, n_tips):
    """Node -> frozenset of the tip labels below it."""
    below = [set() for _ in parent]
    for v in range(len(parent)):
        if v < n_tips:
            below[v].add(labels[v])
        if parent[v] >= 0:
            below[parent[v]] |= below[v]
    return [frozenset(b) for b in below]


def test_version():
    assert persiste.version() == persiste.__version__


@pytest.mark.parametrize("source", ["parents", "newick"])
def test_tree_structure(small, source):
    par, le, names, _, _, _ = small
    node_names = names + [""] * (len(par) - len(names))
    tree = (persiste.Tree.from_parents(par, le, node_names) if source == "parents"
            else persiste.Tree.from_newick(nm.newick(par, le, node_names)))
    assert (tree.n_nodes, tree.n_tips) == (19, 10)
    assert tree.tip_names == names if source == "parents" else sorted(tree.tip_names) == sorted(names)
    mine = dict(zip(clades(par, names, 10), le))
    theirs = clades(tree.parents, tree.labels, 10)
    assert set(theirs) == set(mine)
    got = dict(zip(theirs, tree.branch_lengths))
    root = frozenset(names)
    assert all(got[c] == pytest.approx(mine[c], rel=1e-15) for c in mine if c != root)


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("root", ROOTS)
def test_loglik_matches_numpy_pruning(small, condition, root, rng):
    par, le, _, X, tree, data = small
    gain, loss = rng.uniform(0.2, 2.0, 300), rng.uniform(0.2, 2.0, 300)
    with persiste.Engine(tree, data, condition=condition, root_prior=root["root"],
                         root_freq=root.get("root_freq", 0.5)) as engine:
        got = engine.loglik(np.log(gain), np.log(loss))
        scalar = engine.loglik(np.log(0.7), np.log(1.3))
    want = nm.loglik(par, le, X, gain, loss, condition, **root)
    assert np.array_equal(np.isneginf(got), np.isneginf(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-11, atol=1e-12)
    want = nm.loglik(par, le, X, 0.7, 1.3, condition, **root)
    np.testing.assert_allclose(scalar[ok], want[ok], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_gradient_matches_finite_differences(small, condition, rng):
    par, le, names, X, tree, data = small
    lg, ll = rng.uniform(-1, 0.5, 300), rng.uniform(-1, 0.5, 300)
    with persiste.Engine(tree, data, condition=condition) as engine:
        g = engine.gradient(lg, ll)
    ok = np.isfinite(g.loglik)
    h = 1e-5

    def f(a, b):
        return nm.loglik(par, le, X[ok], np.exp(a[ok]), np.exp(b[ok]), condition)
    dg = (f(lg + h, ll) - f(lg - h, ll)) / (2 * h)
    dl = (f(lg, ll + h) - f(lg, ll - h)) / (2 * h)
    np.testing.assert_allclose(g.d_log_gain[ok], dg, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.d_log_loss[ok], dl, rtol=1e-6, atol=1e-8)
    assert np.all(g.d_log_gain[~ok] == 0) and np.all(g.d_log_loss[~ok] == 0)


def test_branch_gradient_matches_finite_differences(small, rng):
    par, le, names, X, tree, data = small
    weight = rng.uniform(0, 2, 300)
    with persiste.Engine(tree, data) as engine:
        g = engine.gradient(np.log(0.6), np.log(1.1), weight=weight, branch=True)
    mine = clades(par, names, 10)
    theirs = clades(tree.parents, tree.labels, 10)
    h, ok = 1e-6, np.isfinite(g.loglik)     # impossible families are left out
    for v in range(len(par) - 1):
        up, down = le.copy(), le.copy()
        up[v] += h
        down[v] -= h
        diff = nm.loglik(par, up, X[ok], 0.6, 1.1) - nm.loglik(par, down, X[ok], 0.6, 1.1)
        fd = weight[ok] @ diff / (2 * h)
        assert g.d_branch[theirs.index(mine[v])] == pytest.approx(fd, rel=1e-6, abs=1e-7)
    assert g.d_branch[-1] == 0


def test_matrix_layouts_and_names(small):
    par, le, names, X, tree, data = small
    ref = persiste.Engine(tree, data).loglik(-0.5, 0.1)
    perm = np.random.default_rng(3).permutation(10)
    floats = X.astype(float)
    floats[X == 2] = np.nan
    variants = [np.asfortranarray(X), X.astype(np.int64), floats,
                np.ascontiguousarray(X[:, perm]), X.T.copy().T]
    for i, states in enumerate(variants):
        taxa = [names[j] for j in perm] if i == 3 else names
        d = persiste.Data.from_matrix(tree, states, taxa)
        np.testing.assert_array_equal(persiste.Engine(tree, d).loglik(-0.5, 0.1), ref)
    strided = persiste.Data.from_matrix(tree, X[::3], names)
    np.testing.assert_array_equal(persiste.Engine(tree, strided).loglik(-0.5, 0.1), ref[::3])
    assert data.family_names[:3] == ["1", "2", "3"]
    tips = tree.tip_names
    for f in (0, 17, 299):
        np.testing.assert_array_equal(data.states(f), [X[f, names.index(t)] for t in tips])
    named = persiste.Data.from_matrix(tree, X[:2], names, family_names=["geneA", "geneB"])
    assert named.family_names == ["geneA", "geneB"]


def test_dropped_taxa_and_families():
    tree = persiste.Tree.from_newick("((a:1,b:1):1,c:2);")
    X = np.array([[1, 0, 0, 1], [0, 0, 0, 1], [1, 1, 1, 0]])
    d = persiste.Data.from_matrix(tree, X, ["a", "b", "c", "x"], ["f1", "f2", "f3"],
                                  drop_extra_taxa=True)
    assert d.dropped_taxa == ["x"] and d.n_taxa == 3 and d.n_all_absent == 1
    d = persiste.Data.from_matrix(tree, X, ["a", "b", "c", "x"], ["f1", "f2", "f3"],
                                  drop_extra_taxa=True, drop_absent_families=True)
    assert d.dropped_families == ["f2"] and d.family_names == ["f1", "f3"]
    d = persiste.Data.from_matrix(tree, X[:, :2], ["a", "b"], missing_as_unknown=True)
    np.testing.assert_array_equal(d.states(0), [1, 0, 2])


@pytest.mark.parametrize("condition", CONDITIONS)
def test_harris_reference(condition):
    total, first = HARRIS_REF[condition]
    tree = persiste.Tree.read(HARRIS[0])
    data = persiste.Data.read(tree, HARRIS[1])
    with persiste.Engine(tree, data, condition=condition) as engine:
        ll = engine.loglik(np.log(0.14), np.log(0.35))
    assert data.n_families == 20822 and data.n_taxa == 30
    assert ll.sum() == pytest.approx(total, rel=1e-12)
    np.testing.assert_allclose(ll[:5], first, rtol=1e-11)


@pytest.fixture(scope="module")
def efm():
    tree = persiste.Tree.read(EFM[0])
    return tree, persiste.Data.read(tree, EFM[1], drop_extra_taxa=True,
                                    drop_absent_families=True)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_efm_reference(efm, condition):
    tree, data = efm
    assert data.dropped_taxa == ["Enterococcus_faecium_Aus0004_v1.prokka"]
    assert (data.n_families, data.n_taxa, len(data.dropped_families)) == (5357, 761, 86)
    with persiste.Engine(tree, data, condition=condition) as engine:
        ll = engine.loglik(np.log(32.0), np.log(27.0))
    assert ll.sum() == pytest.approx(EFM_REF[condition], rel=1e-12)
    if condition != "variable":
        first = {"none": -14.402561684227566, "present": -14.402561658374545}[condition]
        np.testing.assert_allclose(ll[:5], first, rtol=1e-12)


def test_impossible_families_and_min_branch_length():
    tree = persiste.Tree.from_newick("((a:0,b:0):1,c:2);")
    X = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]])
    data = persiste.Data.from_matrix(tree, X, "tree")
    with persiste.Engine(tree, data) as engine:
        assert list(engine.impossible_families()) == [0, 2]
        assert engine.context.loglik(engine.model, tree, data, 0.0, 0.0)[1] == 2
    with persiste.Engine(tree, data, min_branch_length=1e-3) as engine:
        assert np.all(np.isfinite(engine.loglik(0.0, 0.0)))


def test_threads_share_one_engine(small, rng):
    """One engine from several Python threads (the GIL is released in C):
    results equal the serial ones and no BusyError escapes the lock."""
    _, _, _, _, tree, data = small
    engine = persiste.Engine(tree, data, n_threads=2)
    rates = [(rng.normal(size=300), rng.normal(size=300)) for _ in range(8)]
    serial = [engine.gradient(a, b).loglik for a, b in rates]
    results, errors = {}, []

    def work(k):
        try:
            for _ in range(25):
                results[k] = engine.gradient(*rates[k]).loglik
        except Exception as e:          # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(8):
        np.testing.assert_array_equal(results[k], serial[k])


def test_thread_count_changes_no_bit(small):
    _, _, _, _, tree, data = small
    out = []
    for n in (1, 2):
        with persiste.Engine(tree, data, n_threads=n) as engine:
            assert engine.context.n_threads == n
            out.append(engine.gradient(-0.3, 0.2, branch=True))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_close_and_garbage_collection(small):
    tree = persiste.Tree.from_newick("(a:1,b:1);")
    with tree:
        assert tree.n_tips == 2
    with pytest.raises(persiste.StateError, match="closed"):
        tree.n_tips
    tree.close()                                   # twice is fine
    _, _, _, _, t, d = small
    engine = persiste.Engine(t, d)
    model, ctx = engine.model, engine.context
    engine.close()
    with pytest.raises(persiste.StateError):
        ctx.n_threads
    with pytest.raises(persiste.StateError):
        model.ptr
    assert t.n_tips == 10                          # the caller's tree stays open
    ref = weakref.ref(persiste.Context())
    gc.collect()
    assert ref() is None


def raises(exc, code, fragment, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    e = info.value
    assert isinstance(e, persiste.PersisteError) and e.code == code
    assert fragment in str(e) and e.name
    return e


def test_c_errors_become_exceptions(tmp_path):
    tree = persiste.Tree.from_newick("((a:1,b:1):1,c:2);")
    data = persiste.Data.from_matrix(tree, np.array([[1, 0, 1]]), "tree")
    raises(persiste.ParseError, -3, "column", persiste.Tree.from_newick, "((a:1,b:1);")
    e = raises(persiste.FileError, -4, "missing.nwk", persiste.Tree.read, tmp_path / "missing.nwk")
    assert isinstance(e, OSError)
    raises(persiste.NamesError, -5, "'a'", persiste.Tree.from_newick, "(a:1,a:1);")
    raises(persiste.DomainError, -6, "negative", persiste.Tree.from_newick, "(a:-1,b:1);")
    e = raises(persiste.NamesError, -5, "drop_extra_taxa=True", persiste.Data.from_matrix,
               tree, np.array([[1, 0, 1, 1]]), ["a", "b", "c", "x"])
    assert isinstance(e, ValueError) and "x" in e.message
    raises(persiste.NamesError, -5, "missing_as_unknown=True", persiste.Data.from_matrix,
           tree, np.array([[1, 0]]), ["a", "b"])
    bad = tmp_path / "bad.Rtab"
    bad.write_text("Gene\ta\tb\tc\ng1\t1\t0\n")
    raises(persiste.ParseError, -3, "bad.Rtab", persiste.Data.read, tree, bad)
    engine = persiste.Engine(tree, data)
    raises(persiste.DomainError, -6, "nan", engine.loglik, np.nan, 0.0)
    raises(persiste.DomainError, -6, "root frequency", persiste.Model, root_freq=1.5)
    raises(persiste.InvalidArgumentError, -2, "thread", persiste.Context, n_threads=1000)


def test_python_side_errors():
    tree = persiste.Tree.from_newick("((a:1,b:1):1,c:2);")
    data = persiste.Data.from_matrix(tree, np.array([[1, 0, 1], [0, 1, 1]]), "tree",
                                     family_names=["f", "g"])
    engine = persiste.Engine(tree, data)
    invalid = persiste.InvalidArgumentError
    raises(invalid, -2, "shape", engine.loglik, np.zeros(3), 0.0)
    raises(invalid, -2, "condition", persiste.Model, condition="sometimes")
    raises(invalid, -2, "root_prior", persiste.Model, root_prior="uniform")
    raises(invalid, -2, "states", persiste.Data.from_matrix, tree, np.array([[1, 3, 0]]),
           "tree")
    raises(invalid, -2, "2-D", persiste.Data.from_matrix, tree, np.array([1, 0, 1]), "tree")
    raises(invalid, -2, "taxon names", persiste.Data.from_matrix, tree, np.array([[1, 0]]),
           "tree")
    raises(invalid, -2, "no genome labels", persiste.Data.from_matrix, tree,
           np.array([[1, 0, 1]]))
    raises(invalid, -2, "family names", persiste.Data.from_matrix, tree,
           np.array([[1, 0, 1]]), "tree", family_names=["f", "g"])
    raises(invalid, -2, "taxa_in", persiste.Data.read, tree, "x.Rtab", taxa_in="diagonal")
    raises(invalid, -2, "differ in length", persiste.Tree.from_parents, [1, -1], [1.0], ["a", ""])
    raises(invalid, -2, "Model or model options", persiste.Engine, tree, data,
           model=persiste.Model(), condition="none")
    raises(persiste.NamesError, -5, "'h'", engine.family_index, ["f", "h"])
    raises(invalid, -2, "out of range", engine.family_index, [5])
    raises(invalid, -2, "mask", engine.family_index, np.array([True]))
    raises(invalid, -2, "covariate", persiste.Design, 2, loss={"x": [1.0]})
    raises(invalid, -2, "unknown coefficient", persiste.Design, 2, one_sided=("loss:x", -1))
    raises(invalid, -2, "neither empty", engine.retention_test, np.array([True, True]))
    raises(invalid, -2, "alternative", engine.retention_test, ["f"], alternative="lower")
    raises(invalid, -2, "design is for", engine.fit, persiste.Design(3))
    null = engine.fit()
    raises(invalid, -2, "more parameters", persiste.lrt, null, null)


# ---- lifetimes and fork (issue 20) ---------------------------------------

def _busy_engine(rng, n_tips=300, n_families=20000):
    parent, length, names = nm.random_tree(n_tips, rng)
    tree = persiste.Tree.from_newick(nm.newick(parent, length, names))
    states = persiste.simulate(persiste.Model(), tree, n_families, 1.0, 2.0, seed=1)
    data = persiste.Data.from_matrix(tree, states, "tree")
    return tree, data, persiste.Context(1)


def test_close_during_a_call_is_refused(rng):
    """close() of a handle that a call on another thread is using raises
    BusyError (it freed memory under the call before: a use-after-free)."""
    import time
    tree, data, ctx = _busy_engine(rng)
    model = persiste.Model()
    stop, errors, busy, started = threading.Event(), [], [], threading.Event()

    def work():
        started.set()
        while not stop.is_set():
            try:
                ctx.gradient(model, tree, data, 0.0, 0.5, branch=True)
            except persiste.StateError:
                return                     # closed between two calls: fine
            except Exception as e:         # anything else is a defect
                errors.append(e)
                return
    t = threading.Thread(target=work)
    t.start()
    started.wait()
    time.sleep(0.02)                       # inside its first call
    for handle in (data, tree, model, ctx):
        for _ in range(2000):
            try:
                handle.close()
                break
            except persiste.BusyError:
                busy.append(handle)
        else:
            stop.set()
            t.join()
            handle.close()
    stop.set()
    t.join()
    assert not errors, errors
    assert busy, "no close() met a call in flight"


def test_fork_while_a_call_runs(rng):
    """A child forked while another thread is inside a call can use the
    same objects (the copied lock would block it forever otherwise)."""
    import threading
    import time
    tree, data, ctx = _busy_engine(rng, n_families=40000)
    model = persiste.Model()
    started = threading.Event()

    def work():
        started.set()
        for _ in range(5):
            ctx.gradient(model, tree, data, 0.0, 0.5)
    t = threading.Thread(target=work)
    t.start()
    started.wait()
    time.sleep(0.05)
    pid = os.fork()
    if pid == 0:                           # the child: one call, then exit
        try:
            ll, _ = ctx.loglik(model, tree, data, 0.0, 0.5)
            os._exit(0 if np.isfinite(ll).all() else 3)
        except BaseException:
            os._exit(4)
    deadline = time.time() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            t.join()
            pytest.fail("the forked child hung on a lock held by the parent's thread")
        time.sleep(0.05)
    t.join()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
