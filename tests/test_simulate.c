/* persiste_simulate against an independent brute force: the probability of
 * every observed tip pattern of a small tree, written again here from the
 * model's definition (DESIGN.md section 2) in long double, by enumerating
 * every true state of every node, then the observation error, categories
 * and conditioning. Simulated pattern counts are compared with it by a
 * chi-square test and per-pattern z-scores at a fixed seed. Also: the
 * seed's reproducibility, one stream per family, argument errors and
 * events too rare to simulate. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "persiste.h"

#define MAX_NODES 12
#define MAX_TIPS 6
#define MAX_CAT 4
/* Families per rate pair in each statistical check. */
#define N_PER_PAIR 200000
/* FNV-1a of test_pinned's states. */
#define PINNED_HASH 0xd20b4375f63c165aull

/* A model and tree as this file understands them. Multipliers left 0 in a
 * spec mean 1 (so initialisers name only the branches that differ). */
typedef struct spec {
    const char *name;
    const char *newick;
    int condition;  /* persiste_condition */
    int root_prior; /* persiste_root_prior */
    double root_freq;
    int min_present; /* 0 means 1 (the default) */
    double min_len;
    int n_error; /* 0, 1 or n_tips */
    double err_absent[MAX_TIPS], err_present[MAX_TIPS];
    int n_cat;
    int cat_shared; /* loss multipliers given as NULL (= the gain ones) */
    double cat_w[MAX_CAT], cat_g[MAX_CAT], cat_l[MAX_CAT];
    int lineage; /* set lineage multipliers (lin_g, lin_l by node) */
    double lin_g[MAX_NODES], lin_l[MAX_NODES];
    int n_pairs; /* families alternate between these rate pairs */
    double log_gain[2], log_loss[2];
} spec;

static persiste_tree *make_tree(const char *newick)
{
    persiste_tree *tree = NULL;
    int rc = persiste_tree_from_newick(&tree, newick);
    if (rc != PERSISTE_OK)
        print_error("newick %s: %s\n", newick, persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    return tree;
}

static double mult(double x) { return x == 0.0 ? 1.0 : x; }

/* The library's model for a spec (through the public setters only). */
static persiste_model *make_model(const spec *sp, int32_t n_nodes)
{
    persiste_model *m = NULL;
    assert_int_equal(persiste_model_create(&m), PERSISTE_OK);
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_CONDITION,
                                            sp->condition),
                     PERSISTE_OK);
    assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_ROOT_PRIOR,
                                            sp->root_prior),
                     PERSISTE_OK);
    if (sp->root_prior == PERSISTE_ROOT_FIXED)
        assert_int_equal(persiste_model_set_double(
                             m, PERSISTE_MODEL_ROOT_FREQ, sp->root_freq),
                         PERSISTE_OK);
    if (sp->min_present > 1)
        assert_int_equal(persiste_model_set_int(m, PERSISTE_MODEL_MIN_PRESENT,
                                                sp->min_present),
                         PERSISTE_OK);
    assert_int_equal(persiste_model_set_double(
                         m, PERSISTE_MODEL_MIN_BRANCH_LENGTH, sp->min_len),
                     PERSISTE_OK);
    if (sp->n_error)
        assert_int_equal(persiste_model_set_error(m, sp->n_error,
                                                  sp->err_absent,
                                                  sp->err_present),
                         PERSISTE_OK);
    if (sp->n_cat)
        assert_int_equal(persiste_model_set_categories(
                             m, sp->n_cat, sp->cat_w, sp->cat_g,
                             sp->cat_shared ? NULL : sp->cat_l),
                         PERSISTE_OK);
    if (sp->lineage) {
        double g[MAX_NODES], l[MAX_NODES];
        for (int v = 0; v < n_nodes; v++) {
            g[v] = mult(sp->lin_g[v]);
            l[v] = mult(sp->lin_l[v]);
        }
        assert_int_equal(persiste_model_set_lineage(m, n_nodes, g, l),
                         PERSISTE_OK);
    }
    return m;
}

/* ---- The brute force --------------------------------------------------- */

/* P(child state c | parent state p) on a branch of length t at branch
 * rates gain lb, loss mb. */
static long double transition(int p, int c, long double lb, long double mb,
                              long double t)
{
    long double x = (lb + mb) * t;
    long double phi = x == 0.0L ? 1.0L : -expm1l(-x) / x;
    long double leave = (p ? mb : lb) * t * phi;
    return p == c ? 1.0L - leave : leave;
}

