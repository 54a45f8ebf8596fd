/* The general path: every model option (observation error, rate
 * categories, lineage multipliers, conditioning on the observed pattern of
 * each family's own known cells, at least k presences), with exact
 * gradients of every parameter by a reverse pass.
 *
 * One pruning serves the likelihood and every conditioning. A node's
 * partial is a vector over (state, label): the probability of the tips
 * below, given the state, with the tips' observations summarised by a label
 * of a small commutative monoid. The likelihood has one label; "at least k
 * presences" counts presences truncated at k (labels 0..k, a + b capped at
 * k); "variable" has labels none known (E), only absences (O), only
 * presences (I), both (M). Children combine by the monoid's convolution,
 * a sum of products of non-negative terms, so P(observable) is computed
 * without cancelling differences however rare the event. The reverse pass
 * of the same algebra gives every derivative.
 *
 * Work is cut into fixed chunks of units (families, or distinct patterns
 * when every family has the same rates), each evaluated by one thread into
 * its own sums, which are added in chunk order: the results do not depend
 * on the thread count. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "general.h"

#define CHUNK_UNITS 64
#define LN2 0.693147180559945309417232121458176568
/* Partials are rescaled by a power of two when their largest entry falls
 * below this (exact, and far from both ends of double range). */
#define RESCALE_BELOW 0x1p-256

enum algebra { ALG_LIK, ALG_COUNT, ALG_VAR };
enum { VAR_E, VAR_O, VAR_I, VAR_M };

/* The monoid's product of labels a and b. */
static inline int op(int alg, int k, int a, int b)
{
    if (alg == ALG_LIK)
        return 0;
    if (alg == ALG_COUNT)
        return a + b < k ? a + b : k;
    if (a == VAR_E)
        return b;
    if (b == VAR_E || a == b)
        return a;
    return VAR_M; /* O with I, or anything with M */
}

/* Transition tables of one branch at one category: the matrix and its
 * derivatives in log gain and log loss of the branch, and in its length. */
enum { T01, T10, T01G, T01L, T10G, T10L, T01T, T10T, NT };

struct ws {
    int K, C;            /* categories; labels of the conditioning */
    int32_t n_nodes, max_children;
    uint64_t key_gain, key_loss; /* rates of the tables (bits) */
    int tables_valid;
    double *tab;         /* [K][n_nodes][NT] */
    double *xl, *ml;     /* likelihood: [K][n_nodes][2] partials, messages */
    int32_t *sl;         /* [K][n_nodes] rescale exponents */
    double *xc, *mc;     /* conditioning: [K][n_nodes][2][C] */
    int32_t *scn;        /* [K][n_nodes] */
    double *g;           /* [n_nodes][2][C] reverse partials */
    double *pre, *suf;   /* [max_children + 1][2][C] sibling products */
    double *h;           /* [2][C] */
    /* conditioning cache: log P(observable) of the last unit's rates and
     * unknown tips, its derivatives, and the weight waiting to be added */
    int cache_valid;
    int64_t cache_unit;
    uint64_t cache_gain, cache_loss;
    double cache_logp, cache_dg, cache_dl;
    double *cache_vec;   /* [n_glob] d log P / d (globals) */
    double pending;
};

struct gen {
    const struct persiste__call *c;
    const persiste_tree *tree;
    const persiste_model *m;
    int alg;             /* of the conditioning (unused under NONE) */
    int k;               /* count truncation */
    int C;
    int K;
    const double *cw, *cg, *cl; /* category weights, multipliers */
    double one;          /* the weight, multiplier 1 without categories */
    int gradient, global;
    /* units: families, or patterns when every family has one pair */
    int64_t n_units;
    const uint64_t *present, *unknown; /* the units' bits, data layout */
    const int64_t *rep;  /* [n_units] a family of each unit (NULL: itself) */
    const double *unit_w;/* [n_units] weights (NULL: weight or 1) */
    double *u_ll, *u_dg, *u_dl; /* unit outputs */
    double *len;         /* [n_nodes] branch lengths used */
    int *clamped;        /* [n_nodes] shorter than the minimum */
    int64_t n_glob;      /* n_nodes + d_model's size */
    int64_t n_chunks, first_chunk;
    double *round_bufs;  /* [round][n_glob] */
    struct ws **ws;
};

static inline int bit(const uint64_t *bits, int32_t n_tips, int64_t u,
                      int32_t t)
{
    return (int)((bits[(u >> 6) * n_tips + t] >> (u & 63)) & 1);
}

