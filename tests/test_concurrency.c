/* Threads and fork through the public API.
 *  - Separate contexts used from several threads at once, sharing one tree,
 *    one data set and the models (read-only), give the results of a single
 *    thread, bit for bit, whatever their own thread counts.
 *  - One context called from two threads at once: every call either runs
 *    (results exact) or returns PERSISTE_E_BUSY having written nothing,
 *    also while a third thread changes its thread count.
 *  - fork(), as R's mclapply and Python's multiprocessing do: the child
 *    evaluates with a working pool (exact results) or a clear error, never
 *    hangs (alarm), including when the fork happens while another thread of
 *    the parent is inside a call on the same context; the parent's context
 *    is unharmed.
 * Runs under ThreadSanitizer too (CI), where a forked child cannot start
 * threads: there the forked contexts have one thread. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "oracle.h"
#include "persiste.h"

#ifdef __SANITIZE_THREAD__
enum { UNDER_TSAN = 1 };
#else
enum { UNDER_TSAN = 0 };
#endif

/* N_NODES: at most, for a binary tree; multifurcations leave fewer. */
enum { N_TIPS = 40, N_NODES = 2 * N_TIPS - 1, N_FAM = 3000, N_MODELS = 3 };
static const double SENTINEL = -999.5;

/* Shared, read-only once set up: the tree, the data, per-family rates, one
 * model per conditioning and its results from one thread. */
typedef struct {
    double lnl[N_FAM], dg[N_FAM], dl[N_FAM], db[N_NODES];
} results;

static persiste_tree *tree;
static persiste_data *data;
static persiste_model *models[N_MODELS];
static double lg[N_FAM], ll[N_FAM];
static results expected[N_MODELS];

static void fill(results *r)
{
    double *x = (double *)r;
    for (size_t i = 0; i < sizeof *r / sizeof *x; i++)
        x[i] = SENTINEL;
}

/* Fills r with the sentinel, then evaluates model m into it. */
static int evaluate(persiste_ctx *ctx, int m, results *r)
{
    fill(r);
    return persiste_gradient_batch(ctx, models[m], tree, data, N_FAM, lg, ll,
                                   NULL, r->lnl, r->dg, r->dl, r->db);
}

static int same(const results *a, const results *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

static int untouched(const results *r)
{
    results s;
    fill(&s);
    return same(r, &s);
}

static int setup(void **state)
{
    (void)state;
    oracle_rng rng = {20251126};
    tree = oracle_random_tree(&rng, N_TIPS, 0.2, 0.0, 0.5);
    uint8_t *states = malloc((size_t)N_FAM * N_TIPS);
    if (!tree || !states)
        return -1;
    oracle_random_states(&rng, states, (int64_t)N_FAM * N_TIPS, 0.4, 0.05);
    data = oracle_data(tree, states, N_FAM);
    free(states);
    for (int f = 0; f < N_FAM; f++) {
        lg[f] = oracle_uniform(&rng, -3, 1);
        ll[f] = oracle_uniform(&rng, -2, 2);
    }
    persiste_ctx *ctx = oracle_ctx(1);
    if (!data || !ctx)
        return -1;
    for (int m = 0; m < N_MODELS; m++) {
        oracle_model om = {m, PERSISTE_ROOT_STATIONARY, 0.5};
        models[m] = oracle_lib_model(&om, 0.0);
        if (!models[m] || evaluate(ctx, m, &expected[m]) != PERSISTE_OK)
            return -1;
    }
    persiste_ctx_destroy(ctx);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int m = 0; m < N_MODELS; m++)
        persiste_model_destroy(models[m]);
    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
    return 0;
}

/* ---- Separate contexts, one per thread ---------------------------------- */
enum { N_ENGINES = 4, ROUNDS = 6 };

static void *engine_main(void *arg)
{
    intptr_t id = (intptr_t)arg;
    static results r[N_ENGINES];
    persiste_ctx *ctx = oracle_ctx(1 + (int)(id % 2)); /* 1 or 2 threads */
    intptr_t bad = ctx ? 0 : 1;
    for (int round = 0; round < ROUNDS && !bad; round++) {
        int m = (int)((id + round) % N_MODELS);
        bad = evaluate(ctx, m, &r[id]) != PERSISTE_OK ||
              !same(&r[id], &expected[m]);
    }
    persiste_ctx_destroy(ctx);
    return (void *)bad;
}

