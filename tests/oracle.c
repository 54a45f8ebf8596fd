/* Independent oracles for the likelihood tests: see oracle.h. */
#include "oracle.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PERSISTE_TEST_KERNEL=avx2|avx512|generic runs a test against that kernel
 * (the library otherwise picks the fastest); exit 77 (skip) if unavailable. */
int persiste__kernel_select(const char *isa);
__attribute__((constructor)) static void oracle_pick_kernel(void)
{
    const char *isa = getenv("PERSISTE_TEST_KERNEL");
    if (isa && *isa && persiste__kernel_select(isa)) {
        printf("kernel %s not in this build or not run by this CPU: skip\n", isa);
        exit(77);
    }
}

/* ---- RNG ----------------------------------------------------------------- */
uint64_t oracle_next(oracle_rng *rng) {
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

double oracle_uniform(oracle_rng *rng, double lo, double hi) {
    return lo + (hi - lo) * (double)(oracle_next(rng) >> 11) * 0x1p-53;
}

int oracle_below(oracle_rng *rng, int n) {
    return (int)(oracle_next(rng) % (uint64_t)n);
}

/* ---- Trees --------------------------------------------------------------- */
static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "oracle: out of memory\n");
        exit(2);
    }
    return p;
}

void oracle_tree_read(const persiste_tree *tree, oracle_tree *out) {
    out->n_nodes = persiste_tree_n_nodes(tree);
    out->n_tips = persiste_tree_n_tips(tree);
    out->parent = xmalloc(sizeof *out->parent * (size_t)out->n_nodes);
    out->length = xmalloc(sizeof *out->length * (size_t)out->n_nodes);
    if (persiste_tree_parents(tree, out->parent) != PERSISTE_OK ||
        persiste_tree_branch_lengths(tree, out->length) != PERSISTE_OK)
        out->n_nodes = 0;
}

void oracle_tree_free(oracle_tree *t) {
    free(t->parent);
    free(t->length);
    t->parent = NULL;
    t->length = NULL;
}

void oracle_tree_clamp(oracle_tree *t, double min_length) {
    for (int32_t i = 0; i < t->n_nodes; i++)
        if (t->length[i] < min_length)
            t->length[i] = min_length;
}

static int32_t find_root(const oracle_tree *t) {
    for (int32_t i = 0; i < t->n_nodes; i++)
        if (t->parent[i] < 0)
            return i;
    return -1;
}

/* has_child[i] = 1 for internal nodes. */
static uint8_t *internal_flags(const oracle_tree *t) {
    uint8_t *f = calloc((size_t)t->n_nodes + 1, 1);
    if (!f)
        exit(2);
    for (int32_t i = 0; i < t->n_nodes; i++)
        if (t->parent[i] >= 0)
            f[t->parent[i]] = 1;
    return f;
}

/* ---- Dual numbers: value and one tangent, long double -------------------- */
typedef struct dual {
    long double v, d;
} dual;

static dual dc(long double v) { return (dual){v, 0}; }
static dual dadd(dual a, dual b) { return (dual){a.v + b.v, a.d + b.d}; }
static dual dmul(dual a, dual b) {
    return (dual){a.v * b.v, a.d * b.v + a.v * b.d};
}
static dual ddiv(dual a, dual b) {
    long double q = a.v / b.v;
    return (dual){q, (a.d - q * b.d) / b.v};
}
static dual dexp(dual a) {
    long double e = expl(a.v);
    return (dual){e, e * a.d};
}
/* 1 - e^-a, without cancellation. */
static dual d_one_minus_exp_neg(dual a) {
    return (dual){-expm1l(-a.v), expl(-a.v) * a.d};
}

/* Transition probabilities P[a][b] of every branch, written from the
 * definition: P01 = lambda/s (1 - e^-st), P00 = (mu + lambda e^-st)/s, etc.,
 * every entry a sum of non-negative terms. */
typedef struct branch_p {
    dual p[2][2];
} branch_p;

static void transition(dual lam, dual mu, dual t, branch_p *out) {
    dual s = dadd(lam, mu), x = dmul(s, t);
    dual e = dexp((dual){-x.v, -x.d}), em = d_one_minus_exp_neg(x);
    out->p[0][1] = ddiv(dmul(lam, em), s);
    out->p[1][0] = ddiv(dmul(mu, em), s);
    out->p[0][0] = ddiv(dadd(mu, dmul(lam, e)), s);
    out->p[1][1] = ddiv(dadd(lam, dmul(mu, e)), s);
}

