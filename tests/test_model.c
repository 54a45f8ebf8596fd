/* The model options (observation error, rate categories, lineage
 * multipliers, at least k presences, conditioning on each family's known
 * cells) against an independent brute force written here from the
 * definitions in persiste.h: every assignment of the internal nodes' states
 * is enumerated, the tips' true states are summed out one by one, and the
 * conditioning event's probability comes from the distribution of the
 * observed presences among independent tips (no pruning, no shared code).
 * Gradients against central finite differences of that brute force. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "general.h"
#include "oracle.h"

/* ---- The brute force ----------------------------------------------------- */
typedef struct bf_model {
    int condition, root_prior, k;
    double root_freq, min_len;
    int n_err; /* 0, 1 or n_tips (tree tip order = node index < n_tips) */
    const double *ea, *eb;
    int K;
    const double *w, *rg, *rl;
    int n_lin;
    const double *mg, *ml;
} bf_model;

static long double bf_p(long double lam, long double mu, long double t,
                        int a, int b)
{
    long double s = lam + mu, x = s * t;
    long double em = t > 0 ? -expm1l(-x) : 0.0L;
    long double p01 = s > 0 ? lam / s * em : 0, p10 = s > 0 ? mu / s * em : 0;
    if (a == 0)
        return b ? p01 : 1 - p01;
    return b ? 1 - p10 : p10;
}

/* log P(data) - log P(event) for a family (obs[tip] 0/1/2) on tree t
 * (library numbering: tips first, parent[], lengths). */
static long double bf_loglik(const oracle_tree *t, const bf_model *m,
                             const uint8_t *obs, double lg, double ll)
{
    int32_t n = t->n_nodes, nt = t->n_tips, ni = n - nt;
    assert_true(ni <= 16);
    long double num = 0, den = 0;
    for (int k = 0; k < (m->K ? m->K : 1); k++) {
        long double lam = expl(lg) * (m->K ? m->rg[k] : 1);
        long double mu = expl(ll) * (m->K ? m->rl[k] : 1);
        long double wk = m->K ? m->w[k] : 1;
        long double pi1 = m->root_prior == PERSISTE_ROOT_STATIONARY
                              ? lam / (lam + mu)
                          : m->root_prior == PERSISTE_ROOT_FIXED
                              ? m->root_freq
                              : 0;
        if (m->root_prior == PERSISTE_ROOT_STATIONARY && lam + mu == 0)
            pi1 = expl(lg) / (expl(lg) + expl(ll)); /* equal multipliers 0 */
        long double L = 0, A = 0;
        for (uint32_t mask = 0; mask < (1u << ni); mask++) {
#define ST(v) ((int)((mask >> ((v) - nt)) & 1u))
            int root = ST(n - 1);
            long double wt = root ? pi1 : 1 - pi1;
            for (int32_t v = nt; v < n - 1; v++) {
                double len = t->length[v] < m->min_len ? m->min_len
                                                        : t->length[v];
                wt *= bf_p(lam * (m->n_lin ? m->mg[v] : 1),
                           mu * (m->n_lin ? m->ml[v] : 1), len,
                           ST(t->parent[v]), ST(v));
            }
            /* tips: P(observed cell | parent) and, for the event, the
             * distribution of observed presences among known tips */
            long double lik = wt;
            long double cnt[64] = {0}; /* count truncated at k (k < 63) */
            /* P(only absences so far), P(only presences), P(both): a
             * sum of non-negative terms (1 - all0 - all1 would cancel) */
            long double all0 = 1, all1 = 1, mixed = 0;
            int known = 0;
            cnt[0] = 1;
            for (int32_t c = 0; c < nt; c++) {
                double len = t->length[c] < m->min_len ? m->min_len
                                                        : t->length[c];
                int ps = ST(t->parent[c]);
                long double q1 = 0; /* P(observed 1 | parent state) */
                for (int tr = 0; tr < 2; tr++) {
                    double a = m->n_err ? m->ea[m->n_err == 1 ? 0 : c] : 0;
                    double b = m->n_err ? m->eb[m->n_err == 1 ? 0 : c] : 0;
                    long double pt =
                        bf_p(lam * (m->n_lin ? m->mg[c] : 1),
                             mu * (m->n_lin ? m->ml[c] : 1), len, ps, tr);
                    q1 += pt * (tr ? 1 - a : b);
                }
                long double q0 = 1 - q1;
                if (obs[c] == 2)
                    continue;
                lik *= obs[c] ? q1 : q0;
                mixed = known ? mixed + all0 * q1 + all1 * q0 : 0;
                known++;
                all0 *= q0;
                all1 *= q1;
                for (int j = m->k; j >= 0; j--) {
                    long double add = j > 0 ? cnt[j - 1] * q1 : 0;
                    if (j == m->k)
                        add += cnt[j] * q1; /* stays at the cap */
                    cnt[j] = cnt[j] * q0 + add;
                }
            }
            long double ev =
                m->condition == PERSISTE_CONDITION_NONE ? 1
                : m->condition == PERSISTE_CONDITION_PRESENT
                    ? cnt[m->k]
                    : mixed;
            L += lik;
            A += wt * ev;
#undef ST
        }
        num += wk * L;
        /* without conditioning nothing is divided (the weights are free
         * parameters for the derivatives) */
        den += m->condition == PERSISTE_CONDITION_NONE ? 0 : wk * A;
    }
    if (m->condition == PERSISTE_CONDITION_NONE)
        den = 1;
    if (num == 0 || den == 0)
        return -INFINITY;
    return logl(num) - logl(den);
}

