"""Handles of the C library: errors, Tree, Data, Model, Context, Engine."""
import os
import threading
import weakref
from collections import namedtuple

import numpy as np

from ._persiste_cffi import ffi, lib

# ---- errors ---------------------------------------------------------------


class PersisteError(Exception):
    """A failure reported by libpersiste (or detected before calling it).

    ``code`` is the library's negative status, ``name`` its short text
    (persiste_strerror) and ``message`` the detail (persiste_last_error).
    """
    code = lib.PERSISTE_E_INVALID

    def __init__(self, message, code=None):
        if code is not None:
            self.code = code
        self.name = ffi.string(lib.persiste_strerror(self.code)).decode()
        self.message = message or self.name
        super().__init__(self.message)


def _error(name, code, builtin, doc):
    """A PersisteError subclass that is also the matching built-in exception."""
    return type(name, (PersisteError, builtin),
                {"code": code, "__doc__": doc, "__module__": __name__})


NoMemoryError = _error("NoMemoryError", lib.PERSISTE_E_NOMEM, MemoryError,
                       "An allocation failed.")
InvalidArgumentError = _error("InvalidArgumentError", lib.PERSISTE_E_INVALID, ValueError,
                              "Bad argument: size, shape, unknown option.")
ParseError = _error("ParseError", lib.PERSISTE_E_PARSE, ValueError,
                    "Malformed Newick or table text.")
FileError = _error("FileError", lib.PERSISTE_E_IO, OSError,
                   "A file cannot be opened, read or inflated.")
NamesError = _error("NamesError", lib.PERSISTE_E_NAMES, ValueError,
                    "Duplicate names, or data and tree disagree.")
DomainError = _error("DomainError", lib.PERSISTE_E_DOMAIN, ValueError,
                     "NaN, infinite or negative number.")
StateError = _error("StateError", lib.PERSISTE_E_STATE, RuntimeError,
                    "Object unusable here (closed handle, context after fork).")
BusyError = _error("BusyError", lib.PERSISTE_E_BUSY, RuntimeError,
                   "Context in use by another thread.")
SizeOverflowError = _error("SizeOverflowError", lib.PERSISTE_E_OVERFLOW, OverflowError,
                           "Sizes beyond what can be addressed.")


_ERRORS = {cls.code: cls for cls in (
    NoMemoryError, InvalidArgumentError, ParseError, FileError, NamesError,
    DomainError, StateError, BusyError, SizeOverflowError)}


# C flag names in library messages, as the Python keywords that set them.
_KEYWORDS = {"PERSISTE_DATA_DROP_EXTRA_TAXA": "drop_extra_taxa=True",
             "PERSISTE_DATA_MISSING_AS_UNKNOWN": "missing_as_unknown=True",
             "PERSISTE_DATA_DROP_ABSENT_FAMILIES": "drop_absent_families=True",
             "PERSISTE_MODEL_MIN_BRANCH_LENGTH": "min_branch_length"}


def _check(status):
    """Raise the exception for a nonzero status (call right after the C call)."""
    if status != lib.PERSISTE_OK:
        message = ffi.string(lib.persiste_last_error()).decode(errors="replace")
        for flag, keyword in _KEYWORDS.items():
            message = message.replace(flag, keyword)
        raise _ERRORS.get(status, PersisteError)(message, status)


def version():
    """Version string of the loaded library."""
    return ffi.string(lib.persiste_version_string()).decode()


# ---- small helpers --------------------------------------------------------


def _str(p):
    return None if p == ffi.NULL else ffi.string(p).decode(errors="replace")


def _c_strings(names):
    """(keep-alive list, const char *[]) for a sequence of str."""
    keep = [ffi.new("char[]", str(s).encode()) for s in names]
    return keep, ffi.new("const char *[]", keep)


