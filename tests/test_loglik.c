/* Log-likelihoods of persiste_loglik_batch against independent oracles:
 * brute-force enumeration (tests/oracle.c), a closed form for two tips,
 * probability sums over all patterns, re-rooting invariance, thread-count
 * invariance, and argument errors. */
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

/* loglik_batch on a case (asserting success); returns the impossible count. */
static int64_t run_loglik(persiste_ctx *ctx, const oracle_model *m,
                          double min_length, const oracle_case *c,
                          double *out) {
    persiste_model *model = oracle_lib_model(m, min_length);
    assert_non_null(model);
    int rc = persiste_loglik_batch(ctx, model, c->tree, c->data, c->n_fam,
                                   c->log_gain, c->log_loss, out);
    if (rc != PERSISTE_OK)
        print_message("loglik_batch: %s\n", persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    persiste_model_destroy(model);
    return persiste_ctx_n_impossible(ctx);
}

/* Library vs brute force on every family of c, for every prior and
 * condition; brute force at lengths clamped to min_length. */
static void check_case_brute(persiste_ctx *ctx, const oracle_case *c,
                             double min_length, double rel, const char *name) {
    oracle_tree clamped;
    oracle_tree_read(c->tree, &clamped);
    oracle_tree_clamp(&clamped, min_length);
    oracle_masses *v = malloc(sizeof *v * (size_t)c->n_fam);
    double *ll = malloc(sizeof *ll * (size_t)c->n_fam);
    assert_non_null(v);
    assert_non_null(ll);
    for (int p = 0; p < N_PRIORS; p++) {
        oracle_model m = {0, oracle_priors[p], ORACLE_FIXED_FREQ};
        for (int64_t f = 0; f < c->n_fam; f++) {
            oracle_masses d;
            oracle_brute_masses(&clamped, &m, oracle_case_obs(c, f),
                                c->log_gain[f], c->log_loss[f], ORACLE_D_NONE,
                                &v[f], &d);
        }
        for (int k = 0; k < N_CONDS; k++) {
            m.condition = oracle_conditions[k];
            int64_t n_impossible = run_loglik(ctx, &m, min_length, c, ll);
            int64_t want_impossible = 0;
            for (int64_t f = 0; f < c->n_fam; f++) {
                long double want =
                    oracle_masses_loglik(m.condition, &v[f], NULL, NULL);
                want_impossible += isinf(want) ? 1 : 0;
                ORACLE_ASSERT_CLOSE(ll[f], want, rel, 1.0,
                                    "%s prior %d cond %d family %lld (lg %g "
                                    "ll %g)",
                                    name, m.root_prior, m.condition,
                                    (long long)f, c->log_gain[f],
                                    c->log_loss[f]);
            }
            assert_int_equal(n_impossible, want_impossible);
        }
    }
    free(v);
    free(ll);
    oracle_tree_free(&clamped);
}

/* ---- The oracles agree with each other (no library arithmetic) ---------- */
/* Dual-number derivatives against long-double central differences of the
 * brute force itself, in both log rates and every branch length > 0. */
static void check_oracle_derivatives(oracle_tree *t, const oracle_model *m,
                                     const uint8_t *obs, double lg, double lm) {
    const double h = 1e-6;
    for (int wrt = ORACLE_D_LOG_LOSS; wrt < t->n_nodes - 1; wrt++) {
        double dg = wrt == ORACLE_D_LOG_GAIN ? h : 0;
        double dl = wrt == ORACLE_D_LOG_LOSS ? h : 0, len = 0;
        if (wrt >= 0) {
            len = t->length[wrt];
            if (len < 2 * h)
                continue;
            t->length[wrt] = len + h;
        }
        long double up = oracle_brute_loglik(t, m, obs, lg + dg, lm + dl);
        if (wrt >= 0)
            t->length[wrt] = len - h;
        long double down = oracle_brute_loglik(t, m, obs, lg - dg, lm - dl);
        if (wrt >= 0)
            t->length[wrt] = len;
        ORACLE_ASSERT_CLOSE((double)((up - down) / (2 * h)),
                            oracle_brute_dloglik(t, m, obs, lg, lm, wrt), 1e-7,
                            1e-3, "oracle derivative %d", wrt);
    }
}

static void test_oracles_agree(void **state) {
    (void)state;
    oracle_rng rng = {11};
    for (int i = 0; oracle_small_trees[i]; i++) {
        oracle_case c;
        assert_true(oracle_case_init(&c, oracle_newick(oracle_small_trees[i]),
                                     &rng, 12, 0.15));
        for (int p = 0; p < N_PRIORS; p++)
            for (int k = 0; k < N_CONDS; k++) {
                oracle_model m = {oracle_conditions[k], oracle_priors[p],
                                  ORACLE_FIXED_FREQ};
                for (int64_t f = 0; f < c.n_fam; f++) {
                    const uint8_t *obs = oracle_case_obs(&c, f);
                    long double bf = oracle_brute_loglik(
                        &c.t, &m, obs, c.log_gain[f], c.log_loss[f]);
                    long double ls = oracle_logspace_loglik(
                        &c.t, &m, obs, c.log_gain[f], c.log_loss[f]);
                    /* (log-space forms 1 - A - C with cancellation: 1e-11
                     * on the tree of 1e-7 branches, 1e-16 elsewhere) */
                    ORACLE_ASSERT_CLOSE((double)ls, bf, 1e-11, 1.0,
                                        "oracles tree %d prior %d cond %d "
                                        "family %lld",
                                        i, p, k, (long long)f);
                    oracle_masses v, d;
                    oracle_brute_masses(&c.t, &m, obs, c.log_gain[f],
                                        c.log_loss[f], ORACLE_D_NONE, &v, &d);
                    ORACLE_ASSERT_CLOSE((double)(v.all_absent + v.not_absent),
                                        1.0L, 1e-15, 1.0, "absent complement");
                    ORACLE_ASSERT_CLOSE(
                        (double)(v.all_absent + v.all_present + v.variable),
                        1.0L, 1e-15, 1.0, "variable complement");
                    if (f == k && !isinf(bf)) /* (costly: a few) */
                        check_oracle_derivatives(&c.t, &m, obs, c.log_gain[f],
                                                 c.log_loss[f]);
                }
            }
        oracle_case_free(&c);
    }
}

/* The oracle against 60-digit decimal arithmetic (Python's decimal module,
 * the same enumeration with exact complements), where double precision
 * cancels: a tree of very short branches under VARIABLE, and slow gain
 * (1e-12) under PRESENT and VARIABLE. */
static void test_oracle_anchors(void **state) {
    (void)state;
    static const struct {
        const char *newick;
        uint8_t obs[4];
        double log_gain, log_loss;
        int condition;
        long double want;
    } anchors[] = {
        {"((A:1e-7,B:2e-7):1e-7,(C:3e-7,D:1e-7):2e-7);",
         {0, 0, 0, 0},
         -1.88136,
         -4.86569,
         PERSISTE_CONDITION_VARIABLE,
         15.003723274649266121453913L},
        {"((A:0.5,B:0.25):0.1,(C:0.3,D:0.9):0.2);",
         {1, 0, 0, 0},
         -27.631021115928547,
         0,
         PERSISTE_CONDITION_PRESENT,
         -1.7891061304222456489432048L},
        {"((A:0.5,B:0.25):0.1,(C:0.3,D:0.9):0.2);",
         {1, 0, 0, 0},
         -27.631021115928547,
         0,
         PERSISTE_CONDITION_VARIABLE,
         -1.7485846156742971877537514L},
    };
    persiste_ctx *ctx = oracle_ctx(1);
    for (size_t i = 0; i < sizeof anchors / sizeof anchors[0]; i++) {
        oracle_model m = {anchors[i].condition, PERSISTE_ROOT_STATIONARY, 0.5};
        persiste_tree *tree = oracle_newick(anchors[i].newick);
        persiste_data *data = oracle_data(tree, anchors[i].obs, 1);
        oracle_tree t;
        oracle_tree_read(tree, &t);
        long double got = oracle_brute_loglik(
            &t, &m, anchors[i].obs, anchors[i].log_gain, anchors[i].log_loss);
        ORACLE_ASSERT_CLOSE((double)got, anchors[i].want, 1e-15, 1.0,
                            "brute force, anchor %zu", i);
        persiste_model *model = oracle_lib_model(&m, 0);
        double ll;
        assert_int_equal(persiste_loglik_batch(ctx, model, tree, data, 1,
                                               &anchors[i].log_gain,
                                               &anchors[i].log_loss, &ll),
                         PERSISTE_OK);
        ORACLE_ASSERT_CLOSE(ll, anchors[i].want, 1e-12, 1.0,
                            "library, anchor %zu", i);
        persiste_model_destroy(model);
        oracle_tree_free(&t);
        persiste_data_destroy(data);
        persiste_tree_destroy(tree);
    }
    persiste_ctx_destroy(ctx);
}

/* ---- Brute force on small trees ----------------------------------------- */
static void brute_case(persiste_ctx *ctx, oracle_case *c, oracle_rng *rng,
                       const char *name) {
    (void)rng;
    check_case_brute(ctx, c, 0.0, 1e-12, name);
}

static void test_brute_force_small_trees(void **state) {
    (void)state;
    oracle_for_each_case(42, 56, 0.15, ORACLE_N_LAYOUTS, brute_case);
}

/* ---- Two tips, written out by hand -------------------------------------- */
static double p_trans(double lam, double mu, double t, int a, int b) {
    double s = lam + mu, em = -expm1(-s * t);
    double p01 = lam / s * em, p10 = mu / s * em;
    return a == 0 ? (b == 0 ? (mu + lam * exp(-s * t)) / s : p01)
                  : (b == 1 ? (lam + mu * exp(-s * t)) / s : p10);
}

static void test_two_tips_closed_form(void **state) {
    (void)state;
    const double t1 = 0.37, t2 = 1.4;
    const double rates[][2] = {{0.1, 0.2}, {2.0, 0.5}, {0.01, 3.0}, {7, 7}};
    persiste_ctx *ctx = oracle_ctx(1);
    persiste_tree *tree = oracle_newick("(A:0.37,B:1.4);");
    assert_non_null(tree);
    /* families: every pair of states including unknown (2) */
    uint8_t states[9 * 2];
    for (int k = 0; k < 9; k++) {
        states[2 * k] = (uint8_t)(k / 3);
        states[2 * k + 1] = (uint8_t)(k % 3);
    }
    persiste_data *data = oracle_data(tree, states, 9);
    assert_non_null(data);
    for (size_t r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        double lam = rates[r][0], mu = rates[r][1], s = lam + mu;
        double lg[9], lm[9], ll[9];
        for (int k = 0; k < 9; k++) {
            lg[k] = log(lam);
            lm[k] = log(mu);
        }
        for (int p = 0; p < N_PRIORS; p++) {
            double pi1 = p == 0 ? lam / s : p == 1 ? ORACLE_FIXED_FREQ : 0.0;
            double pi[2] = {1 - pi1, pi1};
            /* L(a, b) = sum_r pi_r P_ra(t1) P_rb(t2); unknown sums over a */
            double lik[3][3];
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++) {
                    lik[a][b] = 0;
                    for (int root = 0; root < 2; root++) {
                        double fa = a == 2 ? 1 : p_trans(lam, mu, t1, root, a);
                        double fb = b == 2 ? 1 : p_trans(lam, mu, t2, root, b);
                        lik[a][b] += pi[root] * fa * fb;
                    }
                }
            if (p == 0) /* reversibility: L(1,0) = pi1 P10(t1 + t2) */
                ORACLE_ASSERT_CLOSE(lik[1][0],
                                    pi1 * p_trans(lam, mu, t1 + t2, 1, 0),
                                    1e-14, 0, "hand-written 2-tip");
            /* conditioning on the family's known cells (IQ-TREE's
             * +ASC_MIS): norm[cond][a known][b known], 0 when the known
             * cells cannot be observable (then -inf) */
            double norm[3][2][2] = {
                {{1, 1}, {1, 1}},
                {{0, lik[2][1]}, {lik[1][2], lik[0][1] + lik[1][0] +
                                                 lik[1][1]}},
                {{0, 0}, {0, lik[0][1] + lik[1][0]}}};
            for (int k = 0; k < N_CONDS; k++) {
                oracle_model m = {oracle_conditions[k], oracle_priors[p],
                                  ORACLE_FIXED_FREQ};
                persiste_model *model = oracle_lib_model(&m, 0);
                assert_int_equal(persiste_loglik_batch(ctx, model, tree, data,
                                                       9, lg, lm, ll),
                                 PERSISTE_OK);
                for (int f = 0; f < 9; f++) {
                    double nk = norm[k][f / 3 != 2][f % 3 != 2];
                    double want = nk > 0 ? log(lik[f / 3][f % 3]) - log(nk)
                                         : -INFINITY;
                    ORACLE_ASSERT_CLOSE(ll[f], want, 1e-12, 1.0,
                                        "2 tips rates %zu prior %d cond %d "
                                        "pattern %d%d",
                                        r, p, k, f / 3, f % 3);
                }
                persiste_model_destroy(model);
            }
        }
    }
    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
    persiste_ctx_destroy(ctx);
}

