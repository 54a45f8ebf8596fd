/* Worker pool, context (params, busy guard, fork) and model handles. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <threads.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "internal.h"

/* ---- A task function that checks what the pool promises ----------------
 * Each task writes only its own slot with a plain store, so reading the
 * counts after run also checks (under TSan) that run waits for the work. */
enum { MAX_TASKS = 5000, MAX_WORKERS = 16 };

struct probe {
    int n_workers;
    int count[MAX_TASKS];
    pthread_mutex_t lock; /* not mtx_t: gcc 12's TSan does not see it */
    int seen[MAX_WORKERS];      /* worker id used at least once */
    thrd_t owner[MAX_WORKERS];  /* the thread that used each id */
    atomic_int bad;             /* id out of range or used by two threads */
};

static void probe_init(struct probe *p, int n_workers)
{
    memset(p, 0, sizeof *p);
    p->n_workers = n_workers;
    pthread_mutex_init(&p->lock, NULL);
    atomic_init(&p->bad, 0);
}

static void probe_task(void *arg, int64_t task, int worker)
{
    struct probe *p = arg;
    if (worker < 0 || worker >= p->n_workers) {
        atomic_store(&p->bad, 1);
        return;
    }
    p->count[task]++;
    pthread_mutex_lock(&p->lock);
    if (!p->seen[worker]) {
        p->seen[worker] = 1;
        p->owner[worker] = thrd_current();
    } else if (!thrd_equal(p->owner[worker], thrd_current())) {
        atomic_store(&p->bad, 1);
    }
    pthread_mutex_unlock(&p->lock);
}

/* 0 when every task in [0, n) ran exactly once since the last reset. */
static int probe_check(struct probe *p, int64_t n)
{
    if (atomic_load(&p->bad))
        return 1;
    for (int64_t t = 0; t < n; t++)
        if (p->count[t] != 1)
            return 2;
    for (int64_t t = n; t < MAX_TASKS; t++)
        if (p->count[t] != 0)
            return 3;
    /* The caller is worker 0. */
    if (p->seen[0] && !thrd_equal(p->owner[0], thrd_current()))
        return 4;
    return 0;
}

static void probe_reset_counts(struct probe *p)
{
    memset(p->count, 0, sizeof p->count);
}

/* ---- Pool ---------------------------------------------------------------- */
static persiste__pool *pool_with_probe(int n_threads, struct probe *p)
{
    persiste__pool *pool = NULL;
    assert_int_equal(persiste__pool_create(&pool, n_threads), PERSISTE_OK);
    assert_non_null(pool);
    assert_int_equal(persiste__pool_size(pool), n_threads);
    probe_init(p, n_threads);
    return pool;
}

static void pool_with_probe_done(persiste__pool *pool, struct probe *p)
{
    persiste__pool_destroy(pool);
    pthread_mutex_destroy(&p->lock);
}

static void pool_every_task_once(void **state)
{
    (void)state;
    static const int threads[] = {1, 2, 3, 4, 8};
    static const int64_t tasks[] = {0, 1, 2, 3, 5, 7, 8, 9, 64, 1000, 4999};
    for (size_t i = 0; i < sizeof threads / sizeof *threads; i++) {
        static struct probe p;
        persiste__pool *pool = pool_with_probe(threads[i], &p);
        for (size_t j = 0; j < sizeof tasks / sizeof *tasks; j++) {
            probe_reset_counts(&p);
            persiste__pool_run(pool, tasks[j], probe_task, &p);
            assert_int_equal(probe_check(&p, tasks[j]), 0);
        }
        pool_with_probe_done(pool, &p);
    }
}

/* Tasks slow enough that the workers take some: ids > 0 must show up. */
static void slow_task(void *arg, int64_t task, int worker)
{
    struct timespec ts = {0, 200000};
    probe_task(arg, task, worker);
    thrd_sleep(&ts, NULL);
}

