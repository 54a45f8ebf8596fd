/* 100,000-tip trees: log-likelihoods far below the underflow of naive
 * pruning (about -690) must be finite and equal to the log-space oracle
 * (tests/oracle.c), and the gradient finite and consistent with finite
 * differences. The trees are built from our own parent arrays and the
 * oracle runs on those arrays, not on the library's renumbering. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oracle.h"

#define N_TIPS 100000
#define N_FAM 6

typedef struct big {
    oracle_tree t;       /* our numbering: tips 0..N_TIPS-1 */
    persiste_tree *tree; /* the library's copy */
    uint8_t *states;     /* [N_FAM * N_TIPS] */
    persiste_data *data;
    double lg[N_FAM], lm[N_FAM];
} big;

/* Tips 0..n-1; balanced: adjacent pairs joined level by level (an odd one
 * out moves up); caterpillar: each new internal node joins the previous one
 * and the next tip. Internal nodes are numbered in creation order. */
static void build_shape(oracle_tree *t, bool balanced, oracle_rng *rng) {
    int32_t n = N_TIPS, next = n;
    t->n_tips = n;
    t->n_nodes = 2 * n - 1;
    t->parent = malloc(sizeof *t->parent * (size_t)t->n_nodes);
    t->length = malloc(sizeof *t->length * (size_t)t->n_nodes);
    int32_t *level = malloc(sizeof *level * (size_t)n);
    assert_true(t->parent && t->length && level);
    if (balanced) {
        int32_t m = n;
        for (int32_t i = 0; i < n; i++)
            level[i] = i;
        while (m > 1) {
            int32_t k = 0;
            for (int32_t i = 0; i + 1 < m; i += 2) {
                t->parent[level[i]] = t->parent[level[i + 1]] = next;
                level[k++] = next++;
            }
            if (m % 2)
                level[k++] = level[m - 1];
            m = k;
        }
    } else {
        int32_t prev = 0;
        for (int32_t i = 1; i < n; i++) {
            t->parent[prev] = t->parent[i] = next;
            prev = next++;
        }
    }
    assert_int_equal(next, t->n_nodes);
    t->parent[next - 1] = -1;
    for (int32_t i = 0; i < t->n_nodes; i++)
        t->length[i] = oracle_uniform(rng, 0.01, 0.5);
    free(level);
}

static void big_init(big *b, bool balanced, uint64_t seed) {
    oracle_rng rng = {seed};
    build_shape(&b->t, balanced, &rng);
    char *buf = malloc((size_t)N_TIPS * 8);
    const char **names = calloc((size_t)b->t.n_nodes, sizeof *names);
    assert_true(buf && names);
    for (int32_t i = 0; i < N_TIPS; i++) {
        snprintf(buf + 8 * i, 8, "t%d", (int)i);
        names[i] = buf + 8 * i;
    }
    assert_int_equal(persiste_tree_from_parents(&b->tree, b->t.n_nodes,
                                                b->t.parent, b->t.length,
                                                names),
                     PERSISTE_OK);
    /* families: random halves, sparse with unknowns, all present, dense with
     * many unknowns, all present but a few, all absent */
    static const double p_present[N_FAM] = {0.5, 0.1, 1.0, 0.9, 0.999, 0.0};
    static const double p_unknown[N_FAM] = {0.0, 0.05, 0.0, 0.3, 0.0, 0.0};
    b->states = malloc((size_t)N_FAM * N_TIPS);
    assert_non_null(b->states);
    for (int f = 0; f < N_FAM; f++) {
        oracle_random_states(&rng, b->states + (size_t)f * N_TIPS, N_TIPS,
                             p_present[f], p_unknown[f]);
        b->lg[f] = oracle_uniform(&rng, -1.5, 1.0);
        b->lm[f] = oracle_uniform(&rng, -1.5, 1.0);
    }
    assert_int_equal(persiste_data_from_matrix(&b->data, b->tree, b->states,
                                               N_FAM, N_TIPS, N_TIPS, 1, names,
                                               NULL, 0),
                     PERSISTE_OK);
    free(names);
    free(buf);
}