/* phi(x) = (1 - e^-x) / x and phi'(x) = (e^-x - phi) / x, by their series
 * where the closed form cancels. */
static void phi2(double x, double *phi, double *dphi)
{
    if (x < 0.1) {
        /* phi = sum (-x)^n / (n+1)!, phi' = sum (-1)^n n x^(n-1) / (n+1)! */
        double p = 0.0, d = 0.0, term = 1.0; /* (-x)^n / (n+1)! */
        for (int n = 0; n < 14; n++) {
            p += term;
            if (n + 1 < 14) /* derivative of the next term */
                d += -(double)(n + 1) * term / (double)(n + 2);
            term *= -x / (double)(n + 2);
        }
        *phi = p;
        *dphi = d;
    } else {
        double e = exp(-x);
        *phi = -expm1(-x) / x;
        *dphi = (e - *phi) / x;
    }
}

/* Every branch's tables at the unit's rates, for each category. */
static void fill_tables(const struct gen *G, struct ws *w, double lg,
                        double ll)
{
    const persiste_tree *tr = G->tree;
    const persiste_model *m = G->m;
    for (int k = 0; k < G->K; k++) {
        double lam = exp(lg) * G->cg[k], mu = exp(ll) * G->cl[k];
        for (int32_t v = 0; v + 1 < tr->n_nodes; v++) {
            double *T = w->tab + ((size_t)k * tr->n_nodes + v) * NT;
            double lb = lam * (m->n_lineage ? m->lin_gain[v] : 1.0);
            double mb = mu * (m->n_lineage ? m->lin_loss[v] : 1.0);
            double t = G->len[v], x = (lb + mb) * t, phi, dphi;
            phi2(x, &phi, &dphi);
            double e = exp(-x);
            T[T01] = lb * t * phi;
            T[T10] = mb * t * phi;
            /* d/dlog lb of lb t phi(x): lb (t phi + lb t^2 phi') */
            T[T01G] = lb * (t * phi + lb * t * t * dphi);
            T[T01L] = mb * lb * t * t * dphi;
            T[T10L] = mb * (t * phi + mb * t * t * dphi);
            T[T10G] = lb * mb * t * t * dphi;
            T[T01T] = G->clamped[v] ? 0.0 : lb * e;
            T[T10T] = G->clamped[v] ? 0.0 : mb * e;
        }
    }
}

/* Root prior of category k at the unit's rates: pi1, and d pi1 / d log
 * gain (= - d pi1 / d log loss). */
static void root_prior(const struct gen *G, int k, double lg, double ll,
                       double *pi1, double *dpi)
{
    const persiste_model *m = G->m;
    if (m->root_prior == PERSISTE_ROOT_STATIONARY) {
        double lam = exp(lg) * G->cg[k], mu = exp(ll) * G->cl[k];
        double s = lam + mu;
        *pi1 = lam / s;
        *dpi = lam / s * (mu / s);
    } else {
        *pi1 = m->root_prior == PERSISTE_ROOT_FIXED ? m->root_freq : 0.0;
        *dpi = 0.0;
    }
}

/* Tip t's vector [2][C] for the algebra: the likelihood sees the observed
 * cell, the conditioning each possible observation of a known cell. */
static void tip_vector(const struct gen *G, int alg, int C, int64_t u,
                       int32_t t, double *x)
{
    int32_t nt = G->tree->n_tips;
    double a, b;
    persiste__model_error(G->m, t, &a, &b);
    for (int i = 0; i < 2 * C; i++)
        x[i] = 0.0;
    if (bit(G->unknown, nt, u, t)) {
        x[0] = x[C] = 1.0; /* label 0 is the identity of every algebra */
        return;
    }
    /* P(observed 0 | absent, present) and P(observed 1 | ...) */
    double o0[2] = {1.0 - b, a}, o1[2] = {b, 1.0 - a};
    if (alg == ALG_LIK) {
        const double *o = bit(G->present, nt, u, t) ? o1 : o0;
        x[0] = o[0];
        x[1] = o[1];
        return;
    }
    int l0 = alg == ALG_VAR ? VAR_O : 0, l1 = alg == ALG_VAR ? VAR_I : 1;
    for (int s = 0; s < 2; s++) {
        x[s * C + l0] += o0[s];
        x[s * C + l1] += o1[s];
    }
}

/* out[c] = sum over op(a, b) = c of x[a] y[b], for one state. */
static void combine(int alg, int k, int C, const double *x, const double *y,
                    double *out)
{
    if (alg == ALG_LIK) {
        out[0] = x[0] * y[0];
        return;
    }
    for (int c = 0; c < C; c++)
        out[c] = 0.0;
    for (int a = 0; a < C; a++) {
        if (x[a] == 0.0)
            continue;
        for (int b = 0; b < C; b++)
            out[op(alg, k, a, b)] += x[a] * y[b];
    }
}