/* prob[pattern] for every observed pattern (bit i = tip i present) of a
 * family at (log_gain, log_loss) under sp on the tree given by parent[]
 * and length[] (tips are nodes 0..n_tips-1, the tree's order). */
static void brute_patterns(const spec *sp, int n_nodes, int n_tips,
                           const int32_t *parent, const double *length,
                           double log_gain, double log_loss,
                           long double *prob)
{
    int n_pat = 1 << n_tips, root = -1;
    for (int v = 0; v < n_nodes; v++)
        if (parent[v] < 0)
            root = v;
    assert_true(root >= 0);
    for (int o = 0; o < n_pat; o++)
        prob[o] = 0.0L;
    int n_cat = sp->n_cat ? sp->n_cat : 1;
    for (int k = 0; k < n_cat; k++) {
        long double w = sp->n_cat ? sp->cat_w[k] : 1.0L;
        long double lam = expl(log_gain), mu = expl(log_loss);
        if (sp->n_cat) {
            lam *= sp->cat_g[k];
            mu *= sp->cat_shared ? sp->cat_g[k] : sp->cat_l[k];
        }
        /* true tip patterns, summed over the internal states */
        long double truth[1 << MAX_TIPS] = {0};
        for (long a = 0; a < (1L << n_nodes); a++) {
            int rs = (int)(a >> root) & 1;
            long double pi1 = sp->root_prior == PERSISTE_ROOT_STATIONARY
                                  ? lam / (lam + mu)
                              : sp->root_prior == PERSISTE_ROOT_FIXED
                                  ? (long double)sp->root_freq
                                  : 0.0L;
            long double p = rs ? pi1 : 1.0L - pi1;
            for (int v = 0; v < n_nodes && p > 0.0L; v++) {
                if (v == root)
                    continue;
                long double t = length[v] > sp->min_len ? length[v]
                                                        : sp->min_len;
                long double lb = lam, mb = mu;
                if (sp->lineage) {
                    lb *= mult(sp->lin_g[v]);
                    mb *= mult(sp->lin_l[v]);
                }
                p *= transition((int)(a >> parent[v]) & 1,
                                (int)(a >> v) & 1, lb, mb, t);
            }
            truth[a & (n_pat - 1)] += p;
        }
        /* then each tip observed through its error pair */
        for (int tp = 0; tp < n_pat; tp++)
            for (int o = 0; o < n_pat; o++) {
                long double p = w * truth[tp];
                for (int i = 0; i < n_tips; i++) {
                    int e = sp->n_error == 1 ? 0 : i;
                    long double a = sp->n_error ? sp->err_absent[e] : 0.0L;
                    long double b = sp->n_error ? sp->err_present[e] : 0.0L;
                    int ti = (tp >> i) & 1, oi = (o >> i) & 1;
                    p *= ti ? (oi ? 1.0L - a : a) : (oi ? b : 1.0L - b);
                }
                prob[o] += p;
            }
    }
    /* conditioning: the event's patterns, renormalised */
    long double kept = 0.0L;
    for (int o = 0; o < n_pat; o++) {
        int present = 0;
        for (int i = 0; i < n_tips; i++)
            present += (o >> i) & 1;
        int k = sp->min_present > 1 ? sp->min_present : 1;
        int in = sp->condition == PERSISTE_CONDITION_NONE      ? 1
                 : sp->condition == PERSISTE_CONDITION_PRESENT ? present >= k
                         : present > 0 && present < n_tips;
        if (!in)
            prob[o] = 0.0L;
        kept += prob[o];
    }
    assert_true(kept > 0.0L);
    for (int o = 0; o < n_pat; o++)
        prob[o] /= kept;
}

/* Chi-square quantile at z = 5 standard deviations (upper tail ~3e-7) by
 * Wilson and Hilferty's cube-root approximation. */
static double chi2_limit(int df)
{
    double h = 2.0 / (9.0 * df);
    return df * pow(1.0 - h + 5.0 * sqrt(h), 3);
}

typedef struct stats {
    double chi2, limit, max_z;
    int df;
} stats;

/* Counts of n families against prob: chi-square over the patterns expected
 * at least 5 times (the others pooled into one cell), the largest |z| of a
 * single pattern, and no family in a pattern of probability 0. Fails the
 * test if the counts are implausible. */
