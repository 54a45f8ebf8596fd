/* The general path (lib/eval/general.c) and the planner (lib/eval/plan.c).
 * Private to lib/eval. */
#ifndef PERSISTE_GENERAL_H
#define PERSISTE_GENERAL_H

#include "internal.h"

/* A batch call as the batch code checked it. Outputs may be NULL when not
 * wanted (loglik never is). */
struct persiste__call {
    const persiste_model *model;
    const persiste_tree *tree;
    const persiste_data *data;
    int64_t n_families;
    const double *log_gain, *log_loss, *weight;
    int one_pair; /* every family has the first family's rates (bitwise) */
    double *loglik, *d_log_gain, *d_log_loss, *d_branch, *d_model;
};

/* Which path serves a call: the one place where a path declines a model
 * option or a case. */
enum persiste__path {
    /* the plain model's fast paths (blocks, rows, clade tables, site
     * repeats; batch.c chooses among them by cost) */
    PERSISTE_PATH_FAST,
    /* every model option, exact gradients of every parameter */
    PERSISTE_PATH_GENERAL
};
enum persiste__path persiste__plan(const struct persiste__call *call);
/* For tests: 1 sends every call to the general path from now on. */
void persiste__plan_force_general(int on);

/* Size of d_model for a model on a tree (persiste_model_grad_layout). */
int64_t persiste__model_grad_size(const persiste_model *model);

/* Evaluates the call on the general path; sets ctx->n_impossible. Runs
 * the copy of lib/eval/general.c for the best instruction set the CPU has
 * (lib/eval/general_isa.c): every copy gives the same bits. */
int persiste__general_run(persiste_ctx *ctx, const struct persiste__call *c);
/* For tests: run the copy for "generic", "avx2" or "avx512" from now on
 * (persiste__kernel_select calls it); -1 if the build or CPU lacks it. */
int persiste__general_select(const char *isa);
int persiste__general_run_generic(persiste_ctx *ctx,
                                  const struct persiste__call *c);
int persiste__general_run_avx2(persiste_ctx *ctx,
                               const struct persiste__call *c);
int persiste__general_run_avx512(persiste_ctx *ctx,
                                 const struct persiste__call *c);

/* log sum_k w[k] exp(lk[k * stride]) over K categories and the posterior
 * weights rho[k * stride] (-inf and zeros when no category is possible):
 * the mixture of rate categories, for the general path and reconstruction
 * alike. */
static inline double persiste__mix(int K, const double *w, const double *lk,
                                   size_t stride, double *rho)
{
    double mx = -INFINITY;
    for (int k = 0; k < K; k++) {
        double a = lk[(size_t)k * stride];
        if (isfinite(a) && log(w[k]) + a > mx)
            mx = log(w[k]) + a;
    }
    if (!isfinite(mx)) {
        for (int k = 0; k < K; k++)
            rho[(size_t)k * stride] = 0.0;
        return -INFINITY;
    }
    double s = 0.0;
    for (int k = 0; k < K; k++) {
        double a = lk[(size_t)k * stride];
        s += isfinite(a) ? w[k] * exp(a - mx) : 0.0;
    }
    double lm = mx + log(s);
    for (int k = 0; k < K; k++) {
        double a = lk[(size_t)k * stride];
        rho[(size_t)k * stride] = isfinite(a) ? w[k] * exp(a - lm) : 0.0;
    }
    return lm;
}

#endif
