/* Gradients of persiste_gradient_batch against exact brute-force derivatives
 * (dual numbers through the enumeration, tests/oracle.c) and against
 * finite differences of the library's own log-likelihood. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oracle.h"

#define N_PRIORS 3
#define N_CONDS 3

/* Outputs of one gradient call. */
typedef struct grad {
    double *ll, *dg, *dl, *db;
} grad;

static void grad_alloc(grad *g, int64_t n_fam, int32_t n_nodes) {
    g->ll = malloc(sizeof(double) * (size_t)n_fam);
    g->dg = malloc(sizeof(double) * (size_t)n_fam);
    g->dl = malloc(sizeof(double) * (size_t)n_fam);
    g->db = malloc(sizeof(double) * (size_t)n_nodes);
    assert_true(g->ll && g->dg && g->dl && g->db);
}

static void grad_free(grad *g) {
    free(g->ll);
    free(g->dg);
    free(g->dl);
    free(g->db);
}

static void run_gradient(persiste_ctx *ctx, const persiste_model *model,
                         const oracle_case *c, const double *weight, grad *g) {
    int rc = persiste_gradient_batch(ctx, model, c->tree, c->data, c->n_fam,
                                     c->log_gain, c->log_loss, weight, g->ll,
                                     g->dg, g->dl, g->db);
    if (rc != PERSISTE_OK)
        print_message("gradient_batch: %s\n", persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
}

static void run_loglik(persiste_ctx *ctx, const persiste_model *model,
                       const oracle_case *c, const double *lg, const double *lm,
                       double *out) {
    assert_int_equal(persiste_loglik_batch(ctx, model, c->tree, c->data,
                                           c->n_fam, lg, lm, out),
                     PERSISTE_OK);
}

static double *random_weights(oracle_rng *rng, int64_t n) {
    double *w = malloc(sizeof *w * (size_t)n);
    assert_non_null(w);
    for (int64_t f = 0; f < n; f++)
        w[f] = oracle_uniform(rng, 0.2, 3.0);
    return w;
}

/* ---- Exact brute-force derivatives --------------------------------------- */
/* Brute-force values and tangents of every family for every derivative:
 * slot 0 = log gain, 1 = log loss, 2 + i = branch i. */
typedef struct brute_set {
    int n_wrt;
    oracle_masses *v, *d; /* v[f], d[f * n_wrt + slot] */
} brute_set;

static int slot_wrt(int slot) {
    return slot == 0   ? ORACLE_D_LOG_GAIN
           : slot == 1 ? ORACLE_D_LOG_LOSS
                       : slot - 2;
}

static void brute_compute(brute_set *b, const oracle_tree *t, int prior,
                          const oracle_case *c) {
    oracle_model m = {0, prior, ORACLE_FIXED_FREQ};
    b->n_wrt = t->n_nodes + 1; /* the root's slot is never asked for */
    b->v = malloc(sizeof *b->v * (size_t)c->n_fam);
    b->d = malloc(sizeof *b->d * (size_t)(c->n_fam * b->n_wrt));
    assert_true(b->v && b->d);
    for (int64_t f = 0; f < c->n_fam; f++)
        for (int s = 0; s < b->n_wrt; s++)
            oracle_brute_masses(t, &m, oracle_case_obs(c, f), c->log_gain[f],
                                c->log_loss[f], slot_wrt(s), &b->v[f],
                                &b->d[f * b->n_wrt + s]);
}

static long double brute_dll(const brute_set *b, int cond, int64_t f,
                             int slot) {
    long double dll;
    oracle_masses_loglik(cond, &b->v[f], &b->d[f * b->n_wrt + slot], &dll);
    return dll;
}

/* One gradient call checked against the brute force (lengths as in t,
 * branches below min_length must get exactly 0). */
static void check_against_brute(persiste_ctx *ctx, const oracle_case *c,
                                const oracle_tree *t, const brute_set *b,
                                int prior, int cond, double min_length,
                                const double *weight, const char *name) {
    oracle_model m = {cond, prior, ORACLE_FIXED_FREQ};
    persiste_model *model = oracle_lib_model(&m, min_length);
    assert_non_null(model);
    grad g;
    grad_alloc(&g, c->n_fam, t->n_nodes);
    double *ll = malloc(sizeof *ll * (size_t)c->n_fam);
    run_gradient(ctx, model, c, weight, &g);
    run_loglik(ctx, model, c, c->log_gain, c->log_loss, ll);
    for (int64_t f = 0; f < c->n_fam; f++) {
        long double want = oracle_masses_loglik(cond, &b->v[f], NULL, NULL);
        ORACLE_ASSERT_CLOSE(g.ll[f], ll[f], 1e-14, 1.0,
                            "%s: gradient loglik vs loglik_batch", name);
        ORACLE_ASSERT_CLOSE(g.ll[f], want, 1e-12, 1.0, "%s: loglik f %lld",
                            name, (long long)f);
        if (isinf(want)) {
            assert_true(g.dg[f] == 0 && g.dl[f] == 0);
            continue;
        }
        ORACLE_ASSERT_CLOSE(g.dg[f], brute_dll(b, cond, f, 0), 1e-9, 1e-3,
                            "%s prior %d cond %d: d_log_gain f %lld (lg %g ll "
                            "%g)",
                            name, prior, cond, (long long)f, c->log_gain[f],
                            c->log_loss[f]);
        ORACLE_ASSERT_CLOSE(g.dl[f], brute_dll(b, cond, f, 1), 1e-9, 1e-3,
                            "%s prior %d cond %d: d_log_loss f %lld (lg %g ll "
                            "%g)",
                            name, prior, cond, (long long)f, c->log_gain[f],
                            c->log_loss[f]);
    }
    int32_t root = t->n_nodes - 1;
    assert_true(g.db[root] == 0);
    for (int32_t i = 0; i < root; i++) {
        long double want = 0, scale = 0;
        for (int64_t f = 0; f < c->n_fam; f++) {
            if (isinf(g.ll[f]))
                continue;
            long double d =
                (weight ? weight[f] : 1.0) * brute_dll(b, cond, f, 2 + i);
            want += d;
            scale += fabsl(d);
        }
        if (t->length[i] < min_length) {
            assert_true(g.db[i] == 0);
            continue;
        }
        ORACLE_ASSERT_CLOSE(g.db[i], want, 1e-9, (double)(1e-3L * (scale + 1)),
                            "%s prior %d cond %d: d_branch %d (t %g)", name,
                            prior, cond, (int)i, t->length[i]);
    }
    free(ll);
    grad_free(&g);
    persiste_model_destroy(model);
}

static void check_case(persiste_ctx *ctx, oracle_case *c, oracle_rng *rng,
                       double min_length, const char *name) {
    oracle_tree clamped;
    oracle_tree_read(c->tree, &clamped);
    oracle_tree_clamp(&clamped, min_length);
    double *w = random_weights(rng, c->n_fam);
    for (int p = 0; p < N_PRIORS; p++) {
        brute_set b;
        brute_compute(&b, &clamped, oracle_priors[p], c);
        for (int k = 0; k < N_CONDS; k++) /* c->t: unclamped lengths */
            check_against_brute(ctx, c, &c->t, &b, oracle_priors[p],
                                oracle_conditions[k], min_length,
                                k == 1 ? NULL : w, name);
        free(b.v);
        free(b.d);
    }
    free(w);
    oracle_tree_free(&clamped);
}

static void brute_case(persiste_ctx *ctx, oracle_case *c, oracle_rng *rng,
                       const char *name) {
    check_case(ctx, c, rng, 0.0, name);
}

static void test_brute_force_gradients(void **state) {
    (void)state;
    oracle_for_each_case(17, 12, 0.15, 3, brute_case);
}

/* Rates in runs (uniform and mixed blocks of families, neighbouring runs
 * sharing a gain or a loss), on a few trees with enough families. */
static void test_rate_runs(void **state) {
    (void)state;
    static const int trees[] = {2, 4, 9};
    oracle_rng rng = {99};
    persiste_ctx *ctx = oracle_ctx(1);
    for (size_t i = 0; i < sizeof trees / sizeof trees[0]; i++) {
        oracle_case c;
        assert_true(oracle_case_init(
            &c, oracle_newick(oracle_small_trees[trees[i]]), &rng, 56, 0.1));
        oracle_case_share_rates(&c, ORACLE_RATES_RUNS);
        check_case(ctx, &c, &rng, 0.0, "rate runs");
        oracle_case_free(&c);
    }
    persiste_ctx_destroy(ctx);
}

static void test_min_length_gradients(void **state) {
    (void)state;
    oracle_rng rng = {23};
    persiste_ctx *ctx = oracle_ctx(1);
    static const struct {
        int tree;
        double min;
    } cases[] = {{5, 1e-3}, {8, 0.25}, {7, 1e-6}, {10, 0.1}};
    char name[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        oracle_case c;
        assert_true(oracle_case_init(
            &c, oracle_newick(oracle_small_trees[cases[i].tree]), &rng, 12,
            0.1));
        snprintf(name, sizeof name, "tree %d clamped at %g", cases[i].tree,
                 cases[i].min);
        check_case(ctx, &c, &rng, cases[i].min, name);
        oracle_case_free(&c);
    }
    persiste_ctx_destroy(ctx);
}

/* ---- Finite differences of the library itself ---------------------------- */
/* Weighted total over the families finite at the base point, with branch
 * `node` set to length x (tree and data rebuilt). */
typedef struct branch_fd {
    persiste_ctx *ctx;
    const persiste_model *model;
    const oracle_case *c;
    const double *weight;
    const double *base_ll; /* families with -inf here are left out */
    int32_t node;
    double *scratch;
} branch_fd;

static double weighted_total(double x, void *arg) {
    branch_fd *a = arg;
    const oracle_case *c = a->c;
    persiste_tree *tree = oracle_tree_with_length(c->tree, a->node, x);
    assert_non_null(tree);
    persiste_data *data = oracle_data(tree, c->states, c->n_fam);
    assert_non_null(data);
    assert_int_equal(persiste_loglik_batch(a->ctx, a->model, tree, data,
                                           c->n_fam, c->log_gain, c->log_loss,
                                           a->scratch),
                     PERSISTE_OK);
    double total = 0;
    for (int64_t f = 0; f < c->n_fam; f++)
        if (!isinf(a->base_ll[f]))
            total += (a->weight ? a->weight[f] : 1.0) * a->scratch[f];
    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
    return total;
}

/* Per-family fourth-order central differences in log gain (which = 0) or
 * log loss (which = 1): every family is shifted at once. */
static void fd_log_rate(persiste_ctx *ctx, const persiste_model *model,
                        const oracle_case *c, int which, double h,
                        double *out) {
    static const double step[4] = {-2, -1, 1, 2}, coef[4] = {1, -8, 8, -1};
    size_t n = (size_t)c->n_fam;
    double *lg = malloc(sizeof *lg * n), *lm = malloc(sizeof *lm * n),
           *ll = malloc(sizeof *ll * n);
    memset(out, 0, sizeof *out * n);
    for (int s = 0; s < 4; s++) {
        for (size_t f = 0; f < n; f++) {
            lg[f] = c->log_gain[f] + (which == 0 ? step[s] * h : 0);
            lm[f] = c->log_loss[f] + (which == 1 ? step[s] * h : 0);
        }
        run_loglik(ctx, model, c, lg, lm, ll);
        for (size_t f = 0; f < n; f++)
            out[f] += coef[s] * ll[f] / (12 * h);
    }
    free(lg);
    free(lm);
    free(ll);
}

static void check_finite_differences(persiste_ctx *ctx, const oracle_case *c,
                                     const double *weight, int prior, int cond,
                                     const char *name) {
    oracle_model m = {cond, prior, ORACLE_FIXED_FREQ};
    persiste_model *model = oracle_lib_model(&m, 0);
    grad g;
    grad_alloc(&g, c->n_fam, c->t.n_nodes);
    double *fd = malloc(sizeof *fd * (size_t)c->n_fam);
    run_gradient(ctx, model, c, weight, &g);
    for (int which = 0; which < 2; which++) {
        fd_log_rate(ctx, model, c, which, 1e-4, fd);
        for (int64_t f = 0; f < c->n_fam; f++)
            if (!isinf(g.ll[f]))
                ORACLE_ASSERT_CLOSE(
                    which ? g.dl[f] : g.dg[f], fd[f], 1e-6, 1e-2,
                    "%s prior %d cond %d: FD d_log_%s f %lld", name, prior,
                    cond, which ? "loss" : "gain", (long long)f);
    }
    branch_fd a = {ctx, model, c, weight, g.ll, 0, fd};
    double wabs = 0; /* FD rounding: ~1000 eps |sum w ll| / h */
    for (int64_t f = 0; f < c->n_fam; f++)
        if (!isinf(g.ll[f]))
            wabs += fabs((weight ? weight[f] : 1.0) * g.ll[f]);
    for (int32_t i = 0; i < c->t.n_nodes - 1; i++) {
        double t = c->t.length[i];
        a.node = i;
        /* At t = 0 a family can bend within ~L / L', arbitrarily small: no
         * step is safe there (the brute-force test covers t = 0 exactly). */
        if (t == 0)
            continue;
        double h = 1e-4 * t, noise = 1000 * 2.2e-16 * wabs / h;
        double want = oracle_fd_length(weighted_total, &a, t, h);
        ORACLE_ASSERT_CLOSE(g.db[i], want, 1e-6, noise / 1e-6 + 1.0,
                            "%s prior %d cond %d: FD d_branch %d (t %g)", name,
                            prior, cond, (int)i, t);
    }
    free(fd);
    grad_free(&g);
    persiste_model_destroy(model);
}

static void fd_case(persiste_ctx *ctx, oracle_case *c, oracle_rng *rng,
                    const char *name) {
    double *w = random_weights(rng, c->n_fam);
    for (int p = 0; p < N_PRIORS; p++)
        for (int k = 0; k < N_CONDS; k++)
            check_finite_differences(ctx, c, (p + k) % 2 ? w : NULL,
                                     oracle_priors[p], oracle_conditions[k],
                                     name);
    free(w);
}

static void test_finite_differences(void **state) {
    (void)state;
    oracle_for_each_case(4711, 16, 0.1, 1, fd_case);
}

/* ---- Thread count and optional outputs ----------------------------------- */
static void test_threads_bitwise(void **state) {
    (void)state;
    static const int threads[3] = {1, 2, 8};
    oracle_rng rng = {271828};
    oracle_case c;
    assert_true(oracle_case_init(
        &c, oracle_random_tree(&rng, 50, 0.2, 0.0, 1.0), &rng, 5001, 0.05));
    double *w = random_weights(&rng, c.n_fam);
    size_t fam_bytes = sizeof(double) * (size_t)c.n_fam;
    size_t node_bytes = sizeof(double) * (size_t)c.t.n_nodes;
    for (int k = 0; k < ORACLE_N_LAYOUTS; k++) {
        oracle_model m = {oracle_conditions[k % 3], oracle_priors[k % 3],
                          ORACLE_FIXED_FREQ};
        persiste_model *model = oracle_lib_model(&m, 0);
        oracle_case_share_rates(&c, k);
        grad g[3];
        for (int i = 0; i < 3; i++) {
            persiste_ctx *ctx = oracle_ctx(threads[i]);
            assert_non_null(ctx);
            grad_alloc(&g[i], c.n_fam, c.t.n_nodes);
            run_gradient(ctx, model, &c, k == 1 ? NULL : w, &g[i]);
            persiste_ctx_destroy(ctx);
        }
        for (int i = 1; i < 3; i++) {
            assert_memory_equal(g[0].ll, g[i].ll, fam_bytes);
            assert_memory_equal(g[0].dg, g[i].dg, fam_bytes);
            assert_memory_equal(g[0].dl, g[i].dl, fam_bytes);
            assert_memory_equal(g[0].db, g[i].db, node_bytes);
        }
        for (int32_t j = 0; j < c.t.n_nodes; j++)
            assert_true(isfinite(g[0].db[j]));
        for (int i = 0; i < 3; i++)
            grad_free(&g[i]);
        persiste_model_destroy(model);
    }
    free(w);
    oracle_case_free(&c);
}

static void test_optional_outputs(void **state) {
    (void)state;
    oracle_rng rng = {1618};
    oracle_case c;
    assert_true(oracle_case_init(&c, oracle_newick(oracle_small_trees[8]), &rng,
                                 300, 0.1));
    persiste_ctx *ctx = oracle_ctx(2);
    int32_t n_nodes = c.t.n_nodes;
    double *ones = malloc(sizeof *ones * (size_t)c.n_fam);
    for (int64_t f = 0; f < c.n_fam; f++)
        ones[f] = 1.0;
    for (int k = 0; k < N_CONDS; k++) {
        oracle_model m = {oracle_conditions[k], PERSISTE_ROOT_STATIONARY,
                          ORACLE_FIXED_FREQ};
        persiste_model *model = oracle_lib_model(&m, 0);
        grad full, part;
        grad_alloc(&full, c.n_fam, n_nodes);
        grad_alloc(&part, c.n_fam, n_nodes);
        run_gradient(ctx, model, &c, NULL, &full);
        /* weight of all ones = NULL weight */
        run_gradient(ctx, model, &c, ones, &part);
        for (int32_t i = 0; i < n_nodes; i++)
            ORACLE_ASSERT_CLOSE(part.db[i], full.db[i], 1e-13, 1e-3,
                                "weights of one, branch %d", (int)i);
        /* without d_branch, without either rate derivative */
        const char *const what[3] = {"d_branch", "d_log_gain", "d_log_loss"};
        for (int omit = 0; omit < 3; omit++) {
            assert_int_equal(
                persiste_gradient_batch(
                    ctx, model, c.tree, c.data, c.n_fam, c.log_gain, c.log_loss,
                    NULL, part.ll, omit == 1 ? NULL : part.dg,
                    omit == 2 ? NULL : part.dl, omit == 0 ? NULL : part.db),
                PERSISTE_OK);
            for (int64_t f = 0; f < c.n_fam; f++) {
                ORACLE_ASSERT_CLOSE(part.ll[f], full.ll[f], 1e-14, 1.0,
                                    "loglik without %s", what[omit]);
                if (omit != 1)
                    ORACLE_ASSERT_CLOSE(part.dg[f], full.dg[f], 1e-12, 1e-3,
                                        "d_log_gain without %s", what[omit]);
                if (omit != 2)
                    ORACLE_ASSERT_CLOSE(part.dl[f], full.dl[f], 1e-12, 1e-3,
                                        "d_log_loss without %s", what[omit]);
            }
            if (omit != 0)
                for (int32_t i = 0; i < n_nodes; i++)
                    ORACLE_ASSERT_CLOSE(part.db[i], full.db[i], 1e-13, 1e-3,
                                        "d_branch without %s", what[omit]);
        }
        grad_free(&full);
        grad_free(&part);
        persiste_model_destroy(model);
    }
    free(ones);
    persiste_ctx_destroy(ctx);
    oracle_case_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_brute_force_gradients),
        cmocka_unit_test(test_rate_runs),
        cmocka_unit_test(test_min_length_gradients),
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_optional_outputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