static void root_prior(const oracle_model *m, dual lam, dual mu, dual pi[2]) {
    switch (m->root_prior) {
    case PERSISTE_ROOT_STATIONARY: {
        dual s = dadd(lam, mu);
        pi[1] = ddiv(lam, s);
        pi[0] = ddiv(mu, s);
        break;
    }
    case PERSISTE_ROOT_FIXED:
        pi[1] = dc(m->root_freq);
        pi[0] = dc(1.0L - (long double)m->root_freq);
        break;
    default:
        pi[1] = dc(0);
        pi[0] = dc(1);
    }
}

/* Running masses of a set of tips, fed one tip at a time with
 * (p0, p1) = P(parent state -> 0 / 1): products, and the complements
 * 1 - prod p0 = sum_c p1_c prod_{c'<c} p0_c' (likewise 1 - prod p1),
 * telescoped so that every term is non-negative (no cancellation); the same
 * over the tips after the first, for P(neither all 0 nor all 1). */
typedef struct tipset {
    int n;
    dual all0, all1, sum, not0, not1;
    dual first0, first1, rest0, rest1, rest_not0, rest_not1;
} tipset;

static tipset tipset_empty(void) {
    tipset s = {0};
    s.all0 = s.all1 = s.sum = s.rest0 = s.rest1 = dc(1);
    return s;
}

static void tipset_add(tipset *s, dual p0, dual p1) {
    if (s->n == 0) {
        s->first0 = p0;
        s->first1 = p1;
    } else {
        s->rest_not0 = dadd(s->rest_not0, dmul(p1, s->rest0));
        s->rest_not1 = dadd(s->rest_not1, dmul(p0, s->rest1));
        s->rest0 = dmul(s->rest0, p0);
        s->rest1 = dmul(s->rest1, p1);
    }
    s->not0 = dadd(s->not0, dmul(p1, s->all0));
    s->not1 = dadd(s->not1, dmul(p0, s->all1));
    s->all0 = dmul(s->all0, p0);
    s->all1 = dmul(s->all1, p1);
    s->sum = dmul(s->sum, dadd(p0, p1));
    s->n++;
}

/* P(neither all 0 nor all 1): split on the first tip's state. */
static dual tipset_variable(const tipset *s) {
    if (s->n < 2)
        return dc(0);
    return dadd(dmul(s->first0, s->rest_not0), dmul(s->first1, s->rest_not1));
}

enum { M_LIK, M_ABSENT, M_NOT_ABSENT, M_PRESENT, M_VARIABLE, N_MASSES };

/* Masses of the tips given their parents' states, summed over the tips'
 * true states: the observed pattern, and the constant patterns over the known
 * tips with their complements. */
static void tip_masses(int n_tips, const branch_p *const *pb, const int *pstate,
                       const uint8_t *obs, dual out[N_MASSES]) {
    tipset all = tipset_empty();
    dual lik = dc(1);
    for (int c = 0; c < n_tips; c++) {
        const dual *row = pb[c]->p[pstate[c]];
        /* conditioning on the family's known cells: an unknown tip
         * constrains nothing (its factor p0 + p1 is 1) */
        if (obs[c] != PERSISTE_UNKNOWN)
            tipset_add(&all, row[0], row[1]);
        lik = dmul(lik, obs[c] == PERSISTE_ABSENT    ? row[0]
                        : obs[c] == PERSISTE_PRESENT ? row[1]
                                                     : dadd(row[0], row[1]));
    }
    out[M_LIK] = lik;
    out[M_ABSENT] = all.all0;
    out[M_NOT_ABSENT] = all.not0;
    out[M_PRESENT] = all.all1;
    out[M_VARIABLE] = tipset_variable(&all);
}

static long double *mass_field(oracle_masses *x, int k) {
    long double *f[N_MASSES] = {&x->lik, &x->all_absent, &x->not_absent,
                                &x->all_present, &x->variable};
    return f[k];
}

