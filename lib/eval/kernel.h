/* The block kernel: one block of families evaluated over the
 * whole tree (families in SIMD lanes), and the per-worker buffers it uses.
 * kernel.c is compiled once per instruction set (see lib/meson.build);
 * persiste__kernel() picks the best one the CPU runs. */
#ifndef PERSISTE_KERNEL_H
#define PERSISTE_KERNEL_H

#include <math.h>

#include "internal.h"

/* Families per block, in lib/eval/kernel.c (W: the kernel's vector width):
 * four vectors, as much independent work per visit of a node as the
 * registers hold without spilling, but 8 lanes for gradients of lanes with
 * rates of their own, whose tables of every branch must stay in cache.
 * Each kernel records its own in persiste__eval_block_<isa>_<kind>_lanes. */
#define PERSISTE_LANES_LIK (4 * W)
#define PERSISTE_LANES_GRAD 8
#define PERSISTE_LANES_GRADPAIR (4 * W) /* gradients, one rate pair for all */

/* The kernels: what a job asks for, see persiste__kernel. */
enum persiste__kind {
    PERSISTE_KIND_LIK,
    PERSISTE_KIND_GRAD,
    PERSISTE_KIND_GRADPAIR
};
/* Lanes of the widest vector (AVX-512): gradients add a node's branch terms
 * lane-wise into [n_nodes][PERSISTE_VECTOR_LANES] (the block's vectors
 * summed in order; narrower kernels leave the lanes they lack at 0). */
#define PERSISTE_VECTOR_LANES 8

/* Rows of a transition table entry: the matrix, then its derivatives with
 * respect to log gain (G), log loss (L) and the branch length (T). */
enum { PERSISTE_P00, PERSISTE_P01, PERSISTE_P10, PERSISTE_P11,
       PERSISTE_D01G, PERSISTE_D01L, PERSISTE_D10G, PERSISTE_D10L,
       PERSISTE_D01T, PERSISTE_D10T, PERSISTE_NP };
#define PERSISTE_NP_LIK 4 /* rows a likelihood needs */
#define PERSISTE_NP_LANE 3 /* rows a gradient keeps for lanes' own rates */

/* Clade tables (lib/eval/clades.c, lib/eval/kernel/clades.h): a likelihood at one
 * rate pair looks up the partial at the root of each largest subtree of at
 * most PERSISTE_CLADE_TIPS tips, indexed by its tips' bits, instead of
 * pruning its nodes: 2^k patterns of k tips, built once per pair and
 * worker by the same arithmetic as the pruning (the same results, bitwise).
 * A clade's internal nodes are first..root, contiguous in post-order, at
 * most PERSISTE_CLADE_TIPS - 1 of them (one-child nodes count); its tips
 * are clade_tips[tip0 ..], tip i giving bit i of the index.
 * 5 tips: 32 entries, two permutes and a blend a vector with AVX-512; 6
 * (four permutes) gained nothing, 8 (gathers) was 7% slower. */
#define PERSISTE_CLADE_TIPS 5
struct persiste__clade {
    int32_t first, root, n_tips, tip0;
    size_t table; /* offset of its table, [state][entries], in clade_tab */
};
/* Entries of a clade table per state: a whole vector at least. */
static inline size_t persiste__clade_entries(int n_tips)
{
    size_t n = (size_t)1 << n_tips;
    return n < PERSISTE_VECTOR_LANES ? PERSISTE_VECTOR_LANES : n;
}

/* A family's log-likelihood from its scaled root likelihood and number of
 * 2^256 rescales, then less log P(observable): -inf where impossible. Two
 * steps, so that the classes can take the first before the conditioning
 * is known, with the same bits. */
static inline double persiste__unconditioned(double lk, int64_t nscale)
{
    return lk > 0.0 ? log(lk) - (double)nscale * 256 *
                                    0.693147180559945309417232121458176568
                    : -INFINITY;
}
static inline double persiste__conditioned(double ll, double log_cond)
{
    return isfinite(log_cond) ? ll - log_cond : -INFINITY;
}