/* ---- Probabilities over all 2^n patterns sum to one -------------------- */
static void test_pattern_sums(void **state) {
    (void)state;
    oracle_rng rng = {2024};
    persiste_ctx *ctx = oracle_ctx(2);
    for (int n = 6; n <= 10; n++) {
        persiste_tree *tree = oracle_random_tree(&rng, n, 0.3, 0.05, 1.5);
        assert_non_null(tree);
        int64_t n_pat = (int64_t)1 << n;
        uint8_t *states = malloc((size_t)(n_pat * n));
        double *lg = malloc(sizeof *lg * (size_t)n_pat);
        double *lm = malloc(sizeof *lm * (size_t)n_pat);
        double *ll = malloc(sizeof *ll * (size_t)n_pat);
        for (int64_t k = 0; k < n_pat; k++)
            for (int i = 0; i < n; i++)
                states[k * n + i] = (uint8_t)((k >> i) & 1);
        persiste_data *data = oracle_data(tree, states, n_pat);
        assert_non_null(data);
        for (int r = 0; r < 3; r++) {
            double g = oracle_uniform(&rng, -4, 2),
                   l = oracle_uniform(&rng, -4, 2);
            for (int64_t k = 0; k < n_pat; k++) {
                lg[k] = g;
                lm[k] = l;
            }
            for (int p = 0; p < N_PRIORS; p++)
                for (int c = 0; c < N_CONDS; c++) {
                    oracle_model m = {oracle_conditions[c], oracle_priors[p],
                                      ORACLE_FIXED_FREQ};
                    persiste_model *model = oracle_lib_model(&m, 0);
                    assert_int_equal(persiste_loglik_batch(ctx, model, tree,
                                                           data, n_pat, lg, lm,
                                                           ll),
                                     PERSISTE_OK);
                    long double sum = 0;
                    for (int64_t k = 0; k < n_pat; k++) {
                        bool dropped =
                            (c >= 1 && k == 0) || (c == 2 && k == n_pat - 1);
                        if (!dropped)
                            sum += expl((long double)ll[k]);
                    }
                    ORACLE_ASSERT_CLOSE((double)sum, 1.0L, 1e-12, 1.0,
                                        "pattern sum n %d rates %g %g prior %d "
                                        "cond %d",
                                        n, g, l, p, c);
                    persiste_model_destroy(model);
                }
        }
        persiste_data_destroy(data);
        persiste_tree_destroy(tree);
        free(states);
        free(lg);
        free(lm);
        free(ll);
    }
    persiste_ctx_destroy(ctx);
}

