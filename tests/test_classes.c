/* Site repeats (lib/eval/classes.c, lib/eval/kernel/classes.h): each node's classes
 * counted against a brute-force comparison of the tip states below it, and
 * log-likelihoods on classes bitwise equal to those of the blocks at any
 * thread count, including unknown cells, one-child nodes and rates that
 * need rescaling, at one rate pair or a few; the classes found again for
 * new data or a new tree, and declined where they would not pay. */
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

static int is_below(const persiste_tree *tr, int32_t u, int32_t v)
{
    for (; u >= 0; u = tr->parent[u])
        if (u == v)
            return 1;
    return 0;
}

/* The distinct columns among families fam[0 .. n) of st, restricted to
 * the tips below v. */
static int64_t distinct_below(const persiste_tree *tr, const uint8_t *st,
                              const int64_t *fam, int64_t n, int32_t v)
{
    int32_t nt = tr->n_tips;
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t j = 0;
        for (; j < i; j++) {
            int32_t t = 0;
            while (t < nt && (!is_below(tr, t, v) ||
                              st[fam[i] * nt + t] == st[fam[j] * nt + t]))
                t++;
            if (t == nt)
                break; /* i repeats j below v */
        }
        count += j == i;
    }
    return count;
}

/* Random states with repeats: presence probability from few values. */
static uint8_t *random_states(oracle_rng *rng, int32_t nt, int64_t n_fam,
                              double p_unknown)
{
    uint8_t *st = malloc((size_t)n_fam * (size_t)nt);
    assert_non_null(st);
    static const double p[] = {0.0, 0.02, 0.1, 0.5, 0.9, 1.0};
    for (int64_t f = 0; f < n_fam; f++)
        oracle_random_states(rng, st + f * nt, nt, p[oracle_below(rng, 6)],
                             f >= 2 ? p_unknown : 0.0);
    return st;
}

/* Families simulated under the model (gain 0.1, loss 0.3) down tr: as in
 * real data, subtrees repeat their patterns (the classes pay). */
static uint8_t *simulate(oracle_rng *rng, const persiste_tree *tr,
                         int64_t n_fam)
{
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    uint8_t *node = malloc((size_t)n), *st = malloc((size_t)n_fam * nt);
    assert_true(node && st);
    for (int64_t f = 0; f < n_fam; f++) {
        node[n - 1] = oracle_uniform(rng, 0, 1) < 0.25;
        for (int32_t v = n - 2; v >= 0; v--) { /* parents first */
            double em = -expm1(-0.4 * tr->length[v]);
            double p1 = node[tr->parent[v]] ? 1 - 0.75 * em : 0.25 * em;
            node[v] = oracle_uniform(rng, 0, 1) < p1;
        }
        memcpy(st + f * nt, node, (size_t)nt);
    }
    free(node);
    return st;
}

/* Each group's classes of each node against the distinct columns below
 * it among the group's patterns (one family of each), at 1 and 3
 * threads (groups). */