/* Site repeats (lib/eval/classes.c, lib/eval/kernel/classes.h): a likelihood at one
 * rate pair (or a few, one pass each) computes each distinct partial of a
 * node once. The classes of
 * an internal node are the distinct tuples of its children's classes over
 * the data's patterns (a tip's class is its state: 0 absent, 1 present,
 * 2 unknown), numbered by first appearance. A class's partial comes from
 * its children's classes by the walk's own arithmetic, so every family gets
 * the bits the blocks give it. On this project's simulated data 1.3% of
 * (node, family) pairs are distinct (benchmarks/repeats.py).
 * The patterns are cut into one group per thread, each with classes of its
 * own: a thread then reads only what it wrote, in its own cache. (Shares of
 * every node's classes, which threads read from each other, made 2
 * threads slower than 1 on this machine; the groups repeat 13% of the
 * classes here.) Kept in the ctx for one (tree, data, threads), found by
 * the objects' serial numbers. */
struct persiste__job;
#define PERSISTE_CLASS_PAD PERSISTE_VECTOR_LANES /* classes a node rounds to */
struct persiste__class_group {
    int64_t p0, p1;     /* its patterns */
    int64_t f0, f1;     /* its families, in the classes' family[] */
    int64_t total;      /* entries of x and cnt */
    int64_t *n_class;   /* [n_nodes] classes (0 for tips) */
    int64_t *base;      /* [n_nodes] node's first class in x and cnt: its
                         * entries are reused once its parent is done */
    int64_t *id_base;   /* [n_nodes] node's children's class of each of its
                         * classes: ids[id_base + j * padded + class] */
    void *ids;          /* uint16_t where ids16, else int32_t */
    int ids16;          /* every class index fits 16 bits: at most 65,536
                         * patterns in the group */
    double *x;          /* [2][total] partials: x0, then x1 */
    int32_t *cnt;       /* [total] 2^256 rescales below and at the class */
    unsigned char *scaled; /* [n_nodes] some cnt of the node > 0 */
    double *root_ll;    /* its root classes' log-likelihoods, not
                         * conditioned (persiste__unconditioned), in the
                         * classes' root_ll */
};
enum persiste__classes_state {
    PERSISTE_CLASSES_UNBUILT,
    PERSISTE_CLASSES_BUILT,
    PERSISTE_CLASSES_DECLINED /* over the limits (lib/eval/classes.c) */
};
struct persiste__classes {
    uint64_t tree_serial, data_serial; /* the key (0: none) ... */
    int threads;                       /* ... with the groups' number */
    int state;          /* enum persiste__classes_state */
    int calls;          /* likelihood calls seen for the key */
    int32_t n_nodes;
    int64_t n_patterns;
    int64_t found;      /* classes of all groups (not padded) */
    struct persiste__class_group *group; /* [threads] */
    double *root_ll;    /* every group's root classes, padded */
    int32_t *root_at;   /* [n_patterns] each pattern's entry in root_ll */
    int64_t *family;    /* [n_families] the families, group by group */
};
static inline int64_t persiste__class_padded(int64_t n)
{
    return (n + PERSISTE_CLASS_PAD - 1) / PERSISTE_CLASS_PAD *
           PERSISTE_CLASS_PAD;
}
/* 1 if job (a likelihood at n_pairs rate pairs, at most
 * PERSISTE_CLASSES_PAIRS; 0: a gradient or more pairs) should run on
 * classes, once per pair, which are then ready for `threads` threads
 * (found at the PERSISTE_CLASSES_CALLS-th such call for a (tree, data), or
 * declined: see lib/eval/classes.c), 0 if not, or a negative status. */
#define PERSISTE_CLASSES_CALLS 16
#define PERSISTE_CLASSES_PAIRS 4
int persiste__classes_prepare(struct persiste__classes **c,
                              const struct persiste__job *job, int n_pairs,
                              int threads);
/* For tests: 1 builds at the first call however little the classes save,
 * a group per thread however small the work; 2 the same with 32-bit ids
 * (else 16 bits up to 65,536 patterns a group); -1 never; 0 the default. */
void persiste__classes_mode(int mode);
/* The partials of a group's classes of node v (and at the root, root_ll)
 * from the transition tables in s (v < 0: fill them, at the job's pair). */
typedef void (*persiste__classes_fn)(const struct persiste__job *job,
                                     struct persiste__class_group *g,
                                     struct persiste__scratch *s, int32_t v);
persiste__classes_fn persiste__classes_kernel(void);

