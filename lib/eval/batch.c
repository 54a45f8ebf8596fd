/* persiste_loglik_batch and persiste_gradient_batch: argument checks, the
 * split into fixed-size chunks of blocks handed to the workers, and the
 * deterministic reduction of branch gradients. */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "general.h"
#include "kernel.h"
#include "reconstruct.h"

/* Families per chunk and chunks per reduction round: constants, never
 * derived from the thread count, so every sum is added in the same order
 * whatever the number of threads (bitwise identical results). */
#define CHUNK_FAMILIES 256
#define ROUND_CHUNKS 16

struct batch {
    const struct persiste__job *job;
    persiste__block_fn eval_block;
    int lanes;               /* families per block */
    int64_t chunk_blocks;
    persiste_ctx *ctx;
    int64_t n_blocks;
    int64_t first_chunk;  /* of the current round */
    double *branch_bufs;  /* [ROUND_CHUNKS][n_nodes] or NULL */
};

static void run_chunk(void *arg, int64_t task, int worker)
{
    struct batch *b = arg;
    int64_t chunk = b->first_chunk + task;
    struct persiste__scratch *s = b->ctx->scratch[worker];
    size_t n = (size_t)b->job->tree->n_nodes;
    double *lanes = NULL;
    if (b->branch_bufs) {
        lanes = s->branch_lane;
        memset(lanes, 0, n * PERSISTE_VECTOR_LANES * sizeof(double));
    }
    int64_t end = (chunk + 1) * b->chunk_blocks;
    if (end > b->n_blocks)
        end = b->n_blocks;
    for (int64_t blk = chunk * b->chunk_blocks; blk < end; blk++)
        b->eval_block(b->job, s, blk, lanes);
    if (lanes) { /* the chunk's branch sums, lanes added in a fixed order */
        double *sum = b->branch_bufs + (size_t)task * n;
        for (size_t v = 0; v < n; v++) {
            double t = 0.0;
            for (int l = 0; l < PERSISTE_VECTOR_LANES; l++)
                t += lanes[v * PERSISTE_VECTOR_LANES + l];
            sum[v] = t;
        }
    }
}

/* |x[f]| <= bound: with log rates beyond +-100 the model's products leave
 * double range even with rescaling. */
static int check_array(const double *x, int64_t n, double bound,
                       const char *what, const persiste_data *data)
{
    for (int64_t f = 0; f < n; f++)
        if (!(fabs(x[f]) <= bound))
            return persiste__error(PERSISTE_E_DOMAIN,
                                   "%s[%lld] (family '%s') is %g: expected a "
                                   "number in [-%g, %g]",
                                   what, (long long)f, data->family_name[f],
                                   x[f], bound, bound);
    return PERSISTE_OK;
}

static int check_args(const persiste_ctx *ctx, const persiste_model *model,
                      const persiste_tree *tree, const persiste_data *data,
                      int64_t n_families, const double *log_gain,
                      const double *log_loss, const double *weight,
                      const double *loglik, int *one_pair)
{
    if (!ctx || !model || !tree || !data || !log_gain || !log_loss || !loglik)
        return persiste__error(PERSISTE_E_INVALID,
                               "batch: ctx, model, tree, data, log_gain, "
                               "log_loss and loglik must not be NULL");
    if (data->n_tips != tree->n_tips || data->fingerprint != tree->fingerprint)
        return persiste__error(PERSISTE_E_INVALID,
                               "batch: the data were bound to another tree "
                               "(tips differ)");
    if (n_families != data->n_families)
        return persiste__error(PERSISTE_E_INVALID,
                               "batch: n_families is %lld but the data hold "
                               "%lld families",
                               (long long)n_families,
                               (long long)data->n_families);
    if (model->condition == PERSISTE_CONDITION_VARIABLE && tree->n_tips < 2)
        return persiste__error(PERSISTE_E_INVALID,
                               "batch: conditioning on variable families "
                               "needs at least 2 tips");
    int rc, ok;
    persiste__scan_kernel()(log_gain, log_loss, n_families, 100, &ok,
                            one_pair);
    if (!ok) /* find it, for the message */
        return (rc = check_array(log_gain, n_families, 100, "log_gain",
                                 data))
                   ? rc
                   : check_array(log_loss, n_families, 100, "log_loss", data);
    if (weight &&
        (rc = check_array(weight, n_families, DBL_MAX, "weight", data)))
        return rc;
    return PERSISTE_OK;
}