static stats compare_counts(const char *name, int pair, const long *count,
                            const long double *prob, int n_pat, long n)
{
    stats s = {0.0, 0.0, 0.0, 0};
    double pool_e = 0.0, pool_o = 0.0;
    for (int o = 0; o < n_pat; o++) {
        double e = (double)(prob[o] * n), c = (double)count[o];
        if (prob[o] == 0.0L) {
            if (count[o] != 0)
                fail_msg("%s: pattern %d of probability 0 drawn %ld times",
                         name, o, count[o]);
            continue;
        }
        double sd = sqrt(e * (1.0 - (double)prob[o]));
        if (sd > 0.0 && fabs(c - e) / sd > s.max_z)
            s.max_z = fabs(c - e) / sd;
        if (e >= 5.0) {
            s.chi2 += (c - e) * (c - e) / e;
            s.df++;
        } else {
            pool_e += e;
            pool_o += c;
        }
    }
    if (pool_e >= 1.0) {
        s.chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        s.df++;
    } else if (pool_o > 12.0) { /* P(Poisson(1) > 12) ~ 1e-10 */
        fail_msg("%s: %g families in patterns expected %g times", name,
                 pool_o, pool_e);
    }
    s.df--; /* the counts' total is fixed */
    s.limit = s.df > 0 ? chi2_limit(s.df) : 0.0;
    print_message("  %-26s pair %d: chi2 %7.2f, df %2d (limit %5.1f), "
                  "max |z| %.2f\n",
                  name, pair, s.chi2, s.df, s.limit, s.max_z);
    if (s.df > 0 && !(s.chi2 < s.limit))
        fail_msg("%s pair %d: chi2 %g above %g", name, pair, s.chi2,
                 s.limit);
    if (!(s.max_z < 5.5))
        fail_msg("%s pair %d: a pattern at %g standard deviations", name,
                 pair, s.max_z);
    return s;
}

/* Simulates N_PER_PAIR families per rate pair of sp (interleaved) and
 * compares each pair's pattern counts with the brute force. */
static void check_spec(const spec *sp, uint64_t seed)
{
    persiste_tree *tree = make_tree(sp->newick);
    int n_nodes = persiste_tree_n_nodes(tree);
    int n_tips = persiste_tree_n_tips(tree);
    assert_true(n_nodes <= MAX_NODES && n_tips <= MAX_TIPS);
    int32_t parent[MAX_NODES];
    double length[MAX_NODES];
    assert_int_equal(persiste_tree_parents(tree, parent), PERSISTE_OK);
    assert_int_equal(persiste_tree_branch_lengths(tree, length), PERSISTE_OK);
    persiste_model *model = make_model(sp, n_nodes);

    int n_pairs = sp->n_pairs ? sp->n_pairs : 1;
    long n = (long)N_PER_PAIR * n_pairs;
    double *lg = malloc((size_t)n * sizeof *lg);
    double *ll = malloc((size_t)n * sizeof *ll);
    uint8_t *states = malloc((size_t)n * (size_t)n_tips);
    assert_true(lg && ll && states);
    for (long f = 0; f < n; f++) {
        lg[f] = sp->log_gain[f % n_pairs];
        ll[f] = sp->log_loss[f % n_pairs];
    }
    int rc = persiste_simulate(model, tree, n, lg, ll, seed, states);
    if (rc != PERSISTE_OK)
        print_error("%s: %s\n", sp->name, persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);

    int n_pat = 1 << n_tips;
    for (int pair = 0; pair < n_pairs; pair++) {
        long count[1 << MAX_TIPS] = {0};
        for (long f = pair; f < n; f += n_pairs) {
            int o = 0;
            for (int i = 0; i < n_tips; i++) {
                uint8_t c = states[f * n_tips + i];
                if (c > 1)
                    fail_msg("%s: family %ld tip %d is %d", sp->name, f, i,
                             c);
                o |= c << i;
            }
            count[o]++;
        }
        long double prob[1 << MAX_TIPS];
        brute_patterns(sp, n_nodes, n_tips, parent, length,
                       sp->log_gain[pair], sp->log_loss[pair], prob);
        compare_counts(sp->name, pair, count, prob, n_pat, N_PER_PAIR);
    }
    free(lg);
    free(ll);
    free(states);
    persiste_model_destroy(model);
    persiste_tree_destroy(tree);
}

/* Trees: tips first in Newick order, then the internal nodes in
 * post-order (persiste.h), the root last. */