static void pool_workers_take_tasks(void **state)
{
    (void)state;
    static struct probe p;
    persiste__pool *pool = pool_with_probe(4, &p);
    persiste__pool_run(pool, 200, slow_task, &p);
    assert_int_equal(probe_check(&p, 200), 0);
    int used = 0;
    for (int w = 0; w < 4; w++)
        used += p.seen[w];
    assert_true(used >= 2);
    pool_with_probe_done(pool, &p);
}

/* Thousands of back-to-back runs: a lost wakeup would hang here (the meson
 * timeout turns that into a failure). */
static void pool_many_runs(void **state)
{
    (void)state;
    static const int threads[] = {2, 3, 8};
    for (size_t i = 0; i < sizeof threads / sizeof *threads; i++) {
        static struct probe p;
        persiste__pool *pool = pool_with_probe(threads[i], &p);
        for (int run = 0; run < 3000; run++) {
            int64_t n = run % 11;
            probe_reset_counts(&p);
            persiste__pool_run(pool, n, probe_task, &p);
            if (probe_check(&p, n) != 0)
                fail_msg("run %d with %d threads, %lld tasks", run,
                         threads[i], (long long)n);
        }
        pool_with_probe_done(pool, &p);
    }
}

/* Runs far apart (workers asleep on the condition variable) and workers
 * slower than the caller (the caller asleep waiting for them): the
 * sleeping paths, which back-to-back runs hardly reach. */
static void lazy_task(void *arg, int64_t task, int worker)
{
    struct timespec ts = {0, 2000000};
    if (worker != 0)
        thrd_sleep(&ts, NULL);
    probe_task(arg, task, worker);
}

static void pool_sleeping_paths(void **state)
{
    (void)state;
    static struct probe p;
    persiste__pool *pool = pool_with_probe(3, &p);
    struct timespec gap = {0, 5000000};
    for (int run = 0; run < 20; run++) {
        thrd_sleep(&gap, NULL);
        probe_reset_counts(&p);
        persiste__pool_run(pool, 6, run % 2 ? lazy_task : probe_task, &p);
        assert_int_equal(probe_check(&p, 6), 0);
    }
    pool_with_probe_done(pool, &p);
}

/* run_each: every thread at once, each its own id as task. A chain of
 * waits proves it: thread w waits for thread w - 1 to pass, which it does
 * only while all run (one thread running the tasks in turn would wait on
 * a later one forever). */
struct chain {
    struct probe p;
    atomic_int_fast64_t gate[MAX_WORKERS];
};

static void chain_task(void *arg, int64_t task, int worker)
{
    struct chain *c = arg;
    probe_task(&c->p, task, worker);
    if (task != worker)
        atomic_store(&c->p.bad, 1);
    if (worker > 0)
        persiste__await_zero(&c->gate[worker - 1]);
    atomic_store(&c->gate[worker], 0);
}

/* Workers asleep, nudged awake by persiste__pool_wake (sometimes with no
 * run after it: they sleep again), then a run or run_each. */
static void pool_wake_and_run_each(void **state)
{
    (void)state;
    enum { N = 4 };
    static struct chain c;
    persiste__pool *pool = pool_with_probe(N, &c.p);
    struct timespec gap = {0, 3000000};
    for (int run = 0; run < 24; run++) {
        thrd_sleep(&gap, NULL);
        persiste__pool_wake(pool);
        if (run % 3 == 2) /* woken for nothing */
            continue;
        probe_reset_counts(&c.p);
        if (run % 3 == 0) {
            persiste__pool_run(pool, 7, probe_task, &c.p);
            assert_int_equal(probe_check(&c.p, 7), 0);
            continue;
        }
        for (int w = 0; w < N; w++)
            atomic_store(&c.gate[w], 1);
        persiste__pool_run_each(pool, chain_task, &c);
        assert_int_equal(probe_check(&c.p, N), 0);
    }
    persiste__pool_wake(NULL);
    pool_with_probe_done(pool, &c.p);
    /* no pool: the caller alone, as worker 0 */
    probe_init(&c.p, 1);
    atomic_store(&c.gate[0], 1);
    persiste__pool_run_each(NULL, chain_task, &c);
    assert_int_equal(probe_check(&c.p, 1), 0);
    pthread_mutex_destroy(&c.p.lock);
}