/* ---- Library side --------------------------------------------------------- */
static persiste_model *lib_model(const bf_model *b)
{
    persiste_model *m;
    assert_int_equal(persiste_model_create(&m), PERSISTE_OK);
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_CONDITION,
                                            b->condition),
                     PERSISTE_OK);
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_ROOT_PRIOR,
                                            b->root_prior),
                     PERSISTE_OK);
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_MIN_PRESENT,
                                            b->k),
                     PERSISTE_OK);
    assert_int_equal(persiste_model_set_double(m, PERSISTE_MODEL_ROOT_FREQ,
                                               b->root_freq),
                     PERSISTE_OK);
    assert_int_equal(persiste_model_set_double(
                         m, PERSISTE_MODEL_MIN_BRANCH_LENGTH, b->min_len),
                     PERSISTE_OK);
    assert_int_equal(persiste_model_set_error(m, b->n_err, b->ea, b->eb),
                     PERSISTE_OK);
    assert_int_equal(persiste_model_set_categories(m, b->K, b->w, b->rg,
                                                   b->rl),
                     PERSISTE_OK);
    assert_int_equal(persiste_model_set_lineage(m, b->n_lin, b->mg, b->ml),
                     PERSISTE_OK);
    return m;
}

/* Option sets: error (global, per tip), categories, lineage, all. */
enum { OPT_PLAIN, OPT_ERR1, OPT_ERRN, OPT_CAT, OPT_LIN, OPT_ALL, N_OPTS };
static const char *const opt_name[N_OPTS] = {
    "plain", "global error", "per-tip error", "categories", "lineage", "all"};

struct arrays {
    double ea[512], eb[512], w[3], rg[3], rl[3], mg[512], ml[512];
};

static void make_options(bf_model *b, struct arrays *a, int opt,
                         const oracle_tree *t, oracle_rng *rng)
{
    assert_true(t->n_nodes <= 512);
    for (int i = 0; i < t->n_nodes; i++) {
        a->ea[i] = oracle_uniform(rng, 0.01, 0.3);
        a->eb[i] = oracle_uniform(rng, 0.001, 0.2);
        a->mg[i] = oracle_uniform(rng, 0.3, 3.0);
        a->ml[i] = oracle_uniform(rng, 0.3, 3.0);
    }
    a->w[0] = 0.2, a->w[1] = 0.5, a->w[2] = 0.3;
    a->rg[0] = 0.1, a->rg[1] = 1.0, a->rg[2] = 2.5;
    a->rl[0] = 0.3, a->rl[1] = 0.8, a->rl[2] = 4.0;
    b->ea = a->ea, b->eb = a->eb, b->w = a->w, b->rg = a->rg, b->rl = a->rl;
    b->mg = a->mg, b->ml = a->ml;
    b->n_err = opt == OPT_ERR1 ? 1
               : opt == OPT_ERRN || opt == OPT_ALL ? t->n_tips
                                                   : 0;
    b->K = opt == OPT_CAT || opt == OPT_ALL ? 3 : 0;
    b->n_lin = opt == OPT_LIN || opt == OPT_ALL ? t->n_nodes : 0;
}

/* Conditions: none, present, variable, present with k = 2. */
static void set_condition(bf_model *b, int c)
{
    b->condition = c == 3 ? PERSISTE_CONDITION_PRESENT : c;
    b->k = c == 3 ? 2 : 1;
}

