/* Private to lib/: object layouts and helpers shared between the sources.
 * Nothing here is installed or exported. */
#ifndef PERSISTE_INTERNAL_H
#define PERSISTE_INTERNAL_H

#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <threads.h>

#include "persiste.h"

/* Allocation goes through these so a test build can make the k-th one fail. */
void *persiste__malloc(size_t n);
void *persiste__calloc(size_t count, size_t size);
void *persiste__realloc(void *p, size_t n);
/* 64-byte aligned, for vectors that must not straddle cache lines; freed
 * by persiste__free. */
void *persiste__malloc_aligned(size_t n);
void persiste__free(void *p);
char *persiste__strndup(const char *s, size_t n);

/* Record a formatted detail message for persiste_last_error() and return
 * code, so that failures read: return persiste__error(PERSISTE_E_PARSE, ...). */
int persiste__error(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A number never given out before in this process (from 1): tells objects
 * apart where a freed object's address may be reused. */
uint64_t persiste__serial(void);

/* size_t a * b, or PERSISTE_E_OVERFLOW (message recorded) on overflow. */
int persiste__mul_size(size_t a, size_t b, size_t *out);

/* Resize the array *pp to n elements of elem bytes (kept as it was on
 * failure); returns a status (lib/eval/scratch.c). */
int persiste__grow(void *pp, size_t n, size_t elem);

/* ---- Tree -------------------------------------------------------------- */
struct persiste_tree {
    int32_t n_nodes;
    int32_t n_tips;       /* nodes 0..n_tips-1 are the tips */
    int32_t *parent;      /* [n_nodes]; root (n_nodes-1) has -1 */
    double *length;       /* [n_nodes]; branch above the node */
    int32_t *child_start; /* [n_nodes+1]: children of v are */
    int32_t *children;    /*   children[child_start[v] .. child_start[v+1]) */
    char **label;         /* [n_nodes]; never NULL entries ("" if none) */
    /* Open-addressing index of tip names -> tip number. */
    int32_t *tip_index;   /* [tip_index_size], -1 = empty */
    uint32_t tip_index_size;
    uint64_t fingerprint; /* hash of tip names in order: binds data to tree */
    uint64_t serial;      /* tells trees apart (caches keyed by a tree) */
};

/* Build a tree from any node numbering: takes ownership of labels (each
 * entry malloc'd or NULL, array malloc'd) whether it succeeds or not.
 * Validates (one root, no cycle, finite lengths >= 0, named unique tips),
 * renumbers as documented in persiste.h. `what` prefixes error messages
 * (e.g. "newick" or "tree"). */
int persiste__tree_build(persiste_tree **out, int32_t n_nodes,
                         const int32_t *parent, const double *length,
                         char **labels, const char *what);
/* Tip number of a name, or -1. */
int32_t persiste__tree_find_tip(const persiste_tree *tree, const char *name,
                                size_t len);
uint64_t persiste__hash_bytes(const void *p, size_t n, uint64_t seed);
/* A 64-bit mixing step (splitmix64's finaliser) for the hash tables of
 * patterns, rows and site repeats: inline, it runs once per word hashed. */
static inline uint64_t persiste__mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- Data -------------------------------------------------------------- */
/* Presence/absence, bit-packed by 64 families per word, per tip:
 * bit (f % 64) of present[(f / 64) * n_tips + tip]. A family is unknown in a
 * tip when its `unknown` bit is set (then its `present` bit is 0). */
struct persiste_data {
    int32_t n_tips;
    uint64_t fingerprint; /* of the tree it was bound to */
    int64_t n_families;
    int64_t n_words;
    uint64_t *present;
    uint64_t *unknown;
    char **family_name;   /* [n_families] */
    int64_t n_all_absent;
    int64_t n_dropped_taxa;
    char **dropped_taxon;
    int64_t n_dropped_families;
    char **dropped_family;
    /* Distinct columns (lib/data/patterns.c): family f has pattern[f]; the
     * patterns' bits in the layout above; serial tells data apart. */
    uint64_t serial;
    int64_t n_patterns;
    int64_t *pattern;
    uint64_t *pattern_present;
    uint64_t *pattern_unknown;
    int any_unknown; /* some cell is unknown (the kernel skips them if not) */
};

/* Transposes a 64 x 64 bit matrix: bit b of a[k] becomes bit k of a[b]
 * (lib/data/patterns.c). */
void persiste__transpose64(uint64_t a[64]);

/* Rows of families taken one at a time as a reader packs them (lib/
 * patterns.c), so that the data's bits and patterns are ready when the
 * rows end. A row is n_cells cells: present words, then unknown ones (nw
 * each), at rows[row * 2 * nw]; only the cells c with to[c] >= 0 (kept)
 * count. Each row is observed or not (present or unknown in a kept cell),
 * dropped when drop_absent and it is not; the others (the kept families)
 * are transposed 64 at a time into the data's layout: bit f % 64 of
 * present[f / 64 * n_out + to[c]] for a present cell c of kept family f,
 * the same in unknown. Each row gets of[row], the number of its first
 * copy among the kept rows (in order of first occurrence), -1 if dropped;
 * the first copies are found by hash and compared with their rows, and
 * are transposed like the families into pattern_present and _unknown. */
typedef struct {
    int64_t n_cells, nw;
    int32_t *to;         /* [n_cells] */
    int32_t n_out;
    uint64_t *kept;      /* [nw] */
    uint64_t *row;       /* [2 * nw] the row being added, kept cells */
    int drop_absent;
    int64_t cap;         /* rows (and so kept rows, patterns) with room */
    int64_t n_rows;
    int64_t *of;         /* [cap] */
    uint64_t *observed;  /* [cap / 64] bit row % 64 */
    int64_t n_kept;
    int64_t group[64];   /* the kept rows not yet transposed */
    int group_unknown;   /* some of them has an unknown kept cell */
    uint64_t *present, *unknown; /* [cap / 64 * n_out] */
    int64_t n;           /* distinct rows (patterns) */
    int any_unknown;     /* some pattern has an unknown kept cell */
    int pattern_group_unknown; /* the same among those not transposed */
    int64_t *first;      /* [cap] row of each pattern */
    uint64_t *hash;      /* [cap] (while rows come) */
    uint64_t *pattern_present, *pattern_unknown; /* [cap / 64 * n_out] */
    int64_t *slot;       /* [n_slots] patterns, -1 empty (while rows come) */
    size_t n_slots;
} persiste__repeats;

/* Ready for rows of n_cells cells; to[n_cells] is copied. */
int persiste__repeats_init(persiste__repeats *r, int64_t n_cells,
                           const int32_t *to, int32_t n_out, int drop_absent,
                           const char *where);
/* Room for n_rows rows in all (a guess spares growing the arrays). */
int persiste__repeats_reserve(persiste__repeats *r, int64_t n_rows,
                              const char *where);
/* The next row (row r->n_rows of rows). */
int persiste__repeats_add(persiste__repeats *r, const uint64_t *rows,
                          const char *where);
/* No more rows: the last groups transposed, the hash table freed. */
void persiste__repeats_end(persiste__repeats *r, const uint64_t *rows);
/* Accepts a zeroed r. */
void persiste__repeats_free(persiste__repeats *r);

/* Fills the pattern fields of d (called once its bits are packed): by a
 * search of its columns, or from found (its rows the kept families'
 * src[], col_of_tip[] each tip's column, -1 if none), taking its pattern
 * bits. */
int persiste__data_patterns(persiste_data *d, persiste__repeats *found,
                            const int64_t *src, const int64_t *col_of_tip,
                            const char *where);

/* The cells the builder reads, in one of two forms:
 *  - states != NULL: a byte matrix, cell (family f, taxon t) at
 *    states[f * family_stride + t * taxon_stride], each 0, 1 or 2 (checked);
 *  - else `bits`, as the table reader packs them while it parses: rows of
 *    cells, a row per taxon if rows_are_taxa (its cells are the families),
 *    else a row per family (its cells are the taxa). Cells 64w .. 64w+63 of
 *    row r are word w: bits[r * row_stride + w * word_stride] holds bit
 *    c % 64 for a present cell c, the word unknown_at after it for an
 *    unknown one (bits past the row's end are 0). */
typedef struct {
    const uint8_t *states;
    int64_t family_stride, taxon_stride;
    const uint64_t *bits;
    int rows_are_taxa;
    int64_t row_stride, word_stride, unknown_at;
    /* bits with rows of families only, or NULL: the families' bits and
     * patterns found as the rows came (taken by the builder) */
    persiste__repeats *repeats;
} persiste__cells;

/* Packs n cells (each 0, 1 or 2) into bits as persiste__cells holds them:
 * present[(n + 63) / 64] and unknown[(n + 63) / 64]. */
void persiste__pack_row(const uint8_t *cells, int64_t n, uint64_t *present,
                        uint64_t *unknown);

/* The one builder behind persiste_data_from_matrix and the file readers.
 * `where` names the source in messages ("matrix" or a file path). */
int persiste__data_build(persiste_data **out, const persiste_tree *tree,
                         const persiste__cells *cells, int64_t n_families,
                         int64_t n_taxa, const char *const *taxon_names,
                         const char *const *family_names, uint32_t flags,
                         const char *where);

/* The whole file at path in *text[*len + 1] (NUL-terminated, to be freed
 * with persiste__free), inflated when it starts with the gzip magic bytes.
 * Errors (PERSISTE_E_IO, _NOMEM) name the path. Defined in source.c. */
int persiste__read_text(const char *path, char **text, size_t *len);

/* ---- Model ------------------------------------------------------------- */
struct persiste_model {
    int condition;     /* persiste_condition */
    int root_prior;    /* persiste_root_prior */
    double root_freq;  /* pi1 for PERSISTE_ROOT_FIXED */
    double min_branch_length;
    int min_present;   /* k >= 1 observed presences under PRESENT */
    /* Observation error: n_error 0 (none), 1 (global) or n_tips pairs. */
    int32_t n_error;
    double *error_absent, *error_present;   /* [n_error] a_g, b_g */
    /* Rate categories: n_cat 0 (none) or K. */
    int32_t n_cat;
    int cat_shared;    /* loss multipliers were given as the gain ones */
    double *cat_weight, *cat_gain, *cat_loss; /* [n_cat] */
    /* Lineage multipliers per node's branch: n_lineage 0 or n_nodes. */
    int32_t n_lineage;
    double *lin_gain, *lin_loss;            /* [n_lineage] */
};

/* The model options that every tree must fit (error pairs per tip, lineage
 * multipliers per node): PERSISTE_E_INVALID with a message if not. */
int persiste__model_check_tree(const persiste_model *model,
                               const persiste_tree *tree);
/* 1 when the model is the plain two-state model that the fast paths
 * (blocks, rows, clades, site repeats) evaluate: no error (or all 0), no
 * categories (or one of multiplier 1), k = 1, multipliers all 1. */
int persiste__model_is_plain(const persiste_model *model);
/* Whether a family with n_present observed presences among n_known known
 * cells lies inside the model's conditioning event (lib/model/model.c):
 * the one definition the simulator's rejection and
 * persiste_data_observable share. */
int persiste__model_event(const persiste_model *m, int64_t n_present,
                          int64_t n_known);
/* The stationary share of presence of a category with multipliers g and
 * l (either may be 0) on base rates whose log ratio is
 * d = log loss - log gain: the limit along equal multipliers when both
 * are 0 (lib/eval/general.c, lib/eval/reconstruct.c, lib/model/simulate.c
 * take it when the category's rates are 0 or underflow). */
static inline double persiste__category_share(double d, double g, double l)
{
    if (g != l && (g == 0.0 || l == 0.0))
        return g == 0.0 ? 0.0 : 1.0;
    return 1.0 / (1.0 + exp(d + (g == l ? 0.0 : log(l) - log(g))));
}

/* The error pair of tip t: (0, 0) without the error model. */
static inline void persiste__model_error(const persiste_model *m, int32_t t,
                                         double *a, double *b)
{
    int32_t i = m->n_error == 1 ? 0 : t;
    *a = m->n_error ? m->error_absent[i] : 0.0;
    *b = m->n_error ? m->error_present[i] : 0.0;
}

/* ---- Worker pool (C11 threads) ----------------------------------------- */
typedef struct persiste__pool persiste__pool;
/* fn(arg, task, worker): worker in [0, n_threads), task in [0, n_tasks). */
typedef void (*persiste__task_fn)(void *arg, int64_t task, int worker);

/* n_threads >= 1 counts the calling thread; fewer may start (see _size). */
int persiste__pool_create(persiste__pool **out, int n_threads);
void persiste__pool_destroy(persiste__pool *pool);
/* Frees the pool's memory without joining or touching its mutexes: for a
 * forked child, where the workers do not exist. */
void persiste__pool_abandon(persiste__pool *pool);
/* Threads running, the caller included; 1 for NULL. */
int persiste__pool_size(const persiste__pool *pool);
/* Runs every task once, handed out dynamically; the caller works too (as
 * worker 0) and returns when all tasks are done and every worker is idle
 * again, so fn and arg may go out of scope. Worker w always gets id w.
 * NULL pool, one thread or one task: runs inline in the caller. Not
 * reentrant: fn must not call it on the same pool. */
void persiste__pool_run(persiste__pool *pool, int64_t n_tasks,
                        persiste__task_fn fn, void *arg);

/* Wakes workers asleep to spin (best effort, a few microseconds when some
 * sleep, nothing otherwise): a caller about to run a job calls it first,
 * so that waking overlaps its own preparations (25 us on this machine). */
void persiste__pool_wake(persiste__pool *pool);
/* fn(arg, w, w) once on every thread w of the pool, all at once: each
 * does its own share, and shares may wait for each other's progress
 * (persiste__await_zero), which a run's dynamic tasks must not. */
void persiste__pool_run_each(persiste__pool *pool, persiste__task_fn fn,
                             void *arg);
/* Until *x is 0 (acquire), spinning as the pool's workers wait. */
void persiste__await_zero(atomic_int_fast64_t *x);

/* A thread of its own, started with fn(arg); 1 if it runs. TSan builds
 * start it through pthreads (lib/runtime/pool.c says why). */
typedef struct {
    thrd_t id;
    int (*fn)(void *);
    void *arg;
} persiste__thread;
int persiste__thread_start(persiste__thread *t, int (*fn)(void *), void *arg);
void persiste__thread_join(persiste__thread *t);

/* ---- Context ----------------------------------------------------------- */
struct persiste__scratch; /* per-worker buffers, see kernel.h */
struct persiste__classes; /* site repeats, see kernel.h */

struct persiste_ctx {
    int requested_threads;
    persiste__pool *pool;        /* NULL when single-threaded */
    pid_t owner_pid;             /* fork detection */
    /* pid of the process whose thread is inside a call, 0 = free. A pid,
     * not a flag, so that a child forked during a call is not stuck busy. */
    _Atomic pid_t busy;
    /* Indexed by worker id, allocated by the batch code; entries may be
     * NULL and n_scratch may lag persiste__ctx_workers(). Emptied whenever
     * the thread count changes. */
    int n_scratch;
    struct persiste__scratch **scratch; /* [n_scratch] */
    struct persiste__classes *classes;  /* of the last (tree, data) */
    int64_t n_impossible;
};

/* Call first in every function that uses a ctx (PERSISTE_E_INVALID for
 * NULL, PERSISTE_E_BUSY if another thread is inside); on success pair it
 * with persiste__ctx_leave. After fork() it rebuilds the pool in the child. */
int persiste__ctx_enter(persiste_ctx *ctx);
void persiste__ctx_leave(persiste_ctx *ctx);
/* Worker ids passed to task functions are in [0, persiste__ctx_workers). */
int persiste__ctx_workers(const persiste_ctx *ctx);
/* persiste__pool_run and _run_each on the ctx's pool, or inline when it
 * has none. */
void persiste__ctx_run(persiste_ctx *ctx, int64_t n_tasks,
                       persiste__task_fn fn, void *arg);
void persiste__ctx_run_each(persiste_ctx *ctx, persiste__task_fn fn,
                            void *arg);
/* In lib/eval/scratch.c; accepts NULL. */
void persiste__scratch_destroy(struct persiste__scratch *s);
/* In lib/eval/classes.c; accepts NULL. */
void persiste__classes_destroy(struct persiste__classes *c);

#endif