void oracle_brute_masses(const oracle_tree *t, const oracle_model *m,
                         const uint8_t *obs, double log_gain, double log_loss,
                         int wrt, oracle_masses *value,
                         oracle_masses *tangent) {
    int32_t n = t->n_nodes, root = find_root(t);
    uint8_t *internal = internal_flags(t);
    int *bit = xmalloc(sizeof *bit * (size_t)n);
    int32_t *inner = xmalloc(sizeof *inner * (size_t)n);
    int32_t *tips = xmalloc(sizeof *tips * (size_t)n);
    branch_p *p = xmalloc(sizeof *p * (size_t)n);
    const branch_p **tip_p = xmalloc(sizeof *tip_p * (size_t)n);
    int *tip_pstate = xmalloc(sizeof *tip_pstate * (size_t)n);
    uint8_t *tip_obs = xmalloc((size_t)n);
    int n_inner = 0, n_tips = 0;

    long double lam = expl((long double)log_gain),
                mu = expl((long double)log_loss);
    dual dlam = {lam, wrt == ORACLE_D_LOG_GAIN ? lam : 0};
    dual dmu = {mu, wrt == ORACLE_D_LOG_LOSS ? mu : 0};
    for (int32_t i = 0; i < n; i++) {
        if (internal[i]) {
            bit[i] = n_inner;
            inner[n_inner++] = i;
        } else {
            tip_obs[n_tips] = obs[i];
            tip_p[n_tips] = &p[i];
            tips[n_tips++] = i;
        }
        if (i != root)
            transition(dlam, dmu, (dual){t->length[i], wrt == i ? 1 : 0},
                       &p[i]);
    }
    dual pi[2];
    root_prior(m, dlam, dmu, pi);

    memset(value, 0, sizeof *value);
    memset(tangent, 0, sizeof *tangent);
    for (uint64_t mask = 0; mask < (1ull << n_inner); mask++) {
#define STATE(node) ((int)((mask >> bit[node]) & 1u))
        dual w = pi[STATE(root)];
        for (int j = 0; j < n_inner; j++)
            if (inner[j] != root)
                w = dmul(
                    w,
                    p[inner[j]].p[STATE(t->parent[inner[j]])][STATE(inner[j])]);
        for (int c = 0; c < n_tips; c++)
            tip_pstate[c] = STATE(t->parent[tips[c]]);
#undef STATE
        dual tm[N_MASSES];
        tip_masses(n_tips, tip_p, tip_pstate, tip_obs, tm);
        for (int k = 0; k < N_MASSES; k++) {
            dual x = dmul(w, tm[k]);
            *mass_field(value, k) += x.v;
            *mass_field(tangent, k) += x.d;
        }
    }
    free(internal);
    free(bit);
    free(inner);
    free(tips);
    free(p);
    free(tip_p);
    free(tip_pstate);
    free(tip_obs);
}

/* Numerator and normaliser of the conditioned likelihood. */
static void ratio_of(int condition, const oracle_masses *x, long double *num,
                     long double *norm) {
    *num = x->lik;
    *norm = condition == PERSISTE_CONDITION_PRESENT    ? x->not_absent
            : condition == PERSISTE_CONDITION_VARIABLE ? x->variable
                                                       : 1.0L;
}

long double oracle_masses_loglik(int condition, const oracle_masses *v,
                                 const oracle_masses *d, long double *dll) {
    long double num, norm, dnum, dnorm;
    ratio_of(condition, v, &num, &norm);
    if (dll)
        *dll = 0;
    /* outside the conditioning event, or an event that cannot happen
     * (e.g. VARIABLE with one known cell): impossible */
    if (num == 0 || norm == 0)
        return -INFINITY;
    if (d && dll) {
        ratio_of(condition, d, &dnum, &dnorm);
        *dll = dnum / num -
               (condition == PERSISTE_CONDITION_NONE ? 0 : dnorm / norm);
    }
    return logl(num) - logl(norm);
}

long double oracle_brute_loglik(const oracle_tree *t, const oracle_model *m,
                                const uint8_t *obs, double log_gain,
                                double log_loss) {
    oracle_masses v, d;
    oracle_brute_masses(t, m, obs, log_gain, log_loss, ORACLE_D_NONE, &v, &d);
    return oracle_masses_loglik(m->condition, &v, NULL, NULL);
}

long double oracle_brute_dloglik(const oracle_tree *t, const oracle_model *m,
                                 const uint8_t *obs, double log_gain,
                                 double log_loss, int wrt) {
    oracle_masses v, d;
    long double dll;
    oracle_brute_masses(t, m, obs, log_gain, log_loss, wrt, &v, &d);
    oracle_masses_loglik(m->condition, &v, &d, &dll);
    return dll;
}