static void pool_invalid_and_null(void **state)
{
    (void)state;
    persiste__pool *pool = (persiste__pool *)&pool;
    assert_int_equal(persiste__pool_create(&pool, 0), PERSISTE_E_INVALID);
    assert_null(pool);
    assert_int_equal(persiste__pool_create(NULL, 2), PERSISTE_E_INVALID);
    persiste__pool_destroy(NULL);
    persiste__pool_abandon(NULL);
    assert_int_equal(persiste__pool_size(NULL), 1);
    /* No pool: inline in the caller, as worker 0. */
    static struct probe p;
    probe_init(&p, 1);
    persiste__pool_run(NULL, 10, probe_task, &p);
    assert_int_equal(probe_check(&p, 10), 0);
    pthread_mutex_destroy(&p.lock);
}

/* ---- Context -------------------------------------------------------------- */
static int64_t get_threads(const persiste_ctx *ctx)
{
    int64_t v = -1;
    assert_int_equal(persiste_ctx_get_param(ctx, PERSISTE_CTX_NTHREADS, &v),
                     PERSISTE_OK);
    return v;
}

static void ctx_params(void **state)
{
    (void)state;
    persiste_ctx *ctx = NULL;
    assert_int_equal(persiste_ctx_create(NULL), PERSISTE_E_INVALID);
    assert_int_equal(persiste_ctx_create(&ctx), PERSISTE_OK);
    assert_int_equal(get_threads(ctx), 1);
    assert_null(ctx->pool);
    assert_int_equal(persiste__ctx_workers(ctx), 1);
    assert_int_equal(persiste_ctx_n_impossible(ctx), 0);
    assert_int_equal(persiste_ctx_n_impossible(NULL), 0);

    assert_int_equal(persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, 3),
                     PERSISTE_OK);
    assert_int_equal(get_threads(ctx), 3);
    assert_int_equal(persiste__ctx_workers(ctx), 3);
    /* Same number: the pool is kept, not rebuilt. */
    persiste__pool *before = ctx->pool;
    assert_int_equal(persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, 3),
                     PERSISTE_OK);
    assert_ptr_equal(ctx->pool, before);

    static const int64_t bad[] = {-1, 257, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(
            persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, bad[i]),
            PERSISTE_E_INVALID);
        assert_non_null(strstr(persiste_last_error(), "outside 0..256"));
        assert_int_equal(get_threads(ctx), 3);
    }
    assert_int_equal(persiste_ctx_set_param(ctx, 99, 1), PERSISTE_E_INVALID);
    assert_string_equal(persiste_last_error(), "ctx: unknown parameter 99");
    int64_t v = 7;
    assert_int_equal(persiste_ctx_get_param(ctx, 99, &v), PERSISTE_E_INVALID);
    assert_int_equal(v, 7);
    assert_int_equal(persiste_ctx_get_param(ctx, PERSISTE_CTX_NTHREADS, NULL),
                     PERSISTE_E_INVALID);
    assert_int_equal(persiste_ctx_get_param(NULL, PERSISTE_CTX_NTHREADS, &v),
                     PERSISTE_E_INVALID);
    assert_int_equal(persiste_ctx_set_param(NULL, PERSISTE_CTX_NTHREADS, 1),
                     PERSISTE_E_INVALID);

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, 0),
                     PERSISTE_OK);
    assert_int_equal(get_threads(ctx), cores < 256 ? cores : 256);
    assert_int_equal(persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, 256),
                     PERSISTE_OK);
    assert_int_equal(get_threads(ctx), 256);
    assert_int_equal(persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, 1),
                     PERSISTE_OK);
    assert_null(ctx->pool);
    assert_int_equal(get_threads(ctx), 1);
    persiste_ctx_destroy(ctx);
    persiste_ctx_destroy(NULL);
}