def _doubles(x, n, what):
    """float64 array of length n from a scalar or an array (no copy when the
    input already is a contiguous float64 vector)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0 or a.shape == (1,):
        return np.full(n, float(a.reshape(())) if a.ndim == 0 else float(a[0]))
    if a.shape != (n,):
        raise InvalidArgumentError(f"{what} has shape {a.shape}, expected a scalar or ({n},)")
    return np.ascontiguousarray(a)


def _in(a):
    return ffi.from_buffer("double[]", a)


def _out(a):
    return ffi.from_buffer("double[]", a, require_writable=True)


# Handles in use by a C call on some thread: close() refuses them (a
# BusyError) instead of freeing memory that call is reading. One lock for
# all handles: it is held only to count, never during a call.
_USE_LOCK = threading.Lock()


class _Handle:
    """An owned C handle: freed by close(), by ``with``, or by the GC."""
    _destroy = None

    def __init__(self, ptr):
        self._ptr = ffi.gc(ptr, type(self)._destroy)
        self._users = 0

    @property
    def ptr(self):
        if self._ptr is None:
            raise StateError(f"{type(self).__name__} is closed", lib.PERSISTE_E_STATE)
        return self._ptr

    def close(self):
        with _USE_LOCK:
            if self._users:
                raise BusyError(f"{type(self).__name__} is in use by a call on another "
                                f"thread: close it when the call has returned",
                                lib.PERSISTE_E_BUSY)
            ptr, self._ptr = self._ptr, None
        if ptr is not None:
            ffi.release(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _using:
    """Marks handles in use for the length of a C call (their pointers are
    taken inside, after the mark, so a concurrent close() either comes
    first, and the call raises StateError, or waits its turn as BusyError)."""

    def __init__(self, *handles):
        self.handles = handles

    def __enter__(self):
        with _USE_LOCK:
            for h in self.handles:
                h.ptr                      # closed already: StateError
            for h in self.handles:
                h._users += 1
        return self

    def __exit__(self, *exc):
        with _USE_LOCK:
            for h in self.handles:
                h._users -= 1


def _create(ctype, fn, *args):
    out = ffi.new(ctype + " **")
    _check(fn(out, *args))
    return out[0]


# ---- tree -----------------------------------------------------------------


class Tree(_Handle):
    """Rooted tree. Nodes: tips first (input order), then internal nodes in
    post-order; the root is the last node; branch i is the edge above node i."""
    _destroy = lib.persiste_tree_destroy

    @classmethod
    def from_newick(cls, text):
        return cls(_create("persiste_tree", lib.persiste_tree_from_newick, text.encode()))

    @classmethod
    def read(cls, path):
        return cls(_create("persiste_tree", lib.persiste_tree_from_newick_file,
                           os.fsencode(path)))

    @classmethod
    def from_parents(cls, parent, branch_length, names):
        parent = np.ascontiguousarray(parent, dtype=np.int32)
        length = np.ascontiguousarray(branch_length, dtype=np.float64)
        n = parent.shape[0]
        if length.shape != (n,) or len(names) != n:
            raise InvalidArgumentError("parent, branch_length and names differ in length")
        keep, cnames = _c_strings("" if s is None else s for s in names)
        return cls(_create("persiste_tree", lib.persiste_tree_from_parents, n,
                           ffi.from_buffer("int32_t[]", parent), _in(length), cnames))

    @property
    def n_nodes(self):
        return lib.persiste_tree_n_nodes(self.ptr)

    @property
    def n_tips(self):
        return lib.persiste_tree_n_tips(self.ptr)

    @property
    def labels(self):
        return [_str(lib.persiste_tree_label(self.ptr, i)) for i in range(self.n_nodes)]

    @property
    def tip_names(self):
        return [_str(lib.persiste_tree_label(self.ptr, i)) for i in range(self.n_tips)]

    @property
    def parents(self):
        out = np.empty(self.n_nodes, dtype=np.int32)
        _check(lib.persiste_tree_parents(
            self.ptr, ffi.from_buffer("int32_t[]", out, require_writable=True)))
        return out

    @property
    def branch_lengths(self):
        out = np.empty(self.n_nodes)
        _check(lib.persiste_tree_branch_lengths(self.ptr, _out(out)))
        return out


# ---- data -----------------------------------------------------------------


def _data_flags(drop_extra_taxa, drop_absent_families, missing_as_unknown, taxa_in):
    flags = 0
    if drop_extra_taxa:
        flags |= lib.PERSISTE_DATA_DROP_EXTRA_TAXA
    if drop_absent_families:
        flags |= lib.PERSISTE_DATA_DROP_ABSENT_FAMILIES
    if missing_as_unknown:
        flags |= lib.PERSISTE_DATA_MISSING_AS_UNKNOWN
    orient = {None: 0, "rows": lib.PERSISTE_DATA_TAXA_IN_ROWS,
              "columns": lib.PERSISTE_DATA_TAXA_IN_COLUMNS}
    if taxa_in not in orient:
        raise InvalidArgumentError(f"taxa_in must be 'rows', 'columns' or None, not {taxa_in!r}")
    return flags | orient[taxa_in]


class Data(_Handle):
    """Presence/absence of gene families bound to a tree's tips (copied in)."""
    _destroy = lib.persiste_data_destroy
    _family_names = None

    @classmethod
    def read(cls, tree, path, *, drop_extra_taxa=False, drop_absent_families=False,
             missing_as_unknown=False, taxa_in=None):
        """Roary/Panaroo .Rtab, or a CSV/TSV 0/1 matrix (gzip allowed)."""
        flags = _data_flags(drop_extra_taxa, drop_absent_families, missing_as_unknown, taxa_in)
        return cls(_create("persiste_data", lib.persiste_data_read, tree.ptr,
                           os.fsencode(path), flags))

    @classmethod
    def from_matrix(cls, tree, states, taxon_names=None, family_names=None, *,
                    drop_extra_taxa=False, drop_absent_families=False,
                    missing_as_unknown=False):
        """states[f, t]: 0 absent, 1 present, 2 (or NaN) unknown, for family f
        and taxon t, bound to the tree's tips by ``taxon_names`` (the
        columns' genome names; ``taxon_names="tree"`` states that the columns
        are the tree's tips in order). A pandas DataFrame binds by its labels:
        genomes in the columns and families in the index, or the transpose
        (whichever side names the tree's tips). An unlabelled array without
        taxon_names is refused: columns in an assumed order would silently
        pair genomes with the wrong tips."""
        if hasattr(states, "columns") and hasattr(states, "index") and \
                hasattr(states, "to_numpy"):
            tips = set(tree.tip_names)
            cols = [str(c) for c in states.columns]
            rows = [str(r) for r in states.index]
            if taxon_names is None:
                if sum(r in tips for r in rows) > sum(c in tips for c in cols):
                    states, cols, rows = states.T, rows, cols
                taxon_names = cols
            if family_names is None:
                family_names = rows
            states = states.to_numpy()
        elif taxon_names is None:
            raise InvalidArgumentError(
                "states has no genome labels: pass taxon_names (the columns' genome "
                "names), or taxon_names='tree' if the columns are the tree's tips in order")
        if isinstance(taxon_names, str) and taxon_names == "tree":
            taxon_names = tree.tip_names
        a = np.asarray(states)
        if a.ndim != 2:
            raise InvalidArgumentError(f"states must be 2-D (families x taxa), not {a.ndim}-D")
        if a.dtype.kind == "f":
            a = np.where(np.isnan(a), lib.PERSISTE_UNKNOWN, a)
        if a.dtype != np.uint8:
            if a.size and (a.min() < 0 or a.max() > 2 or np.any(a != np.round(a))):
                raise InvalidArgumentError("states must be 0, 1, 2 (unknown) or NaN")
            a = a.astype(np.uint8)
        n_families, n_taxa = a.shape
        if a.flags.f_contiguous and not a.flags.c_contiguous:
            buf, strides = a.T, (1, n_families)       # taxa-major: pass as is
        else:
            buf = np.ascontiguousarray(a)
            strides = (n_taxa, 1)
        names = list(taxon_names)
        if len(names) != n_taxa:
            raise InvalidArgumentError(f"{len(names)} taxon names for {n_taxa} columns")
        keep_t, ctaxa = _c_strings(names)
        keep_f, cfam = (None, ffi.NULL) if family_names is None else _c_strings(family_names)
        if family_names is not None and len(keep_f) != n_families:
            raise InvalidArgumentError(f"{len(keep_f)} family names for {n_families} rows")
        flags = _data_flags(drop_extra_taxa, drop_absent_families, missing_as_unknown, None)
        return cls(_create("persiste_data", lib.persiste_data_from_matrix, tree.ptr,
                           ffi.from_buffer("uint8_t[]", buf), n_families, n_taxa,
                           strides[0], strides[1], ctaxa, cfam, flags))

    @property
    def n_families(self):
        return lib.persiste_data_n_families(self.ptr)

    @property
    def n_taxa(self):
        return lib.persiste_data_n_taxa(self.ptr)

    @property
    def n_all_absent(self):
        return lib.persiste_data_n_all_absent(self.ptr)

    @property
    def family_names(self):
        if self._family_names is None:      # the data are immutable: read once
            p = self.ptr
            self._family_names = tuple(_str(lib.persiste_data_family_name(p, f))
                                       for f in range(self.n_families))
        return list(self._family_names)

    @property
    def dropped_taxa(self):
        p = self.ptr
        return [_str(lib.persiste_data_dropped_taxon(p, i))
                for i in range(lib.persiste_data_n_dropped_taxa(p))]

    @property
    def dropped_families(self):
        p = self.ptr
        return [_str(lib.persiste_data_dropped_family(p, i))
                for i in range(lib.persiste_data_n_dropped_families(p))]

    def observable(self, model):
        """A copy without the families whose observed cells lie outside the
        model's conditioning event (listed in its dropped_families, after
        the ones this data already dropped)."""
        return type(self)(_create("persiste_data", lib.persiste_data_observable,
                                  self.ptr, model.ptr))

    def select(self, families):
        """A copy with only the given families (indices, in that order)."""
        idx = np.ascontiguousarray(families, dtype=np.int64)
        return type(self)(_create("persiste_data", lib.persiste_data_select, self.ptr,
                                  idx.size, ffi.from_buffer("int64_t[]", idx)))

    def states(self, family):
        """States of one family in tree tip order (uint8 array)."""
        out = np.empty(self.n_taxa, dtype=np.uint8)
        _check(lib.persiste_data_states(self.ptr, family,
                                        ffi.from_buffer("uint8_t[]", out, require_writable=True)))
        return out