/* ---- Log-space pruning --------------------------------------------------- */
static long double lse(long double a, long double b) {
    long double hi = a > b ? a : b, lo = a > b ? b : a;
    if (hi == -INFINITY)
        return -INFINITY;
    return hi + log1pl(expl(lo - hi));
}

/* Children-before-parents order by peeling tips (Kahn), without recursion
 * and without assuming any numbering. */
static int32_t *peel_order(const oracle_tree *t) {
    int32_t n = t->n_nodes, head = 0, tail = 0;
    int32_t *pending = calloc((size_t)n, sizeof *pending);
    int32_t *order = xmalloc(sizeof *order * (size_t)n);
    if (!pending)
        exit(2);
    for (int32_t i = 0; i < n; i++)
        if (t->parent[i] >= 0)
            pending[t->parent[i]]++;
    for (int32_t i = 0; i < n; i++)
        if (pending[i] == 0)
            order[tail++] = i;
    while (head < tail) {
        int32_t par = t->parent[order[head++]];
        if (par >= 0 && --pending[par] == 0)
            order[tail++] = par;
    }
    free(pending);
    return order;
}

/* log P(tips | root prior) with tip observations obs, or every tip `fixed`
 * (0 or 1) when fixed >= 0. */
static long double logspace_pass(const oracle_tree *t, const int32_t *order,
                                 const long double (*logp)[2][2],
                                 const long double logpi[2],
                                 const uint8_t *internal, const uint8_t *obs,
                                 int fixed, long double (*lp)[2]) {
    int32_t n = t->n_nodes;
    for (int32_t i = 0; i < n; i++) {
        int s = internal[i]                              ? PERSISTE_UNKNOWN
                : fixed >= 0 && obs[i] != PERSISTE_UNKNOWN ? fixed
                                                           : obs[i];
        lp[i][0] = s != PERSISTE_PRESENT ? 0 : -INFINITY;
        lp[i][1] = s != PERSISTE_ABSENT ? 0 : -INFINITY;
    }
    for (int32_t k = 0; k < n - 1; k++) {
        int32_t v = order[k], par = t->parent[v];
        for (int a = 0; a < 2; a++)
            lp[par][a] +=
                lse(logp[v][a][0] + lp[v][0], logp[v][a][1] + lp[v][1]);
    }
    int32_t root = order[n - 1];
    return lse(logpi[0] + lp[root][0], logpi[1] + lp[root][1]);
}

void oracle_logspace_conds(const oracle_tree *t, const oracle_model *m,
                           const uint8_t *obs, double log_gain, double log_loss,
                           long double out[3]) {
    int32_t n = t->n_nodes;
    int32_t *order = peel_order(t);
    uint8_t *internal = internal_flags(t);
    long double(*logp)[2][2] = xmalloc(sizeof *logp * (size_t)n);
    long double(*lp)[2] = xmalloc(sizeof *lp * (size_t)n);
    long double lam = expl((long double)log_gain),
                mu = expl((long double)log_loss), s = lam + mu, logs = logl(s);
    for (int32_t i = 0; i < n; i++) {
        long double x = s * (long double)t->length[i];
        long double e = expl(-x), em = -expm1l(-x);
        logp[i][0][0] = logl(mu + lam * e) - logs;
        logp[i][0][1] = logl(lam * em) - logs;
        logp[i][1][0] = logl(mu * em) - logs;
        logp[i][1][1] = logl(lam + mu * e) - logs;
    }
    long double logpi[2];
    if (m->root_prior == PERSISTE_ROOT_STATIONARY) {
        logpi[0] = logl(mu) - logs;
        logpi[1] = logl(lam) - logs;
    } else if (m->root_prior == PERSISTE_ROOT_FIXED) {
        logpi[0] = logl(1.0L - (long double)m->root_freq);
        logpi[1] = logl((long double)m->root_freq);
    } else {
        logpi[0] = 0;
        logpi[1] = -INFINITY;
    }
    const long double(*cp)[2][2] = (const long double(*)[2][2])logp;
    long double ll = logspace_pass(t, order, cp, logpi, internal, obs, -1, lp);
    long double la = logspace_pass(t, order, cp, logpi, internal, obs, 0, lp);
    long double lpres =
        logspace_pass(t, order, cp, logpi, internal, obs, 1, lp);
    out[PERSISTE_CONDITION_NONE] = ll;
    out[PERSISTE_CONDITION_PRESENT] = ll - logl(-expm1l(la));
    out[PERSISTE_CONDITION_VARIABLE] = ll - logl(-expm1l(la) - expl(lpres));
    free(order);
    free(internal);
    free(logp);
    free(lp);
}

