/* Reconstruction (persiste_reconstruct_batch) against independent oracles:
 *  - brute force: every assignment of the internal nodes' and tips' true
 *    states enumerated (long double), posteriors as ratios of sums, and
 *    expected counts on a branch as the mean over assignments of the
 *    endpoint-conditioned expectation, itself computed by numerical
 *    quadrature of lambda * int_0^t P_i0(u) P_1j(t - u) du / P_ij(t)
 *    (not the library's closed form);
 *  - simulated histories: on a 3-tip tree, Gillespie histories kept when
 *    their tips match the family, counted per branch;
 *  - the sums equal the weighted per-family values, by group; the thread
 *    count changes no bit. */
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

/* ---- The model as the oracle writes it ---------------------------------- */
typedef struct bf {
    int root_prior;
    double root_freq;
    int n_err;              /* 0, 1 or n_tips */
    const double *ea, *eb;
    int K;                  /* 0: no categories */
    const double *w, *rg, *rl;
    const double *mg, *ml;  /* NULL: no lineage multipliers */
} bf;

static long double p_trans(long double lam, long double mu, long double t,
                           int a, int b)
{
    long double s = lam + mu, em = -expm1l(-s * t);
    long double p01 = lam / s * em, p10 = mu / s * em;
    return a == 0 ? (b ? p01 : 1 - p01) : (b ? 1 - p10 : p10);
}

/* Composite Simpson of P_i,from(u) P_to,j(t - u) over [a, b]. */
static long double simpson(long double lam, long double mu, long double t,
                           int i, int j, int from, long double a,
                           long double b)
{
    enum { N = 2000 };
    long double h = (b - a) / N, sum = 0;
    for (int k = 0; k <= N; k++) {
        long double u = a + k * h;
        long double f = p_trans(lam, mu, u, i, from) *
                        p_trans(lam, mu, t - u, 1 - from, j);
        sum += f * (k == 0 || k == N ? 1 : k % 2 ? 4 : 2);
    }
    return sum * h / 3;
}

/* E[N(from -> to) | X0 = i, Xt = j] by quadrature: the integrand changes
 * within 1/(lambda + mu) of either end and is flat between, so each end
 * gets a panel of its own. */
static long double e_count(long double lam, long double mu, long double t,
                           int i, int j, int from)
{
    if (t == 0)
        return 0;
    long double L = 40 / (lam + mu);
    long double sum;
    if (2 * L >= t)
        sum = simpson(lam, mu, t, i, j, from, 0, t);
    else
        sum = simpson(lam, mu, t, i, j, from, 0, L) +
              simpson(lam, mu, t, i, j, from, L, t - L) +
              simpson(lam, mu, t, i, j, from, t - L, t);
    return (from == 0 ? lam : mu) * sum / p_trans(lam, mu, t, i, j);
}

/* Posterior P(v present), E[gains], E[losses] per node of one family. */
static void bf_reconstruct(const oracle_tree *t, const bf *m,
                           const uint8_t *obs, double lg, double ll,
                           long double *pp, long double *eg, long double *el)
{
    int32_t n = t->n_nodes;
    assert_true(n <= 20);
    long double total = 0;
    for (int32_t v = 0; v < n; v++)
        pp[v] = eg[v] = el[v] = 0;
    for (int k = 0; k < (m->K ? m->K : 1); k++) {
        long double lam = expl(lg) * (m->K ? m->rg[k] : 1);
        long double mu = expl(ll) * (m->K ? m->rl[k] : 1);
        long double wk = m->K ? m->w[k] : 1;
        long double pi1 = m->root_prior == PERSISTE_ROOT_STATIONARY
                              ? lam / (lam + mu)
                          : m->root_prior == PERSISTE_ROOT_FIXED
                              ? m->root_freq
                              : 0;
        long double ecache[20][2][2][2];
        for (int32_t v = 0; v < n - 1; v++)
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++)
                    for (int f = 0; f < 2; f++)
                        ecache[v][i][j][f] = e_count(
                            lam * (m->mg ? m->mg[v] : 1),
                            mu * (m->ml ? m->ml[v] : 1), t->length[v], i, j,
                            f);
        for (uint32_t mask = 0; mask < (1u << n); mask++) {
#define ST(v) ((int)((mask >> (v)) & 1u))
            long double wt = wk * (ST(n - 1) ? pi1 : 1 - pi1);
            for (int32_t v = 0; v < n - 1 && wt > 0; v++)
                wt *= p_trans(lam * (m->mg ? m->mg[v] : 1),
                              mu * (m->ml ? m->ml[v] : 1), t->length[v],
                              ST(t->parent[v]), ST(v));
            for (int32_t c = 0; c < t->n_tips && wt > 0; c++) {
                double a = m->n_err ? m->ea[m->n_err == 1 ? 0 : c] : 0;
                double b = m->n_err ? m->eb[m->n_err == 1 ? 0 : c] : 0;
                if (obs[c] == 2)
                    continue;
                long double p1 = ST(c) ? 1 - a : b; /* P(observed 1) */
                wt *= obs[c] ? p1 : 1 - p1;
            }
            if (wt == 0)
                continue;
            total += wt;
            for (int32_t v = 0; v < n; v++) {
                pp[v] += wt * ST(v);
                if (v < n - 1) {
                    eg[v] += wt * ecache[v][ST(t->parent[v])][ST(v)][0];
                    el[v] += wt * ecache[v][ST(t->parent[v])][ST(v)][1];
                }
            }
#undef ST
        }
    }
    for (int32_t v = 0; v < n; v++) {
        pp[v] /= total;
        eg[v] /= total;
        el[v] /= total;
    }
}