static void test_brute_force(void **state)
{
    (void)state;
    oracle_rng rng = {20261207};
    persiste_ctx *ctx = oracle_ctx(2);
    int n_trees = 0, n_checked = 0;
    persiste_tree *tr;
    for (int i = 0; (tr = oracle_test_tree(i, &rng)) != NULL; i++) {
        oracle_tree t;
        oracle_tree_read(tr, &t);
        if (t.n_nodes - t.n_tips > 12 || t.n_tips < 2) {
            oracle_tree_free(&t);
            persiste_tree_destroy(tr);
            continue;
        }
        n_trees++;
        enum { NF = 12 };
        uint8_t st[NF * 64];
        oracle_random_states(&rng, st, (int64_t)NF * t.n_tips, 0.5, 0.2);
        for (int j = 0; j < t.n_tips; j++) /* one all-present family */
            st[j] = 1;
        persiste_data *data = oracle_data(tr, st, NF);
        assert_non_null(data);
        double lg[NF], ll[NF], out[NF];
        for (int opt = 0; opt < N_OPTS; opt++)
            for (int c = 0; c < 4; c++) {
                bf_model b = {0};
                struct arrays a;
                make_options(&b, &a, opt, &t, &rng);
                set_condition(&b, c);
                b.root_prior = (opt + c) % 3;
                b.root_freq = 0.3;
                b.min_len = opt == OPT_ALL ? 0.01 : 0.0;
                int global = (opt + c) % 2;
                for (int f = 0; f < NF; f++) {
                    lg[f] = global ? -0.7 : oracle_uniform(&rng, -3, 1);
                    ll[f] = global ? -0.2 : oracle_uniform(&rng, -3, 1);
                }
                persiste_model *m = lib_model(&b);
                assert_int_equal(persiste_loglik_batch(ctx, m, tr, data, NF,
                                                       lg, ll, out),
                                 PERSISTE_OK);
                for (int f = 0; f < NF; f++) {
                    long double want = bf_loglik(&t, &b, st + f * t.n_tips,
                                                 lg[f], ll[f]);
                    ORACLE_ASSERT_CLOSE(out[f], (double)want, 1e-10, 1.0,
                                        "tree %d %s cond %d prior %d "
                                        "family %d",
                                        i, opt_name[opt], c, b.root_prior,
                                        f);
                    n_checked++;
                }
                persiste_model_destroy(m);
            }
        persiste_data_destroy(data);
        oracle_tree_free(&t);
        persiste_tree_destroy(tr);
    }
    assert_true(n_trees >= 10);
    assert_true(n_checked > 1000);
    persiste_ctx_destroy(ctx);
}

/* The weighted total of the brute force, for finite differences. */
static long double bf_total(const oracle_tree *t, const bf_model *b,
                            const uint8_t *st, int nf, const double *lg,
                            const double *ll, const double *w)
{
    long double s = 0;
    for (int f = 0; f < nf; f++)
        if (w[f] != 0) /* impossible families are left out */
            s += w[f] * bf_loglik(t, b, st + f * t->n_tips, lg[f], ll[f]);
    return s;
}

#define FD_CHECK(got, fd, what, ...)                                         \
    ORACLE_ASSERT_CLOSE((got), (double)(fd), 2e-6, 1e-3, what, __VA_ARGS__)