/* ---- Re-rooting at stationarity ----------------------------------------- */
/* One unrooted tree, A-u 0.1, B-u 0.2, u-v 0.3, C-v 0.4, v-w 0.25,
 * D-w 0.5, E-w 0.6, rooted on different branches and at node v. */
static const char *const rootings[] = {
    "((A:0.1,B:0.2):0.1,(C:0.4,(D:0.5,E:0.6):0.25):0.2);",
    "(A:0.04,(B:0.2,(C:0.4,(D:0.5,E:0.6):0.25):0.3):0.06);",
    "(((A:0.1,B:0.2):0.3,C:0.4):0.2,(D:0.5,E:0.6):0.05);",
    "(E:0.35,(D:0.5,(C:0.4,(A:0.1,B:0.2):0.3):0.25):0.25);",
    "((A:0.1,B:0.2):0.3,C:0.4,(D:0.5,E:0.6):0.25);",
};

static void test_rerooting_invariance(void **state) {
    (void)state;
    enum { N_TAXA = 5, N_FAM = 32 + 40, N_ROOT = 5 };
    static const char *const taxa[N_TAXA] = {"A", "B", "C", "D", "E"};
    oracle_rng rng = {99};
    uint8_t states[N_FAM * N_TAXA];
    double lg[N_FAM], lm[N_FAM], ll[N_ROOT][N_FAM];
    for (int f = 0; f < N_FAM; f++) {
        for (int i = 0; i < N_TAXA; i++)
            states[f * N_TAXA + i] = (uint8_t)((f >> i) & 1);
        if (f >= 32)
            oracle_random_states(&rng, states + f * N_TAXA, N_TAXA, 0.5, 0.3);
        lg[f] = oracle_uniform(&rng, -5, 3);
        lm[f] = oracle_uniform(&rng, -5, 3);
    }
    persiste_ctx *ctx = oracle_ctx(1);
    for (int c = 0; c < N_CONDS; c++) {
        oracle_model m = {oracle_conditions[c], PERSISTE_ROOT_STATIONARY,
                          ORACLE_FIXED_FREQ};
        persiste_model *model = oracle_lib_model(&m, 0);
        for (int r = 0; r < N_ROOT; r++) {
            persiste_tree *tree = oracle_newick(rootings[r]);
            persiste_data *data = NULL;
            assert_int_equal(persiste_data_from_matrix(&data, tree, states,
                                                       N_FAM, N_TAXA, N_TAXA, 1,
                                                       taxa, NULL, 0),
                             PERSISTE_OK);
            assert_int_equal(persiste_loglik_batch(ctx, model, tree, data,
                                                   N_FAM, lg, lm, ll[r]),
                             PERSISTE_OK);
            for (int f = 0; f < N_FAM; f++)
                ORACLE_ASSERT_CLOSE(ll[r][f], (long double)ll[0][f], 1e-12, 1.0,
                                    "rooting %d cond %d family %d", r, c, f);
            persiste_data_destroy(data);
            persiste_tree_destroy(tree);
        }
        persiste_model_destroy(model);
    }
    persiste_ctx_destroy(ctx);
}