/* The thread count changes the worker ids, so per-worker scratch goes. */
static void ctx_scratch_dropped_on_resize(void **state)
{
    (void)state;
    persiste_ctx *ctx = NULL;
    assert_int_equal(persiste_ctx_create(&ctx), PERSISTE_OK);
    ctx->scratch = persiste__calloc(2, sizeof *ctx->scratch);
    assert_non_null(ctx->scratch);
    ctx->n_scratch = 2;
    assert_int_equal(persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, 1),
                     PERSISTE_OK);
    assert_int_equal(ctx->n_scratch, 2); /* unchanged count: kept */
    assert_int_equal(persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, 2),
                     PERSISTE_OK);
    assert_int_equal(ctx->n_scratch, 0);
    assert_null(ctx->scratch);
    persiste_ctx_destroy(ctx);
}

static void ctx_run_inline_and_pooled(void **state)
{
    (void)state;
    persiste_ctx *ctx = NULL;
    assert_int_equal(persiste_ctx_create(&ctx), PERSISTE_OK);
    static struct probe p;
    for (int n = 1; n <= 4; n += 3) {
        assert_int_equal(persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, n),
                         PERSISTE_OK);
        probe_init(&p, persiste__ctx_workers(ctx));
        assert_int_equal(persiste__ctx_enter(ctx), PERSISTE_OK);
        persiste__ctx_run(ctx, 777, probe_task, &p);
        persiste__ctx_leave(ctx);
        assert_int_equal(probe_check(&p, 777), 0);
        pthread_mutex_destroy(&p.lock);
    }
    persiste_ctx_destroy(ctx);
}

/* ---- Busy guard ---------------------------------------------------------- */
struct race {
    persiste_ctx *ctx;
    pthread_barrier_t barrier;
    int rc[2];
    char msg[2][128];
};

struct racer {
    struct race *race;
    int id;
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    struct race *race = r->race;
    pthread_barrier_wait(&race->barrier);
    int rc = persiste__ctx_enter(race->ctx);
    race->rc[r->id] = rc;
    snprintf(race->msg[r->id], sizeof race->msg[r->id], "%s",
             persiste_last_error());
    pthread_barrier_wait(&race->barrier); /* both attempted: now let go */
    if (rc == PERSISTE_OK)
        persiste__ctx_leave(race->ctx);
    return NULL;
}

static void ctx_busy_two_threads(void **state)
{
    (void)state;
    struct race race;
    memset(&race, 0, sizeof race);
    assert_int_equal(persiste_ctx_create(&race.ctx), PERSISTE_OK);
    assert_int_equal(pthread_barrier_init(&race.barrier, NULL, 2), 0);
    for (int round = 0; round < 50; round++) {
        pthread_t t[2];
        struct racer r[2] = {{&race, 0}, {&race, 1}};
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&t[i], NULL, racer_main, &r[i]),
                             0);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        int loser = race.rc[0] == PERSISTE_OK ? 1 : 0;
        assert_int_equal(race.rc[1 - loser], PERSISTE_OK);
        assert_int_equal(race.rc[loser], PERSISTE_E_BUSY);
        assert_non_null(strstr(race.msg[loser], "in use by another thread"));
    }
    pthread_barrier_destroy(&race.barrier);
    /* Free again after both left. */
    assert_int_equal(persiste__ctx_enter(race.ctx), PERSISTE_OK);
    /* Same thread again, and a setter, while inside: busy. */
    assert_int_equal(persiste__ctx_enter(race.ctx), PERSISTE_E_BUSY);
    assert_int_equal(
        persiste_ctx_set_param(race.ctx, PERSISTE_CTX_NTHREADS, 2),
        PERSISTE_E_BUSY);
    persiste__ctx_leave(race.ctx);
    assert_int_equal(persiste__ctx_enter(NULL), PERSISTE_E_INVALID);
    persiste_ctx_destroy(race.ctx);
}

#ifdef __SANITIZE_THREAD__
enum { UNDER_TSAN = 1 };
#else
enum { UNDER_TSAN = 0 };
#endif

/* ---- Fork ---------------------------------------------------------------- */
/* Runs child(ctx) in a forked child, which alarm() kills if it hangs; the
 * child's status is its exit code (0 = pass). No cmocka in the child: a
 * failing assert there would carry on running the suite in that process. */