static void test_gradients(void **state)
{
    (void)state;
    oracle_rng rng = {77};
    persiste_ctx *ctx = oracle_ctx(2);
    const char *trees[] = {"((A:0.3,B:0.2):0.4,(C:0.5,(D:0.1,E:0.7):0.2):0.3);",
                           "(A:0.5,B:0.0,(C:0.2,D:0.9,E:0.1):0.6);",
                           "((A:1.2,B:0.8):0.05,C:2.0);"};
    for (size_t ti = 0; ti < sizeof trees / sizeof *trees; ti++) {
        persiste_tree *tr = oracle_newick(trees[ti]);
        oracle_tree t;
        oracle_tree_read(tr, &t);
        enum { NF = 6 };
        uint8_t st[NF * 8];
        oracle_random_states(&rng, st, (int64_t)NF * t.n_tips, 0.5, 0.15);
        persiste_data *data = oracle_data(tr, st, NF);
        double lg[NF], ll[NF], wt[NF], out[NF], dg[NF], dl[NF];
        double dbr[32], dm[256];
        for (int f = 0; f < NF; f++) {
            lg[f] = oracle_uniform(&rng, -2, 0.5);
            ll[f] = oracle_uniform(&rng, -2, 0.5);
            wt[f] = oracle_uniform(&rng, 0.5, 2);
        }
        for (int c = 0; c < 4; c++) {
            bf_model b = {0};
            struct arrays a;
            make_options(&b, &a, OPT_ALL, &t, &rng);
            set_condition(&b, c);
            b.root_prior = c % 3;
            b.root_freq = 0.4;
            persiste_model *m = lib_model(&b);
            int64_t size = persiste_model_grad_layout(m, tr, 0, NULL);
            assert_true(size > 0 && size <= 256);
            assert_int_equal(persiste_gradient_model_batch(
                                 ctx, m, tr, data, NF, lg, ll, wt, out, dg,
                                 dl, dbr, dm),
                             PERSISTE_OK);
            const double h = 1e-5;
            for (int f = 0; f < NF; f++) {
                if (!isfinite(out[f]))
                    continue;
                const uint8_t *o = st + f * t.n_tips;
                long double fd =
                    (bf_loglik(&t, &b, o, lg[f] + h, ll[f]) -
                     bf_loglik(&t, &b, o, lg[f] - h, ll[f])) / (2 * h);
                FD_CHECK(dg[f], fd, "tree %zu cond %d d_log_gain f %d", ti,
                         c, f);
                fd = (bf_loglik(&t, &b, o, lg[f], ll[f] + h) -
                      bf_loglik(&t, &b, o, lg[f], ll[f] - h)) / (2 * h);
                FD_CHECK(dl[f], fd, "tree %zu cond %d d_log_loss f %d", ti,
                         c, f);
            }
            /* impossible families are left out of the weighted sums */
            double w2[NF];
            for (int f = 0; f < NF; f++)
                w2[f] = isfinite(out[f]) ? wt[f] : 0.0;
            /* branch lengths */
            for (int32_t v = 0; v + 1 < t.n_nodes; v++) {
                double keep = t.length[v];
                if (keep < 0.02)
                    continue; /* near the clamp, or zero */
                t.length[v] = keep + h;
                long double up = bf_total(&t, &b, st, NF, lg, ll, w2);
                t.length[v] = keep - h;
                long double dn = bf_total(&t, &b, st, NF, lg, ll, w2);
                t.length[v] = keep;
                FD_CHECK(dbr[v], (up - dn) / (2 * h),
                         "tree %zu cond %d d_branch %d", ti, c, (int)v);
            }
            /* every model parameter, in log (weights: as they are) */
            struct {
                int which;
                double *x;
                int n;
                int log;
            } params[] = {
                {PERSISTE_GRAD_ERROR_ABSENT, a.ea, b.n_err, 1},
                {PERSISTE_GRAD_ERROR_PRESENT, a.eb, b.n_err, 1},
                {PERSISTE_GRAD_CATEGORY_GAIN, a.rg, b.K, 1},
                {PERSISTE_GRAD_CATEGORY_LOSS, a.rl, b.K, 1},
                {PERSISTE_GRAD_CATEGORY_WEIGHT, a.w, b.K, 0},
                {PERSISTE_GRAD_LINEAGE_GAIN, a.mg, b.n_lin, 1},
                {PERSISTE_GRAD_LINEAGE_LOSS, a.ml, b.n_lin, 1},
            };
            for (size_t p = 0; p < sizeof params / sizeof *params; p++) {
                int64_t off;
                int64_t cnt = persiste_model_grad_layout(m, tr,
                                                         params[p].which,
                                                         &off);
                assert_int_equal(cnt, params[p].n);
                for (int i = 0; i < params[p].n; i++) {
                    if (params[p].which >= PERSISTE_GRAD_LINEAGE_GAIN &&
                        i == t.n_nodes - 1)
                        continue; /* the root's entry is unused */
                    double keep = params[p].x[i];
                    double up_x = params[p].log ? keep * exp(h) : keep + h;
                    double dn_x = params[p].log ? keep * exp(-h) : keep - h;
                    params[p].x[i] = up_x;
                    long double up = bf_total(&t, &b, st, NF, lg, ll, w2);
                    params[p].x[i] = dn_x;
                    long double dn = bf_total(&t, &b, st, NF, lg, ll, w2);
                    params[p].x[i] = keep;
                    FD_CHECK(dm[off + i], (up - dn) / (2 * h),
                             "tree %zu cond %d model grad %d [%d]", ti, c,
                             params[p].which, i);
                }
            }
            persiste_model_destroy(m);
        }
        persiste_data_destroy(data);
        oracle_tree_free(&t);
        persiste_tree_destroy(tr);
    }
    persiste_ctx_destroy(ctx);
}