/* ---- Impossible families and the minimum branch length ------------------ */
static void test_impossible_and_min_length(void **state) {
    (void)state;
    oracle_rng rng = {5};
    persiste_ctx *ctx = oracle_ctx(1);
    oracle_case c;
    assert_true(oracle_case_init(
        &c, oracle_newick("((A:0,B:0):0.5,((C:0.2,D:0):0,E:0.4):0.3);"), &rng,
        60, 0.1));
    /* families 2, 3: A and B differ across two zero-length branches */
    const uint8_t conflict[2][5] = {{1, 0, 1, 1, 0}, {0, 1, 2, 0, 1}};
    memcpy(c.states + 2 * 5, conflict, sizeof conflict);
    persiste_data_destroy(c.data);
    c.data = oracle_data(c.tree, c.states, c.n_fam);
    assert_non_null(c.data);

    double *ll = malloc(sizeof *ll * (size_t)c.n_fam);
    oracle_model m = {PERSISTE_CONDITION_PRESENT, PERSISTE_ROOT_STATIONARY,
                      ORACLE_FIXED_FREQ};
    int64_t n_imp = run_loglik(ctx, &m, 0.0, &c, ll);
    assert_true(isinf(ll[2]) && ll[2] < 0);
    assert_true(isinf(ll[3]) && ll[3] < 0);
    assert_true(n_imp >= 2);
    /* (the brute-force comparison, impossible count included) */
    check_case_brute(ctx, &c, 0.0, 1e-12, "zero-length tree");

    /* clamped: everything finite, equal to brute force at clamped lengths */
    n_imp = run_loglik(ctx, &m, 1e-3, &c, ll);
    assert_int_equal(n_imp, 0);
    for (int64_t f = 0; f < c.n_fam; f++)
        assert_true(isfinite(ll[f]));
    check_case_brute(ctx, &c, 1e-3, 1e-12, "clamped 1e-3");
    oracle_case_free(&c);

    /* a clamp above several ordinary lengths */
    assert_true(oracle_case_init(&c, oracle_newick(oracle_small_trees[8]), &rng,
                                 30, 0.1));
    check_case_brute(ctx, &c, 0.25, 1e-12, "clamped 0.25");
    oracle_case_free(&c);
    free(ll);
    persiste_ctx_destroy(ctx);
}