/* dx[a] = sum_b d[op(a, b)] y[b]: the reverse of combine in x. */
static void combine_back(int alg, int k, int C, const double *d,
                         const double *y, double *dx)
{
    if (alg == ALG_LIK) {
        dx[0] = d[0] * y[0];
        return;
    }
    for (int a = 0; a < C; a++) {
        double s = 0.0;
        for (int b = 0; b < C; b++)
            s += d[op(alg, k, a, b)] * y[b];
        dx[a] = s;
    }
}

/* The message of node v to its parent: P_v applied to its partial. */
static void message(const double *T, int C, const double *x, double *msg)
{
    double p01 = T[T01], p10 = T[T10];
    for (int a = 0; a < C; a++) {
        double x0 = x[a], x1 = x[C + a];
        msg[a] = (1.0 - p01) * x0 + p01 * x1;
        msg[C + a] = p10 * x0 + (1.0 - p10) * x1;
    }
}

/* Inside pass of category k for unit u in algebra alg with C labels:
 * partials x, messages msg, rescale exponents sc (all [n_nodes]...).
 * Returns the scaled root value Vt (0 if impossible) and *nscale. */
static double inside(const struct gen *G, struct ws *w, int alg, int C,
                     int k, int64_t u, double pi1, double *x, double *msg,
                     int32_t *sc, int64_t *nscale)
{
    const persiste_tree *tr = G->tree;
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    size_t W = 2 * (size_t)C;
    const double *tab = w->tab + (size_t)k * n * NT;
    int64_t total = 0;
    for (int32_t t = 0; t < nt; t++) {
        tip_vector(G, alg, C, u, t, x + t * W);
        sc[t] = 0;
        if (t + 1 < n)
            message(tab + (size_t)t * NT, C, x + t * W, msg + t * W);
    }
    for (int32_t v = nt; v < n; v++) {
        double *xv = x + v * W;
        int32_t c0 = tr->child_start[v], c1 = tr->child_start[v + 1];
        memcpy(xv, msg + (size_t)tr->children[c0] * W, W * sizeof *xv);
        for (int32_t j = c0 + 1; j < c1; j++) {
            const double *mj = msg + (size_t)tr->children[j] * W;
            double tmp[2 * 64];
            double *o = C <= 64 ? tmp : w->h;
            for (int s = 0; s < 2; s++) {
                combine(alg, G->k, C, xv + s * C, mj + s * C, o + s * C);
            }
            memcpy(xv, o, W * sizeof *xv);
        }
        double mx = 0.0;
        for (size_t i = 0; i < W; i++)
            mx = xv[i] > mx ? xv[i] : mx;
        sc[v] = 0;
        if (mx == 0.0)
            return *nscale = 0, 0.0;
        if (mx < RESCALE_BELOW) {
            int e = ilogb(mx);
            for (size_t i = 0; i < W; i++)
                xv[i] = ldexp(xv[i], -e);
            sc[v] = -e;
            total += -e;
        }
        if (v + 1 < n)
            message(tab + (size_t)v * NT, C, xv, msg + v * W);
    }
    /* accepted labels: the likelihood's one, count k, variable M */
    int acc = alg == ALG_LIK ? 0 : alg == ALG_COUNT ? G->k : VAR_M;
    const double *xr = x + (size_t)(n - 1) * W;
    *nscale = total;
    return (1.0 - pi1) * xr[acc] + pi1 * xr[C + acc];
}

/* Reverse pass of the inside pass just stored for category k: adds
 * gfac * dVt/d(global) to gvec (if not NULL) and returns d Vt / d log
 * gain and d log loss of the category's rates (branches and root). */