/* Every worker's buffers for this job; slots in worker 0's, and clades
 * unless it runs on site repeats. */
static int reserve_scratch(persiste_ctx *ctx, struct persiste__job *job,
                           int classes)
{
    int workers = persiste__ctx_workers(ctx), rc;
    if (ctx->n_scratch < workers) {
        struct persiste__scratch **a = persiste__realloc(
            ctx->scratch, (size_t)workers * sizeof *a);
        if (!a)
            return persiste__error(PERSISTE_E_NOMEM, "workspace: out of memory");
        for (int i = ctx->n_scratch; i < workers; i++)
            a[i] = NULL;
        ctx->scratch = a;
        ctx->n_scratch = workers;
    }
    for (int i = 0; i < workers; i++)
        if ((rc = persiste__scratch_create(&ctx->scratch[i])))
            return rc;
    struct persiste__scratch *s0 = ctx->scratch[0];
    if ((rc = persiste__scratch_slots(s0, (size_t)job->tree->n_nodes)))
        return rc;
    size_t n_bufs = (size_t)persiste__assign_slots(job->tree, job->gradient,
                                                   s0->slot);
    job->slot = s0->slot;
    if (job->gradient)
        persiste__assign_oslots(job->tree, s0->oslot);
    job->oslot = s0->oslot;
    if (!job->gradient && !classes) {
        if ((rc = persiste__scratch_clades(s0, (size_t)job->tree->n_nodes,
                                           (size_t)job->tree->n_tips)))
            return rc;
        persiste__assign_clades(s0, job);
    }
    for (int i = 0; i < workers; i++)
        if ((rc = persiste__scratch_reserve(ctx->scratch[i], job, n_bufs)) ||
            (rc = persiste__scratch_clade_tables(ctx->scratch[i], job)))
            return rc;
    return PERSISTE_OK;
}

/* Evaluates into the job's outputs and d_branch. */
static int run(persiste_ctx *ctx, struct persiste__job *job,
               persiste__block_fn eval_block, double *d_branch)
{
    size_t n_nodes = (size_t)job->tree->n_nodes;
    int rc;
    struct batch b = {.job = job, .ctx = ctx};
    b.eval_block = eval_block;
    b.lanes = job->lanes;
    b.n_blocks = (job->n_families + b.lanes - 1) / b.lanes;
    b.chunk_blocks = CHUNK_FAMILIES / b.lanes;
    int64_t n_chunks = (b.n_blocks + b.chunk_blocks - 1) / b.chunk_blocks;
    if (!d_branch) {
        persiste__ctx_run(ctx, n_chunks, run_chunk, &b);
    } else {
        /* ROUND_CHUNKS chunk sums, then the running total */
        size_t n_sums;
        if ((rc = persiste__mul_size(n_nodes, ROUND_CHUNKS + 1, &n_sums)) ||
            (rc = persiste__scratch_branch_sums(ctx->scratch[0], n_sums)))
            return rc;
        b.branch_bufs = ctx->scratch[0]->branch_sums;
        double *sum = b.branch_bufs + ROUND_CHUNKS * n_nodes;
        memset(sum, 0, n_nodes * sizeof *sum);
        for (b.first_chunk = 0; b.first_chunk < n_chunks;
             b.first_chunk += ROUND_CHUNKS) {
            int64_t n = n_chunks - b.first_chunk;
            if (n > ROUND_CHUNKS)
                n = ROUND_CHUNKS;
            persiste__ctx_run(ctx, n, run_chunk, &b);
            for (int64_t k = 0; k < n; k++)
                for (size_t v = 0; v < n_nodes; v++)
                    sum[v] += b.branch_bufs[(size_t)k * n_nodes + v];
        }
        sum[n_nodes - 1] = 0.0; /* the root has no branch */
        memcpy(d_branch, sum, n_nodes * sizeof(double));
    }
    return PERSISTE_OK;
}