/* nodes: A0 B1 C2 D3, (A,B)4, (C,D)5, root 6 */
#define T4 "((A:0.3,B:0.6):0.4,(C:0.2,D:0.9):0.5);"
/* long branches (x > 1) beside very short ones */
#define T4_LONG "((A:2.5,B:0.05):1.5,(C:4,D:0.01):0.3);"
/* a trifurcation, a unary node and a root of three children */
#define T5_POLY "((A:0.3,B:0.5,C:0.2):0.4,(D:0.6):0.3,E:0.15);"
/* zero-length branches: A and (C, D) sit at their parents */
#define T4_ZERO "((A:0,B:0.5):0,(C:0,D:0):0.7);"

#define PAIRS2 .n_pairs = 2, .log_gain = {-0.2231435513, -1.2039728043}, \
               .log_loss = {0.1823215568, 0.6931471806}

static void test_plain(void **state)
{
    (void)state;
    spec s = {.name = "plain", .newick = T4, PAIRS2};
    check_spec(&s, 1);
    spec p = {.name = "plain, polytomy", .newick = T5_POLY, PAIRS2};
    check_spec(&p, 2);
    spec l = {.name = "plain, long branches", .newick = T4_LONG,
              .n_pairs = 2, .log_gain = {0.4054651081, -3.0},
              .log_loss = {-0.3566749439, -0.5}};
    check_spec(&l, 3);
    /* slow rates: nearly every branch keeps its state */
    spec slow = {.name = "plain, slow rates", .newick = T4, .n_pairs = 2,
                 .log_gain = {-4.0, -6.0}, .log_loss = {-3.0, -7.0}};
    check_spec(&slow, 4);
}

static void test_error(void **state)
{
    (void)state;
    spec g = {.name = "error, global", .newick = T4, PAIRS2, .n_error = 1,
              .err_absent = {0.15}, .err_present = {0.05}};
    check_spec(&g, 11);
    spec t = {.name = "error, per tip", .newick = T4, PAIRS2, .n_error = 4,
              .err_absent = {0.3, 0.0, 0.1, 0.02},
              .err_present = {0.0, 0.25, 0.04, 0.1}};
    check_spec(&t, 12);
}

static void test_categories(void **state)
{
    (void)state;
    spec c3 = {.name = "3 categories", .newick = T4, PAIRS2, .n_cat = 3,
               .cat_w = {0.2, 0.5, 0.3}, .cat_g = {0.2, 1.0, 4.0},
               .cat_l = {3.0, 0.5, 1.0}};
    check_spec(&c3, 21);
    spec c2 = {.name = "2 categories, shared", .newick = T4, PAIRS2,
               .n_cat = 2, .cat_shared = 1, .cat_w = {0.35, 0.65},
               .cat_g = {0.1, 1.48461538}};
    check_spec(&c2, 22);
}

static void test_lineage(void **state)
{
    (void)state;
    /* the internal branch above (A, B): fast gain, slow loss */
    spec s = {.name = "lineage, branch (A,B)", .newick = T4, PAIRS2,
              .lineage = 1, .lin_g = {[4] = 6.0}, .lin_l = {[4] = 0.25}};
    check_spec(&s, 31);
    /* a tip's branch, with the root's (unused) entry set too */
    spec t = {.name = "lineage, tip D", .newick = T4, PAIRS2, .lineage = 1,
              .lin_g = {[3] = 0.1, [6] = 50.0},
              .lin_l = {[3] = 8.0, [6] = 0.01}};
    check_spec(&t, 32);
}

static void test_root_priors(void **state)
{
    (void)state;
    spec f = {.name = "root fixed 0.3", .newick = T4, PAIRS2,
              .root_prior = PERSISTE_ROOT_FIXED, .root_freq = 0.3};
    check_spec(&f, 41);
    spec one = {.name = "root fixed 1", .newick = T4, PAIRS2,
                .root_prior = PERSISTE_ROOT_FIXED, .root_freq = 1.0};
    check_spec(&one, 42);
    spec a = {.name = "root absent", .newick = T4, PAIRS2,
              .root_prior = PERSISTE_ROOT_ABSENT};
    check_spec(&a, 43);
}