/* ---- Slow gain: 1 - P(all absent) must not cancel ----------------------- */
static void test_slow_gain(void **state) {
    (void)state;
    static const int trees[] = {2, 4, 8, 11};
    static const double gains[] = {1e-8, 1e-12};
    oracle_rng rng = {77};
    persiste_ctx *ctx = oracle_ctx(1);
    double ll[24];
    for (size_t i = 0; i < sizeof trees / sizeof trees[0]; i++) {
        oracle_case c;
        assert_true(oracle_case_init(
            &c, oracle_newick(oracle_small_trees[trees[i]]), &rng, 24, 0.1));
        int32_t n_tips = c.t.n_tips;
        for (int64_t f = 2; f < c.n_fam; f++) /* sparse, some singletons */
            oracle_random_states(&rng, c.states + f * n_tips, n_tips,
                                 f < 8 ? 0.0 : 0.25, 0.1);
        for (int64_t f = 2; f < 8; f++)
            c.states[f * n_tips + f % n_tips] = PERSISTE_PRESENT;
        persiste_data_destroy(c.data);
        c.data = oracle_data(c.tree, c.states, c.n_fam);
        for (size_t g = 0; g < 2; g++) {
            for (int64_t f = 0; f < c.n_fam; f++) {
                c.log_gain[f] = log(gains[g]);
                c.log_loss[f] = 0;
            }
            for (int p = 0; p < N_PRIORS; p++)
                for (int k = 1; k < N_CONDS; k++) {
                    oracle_model m = {oracle_conditions[k], oracle_priors[p],
                                      ORACLE_FIXED_FREQ};
                    run_loglik(ctx, &m, 0, &c, ll);
                    for (int64_t f = 0; f < c.n_fam; f++) {
                        long double want = oracle_brute_loglik(
                            &c.t, &m, oracle_case_obs(&c, f), c.log_gain[f], 0);
                        ORACLE_ASSERT_CLOSE(ll[f], want, 1e-9, 1.0,
                                            "slow gain %g tree %d prior %d "
                                            "cond %d family %lld",
                                            gains[g], trees[i], p, k,
                                            (long long)f);
                    }
                }
        }
        oracle_case_free(&c);
    }
    persiste_ctx_destroy(ctx);
}