static void reverse(const struct gen *G, struct ws *w, int alg, int C, int k,
                    int64_t u, double pi1, double dpi, const double *x,
                    const double *msg, const int32_t *sc, double gfac,
                    double *gvec, double *dg_out, double *dl_out)
{
    const persiste_tree *tr = G->tree;
    const persiste_model *m = G->m;
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    size_t W = 2 * (size_t)C;
    const double *tab = w->tab + (size_t)k * n * NT;
    int acc = alg == ALG_LIK ? 0 : alg == ALG_COUNT ? G->k : VAR_M;
    double *g = w->g;
    double dg = 0.0, dl = 0.0;
    /* the root prior */
    const double *xr = x + (size_t)(n - 1) * W;
    double droot = (xr[C + acc] - xr[acc]) * dpi;
    dg += droot;
    dl -= droot;
    double *gr = g + (size_t)(n - 1) * W;
    for (size_t i = 0; i < W; i++)
        gr[i] = 0.0;
    gr[acc] = 1.0 - pi1;
    gr[C + acc] = pi1;
    int64_t ne = m->n_error, nk = m->n_cat, nl = m->n_lineage;
    double *gd = gvec ? gvec + tr->n_nodes : NULL; /* d_model part */
    for (int32_t v = n - 1; v >= nt; v--) {
        const double *gv = g + (size_t)v * W;
        int32_t c0 = tr->child_start[v], c1 = tr->child_start[v + 1];
        int32_t m_ch = c1 - c0;
        double scale = ldexp(1.0, sc[v]);
        /* prefix and suffix products of the children's messages */
        double *pre = w->pre, *suf = w->suf;
        for (int s = 0; s < 2; s++) {
            for (int a = 0; a < C; a++)
                pre[s * C + a] = suf[(size_t)m_ch * W + s * C + a] =
                    a == 0 ? 1.0 : 0.0; /* the identity */
        }
        for (int32_t j = 0; j < m_ch; j++) {
            const double *mj = msg + (size_t)tr->children[c0 + j] * W;
            for (int s = 0; s < 2; s++)
                combine(alg, G->k, C, pre + (size_t)j * W + s * C,
                        mj + s * C, pre + (size_t)(j + 1) * W + s * C);
        }
        for (int32_t j = m_ch - 1; j >= 0; j--) {
            const double *mj = msg + (size_t)tr->children[c0 + j] * W;
            for (int s = 0; s < 2; s++)
                combine(alg, G->k, C, suf + (size_t)(j + 1) * W + s * C,
                        mj + s * C, suf + (size_t)j * W + s * C);
        }
        for (int32_t j = 0; j < m_ch; j++) {
            int32_t c = tr->children[c0 + j];
            const double *T = tab + (size_t)c * NT;
            double *h = w->h, r[2 * 64], *rr = C <= 64 ? r : NULL;
            double *rbuf = rr ? rr : w->h + W; /* siblings' product */
            for (int s = 0; s < 2; s++) {
                combine(alg, G->k, C, pre + (size_t)j * W + s * C,
                        suf + (size_t)(j + 1) * W + s * C, rbuf + s * C);
                combine_back(alg, G->k, C, gv + s * C, rbuf + s * C,
                             h + s * C);
                for (int a = 0; a < C; a++)
                    h[s * C + a] *= scale;
            }
            /* dVt/dP(i, j) = sum_a h[i][a] x_c[j][a] */
            const double *xc = x + (size_t)c * W;
            double D[2][2] = {{0.0, 0.0}, {0.0, 0.0}};
            for (int i = 0; i < 2; i++)
                for (int jj = 0; jj < 2; jj++) {
                    double s = 0.0;
                    for (int a = 0; a < C; a++)
                        s += h[i * C + a] * xc[jj * C + a];
                    D[i][jj] = s;
                }
            double e01 = D[0][1] - D[0][0], e10 = D[1][0] - D[1][1];
            double bg = e01 * T[T01G] + e10 * T[T10G];
            double bl = e01 * T[T01L] + e10 * T[T10L];
            dg += bg;
            dl += bl;
            if (gvec) {
                gvec[c] += gfac * (e01 * T[T01T] + e10 * T[T10T]);
                if (nl) {
                    gd[2 * ne + 3 * nk + c] += gfac * bg;
                    gd[2 * ne + 3 * nk + nl + c] += gfac * bl;
                }
            }
            /* the child's reverse partial: P^T h */
            double *gc = g + (size_t)c * W;
            double p01 = T[T01], p10 = T[T10];
            for (int a = 0; a < C; a++) {
                double h0 = h[a], h1 = h[C + a];
                gc[a] = (1.0 - p01) * h0 + p10 * h1;
                gc[C + a] = p01 * h0 + (1.0 - p10) * h1;
            }
            if (c < nt && gvec && ne && !bit(G->unknown, nt, u, c)) {
                /* error pair of tip c: the tip vector's derivatives */
                double a_, b_;
                persiste__model_error(m, c, &a_, &b_);
                double da, db;
                if (alg == ALG_LIK) {
                    if (bit(G->present, nt, u, c)) {
                        da = -gc[C];
                        db = gc[0];
                    } else {
                        da = gc[C];
                        db = -gc[0];
                    }
                } else {
                    int l0 = alg == ALG_VAR ? VAR_O : 0;
                    int l1 = alg == ALG_VAR ? VAR_I : 1;
                    da = gc[C + l0] - gc[C + l1];
                    db = gc[l1] - gc[l0];
                }
                int32_t i = ne == 1 ? 0 : c;
                gd[i] += gfac * a_ * da;
                gd[ne + i] += gfac * b_ * db;
            }
        }
    }
    if (gvec && nk) {
        gd[2 * ne + k] += gfac * dg;
        gd[2 * ne + nk + k] += gfac * dl;
    }
    *dg_out = dg;
    *dl_out = dl;
}