struct class_run {
    persiste_ctx *ctx;
    const struct persiste__job *job;
    const struct persiste__job *pair; /* the job from the pair's first
                                       * family on: its rates at index 0 */
    persiste__block_fn eval_block;
    persiste__classes_fn fn;
    atomic_int_fast64_t cond_left;  /* 1 until log_cond is known */
    atomic_int claimed;             /* a thread is computing it */
    double log_cond;
    atomic_int_fast64_t impossible; /* families, added once per thread */
};

/* Thread w: the pair's tables, its group's classes in post-order, the
 * conditioning if no other thread took it first, then its group's
 * families' values. No thread waits for another's group. */
static void run_class_group(void *arg, int64_t task, int worker)
{
    (void)task;
    struct class_run *r = arg;
    const struct persiste__job *job = r->job;
    const persiste_tree *tr = job->tree;
    struct persiste__classes *c = r->ctx->classes;
    struct persiste__scratch *s = r->ctx->scratch[worker];
    if (worker >= c->threads) /* more threads than patterns */
        return;
    struct persiste__class_group *g = &c->group[worker];
    r->fn(r->pair, g, s, -1);
    for (int32_t v = tr->n_tips; v < tr->n_nodes; v++)
        r->fn(r->pair, g, s, v);
    /* log P(observable) (log 1 = 0 without conditioning) the blocks' way:
     * a block of the pair's first family, whose value the scatter
     * overwrites */
    if (!atomic_exchange_explicit(&r->claimed, 1, memory_order_relaxed) &&
        job->model->condition != PERSISTE_CONDITION_NONE) {
        struct persiste__job first = *r->pair;
        first.n_families = 1; /* one family: a block of one pair */
        first.n_clades = 0;   /* no tables for one block */
        r->eval_block(&first, s, 0, NULL);
        r->log_cond = s->cache_log_cond;
        atomic_store_explicit(&r->cond_left, 0, memory_order_release);
    }
    persiste__await_zero(&r->cond_left);
    int64_t n_impossible = 0;
    double lg = r->pair->log_gain[0], ll0 = r->pair->log_loss[0];
    for (int64_t i = g->f0; i < g->f1; i++) {
        int64_t f = c->family[i];
        if (memcmp(&job->log_gain[f], &lg, sizeof lg) ||
            memcmp(&job->log_loss[f], &ll0, sizeof ll0))
            continue; /* another pair's */
        double ll = persiste__conditioned(
            c->root_ll[c->root_at[job->data->pattern[f]]], r->log_cond);
        job->loglik[f] = ll;
        n_impossible += isinf(ll) != 0;
    }
    atomic_fetch_add_explicit(&r->impossible, n_impossible,
                              memory_order_relaxed);
}

/* Evaluates a likelihood on the classes, once per rate pair (their first
 * families in first[0 .. n_pairs)), each class computed as its families'
 * blocks would compute it: the results do not depend on the thread
 * count. */
static void run_classes(persiste_ctx *ctx, struct persiste__job *job,
                        persiste__block_fn eval_block, const int64_t *first,
                        int n_pairs)
{
    int cond = job->model->condition != PERSISTE_CONDITION_NONE;
    int64_t n_impossible = 0;
    for (int k = 0; k < n_pairs; k++) {
        struct persiste__job pair = *job;
        pair.log_gain += first[k];
        pair.log_loss += first[k];
        pair.loglik += first[k];
        pair.n_families -= first[k];
        struct class_run r = {ctx, job, &pair, eval_block,
                              persiste__classes_kernel(), cond, 0, 0.0, 0};
        if (ctx->classes->threads == 1) /* the workers are not woken */
            run_class_group(&r, 0, 0);
        else
            persiste__ctx_run_each(ctx, run_class_group, &r);
        n_impossible += atomic_load(&r.impossible);
    }
    ctx->n_impossible = n_impossible;
}

/* The first family of each distinct rate pair into first[], in order of
 * appearance; returns their number, or max + 1 if there are more. */
