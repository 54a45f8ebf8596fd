/* Allocation failure: a whole workflow (read a tree and a gzip table, build
 * a tree and data from arrays, set up a model and a two-thread context,
 * evaluate, differentiate, destroy) is run once for every k, with the k-th
 * allocation of the library failing, until a run has fewer than k.
 *
 * The library's allocator calls are redirected at link time
 * (-Wl,--wrap=persiste__malloc ...: see meson.build), so this works in
 * every build, and the ASan build's LeakSanitizer sees any leak. For each k:
 *  - the step holding the k-th allocation returns PERSISTE_E_NOMEM with a
 *    message, hands out no handle and writes no output (or, if it has a
 *    fallback, succeeds with the right results); every other step succeeds;
 *  - the failed step, retried, succeeds with results bitwise equal to a run
 *    without failure (no object is left half-changed);
 *  - everything is destroyed in the end, and nothing leaks. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "kernel.h" /* persiste__classes_mode */

/* ---- The failing allocator ---------------------------------------------- */
void *__real_persiste__malloc(size_t n);
void *__real_persiste__calloc(size_t count, size_t size);
void *__real_persiste__realloc(void *p, size_t n);
char *__real_persiste__strndup(const char *s, size_t n);
void *__wrap_persiste__malloc(size_t n);
void *__wrap_persiste__calloc(size_t count, size_t size);
void *__wrap_persiste__realloc(void *p, size_t n);
char *__wrap_persiste__strndup(const char *s, size_t n);

static atomic_long n_allocs; /* since the last reset */
static atomic_long fail_at;  /* 1-based; 0: none fails */

static int fails(void)
{
    long k = atomic_fetch_add(&n_allocs, 1) + 1;
    return k == atomic_load(&fail_at);
}

void *__wrap_persiste__malloc(size_t n)
{
    return fails() ? NULL : __real_persiste__malloc(n);
}

void *__wrap_persiste__calloc(size_t count, size_t size)
{
    return fails() ? NULL : __real_persiste__calloc(count, size);
}

void *__wrap_persiste__realloc(void *p, size_t n)
{
    return fails() ? NULL : __real_persiste__realloc(p, n);
}

char *__wrap_persiste__strndup(const char *s, size_t n)
{
    return fails() ? NULL : __real_persiste__strndup(s, n);
}

/* ---- The workflow ------------------------------------------------------- */
enum { N_TIPS = 6, N_FAM = 700, N_NODES = 2 * N_TIPS - 1 };
static const double SENTINEL = -7777.25;

/* Tip names of the tree; the table adds "extra" (dropped) and a family
 * absent everywhere (dropped). */
static const char *const TIPS[N_TIPS] = {"A", "B", "C", "D", "E", "F"};
static const char TREE[] = "(((A:0.1,B:0.2):0.3,C:0.4):0.05,(D:0.3,'E':0.1,"
                           "F:0.2)inner:0.6);";

typedef struct {
    persiste_tree *tree, *tree2;
    persiste_data *data, *data2;
    persiste_model *model;
    persiste_ctx *ctx;
    double lg[N_FAM], ll[N_FAM], w[N_FAM];
    double lg1[N_FAM], ll1[N_FAM], lnl1[N_FAM]; /* one rate pair for all */
    double lnl[N_FAM], lnl2[N_FAM], dg[N_FAM], dl[N_FAM], db[N_NODES];
} workflow;

static char dir[64], tree_path[96], table_path[96];
static uint8_t states[N_FAM * N_TIPS];

static void fill(double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = SENTINEL;
}

static int step_tree_file(workflow *w)
{
    return persiste_tree_from_newick_file(&w->tree, tree_path);
}

static int step_tree_parents(workflow *w)
{
    /* ((A,B)),((C,D,E,F)) by parent arrays: root 6, unary nodes 7 and
     * 10 above the cherry 8 and the multifurcation 9. */
    static const int32_t parent[N_NODES] = {8, 8, 9, 9, 9, 9, -1, 6, 7, 10, 6};
    static const double length[N_NODES] = {1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1};
    const char *names[N_NODES] = {"A", "B", "C", "D", "E", "F", "root", NULL,
                                  NULL, "", NULL};
    return persiste_tree_from_parents(&w->tree2, N_NODES, parent, length,
                                      names);
}

static int step_data_read(workflow *w)
{
    return persiste_data_read(&w->data, w->tree, table_path,
                              PERSISTE_DATA_DROP_EXTRA_TAXA |
                                  PERSISTE_DATA_DROP_ABSENT_FAMILIES);
}

static int step_data_matrix(workflow *w)
{
    return persiste_data_from_matrix(&w->data2, w->tree, states, N_FAM,
                                     N_TIPS, 1, N_FAM, TIPS,
                                     NULL, 0);
}

static int step_model(workflow *w)
{
    int rc = persiste_model_create(&w->model);
    if (rc == PERSISTE_OK)
        rc = persiste_model_set_int(w->model, PERSISTE_MODEL_CONDITION,
                                    PERSISTE_CONDITION_VARIABLE);
    return rc;
}