/* Options at their neutral values are the plain model: the same bits. */
static void test_reductions_bitwise(void **state)
{
    (void)state;
    oracle_rng rng = {5};
    persiste_ctx *ctx = oracle_ctx(1);
    persiste_tree *tr = oracle_random_tree(&rng, 40, 0.2, 0.001, 1.0);
    enum { NF = 300 };
    int32_t nt = persiste_tree_n_tips(tr), nn = persiste_tree_n_nodes(tr);
    uint8_t *st = malloc((size_t)NF * nt);
    oracle_random_states(&rng, st, (int64_t)NF * nt, 0.4, 0.0);
    persiste_data *data = oracle_data(tr, st, NF);
    double lg[NF], ll[NF], a[NF], b[NF], ga[NF], gb[NF];
    for (int f = 0; f < NF; f++) {
        lg[f] = oracle_uniform(&rng, -3, 1);
        ll[f] = oracle_uniform(&rng, -3, 1);
    }
    double zero[64] = {0}, ones[512];
    for (int i = 0; i < 512; i++)
        ones[i] = 1.0;
    for (int c = 0; c < 3; c++) {
        persiste_model *plain, *m;
        persiste_model_create(&plain);
        persiste_model_create(&m);
        persiste_model_set_int(plain, PERSISTE_MODEL_CONDITION, c);
        persiste_model_set_int(m, PERSISTE_MODEL_CONDITION, c);
        assert_int_equal(persiste_model_set_error(m, 1, zero, zero), 0);
        assert_int_equal(persiste_model_set_categories(m, 1, ones, ones,
                                                       NULL),
                         0);
        assert_int_equal(persiste_model_set_lineage(m, nn, ones, ones), 0);
        assert_int_equal(persiste_gradient_batch(ctx, plain, tr, data, NF, lg,
                                                 ll, NULL, a, ga, NULL, NULL),
                         0);
        assert_int_equal(persiste_gradient_batch(ctx, m, tr, data, NF, lg, ll,
                                                 NULL, b, gb, NULL, NULL),
                         0);
        ORACLE_ASSERT_SAME_BITS(b, "neutral options", a, "plain", NF,
                                "loglik");
        ORACLE_ASSERT_SAME_BITS(gb, "neutral options", ga, "plain", NF,
                                "d_log_gain");
        persiste_model_destroy(plain);
        persiste_model_destroy(m);
    }
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
    free(st);
    persiste_ctx_destroy(ctx);
}

/* The general path on the plain model agrees with the fast paths (which
 * other suites check against brute force) on a bigger tree, with and
 * without unknown cells, at per-family and global rates. */
static void test_general_vs_fast(void **state)
{
    (void)state;
    oracle_rng rng = {11};
    persiste_ctx *ctx = oracle_ctx(2);
    persiste_tree *tr = oracle_random_tree(&rng, 200, 0.1, 1e-4, 2.0);
    enum { NF = 500 };
    int32_t nt = persiste_tree_n_tips(tr), nn = persiste_tree_n_nodes(tr);
    uint8_t *st = malloc((size_t)NF * nt);
    oracle_random_states(&rng, st, (int64_t)NF * nt, 0.3, 0.0);
    persiste_data *data = oracle_data(tr, st, NF);
    double lg[NF], ll[NF];
    double *o = malloc(sizeof(double) * (4 * NF + 2 * nn));
    double *fa = o, *fg = o + NF, *ga = o + 2 * NF, *gg = o + 3 * NF;
    double *fb = o + 4 * NF, *gbr = fb + nn;
    for (int global = 0; global < 2; global++)
        for (int c = 0; c < 3; c++) {
            for (int f = 0; f < NF; f++) {
                lg[f] = global ? -1.5 : oracle_uniform(&rng, -4, 1);
                ll[f] = global ? -0.5 : oracle_uniform(&rng, -4, 1);
            }
            persiste_model *m;
            persiste_model_create(&m);
            persiste_model_set_int(m, PERSISTE_MODEL_CONDITION, c);
            persiste__plan_force_general(0);
            assert_int_equal(persiste_gradient_batch(ctx, m, tr, data, NF, lg,
                                                     ll, NULL, fa, fg, NULL,
                                                     fb),
                             0);
            persiste__plan_force_general(1);
            assert_int_equal(persiste_gradient_batch(ctx, m, tr, data, NF, lg,
                                                     ll, NULL, ga, gg, NULL,
                                                     gbr),
                             0);
            persiste__plan_force_general(0);
            for (int f = 0; f < NF; f++) {
                ORACLE_ASSERT_CLOSE(ga[f], fa[f], 1e-12, 1.0,
                                    "loglik cond %d global %d f %d", c,
                                    global, f);
                ORACLE_ASSERT_CLOSE(gg[f], fg[f], 1e-9, 1e-6,
                                    "d_log_gain cond %d global %d f %d", c,
                                    global, f);
            }
            for (int v = 0; v < nn; v++)
                ORACLE_ASSERT_CLOSE(gbr[v], fb[v], 1e-9, 1e-6,
                                    "d_branch cond %d global %d node %d", c,
                                    global, v);
            persiste_model_destroy(m);
        }
    free(o);
    free(st);
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
    persiste_ctx_destroy(ctx);
}