static persiste_model *lib_model(const bf *b, int condition)
{
    persiste_model *m;
    assert_int_equal(persiste_model_create(&m), 0);
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_CONDITION,
                                            condition),
                     0);
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_ROOT_PRIOR,
                                            b->root_prior),
                     0);
    assert_int_equal(persiste_model_set_double(m, PERSISTE_MODEL_ROOT_FREQ,
                                               b->root_freq),
                     0);
    assert_int_equal(persiste_model_set_error(m, b->n_err, b->ea, b->eb), 0);
    assert_int_equal(persiste_model_set_categories(m, b->K, b->w, b->rg,
                                                   b->rl),
                     0);
    return m;
}

/* Small trees: ordinary, very short (1e-9) and very long branches, a
 * multifurcation. */
static const char *const trees[] = {
    "((A:0.3,B:0.2):0.4,(C:0.5,D:0.1):0.3);",
    "((A:1e-9,B:0.2):1e-9,(C:50,D:1e-9):0.3);",
    "(A:0.7,B:0.1,(C:0.2,D:0.9,E:0.05):0.6);",
    "(((A:0.1,B:0.1):0.1,C:0.3):0.2,(D:2,E:3):0.01);",
    "((A:0,B:0.4):0.2,C:1.5);",
    NULL,
};

static void test_brute_force(void **state)
{
    (void)state;
    oracle_rng rng = {42};
    persiste_ctx *ctx = oracle_ctx(2);
    int checked = 0;
    for (int ti = 0; trees[ti]; ti++) {
        persiste_tree *tr = oracle_newick(trees[ti]);
        oracle_tree t;
        oracle_tree_read(tr, &t);
        int32_t n = t.n_nodes, nt = t.n_tips;
        enum { NF = 8 };
        uint8_t st[NF * 8];
        oracle_random_states(&rng, st, (int64_t)NF * nt, 0.5, 0.15);
        persiste_data *data = oracle_data(tr, st, NF);
        double ea[8], eb[8], mg[16], ml[16];
        double w[3] = {0.3, 0.3, 0.4}, rg[3] = {0.2, 1, 2.4},
               rl[3] = {0.5, 1.2, 1.8};
        for (int i = 0; i < 8; i++) {
            ea[i] = oracle_uniform(&rng, 0.01, 0.2);
            eb[i] = oracle_uniform(&rng, 0.01, 0.1);
        }
        for (int i = 0; i < 16; i++) {
            mg[i] = oracle_uniform(&rng, 0.5, 2);
            ml[i] = oracle_uniform(&rng, 0.5, 2);
        }
        for (int opt = 0; opt < 5; opt++) {
            bf b = {.root_prior = opt % 3, .root_freq = 0.35};
            if (opt == 1 || opt == 4)
                b.n_err = opt == 1 ? 1 : nt, b.ea = ea, b.eb = eb;
            if (opt == 2 || opt == 4)
                b.K = 3, b.w = w, b.rg = rg, b.rl = rl;
            persiste_model *m = lib_model(&b, opt % 3);
            if (opt == 3 || opt == 4) {
                b.mg = mg, b.ml = ml;
                assert_int_equal(persiste_model_set_lineage(m, n, mg, ml), 0);
            }
            double lg[NF], ll[NF];
            for (int f = 0; f < NF; f++) {
                lg[f] = oracle_uniform(&rng, -2, 1);
                ll[f] = oracle_uniform(&rng, -2, 1);
            }
            double *out = malloc(sizeof(double) * 3 * NF * (size_t)n);
            double *pp = out, *g = out + NF * n, *l = out + 2 * NF * n;
            assert_int_equal(persiste_reconstruct_batch(
                                 ctx, m, tr, data, NF, lg, ll, NULL, NULL, 1,
                                 pp, g, l, NULL, NULL, NULL),
                             PERSISTE_OK);
            for (int f = 0; f < NF; f++) {
                long double wp[20], wg[20], wl[20];
                bf_reconstruct(&t, &b, st + f * nt, lg[f], ll[f], wp, wg, wl);
                for (int32_t v = 0; v < n; v++) {
                    ORACLE_ASSERT_CLOSE(pp[f * n + v], (double)wp[v], 1e-9,
                                        1e-12, "tree %d opt %d f %d P(v %d)",
                                        ti, opt, f, (int)v);
                    ORACLE_ASSERT_CLOSE(g[f * n + v], (double)wg[v], 1e-8,
                                        1e-13, "tree %d opt %d f %d gains %d",
                                        ti, opt, f, (int)v);
                    ORACLE_ASSERT_CLOSE(l[f * n + v], (double)wl[v], 1e-8,
                                        1e-13, "tree %d opt %d f %d loss %d",
                                        ti, opt, f, (int)v);
                    checked++;
                }
            }
            free(out);
            persiste_model_destroy(m);
        }
        persiste_data_destroy(data);
        oracle_tree_free(&t);
        persiste_tree_destroy(tr);
    }
    assert_true(checked > 1000);
    persiste_ctx_destroy(ctx);
}