/* ---- Thread count changes no bit ---------------------------------------- */
static void test_threads_bitwise(void **state) {
    (void)state;
    oracle_rng rng = {31337};
    oracle_case c;
    assert_true(oracle_case_init(
        &c, oracle_random_tree(&rng, 40, 0.2, 0.0, 1.0), &rng, 3001, 0.05));
    double *ll[3];
    static const int threads[3] = {1, 2, 8};
    for (int k = 0; k < N_CONDS; k++) {
        oracle_model m = {oracle_conditions[k], PERSISTE_ROOT_STATIONARY,
                          ORACLE_FIXED_FREQ};
        for (int i = 0; i < 3; i++) {
            persiste_ctx *ctx = oracle_ctx(threads[i]);
            assert_non_null(ctx);
            ll[i] = malloc(sizeof *ll[i] * (size_t)c.n_fam);
            run_loglik(ctx, &m, 0, &c, ll[i]);
            persiste_ctx_destroy(ctx);
        }
        for (int64_t f = 0; f < c.n_fam; f++)
            assert_false(isnan(ll[0][f]));
        assert_memory_equal(ll[0], ll[1], sizeof *ll[0] * (size_t)c.n_fam);
        assert_memory_equal(ll[0], ll[2], sizeof *ll[0] * (size_t)c.n_fam);
        for (int i = 0; i < 3; i++)
            free(ll[i]);
    }
    /* spot-check the values themselves */
    oracle_model m = {PERSISTE_CONDITION_PRESENT, PERSISTE_ROOT_STATIONARY, 0};
    persiste_ctx *ctx = oracle_ctx(2);
    double *out = malloc(sizeof *out * (size_t)c.n_fam);
    run_loglik(ctx, &m, 0, &c, out);
    for (int64_t f = 0; f < c.n_fam; f += 97)
        ORACLE_ASSERT_CLOSE(
            out[f],
            oracle_logspace_loglik(&c.t, &m, oracle_case_obs(&c, f),
                                   c.log_gain[f], c.log_loss[f]),
            1e-12, 1.0, "40 tips family %lld", (long long)f);
    free(out);
    persiste_ctx_destroy(ctx);
    oracle_case_free(&c);
}

