/* Context: thread-count setting, the worker pool, per-worker scratch, the
 * one-call-at-a-time guard and fork recovery. */
#include <stdatomic.h>
#include <unistd.h>

#include "internal.h"

enum { MAX_THREADS = 256 };

static void free_scratch(persiste_ctx *ctx)
{
    for (int i = 0; i < ctx->n_scratch; i++)
        persiste__scratch_destroy(ctx->scratch[i]);
    persiste__free(ctx->scratch);
    ctx->scratch = NULL;
    ctx->n_scratch = 0;
}

int persiste_ctx_create(persiste_ctx **out)
{
    if (!out)
        return persiste__error(PERSISTE_E_INVALID, "ctx: out is NULL");
    *out = NULL;
    persiste_ctx *ctx = persiste__calloc(1, sizeof *ctx);
    if (!ctx)
        return persiste__error(PERSISTE_E_NOMEM, "ctx: out of memory");
    ctx->requested_threads = 1;
    ctx->owner_pid = getpid();
    atomic_init(&ctx->busy, 0);
    *out = ctx;
    return PERSISTE_OK;
}

void persiste_ctx_destroy(persiste_ctx *ctx)
{
    if (!ctx)
        return;
    /* In a forked child the workers do not exist: joining would hang. */
    if (getpid() == ctx->owner_pid)
        persiste__pool_destroy(ctx->pool);
    else
        persiste__pool_abandon(ctx->pool);
    free_scratch(ctx);
    persiste__classes_destroy(ctx->classes);
    persiste__free(ctx);
}

int persiste__ctx_enter(persiste_ctx *ctx)
{
    if (!ctx)
        return persiste__error(PERSISTE_E_INVALID, "ctx: context is NULL");
    pid_t me = getpid();
    pid_t holder = 0;
    /* A holder from another process is a thread of our parent, frozen in
     * the middle of a call when it forked: it will never leave here. */
    if (!atomic_compare_exchange_strong(&ctx->busy, &holder, me) &&
        (holder == me ||
         !atomic_compare_exchange_strong(&ctx->busy, &holder, me)))
        return persiste__error(PERSISTE_E_BUSY,
                               "ctx: context in use by another thread "
                               "(one call at a time per context)");
    if (me != ctx->owner_pid) {
        persiste__pool_abandon(ctx->pool);
        ctx->pool = NULL;
        ctx->owner_pid = me;
        if (ctx->requested_threads > 1) {
            int rc =
                persiste__pool_create(&ctx->pool, ctx->requested_threads);
            if (rc != PERSISTE_OK) {
                persiste__ctx_leave(ctx);
                return rc;
            }
        }
    }
    return PERSISTE_OK;
}

void persiste__ctx_leave(persiste_ctx *ctx)
{
    atomic_store(&ctx->busy, 0);
}

int persiste__ctx_workers(const persiste_ctx *ctx)
{
    return persiste__pool_size(ctx->pool);
}

void persiste__ctx_run(persiste_ctx *ctx, int64_t n_tasks,
                       persiste__task_fn fn, void *arg)
{
    persiste__pool_run(ctx->pool, n_tasks, fn, arg);
}

void persiste__ctx_run_each(persiste_ctx *ctx, persiste__task_fn fn,
                            void *arg)
{
    persiste__pool_run_each(ctx->pool, fn, arg);
}

static int set_threads(persiste_ctx *ctx, int64_t value)
{
    if (value < 0 || value > MAX_THREADS)
        return persiste__error(PERSISTE_E_INVALID,
                               "ctx: thread count %lld outside 0..%d",
                               (long long)value, MAX_THREADS);
    if (value == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        value = cores < 1 ? 1 : cores > MAX_THREADS ? MAX_THREADS : cores;
    }
    if (value == ctx->requested_threads)
        return PERSISTE_OK;
    persiste__pool *pool = NULL;
    if (value > 1) {
        int rc = persiste__pool_create(&pool, (int)value);
        if (rc != PERSISTE_OK)
            return rc; /* the old pool stays in service */
    }
    persiste__pool_destroy(ctx->pool);
    ctx->pool = pool;
    ctx->requested_threads = (int)value;
    /* Scratch is per worker id: rebuild it for the new set of workers. */
    free_scratch(ctx);
    return PERSISTE_OK;
}

int persiste_ctx_set_param(persiste_ctx *ctx, int param, int64_t value)
{
    int rc = persiste__ctx_enter(ctx);
    if (rc != PERSISTE_OK)
        return rc;
    if (param == PERSISTE_CTX_NTHREADS)
        rc = set_threads(ctx, value);
    else
        rc = persiste__error(PERSISTE_E_INVALID,
                             "ctx: unknown parameter %d", param);
    persiste__ctx_leave(ctx);
    return rc;
}

int persiste_ctx_get_param(const persiste_ctx *ctx, int param,
                           int64_t *value)
{
    if (!ctx || !value)
        return persiste__error(PERSISTE_E_INVALID,
                               "ctx: context or value is NULL");
    if (param != PERSISTE_CTX_NTHREADS)
        return persiste__error(PERSISTE_E_INVALID,
                               "ctx: unknown parameter %d", param);
    /* The busy guard as for every entry point: a concurrent set_param
     * replaces the pool this reads. Entering writes only the atomic busy
     * field (and, after a fork, the pool: the same object, not its
     * settings), so the const of the interface still holds for the
     * caller. */
    persiste_ctx *c = (persiste_ctx *)ctx;
    int rc = persiste__ctx_enter(c);
    if (rc != PERSISTE_OK)
        return rc;
    *value = persiste__ctx_workers(c);
    persiste__ctx_leave(c);
    return PERSISTE_OK;
}

int64_t persiste_ctx_n_impossible(const persiste_ctx *ctx)
{
    return ctx ? ctx->n_impossible : 0;
}
