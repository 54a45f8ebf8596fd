/* libFuzzer target: the API end to end, from bytes.
 *
 * The input picks a tree (persiste_tree_from_parents: shape, node order,
 * names, lengths), a matrix bound to it (layout and strides, names, states,
 * flags), model options and per-family rates, weights and wanted outputs;
 * numbers come from a table of hostile values (0, -0, subnormal, 1e-300,
 * 700, 710, 1e300, DBL_MAX, Inf, NaN ...) or from a moderate range. Then:
 *  - every call succeeds or fails cleanly (known status, message, outputs
 *    untouched: they are filled with a sentinel first);
 *  - results hold no NaN or +Inf, impossible families (-Inf) are counted
 *    and have zero derivatives, loglik and gradient calls agree (1e-12);
 *  - at one rate pair for all, and at two, blocks and site repeats agree
 *    bitwise;
 *  - with moderate numbers on small trees, values and all derivatives match
 *    the brute-force oracle (tests/oracle.c, independent of lib/). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "kernel.h" /* persiste__classes_mode */
#include "oracle.h"

enum { MAX_NODES = 24, MAX_TAXA = 16, MAX_FAM = 24, ORACLE_INTERNAL = 6 };

typedef struct {
    const uint8_t *p;
    size_t n;
    int moderate; /* every number so far from the moderate range */
} input;

/* A number in [0, bound) from the next byte; 0 once the input is spent. */
static unsigned take(input *in, unsigned bound)
{
    if (in->n == 0 || bound <= 1)
        return 0;
    in->n--;
    return *in->p++ % bound;
}

static const double hostile[] = {
    0.0,   -0.0,     1.0,   -1.0,   4.9406564584124654e-324, DBL_MIN,
    1e-300, 1e-12,   1e-6,  30.0,   -30.0,  700.0,  709.8,  710.0,
    -745.0, -750.0,  1e300, DBL_MAX, -DBL_MAX, INFINITY, -INFINITY, NAN};
enum { N_HOSTILE = sizeof hostile / sizeof *hostile };

/* KNOWN ISSUES of lib/eval/kernel.c (reported to its owner; drop these when
 * fixed): log rates beyond about +-300, and branch lengths below about
 * 1e-300 or near DBL_MAX, give NaN or wrong values instead of results or
 * PERSISTE_E_DOMAIN; families made impossible by P(observable) = 0
 * (zero-length branches or a one-node tree, with the root absent or
 * conditioning on variable families) get NaN derivatives instead of 0,
 * and make d_branch NaN. Meanwhile log rates are cut to +-30, nonzero
 * lengths to [1e-12, 1e6] and root frequencies to [1e-12, 1] (NaN and Inf
 * pass), and derivatives are not checked when a family is impossible.
 * Build with -DFUZZ_STRICT to check everything. */
#ifdef FUZZ_STRICT
enum { STRICT = 1 };
#else
enum { STRICT = 0 };
#endif

static double tame(double x, double lo, double hi)
{
    double a = fabs(x);
    if (STRICT || !isfinite(x) || a == 0)
        return x;
    return copysign(a < lo ? lo : a > hi ? hi : a, x);
}

/* Byte b: hostile[b] for the first few values, else lo + (b - N) * step. */
static double take_number(input *in, double lo, double step)
{
    unsigned b = take(in, 256);
    if (b < N_HOSTILE) {
        in->moderate = 0;
        return hostile[b];
    }
    return lo + (b - N_HOSTILE) * step;
}
/* A hostile number, tamed to [lo, hi] in magnitude (see KNOWN ISSUES). */
static double take_hostile(input *in, double lo, double hi)
{
    in->moderate = 0;
    return tame(hostile[take(in, N_HOSTILE)], lo, hi);
}
#define TAKE_LENGTH(in) tame(take_number(in, 0.0, 0.02), 1e-12, 1e6)
#define TAKE_LOG_RATE(in) tame(take_number(in, -5.0, 1.0 / 32), 0, 30)

static const char *const odd_names[] = {NULL, "", "n0", "\t", "'q\"",
                                        "\xff\xfe", "a b", "x,y"};

