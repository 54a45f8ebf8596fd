/* The two bundled real datasets reproduce the numbers of their REFERENCE.md
 * files (computed by independent programs: NumPy pruning, R phangorn pml,
 * IQ-TREE, phytools), and their gradients match finite differences of the
 * total log-likelihood. */
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

#define REL 1e-9

typedef struct dataset {
    persiste_tree *tree;
    persiste_data *data;
    int64_t n_fam;
    double *lg, *lm, *ll; /* [n_fam]: global rates, scratch */
} dataset;

static void load(dataset *d, const char *dir, const char *tree_file,
                 const char *table_file, uint32_t flags) {
    const char *root = getenv("PERSISTE_DATA_DIR");
    char path[4096];
    assert_non_null(root);
    snprintf(path, sizeof path, "%s/%s/%s", root, dir, tree_file);
    int rc = persiste_tree_from_newick_file(&d->tree, path);
    if (rc != PERSISTE_OK)
        print_message("%s: %s\n", path, persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    snprintf(path, sizeof path, "%s/%s/%s", root, dir, table_file);
    rc = persiste_data_read(&d->data, d->tree, path, flags);
    if (rc != PERSISTE_OK)
        print_message("%s: %s\n", path, persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    d->n_fam = persiste_data_n_families(d->data);
    size_t n = (size_t)d->n_fam;
    d->lg = malloc(sizeof(double) * n);
    d->lm = malloc(sizeof(double) * n);
    d->ll = malloc(sizeof(double) * n);
    assert_true(d->lg && d->lm && d->ll);
}

static void unload(dataset *d) {
    persiste_data_destroy(d->data);
    persiste_tree_destroy(d->tree);
    free(d->lg);
    free(d->lm);
    free(d->ll);
}

static void set_rates(dataset *d, double lg, double lm) {
    for (int64_t f = 0; f < d->n_fam; f++) {
        d->lg[f] = lg;
        d->lm[f] = lm;
    }
}

static persiste_model *model_for(int cond) {
    oracle_model m = {cond, PERSISTE_ROOT_STATIONARY, 0.5};
    persiste_model *model = oracle_lib_model(&m, 0);
    assert_non_null(model);
    return model;
}

/* Sum of loglik over families (long double, so that the sum adds no
 * rounding of its own), at global log rates (lg, lm), on tree/data. */
static long double total(persiste_ctx *ctx, int cond, dataset *d,
                         const persiste_tree *tree, const persiste_data *data,
                         double lg, double lm) {
    persiste_model *model = model_for(cond);
    set_rates(d, lg, lm);
    int rc = persiste_loglik_batch(ctx, model, tree, data, d->n_fam, d->lg,
                                   d->lm, d->ll);
    assert_int_equal(rc, PERSISTE_OK);
    persiste_model_destroy(model);
    long double sum = 0;
    for (int64_t f = 0; f < d->n_fam; f++)
        sum += d->ll[f];
    return sum;
}

/* Reference totals (and optionally first five families) per condition. */
static void check_reference(persiste_ctx *ctx, dataset *d, double lam,
                            double mu, const double want_total[3],
                            const double want_first[3][5]) {
    for (int k = 0; k < 3; k++) {
        long double sum = total(ctx, k, d, d->tree, d->data, log(lam), log(mu));
        ORACLE_ASSERT_CLOSE((double)sum, want_total[k], REL, 1.0,
                            "total, condition %d", k);
        if (want_first[k][0] == 0)
            continue;
        for (int f = 0; f < 5; f++)
            ORACLE_ASSERT_CLOSE(d->ll[f], want_first[k][f], REL, 1.0,
                                "family %d, condition %d", f, k);
    }
}

/* ---- Gradient checks at global rates ------------------------------------- */
typedef struct fd_arg {
    persiste_ctx *ctx;
    dataset *d;
    int cond, which; /* which: 0 log gain, 1 log loss, 2 branch */
    double lg, lm;
    int32_t node;
    const uint8_t *states;
} fd_arg;

static double total_at(double x, void *p) {
    fd_arg *a = p;
    if (a->which < 2)
        return (double)total(a->ctx, a->cond, a->d, a->d->tree, a->d->data,
                             a->which == 0 ? x : a->lg,
                             a->which == 1 ? x : a->lm);
    persiste_tree *tree = oracle_tree_with_length(a->d->tree, a->node, x);
    assert_non_null(tree);
    persiste_data *data = oracle_data(tree, a->states, a->d->n_fam);
    assert_non_null(data);
    long double sum = total(a->ctx, a->cond, a->d, tree, data, a->lg, a->lm);
    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
    return (double)sum;
}

/* d total / d log rate = sum_f d_log_rate[f]; d_branch of the two longest
 * branches (one tip branch, one internal branch) against finite
 * differences. */
static void check_gradient(persiste_ctx *ctx, dataset *d, double lam,
                           double mu) {
    int32_t n_nodes = persiste_tree_n_nodes(d->tree),
            n_tips = persiste_tree_n_tips(d->tree);
    oracle_tree t;
    oracle_tree_read(d->tree, &t);
    uint8_t *states = oracle_data_states(d->data, n_tips);
    assert_non_null(states);
    int32_t pick[2] = {0, n_tips};
    for (int32_t i = 0; i < n_nodes - 1; i++) {
        int which = i >= n_tips;
        if (t.length[i] > t.length[pick[which]])
            pick[which] = i;
    }
    double *dg = malloc(sizeof *dg * (size_t)d->n_fam);
    double *dl = malloc(sizeof *dl * (size_t)d->n_fam);
    double *db = malloc(sizeof *db * (size_t)n_nodes);
    for (int k = 0; k < 3; k++) {
        persiste_model *model = model_for(k);
        fd_arg a = {ctx, d, k, 0, log(lam), log(mu), 0, states};
        set_rates(d, a.lg, a.lm);
        assert_int_equal(persiste_gradient_batch(ctx, model, d->tree, d->data,
                                                 d->n_fam, d->lg, d->lm, NULL,
                                                 d->ll, dg, dl, db),
                         PERSISTE_OK);
        long double sum_g = 0, sum_l = 0;
        for (int64_t f = 0; f < d->n_fam; f++) {
            sum_g += dg[f];
            sum_l += dl[f];
        }
        a.which = 0;
        ORACLE_ASSERT_CLOSE((double)sum_g, oracle_fd(total_at, &a, a.lg, 1e-3),
                            1e-6, 1.0, "d total / d log gain, condition %d", k);
        a.which = 1;
        ORACLE_ASSERT_CLOSE((double)sum_l, oracle_fd(total_at, &a, a.lm, 1e-3),
                            1e-6, 1.0, "d total / d log loss, condition %d", k);
        a.which = 2;
        for (int j = 0; j < 2; j++) {
            a.node = pick[j];
            double len = t.length[pick[j]];
            ORACLE_ASSERT_CLOSE(db[pick[j]],
                                oracle_fd_length(total_at, &a, len, 1e-3 * len),
                                1e-6, 1.0, "d_branch %d (t %g), condition %d",
                                (int)pick[j], len, k);
        }
        persiste_model_destroy(model);
    }
    free(dg);
    free(dl);
    free(db);
    free(states);
    oracle_tree_free(&t);
}

/* Total PRESENT log-likelihood and its gradient in the global log rates. */
static long double total_gradient(persiste_ctx *ctx, dataset *d,
                                  const double x[2], double g[2]) {
    persiste_model *model = model_for(PERSISTE_CONDITION_PRESENT);
    double *dg = malloc(sizeof *dg * (size_t)d->n_fam);
    double *dl = malloc(sizeof *dl * (size_t)d->n_fam);
    set_rates(d, x[0], x[1]);
    assert_int_equal(persiste_gradient_batch(ctx, model, d->tree, d->data,
                                             d->n_fam, d->lg, d->lm, NULL,
                                             d->ll, dg, dl, NULL),
                     PERSISTE_OK);
    long double sum = 0, sg = 0, sl = 0;
    for (int64_t f = 0; f < d->n_fam; f++) {
        sum += d->ll[f];
        sg += dg[f];
        sl += dl[f];
    }
    g[0] = (double)sg;
    g[1] = (double)sl;
    free(dg);
    free(dl);
    persiste_model_destroy(model);
    return sum;
}

/* The reference's maximum of the PRESENT likelihood ("near lam, mu", rounded
 * to `decimals`; its value rounded to 3 decimals unless NAN): Newton steps
 * in the log rates from the reference point, with the library's gradient
 * and its central differences as Hessian. */
static void check_maximum(persiste_ctx *ctx, dataset *d, double lam0,
                          double mu0, double want_lam, double want_mu,
                          int decimals, double want_max) {
    double x[2] = {log(lam0), log(mu0)}, g[2], gp[2], gm[2], h[2][2];
    long double top = 0;
    for (int it = 0; it < 4; it++) {
        top = total_gradient(ctx, d, x, g);
        for (int j = 0; j < 2; j++) {
            double xp[2] = {x[0], x[1]}, xm[2] = {x[0], x[1]};
            xp[j] += 1e-4;
            xm[j] -= 1e-4;
            total_gradient(ctx, d, xp, gp);
            total_gradient(ctx, d, xm, gm);
            for (int i = 0; i < 2; i++)
                h[i][j] = (gp[i] - gm[i]) / 2e-4;
        }
        double det = h[0][0] * h[1][1] - h[0][1] * h[1][0];
        assert_true(det > 0 && h[0][0] < 0); /* a maximum */
        x[0] -= (h[1][1] * g[0] - h[0][1] * g[1]) / det;
        x[1] -= (h[0][0] * g[1] - h[1][0] * g[0]) / det;
    }
    assert_true(fabs(g[0]) < 1e-4 && fabs(g[1]) < 1e-4); /* converged */
    /* within half a unit of the last printed decimal (absolute) */
    double half = 0.5 * pow(10, -decimals);
    ORACLE_ASSERT_CLOSE(exp(x[0]), want_lam, half / want_lam, 0, "argmax gain");
    ORACLE_ASSERT_CLOSE(exp(x[1]), want_mu, half / want_mu, 0, "argmax loss");
    if (!isnan(want_max))
        ORACLE_ASSERT_CLOSE((double)top, want_max, 5e-4 / fabs(want_max), 0,
                            "maximum");
}

/* ---- data/efm-clade-powerbacgwas/REFERENCE.md ---------------------------- */
static void test_efm_clade(void **state) {
    (void)state;
    dataset d;
    load(&d, "efm-clade-powerbacgwas", "efm_clade.tree.nwk",
         "efm_clade.gene_presence_absence.Rtab.gz",
         PERSISTE_DATA_DROP_EXTRA_TAXA | PERSISTE_DATA_DROP_ABSENT_FAMILIES);
    /* 761 tree genomes (the reference genome's column dropped), 5,357
     * families (86 all-absent ones removed) */
    assert_int_equal(persiste_tree_n_tips(d.tree), 761);
    assert_int_equal(persiste_data_n_taxa(d.data), 761);
    assert_int_equal(persiste_data_n_dropped_taxa(d.data), 1);
    assert_string_equal(persiste_data_dropped_taxon(d.data, 0),
                        "Enterococcus_faecium_Aus0004_v1.prokka");
    assert_int_equal(persiste_data_n_dropped_families(d.data), 86);
    assert_int_equal(d.n_fam, 5357);

    static const double want_total[3] = {-477505.6824325649, -477505.6822940703,
                                         -477505.6793157684};
    /* the first five families are present everywhere: same value each */
    static const double want_first[3][5] = {
        {-14.402561684227566, -14.402561684227566, -14.402561684227566,
         -14.402561684227566, -14.402561684227566},
        {-14.402561658374545, -14.402561658374545, -14.402561658374545,
         -14.402561658374545, -14.402561658374545},
        {0}};
    persiste_ctx *ctx = oracle_ctx(2);
    check_reference(ctx, &d, 32, 27, want_total, want_first);
    check_gradient(ctx, &d, 32, 27);
    check_maximum(ctx, &d, 32, 27, 32.02, 27.14, 2, -477505.280);
    persiste_ctx_destroy(ctx);
    unload(&d);
}

/* ---- data/harris2022-plants30/REFERENCE.md ------------------------------- */
static void test_harris2022(void **state) {
    (void)state;
    dataset d;
    load(&d, "harris2022-plants30", "harris2022_dated_tree.nwk",
         "harris2022_pam.Rtab", 0);
    assert_int_equal(persiste_tree_n_tips(d.tree), 30);
    assert_int_equal(d.n_fam, 20822);
    assert_int_equal(persiste_data_n_all_absent(d.data), 0);

    static const double want_total[3] = {-205361.7276424572, -201262.4335841910,
                                         -201067.7062615576};
    static const double want_first[3][5] = {
        {-12.802627074919, -8.920948884983, -21.280171853575, -6.966540751921,
         -9.709389152363},
        {-12.605753861094, -8.724075671158, -21.083298639750, -6.769667538096,
         -9.512515938538},
        {-12.596401862120, -8.714723672184, -21.073946640776, -6.760315539122,
         -9.503163939564}};
    const double log_not_absent = -0.196873213825097;
    persiste_ctx *ctx = oracle_ctx(2);
    check_reference(ctx, &d, 0.14, 0.35, want_total, want_first);

    /* log(1 - P(all absent)) = none - present for every family, and the
     * log-space oracle gives the same number on this tree */
    double *none = malloc(sizeof *none * (size_t)d.n_fam);
    total(ctx, PERSISTE_CONDITION_NONE, &d, d.tree, d.data, log(0.14),
          log(0.35));
    memcpy(none, d.ll, sizeof *none * (size_t)d.n_fam);
    total(ctx, PERSISTE_CONDITION_PRESENT, &d, d.tree, d.data, log(0.14),
          log(0.35));
    for (int64_t f = 0; f < d.n_fam; f += 101)
        ORACLE_ASSERT_CLOSE(none[f] - d.ll[f], log_not_absent, REL, 0,
                            "log(1 - P(all absent)) from family %lld",
                            (long long)f);
    oracle_tree t;
    oracle_tree_read(d.tree, &t);
    uint8_t *absent = calloc((size_t)t.n_nodes, 1);
    oracle_model m = {0, PERSISTE_ROOT_STATIONARY, 0.5};
    long double conds[3];
    oracle_logspace_conds(&t, &m, absent, log(0.14), log(0.35), conds);
    /* all absent: none - present = log P(all absent) - log P(all absent)
     * + log(1 - P(all absent)) */
    ORACLE_ASSERT_CLOSE((double)(conds[0] - conds[1]), log_not_absent, REL, 0,
                        "log-space oracle log(1 - P(all absent))");
    free(absent);
    oracle_tree_free(&t);
    free(none);

    check_gradient(ctx, &d, 0.14, 0.35);
    check_maximum(ctx, &d, 0.14, 0.35, 0.139, 0.355, 3, NAN);
    persiste_ctx_destroy(ctx);
    unload(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_efm_clade),
        cmocka_unit_test(test_harris2022),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