static void test_separate_contexts(void **state)
{
    (void)state;
    pthread_t t[N_ENGINES];
    for (intptr_t i = 0; i < N_ENGINES; i++)
        assert_int_equal(pthread_create(&t[i], NULL, engine_main, (void *)i),
                         0);
    for (int i = 0; i < N_ENGINES; i++) {
        void *bad = NULL;
        pthread_join(t[i], &bad);
        if (bad)
            fail_msg("engine %d: wrong results or a failed call", i);
    }
}

/* ---- One context, several threads --------------------------------------- */
typedef struct {
    persiste_ctx *ctx;
    atomic_int stop;
    atomic_long ran, busy, wrong;
} shared;

/* Makes CALLS successful calls, retrying whenever the context is busy. */
enum { CALLS = 20 };

static void *caller_main(void *arg)
{
    shared *s = arg;
    results r;
    for (int i = 0; i < CALLS;) {
        int m = i % N_MODELS;
        int rc = evaluate(s->ctx, m, &r);
        if (rc == PERSISTE_OK && same(&r, &expected[m])) {
            atomic_fetch_add(&s->ran, 1);
            i++;
        } else if (rc == PERSISTE_E_BUSY && untouched(&r) &&
                   strstr(persiste_last_error(), "in use by another thread")) {
            atomic_fetch_add(&s->busy, 1);
            sched_yield();
        } else {
            atomic_fetch_add(&s->wrong, 1);
            i++;
        }
    }
    return NULL;
}

/* Flips the context between 1 and 2 threads while others call it. */
static void *resizer_main(void *arg)
{
    shared *s = arg;
    for (int64_t n = 1; !atomic_load(&s->stop); n = 3 - n) {
        int rc = persiste_ctx_set_param(s->ctx, PERSISTE_CTX_NTHREADS, n);
        if (rc != PERSISTE_OK && rc != PERSISTE_E_BUSY)
            atomic_fetch_add(&s->wrong, 1);
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    return NULL;
}

/* Reads the thread count while the resizer changes it: each read is the
 * old or the new count, or PERSISTE_E_BUSY; never a read of a pool being
 * freed (which TSan and ASan report). */
static void *reader_main(void *arg)
{
    shared *s = arg;
    while (!atomic_load(&s->stop)) {
        int64_t n = 0;
        int rc = persiste_ctx_get_param(s->ctx, PERSISTE_CTX_NTHREADS, &n);
        if (!(rc == PERSISTE_E_BUSY || (rc == PERSISTE_OK && n >= 1 &&
                                        n <= 2)))
            atomic_fetch_add(&s->wrong, 1);
        sched_yield();
    }
    return NULL;
}

static void test_shared_context(void **state)
{
    (void)state;
    for (int resize = 0; resize < 2; resize++) {
        shared s = {.ctx = oracle_ctx(2)};
        assert_non_null(s.ctx);
        pthread_t t[4];
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&t[i], NULL, caller_main, &s), 0);
        if (resize) {
            assert_int_equal(pthread_create(&t[2], NULL, resizer_main, &s),
                             0);
            assert_int_equal(pthread_create(&t[3], NULL, reader_main, &s),
                             0);
        }
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        atomic_store(&s.stop, 1);
        if (resize) {
            pthread_join(t[2], NULL);
            pthread_join(t[3], NULL);
        }
        print_message("one context, two callers%s: %ld ran, %ld busy\n",
                      resize ? " and a resizer" : "", atomic_load(&s.ran),
                      atomic_load(&s.busy));
        assert_int_equal(atomic_load(&s.wrong), 0);
        assert_int_equal(atomic_load(&s.ran), 2 * CALLS);
        /* Free again afterwards, and still exact. */
        results r;
        assert_int_equal(evaluate(s.ctx, 0, &r), PERSISTE_OK);
        assert_true(same(&r, &expected[0]));
        persiste_ctx_destroy(s.ctx);
    }
}