typedef struct {
    int32_t n;
    int32_t parent[MAX_NODES];
    double length[MAX_NODES];
    char buf[MAX_NODES][8];
    const char *name[MAX_NODES];
} tree_spec;

/* Node k (before shuffling) has a parent above it, so the shape is a tree
 * unless the input corrupts it on purpose. */
static void take_tree(input *in, tree_spec *s)
{
    int32_t n = s->n = 1 + (int32_t)take(in, MAX_NODES), perm[MAX_NODES];
    for (int32_t i = 0; i < n; i++)
        perm[i] = i;
    for (int32_t i = n - 1; i > 0; i--) {
        int32_t j = (int32_t)take(in, (unsigned)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int32_t k = 0; k < n; k++) {
        int32_t up = k == n - 1 ? -1 : k + 1 + (int32_t)take(in, (unsigned)(n - 1 - k));
        s->parent[perm[k]] = up < 0 ? -1 : perm[up];
    }
    if (take(in, 16) == 0) { /* a cycle, two roots or a parent out of range */
        s->parent[take(in, (unsigned)n)] = (int32_t)take(in, (unsigned)n + 3) - 2;
        in->moderate = 0;
    }
    for (int32_t i = 0; i < n; i++) {
        s->length[i] = TAKE_LENGTH(in);
        snprintf(s->buf[i], sizeof s->buf[i], "n%d", i);
        unsigned odd = take(in, 64);
        s->name[i] = odd < sizeof odd_names / sizeof *odd_names ? odd_names[odd]
                                                                : s->buf[i];
    }
}

typedef struct {
    int64_t n_fam, n_taxa, fs, ts;
    uint8_t *base, *states; /* states = base + offset for negative strides */
    const char *taxon[MAX_TAXA + 2];
    char tbuf[MAX_TAXA + 2][8];
    const char *family[MAX_FAM];
    char fbuf[MAX_FAM][8];
    int with_family_names;
    uint32_t flags;
} data_spec;

static void take_data(input *in, const persiste_tree *tree, data_spec *d)
{
    int32_t n_tips = persiste_tree_n_tips(tree);
    d->n_taxa = n_tips > MAX_TAXA ? MAX_TAXA : n_tips;
    d->n_taxa += (int64_t)take(in, 4) - 1; /* a tip missing, or extra taxa */
    if (d->n_taxa < 1)
        d->n_taxa = 1;
    d->n_fam = 1 + take(in, MAX_FAM);
    for (int64_t t = 0; t < d->n_taxa; t++) {
        snprintf(d->tbuf[t], sizeof d->tbuf[t], "x%d", (int)t);
        d->taxon[t] = t < n_tips ? persiste_tree_label(tree, (int32_t)t)
                                 : d->tbuf[t];
    }
    for (int64_t t = d->n_taxa - 1; t > 0; t--) {
        int64_t j = take(in, (unsigned)t + 1);
        const char *x = d->taxon[t];
        d->taxon[t] = d->taxon[j];
        d->taxon[j] = x;
    }
    if (take(in, 16) == 0) /* a duplicate or a stranger */
        d->taxon[take(in, (unsigned)d->n_taxa)] =
            take(in, 2) ? d->taxon[0] : "stranger";
    for (int64_t f = 0; f < d->n_fam; f++) {
        snprintf(d->fbuf[f], sizeof d->fbuf[f], "f%d", (int)f);
        d->family[f] = d->fbuf[f];
    }
    d->with_family_names = take(in, 2);
    d->flags = take(in, 32);
    size_t cells = (size_t)(d->n_fam * d->n_taxa);
    d->base = malloc(4 * cells + 1);
    FUZZ_CHECK(d->base != NULL, "test out of memory");
    memset(d->base, 0xee, 4 * cells + 1); /* never read: 0xee is no state */
    int64_t nf = d->n_fam, nt = d->n_taxa, offset = 0;
    switch (take(in, 4)) {
    case 0: d->fs = nt, d->ts = 1; break;           /* row-major */
    case 1: d->fs = 1, d->ts = nf; break;           /* column-major */
    case 2: d->fs = 2 * nt + 1, d->ts = 2; break;   /* a strided view */
    default:                                         /* reversed */
        d->fs = -nt, d->ts = -1, offset = nf * nt - 1;
    }
    d->states = d->base + offset;
    for (int64_t f = 0; f < nf; f++)
        for (int64_t t = 0; t < nt; t++) {
            unsigned s = take(in, 32);
            d->states[f * d->fs + t * d->ts] =
                (uint8_t)(s < 14 ? 0 : s < 28 ? 1 : s < 31 ? 2 : 3 + take(in, 250));
        }
}

/* Setters either take the value or fail cleanly leaving the model as it was. */
static void take_model(input *in, persiste_model *m, double *min_length)
{
    int rc;
    int64_t before, after;
    int iparam = 1 + (int)take(in, 2);
    int64_t value = (int64_t)take(in, 4) - (take(in, 16) == 0);
    persiste_model_get_int(m, iparam, &before);
    if ((rc = persiste_model_set_int(m, iparam, value)) != PERSISTE_OK) {
        fuzz_check_failure(rc, NULL, NULL);
        persiste_model_get_int(m, iparam, &after);
        FUZZ_CHECK(before == after, "model changed by a failed setter");
        in->moderate = 0;
    }
    double x = take(in, 2) ? take_hostile(in, 1e-12, 1) : take(in, 11) / 10.0;
    if ((rc = persiste_model_set_double(m, PERSISTE_MODEL_ROOT_FREQ, x)))
        fuzz_check_failure(rc, NULL, NULL);
    x = take(in, 2) ? take_hostile(in, 1e-12, 1e6) : take(in, 8) / 16.0;
    if ((rc = persiste_model_set_double(m, PERSISTE_MODEL_MIN_BRANCH_LENGTH, x)))
        fuzz_check_failure(rc, NULL, NULL);
    if (persiste_model_set_int(m, 99, 0) != PERSISTE_E_INVALID ||
        persiste_model_set_double(m, PERSISTE_MODEL_CONDITION, 0.5) !=
            PERSISTE_E_INVALID)
        FUZZ_CHECK(0, "unknown or mistyped parameter accepted");
    persiste_model_get_double(m, PERSISTE_MODEL_MIN_BRANCH_LENGTH, min_length);
    if (!(*min_length <= 4.7))
        in->moderate = 0;
}

static const double SENTINEL = -12345.678;

static double *outputs(size_t n)
{
    double *x = malloc(n * sizeof *x);
    FUZZ_CHECK(x != NULL, "test out of memory");
    for (size_t i = 0; i < n; i++)
        x[i] = SENTINEL;
    return x;
}

static void check_untouched(const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(x[i] == SENTINEL, "output %zu written on failure", i);
}

typedef struct {
    persiste_ctx *ctx;
    const persiste_model *model;
    const persiste_tree *tree;
    const persiste_data *data;
    int64_t n;
    int32_t n_nodes;
    double *lg, *ll, *w, *lnl, *lnl2, *dg, *dl, *db; /* dg, dl, db: NULL? */
    double min_length;
} eval;

/* The brute-force oracle on the same tree (lengths clamped as the model
 * says), family by family, to 1e-9 in values and 1e-7 in derivatives. */
static void compare_with_oracle(const eval *e)
{
    int64_t i_model[2];
    oracle_model om;
    persiste_model_get_int(e->model, PERSISTE_MODEL_CONDITION, &i_model[0]);
    persiste_model_get_int(e->model, PERSISTE_MODEL_ROOT_PRIOR, &i_model[1]);
    persiste_model_get_double(e->model, PERSISTE_MODEL_ROOT_FREQ, &om.root_freq);
    om.condition = (int)i_model[0];
    om.root_prior = (int)i_model[1];
    oracle_tree t;
    oracle_tree_read(e->tree, &t);
    double *raw = malloc((size_t)t.n_nodes * sizeof *raw);
    uint8_t *obs = calloc((size_t)t.n_nodes, 1);
    double *db = calloc((size_t)t.n_nodes, sizeof *db);
    FUZZ_CHECK(raw && obs && db, "test out of memory");
    memcpy(raw, t.length, (size_t)t.n_nodes * sizeof *raw);
    oracle_tree_clamp(&t, e->min_length);
    int skip_branch = 0;
    for (int64_t f = 0; f < e->n; f++) {
        persiste_data_states(e->data, f, obs); /* tips come first */
        oracle_masses v, d;
        long double dll;
        for (int wrt = ORACLE_D_LOG_LOSS; wrt < t.n_nodes - 1; wrt++) {
            oracle_brute_masses(&t, &om, obs, e->lg[f], e->ll[f], wrt, &v, &d);
            long double ll = oracle_masses_loglik(om.condition, &v, &d, &dll);
            char what[64];
            snprintf(what, sizeof what, "family %lld, wrt %d", (long long)f, wrt);
            if (isnan(ll) || ll == INFINITY) { /* P(observable) = 0 */
                skip_branch = 1; /* the conditioning is undefined */
                break;
            }
            if (wrt == ORACLE_D_LOG_LOSS) {
                FUZZ_CHECK(oracle_close(e->lnl[f], ll, 1e-9, 1, what), "value");
                if (!STRICT && ll == -INFINITY) {
                    skip_branch = 1; /* derivatives: see KNOWN ISSUES */
                    break;
                }
                if (e->dl)
                    FUZZ_CHECK(oracle_close(e->dl[f], dll, 1e-7, 1, what), "dl");
            } else if (wrt == ORACLE_D_LOG_GAIN) {
                if (e->dg)
                    FUZZ_CHECK(oracle_close(e->dg[f], dll, 1e-7, 1, what), "dg");
            } else if (raw[wrt] >= e->min_length) {
                db[wrt] += (e->w ? e->w[f] : 1.0) * (double)dll;
            }
        }
    }
    for (int32_t v = 0; e->db && !skip_branch && v < t.n_nodes; v++) {
        char what[64];
        snprintf(what, sizeof what, "branch %d", v);
        FUZZ_CHECK(oracle_close(e->db[v], db[v], 1e-7, e->n, what), "d_branch");
    }
    free(raw);
    free(obs);
    free(db);
    oracle_tree_free(&t);
}

/* Family f at family (f % k)'s rates, in blocks and then on site repeats
 * (lib/eval/classes.c, built whatever they save; once per pair): the same
 * status, and the same bits, as the two are designed to give. */
static void compare_pairs(eval *e, size_t k)
{
    size_t n = (size_t)e->n;
    double *lg = malloc(n * sizeof *lg), *ll = malloc(n * sizeof *ll);
    double *blocks = malloc(n * sizeof *blocks);
    double *classes = malloc(n * sizeof *classes);
    FUZZ_CHECK(lg && ll && blocks && classes, "out of memory");
    for (size_t f = 0; f < n; f++) {
        lg[f] = e->lg[f % k];
        ll[f] = e->ll[f % k];
    }
    persiste__classes_mode(-1);
    int rc0 = persiste_loglik_batch(e->ctx, e->model, e->tree, e->data, e->n,
                                    lg, ll, blocks);
    int64_t impossible = persiste_ctx_n_impossible(e->ctx);
    persiste__classes_mode(1);
    int rc1 = persiste_loglik_batch(e->ctx, e->model, e->tree, e->data, e->n,
                                    lg, ll, classes);
    persiste__classes_mode(0);
    FUZZ_CHECK(rc0 == rc1, "%zu pairs: status %d in blocks, %d on classes",
               k, rc0, rc1);
    for (size_t f = 0; rc0 == PERSISTE_OK && f < n; f++)
        FUZZ_CHECK(!memcmp(&blocks[f], &classes[f], sizeof blocks[f]),
                   "%zu pairs, family %zu: %.17g in blocks, %.17g on classes",
                   k, f, blocks[f], classes[f]);
    FUZZ_CHECK(rc0 != PERSISTE_OK ||
                   impossible == persiste_ctx_n_impossible(e->ctx),
               "%zu pairs: %lld impossible in blocks, %lld on classes", k,
               (long long)impossible,
               (long long)persiste_ctx_n_impossible(e->ctx));
    free(lg);
    free(ll);
    free(blocks);
    free(classes);
}

static void evaluate(eval *e, int moderate)
{
    size_t n = (size_t)e->n, nb = (size_t)e->n_nodes;
    int rc0 = persiste_loglik_batch(e->ctx, e->model, e->tree, e->data,
                                    e->n + 1, e->lg, e->ll, e->lnl);
    FUZZ_CHECK(rc0 == PERSISTE_E_INVALID, "n_families + 1: status %d", rc0);
    check_untouched(e->lnl, n);
    int rc1 = persiste_loglik_batch(e->ctx, e->model, e->tree, e->data, e->n,
                                    e->lg, e->ll, e->lnl);
    if (rc1 != PERSISTE_OK) {
        fuzz_check_failure(rc1, NULL, NULL);
        check_untouched(e->lnl, n);
    }
    int rc2 = persiste_gradient_batch(e->ctx, e->model, e->tree, e->data,
                                      e->n, e->lg, e->ll, e->w, e->lnl2, e->dg,
                                      e->dl, e->db);
    if (rc2 != PERSISTE_OK) {
        fuzz_check_failure(rc2, NULL, NULL);
        check_untouched(e->lnl2, n);
        if (e->dg)
            check_untouched(e->dg, n);
        if (e->dl)
            check_untouched(e->dl, n);
        if (e->db)
            check_untouched(e->db, nb);
        return;
    }
    int64_t impossible = 0;
    for (size_t f = 0; f < n; f++) {
        double x = e->lnl2[f];
        FUZZ_CHECK(!isnan(x) && x != INFINITY, "loglik[%zu] = %g", f, x);
        /* The two calls may run different kernels (rounding differs). */
        FUZZ_CHECK(rc1 != PERSISTE_OK || x == e->lnl[f] ||
                       fabs(x - e->lnl[f]) <= 1e-12 * fmax(1, fabs(x)),
                   "family %zu: loglik %.17g, gradient call %.17g", f,
                   e->lnl[f], x);
        impossible += x == -INFINITY;
        double dg = e->dg ? e->dg[f] : 0, dl = e->dl ? e->dl[f] : 0;
        if (!STRICT && x == -INFINITY && isnan(dg + dl))
            dg = dl = 0;
        FUZZ_CHECK(isfinite(dg) && isfinite(dl), "family %zu: d %g %g", f,
                   dg, dl);
        FUZZ_CHECK(x > -INFINITY || (dg == 0 && dl == 0),
                   "impossible family %zu has derivatives %g %g", f, dg, dl);
    }
    FUZZ_CHECK(impossible == persiste_ctx_n_impossible(e->ctx),
               "%lld impossible, ctx says %lld", (long long)impossible,
               (long long)persiste_ctx_n_impossible(e->ctx));
    for (size_t v = 0; e->db && (STRICT || !impossible) && v < nb; v++)
        FUZZ_CHECK(isfinite(e->db[v]) && (v + 1 < nb || e->db[v] == 0),
                   "d_branch[%zu] = %g", v, e->db[v]);
    for (size_t k = 1; k <= 2 && k <= (size_t)e->n; k++)
        compare_pairs(e, k);
    int32_t n_internal = e->n_nodes - persiste_tree_n_tips(e->tree);
    /* The oracle needs a root with children. */
    if (moderate && n_internal >= 1 && n_internal <= ORACLE_INTERNAL)
        compare_with_oracle(e);
}

/* FUZZ_DUMP=1 in the environment: print the case (for bug reports). */
static void dump(const eval *e)
{
    if (!getenv("FUZZ_DUMP"))
        return;
    int64_t c, r;
    double f, m;
    persiste_model_get_int(e->model, PERSISTE_MODEL_CONDITION, &c);
    persiste_model_get_int(e->model, PERSISTE_MODEL_ROOT_PRIOR, &r);
    persiste_model_get_double(e->model, PERSISTE_MODEL_ROOT_FREQ, &f);
    persiste_model_get_double(e->model, PERSISTE_MODEL_MIN_BRANCH_LENGTH, &m);
    fprintf(stderr, "model: condition %lld, root prior %lld, root freq %.17g, "
            "min length %.17g\ntree (node: parent length label):\n",
            (long long)c, (long long)r, f, m);
    oracle_tree t;
    oracle_tree_read(e->tree, &t);
    for (int32_t v = 0; v < t.n_nodes; v++)
        fprintf(stderr, "  %d: %d %.17g '%s'\n", v, t.parent[v], t.length[v],
                persiste_tree_label(e->tree, v));
    oracle_tree_free(&t);
    uint8_t obs[MAX_NODES];
    for (int64_t k = 0; k < e->n; k++) {
        persiste_data_states(e->data, k, obs);
        fprintf(stderr, "family %lld: log gain %.17g, log loss %.17g, weight "
                "%.17g, states ", (long long)k, e->lg[k], e->ll[k],
                e->w ? e->w[k] : 1.0);
        for (int32_t v = 0; v < persiste_tree_n_tips(e->tree); v++)
            fprintf(stderr, "%d", obs[v]);
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "outputs: d_log_gain %s, d_log_loss %s, d_branch %s\n",
            e->dg ? "yes" : "NULL", e->dl ? "yes" : "NULL",
            e->db ? "yes" : "NULL");
}

static persiste_ctx *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size)
{
    if (!ctx)
        FUZZ_CHECK(persiste_ctx_create(&ctx) == PERSISTE_OK, "ctx");
    input in = {bytes, size, 1};
    tree_spec ts;
    take_tree(&in, &ts);
    persiste_tree *sentinel = (persiste_tree *)&ts, *tree = sentinel;
    int rc = persiste_tree_from_parents(&tree, ts.n, ts.parent, ts.length,
                                        ts.name);
    if (rc != PERSISTE_OK) {
        fuzz_check_failure(rc, tree, sentinel);
        return 0;
    }
    fuzz_check_tree(tree);
    data_spec ds;
    take_data(&in, tree, &ds);
    persiste_data *data = (persiste_data *)&ds;
    rc = persiste_data_from_matrix(&data, tree, ds.states, ds.n_fam, ds.n_taxa,
                                   ds.fs, ds.ts, ds.taxon,
                                   ds.with_family_names ? ds.family : NULL,
                                   ds.flags);
    free(ds.base);
    if (rc != PERSISTE_OK) {
        fuzz_check_failure(rc, data, &ds);
        persiste_tree_destroy(tree);
        return 0;
    }
    fuzz_check_data(data, tree);
    persiste_model *model = NULL;
    FUZZ_CHECK(persiste_model_create(&model) == PERSISTE_OK, "model");
    eval e = {.ctx = ctx, .model = model, .tree = tree, .data = data,
              .n = persiste_data_n_families(data),
              .n_nodes = persiste_tree_n_nodes(tree)};
    take_model(&in, model, &e.min_length);
    size_t n = (size_t)e.n;
    e.lg = outputs(n);
    e.ll = outputs(n);
    for (size_t f = 0; f < n; f++) {
        e.lg[f] = TAKE_LOG_RATE(&in);
        e.ll[f] = TAKE_LOG_RATE(&in);
    }
    unsigned want = take(&in, 16);
    e.w = want & 1 ? outputs(n) : NULL;
    for (size_t f = 0; e.w && f < n; f++) {
        unsigned b = take(&in, 256);
        e.w[f] = b == 0 ? NAN : b == 1 ? INFINITY : (b - 2) / 16.0 - 2;
    }
    e.lnl = outputs(n);
    e.lnl2 = outputs(n);
    e.dg = want & 2 ? NULL : outputs(n);
    e.dl = want & 4 ? NULL : outputs(n);
    e.db = want & 8 ? NULL : outputs((size_t)e.n_nodes);
    dump(&e);
    evaluate(&e, in.moderate);
    free(e.lg);
    free(e.ll);
    free(e.w);
    free(e.lnl);
    free(e.lnl2);
    free(e.dg);
    free(e.dl);
    free(e.db);
    persiste_model_destroy(model);
    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
    return 0;
}