static void test_conditions(void **state)
{
    (void)state;
    spec p = {.name = "present", .newick = T4, PAIRS2,
              .condition = PERSISTE_CONDITION_PRESENT};
    check_spec(&p, 51);
    spec p2 = {.name = "present, min 2", .newick = T4, PAIRS2,
               .condition = PERSISTE_CONDITION_PRESENT, .min_present = 2};
    check_spec(&p2, 52);
    spec v = {.name = "variable", .newick = T4, PAIRS2,
              .condition = PERSISTE_CONDITION_VARIABLE};
    check_spec(&v, 53);
    /* most draws rejected (about 9 in 10): redraws from one stream */
    spec rare = {.name = "present 3, root absent", .newick = T5_POLY,
                 .condition = PERSISTE_CONDITION_PRESENT, .min_present = 3,
                 .root_prior = PERSISTE_ROOT_ABSENT, .n_pairs = 2,
                 .log_gain = {-1.5, -0.5}, .log_loss = {-1.0, 0.0}};
    check_spec(&rare, 54);
    /* the event on the observed cells: error creates presences */
    spec e = {.name = "variable, error", .newick = T4, PAIRS2,
              .condition = PERSISTE_CONDITION_VARIABLE, .n_error = 1,
              .err_absent = {0.2}, .err_present = {0.1}};
    check_spec(&e, 55);
}

static void test_min_branch_length(void **state)
{
    (void)state;
    /* without a minimum, A = (A,B)'s state and C = D always */
    spec z = {.name = "zero lengths", .newick = T4_ZERO, PAIRS2};
    check_spec(&z, 61);
    spec m = {.name = "zero lengths, min 0.25", .newick = T4_ZERO, PAIRS2,
              .min_len = 0.25};
    check_spec(&m, 62);
    /* a minimum above some nonzero lengths of T4 too */
    spec m2 = {.name = "T4, min 0.45", .newick = T4, PAIRS2,
               .min_len = 0.45};
    check_spec(&m2, 63);
}

/* Every option at once. */
static void test_everything(void **state)
{
    (void)state;
    spec s = {.name = "everything", .newick = T4_ZERO, PAIRS2,
              .condition = PERSISTE_CONDITION_PRESENT, .min_present = 2,
              .root_prior = PERSISTE_ROOT_FIXED, .root_freq = 0.2,
              .min_len = 0.1, .n_error = 4,
              .err_absent = {0.05, 0.2, 0.0, 0.1},
              .err_present = {0.1, 0.0, 0.03, 0.02}, .n_cat = 3,
              .cat_w = {0.5, 0.25, 0.25}, .cat_g = {0.5, 1.0, 2.0},
              .cat_l = {2.0, 0.25, 1.0}, .lineage = 1,
              .lin_g = {[5] = 3.0, [1] = 0.3}, .lin_l = {[5] = 0.5}};
    check_spec(&s, 71);
    s.condition = PERSISTE_CONDITION_VARIABLE;
    s.min_present = 0;
    s.name = "everything, variable";
    check_spec(&s, 72);
}

/* ---- Seeds and streams ------------------------------------------------- */

/* 12 tips: two runs agree by chance with negligible probability. */
#define T12 "(((A:0.1,B:0.2):0.3,(C:0.4,D:0.1):0.2):0.5,((E:0.3,F:0.3):0.1," \
            "(G:0.2,(H:0.6,I:0.1):0.2):0.4):0.2,(J:0.7,(K:0.2,L:0.3):0.3):0.1);"

typedef struct run {
    persiste_tree *tree;
    persiste_model *model;
    int n_tips;
} run;

static run make_run(void)
{
    run r;
    r.tree = make_tree(T12);
    r.n_tips = persiste_tree_n_tips(r.tree);
    spec s = {.condition = PERSISTE_CONDITION_VARIABLE, .n_error = 1,
              .err_absent = {0.1}, .err_present = {0.05}, .n_cat = 2,
              .cat_w = {0.5, 0.5}, .cat_g = {0.5, 1.5},
              .cat_l = {1.0, 1.0}};
    r.model = make_model(&s, persiste_tree_n_nodes(r.tree));
    return r;
}

static void free_run(run *r)
{
    persiste_model_destroy(r->model);
    persiste_tree_destroy(r->tree);
}

static uint8_t *simulate_n(const run *r, int64_t n, const double *lg,
                           const double *ll, uint64_t seed)
{
    uint8_t *out = malloc((size_t)n * (size_t)r->n_tips);
    assert_non_null(out);
    assert_int_equal(persiste_simulate(r->model, r->tree, n, lg, ll, seed,
                                       out),
                     PERSISTE_OK);
    return out;
}