/* Every output of the general path is the same bits for 1 and 3 threads. */
static void test_threads_bitwise(void **state)
{
    (void)state;
    oracle_rng rng = {3};
    persiste_tree *tr = oracle_random_tree(&rng, 60, 0.2, 0.0, 1.0);
    enum { NF = 1000 };
    int32_t nt = persiste_tree_n_tips(tr);
    uint8_t *st = malloc((size_t)NF * nt);
    oracle_random_states(&rng, st, (int64_t)NF * nt, 0.4, 0.1);
    persiste_data *data = oracle_data(tr, st, NF);
    oracle_tree t;
    oracle_tree_read(tr, &t);
    bf_model b = {0};
    struct arrays a;
    make_options(&b, &a, OPT_ALL, &t, &rng);
    b.condition = PERSISTE_CONDITION_VARIABLE;
    b.k = 1;
    persiste_model *m = lib_model(&b);
    int64_t size = persiste_model_grad_layout(m, tr, 0, NULL);
    double lg[NF], ll[NF], w[NF];
    for (int f = 0; f < NF; f++) {
        lg[f] = f % 3 ? -1.0 : oracle_uniform(&rng, -3, 1);
        ll[f] = f % 3 ? -0.3 : oracle_uniform(&rng, -3, 1);
        w[f] = oracle_uniform(&rng, 0, 2);
    }
    size_t per = 3 * NF + (size_t)t.n_nodes + (size_t)size;
    double *r[2];
    for (int th = 0; th < 2; th++) {
        persiste_ctx *ctx = oracle_ctx(th ? 3 : 1);
        r[th] = malloc(per * sizeof(double));
        double *x = r[th];
        assert_int_equal(persiste_gradient_model_batch(
                             ctx, m, tr, data, NF, lg, ll, w, x, x + NF,
                             x + 2 * NF, x + 3 * NF, x + 3 * NF + t.n_nodes),
                         0);
        persiste_ctx_destroy(ctx);
    }
    ORACLE_ASSERT_SAME_BITS(r[1], "3 threads", r[0], "1 thread",
                            (int64_t)per, "every output");
    free(r[0]);
    free(r[1]);
    persiste_model_destroy(m);
    oracle_tree_free(&t);
    free(st);
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
}

/* A zero-length branch between genomes that differ makes a family
 * impossible without error; with a > 0 or b > 0 it is finite. */
static void test_zero_length_with_error(void **state)
{
    (void)state;
    persiste_ctx *ctx = oracle_ctx(1);
    persiste_tree *tr = oracle_newick("((A:0,B:0):0.5,C:0.7);");
    uint8_t st[] = {1, 0, 1, 0, 1, 1, 1, 1, 0};
    persiste_data *data = oracle_data(tr, st, 3);
    double lg[3] = {-1, -1, -1}, ll[3] = {-1, -1, -1}, out[3];
    persiste_model *m;
    persiste_model_create(&m);
    assert_int_equal(persiste_loglik_batch(ctx, m, tr, data, 3, lg, ll, out),
                     0);
    assert_true(isinf(out[0]) && isinf(out[1]) && isfinite(out[2]));
    assert_int_equal(persiste_ctx_n_impossible(ctx), 2);
    const double ab[2][2] = {{0.05, 0}, {0, 0.02}};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(persiste_model_set_error(m, 1, &ab[i][0],
                                                  &ab[i][1]),
                         0);
        assert_int_equal(
            persiste_loglik_batch(ctx, m, tr, data, 3, lg, ll, out), 0);
        for (int f = 0; f < 3; f++)
            assert_true(isfinite(out[f]));
        assert_int_equal(persiste_ctx_n_impossible(ctx), 0);
    }
    persiste_model_destroy(m);
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
    persiste_ctx_destroy(ctx);
}

/* persiste_data_observable drops exactly the families outside the event,
 * by name, after the ones the data already dropped. */