long double oracle_logspace_loglik(const oracle_tree *t, const oracle_model *m,
                                   const uint8_t *obs, double log_gain,
                                   double log_loss) {
    long double out[3];
    oracle_logspace_conds(t, m, obs, log_gain, log_loss, out);
    return out[m->condition];
}

/* ---- Library plumbing ---------------------------------------------------- */
persiste_ctx *oracle_ctx(int n_threads) {
    persiste_ctx *ctx = NULL;
    if (persiste_ctx_create(&ctx) != PERSISTE_OK)
        return NULL;
    if (persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, n_threads) !=
        PERSISTE_OK) {
        persiste_ctx_destroy(ctx);
        return NULL;
    }
    return ctx;
}

persiste_model *oracle_lib_model(const oracle_model *m, double min_length) {
    persiste_model *model = NULL;
    if (persiste_model_create(&model) != PERSISTE_OK)
        return NULL;
    if (persiste_model_set_int(model, PERSISTE_MODEL_CONDITION, m->condition) !=
            PERSISTE_OK ||
        persiste_model_set_int(model, PERSISTE_MODEL_ROOT_PRIOR,
                               m->root_prior) != PERSISTE_OK ||
        persiste_model_set_double(model, PERSISTE_MODEL_ROOT_FREQ,
                                  m->root_freq) != PERSISTE_OK ||
        persiste_model_set_double(model, PERSISTE_MODEL_MIN_BRANCH_LENGTH,
                                  min_length) != PERSISTE_OK) {
        persiste_model_destroy(model);
        return NULL;
    }
    return model;
}

persiste_tree *oracle_newick(const char *text) {
    persiste_tree *tree = NULL;
    if (persiste_tree_from_newick(&tree, text) != PERSISTE_OK) {
        printf("newick rejected: %s (%s)\n", text, persiste_last_error());
        return NULL;
    }
    return tree;
}

persiste_tree *oracle_random_tree(oracle_rng *rng, int n_tips, double p_multi,
                                  double lo, double hi) {
    int32_t max_nodes = 2 * n_tips;
    int32_t *parent = xmalloc(sizeof *parent * (size_t)max_nodes);
    double *length = xmalloc(sizeof *length * (size_t)max_nodes);
    int32_t *active = xmalloc(sizeof *active * (size_t)max_nodes);
    char **names = calloc((size_t)max_nodes, sizeof *names);
    char *buf = xmalloc((size_t)n_tips * 16);
    int32_t n_active = 0, n = 0;
    if (!names)
        exit(2);
    for (; n < n_tips; n++) {
        snprintf(buf + 16 * n, 16, "t%d", (int)n);
        names[n] = buf + 16 * n;
        active[n_active++] = n;
    }
    while (n_active > 1) {
        int k = n_active >= 3 && oracle_uniform(rng, 0, 1) < p_multi ? 3 : 2;
        for (int j = 0; j < k; j++) {
            int r = oracle_below(rng, n_active);
            parent[active[r]] = n;
            active[r] = active[--n_active];
        }
        active[n_active++] = n++;
    }
    parent[n - 1] = -1;
    for (int32_t i = 0; i < n; i++)
        length[i] = oracle_uniform(rng, lo, hi);
    persiste_tree *tree = NULL;
    if (persiste_tree_from_parents(&tree, n, parent, length,
                                   (const char *const *)names) != PERSISTE_OK)
        tree = NULL;
    free(parent);
    free(length);
    free(active);
    free(names);
    free(buf);
    return tree;
}

persiste_tree *oracle_tree_with_length(const persiste_tree *tree, int32_t node,
                                       double length) {
    oracle_tree t, back = {0};
    oracle_tree_read(tree, &t);
    const char **names = xmalloc(sizeof *names * (size_t)t.n_nodes);
    for (int32_t i = 0; i < t.n_nodes; i++)
        names[i] = persiste_tree_label(tree, i);
    t.length[node] = length;
    persiste_tree *out = NULL;
    if (persiste_tree_from_parents(&out, t.n_nodes, t.parent, t.length,
                                   names) != PERSISTE_OK)
        out = NULL;
    if (out) { /* the numbering must be kept for the branch to mean anything */
        oracle_tree_read(out, &back);
        if (back.n_nodes != t.n_nodes ||
            memcmp(back.parent, t.parent,
                   sizeof *t.parent * (size_t)t.n_nodes) ||
            memcmp(back.length, t.length,
                   sizeof *t.length * (size_t)t.n_nodes)) {
            persiste_tree_destroy(out);
            out = NULL;
        }
        oracle_tree_free(&back);
    }
    oracle_tree_free(&t);
    free(names);
    return out;
}