static double unit_rate(const struct gen *G, const double *r, int64_t u)
{
    return r[G->rep ? G->rep[u] : u];
}

static int same_bits(double a, uint64_t key)
{
    uint64_t b;
    memcpy(&b, &a, sizeof b);
    return b == key;
}

static uint64_t bits_of(double a)
{
    uint64_t b;
    memcpy(&b, &a, sizeof b);
    return b;
}

/* log sum_k w_k exp(l[k]) and the posterior weights rho[k]. */
static double mix(const struct gen *G, const double *l, double *rho)
{
    double mx = -INFINITY;
    for (int k = 0; k < G->K; k++)
        if (isfinite(l[k]) && log(G->cw[k]) + l[k] > mx)
            mx = log(G->cw[k]) + l[k];
    if (!isfinite(mx)) {
        for (int k = 0; k < G->K; k++)
            rho[k] = 0.0;
        return -INFINITY;
    }
    double s = 0.0;
    for (int k = 0; k < G->K; k++)
        s += isfinite(l[k]) ? G->cw[k] * exp(l[k] - mx) : 0.0;
    double lm = mx + log(s);
    for (int k = 0; k < G->K; k++)
        rho[k] = isfinite(l[k]) ? G->cw[k] * exp(l[k] - lm) : 0.0;
    return lm;
}

/* Adds the pending weight of the cached conditioning to the chunk's sums. */
static void flush(const struct gen *G, struct ws *w, double *acc)
{
    if (acc && w->cache_valid && w->pending != 0.0)
        for (int64_t i = 0; i < G->n_glob; i++)
            acc[i] -= w->pending * w->cache_vec[i];
    w->pending = 0.0;
}

/* The unknown tips of units u and v are the same. */
static int same_unknown(const struct gen *G, int64_t u, int64_t v)
{
    if (!G->c->data->any_unknown)
        return 1;
    int32_t nt = G->tree->n_tips;
    for (int32_t t = 0; t < nt; t++)
        if (bit(G->unknown, nt, u, t) != bit(G->unknown, nt, v, t))
            return 0;
    return 1;
}

/* log P(observable) of unit u (and its derivatives, cached). */
static void conditioning(const struct gen *G, struct ws *w, int64_t u,
                         double lg, double ll, double *acc)
{
    if (w->cache_valid && same_bits(lg, w->cache_gain) &&
        same_bits(ll, w->cache_loss) && same_unknown(G, u, w->cache_unit))
        return;
    flush(G, w, acc);
    int K = G->K, C = G->C;
    int32_t n = G->tree->n_nodes;
    size_t per = (size_t)n * 2 * C;
    double lp[1024], rho[1024], vt[1024], pis[1024], dps[1024];
    for (int k = 0; k < K; k++) {
        int64_t ns;
        root_prior(G, k, lg, ll, &pis[k], &dps[k]);
        vt[k] = inside(G, w, G->alg, C, k, u, pis[k], w->xc + k * per,
                       w->mc + k * per, w->scn + (size_t)k * n, &ns);
        lp[k] = vt[k] > 0.0 ? log(vt[k]) - (double)ns * LN2 : -INFINITY;
    }
    w->cache_logp = mix(G, lp, rho);
    w->cache_valid = 1;
    w->cache_unit = u;
    w->cache_gain = bits_of(lg);
    w->cache_loss = bits_of(ll);
    w->cache_dg = w->cache_dl = 0.0;
    w->pending = 0.0;
    if (!G->gradient || !isfinite(w->cache_logp))
        return;
    double *vec = G->global ? w->cache_vec : NULL;
    if (vec)
        memset(vec, 0, (size_t)G->n_glob * sizeof *vec);
    for (int k = 0; k < K; k++) {
        if (rho[k] == 0.0)
            continue;
        double dg, dl, f = rho[k] / vt[k];
        reverse(G, w, G->alg, C, k, u, pis[k], dps[k], w->xc + k * per,
                w->mc + k * per, w->scn + (size_t)k * n, f, vec, &dg, &dl);
        w->cache_dg += f * dg;
        w->cache_dl += f * dl;
        if (vec && G->m->n_cat) /* d/dw_k of log sum w P */
            vec[n + 2 * G->m->n_error + 2 * G->m->n_cat + k] +=
                rho[k] / G->cw[k];
    }
}