# ---- model ----------------------------------------------------------------

CONDITIONS = {"none": lib.PERSISTE_CONDITION_NONE,
              "present": lib.PERSISTE_CONDITION_PRESENT,
              "variable": lib.PERSISTE_CONDITION_VARIABLE}
ROOT_PRIORS = {"stationary": lib.PERSISTE_ROOT_STATIONARY,
               "fixed": lib.PERSISTE_ROOT_FIXED,
               "absent": lib.PERSISTE_ROOT_ABSENT}


def _choice(table, value, what):
    if value not in table:
        raise InvalidArgumentError(f"{what} must be one of {', '.join(table)}, not {value!r}")
    return table[value]


def gamma_categories(alpha, n_categories, median=False):
    """Discretised gamma rate multipliers with shape ``alpha`` and mean 1 over
    ``n_categories`` equal-probability categories (Yang 1994): each the mean
    of its slice (IQ-TREE's +G default), or its median rescaled to mean 1."""
    out = np.empty(int(n_categories))
    _check(lib.persiste_gamma_categories(float(alpha), int(n_categories),
                                         1 if median else 0, _out(out)))
    return out


def _per_tip(value, tree, what):
    """A scalar (global), or per genome: an array in tree tip order or a dict
    {genome name: value} (genomes not named get 0)."""
    if isinstance(value, dict):
        if tree is None:
            raise InvalidArgumentError(f"{what} by genome name needs the tree (Model(tree=...))")
        where = {name: i for i, name in enumerate(tree.tip_names)}
        out = np.zeros(tree.n_tips)
        for name, v in value.items():
            if name not in where:
                raise NamesError(f"{what}: genome '{name}' is not a tip of the tree",
                                 lib.PERSISTE_E_NAMES)
            out[where[name]] = float(v)
        return out
    a = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if a.ndim != 1:
        raise InvalidArgumentError(f"{what} must be a number, a vector or a dict")
    return np.ascontiguousarray(a)