persiste_data *oracle_data(const persiste_tree *tree, const uint8_t *states,
                           int64_t n_families) {
    int32_t n_tips = persiste_tree_n_tips(tree);
    const char **names = xmalloc(sizeof *names * (size_t)n_tips);
    for (int32_t i = 0; i < n_tips; i++)
        names[i] = persiste_tree_label(tree, i);
    persiste_data *data = NULL;
    if (persiste_data_from_matrix(&data, tree, states, n_families, n_tips,
                                  n_tips, 1, names, NULL, 0) != PERSISTE_OK) {
        printf("data rejected: %s\n", persiste_last_error());
        data = NULL;
    }
    free(names);
    return data;
}

uint8_t *oracle_data_states(const persiste_data *data, int32_t n_tips) {
    int64_t n_fam = persiste_data_n_families(data);
    uint8_t *states = xmalloc((size_t)n_fam * (size_t)n_tips);
    for (int64_t f = 0; f < n_fam; f++)
        if (persiste_data_states(data, f, states + f * n_tips) != PERSISTE_OK) {
            free(states);
            return NULL;
        }
    return states;
}

void oracle_random_states(oracle_rng *rng, uint8_t *states, int64_t n,
                          double p_present, double p_unknown) {
    for (int64_t i = 0; i < n; i++) {
        double u = oracle_uniform(rng, 0, 1);
        states[i] = u < p_unknown               ? PERSISTE_UNKNOWN
                    : u < p_unknown + p_present ? PERSISTE_PRESENT
                                                : PERSISTE_ABSENT;
    }
}

/* ---- Test cases ---------------------------------------------------------- */
const char *const oracle_small_trees[] = {
    "(A:0.3,B:0.7);",
    "((A:0.1,B:0.2):0.3,C:0.4);",
    "((A:0.5,B:0.25):0.1,(C:0.3,D:0.9):0.2):7.5;",
    "(A:0.2,B:0.3,C:0.4,D:0.1);",
    "((A:0.1,B:0.2,C:0.3):0.05,(D:0.4,E:0.5):0.6,F:1.2);",
    "((A:0,B:0.2):0,(C:0.3,D:0):0.1);",
    "((A:50,B:0.2):0.3,(C:50,D:50):1);",
    "((A:1e-9,B:1e-9):1e-9,(C:0.5,D:1e-9):0.2);",
    "(((A:0.2,B:0.3):0.1,(C:0.05,D:2.0):0.4):0.3,((E:0.7,F:0.01):0.2,"
    "(G:0.3,H:0.3,I:0.1):0.5):0.1);",
    "((((((A:0.1,B:0.2):0.3,C:0.4):0.1,D:0.5):0.2,E:0.3):0.1,F:0.6):0.2,"
    "G:0.7);",
    "((A:1.5,(B:0.4,C:0.6,D:0.2,E:0.9):0.3):0.8,((F:0.2,G:0):0.4,H:3.0):0.05);",
    "(((A:0.2,B:0.1):0.3,(C:0.2,D:0.4):0.1):0.2,((E:0.3,F:0.2):0.1,"
    "((G:0.1,H:0.5):0.2,(I:0.3,(J:0.2,(K:0.1,(L:0.2,M:0.3):0.1):0.2):0.1):"
    "0.3):0.2):0.1);",
    /* every branch short: the VARIABLE normaliser is itself tiny */
    "((A:1e-7,B:2e-7):1e-7,(C:3e-7,D:1e-7):2e-7);",
    NULL};