/* Unit u: its log-likelihood and derivatives; adds its weighted global
 * derivatives to acc (if not NULL). */
static void eval_unit(const struct gen *G, struct ws *w, int64_t u,
                      double *acc)
{
    const struct persiste__call *c = G->c;
    double lg = unit_rate(G, c->log_gain, u), ll = unit_rate(G, c->log_loss, u);
    if (!w->tables_valid || !same_bits(lg, w->key_gain) ||
        !same_bits(ll, w->key_loss)) {
        fill_tables(G, w, lg, ll);
        w->tables_valid = 1;
        w->key_gain = bits_of(lg);
        w->key_loss = bits_of(ll);
    }
    int K = G->K;
    int32_t n = G->tree->n_nodes;
    size_t per = (size_t)n * 2;
    double lk[1024], rho[1024], vt[1024], pis[1024], dps[1024];
    for (int k = 0; k < K; k++) {
        int64_t ns;
        root_prior(G, k, lg, ll, &pis[k], &dps[k]);
        vt[k] = inside(G, w, ALG_LIK, 1, k, u, pis[k], w->xl + k * per,
                       w->ml + k * per, w->sl + (size_t)k * n, &ns);
        lk[k] = vt[k] > 0.0 ? log(vt[k]) - (double)ns * LN2 : -INFINITY;
    }
    double lmix = mix(G, lk, rho);
    double logp = 0.0;
    if (c->model->condition != PERSISTE_CONDITION_NONE) {
        conditioning(G, w, u, lg, ll, acc);
        logp = w->cache_logp;
    }
    double out = isfinite(lmix) && isfinite(logp) ? lmix - logp : -INFINITY;
    G->u_ll[u] = out;
    if (!G->gradient)
        return;
    double uw = G->unit_w ? G->unit_w[u]
                          : c->weight ? c->weight[u] : 1.0;
    double dg_u = 0.0, dl_u = 0.0;
    if (isfinite(out)) {
        for (int k = 0; k < K; k++) {
            if (rho[k] == 0.0)
                continue;
            double dg, dl, f = rho[k] / vt[k];
            reverse(G, w, ALG_LIK, 1, k, u, pis[k], dps[k], w->xl + k * per,
                    w->ml + k * per, w->sl + (size_t)k * n, uw * f, acc,
                    &dg, &dl);
            dg_u += f * dg;
            dl_u += f * dl;
            if (acc && G->m->n_cat)
                acc[n + 2 * G->m->n_error + 2 * G->m->n_cat + k] +=
                    uw * rho[k] / G->cw[k];
        }
        if (c->model->condition != PERSISTE_CONDITION_NONE) {
            dg_u -= w->cache_dg;
            dl_u -= w->cache_dl;
            w->pending += uw;
        }
    }
    if (G->u_dg)
        G->u_dg[u] = dg_u;
    if (G->u_dl)
        G->u_dl[u] = dl_u;
}

static void run_chunk(void *arg, int64_t task, int worker)
{
    struct gen *G = arg;
    struct ws *w = G->ws[worker];
    int64_t chunk = G->first_chunk + task;
    double *acc = NULL;
    if (G->global) {
        acc = G->round_bufs + (size_t)task * (size_t)G->n_glob;
        memset(acc, 0, (size_t)G->n_glob * sizeof *acc);
    }
    w->cache_valid = 0; /* a chunk's sums depend on the chunk alone */
    w->pending = 0.0;
    int64_t u1 = (chunk + 1) * CHUNK_UNITS;
    if (u1 > G->n_units)
        u1 = G->n_units;
    for (int64_t u = chunk * CHUNK_UNITS; u < u1; u++)
        eval_unit(G, w, u, acc);
    flush(G, w, acc);
}

static void ws_free(struct ws *w)
{
    if (!w)
        return;
    persiste__free(w->tab);
    persiste__free(w->xl);
    persiste__free(w->ml);
    persiste__free(w->sl);
    persiste__free(w->xc);
    persiste__free(w->mc);
    persiste__free(w->scn);
    persiste__free(w->g);
    persiste__free(w->pre);
    persiste__free(w->suf);
    persiste__free(w->h);
    persiste__free(w->cache_vec);
    persiste__free(w);
}