static int step_ctx(workflow *w) { return persiste_ctx_create(&w->ctx); }

static int step_threads(workflow *w)
{
    return persiste_ctx_set_param(w->ctx, PERSISTE_CTX_NTHREADS, 2);
}

static int step_loglik(workflow *w)
{
    fill(w->lnl, N_FAM);
    return persiste_loglik_batch(w->ctx, w->model, w->tree, w->data,
                                 persiste_data_n_families(w->data), w->lg,
                                 w->ll, w->lnl);
}

static int step_gradient(workflow *w)
{
    fill(w->lnl2, N_FAM);
    fill(w->dg, N_FAM);
    fill(w->dl, N_FAM);
    fill(w->db, N_NODES);
    return persiste_gradient_batch(w->ctx, w->model, w->tree, w->data,
                                   persiste_data_n_families(w->data), w->lg,
                                   w->ll, w->w, w->lnl2, w->dg, w->dl, w->db);
}

/* At one pair for all, on site repeats (lib/eval/classes.c), which the first
 * such call finds whatever they save. */
static int step_loglik_pair(workflow *w)
{
    fill(w->lnl1, N_FAM);
    persiste__classes_mode(1);
    int rc = persiste_loglik_batch(w->ctx, w->model, w->tree, w->data,
                                   persiste_data_n_families(w->data), w->lg1,
                                   w->ll1, w->lnl1);
    persiste__classes_mode(0);
    return rc;
}

static int step_matrix_loglik(workflow *w)
{
    fill(w->lnl, N_FAM);
    return persiste_loglik_batch(w->ctx, w->model, w->tree, w->data2, N_FAM,
                                 w->lg, w->ll, w->lnl);
}

static const struct {
    const char *name;
    int (*run)(workflow *w);
} steps[] = {
    {"tree from file", step_tree_file},
    {"tree from parents", step_tree_parents},
    {"data from a gzip table", step_data_read},
    {"data from a matrix", step_data_matrix},
    {"model", step_model},
    {"context", step_ctx},
    {"two threads", step_threads},
    {"loglik", step_loglik},
    {"gradient", step_gradient},
    {"loglik of the matrix data", step_matrix_loglik},
    {"loglik again", step_loglik},
    {"gradient again", step_gradient},
    {"loglik at one pair", step_loglik_pair},
    {"loglik at one pair again", step_loglik_pair},
};
enum { N_STEPS = sizeof steps / sizeof *steps };

static void workflow_init(workflow *w)
{
    memset(w, 0, sizeof *w);
    for (int f = 0; f < N_FAM; f++) {
        /* distinct rates: every family is evaluated (no shared rows), in
         * more chunks than one, so the two threads both work */
        w->lg[f] = -1.0 + 0.001 * f;
        w->ll[f] = -0.5 - 0.0005 * f;
        w->w[f] = 1.0 + (f % 2);
        w->lg1[f] = -1.0;
        w->ll1[f] = -0.5;
    }
}

static void workflow_destroy(workflow *w)
{
    persiste_ctx_destroy(w->ctx);
    persiste_model_destroy(w->model);
    persiste_data_destroy(w->data);
    persiste_data_destroy(w->data2);
    persiste_tree_destroy(w->tree);
    persiste_tree_destroy(w->tree2);
}

/* The outputs a step writes, compared bitwise with the reference run. */
static void check_outputs(const workflow *w, const workflow *ref, int step)
{
    const char *name = steps[step].name;
    if (steps[step].run == step_loglik ||
        steps[step].run == step_matrix_loglik) {
        if (memcmp(w->lnl, ref->lnl, sizeof w->lnl) != 0)
            fail_msg("%s: loglik differs from the run without failure",
                     name);
    } else if (steps[step].run == step_loglik_pair) {
        if (memcmp(w->lnl1, ref->lnl1, sizeof w->lnl1) != 0)
            fail_msg("%s: loglik differs from the run without failure",
                     name);
    } else if (steps[step].run == step_gradient) {
        if (memcmp(w->lnl2, ref->lnl2, sizeof w->lnl2) ||
            memcmp(w->dg, ref->dg, sizeof w->dg) ||
            memcmp(w->dl, ref->dl, sizeof w->dl) ||
            memcmp(w->db, ref->db, sizeof w->db))
            fail_msg("%s: results differ from the run without failure",
                     name);
    }
}

/* After a failed step: no handle handed out, no output written. */
static void check_untouched(const workflow *w, const workflow *before,
                            long k, const char *name)
{
    print_message("k=%ld: %s failed cleanly\n", k, name);
    /* Handles were NULL or already set before the step: still the same. */
    assert_ptr_equal(w->tree, before->tree);
    assert_ptr_equal(w->tree2, before->tree2);
    assert_ptr_equal(w->data, before->data);
    assert_ptr_equal(w->data2, before->data2);
    assert_ptr_equal(w->model, before->model);
    assert_ptr_equal(w->ctx, before->ctx);
    if (memcmp(w->lnl, before->lnl, sizeof w->lnl) ||
        memcmp(w->lnl1, before->lnl1, sizeof w->lnl1) ||
        memcmp(w->lnl2, before->lnl2, sizeof w->lnl2) ||
        memcmp(w->dg, before->dg, sizeof w->dg) ||
        memcmp(w->dl, before->dl, sizeof w->dl) ||
        memcmp(w->db, before->db, sizeof w->db))
        fail_msg("k=%ld, %s: outputs written by a failed call", k, name);
}