static void big_free(big *b) {
    persiste_data_destroy(b->data);
    persiste_tree_destroy(b->tree);
    oracle_tree_free(&b->t);
    free(b->states);
}

static void check_big(bool balanced, uint64_t seed) {
    big b;
    big_init(&b, balanced, seed);
    persiste_ctx *ctx = oracle_ctx(1); /* (one block of families) */
    assert_non_null(ctx);
    const char *shape = balanced ? "balanced" : "caterpillar";
    for (int p = 0; p < 2; p++) {
        oracle_model m = {
            0, p ? PERSISTE_ROOT_ABSENT : PERSISTE_ROOT_STATIONARY, 0.5};
        long double want[N_FAM][3];
        for (int f = 0; f < N_FAM; f++) {
            oracle_logspace_conds(&b.t, &m, b.states + (size_t)f * N_TIPS,
                                  b.lg[f], b.lm[f], want[f]);
            assert_true(want[f][0] < -690); /* where naive code underflows */
        }
        for (int k = 0; k < 3; k++) {
            m.condition = k;
            persiste_model *model = oracle_lib_model(&m, 0);
            double ll[N_FAM], ll2[N_FAM], dg[N_FAM], dl[N_FAM], fd[N_FAM];
            assert_int_equal(persiste_loglik_batch(ctx, model, b.tree, b.data,
                                                   N_FAM, b.lg, b.lm, ll),
                             PERSISTE_OK);
            assert_int_equal(persiste_ctx_n_impossible(ctx), 0);
            for (int f = 0; f < N_FAM; f++)
                ORACLE_ASSERT_CLOSE(ll[f], want[f][k], 1e-9, 1.0,
                                    "%s prior %d cond %d family %d", shape, p,
                                    k, f);
            /* the gradient: finite, and d_log_gain a finite difference */
            double *db = malloc(sizeof *db * (size_t)b.t.n_nodes);
            assert_int_equal(persiste_gradient_batch(ctx, model, b.tree, b.data,
                                                     N_FAM, b.lg, b.lm, NULL,
                                                     ll2, dg, dl, db),
                             PERSISTE_OK);
            for (int f = 0; f < N_FAM; f++) {
                ORACLE_ASSERT_CLOSE(ll2[f], ll[f], 1e-14, 1.0,
                                    "gradient loglik");
                assert_true(isfinite(dg[f]) && isfinite(dl[f]));
            }
            for (int32_t i = 0; i < b.t.n_nodes; i++)
                assert_true(isfinite(db[i]));
            free(db);
            if (k == 1) {
                const double h = 1e-4, step[4] = {-2, -1, 1, 2},
                             coef[4] = {1, -8, 8, -1};
                memset(fd, 0, sizeof fd);
                for (int s = 0; s < 4; s++) {
                    double lg[N_FAM];
                    for (int f = 0; f < N_FAM; f++)
                        lg[f] = b.lg[f] + step[s] * h;
                    assert_int_equal(persiste_loglik_batch(ctx, model, b.tree,
                                                           b.data, N_FAM, lg,
                                                           b.lm, ll2),
                                     PERSISTE_OK);
                    for (int f = 0; f < N_FAM; f++)
                        fd[f] += coef[s] * ll2[f] / (12 * h);
                }
                for (int f = 0; f < N_FAM; f++)
                    ORACLE_ASSERT_CLOSE(dg[f], fd[f], 1e-5, 1.0,
                                        "%s prior %d: FD d_log_gain family %d",
                                        shape, p, f);
            }
            persiste_model_destroy(model);
        }
    }
    persiste_ctx_destroy(ctx);
    big_free(&b);
}

static void test_balanced(void **state) {
    (void)state;
    check_big(true, 100);
}

static void test_caterpillar(void **state) {
    (void)state;
    check_big(false, 200);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_balanced),
        cmocka_unit_test(test_caterpillar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