static int ws_alloc(struct ws **out, const struct gen *G)
{
    const persiste_tree *tr = G->tree;
    size_t n = (size_t)tr->n_nodes, K = (size_t)G->K, C = (size_t)G->C;
    int32_t maxc = 1;
    for (int32_t v = tr->n_tips; v < tr->n_nodes; v++) {
        int32_t d = tr->child_start[v + 1] - tr->child_start[v];
        maxc = d > maxc ? d : maxc;
    }
    struct ws *w = persiste__calloc(1, sizeof *w);
    if (!w)
        return persiste__error(PERSISTE_E_NOMEM, "general: out of memory");
    size_t cc = C > 1 ? C : 1;
    w->tab = persiste__malloc(K * n * NT * sizeof(double));
    w->xl = persiste__malloc(K * n * 2 * sizeof(double));
    w->ml = persiste__malloc(K * n * 2 * sizeof(double));
    w->sl = persiste__malloc(K * n * sizeof(int32_t));
    w->xc = persiste__malloc(K * n * 2 * cc * sizeof(double));
    w->mc = persiste__malloc(K * n * 2 * cc * sizeof(double));
    w->scn = persiste__malloc(K * n * sizeof(int32_t));
    w->g = persiste__malloc(n * 2 * cc * sizeof(double));
    w->pre = persiste__malloc(((size_t)maxc + 1) * 2 * cc * sizeof(double));
    w->suf = persiste__malloc(((size_t)maxc + 1) * 2 * cc * sizeof(double));
    w->h = persiste__malloc(4 * cc * sizeof(double));
    w->cache_vec = persiste__malloc((size_t)G->n_glob * sizeof(double));
    if (!w->tab || !w->xl || !w->ml || !w->sl || !w->xc || !w->mc ||
        !w->scn || !w->g || !w->pre || !w->suf || !w->h || !w->cache_vec) {
        ws_free(w);
        return persiste__error(PERSISTE_E_NOMEM,
                               "general: out of memory for a workspace of "
                               "%zu nodes",
                               n);
    }
    *out = w;
    return PERSISTE_OK;
}

/* Units: the distinct patterns when every family has one rate pair (their
 * weights summed in family order), else the families themselves. */
static int make_units(struct gen *G, int64_t **rep, double **uw,
                      double **outs)
{
    const struct persiste__call *c = G->c;
    const persiste_data *d = c->data;
    int64_t nf = c->n_families;
    *rep = NULL;
    *uw = NULL;
    *outs = NULL;
    if (c->one_pair && d->n_patterns < nf) {
        int64_t np = d->n_patterns;
        *rep = persiste__malloc((size_t)np * sizeof **rep);
        *uw = persiste__calloc((size_t)np, sizeof **uw);
        *outs = persiste__malloc((size_t)np * 3 * sizeof **outs);
        if (!*rep || !*uw || !*outs)
            return persiste__error(PERSISTE_E_NOMEM,
                                   "general: out of memory");
        for (int64_t p = 0; p < np; p++)
            (*rep)[p] = -1;
        for (int64_t f = 0; f < nf; f++) {
            int64_t p = d->pattern[f];
            if ((*rep)[p] < 0)
                (*rep)[p] = f;
            (*uw)[p] += c->weight ? c->weight[f] : 1.0;
        }
        G->n_units = np;
        G->present = d->pattern_present;
        G->unknown = d->pattern_unknown;
        G->rep = *rep;
        G->unit_w = *uw;
        G->u_ll = *outs;
        G->u_dg = *outs + np;
        G->u_dl = *outs + 2 * np;
        return PERSISTE_OK;
    }
    G->n_units = nf;
    G->present = d->present;
    G->unknown = d->unknown;
    G->u_ll = c->loglik;
    if (G->gradient) {
        /* derivatives are computed even when the caller wants only one */
        *outs = persiste__malloc((size_t)nf * 2 * sizeof **outs);
        if (!*outs)
            return persiste__error(PERSISTE_E_NOMEM,
                                   "general: out of memory");
        G->u_dg = c->d_log_gain ? c->d_log_gain : *outs;
        G->u_dl = c->d_log_loss ? c->d_log_loss : *outs + nf;
    }
    return PERSISTE_OK;
}