static int run_in_child(persiste_ctx *ctx, int (*child)(persiste_ctx *))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        _exit(child(ctx));
    }
    assert_true(pid > 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("child killed by signal %d", WTERMSIG(status));
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* In the child: a working pool of the expected size, then clean teardown. */
static int child_check(persiste_ctx *ctx, int want_workers)
{
    static struct probe p;
    if (persiste__ctx_enter(ctx) != PERSISTE_OK)
        return 10;
    if (persiste__ctx_workers(ctx) != want_workers ||
        ctx->owner_pid != getpid())
        return 11;
    probe_init(&p, want_workers);
    for (int run = 0; run < 100; run++) {
        probe_reset_counts(&p);
        persiste__ctx_run(ctx, 500, probe_task, &p);
        if (probe_check(&p, 500) != 0)
            return 12;
    }
    persiste__ctx_leave(ctx);
    persiste_ctx_destroy(ctx);
    return 0;
}

static int child_runs_tasks(persiste_ctx *ctx) { return child_check(ctx, 2); }

static int child_destroys(persiste_ctx *ctx)
{
    persiste_ctx_destroy(ctx); /* must not join the parent's workers */
    return 0;
}

static int child_resizes(persiste_ctx *ctx)
{
    if (persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, 3) != PERSISTE_OK)
        return 20;
    int64_t v = 0;
    persiste_ctx_get_param(ctx, PERSISTE_CTX_NTHREADS, &v);
    if (v != 3)
        return 21;
    return child_check(ctx, 3);
}

static void ctx_fork(void **state)
{
    (void)state;
    persiste_ctx *ctx = NULL;
    assert_int_equal(persiste_ctx_create(&ctx), PERSISTE_OK);
    assert_int_equal(persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, 2),
                     PERSISTE_OK);
    /* Warm the workers so they are mid-wait when the fork happens. */
    static struct probe p;
    probe_init(&p, 2);
    persiste__ctx_run(ctx, 100, probe_task, &p);
    assert_int_equal(probe_check(&p, 100), 0);
    pthread_mutex_destroy(&p.lock);

    assert_int_equal(run_in_child(ctx, child_destroys), 0);
    /* TSan cannot start threads in the child of a threaded process (it
     * aborts, or reports "dup thread with used id" when glibc reuses a
     * parent worker's stack): these run in the other builds. */
    if (!UNDER_TSAN) {
        assert_int_equal(run_in_child(ctx, child_runs_tasks), 0);
        assert_int_equal(run_in_child(ctx, child_resizes), 0);
        /* Forked while this thread is inside a call: not stuck busy. */
        assert_int_equal(persiste__ctx_enter(ctx), PERSISTE_OK);
        assert_int_equal(run_in_child(ctx, child_runs_tasks), 0);
        persiste__ctx_leave(ctx);
    }
    /* The parent's pool is untouched. */
    assert_int_equal(ctx->owner_pid, getpid());
    assert_int_equal(get_threads(ctx), 2);
    persiste_ctx_destroy(ctx);
}

