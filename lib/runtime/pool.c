/* Persistent worker pool on C11 threads.
 *
 * Workers are created once and sleep on `wake` until the generation counter
 * moves. A run publishes (fn, arg, n_tasks), bumps the generation, and then
 * every thread, the caller included, takes task indices from the atomic
 * counter `next`. Each worker checks out through `active`; the caller
 * returns only when `active` is 0, so no worker still reads fn or arg.
 * Waits spin briefly before sleeping: consecutive runs are microseconds
 * apart in a likelihood evaluation, and a futex round trip would dominate. */
#include <stdatomic.h>

#include "internal.h"

/* Polling rounds before sleeping on the condition variable (tens of us).
 * Every YIELD_EVERY-th round yields the core: with more threads than cores
 * a pure spin starves the thread being waited for (measured on 2 cores,
 * 4 threads: 53 us per run spinning, 4 us yielding; 0.5 us at 2 threads). */
enum { SPIN_ROUNDS = 1000, YIELD_EVERY = 16 };

struct worker {
    persiste__pool *pool;
    int id;
    persiste__thread thread;
};

struct persiste__pool {
    mtx_t lock;
    cnd_t wake;            /* workers: generation moved or shutdown */
    cnd_t done;            /* caller: active dropped to 0 */
    int n_threads;         /* running, the caller included */
    struct worker *workers; /* [n_threads]; entry 0 (the caller) unused */
    /* The job, written by the caller before the generation is released. */
    persiste__task_fn fn;
    void *arg;
    int64_t n_tasks;
    int each;              /* task w is worker w's (persiste__pool_run_each) */
    atomic_uint generation;
    atomic_int shutdown;
    /* Threads asleep on a condition, and a counter that wakes them to spin
     * again without a job (persiste__pool_wake). */
    atomic_int sleepers;
    atomic_uint nudge;
    /* Written once per run by each worker, read while spinning. */
    char pad0[64];
    atomic_int active;
    /* Hammered once per task by every thread: keep it off the lines above. */
    char pad1[64];
    atomic_int_fast64_t next;
    char pad2[64];
};

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

typedef int (*pool_ready_fn)(persiste__pool *pool, unsigned seen);

static int job_ready(persiste__pool *pool, unsigned seen)
{
    return atomic_load_explicit(&pool->generation, memory_order_acquire) !=
               seen ||
           atomic_load_explicit(&pool->shutdown, memory_order_acquire);
}

static int workers_idle(persiste__pool *pool, unsigned seen)
{
    (void)seen;
    return atomic_load_explicit(&pool->active, memory_order_acquire) == 0;
}

/* Spin, then sleep on cv (until ready, or nudged back to spinning).
 * Whoever makes ready() true does so before taking the lock to signal cv,
 * so checking it under the lock loses no wakeup. */
static void wait_until(persiste__pool *pool, cnd_t *cv, pool_ready_fn ready,
                       unsigned seen)
{
    for (;;) {
        for (int i = 0; i < SPIN_ROUNDS; i++) {
            if (ready(pool, seen))
                return;
            if (i % YIELD_EVERY == YIELD_EVERY - 1)
                thrd_yield();
            else
                cpu_relax();
        }
        mtx_lock(&pool->lock);
        unsigned nudge = atomic_load_explicit(&pool->nudge,
                                              memory_order_relaxed);
        atomic_fetch_add_explicit(&pool->sleepers, 1, memory_order_relaxed);
        while (!ready(pool, seen) &&
               atomic_load_explicit(&pool->nudge, memory_order_relaxed) ==
                   nudge)
            cnd_wait(cv, &pool->lock);
        atomic_fetch_sub_explicit(&pool->sleepers, 1, memory_order_relaxed);
        mtx_unlock(&pool->lock);
        if (ready(pool, seen))
            return;
    }
}

void persiste__pool_wake(persiste__pool *pool)
{
    if (!pool ||
        atomic_load_explicit(&pool->sleepers, memory_order_relaxed) == 0)
        return;
    mtx_lock(&pool->lock);
    atomic_fetch_add_explicit(&pool->nudge, 1, memory_order_relaxed);
    cnd_broadcast(&pool->wake);
    mtx_unlock(&pool->lock);
}

void persiste__await_zero(atomic_int_fast64_t *x)
{
    for (int i = 0;
         atomic_load_explicit(x, memory_order_acquire) != 0; i++) {
        if (i % YIELD_EVERY == YIELD_EVERY - 1)
            thrd_yield();
        else
            cpu_relax();
    }
}

static void take_tasks(persiste__pool *pool, int worker)
{
    if (pool->each) {
        pool->fn(pool->arg, worker, worker);
        return;
    }
    int64_t task;
    while ((task = atomic_fetch_add_explicit(&pool->next, 1,
                                             memory_order_relaxed)) <
           pool->n_tasks)
        pool->fn(pool->arg, task, worker);
}

static int worker_main(void *p)
{
    struct worker *w = p;
    persiste__pool *pool = w->pool;
    /* Generation 0 is the pool's initial one; starting from it (not from a
     * fresh read) keeps a run published before this thread got going. */
    unsigned seen = 0;
    for (;;) {
        wait_until(pool, &pool->wake, job_ready, seen);
        if (atomic_load_explicit(&pool->shutdown, memory_order_acquire))
            return 0;
        seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        take_tasks(pool, w->id);
        if (atomic_fetch_sub_explicit(&pool->active, 1,
                                      memory_order_acq_rel) == 1) {
            mtx_lock(&pool->lock);
            cnd_signal(&pool->done);
            mtx_unlock(&pool->lock);
        }
    }
}