/* The rates of a batch call in one pass: *ok = every |log_gain[f]| and
 * |log_loss[f]| <= bound (none NaN), *one_pair = all pairs have the first
 * one's bits. Vectorised per instruction set: a call's only O(families)
 * work before its threads start. */
typedef void (*persiste__scan_fn)(const double *log_gain,
                                  const double *log_loss, int64_t n,
                                  double bound, int *ok, int *one_pair);
persiste__scan_fn persiste__scan_kernel(void);

/* Per-worker buffers sized for a tree, reused across calls (no allocation
 * in the hot path). Lane arrays are [node or slot][row][lane]. */
struct persiste__scratch {
    struct {
        size_t p_lane, p_uni, in, b, acd, out, fx, cond_branch, branch_lane,
            slot, oslot, branch_sums, clades, clade_tips, clade_tab,
            clade_ok;
    } cap; /* elements allocated */
    double *p_lane;  /* [edge][PERSISTE_NP_LANE][L] gradients: what the
                      * transitions of a rate pair a lane are built from */
    double *p_uni;   /* [edge][rows] transitions of a block-wide pair (edge
                      * k: the branch above tree->children[k]) */
    double *in;      /* [slot][2][L] inside partials of the pattern */
    double *b;       /* [slot][2][L] P(some tip below present | state) */
    double *acd;     /* [slot][1 or 3][6][L] P(all absent a0 a1, all present
                      * c0 c1, mixed d0 d1 | state), with gradients also its
                      * derivatives in log gain and log loss */
    double *out;     /* [oslot][2][L] outside partials (reverse pass) */
    double *fx;      /* [n_nodes][5][L] a child's factors f0, f1, x1 - x0
                      * and its siblings' prefix product, by its position in
                      * the children array */
    double *cond_branch; /* [n_nodes][PERSISTE_VECTOR_LANES] conditioning
                          * terms of the cached pair (packed to [n_nodes]
                          * once computed) */
    double *branch_lane; /* [n_nodes][PERSISTE_VECTOR_LANES] branch terms of
                          * the current chunk */
    int32_t *slot;   /* [n_nodes] buffer slot of each internal node */
    int32_t *oslot;  /* [n_nodes] outside slot of each node */
    double *branch_sums; /* worker 0: per-chunk branch sums of a round */
    struct persiste__clade *clades; /* worker 0: the job's clades */
    int32_t *clade_tips; /* worker 0: their tips; [2][n_nodes] while found */
    double *clade_tab;   /* the clades' tables at the cached pair */
    unsigned char *clade_ok; /* [clade] its table holds no partial that the
                              * pruning would rescale (else it prunes) */
    struct persiste__rows *rows; /* worker 0: grouping of families */
    /* Cache for blocks whose lanes all share one rate pair. */
    int cache_valid;
    int clades_built; /* clade_tab holds the cached pair's tables */
    int64_t pair_blocks; /* blocks in a row at the cached pair */
    double cache_log_gain, cache_log_loss;
    double cache_log_cond, cache_inv_cond, cache_dcond_g, cache_dcond_l;
};

/* Everything a batch call evaluates, shared read-only by the workers. */
struct persiste__job {
    const persiste_tree *tree;
    const persiste_data *data;
    const persiste_model *model;
    int64_t n_families;   /* lanes to evaluate: families, or rows */
    const uint64_t *present, *unknown; /* their bits, data layout */
    int any_unknown;                   /* some unknown bit is set */
    const double *log_gain, *log_loss, *weight;
    double *loglik, *d_log_gain, *d_log_loss; /* NULL when not wanted */
    int gradient;                             /* reverse passes wanted */
    int one_pair;  /* every family has the same rates: no per-lane tables */
    int lanes;     /* families per block of the job's kernel */
    /* slot[v] of every internal node v: a stack of few buffers for the
     * likelihood alone (they stay in L1), v - n_tips for gradients, whose
     * reverse pass reads every partial; every tip's is one more slot, of
     * ones. */
    const int32_t *slot;
    /* For gradients, oslot[v]: where node v's outside vector lives, a
     * stack of few slots in the reverse pass's order; the tips share one
     * that nothing reads. */
    const int32_t *oslot;
    /* Clades looked up at a block's pair (likelihoods only, else none). */
    const struct persiste__clade *clades;
    const int32_t *clade_tips;
    int32_t n_clades;
};