/* Threads that cannot start (address space capped just above current use)
 * leave a smaller pool that still runs every task. Sanitizers reserve
 * terabytes of address space, so there the cap cannot be set. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define NO_ADDRESS_CAP 1
#else
static int child_partial_pool(persiste_ctx *unused)
{
    (void)unused;
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld", &pages) != 1)
        return 30;
    fclose(f);
    struct rlimit lim;
    if (getrlimit(RLIMIT_AS, &lim) != 0)
        return 31;
    lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (20 << 20);
    if (setrlimit(RLIMIT_AS, &lim) != 0)
        return 32;
    persiste__pool *pool = NULL;
    int rc = persiste__pool_create(&pool, MAX_WORKERS);
    if (rc == PERSISTE_E_NOMEM)
        return 0;
    int size = persiste__pool_size(pool);
    if (rc != PERSISTE_OK || size < 1 || size >= MAX_WORKERS)
        return 33;
    static struct probe p;
    probe_init(&p, size);
    persiste__pool_run(pool, 1000, probe_task, &p);
    if (probe_check(&p, 1000) != 0)
        return 34;
    persiste__pool_destroy(pool);
    return 0;
}
#endif

static void pool_partial_start(void **state)
{
    (void)state;
#ifdef NO_ADDRESS_CAP
    skip();
#else
    assert_int_equal(run_in_child(NULL, child_partial_pool), 0);
#endif
}

/* ---- Model --------------------------------------------------------------- */
static void model_defaults_and_round_trip(void **state)
{
    (void)state;
    persiste_model *m = NULL;
    assert_int_equal(persiste_model_create(NULL), PERSISTE_E_INVALID);
    assert_int_equal(persiste_model_create(&m), PERSISTE_OK);
    int64_t i = -1;
    double d = -1;
    assert_int_equal(persiste_model_get_int(m, PERSISTE_MODEL_CONDITION, &i),
                     PERSISTE_OK);
    assert_int_equal(i, PERSISTE_CONDITION_PRESENT);
    assert_int_equal(persiste_model_get_int(m, PERSISTE_MODEL_ROOT_PRIOR, &i),
                     PERSISTE_OK);
    assert_int_equal(i, PERSISTE_ROOT_STATIONARY);
    assert_int_equal(persiste_model_get_double(m, PERSISTE_MODEL_ROOT_FREQ, &d),
                     PERSISTE_OK);
    assert_true(d == 0.5);
    assert_int_equal(
        persiste_model_get_double(m, PERSISTE_MODEL_MIN_BRANCH_LENGTH, &d),
        PERSISTE_OK);
    assert_true(d == 0.0);

    for (int64_t v = 0; v <= 2; v++) {
        assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_CONDITION, v),
                         PERSISTE_OK);
        assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_ROOT_PRIOR,
                                                2 - v),
                         PERSISTE_OK);
        persiste_model_get_int(m, PERSISTE_MODEL_CONDITION, &i);
        assert_int_equal(i, v);
        persiste_model_get_int(m, PERSISTE_MODEL_ROOT_PRIOR, &i);
        assert_int_equal(i, 2 - v);
    }
    static const double freqs[] = {0.0, 1.0, 0.25};
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(
            persiste_model_set_double(m, PERSISTE_MODEL_ROOT_FREQ, freqs[k]),
            PERSISTE_OK);
        persiste_model_get_double(m, PERSISTE_MODEL_ROOT_FREQ, &d);
        assert_true(d == freqs[k]);
    }
    static const double lengths[] = {0.0, 1e-300, 1e-6, 1e300};
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(persiste_model_set_double(
                             m, PERSISTE_MODEL_MIN_BRANCH_LENGTH, lengths[k]),
                         PERSISTE_OK);
        persiste_model_get_double(m, PERSISTE_MODEL_MIN_BRANCH_LENGTH, &d);
        assert_true(d == lengths[k]);
    }
    persiste_model_destroy(m);
    persiste_model_destroy(NULL);
}