class Model(_Handle):
    """Model options.

    - condition: 'none', 'present' (default; with ``min_present`` k: at least
      k observed presences) or 'variable'; conditioning is on each family's
      known cells and on the observed pattern (through the error model);
    - root_prior: 'stationary', 'fixed' (with root_freq) or 'absent';
    - min_branch_length;
    - error_absent / error_present: a genome's probability of reporting a
      present family absent (draft assemblies miss genes) and an absent one
      present; one number, or per genome (an array in tree tip order or a
      dict by genome name, with ``tree``);
    - rate categories: ``gamma_alpha`` with ``n_categories`` (and
      ``gamma_median``), or ``categories=(weights, gain_mult[, loss_mult])``;
    - lineage: ``(gain_mult, loss_mult)`` per node (branch above each node).
    """
    _destroy = lib.persiste_model_destroy

    def __init__(self, condition="present", root_prior="stationary", root_freq=0.5,
                 min_branch_length=0.0, *, min_present=1, error_absent=None,
                 error_present=None, gamma_alpha=None, n_categories=None,
                 gamma_median=False, categories=None, lineage=None, tree=None):
        super().__init__(_create("persiste_model", lib.persiste_model_create))
        p = self.ptr
        _check(lib.persiste_model_set_int(p, lib.PERSISTE_MODEL_CONDITION,
                                          _choice(CONDITIONS, condition, "condition")))
        _check(lib.persiste_model_set_int(p, lib.PERSISTE_MODEL_ROOT_PRIOR,
                                          _choice(ROOT_PRIORS, root_prior, "root_prior")))
        _check(lib.persiste_model_set_double(p, lib.PERSISTE_MODEL_ROOT_FREQ, root_freq))
        _check(lib.persiste_model_set_double(p, lib.PERSISTE_MODEL_MIN_BRANCH_LENGTH,
                                             min_branch_length))
        _check(lib.persiste_model_set_int(p, lib.PERSISTE_MODEL_MIN_PRESENT, int(min_present)))
        self.condition, self.root_prior = condition, root_prior
        self.root_freq, self.min_branch_length = root_freq, min_branch_length
        self.min_present = int(min_present)
        self.tree = tree
        self.error_absent = self.error_present = None
        if error_absent is not None or error_present is not None:
            self.set_error(0.0 if error_absent is None else error_absent,
                           0.0 if error_present is None else error_present)
        self.gamma_alpha, self.gamma_median = None, bool(gamma_median)
        self.category_weights = self.category_gain = self.category_loss = None
        if gamma_alpha is not None:
            self.set_gamma(gamma_alpha, n_categories or 4, gamma_median)
        elif n_categories not in (None, 1):
            raise InvalidArgumentError("n_categories needs gamma_alpha (or fit it)")
        if categories is not None:
            self.set_categories(*categories)
        self.lineage = None
        if lineage is not None:
            self.set_lineage(*lineage)

    def settings(self, tree=None):
        """The model's settings as plain values (the CLI's JSON keys): error
        rates (a number, or {genome: value} per genome), alpha, categories,
        min_present, lineage."""
        tips = (tree or self.tree).tip_names if (tree or self.tree) else None

        def error(x):
            if x is None:
                return 0.0
            if len(x) == 1 or tips is None:
                return float(x[0]) if len(x) == 1 else [float(v) for v in x]
            return {t: float(v) for t, v in zip(tips, x)}
        return {"error_absent": error(self.error_absent),
                "error_present": error(self.error_present), "alpha": self.gamma_alpha,
                "n_categories": self.n_categories, "min_present": self.min_present,
                "lineage": self.lineage is not None}

    def copy(self):
        """A new Model with the same settings."""
        m = Model(self.condition, self.root_prior, self.root_freq, self.min_branch_length,
                  min_present=self.min_present, tree=self.tree)
        if self.error_absent is not None:
            m.set_error(self.error_absent, self.error_present)
        if self.category_weights is not None:
            m.set_categories(self.category_weights, self.category_gain, self.category_loss)
            m.gamma_alpha, m.gamma_median = self.gamma_alpha, self.gamma_median
        if self.lineage is not None:
            m.set_lineage(*self.lineage)
        return m

    @property
    def n_categories(self):
        return 1 if self.category_weights is None else len(self.category_weights)

    def set_error(self, absent, present):
        a = _per_tip(absent, self.tree, "error_absent")
        b = _per_tip(present, self.tree, "error_present")
        if a.shape != b.shape:
            if a.size == 1:
                a = np.full(b.shape, a[0])
            elif b.size == 1:
                b = np.full(a.shape, b[0])
            else:
                raise InvalidArgumentError("error_absent and error_present differ in length")
        _check(lib.persiste_model_set_error(self.ptr, a.size, _in(a), _in(b)))
        self.error_absent, self.error_present = a, b

    def set_gamma(self, alpha, n_categories, median=False):
        r = gamma_categories(alpha, n_categories, median)
        self.set_categories(np.full(len(r), 1.0 / len(r)), r)
        self.gamma_alpha, self.gamma_median = float(alpha), bool(median)

    def set_categories(self, weights, gain_mult, loss_mult=None):
        w = np.ascontiguousarray(weights, dtype=np.float64)
        g = np.ascontiguousarray(gain_mult, dtype=np.float64)
        l_ = None if loss_mult is None else np.ascontiguousarray(loss_mult, dtype=np.float64)
        if g.shape != w.shape or (l_ is not None and l_.shape != w.shape):
            raise InvalidArgumentError("category weights and multipliers differ in length")
        _check(lib.persiste_model_set_categories(self.ptr, w.size, _in(w), _in(g),
                                                 ffi.NULL if l_ is None else _in(l_)))
        self.category_weights, self.category_gain = w, g
        self.category_loss = g if l_ is None else l_
        self.gamma_alpha = None

    def set_lineage(self, gain_mult, loss_mult):
        g = np.ascontiguousarray(gain_mult, dtype=np.float64)
        l_ = np.ascontiguousarray(loss_mult, dtype=np.float64)
        if g.shape != l_.shape:
            raise InvalidArgumentError("lineage multipliers differ in length")
        _check(lib.persiste_model_set_lineage(self.ptr, g.size, _in(g), _in(l_)))
        self.lineage = (g, l_)

    def grad_layout(self, tree):
        """{name: slice} of the model gradient (Gradient.d_model)."""
        names = {"error_absent": lib.PERSISTE_GRAD_ERROR_ABSENT,
                 "error_present": lib.PERSISTE_GRAD_ERROR_PRESENT,
                 "category_gain": lib.PERSISTE_GRAD_CATEGORY_GAIN,
                 "category_loss": lib.PERSISTE_GRAD_CATEGORY_LOSS,
                 "category_weight": lib.PERSISTE_GRAD_CATEGORY_WEIGHT,
                 "lineage_gain": lib.PERSISTE_GRAD_LINEAGE_GAIN,
                 "lineage_loss": lib.PERSISTE_GRAD_LINEAGE_LOSS}
        off = ffi.new("int64_t *")
        out = {}
        for name, which in names.items():
            n = lib.persiste_model_grad_layout(self.ptr, tree.ptr, which, off)
            out[name] = slice(off[0], off[0] + n)
        return out