static void rates(double *lg, double *ll, int n)
{
    for (int f = 0; f < n; f++) {
        lg[f] = -1.0 + 0.002 * f;
        ll[f] = 0.5 - 0.001 * f;
    }
}

static void test_seed(void **state)
{
    (void)state;
    run r = make_run();
    enum { N = 1000 };
    double lg[N], ll[N];
    rates(lg, ll, N);
    size_t bytes = (size_t)N * (size_t)r.n_tips;
    uint8_t *a = simulate_n(&r, N, lg, ll, 12345);
    uint8_t *b = simulate_n(&r, N, lg, ll, 12345);
    uint8_t *c = simulate_n(&r, N, lg, ll, 12346);
    assert_memory_equal(a, b, bytes);
    assert_memory_not_equal(a, c, bytes);
    /* a different seed changes (nearly) every family, not a few */
    int same = 0;
    for (int f = 0; f < N; f++)
        same += !memcmp(a + (size_t)f * r.n_tips, c + (size_t)f * r.n_tips,
                        (size_t)r.n_tips);
    print_message("  seeds 12345, 12346: %d of %d families equal\n", same,
                  N);
    assert_true(same < N / 10);
    free(a);
    free(b);
    free(c);
    free_run(&r);
}

/* Family f's states depend on (seed, f) and its own rates only. */
static void test_streams(void **state)
{
    (void)state;
    run r = make_run();
    enum { N = 1000 };
    double lg[N], ll[N];
    rates(lg, ll, N);
    size_t row = (size_t)r.n_tips;
    uint8_t *all = simulate_n(&r, N, lg, ll, 99);
    uint8_t *ten = simulate_n(&r, 10, lg, ll, 99);
    assert_memory_equal(ten, all, 10 * row);
    /* families 500.. alone: the same as in the whole run */
    uint8_t *tail = malloc(500 * row);
    assert_non_null(tail);
    /* the tail starts at family 0 of its own call: its streams are those
     * of families 0..499, so it must NOT equal the whole run's tail */
    assert_int_equal(persiste_simulate(r.model, r.tree, 500, lg + 500,
                                       ll + 500, 99, tail),
                     PERSISTE_OK);
    assert_memory_not_equal(tail, all + 500 * row, 500 * row);
    /* other rates for family 7 (gain 20 times faster): every other family
     * keeps its states */
    lg[7] += 3.0;
    uint8_t *changed = simulate_n(&r, N, lg, ll, 99);
    assert_memory_equal(changed, all, 7 * row);
    assert_memory_equal(changed + 8 * row, all + 8 * row, (N - 8) * row);
    /* families at the same rates draw from distinct streams: few
     * neighbours agree (a stream shared by two families would make
     * hundreds do) */
    for (int f = 0; f < N; f++) {
        lg[f] = -0.5;
        ll[f] = 0.0;
    }
    uint8_t *same = simulate_n(&r, N, lg, ll, 99);
    int equal = 0;
    for (int f = 0; f + 1 < N; f++)
        for (int d = 1; d <= 2 && f + d < N; d++)
            equal += !memcmp(same + f * row, same + (f + d) * row, row);
    print_message("  equal rates: %d of %d near neighbours equal\n", equal,
                  2 * N - 3);
    assert_true(equal < 40);
    free(same);
    free(all);
    free(ten);
    free(tail);
    free(changed);
    free_run(&r);
}

/* FNV-1a of the states. */
static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* The same seed gives the same states on every machine (persiste.h): the
 * states of one run are pinned here. A change of the generator, of its
 * seeding or of the order of the draws changes them and is a visible
 * change of behaviour (update the value only with a note). */
static void test_pinned(void **state)
{
    (void)state;
    run r = make_run();
    enum { N = 1000 };
    double lg[N], ll[N];
    rates(lg, ll, N);
    uint8_t *a = simulate_n(&r, N, lg, ll, 2024);
    uint64_t h = fnv(a, (size_t)N * (size_t)r.n_tips);
    print_message("  pinned hash %#018llx\n", (unsigned long long)h);
    assert_int_equal(h, PINNED_HASH);
    free(a);
    free_run(&r);
}

/* ---- Errors ------------------------------------------------------------ */

static void expect_error(int rc, int want, const char *w1, const char *w2)
{
    if (rc != want)
        print_error("got %d, want %d: %s\n", rc, want, persiste_last_error());
    assert_int_equal(rc, want);
    const char *msg = persiste_last_error();
    if (!strstr(msg, w1) || (w2 && !strstr(msg, w2)))
        fail_msg("message \"%s\" lacks \"%s\" or \"%s\"", msg, w1,
                 w2 ? w2 : "");
}