#ifdef __SANITIZE_THREAD__
/* gcc 12's libtsan intercepts pthread_create/join but not glibc's C11
 * thrd_create, which calls pthread internals directly: a thread TSan was
 * not told about crashes in its first hook. TSan builds therefore start
 * and join threads through pthreads (glibc's thrd_t is a pthread_t). The
 * pool (and the file reader) order their data with atomics only, so TSan,
 * which does not see the C11 mutexes either, still sees every
 * happens-before edge they rely on. */
#include <pthread.h>
static void *tsan_thread_main(void *p)
{
    persiste__thread *t = p;
    t->fn(t->arg);
    return NULL;
}
int persiste__thread_start(persiste__thread *t, int (*fn)(void *), void *arg)
{
    t->fn = fn;
    t->arg = arg;
    return pthread_create(&t->id, NULL, tsan_thread_main, t) == 0;
}
void persiste__thread_join(persiste__thread *t) { pthread_join(t->id, NULL); }
#else
int persiste__thread_start(persiste__thread *t, int (*fn)(void *), void *arg)
{
    t->fn = fn;
    t->arg = arg;
    return thrd_create(&t->id, fn, arg) == thrd_success;
}
void persiste__thread_join(persiste__thread *t) { thrd_join(t->id, NULL); }
#endif

static int start_worker(struct worker *w)
{
    return persiste__thread_start(&w->thread, worker_main, w);
}

int persiste__pool_create(persiste__pool **out, int n_threads)
{
    if (!out)
        return persiste__error(PERSISTE_E_INVALID, "pool: out is NULL");
    *out = NULL;
    if (n_threads < 1)
        return persiste__error(PERSISTE_E_INVALID,
                               "pool: need at least 1 thread, got %d",
                               n_threads);
    persiste__pool *pool = persiste__calloc(1, sizeof *pool);
    struct worker *workers =
        persiste__calloc((size_t)n_threads, sizeof *workers);
    if (!pool || !workers) {
        persiste__free(pool);
        persiste__free(workers);
        return persiste__error(PERSISTE_E_NOMEM,
                               "pool: cannot allocate %d workers", n_threads);
    }
    int ok_lock = mtx_init(&pool->lock, mtx_plain) == thrd_success;
    int ok_wake = cnd_init(&pool->wake) == thrd_success;
    int ok_done = cnd_init(&pool->done) == thrd_success;
    if (!ok_lock || !ok_wake || !ok_done) {
        if (ok_lock)
            mtx_destroy(&pool->lock);
        if (ok_wake)
            cnd_destroy(&pool->wake);
        if (ok_done)
            cnd_destroy(&pool->done);
        persiste__free(pool);
        persiste__free(workers);
        return persiste__error(PERSISTE_E_NOMEM,
                               "pool: cannot initialise mutex or condition");
    }
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->shutdown, 0);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->nudge, 0);
    atomic_init(&pool->active, 0);
    atomic_init(&pool->next, 0);
    pool->workers = workers;
    /* Threads that fail to start are simply not used: ids stay dense. */
    pool->n_threads = 1;
    for (int i = 1; i < n_threads; i++) {
        workers[i].pool = pool;
        workers[i].id = i;
        if (!start_worker(&workers[i]))
            break;
        pool->n_threads = i + 1;
    }
    *out = pool;
    return PERSISTE_OK;
}

void persiste__pool_destroy(persiste__pool *pool)
{
    if (!pool)
        return;
    mtx_lock(&pool->lock);
    atomic_store_explicit(&pool->shutdown, 1, memory_order_release);
    cnd_broadcast(&pool->wake);
    mtx_unlock(&pool->lock);
    for (int i = 1; i < pool->n_threads; i++)
        persiste__thread_join(&pool->workers[i].thread);
    cnd_destroy(&pool->done);
    cnd_destroy(&pool->wake);
    mtx_destroy(&pool->lock);
    persiste__pool_abandon(pool);
}

void persiste__pool_abandon(persiste__pool *pool)
{
    if (!pool)
        return;
    persiste__free(pool->workers);
    persiste__free(pool);
}

int persiste__pool_size(const persiste__pool *pool)
{
    return pool ? pool->n_threads : 1;
}

static void run(persiste__pool *pool, int64_t n_tasks, int each,
                persiste__task_fn fn, void *arg)
{
    mtx_lock(&pool->lock);
    pool->fn = fn;
    pool->arg = arg;
    pool->n_tasks = n_tasks;
    pool->each = each;
    atomic_store_explicit(&pool->next, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->active, pool->n_threads - 1,
                          memory_order_relaxed);
    /* Release: a worker that sees the new generation sees the job too. */
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    cnd_broadcast(&pool->wake);
    mtx_unlock(&pool->lock);
    take_tasks(pool, 0);
    wait_until(pool, &pool->done, workers_idle, 0);
}

void persiste__pool_run(persiste__pool *pool, int64_t n_tasks,
                        persiste__task_fn fn, void *arg)
{
    if (n_tasks <= 0)
        return;
    if (!pool || pool->n_threads == 1 || n_tasks == 1) {
        for (int64_t task = 0; task < n_tasks; task++)
            fn(arg, task, 0);
        return;
    }
    run(pool, n_tasks, 0, fn, arg);
}

void persiste__pool_run_each(persiste__pool *pool, persiste__task_fn fn,
                             void *arg)
{
    if (!pool || pool->n_threads == 1)
        fn(arg, 0, 0);
    else
        run(pool, pool->n_threads, 1, fn, arg);
}