static void test_observable(void **state)
{
    (void)state;
    persiste_tree *tr = oracle_newick("((A:1,B:1):1,(C:1,D:1):1);");
    /* A B C D per family; 2 = unknown */
    const uint8_t st[] = {
        0, 0, 0, 0, /* f0 all absent */
        1, 1, 1, 1, /* f1 all present */
        1, 0, 0, 0, /* f2 one presence */
        1, 1, 0, 0, /* f3 two */
        2, 2, 2, 2, /* f4 nothing known */
        1, 1, 2, 2, /* f5 known all present */
        0, 1, 2, 2, /* f6 variable */
        2, 0, 2, 2, /* f7 one absence only */
    };
    const char *names[] = {"f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"};
    const char *taxa[] = {"A", "B", "C", "D"};
    persiste_data *data;
    assert_int_equal(persiste_data_from_matrix(&data, tr, st, 8, 4, 4, 1,
                                               taxa, names, 0),
                     0);
    /* expected kept, by condition: none, present, variable, present k=2 */
    const char *want[4] = {"f0f1f2f3f4f5f6f7", "f1f2f3f5f6", "f2f3f6",
                           "f1f3f5"};
    for (int c = 0; c < 4; c++) {
        bf_model b = {0};
        set_condition(&b, c);
        persiste_model *m = lib_model(&b);
        persiste_data *kept;
        assert_int_equal(persiste_data_observable(&kept, data, m), 0);
        char got[64] = "", dropped[64] = "", all[64] = "";
        for (int64_t f = 0; f < persiste_data_n_families(kept); f++)
            strcat(got, persiste_data_family_name(kept, f));
        for (int64_t i = 0; i < persiste_data_n_dropped_families(kept); i++)
            strcat(dropped, persiste_data_dropped_family(kept, i));
        assert_string_equal(got, want[c]);
        /* kept + dropped = every family, each once */
        assert_int_equal(strlen(got) + strlen(dropped), 16);
        for (int f = 0; f < 8; f++) {
            int in_got = strstr(got, names[f]) != NULL;
            int in_dropped = strstr(dropped, names[f]) != NULL;
            assert_int_equal(in_got + in_dropped, 1);
        }
        (void)all;
        /* the kept families' states are the originals */
        uint8_t s[4];
        for (int64_t f = 0; f < persiste_data_n_families(kept); f++) {
            const char *nm = persiste_data_family_name(kept, f);
            assert_int_equal(persiste_data_states(kept, f, s), 0);
            assert_memory_equal(s, st + 4 * (nm[1] - '0'), 4);
        }
        persiste_data_destroy(kept);
        persiste_model_destroy(m);
    }
    /* persiste_data_select: the listed families in the listed order */
    persiste_data *sel;
    const int64_t pick[] = {3, 0, 6};
    assert_int_equal(persiste_data_select(&sel, data, 3, pick), 0);
    assert_int_equal(persiste_data_n_families(sel), 3);
    assert_int_equal(persiste_data_n_dropped_families(sel), 5);
    for (int i = 0; i < 3; i++) {
        uint8_t s[4];
        assert_string_equal(persiste_data_family_name(sel, i),
                            names[pick[i]]);
        assert_int_equal(persiste_data_states(sel, i, s), 0);
        assert_memory_equal(s, st + 4 * pick[i], 4);
    }
    persiste_data_destroy(sel);
    const int64_t twice[] = {1, 1}, outside[] = {8};
    assert_int_equal(persiste_data_select(&sel, data, 2, twice),
                     PERSISTE_E_INVALID);
    assert_non_null(strstr(persiste_last_error(), "listed twice"));
    assert_int_equal(persiste_data_select(&sel, data, 1, outside),
                     PERSISTE_E_INVALID);
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
}

static void test_bad_options(void **state)
{
    (void)state;
    persiste_model *m;
    persiste_model_create(&m);
    double a = 0.6, b = 0.5, w2[2] = {0.5, 0.6}, r2[2] = {1, 2};
    assert_int_equal(persiste_model_set_error(m, 1, &a, &b),
                     PERSISTE_E_DOMAIN);
    assert_non_null(strstr(persiste_last_error(), "sum below 1"));
    assert_int_equal(persiste_model_set_error(m, 1, NULL, &b),
                     PERSISTE_E_INVALID);
    assert_int_equal(persiste_model_set_categories(m, 2, w2, r2, NULL),
                     PERSISTE_E_DOMAIN);
    assert_non_null(strstr(persiste_last_error(), "sum to"));
    r2[1] = -1;
    w2[1] = 0.5;
    assert_int_equal(persiste_model_set_categories(m, 2, w2, r2, NULL),
                     PERSISTE_E_DOMAIN);
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_MIN_PRESENT, 0),
                     PERSISTE_E_INVALID);
    /* sizes are checked against the tree at the call */
    persiste_tree *tr = oracle_newick("(A:1,B:1);");
    uint8_t st[2] = {1, 0};
    persiste_data *data = oracle_data(tr, st, 1);
    persiste_ctx *ctx = oracle_ctx(1);
    double ea[3] = {0.1, 0.1, 0.1}, lg = 0, out;
    assert_int_equal(persiste_model_set_error(m, 3, ea, ea), 0);
    assert_int_equal(persiste_loglik_batch(ctx, m, tr, data, 1, &lg, &lg,
                                           &out),
                     PERSISTE_E_INVALID);
    assert_non_null(strstr(persiste_last_error(), "3 error pairs"));
    assert_int_equal(persiste_model_set_error(m, 0, NULL, NULL), 0);
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_CONDITION,
                                            PERSISTE_CONDITION_VARIABLE),
                     0);
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_MIN_PRESENT, 2),
                     0);
    assert_int_equal(persiste_loglik_batch(ctx, m, tr, data, 1, &lg, &lg,
                                           &out),
                     PERSISTE_E_INVALID);
    assert_non_null(strstr(persiste_last_error(), "min_present"));
    persiste_ctx_destroy(ctx);
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
    persiste_model_destroy(m);
}

/* A gamma at tiny alpha has categories of multiplier 0 (in double): they
 * never change state, their root prior is the base rates' stationary
 * share; the likelihood is the mixture of the brute force's categories. */