/* Runs the workflow with allocation k failing (0: none); returns the number
 * of allocations it made. */
static long run_workflow(long k, const workflow *ref, workflow *out)
{
    static workflow w, before;
    workflow_init(&w);
    atomic_store(&n_allocs, 0);
    atomic_store(&fail_at, k);
    for (int i = 0; i < N_STEPS; i++) {
        long start = atomic_load(&n_allocs);
        /* outputs as the step will see them, for the untouched check */
        before = w;
        if (steps[i].run == step_loglik || steps[i].run == step_matrix_loglik)
            fill(before.lnl, N_FAM);
        if (steps[i].run == step_loglik_pair)
            fill(before.lnl1, N_FAM);
        if (steps[i].run == step_gradient) {
            fill(before.lnl2, N_FAM);
            fill(before.dg, N_FAM);
            fill(before.dl, N_FAM);
            fill(before.db, N_NODES);
        }
        int rc = steps[i].run(&w);
        int hit = start < k && k <= atomic_load(&n_allocs);
        if (rc != PERSISTE_OK) {
            if (!hit || rc != PERSISTE_E_NOMEM)
                fail_msg("k=%ld, %s: status %d (%s) %s", k, steps[i].name,
                         rc, persiste_last_error(),
                         hit ? "instead of PERSISTE_E_NOMEM"
                             : "without a failed allocation");
            assert_string_equal(persiste_strerror(rc), "out of memory");
            assert_true(strlen(persiste_last_error()) > 0);
            check_untouched(&w, &before, k, steps[i].name);
            atomic_store(&fail_at, 0); /* retry: now it must work */
            rc = steps[i].run(&w);
            if (rc != PERSISTE_OK)
                fail_msg("k=%ld, %s: retry failed: %s", k, steps[i].name,
                         persiste_last_error());
        }
        if (ref)
            check_outputs(&w, ref, i);
    }
    long n = atomic_load(&n_allocs);
    atomic_store(&fail_at, 0);
    if (out)
        *out = w;
    else
        workflow_destroy(&w);
    return n;
}

static void test_every_allocation_fails(void **state)
{
    (void)state;
    static workflow ref;
    long total = run_workflow(0, NULL, &ref);
    assert_int_equal(persiste_data_n_families(ref.data), N_FAM);
    assert_int_equal(persiste_data_n_dropped_families(ref.data), 1);
    assert_int_equal(persiste_data_n_dropped_taxa(ref.data), 1);
    int64_t threads = 0;
    persiste_ctx_get_param(ref.ctx, PERSISTE_CTX_NTHREADS, &threads);
    assert_int_equal(threads, 2);
    long k;
    for (k = 1; k <= total; k++) {
        long n = run_workflow(k, &ref, NULL);
        assert_true(n >= k); /* the failure happened */
    }
    /* One more: nothing fails, so the count is stable. */
    assert_int_equal(run_workflow(0, &ref, NULL), total);
    workflow_destroy(&ref);
    printf("allocation failure points exercised: %ld\n", total);
    assert_true(total > 40);
}

/* ---- Fixture: files in a temporary directory ---------------------------- */
static int make_files(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/persiste-alloc-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(tree_path, sizeof tree_path, "%s/tree.nwk", dir);
    snprintf(table_path, sizeof table_path, "%s/pam.Rtab.gz", dir);
    FILE *fp = fopen(tree_path, "w");
    if (!fp)
        return -1;
    fputs(TREE, fp);
    fclose(fp);
    gzFile gz = gzopen(table_path, "wb");
    if (!gz)
        return -1;
    gzprintf(gz, "Gene");
    for (int t = 0; t < N_TIPS; t++)
        gzprintf(gz, "\t%s", TIPS[t]);
    gzprintf(gz, "\textra\n");
    for (int f = 0; f < N_FAM; f++) {
        gzprintf(gz, "family_%d", f);
        for (int t = 0; t < N_TIPS; t++) {
            /* every family present somewhere, some unknown cells */
            uint8_t s = t == f % N_TIPS ? 1 : (uint8_t)((f * 7 + t * 3) % 5 % 3);
            states[f + t * N_FAM] = s;
            gzprintf(gz, "\t%s", s == 2 ? "?" : s ? "1" : "0");
        }
        gzprintf(gz, "\t1\n");
    }
    gzprintf(gz, "gone\t0\t0\t0\t0\t0\t0\t1\n"); /* absent in the tree's */
    return gzclose(gz) == Z_OK ? 0 : -1;
}

static int remove_files(void **state)
{
    (void)state;
    unlink(tree_path);
    unlink(table_path);
    rmdir(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_allocation_fails),
    };
    return cmocka_run_group_tests(tests, make_files, remove_files);
}