/* A worker's buffers: create them (empty), the slot array of worker 0, and
 * room for a job with n_bufs partial buffers (see assign_slots). */
int persiste__scratch_create(struct persiste__scratch **s);
int persiste__scratch_slots(struct persiste__scratch *s, size_t n_nodes);
int persiste__scratch_branch_sums(struct persiste__scratch *s, size_t n);
int persiste__scratch_reserve(struct persiste__scratch *s,
                              const struct persiste__job *job, size_t n_bufs);

/* Fill slot[] for job->gradient (see struct persiste__job); returns the
 * number of buffers they use. persiste__assign_oslots fills oslot[]. */
int32_t persiste__assign_slots(const persiste_tree *tree, int gradient,
                               int32_t *slot);
void persiste__assign_oslots(const persiste_tree *tree, int32_t *oslot);

/* Room in worker 0 for a tree's clades (at most one per two tips) and,
 * while they are found, two counts per node; then the job's clades into
 * it (lib/eval/clades.c); then room for their tables in every worker. */
int persiste__scratch_clades(struct persiste__scratch *s, size_t n_nodes,
                             size_t n_tips);
void persiste__assign_clades(struct persiste__scratch *s0,
                             struct persiste__job *job);
/* For tests: off = 1 prunes every node from now on (no clade tables). */
void persiste__clades_disable(int off);
int persiste__scratch_clade_tables(struct persiste__scratch *s,
                                   const struct persiste__job *job);

/* Evaluate block `block` (families block*L ...). branch: NULL or
 * [n_nodes][PERSISTE_VECTOR_LANES] lane-wise accumulator for
 * d(sum_f w_f loglik_f)/dt. */
typedef void (*persiste__block_fn)(const struct persiste__job *job,
                                   struct persiste__scratch *s, int64_t block,
                                   double *branch);
#define PERSISTE_KERNEL_DECL(isa)                                          \
    void persiste__eval_block_##isa##_lik(const struct persiste__job *,     \
                                          struct persiste__scratch *,       \
                                          int64_t, double *);               \
    void persiste__eval_block_##isa##_grad(const struct persiste__job *,    \
                                           struct persiste__scratch *,      \
                                           int64_t, double *);              \
    void persiste__eval_block_##isa##_gradpair(                             \
        const struct persiste__job *, struct persiste__scratch *, int64_t,  \
        double *);                                                          \
    void persiste__scan_rates_##isa(const double *, const double *,        \
                                    int64_t, double, int *, int *);         \
    void persiste__classes_##isa(const struct persiste__job *,             \
                                 struct persiste__class_group *,            \
                                 struct persiste__scratch *, int32_t);      \
    extern const int persiste__eval_block_##isa##_lik_lanes,                \
        persiste__eval_block_##isa##_grad_lanes,                            \
        persiste__eval_block_##isa##_gradpair_lanes;
PERSISTE_KERNEL_DECL(generic)
PERSISTE_KERNEL_DECL(avx2)
PERSISTE_KERNEL_DECL(avx512)

/* The fastest kernel of a kind this CPU runs (and the build has), and
 * its families per block. */
persiste__block_fn persiste__kernel(enum persiste__kind kind, int *lanes);
/* For tests: use kernel "avx512", "avx2" or "generic" from now on, and the
 * general path's copy for the same instruction set; -1 if the build lacks
 * it or the CPU cannot run it. */
int persiste__kernel_select(const char *isa);

/* Grouping of a job's families into rows (lib/eval/rows.c): returns 1 and points
 * the job's rates, weights and bits at the rows when that saves work, 0 to
 * evaluate the families as they are, or a negative status. */
struct persiste__rows;
int persiste__rows_prepare(struct persiste__rows **rows,
                           struct persiste__job *job);
/* Point the job's outputs at the rows' buffers; after the run, copy each
 * family's results from its row. */
void persiste__rows_outputs(const struct persiste__rows *rows,
                            struct persiste__job *job);
void persiste__rows_scatter(const struct persiste__rows *rows, int64_t nf,
                            double *loglik, double *d_log_gain,
                            double *d_log_loss);
void persiste__rows_destroy(struct persiste__rows *rows);

#endif