static int find_pairs(const double *lg, const double *ll, int64_t n,
                      int64_t *first, int max)
{
    int k = 0;
    for (int64_t f = 0; f < n; f++) {
        int j = 0;
        while (j < k && (memcmp(&lg[f], &lg[first[j]], sizeof *lg) ||
                         memcmp(&ll[f], &ll[first[j]], sizeof *ll)))
            j++;
        if (j == k) {
            if (k == max)
                return max + 1;
            first[k++] = f;
        }
    }
    return k;
}

/* Evaluates the job's families in blocks, or its rows where grouping saves
 * work (see persiste__rows_prepare). */
static int run_rows(persiste_ctx *ctx, struct persiste__job *job,
                    persiste__block_fn eval_block, double *d_branch)
{
    int64_t n_families = job->n_families;
    double *loglik = job->loglik, *dg = job->d_log_gain, *dl = job->d_log_loss;
    int grouped = persiste__rows_prepare(&ctx->scratch[0]->rows, job);
    if (grouped < 0)
        return grouped;
    const struct persiste__rows *rows = ctx->scratch[0]->rows;
    if (grouped)
        persiste__rows_outputs(rows, job);
    int rc = run(ctx, job, eval_block, d_branch);
    if (rc == PERSISTE_OK && grouped)
        persiste__rows_scatter(rows, n_families, loglik, dg, dl);
    return rc;
}

int persiste_loglik_batch(persiste_ctx *ctx, const persiste_model *model,
                          const persiste_tree *tree, const persiste_data *data,
                          int64_t n_families, const double *log_gain,
                          const double *log_loss, double *loglik)
{
    return persiste_gradient_model_batch(ctx, model, tree, data, n_families,
                                         log_gain, log_loss, NULL, loglik,
                                         NULL, NULL, NULL, NULL);
}

int persiste_gradient_batch(persiste_ctx *ctx, const persiste_model *model,
                            const persiste_tree *tree,
                            const persiste_data *data, int64_t n_families,
                            const double *log_gain, const double *log_loss,
                            const double *weight, double *loglik,
                            double *d_log_gain, double *d_log_loss,
                            double *d_branch)
{
    return persiste_gradient_model_batch(ctx, model, tree, data, n_families,
                                         log_gain, log_loss, weight, loglik,
                                         d_log_gain, d_log_loss, d_branch,
                                         NULL);
}

/* The plain model on the fast paths: site repeats, rows or blocks. */
static int run_fast(persiste_ctx *ctx, const struct persiste__call *c)
{
    int rc;
    struct persiste__job job = {
        .tree = c->tree,
        .data = c->data,
        .model = c->model,
        .n_families = c->n_families,
        .present = c->data->present,
        .unknown = c->data->unknown,
        .any_unknown = c->data->any_unknown,
        .log_gain = c->log_gain,
        .log_loss = c->log_loss,
        .weight = c->weight,
        .loglik = c->loglik,
        .d_log_gain = c->d_log_gain,
        .d_log_loss = c->d_log_loss,
        .gradient = c->d_log_gain || c->d_log_loss || c->d_branch,
        .one_pair = c->one_pair,
    };
    persiste__block_fn eval_block = persiste__kernel(
        !job.gradient  ? PERSISTE_KIND_LIK
        : job.one_pair ? PERSISTE_KIND_GRADPAIR
                       : PERSISTE_KIND_GRAD,
        &job.lanes);
    /* Site repeats first (they need no workspace but decide what the
     * workspace holds), then the workspace: rows live in worker 0's. */
    int64_t first[PERSISTE_CLASSES_PAIRS] = {0};
    int n_pairs = job.gradient ? 0
                  : job.one_pair
                      ? 1
                      : find_pairs(c->log_gain, c->log_loss, c->n_families,
                                   first, PERSISTE_CLASSES_PAIRS);
    int classes = persiste__classes_prepare(&ctx->classes, &job, n_pairs,
                                            persiste__ctx_workers(ctx));
    rc = classes < 0 ? classes : reserve_scratch(ctx, &job, classes);
    if (rc == PERSISTE_OK && classes) { /* counts impossible families */
        run_classes(ctx, &job, eval_block, first, n_pairs);
    } else if (rc == PERSISTE_OK &&
               (rc = run_rows(ctx, &job, eval_block, c->d_branch)) ==
                   PERSISTE_OK) {
        int64_t n_impossible = 0;
        for (int64_t f = 0; f < c->n_families; f++)
            n_impossible += isinf(c->loglik[f]) != 0;
        ctx->n_impossible = n_impossible;
    }
    return rc;
}