/* ---- Argument errors ---------------------------------------------------- */
#define N_ERR 5 /* families */
#define N_BUF 8 /* >= families, >= nodes */
static double sentinel[N_BUF];

/* Both batch calls with the given arguments (gradient: weights w) must fail
 * with `code`, record a message, and leave every output untouched. */
static void expect_error_w(int code, persiste_ctx *ctx,
                           const persiste_model *model,
                           const persiste_tree *tree, const persiste_data *data,
                           int64_t n, const double *lg, const double *lm,
                           const double *w, bool null_out, const char *what) {
    double out[5][N_BUF];
    for (int i = 0; i < N_BUF; i++)
        sentinel[i] = 1234.5 + i;
    for (int i = 0; i < 5; i++)
        memcpy(out[i], sentinel, sizeof sentinel);
    int rc = w ? code
               : persiste_loglik_batch(ctx, model, tree, data, n, lg, lm,
                                       null_out ? NULL : out[0]);
    if (rc != code)
        print_message("%s: loglik_batch returned %d, want %d\n", what, rc,
                      code);
    assert_int_equal(rc, code);
    assert_true(w || strlen(persiste_last_error()) > 0);
    rc = persiste_gradient_batch(ctx, model, tree, data, n, lg, lm, w,
                                 null_out ? NULL : out[1], out[2], out[3],
                                 out[4]);
    if (rc != code)
        print_message("%s: gradient_batch returned %d, want %d\n", what, rc,
                      code);
    assert_int_equal(rc, code);
    assert_true(strlen(persiste_last_error()) > 0);
    for (int i = 0; i < 5; i++)
        assert_memory_equal(out[i], sentinel, sizeof sentinel);
}

static void expect_error(int code, persiste_ctx *ctx,
                         const persiste_model *model, const persiste_tree *tree,
                         const persiste_data *data, int64_t n, const double *lg,
                         const double *lm, bool null_out, const char *what) {
    expect_error_w(code, ctx, model, tree, data, n, lg, lm, NULL, null_out,
                   what);
}