static void test_zero_multiplier_categories(void **state)
{
    (void)state;
    double r[4], w[4] = {0.25, 0.25, 0.25, 0.25};
    assert_int_equal(persiste_gamma_categories(1e-3, 4, 0, r), 0);
    assert_true(r[0] == 0.0);
    persiste_tree *tr = oracle_newick("((A:0.3,B:0.2):0.4,C:0.5);");
    oracle_tree t;
    oracle_tree_read(tr, &t);
    const uint8_t st[] = {1, 1, 1, 1, 0, 1, 0, 0, 0};
    persiste_data *data = oracle_data(tr, st, 3);
    persiste_ctx *ctx = oracle_ctx(1);
    for (int c = 0; c < 2; c++) {
        bf_model b = {.condition = c, .k = 1, .K = 4, .w = w, .rg = r,
                      .rl = r};
        persiste_model *m = lib_model(&b);
        double lg[3] = {-0.5, -0.5, -0.5}, ll[3] = {0.2, 0.2, 0.2}, out[3];
        double dg[3], dl[3];
        assert_int_equal(persiste_gradient_batch(ctx, m, tr, data, 3, lg, ll,
                                                 NULL, out, dg, dl, NULL),
                         0);
        for (int f = 0; f < 3; f++) {
            double want = (double)bf_loglik(&t, &b, st + 3 * f, lg[f], ll[f]);
            ORACLE_ASSERT_CLOSE(out[f], want, 1e-10, 1.0,
                                "cond %d family %d", c, f);
            assert_true(isfinite(dg[f]) && isfinite(dl[f]));
        }
        persiste_model_destroy(m);
    }
    persiste_ctx_destroy(ctx);
    persiste_data_destroy(data);
    oracle_tree_free(&t);
    persiste_tree_destroy(tr);
}

/* Every instruction-set copy of the general path gives the same bits (the
 * library picks one by CPU; a result must not depend on the machine). */
static void test_isa_copies_bitwise(void **state)
{
    (void)state;
    oracle_rng rng = {17};
    persiste_tree *tr = oracle_random_tree(&rng, 50, 0.2, 0.0, 1.0);
    enum { NF = 400 };
    int32_t nt = persiste_tree_n_tips(tr), nn = persiste_tree_n_nodes(tr);
    uint8_t *st = malloc((size_t)NF * nt);
    oracle_random_states(&rng, st, (int64_t)NF * nt, 0.4, 0.1);
    persiste_data *data = oracle_data(tr, st, NF);
    oracle_tree t;
    oracle_tree_read(tr, &t);
    bf_model b = {0};
    struct arrays a;
    make_options(&b, &a, OPT_ALL, &t, &rng);
    b.condition = PERSISTE_CONDITION_PRESENT;
    b.k = 2;
    persiste_model *m = lib_model(&b);
    int64_t size = persiste_model_grad_layout(m, tr, 0, NULL);
    double lg[NF], ll[NF];
    for (int f = 0; f < NF; f++) {
        lg[f] = f % 2 ? -1.0 : oracle_uniform(&rng, -3, 1);
        ll[f] = f % 2 ? -0.3 : oracle_uniform(&rng, -3, 1);
    }
    size_t per = 3 * NF + (size_t)nn + (size_t)size;
    const char *isa[] = {"generic", "avx2", "avx512"};
    double *r[3] = {NULL, NULL, NULL};
    persiste_ctx *ctx = oracle_ctx(2);
    int ran = 0;
    for (int i = 0; i < 3; i++) {
        if (persiste__general_select(isa[i]))
            continue; /* not in this build or CPU */
        r[i] = malloc(per * sizeof(double));
        double *x = r[i];
        assert_int_equal(persiste_gradient_model_batch(
                             ctx, m, tr, data, NF, lg, ll, NULL, x, x + NF,
                             x + 2 * NF, x + 3 * NF, x + 3 * NF + nn),
                         0);
        if (ran++)
            ORACLE_ASSERT_SAME_BITS(r[i], isa[i], r[0], "generic",
                                    (int64_t)per, "general path copies");
    }
    /* back to what the run asked for (PERSISTE_TEST_KERNEL), else best */
    const char *want = getenv("PERSISTE_TEST_KERNEL");
    if (!want || !*want || persiste__general_select(want))
        for (int i = 2; i >= 0 && persiste__general_select(isa[i]); i--)
            ;
    print_message("%d instruction-set copies compared\n", ran);
    assert_true(ran >= 1);
    for (int i = 0; i < 3; i++)
        free(r[i]);
    persiste_ctx_destroy(ctx);
    persiste_model_destroy(m);
    oracle_tree_free(&t);
    free(st);
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_brute_force),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_reductions_bitwise),
        cmocka_unit_test(test_general_vs_fast),
        cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_zero_length_with_error),
        cmocka_unit_test(test_observable),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_zero_multiplier_categories),
        cmocka_unit_test(test_isa_copies_bitwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