const char *const oracle_shape_trees[] = {
    "((((A:0.1):0.2,B:0.3):0.1,C:0.4):0.2,D:0.5);",
    "(((((((A:0.1):0.1):0.1):0.1):0.1,B:0.2):0.3,(C:0.1,D:0.2):0.1):0.1,"
    "E:0.6);",
    "((((((((A:0.1,B:0.2):0.1):0.1):0.1):0.1):0.1,C:0.3):0.2,(D:0.1,E:0.2,"
    "F:0.3):0.1):0.1,((G:0.2):0.3,H:0.1):0.2);",
    "(A:0.1,B:0.2,C:0.3,D:0.1,E:0.2,F:0.3,G:0.1,H:0.2,I:0.3,J:0.4,(K:0.1,"
    "L:0.2,M:0.3,N:0.1,O:0.2,P:0.3,Q:0.1,R:0.2,S:0.3):0.1);",
    NULL};

const double oracle_bitwise_pairs[ORACLE_N_BITWISE_PAIRS][2] = {
    {0.0, 0.0}, {-3.0, 1.0}, {2.0, -4.0},
    {-100.0, 100.0}, {100.0, -100.0}, {-40.0, -60.0}};

void oracle_for_each_tree(uint64_t seed, const int *sizes, size_t n_sizes,
                          void (*fn)(persiste_tree *tr, oracle_rng *rng,
                                     int unknown))
{
    oracle_rng rng = {seed};
    for (size_t i = 0; i < n_sizes; i++) {
        for (int unknown = 0; unknown < 2; unknown++) {
            int wide = oracle_below(&rng, 2); /* lengths up to 50 */
            persiste_tree *tr = oracle_random_tree(&rng, sizes[i], 0.3, 1e-6,
                                                   wide ? 50.0 : 1.0);
            if (!tr) {
                fprintf(stderr, "oracle: random tree: %s\n",
                        persiste_last_error());
                exit(2);
            }
            fn(tr, &rng, unknown);
            persiste_tree_destroy(tr);
        }
    }
    for (int i = 0; oracle_shape_trees[i]; i++) {
        persiste_tree *tr = oracle_newick(oracle_shape_trees[i]);
        if (!tr) {
            fprintf(stderr, "oracle: shape tree %d: %s\n", i,
                    persiste_last_error());
            exit(2);
        }
        fn(tr, &rng, i % 2);
        persiste_tree_destroy(tr);
    }
}

int64_t oracle_first_other_bits(const double *a, const double *b, int64_t n)
{
    for (int64_t f = 0; f < n; f++)
        if (memcmp(&a[f], &b[f], sizeof a[f]))
            return f;
    return -1;
}

bool oracle_bitwise_pair_close(const oracle_tree *t, const oracle_model *m,
                               const uint8_t *states, int64_t n_fam,
                               size_t pair, const double *got)
{
    const double *r = oracle_bitwise_pairs[pair];
    bool ok = true;
    for (int64_t f = 0; pair < 3 && f < n_fam; f += 50) {
        char what[120];
        snprintf(what, sizeof what, "%d tips, pair %zu, family %lld",
                 t->n_tips, pair, (long long)f);
        ok &= oracle_close(got[f],
                           oracle_logspace_loglik(t, m, states + f * t->n_tips,
                                                  r[0], r[1]),
                           1e-9, 1.0, what);
    }
    return ok;
}

persiste_tree *oracle_test_tree(int i, oracle_rng *rng) {
    int n_small = 0;
    while (oracle_small_trees[n_small])
        n_small++;
    if (i < n_small)
        return oracle_newick(oracle_small_trees[i]);
    if (i < n_small + 4)
        return oracle_random_tree(rng, 4 + 2 * (i - n_small), 0.4, 0.001, 2.0);
    return NULL;
}

bool oracle_case_init(oracle_case *c, persiste_tree *tree, oracle_rng *rng,
                      int64_t n_fam, double p_unknown) {
    memset(c, 0, sizeof *c);
    if (!tree)
        return false;
    c->tree = tree;
    oracle_tree_read(tree, &c->t);
    int32_t n_tips = c->t.n_tips;
    c->n_fam = n_fam;
    c->states = xmalloc((size_t)n_fam * (size_t)n_tips);
    c->log_gain = xmalloc(sizeof *c->log_gain * (size_t)n_fam);
    c->log_loss = xmalloc(sizeof *c->log_loss * (size_t)n_fam);
    for (int64_t f = 0; f < n_fam; f++) {
        uint8_t *row = c->states + f * n_tips;
        c->log_gain[f] = oracle_uniform(rng, -5, 3);
        c->log_loss[f] = oracle_uniform(rng, -5, 3);
        if (f < 2)
            memset(row, f == 0 ? PERSISTE_ABSENT : PERSISTE_PRESENT,
                   (size_t)n_tips);
        else
            oracle_random_states(rng, row, n_tips,
                                 oracle_uniform(rng, 0.1, 0.9), p_unknown);
    }
    for (int k = 0; k < 2; k++) {
        c->pairs[k][0] = c->log_gain[k < n_fam ? k : 0];
        c->pairs[k][1] = c->log_loss[k < n_fam ? k : 0];
    }
    c->data = oracle_data(tree, c->states, n_fam);
    return c->t.n_nodes > 0 && c->data != NULL;
}

