/* Clade tables (lib/eval/clades.c, lib/eval/kernel/clades.h): the clades found
 * against a brute-force search over the parent array, and log-likelihoods
 * with the tables bitwise equal to those of the plain pruning, including
 * unknown cells and rates whose clade partials need rescaling. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernel.h"
#include "oracle.h"

/* Whether u lies in the subtree of v (u == v included): up the parents. */
static int below(const persiste_tree *tr, int32_t u, int32_t v)
{
    for (; u >= 0; u = tr->parent[u])
        if (u == v)
            return 1;
    return 0;
}

/* The clades of tr by brute force: internal v with at most
 * PERSISTE_CLADE_TIPS tips and 2 to PERSISTE_CLADE_TIPS - 1 internal nodes
 * below (one-child nodes make more), whose parent has more of either;
 * checked against what persiste__assign_clades found, clade by clade in
 * post-order. Returns their number. */
static int32_t check_clades(const persiste_tree *tr)
{
    struct persiste__scratch *s = NULL;
    assert_int_equal(persiste__scratch_create(&s), PERSISTE_OK);
    assert_int_equal(persiste__scratch_clades(s, (size_t)tr->n_nodes,
                                              (size_t)tr->n_tips),
                     PERSISTE_OK);
    struct persiste__job job = {.tree = tr};
    persiste__assign_clades(s, &job);
    int32_t n = tr->n_nodes, nt = tr->n_tips, found = 0;
    int32_t *tips = malloc(sizeof *tips * (size_t)n);
    int32_t *inner = malloc(sizeof *inner * (size_t)n);
    assert_non_null(tips);
    assert_non_null(inner);
    for (int32_t v = 0; v < n; v++) {
        tips[v] = inner[v] = 0;
        for (int32_t u = 0; u < n; u++)
            if (below(tr, u, v))
                (u < nt ? tips : inner)[v]++;
    }
    size_t table = 0;
    for (int32_t v = nt; v < n; v++) {
        int32_t p = tr->parent[v];
        if (tips[v] > PERSISTE_CLADE_TIPS || inner[v] < 2 ||
            inner[v] > PERSISTE_CLADE_TIPS - 1 ||
            (p >= 0 && tips[p] <= PERSISTE_CLADE_TIPS &&
             inner[p] <= PERSISTE_CLADE_TIPS - 1))
            continue;
        assert_true(found < job.n_clades);
        const struct persiste__clade *c = &job.clades[found++];
        assert_int_equal(c->root, v);
        assert_int_equal(c->n_tips, tips[v]);
        assert_int_equal(c->table, table);
        table += 2 * persiste__clade_entries(c->n_tips);
        /* first..root: exactly the internal nodes below v */
        assert_int_equal(c->root - c->first + 1, inner[v]);
        for (int32_t u = c->first; u <= c->root; u++)
            assert_true(below(tr, u, v));
        /* its tips: each below v, none twice */
        for (int32_t i = 0; i < c->n_tips; i++) {
            int32_t t = job.clade_tips[c->tip0 + i];
            assert_true(t >= 0 && t < nt && below(tr, t, v));
            for (int32_t k = 0; k < i; k++)
                assert_int_not_equal(job.clade_tips[c->tip0 + k], t);
        }
    }
    assert_int_equal(job.n_clades, found);
    free(tips);
    free(inner);
    persiste__scratch_destroy(s);
    return found;
}

static void test_clades_found(void **state)
{
    (void)state;
    oracle_rng rng = {2026};
    int32_t found = 0; /* so that the comparisons are not vacuous */
    for (int i = 0; i < 60; i++) {
        int n_tips = 1 + oracle_below(&rng, 90);
        persiste_tree *tr = oracle_random_tree(&rng, n_tips, 0.3, 0.0, 1.0);
        assert_non_null(tr);
        found += check_clades(tr);
        persiste_tree_destroy(tr);
    }
    assert_true(found > 100);
    for (int i = 0; oracle_small_trees[i]; i++) {
        persiste_tree *tr = oracle_newick(oracle_small_trees[i]);
        assert_non_null(tr);
        check_clades(tr);
        persiste_tree_destroy(tr);
    }
    /* one-child nodes: a clade of few tips may hold more internal nodes
     * than a table's build keeps */
    for (int i = 0; oracle_shape_trees[i]; i++) {
        persiste_tree *tr = oracle_newick(oracle_shape_trees[i]);
        assert_non_null(tr);
        check_clades(tr);
        persiste_tree_destroy(tr);
    }
}