/* On a 3-tip tree, Gillespie histories (root from the stationary
 * distribution) kept when their tips show the family's pattern: the mean
 * number of gains and losses per branch. */
static void test_simulated_histories(void **state)
{
    (void)state;
    persiste_tree *tr = oracle_newick("((A:0.4,B:0.7):0.5,C:1.1);");
    oracle_tree t;
    oracle_tree_read(tr, &t);
    const uint8_t pat[3] = {1, 0, 1};
    persiste_data *data = oracle_data(tr, pat, 1);
    double lg = log(0.8), ll = log(1.3);
    persiste_model *m;
    persiste_model_create(&m);
    persiste_model_set_int(m, PERSISTE_MODEL_CONDITION,
                           PERSISTE_CONDITION_NONE);
    persiste_ctx *ctx = oracle_ctx(1);
    int32_t n = t.n_nodes;
    double pp[8], g[8], l[8];
    assert_int_equal(persiste_reconstruct_batch(ctx, m, tr, data, 1, &lg, &ll,
                                                NULL, NULL, 1, pp, g, l, NULL,
                                                NULL, NULL),
                     0);
    oracle_rng rng = {9};
    double lam = 0.8, mu = 1.3;
    double sg[8] = {0}, sl[8] = {0}, sg2[8] = {0}, sl2[8] = {0};
    long kept = 0;
    while (kept < 200000) {
        int state_of[8], ng[8] = {0}, nl[8] = {0};
        state_of[n - 1] = oracle_uniform(&rng, 0, 1) < lam / (lam + mu);
        for (int32_t v = n - 2; v >= 0; v--) { /* parents first */
            int s = state_of[t.parent[v]];
            double left = t.length[v];
            for (;;) {
                double rate = s ? mu : lam;
                double dt = -log(oracle_uniform(&rng, 1e-300, 1)) / rate;
                if (dt >= left)
                    break;
                left -= dt;
                s ? nl[v]++ : ng[v]++;
                s = 1 - s;
            }
            state_of[v] = s;
        }
        int match = 1;
        for (int c = 0; c < t.n_tips; c++)
            match &= state_of[c] == pat[c];
        if (!match)
            continue;
        kept++;
        for (int32_t v = 0; v < n - 1; v++) {
            sg[v] += ng[v];
            sl[v] += nl[v];
            sg2[v] += (double)ng[v] * ng[v];
            sl2[v] += (double)nl[v] * nl[v];
        }
    }
    for (int32_t v = 0; v < n - 1; v++) {
        double mg = sg[v] / kept, ml = sl[v] / kept;
        double seg = sqrt((sg2[v] / kept - mg * mg) / kept) + 1e-12;
        double sel = sqrt((sl2[v] / kept - ml * ml) / kept) + 1e-12;
        print_message("branch %d: gains %.4f (sim %.4f +/- %.4f), losses "
                      "%.4f (sim %.4f +/- %.4f)\n",
                      (int)v, g[v], mg, seg, l[v], ml, sel);
        assert_true(fabs(g[v] - mg) < 5 * seg);
        assert_true(fabs(l[v] - ml) < 5 * sel);
    }
    persiste_ctx_destroy(ctx);
    persiste_model_destroy(m);
    persiste_data_destroy(data);
    oracle_tree_free(&t);
    persiste_tree_destroy(tr);
}