static void check_found(const persiste_tree *tr, oracle_rng *rng)
{
    const int64_t n_fam = 200;
    int32_t nt = tr->n_tips;
    uint8_t *st = random_states(rng, nt, n_fam, 0.05);
    persiste_data *data = oracle_data(tr, st, n_fam);
    int64_t *fam = malloc(sizeof *fam * (size_t)n_fam);
    assert_true(data && fam);
    for (int64_t f = n_fam - 1; f >= 0; f--) /* each pattern's first */
        fam[data->pattern[f]] = f;
    struct persiste__job job = {.tree = tr, .data = data,
                                .n_families = n_fam, .one_pair = 1};
    for (int threads = 1; threads <= 3; threads += 2) {
        struct persiste__classes *c = NULL;
        persiste__classes_mode(1);
        int rc = persiste__classes_prepare(&c, &job, 1, threads);
        persiste__classes_mode(0);
        assert_int_equal(rc, 1);
        assert_int_equal(c->threads, threads);
        assert_int_equal(c->group[0].p0, 0);
        assert_int_equal(c->group[threads - 1].p1, data->n_patterns);
        for (int i = 0; i < threads; i++) {
            const struct persiste__class_group *g = &c->group[i];
            int64_t np = g->p1 - g->p0;
            assert_true(np > 0);
            assert_true(i == 0 || g->p0 == c->group[i - 1].p1);
            for (int32_t v = nt; v < tr->n_nodes; v++) {
                int64_t want = distinct_below(tr, st, fam + g->p0, np, v);
                if (g->n_class[v] != want)
                    fail_msg("group %d of %d, node %d: %lld classes, %lld "
                             "distinct patterns below",
                             i, threads, v, (long long)g->n_class[v],
                             (long long)want);
            }
            /* partials sharing entries never live at once: u's (from u
             * to its parent, which reads them) end before v's begin */
            for (int32_t u = nt; u < tr->n_nodes; u++)
                for (int32_t v = u + 1; v < tr->n_nodes; v++) {
                    int64_t eu = g->base[u] +
                                 persiste__class_padded(g->n_class[u]);
                    int64_t ev = g->base[v] +
                                 persiste__class_padded(g->n_class[v]);
                    if (g->base[u] < ev && g->base[v] < eu &&
                        tr->parent[u] >= v)
                        fail_msg("nodes %d and %d share partials' entries "
                                 "while both live", u, v);
                    assert_true(ev <= g->total);
                }
            /* the root's classes are the group's patterns, each its own,
             * in the group's part of root_ll */
            int64_t n_root = g->n_class[tr->n_nodes - 1];
            assert_int_equal(n_root, np);
            for (int64_t p = g->p0; p < g->p1; p++) {
                int64_t at = c->root_at[p] - (g->root_ll - c->root_ll);
                assert_true(at >= 0 && at < n_root);
                for (int64_t q = g->p0; q < p; q++)
                    assert_int_not_equal(c->root_at[p], c->root_at[q]);
            }
        }
        /* every family once, in its pattern's group */
        char *seen = calloc((size_t)n_fam, 1);
        assert_non_null(seen);
        assert_int_equal(c->group[0].f0, 0);
        assert_int_equal(c->group[threads - 1].f1, n_fam);
        for (int i = 0; i < threads; i++) {
            const struct persiste__class_group *g = &c->group[i];
            assert_true(i == 0 || g->f0 == c->group[i - 1].f1);
            for (int64_t k = g->f0; k < g->f1; k++) {
                int64_t f = c->family[k];
                assert_true(f >= 0 && f < n_fam && !seen[f]);
                seen[f] = 1;
                assert_true(data->pattern[f] >= g->p0 &&
                            data->pattern[f] < g->p1);
            }
        }
        free(seen);
        persiste__classes_destroy(c);
    }
    persiste_data_destroy(data);
    free(fam);
    free(st);
}

static void test_classes_found(void **state)
{
    (void)state;
    oracle_rng rng = {606};
    for (int i = 0; i < 30; i++) {
        persiste_tree *tr =
            oracle_random_tree(&rng, 2 + oracle_below(&rng, 40), 0.3, 0.1, 1.0);
        assert_non_null(tr);
        check_found(tr, &rng);
        persiste_tree_destroy(tr);
    }
    for (int i = 0; oracle_shape_trees[i]; i++) {
        persiste_tree *tr = oracle_newick(oracle_shape_trees[i]);
        assert_non_null(tr);
        check_found(tr, &rng);
        persiste_tree_destroy(tr);
    }
}

/* loglik_batch at per-family rates g, l, on classes (mode 1, or 2 with
 * 32-bit ids) or blocks (mode -1). */