int persiste_gradient_model_batch(
    persiste_ctx *ctx, const persiste_model *model, const persiste_tree *tree,
    const persiste_data *data, int64_t n_families, const double *log_gain,
    const double *log_loss, const double *weight, double *loglik,
    double *d_log_gain, double *d_log_loss, double *d_branch,
    double *d_model)
{
    int one_pair;
    int rc = check_args(ctx, model, tree, data, n_families, log_gain,
                        log_loss, weight, loglik, &one_pair);
    if (rc || (rc = persiste__model_check_tree(model, tree)))
        return rc;
    if ((rc = persiste__ctx_enter(ctx)))
        return rc;
    persiste__pool_wake(ctx->pool); /* while this thread prepares the job */
    struct persiste__call call = {
        .model = model, .tree = tree, .data = data,
        .n_families = n_families, .log_gain = log_gain,
        .log_loss = log_loss, .weight = weight, .one_pair = one_pair,
        .loglik = loglik, .d_log_gain = d_log_gain,
        .d_log_loss = d_log_loss, .d_branch = d_branch, .d_model = d_model};
    if (persiste__plan(&call) == PERSISTE_PATH_GENERAL) {
        rc = persiste__general_run(ctx, &call);
    } else {
        rc = run_fast(ctx, &call);
        if (rc == PERSISTE_OK && d_model) /* the plain model's: none */
            for (int64_t i = 0; i < persiste__model_grad_size(model); i++)
                d_model[i] = 0.0;
    }
    persiste__ctx_leave(ctx);
    return rc;
}

int persiste_reconstruct_batch(
    persiste_ctx *ctx, const persiste_model *model, const persiste_tree *tree,
    const persiste_data *data, int64_t n_families, const double *log_gain,
    const double *log_loss, const double *weight, const int32_t *group,
    int32_t n_groups, double *present, double *gains, double *losses,
    double *sum_present, double *sum_gains, double *sum_losses)
{
    int one_pair;
    double any; /* check_args wants an output; reconstruction has others */
    int rc = check_args(ctx, model, tree, data, n_families, log_gain,
                        log_loss, weight, &any, &one_pair);
    if (rc || (rc = persiste__model_check_tree(model, tree)))
        return rc;
    if (n_groups < 1)
        return persiste__error(PERSISTE_E_INVALID,
                               "reconstruct: n_groups is %d, expected >= 1",
                               (int)n_groups);
    for (int64_t f = 0; group && f < n_families; f++)
        if (group[f] < 0 || group[f] >= n_groups)
            return persiste__error(PERSISTE_E_INVALID,
                                   "reconstruct: group[%lld] (family '%s') "
                                   "is %d, outside 0..%d",
                                   (long long)f, data->family_name[f],
                                   (int)group[f], (int)n_groups - 1);
    size_t cells;
    if ((rc = persiste__mul_size((size_t)n_groups,
                                 (size_t)tree->n_nodes, &cells)))
        return rc;
    if ((rc = persiste__ctx_enter(ctx)))
        return rc;
    struct persiste__recon r = {
        .model = model, .tree = tree, .data = data,
        .n_families = n_families, .log_gain = log_gain,
        .log_loss = log_loss, .weight = weight, .group = group,
        .n_groups = n_groups, .present = present, .gains = gains,
        .losses = losses, .sum_present = sum_present,
        .sum_gains = sum_gains, .sum_losses = sum_losses};
    rc = persiste__reconstruct_run(ctx, &r);
    persiste__ctx_leave(ctx);
    return rc;
}