def clade_node(tree, spec):
    """The node a lineage row names: a tip or internal label, or two tip
    names joined by a comma (their most recent common ancestor)."""
    labels = tree.labels
    parts = [x.strip() for x in str(spec).split(",")]
    if len(parts) == 1:
        hits = [i for i, name in enumerate(labels) if name == parts[0]]
        if not hits:
            raise NamesError(f"node '{spec}' is neither a tip nor an internal label of the tree",
                             lib.PERSISTE_E_NAMES)
        if len(hits) > 1:
            raise NamesError(f"node label '{spec}' names {len(hits)} nodes of the tree",
                             lib.PERSISTE_E_NAMES)
        return hits[0]
    if len(parts) != 2:
        raise InvalidArgumentError(f"node '{spec}': give a label, or two tip names "
                                   f"joined by a comma")
    tips = {name: i for i, name in enumerate(tree.tip_names)}
    for t in parts:
        if t not in tips:
            raise NamesError(f"node '{spec}': '{t}' is not a tip of the tree",
                             lib.PERSISTE_E_NAMES)
    parent = tree.parents
    path = set()
    v = tips[parts[0]]
    while v >= 0:
        path.add(v)
        v = parent[v]
    v = tips[parts[1]]
    while v not in path:
        v = parent[v]
    return int(v)