static void test_bad_arguments(void **state)
{
    (void)state;
    persiste_tree *tree = make_tree(T4);
    spec s = {0};
    persiste_model *m = make_model(&s, 7);
    double lg[4] = {0.0, -1.0, 0.5, 0.0}, ll[4] = {0.0, 0.0, 0.0, 0.0};
    uint8_t out[16];
    memset(out, 0xAA, sizeof out);
    const uint8_t *untouched = (const uint8_t[16]){
        0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,
        0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA};

    expect_error(persiste_simulate(NULL, tree, 4, lg, ll, 1, out),
                 PERSISTE_E_INVALID, "simulate", "model");
    expect_error(persiste_simulate(m, NULL, 4, lg, ll, 1, out),
                 PERSISTE_E_INVALID, "simulate", "tree");
    expect_error(persiste_simulate(m, tree, 4, NULL, ll, 1, out),
                 PERSISTE_E_INVALID, "simulate", "log_gain");
    expect_error(persiste_simulate(m, tree, 4, lg, NULL, 1, out),
                 PERSISTE_E_INVALID, "simulate", "log_loss");
    expect_error(persiste_simulate(m, tree, 4, lg, ll, 1, NULL),
                 PERSISTE_E_INVALID, "simulate", "states");
    expect_error(persiste_simulate(m, tree, -1, lg, ll, 1, out),
                 PERSISTE_E_INVALID, "simulate", "n_families");
    expect_error(persiste_simulate(m, tree, INT64_MAX, lg, ll, 1, out),
                 PERSISTE_E_OVERFLOW, "simulate", "overflow");
    /* 2^62 families of 4 tips: just past 2^64 - 1 bytes */
    expect_error(persiste_simulate(m, tree, INT64_MAX / 2 + 1, lg, ll, 1,
                                   out),
                 PERSISTE_E_OVERFLOW, "simulate", "4 tips");
    assert_memory_equal(out, untouched, sizeof out);
    /* nothing to draw: the arrays are not needed */
    assert_int_equal(persiste_simulate(m, tree, 0, NULL, NULL, 1, NULL),
                     PERSISTE_OK);

    /* log rates outside [-100, 100] name the family; nothing written */
    lg[2] = 100.5;
    expect_error(persiste_simulate(m, tree, 4, lg, ll, 1, out),
                 PERSISTE_E_DOMAIN, "simulate", "family 2");
    lg[2] = 0.5;
    ll[3] = NAN;
    expect_error(persiste_simulate(m, tree, 4, lg, ll, 1, out),
                 PERSISTE_E_DOMAIN, "simulate", "family 3");
    ll[3] = -INFINITY;
    expect_error(persiste_simulate(m, tree, 4, lg, ll, 1, out),
                 PERSISTE_E_DOMAIN, "simulate", "family 3");
    ll[3] = -100.5;
    expect_error(persiste_simulate(m, tree, 4, lg, ll, 1, out),
                 PERSISTE_E_DOMAIN, "simulate", "family 3");
    assert_memory_equal(out, untouched, sizeof out);
    /* the bounds themselves are allowed */
    ll[3] = -100.0;
    lg[1] = 100.0;
    assert_int_equal(persiste_simulate(m, tree, 4, lg, ll, 1, out),
                     PERSISTE_OK);
    for (int i = 0; i < 16; i++)
        assert_true(out[i] <= 1);

    /* options that do not fit the tree */
    double e3[3] = {0.1, 0.1, 0.1};
    assert_int_equal(persiste_model_set_error(m, 3, e3, e3), PERSISTE_OK);
    expect_error(persiste_simulate(m, tree, 4, lg, ll, 1, out),
                 PERSISTE_E_INVALID, "3 error pairs", NULL);
    assert_int_equal(persiste_model_set_error(m, 0, NULL, NULL),
                     PERSISTE_OK);
    double g5[5] = {1, 1, 1, 1, 1};
    assert_int_equal(persiste_model_set_lineage(m, 5, g5, g5), PERSISTE_OK);
    expect_error(persiste_simulate(m, tree, 4, lg, ll, 1, out),
                 PERSISTE_E_INVALID, "5 lineage", NULL);
    persiste_model_destroy(m);
    persiste_tree_destroy(tree);
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Events that cannot (or practically cannot) be hit: PERSISTE_E_DOMAIN,
 * promptly. */
static void test_impossible(void **state)
{
    (void)state;
    double lg[3] = {0.0, 0.0, 0.0}, ll[3] = {0.0, 0.0, 0.0};
    uint8_t out[3 * 4];

    /* every length 0, no error: all tips copy the root */
    persiste_tree *flat = make_tree("((A:0,B:0):0,(C:0,D:0):0);");
    spec v = {.condition = PERSISTE_CONDITION_VARIABLE};
    persiste_model *m = make_model(&v, 7);
    expect_error(persiste_simulate(m, flat, 3, lg, ll, 1, out),
                 PERSISTE_E_DOMAIN, "simulate", "copies the root");
    persiste_model_destroy(m);
    spec pa = {.condition = PERSISTE_CONDITION_PRESENT,
               .root_prior = PERSISTE_ROOT_ABSENT};
    m = make_model(&pa, 7);
    expect_error(persiste_simulate(m, flat, 3, lg, ll, 1, out),
                 PERSISTE_E_DOMAIN, "simulate", "never present");
    persiste_model_destroy(m);
    spec pf = {.condition = PERSISTE_CONDITION_PRESENT,
               .root_prior = PERSISTE_ROOT_FIXED, .root_freq = 0.0};
    m = make_model(&pf, 7);
    expect_error(persiste_simulate(m, flat, 3, lg, ll, 1, out),
                 PERSISTE_E_DOMAIN, "simulate", "never present");
    persiste_model_destroy(m);
    /* possible again with a minimum length, or with error, or at a
     * stationary root under PRESENT: every family's tips then agree */
    spec vm = {.condition = PERSISTE_CONDITION_VARIABLE, .min_len = 0.01};
    m = make_model(&vm, 7);
    assert_int_equal(persiste_simulate(m, flat, 3, lg, ll, 1, out),
                     PERSISTE_OK);
    persiste_model_destroy(m);
    spec ve = {.condition = PERSISTE_CONDITION_VARIABLE, .n_error = 1,
               .err_absent = {0.0}, .err_present = {0.01}};
    m = make_model(&ve, 7);
    assert_int_equal(persiste_simulate(m, flat, 3, lg, ll, 1, out),
                     PERSISTE_OK);
    persiste_model_destroy(m);
    spec ps = {.condition = PERSISTE_CONDITION_PRESENT};
    m = make_model(&ps, 7);
    assert_int_equal(persiste_simulate(m, flat, 3, lg, ll, 1, out),
                     PERSISTE_OK);
    for (int i = 0; i < 12; i++)
        assert_int_equal(out[i], 1);
    persiste_model_destroy(m);
    persiste_tree_destroy(flat);

    /* one tip is never variable */
    persiste_tree *one = make_tree("(A:1);");
    m = make_model(&v, persiste_tree_n_nodes(one));
    expect_error(persiste_simulate(m, one, 3, lg, ll, 1, out),
                 PERSISTE_E_DOMAIN, "simulate", "one tip");
    persiste_model_destroy(m);
    persiste_tree_destroy(one);

    /* possible but too rare: root absent, gain e^-100, two presences
     * needed: family 2 fails after 10^6 draws, named in the message */
    persiste_tree *tree = make_tree(T4);
    spec p2 = {.condition = PERSISTE_CONDITION_PRESENT, .min_present = 2,
               .root_prior = PERSISTE_ROOT_ABSENT};
    m = make_model(&p2, 7);
    lg[2] = -100.0;
    double t0 = seconds();
    expect_error(persiste_simulate(m, tree, 3, lg, ll, 1, out),
                 PERSISTE_E_DOMAIN, "family 2", "too rare");
    double dt = seconds() - t0;
    print_message("  10^6 rejections in %.3f s: %s\n", dt,
                  persiste_last_error());
    assert_true(dt < 5.0);
    persiste_model_destroy(m);
    persiste_tree_destroy(tree);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_error),
        cmocka_unit_test(test_categories),
        cmocka_unit_test(test_lineage),
        cmocka_unit_test(test_root_priors),
        cmocka_unit_test(test_conditions),
        cmocka_unit_test(test_min_branch_length),
        cmocka_unit_test(test_everything),
        cmocka_unit_test(test_seed),
        cmocka_unit_test(test_streams),
        cmocka_unit_test(test_pinned),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_impossible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
