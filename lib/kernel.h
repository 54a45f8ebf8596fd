/* The block kernel: one block of PERSISTE_LANES families evaluated over the
 * whole tree (families in SIMD lanes), and the per-worker buffers it uses. */
#ifndef PERSISTE_KERNEL_H
#define PERSISTE_KERNEL_H

#include "internal.h"

#define PERSISTE_LANES 8

/* Per-worker buffers sized for a tree, reused across calls (no allocation
 * in the hot path). Arrays are [node][k][lane]. */
struct persiste__scratch {
    size_t cap_nodes;
    double *p;     /* [n][10][L]: P00 P01 P10 P11, then 6 derivatives */
    double *in;    /* [n][2][L] inside partials of the family's pattern */
    double *b;     /* [n][2][L] P(some tip below present | state) */
    double *acd;   /* [n][6][L] P(all absent: a0 a1, all present: c0 c1,
                    *           mixed: d0 d1 | state) */
    double *out;   /* [n][2][L] outside partials (reverse pass) */
    double *cond_branch; /* [n] conditioning branch terms of cached pair */
    /* Cache for blocks whose lanes all share one rate pair. */
    int cache_valid;
    double cache_log_gain, cache_log_loss;
    double cache_log_cond, cache_dcond_g, cache_dcond_l;
    double cache_inv_cond;
};

/* Everything a batch call evaluates, shared read-only by the workers. */
struct persiste__job {
    const persiste_tree *tree;
    const persiste_data *data;
    const persiste_model *model;
    int64_t n_families;
    const double *log_gain, *log_loss, *weight;
    double *loglik, *d_log_gain, *d_log_loss; /* NULL when not wanted */
    int gradient;                             /* reverse passes wanted */
};

/* Grow s to hold n_nodes; returns a status. */
int persiste__scratch_reserve(struct persiste__scratch **s, size_t n_nodes);

/* Evaluate block `block` (families block*L ...). branch: NULL or
 * [n_nodes] accumulator for d(sum_f w_f loglik_f)/dt. Returns the number
 * of impossible families in the block. */
int64_t persiste__eval_block(const struct persiste__job *job,
                             struct persiste__scratch *s, int64_t block,
                             double *branch);

#endif