int persiste__general_run(persiste_ctx *ctx, const struct persiste__call *c)
{
    const persiste_model *m = c->model;
    const persiste_tree *tr = c->tree;
    static const double one = 1.0;
    struct gen G = {.c = c, .tree = tr, .m = m};
    G.K = m->n_cat ? m->n_cat : 1;
    G.cw = m->n_cat ? m->cat_weight : &one;
    G.cg = m->n_cat ? m->cat_gain : &one;
    G.cl = m->n_cat ? m->cat_loss : &one;
    if (m->condition == PERSISTE_CONDITION_VARIABLE) {
        G.alg = ALG_VAR;
        G.C = 4;
    } else {
        G.alg = ALG_COUNT;
        G.k = m->min_present;
        G.C = G.k + 1;
    }
    G.gradient = c->d_log_gain || c->d_log_loss || c->d_branch || c->d_model;
    G.global = c->d_branch || c->d_model;
    G.n_glob = tr->n_nodes + persiste__model_grad_size(m);
    int workers = persiste__ctx_workers(ctx), rc = PERSISTE_OK;
    int64_t *rep = NULL;
    double *uw = NULL, *outs = NULL, *total = NULL;
    G.len = persiste__malloc((size_t)tr->n_nodes * sizeof *G.len);
    G.clamped = persiste__malloc((size_t)tr->n_nodes * sizeof *G.clamped);
    G.ws = persiste__calloc((size_t)workers, sizeof *G.ws);
    if (!G.len || !G.clamped || !G.ws) {
        rc = persiste__error(PERSISTE_E_NOMEM, "general: out of memory");
        goto done;
    }
    for (int32_t v = 0; v < tr->n_nodes; v++) {
        G.clamped[v] = tr->length[v] < m->min_branch_length;
        G.len[v] = G.clamped[v] ? m->min_branch_length : tr->length[v];
    }
    if ((rc = make_units(&G, &rep, &uw, &outs)))
        goto done;
    for (int i = 0; i < workers; i++)
        if ((rc = ws_alloc(&G.ws[i], &G)))
            goto done;
    G.n_chunks = (G.n_units + CHUNK_UNITS - 1) / CHUNK_UNITS;
    if (!G.global) {
        G.first_chunk = 0;
        persiste__ctx_run(ctx, G.n_chunks, run_chunk, &G);
    } else {
        /* rounds of chunks; the chunks' sums are added in chunk order, so
         * the round size (from the thread count) changes no bit */
        int64_t round = 4 * (int64_t)workers;
        size_t nb;
        if ((rc = persiste__mul_size((size_t)round + 1, (size_t)G.n_glob,
                                     &nb)))
            goto done;
        G.round_bufs = persiste__malloc(nb * sizeof(double));
        if (!G.round_bufs) {
            rc = persiste__error(PERSISTE_E_NOMEM,
                                 "general: out of memory for gradient sums");
            goto done;
        }
        total = G.round_bufs + (size_t)round * (size_t)G.n_glob;
        memset(total, 0, (size_t)G.n_glob * sizeof *total);
        for (G.first_chunk = 0; G.first_chunk < G.n_chunks;
             G.first_chunk += round) {
            int64_t nr = G.n_chunks - G.first_chunk;
            nr = nr < round ? nr : round;
            persiste__ctx_run(ctx, nr, run_chunk, &G);
            for (int64_t r = 0; r < nr; r++)
                for (int64_t i = 0; i < G.n_glob; i++)
                    total[i] += G.round_bufs[(size_t)r * G.n_glob + i];
        }
        if (c->d_branch) {
            memcpy(c->d_branch, total, (size_t)tr->n_nodes * sizeof *total);
            c->d_branch[tr->n_nodes - 1] = 0.0;
        }
        if (c->d_model)
            memcpy(c->d_model, total + tr->n_nodes,
                   (size_t)(G.n_glob - tr->n_nodes) * sizeof *total);
    }
    /* scatter the units' values to their families, count the impossible */
    int64_t n_impossible = 0;
    for (int64_t f = 0; f < c->n_families; f++) {
        if (G.rep) {
            int64_t p = c->data->pattern[f];
            c->loglik[f] = G.u_ll[p];
            if (c->d_log_gain)
                c->d_log_gain[f] = G.u_dg[p];
            if (c->d_log_loss)
                c->d_log_loss[f] = G.u_dl[p];
        }
        n_impossible += isinf(c->loglik[f]) != 0;
    }
    ctx->n_impossible = n_impossible;
done:
    for (int i = 0; G.ws && i < workers; i++)
        ws_free(G.ws[i]);
    persiste__free(G.ws);
    persiste__free(G.len);
    persiste__free(G.clamped);
    persiste__free(G.round_bufs);
    persiste__free(rep);
    persiste__free(uw);
    persiste__free(outs);
    return rc;
}