/* ---- fork ---------------------------------------------------------------- */
/* Runs child(ctx) in a child process that alarm() kills if it hangs; the
 * child's exit code is its verdict (0 = pass). */
static int in_child(persiste_ctx *ctx, int (*child)(persiste_ctx *))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60);
        _exit(child(ctx));
    }
    assert_true(pid > 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("child killed by signal %d%s", WTERMSIG(status),
                 WTERMSIG(status) == SIGALRM ? " (hung)" : "");
    return WEXITSTATUS(status);
}

/* The child evaluates every model exactly, then destroys the context. */
static int child_evaluates(persiste_ctx *ctx)
{
    static results r;
    for (int m = 0; m < N_MODELS; m++) {
        int rc = evaluate(ctx, m, &r);
        if (rc != PERSISTE_OK)
            return rc == PERSISTE_E_STATE ? 0 : 10; /* a clear error is ok */
        if (!same(&r, &expected[m]))
            return 11;
    }
    persiste_ctx_destroy(ctx);
    return 0;
}

/* A grandchild too: the child's rebuilt pool survives another fork. */
static int child_forks_again(persiste_ctx *ctx)
{
    int rc = child_evaluates(ctx); /* destroys ctx: make another */
    if (rc)
        return rc;
    ctx = oracle_ctx(UNDER_TSAN ? 1 : 2);
    if (!ctx || child_evaluates(ctx) != 0) /* warm: workers exist */
        return 20;
    ctx = oracle_ctx(UNDER_TSAN ? 1 : 2);
    static results r;
    if (!ctx || evaluate(ctx, 1, &r) != PERSISTE_OK)
        return 21;
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60);
        _exit(child_evaluates(ctx));
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        return 22;
    persiste_ctx_destroy(ctx);
    return 0;
}

static int child_destroys(persiste_ctx *ctx)
{
    persiste_ctx_destroy(ctx); /* must not wait for the parent's workers */
    return 0;
}

/* A thread of the parent that keeps calling the context. */
static void *busy_main(void *arg)
{
    shared *s = arg;
    results r;
    while (!atomic_load(&s->stop))
        if (evaluate(s->ctx, 2, &r) != PERSISTE_OK ||
            !same(&r, &expected[2]))
            atomic_fetch_add(&s->wrong, 1);
    return NULL;
}

static void test_fork(void **state)
{
    (void)state;
    persiste_ctx *ctx = oracle_ctx(UNDER_TSAN ? 1 : 2);
    assert_non_null(ctx);
    results r;
    assert_int_equal(evaluate(ctx, 0, &r), PERSISTE_OK); /* workers warm */
    assert_int_equal(in_child(ctx, child_destroys), 0);
    assert_int_equal(in_child(ctx, child_evaluates), 0);
    assert_int_equal(in_child(ctx, child_forks_again), 0);

    /* Forked while another thread is inside a call on ctx: in the child
     * that call never ends, yet the context must not stay busy there. */
    shared s = {.ctx = ctx};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, busy_main, &s), 0);
    for (int i = 0; i < 5; i++) {
        nanosleep(&(struct timespec){0, 1000000}, NULL);
        assert_int_equal(in_child(ctx, child_evaluates), 0);
    }
    atomic_store(&s.stop, 1);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&s.wrong), 0);

    /* The parent's context is unharmed. */
    int64_t n = 0;
    assert_int_equal(persiste_ctx_get_param(ctx, PERSISTE_CTX_NTHREADS, &n),
                     PERSISTE_OK);
    assert_int_equal(n, UNDER_TSAN ? 1 : 2);
    for (int m = 0; m < N_MODELS; m++) {
        assert_int_equal(evaluate(ctx, m, &r), PERSISTE_OK);
        assert_true(same(&r, &expected[m]));
    }
    persiste_ctx_destroy(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_separate_contexts),
        cmocka_unit_test(test_shared_context),
        cmocka_unit_test(test_fork),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