static void test_argument_errors(void **state) {
    (void)state;
    oracle_rng rng = {3};
    oracle_case c;
    assert_true(oracle_case_init(&c, oracle_newick(oracle_small_trees[2]), &rng,
                                 N_ERR, 0.1));
    persiste_ctx *ctx = oracle_ctx(1);
    oracle_model m = {PERSISTE_CONDITION_PRESENT, PERSISTE_ROOT_STATIONARY,
                      0.5};
    persiste_model *model = oracle_lib_model(&m, 0);
    const double *lg = c.log_gain, *lm = c.log_loss;
    int64_t n = c.n_fam;
    const int INV = PERSISTE_E_INVALID;

    expect_error(INV, NULL, model, c.tree, c.data, n, lg, lm, false,
                 "NULL ctx");
    expect_error(INV, ctx, NULL, c.tree, c.data, n, lg, lm, false,
                 "NULL model");
    expect_error(INV, ctx, model, NULL, c.data, n, lg, lm, false, "NULL tree");
    expect_error(INV, ctx, model, c.tree, NULL, n, lg, lm, false, "NULL data");
    expect_error(INV, ctx, model, c.tree, c.data, n, NULL, lm, false,
                 "NULL gain");
    expect_error(INV, ctx, model, c.tree, c.data, n, lg, NULL, false,
                 "NULL loss");
    expect_error(INV, ctx, model, c.tree, c.data, n, lg, lm, true, "NULL out");
    expect_error(INV, ctx, model, c.tree, c.data, n - 1, lg, lm, false,
                 "n - 1");
    expect_error(INV, ctx, model, c.tree, c.data, n + 1, lg, lm, false,
                 "n + 1");
    expect_error(INV, ctx, model, c.tree, c.data, -1, lg, lm, false, "n = -1");

    const double bad[] = {NAN, INFINITY, -INFINITY};
    double lg2[N_ERR], lm2[N_ERR];
    for (int b = 0; b < 3; b++) {
        memcpy(lg2, lg, sizeof lg2);
        memcpy(lm2, lm, sizeof lm2);
        lg2[3] = bad[b];
        expect_error(PERSISTE_E_DOMAIN, ctx, model, c.tree, c.data, n, lg2, lm,
                     false, "bad log gain");
        lm2[1] = bad[b];
        expect_error(PERSISTE_E_DOMAIN, ctx, model, c.tree, c.data, n, lg, lm2,
                     false, "bad log loss");
    }

    /* weights must be finite too */
    double w[N_ERR] = {1, 1, NAN, 1, 1};
    expect_error_w(PERSISTE_E_DOMAIN, ctx, model, c.tree, c.data, n, lg, lm, w,
                   false, "NaN weight");

    /* data bound to another tree: other names, or the same names reordered */
    static const char *const others[] = {
        "((X:0.5,Y:0.25):0.1,(Z:0.3,W:0.9):0.2);",
        "((C:0.5,D:0.25):0.1,(A:0.3,B:0.9):0.2);"};
    for (int i = 0; i < 2; i++) {
        persiste_tree *other = oracle_newick(others[i]);
        expect_error(INV, ctx, model, other, c.data, n, lg, lm, false,
                     "data of another tree");
        persiste_tree_destroy(other);
    }
    /* and the call still works afterwards */
    double out[N_ERR];
    run_loglik(ctx, &m, 0, &c, out);
    persiste_model_destroy(model);
    persiste_ctx_destroy(ctx);
    oracle_case_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oracles_agree),
        cmocka_unit_test(test_oracle_anchors),
        cmocka_unit_test(test_brute_force_small_trees),
        cmocka_unit_test(test_two_tips_closed_form),
        cmocka_unit_test(test_pattern_sums),
        cmocka_unit_test(test_rerooting_invariance),
        cmocka_unit_test(test_impossible_and_min_length),
        cmocka_unit_test(test_slow_gain),
        cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_argument_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