def clade_mask(tree, node):
    """Boolean mask over nodes: ``node`` (a number or a clade_node spec) and
    every node below it."""
    v0 = node if isinstance(node, (int, np.integer)) else clade_node(tree, node)
    parent = tree.parents
    # parents come after their children: from the root down, a node is in
    # the clade when it is v0 or its parent is
    inside = np.zeros(tree.n_nodes, dtype=bool)
    for v in range(tree.n_nodes - 1, -1, -1):
        inside[v] = v == v0 or (parent[v] >= 0 and inside[parent[v]])
    return inside


def lineage_multipliers(tree, rows):
    """Per-node (gain_mult, loss_mult) from rows (node, gain multiplier, loss
    multiplier): each applies to the named node's branch and every branch
    below it; later rows override earlier ones where their clades meet."""
    n = tree.n_nodes
    gain, loss = np.ones(n), np.ones(n)
    for node, g, l_ in rows:
        inside = clade_mask(tree, clade_node(tree, node))
        gain[inside], loss[inside] = float(g), float(l_)
    return gain, loss


def simulate(model, tree, n_families, gain, loss, seed=1):
    """Presence/absence of n_families simulated families (uint8 array,
    families x tips in tree tip order) at rates gain and loss (scalars or
    per family), under every option of ``model``."""
    n = int(n_families)
    lg = _doubles(np.log(gain), n, "gain")
    ll = _doubles(np.log(loss), n, "loss")
    out = np.empty((n, tree.n_tips), dtype=np.uint8)
    _check(lib.persiste_simulate(model.ptr, tree.ptr, n, _in(lg), _in(ll), int(seed),
                                 ffi.from_buffer("uint8_t[]", out, require_writable=True)))
    return out


# ---- context and engine ---------------------------------------------------

Gradient = namedtuple("Gradient", "loglik d_log_gain d_log_loss d_branch d_model",
                      defaults=(None,))


# A fork while another thread is inside a call copies its held lock into
# the child, where nobody will release it: the child gets fresh locks (the
# C library rebuilds its own workers there) and no handle counts as in use.
_CONTEXTS = weakref.WeakSet()


def _after_fork_in_child():
    global _USE_LOCK
    _USE_LOCK = threading.Lock()
    for ctx in list(_CONTEXTS):
        ctx.lock = threading.Lock()
    import gc
    for obj in gc.get_objects():
        if isinstance(obj, _Handle):
            obj._users = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Context(_Handle):
    """Worker pool and scratch space. Calls are serialised by a lock (the C
    context serves one thread at a time; the GIL is released during calls)."""
    _destroy = lib.persiste_ctx_destroy

    def __init__(self, n_threads=1):
        super().__init__(_create("persiste_ctx", lib.persiste_ctx_create))
        self.lock = threading.Lock()
        _CONTEXTS.add(self)
        _check(lib.persiste_ctx_set_param(self.ptr, lib.PERSISTE_CTX_NTHREADS, n_threads))

    @property
    def n_threads(self):
        value = ffi.new("int64_t *")
        _check(lib.persiste_ctx_get_param(self.ptr, lib.PERSISTE_CTX_NTHREADS, value))
        return value[0]

    def _args(self, tree, data, log_gain, log_loss):
        n = data.n_families
        return n, _doubles(log_gain, n, "log_gain"), _doubles(log_loss, n, "log_loss")

    def loglik(self, model, tree, data, log_gain, log_loss):
        """Per-family log-likelihood at natural-log rates (scalars broadcast).
        Returns (loglik array, number of impossible families)."""
        n, lg, ll = self._args(tree, data, log_gain, log_loss)
        out = np.empty(n)
        with self.lock, _using(self, model, tree, data):
            _check(lib.persiste_loglik_batch(self.ptr, model.ptr, tree.ptr, data.ptr, n,
                                             _in(lg), _in(ll), _out(out)))
            impossible = lib.persiste_ctx_n_impossible(self.ptr)
        return out, impossible

    def gradient(self, model, tree, data, log_gain, log_loss, weight=None, branch=False,
                 model_grad=False):
        """Per-family log-likelihood and its derivatives with respect to
        log_gain[f] and log_loss[f]; with branch=True also d(sum_f weight[f]
        loglik[f]) / d(branch length) per node; with model_grad=True also
        d_model, that sum's derivatives in the model's own parameters (see
        Model.grad_layout)."""
        n, lg, ll = self._args(tree, data, log_gain, log_loss)
        w = ffi.NULL if weight is None else _in(_doubles(weight, n, "weight"))
        n_model = lib.persiste_model_grad_layout(model.ptr, tree.ptr, 0, ffi.NULL)
        out = Gradient(np.empty(n), np.empty(n), np.empty(n),
                       np.empty(tree.n_nodes) if branch else None,
                       np.empty(max(n_model, 0)) if model_grad else None)
        with self.lock, _using(self, model, tree, data):
            _check(lib.persiste_gradient_model_batch(
                self.ptr, model.ptr, tree.ptr, data.ptr, n, _in(lg), _in(ll), w,
                _out(out.loglik), _out(out.d_log_gain), _out(out.d_log_loss),
                _out(out.d_branch) if branch else ffi.NULL,
                _out(out.d_model) if model_grad and n_model > 0 else ffi.NULL))
        return out