/* loglik_batch at the rates (g, l) with clade tables on or off. */
static void loglik_rates(const persiste_tree *tr, const persiste_data *data,
                         int64_t n_fam, const oracle_model *m,
                         const double *g, const double *l, int clades,
                         int threads, double *out)
{
    persiste_ctx *ctx = oracle_ctx(threads);
    persiste_model *model = oracle_lib_model(m, 0.0);
    assert_non_null(ctx);
    assert_non_null(model);
    persiste__clades_disable(!clades);
    int rc = persiste_loglik_batch(ctx, model, tr, data, n_fam, g, l, out);
    persiste__clades_disable(0);
    if (rc != PERSISTE_OK)
        print_message("loglik_batch: %s\n", persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    persiste_model_destroy(model);
    persiste_ctx_destroy(ctx);
}

/* The same at one pair for every family, 2 threads. */
static void loglik(const persiste_tree *tr, const persiste_data *data,
                   int64_t n_fam, const oracle_model *m, double lg, double ll,
                   int clades, double *out)
{
    double *g = malloc(sizeof *g * (size_t)n_fam);
    double *l = malloc(sizeof *l * (size_t)n_fam);
    assert_non_null(g);
    assert_non_null(l);
    for (int64_t f = 0; f < n_fam; f++) {
        g[f] = lg;
        l[f] = ll;
    }
    loglik_rates(tr, data, n_fam, m, g, l, clades, 2, out);
    free(g);
    free(l);
}

/* lnL on tr at every pair, condition and prior, with and without clade
 * tables: bitwise the same; at the ordinary pairs also the log-space
 * oracle's (at the bounds it loses P(observable) = 1 - P(all absent) to
 * cancellation, which the library carries directly). Families 0 and 1 all
 * absent and all present, the others random, unknown cells in some. */
static void check_bitwise(persiste_tree *tr, oracle_rng *rng, int unknown)
{
    const double(*pairs)[2] = oracle_bitwise_pairs;
    const int64_t n_fam = 301; /* a partial last block */
    int32_t n_tips = persiste_tree_n_tips(tr);
    double *on = malloc(sizeof *on * (size_t)n_fam);
    double *off = malloc(sizeof *off * (size_t)n_fam);
    uint8_t *st = malloc((size_t)n_fam * (size_t)n_tips);
    assert_non_null(on);
    assert_non_null(off);
    assert_non_null(st);
    for (int64_t f = 0; f < n_fam; f++)
        oracle_random_states(rng, st + f * n_tips, n_tips,
                             f < 2 ? (double)f : oracle_uniform(rng, 0, 1),
                             unknown && f >= 2 ? 0.03 : 0.0);
    persiste_data *data = oracle_data(tr, st, n_fam);
    assert_non_null(data);
    oracle_tree t;
    oracle_tree_read(tr, &t);
    for (size_t p = 0; p < ORACLE_N_BITWISE_PAIRS; p++) {
        for (int k = 0; k < 3; k++) {
            oracle_model m = {oracle_conditions[k], oracle_priors[k],
                              ORACLE_FIXED_FREQ};
            loglik(tr, data, n_fam, &m, pairs[p][0], pairs[p][1], 1, on);
            loglik(tr, data, n_fam, &m, pairs[p][0], pairs[p][1], 0, off);
            char what[80];
            snprintf(what, sizeof what, "%d tips, pair %zu, condition %d",
                     n_tips, p, m.condition);
            ORACLE_ASSERT_SAME_BITS(on, "with tables", off, "without",
                                    n_fam, what);
            assert_true(oracle_bitwise_pair_close(&t, &m, st, n_fam, p, on));
        }
    }
    oracle_tree_free(&t);
    persiste_data_destroy(data);
    free(st);
    free(on);
    free(off);
}

static void test_clades_bitwise(void **state)
{
    (void)state;
    static const int sizes[] = {2, 3, 4, 5, 6, 9, 17, 40, 130};
    oracle_for_each_tree(77, sizes, sizeof sizes / sizeof sizes[0],
                         check_bitwise);
}

/* Two pairs, each in one long run of families: tables are built only
 * once a worker has had enough blocks in a row at a pair (one thread, so
 * that it has), then rebuilt for the second pair. */
static void test_clades_two_pairs(void **state)
{
    (void)state;
    oracle_rng rng = {4242};
    const int64_t n_fam = 2000;
    const int n_tips = 40;
    persiste_tree *tr = oracle_random_tree(&rng, n_tips, 0.2, 0.01, 1.0);
    assert_non_null(tr);
    uint8_t *st = malloc((size_t)n_fam * n_tips);
    double *g = malloc(sizeof *g * (size_t)n_fam);
    double *l = malloc(sizeof *l * (size_t)n_fam);
    double *on = malloc(sizeof *on * (size_t)n_fam);
    double *off = malloc(sizeof *off * (size_t)n_fam);
    assert_true(st && g && l && on && off);
    for (int64_t f = 0; f < n_fam; f++) {
        oracle_random_states(&rng, st + f * n_tips, n_tips,
                             oracle_uniform(&rng, 0, 1), 0.0);
        g[f] = f < n_fam / 2 ? -1.0 : 0.5;
        l[f] = f < n_fam / 2 ? 0.3 : -2.0;
    }
    persiste_data *data = oracle_data(tr, st, n_fam);
    assert_non_null(data);
    oracle_model m = {PERSISTE_CONDITION_PRESENT, PERSISTE_ROOT_STATIONARY,
                      ORACLE_FIXED_FREQ};
    loglik_rates(tr, data, n_fam, &m, g, l, 1, 1, on);
    loglik_rates(tr, data, n_fam, &m, g, l, 0, 1, off);
    ORACLE_ASSERT_SAME_BITS(on, "with tables", off, "without",
                            n_fam, "two pairs");
    oracle_tree t;
    oracle_tree_read(tr, &t);
    for (int64_t f = 0; f < n_fam; f += 97)
        ORACLE_ASSERT_CLOSE(on[f],
                            oracle_logspace_loglik(&t, &m, st + f * n_tips,
                                                   g[f], l[f]),
                            1e-9, 1.0, "two pairs, family %lld", (long long)f);
    oracle_tree_free(&t);
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
    free(st);
    free(g);
    free(l);
    free(on);
    free(off);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clades_found),
        cmocka_unit_test(test_clades_bitwise),
        cmocka_unit_test(test_clades_two_pairs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