void oracle_case_free(oracle_case *c) {
    persiste_data_destroy(c->data);
    persiste_tree_destroy(c->tree);
    oracle_tree_free(&c->t);
    free(c->states);
    free(c->log_gain);
    free(c->log_loss);
    memset(c, 0, sizeof *c);
}

const uint8_t *oracle_case_obs(const oracle_case *c, int64_t f) {
    return c->states + f * c->t.n_tips;
}

const int oracle_conditions[3] = {PERSISTE_CONDITION_NONE,
                                  PERSISTE_CONDITION_PRESENT,
                                  PERSISTE_CONDITION_VARIABLE};
const int oracle_priors[3] = {PERSISTE_ROOT_STATIONARY, PERSISTE_ROOT_FIXED,
                              PERSISTE_ROOT_ABSENT};

void oracle_for_each_case(uint64_t seed, int64_t n_fam, double p_unknown,
                          int n_layouts, oracle_case_fn fn) {
    oracle_rng rng = {seed};
    persiste_ctx *ctx = oracle_ctx(1);
    persiste_tree *tree;
    char name[64];
    for (int i = 0; ctx && (tree = oracle_test_tree(i, &rng)) != NULL; i++) {
        oracle_case c;
        if (!oracle_case_init(&c, tree, &rng, n_fam, p_unknown)) {
            printf("cannot set up test tree %d\n", i);
            exit(1);
        }
        for (int k = 0; k < n_layouts; k++) {
            oracle_case_share_rates(&c, k);
            snprintf(name, sizeof name, "tree %d rates %d", i, k);
            fn(ctx, &c, &rng, name);
        }
        oracle_case_free(&c);
    }
    persiste_ctx_destroy(ctx);
}

void oracle_case_share_rates(oracle_case *c, int layout) {
    static const int runs[4][2] = {{0, 0}, {0, 1}, {1, 1}, {1, 0}};
    for (int64_t f = 0; layout != ORACLE_RATES_OWN && f < c->n_fam; f++) {
        int gain = 0, loss = 0;
        if (layout == ORACLE_RATES_TWO)
            gain = loss = (int)(f / 5 % 2);
        else if (layout == ORACLE_RATES_RUNS) {
            int64_t r = f % 56; /* runs of 16, 16, 12, 12 */
            int k = r < 16 ? 0 : r < 32 ? 1 : r < 44 ? 2 : 3;
            gain = runs[k][0];
            loss = runs[k][1];
        }
        c->log_gain[f] = c->pairs[gain][0];
        c->log_loss[f] = c->pairs[loss][1];
    }
}

/* ---- Numerics ------------------------------------------------------------ */
double oracle_fd(double (*f)(double x, void *arg), void *arg, double x,
                 double h) {
    return (-f(x + 2 * h, arg) + 8 * f(x + h, arg) - 8 * f(x - h, arg) +
            f(x - 2 * h, arg)) /
           (12 * h);
}

double oracle_fd_length(double (*f)(double x, void *arg), void *arg, double t,
                        double h) {
    if (t > 2 * h)
        return oracle_fd(f, arg, t, h);
    return (-11 * f(t, arg) + 18 * f(t + h, arg) - 9 * f(t + 2 * h, arg) +
            2 * f(t + 3 * h, arg)) /
           (6 * h);
}

bool oracle_close(double got, long double want, double rel, double floor,
                  const char *what) {
    bool ok;
    if (isnan(got) || isnan(want) || isinf(got) || isinf(want))
        ok = (long double)got == want;
    else {
        long double scale = fabsl(want) > floor ? fabsl(want) : floor;
        ok = fabsl((long double)got - want) <= rel * scale;
    }
    if (!ok)
        printf("MISMATCH %s: got %.17g want %.17Lg (diff %.3Lg)\n", what, got,
               want, (long double)got - want);
    return ok;
}