def node_table(tree):
    """Per node: its label (tip name, internal label, or the library's node
    number), parent, and two tips whose most recent common ancestor it is
    (empty for a tip), and the length of the branch above it."""
    n, nt = tree.n_nodes, tree.n_tips
    parent, length, labels = tree.parents, tree.branch_lengths, tree.labels
    first = list(range(nt)) + [None] * (n - nt)    # a tip below each node
    tip_a, tip_b = [""] * n, [""] * n
    for v in range(n - 1):                          # children before parents
        p = parent[v]
        if first[p] is None:
            first[p] = first[v]
        elif tip_b[p] == "":
            tip_a[p], tip_b[p] = labels[first[p]], labels[first[v]]
    for v in range(nt, n):                          # one-child nodes
        if tip_a[v] == "":
            tip_a[v] = tip_b[v] = labels[first[v]]
    names = [labels[v] if labels[v] else str(v) for v in range(n)]
    return {"node": np.arange(n), "label": names, "parent": parent, "tip_a": tip_a,
            "tip_b": tip_b, "length": length}


class Reconstruction:
    """Posterior presence per node and expected gains and losses per branch
    (the branch above each node): ``sum_present``, ``sum_gains``,
    ``sum_losses`` [group, node] summed over families (weighted), and per
    family [family, node] when asked (``present``, ``gains``, ``losses``).
    Expectations are not conditioned on ascertainment (for the families of
    the data, all inside the conditioning event, they are the same).
    ``n_impossible`` families (likelihood 0) are left out of the sums."""

    def __init__(self, tree, families, groups, present, gains, losses, sum_present,
                 sum_gains, sum_losses, n_impossible):
        self.tree, self.families, self.groups = tree, families, groups
        self.present, self.gains, self.losses = present, gains, losses
        self.sum_present, self.sum_gains, self.sum_losses = sum_present, sum_gains, sum_losses
        self.n_impossible = n_impossible

    def __repr__(self):
        return (f"Reconstruction({self.tree.n_nodes} nodes, {len(self.families)} families, "
                f"{len(self.groups)} group(s), gains {self.sum_gains.sum():.1f}, "
                f"losses {self.sum_losses.sum():.1f})")

    def branches(self):
        """Dict of columns (pandas.DataFrame(...) takes it as it is): the
        node table, expected gains and losses over all groups, then per
        group 'gains:G' and 'losses:G' when there are several."""
        t = node_table(self.tree)
        out = dict(t, expected_gains=self.sum_gains.sum(axis=0),
                   expected_losses=self.sum_losses.sum(axis=0))
        if len(self.groups) > 1:
            for i, g in enumerate(self.groups):
                out[f"gains:{g}"] = self.sum_gains[i]
                out[f"losses:{g}"] = self.sum_losses[i]
        return out

    def nodes(self):
        t = node_table(self.tree)
        out = {k: t[k] for k in ("node", "label", "parent")}
        out["expected_present"] = self.sum_present.sum(axis=0)
        if len(self.groups) > 1:
            for i, g in enumerate(self.groups):
                out[f"present:{g}"] = self.sum_present[i]
        return out

    def plot(self, path_stem, formats=("svg", "png"), group=None):
        """tree.svg/png-style figure: the tree twice, branches coloured and
        sized by expected gains and by expected losses, of every family or
        of one group (matplotlib, imported here only)."""
        from .plot import plot_reconstruction
        return plot_reconstruction(self, path_stem, formats, group)