/* Sums by group equal the weighted per-family values; impossible families
 * are left out; 1 and 3 threads give the same bits. */
static void test_sums_groups_threads(void **state)
{
    (void)state;
    oracle_rng rng = {5};
    persiste_tree *tr = oracle_random_tree(&rng, 40, 0.2, 0.0, 1.0);
    int32_t n = persiste_tree_n_nodes(tr), nt = persiste_tree_n_tips(tr);
    enum { NF = 700, NG = 3 };
    uint8_t *st = malloc((size_t)NF * nt);
    oracle_random_states(&rng, st, (int64_t)NF * nt, 0.4, 0.05);
    persiste_data *data = oracle_data(tr, st, NF);
    double lg[NF], ll[NF], w[NF];
    int32_t grp[NF];
    for (int f = 0; f < NF; f++) {
        lg[f] = f % 2 ? -0.5 : oracle_uniform(&rng, -2, 1);
        ll[f] = f % 2 ? -0.2 : oracle_uniform(&rng, -2, 1);
        w[f] = oracle_uniform(&rng, 0, 2);
        grp[f] = f % NG;
    }
    persiste_model *m;
    persiste_model_create(&m);
    double a = 0.03, b = 0.01;
    persiste_model_set_error(m, 1, &a, &b);
    size_t per = (size_t)NF * n, sums = (size_t)NG * n;
    double *r[2];
    for (int th = 0; th < 2; th++) {
        persiste_ctx *ctx = oracle_ctx(th ? 3 : 1);
        r[th] = malloc(sizeof(double) * (3 * per + 3 * sums));
        double *x = r[th];
        assert_int_equal(persiste_reconstruct_batch(
                             ctx, m, tr, data, NF, lg, ll, w, grp, NG, x,
                             x + per, x + 2 * per, x + 3 * per,
                             x + 3 * per + sums, x + 3 * per + 2 * sums),
                         0);
        persiste_ctx_destroy(ctx);
    }
    ORACLE_ASSERT_SAME_BITS(r[1], "3 threads", r[0], "1 thread",
                            (int64_t)(3 * per + 3 * sums), "reconstruction");
    for (int q = 0; q < 3; q++)
        for (int g = 0; g < NG; g++)
            for (int32_t v = 0; v < n; v++) {
                long double want = 0;
                for (int f = g; f < NF; f += NG)
                    want += w[f] * r[0][q * per + (size_t)f * n + v];
                ORACLE_ASSERT_CLOSE(r[0][3 * per + q * sums + g * n + v],
                                    (double)want, 1e-12, 1e-12,
                                    "sum %d group %d node %d", q, g, (int)v);
            }
    free(r[0]);
    free(r[1]);
    free(st);
    persiste_model_destroy(m);
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
}

/* An impossible family: zeros, counted, left out of the sums. */
static void test_impossible(void **state)
{
    (void)state;
    persiste_tree *tr = oracle_newick("((A:0,B:0):0.5,C:0.7);");
    const uint8_t st[] = {1, 0, 1, 1, 1, 0};
    persiste_data *data = oracle_data(tr, st, 2);
    persiste_model *m;
    persiste_model_create(&m);
    persiste_ctx *ctx = oracle_ctx(1);
    double lg[2] = {-1, -1}, ll[2] = {-1, -1}, pp[10], g[10], l[10], s[5];
    assert_int_equal(persiste_reconstruct_batch(ctx, m, tr, data, 2, lg, ll,
                                                NULL, NULL, 1, pp, g, l, s,
                                                NULL, NULL),
                     0);
    assert_int_equal(persiste_ctx_n_impossible(ctx), 1);
    for (int v = 0; v < 5; v++) {
        assert_true(pp[v] == 0 && g[v] == 0 && l[v] == 0);
        assert_true(isfinite(pp[5 + v]));
        ORACLE_ASSERT_CLOSE(s[v], pp[5 + v], 1e-15, 1e-300, "sum node %d",
                            v);
    }
    persiste_ctx_destroy(ctx);
    persiste_model_destroy(m);
    persiste_data_destroy(data);
    persiste_tree_destroy(tr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_brute_force),
        cmocka_unit_test(test_simulated_histories),
        cmocka_unit_test(test_sums_groups_threads),
        cmocka_unit_test(test_impossible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