static void model_errors(void **state)
{
    (void)state;
    persiste_model *m = NULL;
    assert_int_equal(persiste_model_create(&m), PERSISTE_OK);
    int64_t i = 42;
    double d = 42;

    /* Unknown parameters, each accessor. */
    assert_int_equal(persiste_model_set_int(m, 7, 1), PERSISTE_E_INVALID);
    assert_string_equal(persiste_last_error(),
                        "model: unknown integer parameter 7");
    assert_int_equal(persiste_model_set_double(m, 0, 1), PERSISTE_E_INVALID);
    assert_string_equal(persiste_last_error(),
                        "model: unknown double parameter 0");
    assert_int_equal(persiste_model_get_int(m, -3, &i), PERSISTE_E_INVALID);
    assert_int_equal(persiste_model_get_double(m, 5, &d), PERSISTE_E_INVALID);
    assert_int_equal(i, 42);
    assert_true(d == 42);

    /* Wrong type. */
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_ROOT_FREQ, 1),
                     PERSISTE_E_INVALID);
    assert_string_equal(persiste_last_error(),
                        "model: parameter 3 is not of type integer");
    assert_int_equal(
        persiste_model_set_double(m, PERSISTE_MODEL_CONDITION, 1.0),
        PERSISTE_E_INVALID);
    assert_int_equal(
        persiste_model_get_int(m, PERSISTE_MODEL_MIN_BRANCH_LENGTH, &i),
        PERSISTE_E_INVALID);
    assert_int_equal(persiste_model_get_double(m, PERSISTE_MODEL_ROOT_PRIOR, &d),
                     PERSISTE_E_INVALID);
    assert_int_equal(i, 42);
    assert_true(d == 42);

    /* Enumerations out of range. */
    static const int64_t bad_enum[] = {-1, 3, INT64_MAX, (int64_t)1 << 32};
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(
            persiste_model_set_int(m, PERSISTE_MODEL_CONDITION, bad_enum[k]),
            PERSISTE_E_INVALID);
        assert_int_equal(
            persiste_model_set_int(m, PERSISTE_MODEL_ROOT_PRIOR, bad_enum[k]),
            PERSISTE_E_INVALID);
    }
    persiste_model_get_int(m, PERSISTE_MODEL_CONDITION, &i);
    assert_int_equal(i, PERSISTE_CONDITION_PRESENT);
    persiste_model_get_int(m, PERSISTE_MODEL_ROOT_PRIOR, &i);
    assert_int_equal(i, PERSISTE_ROOT_STATIONARY);

    /* Numbers out of domain leave the value unchanged. */
    static const double bad_freq[] = {-0.1, 1.0000001, NAN, INFINITY,
                                      -INFINITY};
    for (size_t k = 0; k < 5; k++)
        assert_int_equal(
            persiste_model_set_double(m, PERSISTE_MODEL_ROOT_FREQ, bad_freq[k]),
            PERSISTE_E_DOMAIN);
    static const double bad_len[] = {-1e-300, -1, NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < 5; k++)
        assert_int_equal(persiste_model_set_double(
                             m, PERSISTE_MODEL_MIN_BRANCH_LENGTH, bad_len[k]),
                         PERSISTE_E_DOMAIN);
    persiste_model_get_double(m, PERSISTE_MODEL_ROOT_FREQ, &d);
    assert_true(d == 0.5);
    persiste_model_get_double(m, PERSISTE_MODEL_MIN_BRANCH_LENGTH, &d);
    assert_true(d == 0.0);

    /* NULL handle or output. */
    assert_int_equal(persiste_model_set_int(NULL, PERSISTE_MODEL_CONDITION, 0),
                     PERSISTE_E_INVALID);
    assert_int_equal(
        persiste_model_set_double(NULL, PERSISTE_MODEL_ROOT_FREQ, 0.5),
        PERSISTE_E_INVALID);
    assert_int_equal(persiste_model_get_int(NULL, PERSISTE_MODEL_CONDITION, &i),
                     PERSISTE_E_INVALID);
    assert_int_equal(persiste_model_get_int(m, PERSISTE_MODEL_CONDITION, NULL),
                     PERSISTE_E_INVALID);
    assert_int_equal(
        persiste_model_get_double(NULL, PERSISTE_MODEL_ROOT_FREQ, &d),
        PERSISTE_E_INVALID);
    assert_int_equal(
        persiste_model_get_double(m, PERSISTE_MODEL_ROOT_FREQ, NULL),
        PERSISTE_E_INVALID);
    persiste_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pool_every_task_once),
        cmocka_unit_test(pool_workers_take_tasks),
        cmocka_unit_test(pool_many_runs),
        cmocka_unit_test(pool_sleeping_paths),
        cmocka_unit_test(pool_wake_and_run_each),
        cmocka_unit_test(pool_invalid_and_null),
        cmocka_unit_test(pool_partial_start),
        cmocka_unit_test(ctx_params),
        cmocka_unit_test(ctx_scratch_dropped_on_resize),
        cmocka_unit_test(ctx_run_inline_and_pooled),
        cmocka_unit_test(ctx_busy_two_threads),
        cmocka_unit_test(ctx_fork),
        cmocka_unit_test(model_defaults_and_round_trip),
        cmocka_unit_test(model_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