class Engine:
    """A tree, its data, a model and a context: the object fits work on.

    ``Engine(tree, data, condition='present', n_threads=1)``; model options
    are Model's keywords. Closing the engine closes the context and model it
    made (not the tree and data, which the caller owns).
    """

    def __init__(self, tree, data, model=None, context=None, n_threads=1, **model_options):
        self.tree, self.data = tree, data
        self._own = []
        if model is None:
            model = Model(**model_options)
            self._own.append(model)
        elif model_options:
            raise InvalidArgumentError("give either a Model or model options, not both")
        if context is None:
            context = Context(n_threads)
            self._own.append(context)
        self.model, self.context = model, context
        self.n_families, self.n_taxa = data.n_families, data.n_taxa
        self.n_evaluations = 0

    def close(self):
        for h in self._own:
            h.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def loglik(self, log_gain, log_loss):
        """Per-family log-likelihood (numpy array) at natural-log rates."""
        self.n_evaluations += 1
        return self.context.loglik(self.model, self.tree, self.data, log_gain, log_loss)[0]

    def gradient(self, log_gain, log_loss, weight=None, branch=False, model_grad=False):
        self.n_evaluations += 1
        return self.context.gradient(self.model, self.tree, self.data,
                                     log_gain, log_loss, weight, branch, model_grad)

    def reconstruct(self, log_gain, log_loss, per_family=False, groups=None, weight=None):
        """Where the families were gained and lost (see Reconstruction).

        ``groups``: None (one group of every family), or a sequence of group
        labels, one per family (e.g. COG categories; families labelled None
        are in no group and left out of the sums)."""
        n, nn = self.n_families, self.tree.n_nodes
        lg, ll = _doubles(log_gain, n, "log_gain"), _doubles(log_loss, n, "log_loss")
        w = np.ones(n) if weight is None else _doubles(weight, n, "weight").copy()
        if groups is None:
            names, idx = ["all"], np.zeros(n, dtype=np.int32)
        else:
            labels = list(groups)
            if len(labels) != n:
                raise InvalidArgumentError(f"{len(labels)} group labels for {n} families")
            names = sorted({g for g in labels if g is not None}, key=str)
            where = {g: i for i, g in enumerate(names)}
            idx = np.array([where.get(g, 0) for g in labels], dtype=np.int32)
            w[[g is None for g in labels]] = 0.0
            if not names:
                raise InvalidArgumentError("every family's group is None")
        per = [np.empty((n, nn)) for _ in range(3)] if per_family else [None] * 3
        sums = [np.empty((len(names), nn)) for _ in range(3)]
        ctx = self.context
        self.n_evaluations += 1
        with ctx.lock, _using(ctx, self.model, self.tree, self.data):
            _check(lib.persiste_reconstruct_batch(
                ctx.ptr, self.model.ptr, self.tree.ptr, self.data.ptr, n, _in(lg), _in(ll),
                _in(w), ffi.from_buffer("int32_t[]", idx), len(names),
                *[ffi.NULL if a is None else _out(a) for a in per],
                *[_out(a) for a in sums]))
            impossible = lib.persiste_ctx_n_impossible(ctx.ptr)
        return Reconstruction(self.tree, self.data.family_names, names, *per, *sums,
                              impossible)

    def fit(self, design=None, **kw):
        """Maximum-likelihood fit (see persiste.fit)."""
        from ._fit import fit
        return fit(self, design, **kw)

    def retention_test(self, families, **kw):
        """Loss-rate test of a family set (see persiste.retention_test)."""
        from ._fit import retention_test
        return retention_test(self, families, **kw)

    def impossible_families(self, log_gain=0.0, log_loss=0.0):
        """Indices of families with likelihood exactly zero (-inf loglik)."""
        return np.flatnonzero(np.isneginf(self.loglik(log_gain, log_loss)))

    def family_index(self, families):
        """Boolean mask over families from names, indices or a mask."""
        fam = list(families) if not isinstance(families, np.ndarray) else families
        if isinstance(fam, np.ndarray) and fam.dtype == bool:
            if fam.shape != (self.n_families,):
                raise InvalidArgumentError(f"family mask has shape {fam.shape}, "
                                           f"expected ({self.n_families},)")
            return fam
        mask = np.zeros(self.n_families, dtype=bool)
        if all(isinstance(f, str) for f in fam):
            where = {name: i for i, name in enumerate(self.data.family_names)}
            missing = [f for f in fam if f not in where]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise NamesError(f"family '{missing[0]}' is not in the data{more}",
                                 lib.PERSISTE_E_NAMES)
            mask[[where[f] for f in fam]] = True
            return mask
        idx = np.asarray(fam, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_families):
            raise InvalidArgumentError(f"family index out of range 0..{self.n_families - 1}")
        mask[idx] = True
        return mask