static void loglik_rates(persiste_ctx *ctx, const persiste_tree *tr,
                         const persiste_data *data, int64_t n_fam,
                         const oracle_model *m, const double *g,
                         const double *l, int mode, double *out)
{
    persiste_model *model = oracle_lib_model(m, 0.0);
    assert_non_null(model);
    persiste__classes_mode(mode);
    int rc = persiste_loglik_batch(ctx, model, tr, data, n_fam, g, l, out);
    persiste__classes_mode(0);
    if (rc != PERSISTE_OK)
        print_message("loglik_batch: %s\n", persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    persiste_model_destroy(model);
}

/* The same at one pair (lg, ll) for all families. */
static void loglik(persiste_ctx *ctx, const persiste_tree *tr,
                   const persiste_data *data, int64_t n_fam,
                   const oracle_model *m, double lg, double ll, int mode,
                   double *out)
{
    double *g = malloc(sizeof *g * (size_t)n_fam);
    double *l = malloc(sizeof *l * (size_t)n_fam);
    assert_true(g && l);
    for (int64_t f = 0; f < n_fam; f++) {
        g[f] = lg;
        l[f] = ll;
    }
    loglik_rates(ctx, tr, data, n_fam, m, g, l, mode, out);
    free(g);
    free(l);
}

/* lnL at every pair, condition and prior, on classes at 1 to 3 threads
 * (and 2 with 32-bit ids) and in blocks: bitwise the same; at the
 * ordinary pairs the log-space oracle's too. */
static void check_bitwise(persiste_tree *tr, oracle_rng *rng, int unknown)
{
    const double(*pairs)[2] = oracle_bitwise_pairs;
    const int64_t n_fam = 301; /* a partial last block */
    int32_t nt = tr->n_tips;
    uint8_t *st = random_states(rng, nt, n_fam, unknown ? 0.03 : 0.0);
    persiste_data *data = oracle_data(tr, st, n_fam);
    double *on = malloc(sizeof *on * (size_t)n_fam);
    double *off = malloc(sizeof *off * (size_t)n_fam);
    /* 1, 2 and 3 threads; and 2 with 32-bit class ids (else 16 bits) */
    persiste_ctx *ctx[4] = {oracle_ctx(1), oracle_ctx(2), oracle_ctx(3),
                            oracle_ctx(2)};
    assert_true(data && on && off && ctx[0] && ctx[1] && ctx[2] && ctx[3]);
    oracle_tree t;
    oracle_tree_read(tr, &t);
    for (size_t p = 0; p < ORACLE_N_BITWISE_PAIRS; p++) {
        for (int k = 0; k < 3; k++) {
            oracle_model m = {oracle_conditions[k], oracle_priors[k],
                              ORACLE_FIXED_FREQ};
            loglik(ctx[0], tr, data, n_fam, &m, pairs[p][0], pairs[p][1], -1,
                   off);
            for (int th = 0; th < 4; th++) {
                loglik(ctx[th], tr, data, n_fam, &m, pairs[p][0],
                       pairs[p][1], th < 3 ? 1 : 2, on);
                assert_non_null(ctx[th]->classes->group); /* were used */
                assert_int_equal(ctx[th]->classes->group[0].ids16, th < 3);
                char what[80];
                snprintf(what, sizeof what,
                         "%d tips, pair %zu, condition %d, ctx %d", nt, p,
                         m.condition, th);
                ORACLE_ASSERT_SAME_BITS(on, "on classes", off, "in blocks",
                                        n_fam, what);
            }
            assert_true(oracle_bitwise_pair_close(&t, &m, st, n_fam, p, on));
        }
    }
    oracle_tree_free(&t);
    for (int th = 0; th < 4; th++)
        persiste_ctx_destroy(ctx[th]);
    persiste_data_destroy(data);
    free(st);
    free(on);
    free(off);
}

static void test_classes_bitwise(void **state)
{
    (void)state;
    static const int sizes[] = {2, 3, 5, 9, 17, 40, 130, 700};
    oracle_for_each_tree(88, sizes, sizeof sizes / sizeof sizes[0],
                         check_bitwise);
}

/* Families at 2 to 5 rate pairs (of oracle_bitwise_pairs, the bounds
 * among them), interleaved or in runs: on classes, once per pair, the same
 * bits as in blocks at 1 to 3 threads; 5 pairs run in blocks. */
static void check_pairs(persiste_tree *tr, oracle_rng *rng, int unknown)
{
    const int64_t n_fam = 301;
    int32_t nt = tr->n_tips;
    uint8_t *st = random_states(rng, nt, n_fam, unknown ? 0.03 : 0.0);
    persiste_data *data = oracle_data(tr, st, n_fam);
    double *g = malloc(sizeof *g * (size_t)n_fam);
    double *l = malloc(sizeof *l * (size_t)n_fam);
    double *on = malloc(sizeof *on * (size_t)n_fam);
    double *off = malloc(sizeof *off * (size_t)n_fam);
    assert_true(data && g && l && on && off);
    for (int k = 2; k <= PERSISTE_CLASSES_PAIRS + 1; k++) {
        /* contexts of their own: whether this call found classes */
        persiste_ctx *ctx[3] = {oracle_ctx(1), oracle_ctx(2), oracle_ctx(3)};
        assert_true(ctx[0] && ctx[1] && ctx[2]);
        int runs = oracle_below(rng, 2), first = oracle_below(rng, 3);
        for (int64_t f = 0; f < n_fam; f++) {
            int64_t p = first + (runs ? f * k / n_fam : f % k);
            g[f] = oracle_bitwise_pairs[p % ORACLE_N_BITWISE_PAIRS][0];
            l[f] = oracle_bitwise_pairs[p % ORACLE_N_BITWISE_PAIRS][1];
        }
        int c = oracle_below(rng, 3);
        oracle_model m = {oracle_conditions[c], oracle_priors[c],
                          ORACLE_FIXED_FREQ};
        loglik_rates(ctx[0], tr, data, n_fam, &m, g, l, -1, off);
        int64_t impossible = persiste_ctx_n_impossible(ctx[0]);
        for (int th = 0; th < 3; th++) {
            loglik_rates(ctx[th], tr, data, n_fam, &m, g, l, 1, on);
            int used = ctx[th]->classes && ctx[th]->classes->group &&
                       ctx[th]->classes->threads > 0;
            /* the planner sends conditioning with unknown cells (on each
             * family's known cells) to the general path */
            int fast = m.condition == PERSISTE_CONDITION_NONE ||
                       !data->any_unknown;
            assert_int_equal(used, fast && k <= PERSISTE_CLASSES_PAIRS);
            char what[80];
            snprintf(what, sizeof what, "%d tips, %d pairs, %d threads", nt,
                     k, th + 1);
            ORACLE_ASSERT_SAME_BITS(on, "on classes", off, "in blocks",
                                    n_fam, what);
            assert_int_equal(persiste_ctx_n_impossible(ctx[th]), impossible);
        }
        for (int th = 0; th < 3; th++)
            persiste_ctx_destroy(ctx[th]);
    }
    persiste_data_destroy(data);
    free(st);
    free(g);
    free(l);
    free(on);
    free(off);
}

static void test_classes_pairs(void **state)
{
    (void)state;
    static const int sizes[] = {2, 7, 40, 200};
    oracle_for_each_tree(99, sizes, sizeof sizes / sizeof sizes[0],
                         check_pairs);
}

/* Default mode: the classes are found at the 16th call for a (tree,
 * data), and found again for other data or another tree with the same
 * tips (never those of an object freed and replaced at its address). */
static void test_classes_cache(void **state)
{
    (void)state;
    oracle_rng rng = {9};
    const int64_t n_fam = 3000;
    const int32_t nt = 400;
    persiste_tree *tr = oracle_random_tree(&rng, nt, 0.0, 0.005, 0.1);
    persiste_ctx *ctx = oracle_ctx(2);
    double *on = malloc(sizeof *on * (size_t)n_fam);
    double *off = malloc(sizeof *off * (size_t)n_fam);
    assert_true(tr && ctx && on && off);
    oracle_model m = {PERSISTE_CONDITION_PRESENT, PERSISTE_ROOT_STATIONARY,
                      ORACLE_FIXED_FREQ};
    for (int round = 0; round < 3; round++) {
        /* new data (often at the freed data's address), or a new tree
         * whose tips are the same: the old classes would be wrong */
        if (round == 2) {
            persiste_tree *other =
                oracle_random_tree(&rng, nt, 0.0, 0.005, 0.1);
            assert_non_null(other);
            persiste_tree_destroy(tr);
            tr = other;
        }
        uint8_t *st = simulate(&rng, tr, n_fam);
        persiste_data *data = oracle_data(tr, st, n_fam);
        assert_non_null(data);
        loglik(ctx, tr, data, n_fam, &m, -1.0, 0.5, -1, off);
        for (int call = 1; call <= PERSISTE_CLASSES_CALLS + 1; call++) {
            loglik(ctx, tr, data, n_fam, &m, -1.0, 0.5, 0, on);
            ORACLE_ASSERT_SAME_BITS(on, "on classes", off, "in blocks",
                                    n_fam, "default mode");
            assert_int_equal(ctx->classes->data_serial, data->serial);
            assert_int_equal(ctx->classes->tree_serial, tr->serial);
            assert_int_equal(ctx->classes->group != NULL,
                             call >= PERSISTE_CLASSES_CALLS);
        }
        persiste_data_destroy(data);
        free(st);
    }
    persiste_tree_destroy(tr);
    persiste_ctx_destroy(ctx);
    free(on);
    free(off);
}

/* A caterpillar over random columns: nearly every node's classes are all
 * the patterns, too many to pay; declined, and the blocks serve. */
static void test_classes_declined(void **state)
{
    (void)state;
    oracle_rng rng = {31};
    const int64_t n_fam = 500;
    const int32_t nt = 64;
    char text[2048] = "t0:0.1";
    for (int32_t i = 1; i < nt; i++) {
        char buf[2048];
        snprintf(buf, sizeof buf, "(%s,t%d:0.1):0.1", text, i);
        memcpy(text, buf, sizeof text);
    }
    strcat(text, ";");
    persiste_tree *tr = oracle_newick(text);
    uint8_t *st = malloc((size_t)n_fam * nt);
    double *on = malloc(sizeof *on * (size_t)n_fam);
    double *off = malloc(sizeof *off * (size_t)n_fam);
    persiste_ctx *ctx = oracle_ctx(2);
    assert_true(tr && st && on && off && ctx);
    oracle_random_states(&rng, st, n_fam * nt, 0.5, 0.0);
    persiste_data *data = oracle_data(tr, st, n_fam);
    assert_non_null(data);
    oracle_model m = {PERSISTE_CONDITION_NONE, PERSISTE_ROOT_STATIONARY,
                      ORACLE_FIXED_FREQ};
    loglik(ctx, tr, data, n_fam, &m, 0.2, -0.3, -1, off);
    for (int call = 1; call <= PERSISTE_CLASSES_CALLS; call++)
        loglik(ctx, tr, data, n_fam, &m, 0.2, -0.3, 0, on);
    ORACLE_ASSERT_SAME_BITS(on, "on classes", off, "in blocks",
                            n_fam, "declined");
    assert_null(ctx->classes->group);
    assert_int_equal(ctx->classes->state, PERSISTE_CLASSES_DECLINED);
    assert_int_equal(ctx->classes->data_serial, data->serial);
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
    persiste_ctx_destroy(ctx);
    free(st);
    free(on);
    free(off);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes_found),
        cmocka_unit_test(test_classes_bitwise),
        cmocka_unit_test(test_classes_pairs),
        cmocka_unit_test(test_classes_cache),
        cmocka_unit_test(test_classes_declined),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
