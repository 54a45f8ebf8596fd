/* Reconstruction: where each family was gained and lost. For a family
 * (under every model option: observation error, rate categories, lineage
 * multipliers, root priors, unknown cells) an inside pass gives each
 * node's partial X_v, an outside pass each node's G_v = dV/dX_v, so that
 *   P(v in state s | data) = X_v(s) G_v(s) / V,
 * and, with H_c(i) = dV/d(message of child c)(i), the expected number of
 * gains on the branch above c is
 *   sum_ij H_c(i) X_c(j) I01(i, j) / V,
 * where I01(i, j) = lambda int_0^t P_i0(u) P_1j(t - u) du is the
 * endpoint-weighted expectation (the endpoint probability P_ij cancels):
 * closed forms below, written so that no term cancels on short branches.
 * Categories mix by their posterior weights. One family at a time, in
 * fixed chunks whose sums are added in chunk order: the results do not
 * depend on the thread count. Reconstruction runs once per analysis, not
 * inside a fit, so this path is scalar and simple. */
#include <math.h>
#include <string.h>

#include "general.h"
#include "reconstruct.h"

#define CHUNK 64
#define LN2 0.693147180559945309417232121458176568
#define RESCALE_BELOW 0x1p-256

/* Per branch and category: the matrix, the branch's rates and length. */
enum { R01, R10, RLAM, RMU, RT, RN };

struct rws {
    double *tab;     /* [K][n][RN] */
    double *x, *msg; /* [K][n][2] */
    int32_t *sc;     /* [K][n] */
    double *g;       /* [n][2] */
    double *pre, *suf; /* [max children + 1][2] */
    double *vt, *lk, *rho, *pi1; /* [K] */
    double *fp, *fg, *fl;        /* [n] a family's values */
    uint64_t key_gain, key_loss;
    int valid;
};

struct rrun {
    const struct persiste__recon *r;
    int K;
    const double *cw, *cg, *cl;
    double one;
    double *len;
    int64_t n_chunks, first_chunk;
    double *round_bufs; /* [round][3][n_groups][n] */
    size_t per_chunk;
    struct rws **ws;
};

static inline int bit(const uint64_t *bits, int32_t nt, int64_t f, int32_t t)
{
    return (int)((bits[(f >> 6) * nt + t] >> (f & 63)) & 1);
}

/* phi(x) = (1 - e^-x) / x, A = 1 - phi, B = phi - e^-x and
 * C = 1 - 2 phi + e^-x, by their series where the closed forms cancel. */
static void phis(double x, double *phi, double *A, double *B, double *C)
{
    if (x < 0.1) {
        /* term_n = (-x)^n / (n+1)!: phi = sum term_n, A = -sum_{n>=1}
         * term_n, C = sum_{n>=2} (n - 1) term_n, B = A - C */
        double term = 1.0, p = 0.0, a = 0.0, c = 0.0;
        for (int n = 0; n < 16; n++) {
            p += term;
            if (n >= 1)
                a -= term;
            if (n >= 2)
                c += (double)(n - 1) * term;
            term *= -x / (double)(n + 2);
        }
        *phi = p;
        *A = a;
        *C = c;
        *B = a - c;
    } else {
        double e = exp(-x);
        *phi = -expm1(-x) / x;
        *A = 1.0 - *phi;
        *B = *phi - e;
        *C = *A - *B;
    }
}

static void fill(const struct rrun *R, struct rws *w, double lg, double ll)
{
    const persiste_tree *tr = R->r->tree;
    const persiste_model *m = R->r->model;
    int32_t n = tr->n_nodes;
    for (int k = 0; k < R->K; k++)
        for (int32_t v = 0; v + 1 < n; v++) {
            double *T = w->tab + ((size_t)k * n + v) * RN;
            double lb = exp(lg) * R->cg[k] * (m->n_lineage ? m->lin_gain[v] : 1);
            double mb = exp(ll) * R->cl[k] * (m->n_lineage ? m->lin_loss[v] : 1);
            double t = R->len[v], x = (lb + mb) * t, phi, A, B, C;
            phis(x, &phi, &A, &B, &C);
            T[R01] = lb * t * phi;
            T[R10] = mb * t * phi;
            T[RLAM] = lb;
            T[RMU] = mb;
            T[RT] = t;
        }
}

/* Category k's stationary share (its multipliers may be 0: the limit). */
static double prior1(const struct rrun *R, int k, double lg, double ll)
{
    const persiste_model *m = R->r->model;
    if (m->root_prior == PERSISTE_ROOT_FIXED)
        return m->root_freq;
    if (m->root_prior == PERSISTE_ROOT_ABSENT)
        return 0.0;
    return persiste__category_share(ll - lg, R->cg[k], R->cl[k]);
}

static void tip(const struct rrun *R, int64_t f, int32_t t, double *x)
{
    const persiste_data *d = R->r->data;
    int32_t nt = d->n_tips;
    double a, b;
    persiste__model_error(R->r->model, t, &a, &b);
    if (bit(d->unknown, nt, f, t)) {
        x[0] = x[1] = 1.0;
    } else if (bit(d->present, nt, f, t)) {
        x[0] = b;
        x[1] = 1.0 - a;
    } else {
        x[0] = 1.0 - b;
        x[1] = a;
    }
}

static void message(const double *T, const double *x, double *m)
{
    m[0] = (1.0 - T[R01]) * x[0] + T[R01] * x[1];
    m[1] = T[R10] * x[0] + (1.0 - T[R10]) * x[1];
}

/* Inside pass of category k: returns the scaled root value. */
static double inside(const struct rrun *R, struct rws *w, int k, int64_t f,
                     double pi1, int64_t *nscale)
{
    const persiste_tree *tr = R->r->tree;
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    double *x = w->x + (size_t)k * n * 2, *msg = w->msg + (size_t)k * n * 2;
    int32_t *sc = w->sc + (size_t)k * n;
    const double *tab = w->tab + (size_t)k * n * RN;
    int64_t total = 0;
    for (int32_t t = 0; t < nt; t++) {
        tip(R, f, t, x + 2 * t);
        sc[t] = 0;
        if (t + 1 < n)
            message(tab + (size_t)t * RN, x + 2 * t, msg + 2 * t);
    }
    for (int32_t v = nt; v < n; v++) {
        double *xv = x + 2 * v;
        xv[0] = xv[1] = 1.0;
        for (int32_t j = tr->child_start[v]; j < tr->child_start[v + 1]; j++) {
            const double *mc = msg + 2 * tr->children[j];
            xv[0] *= mc[0];
            xv[1] *= mc[1];
        }
        double mx = xv[0] > xv[1] ? xv[0] : xv[1];
        sc[v] = 0;
        if (mx == 0.0)
            return *nscale = 0, 0.0;
        if (mx < RESCALE_BELOW) {
            int e = ilogb(mx);
            xv[0] = ldexp(xv[0], -e);
            xv[1] = ldexp(xv[1], -e);
            sc[v] = -e;
            total -= e;
        }
        if (v + 1 < n)
            message(tab + (size_t)v * RN, xv, msg + 2 * v);
    }
    *nscale = total;
    const double *xr = x + 2 * (size_t)(n - 1);
    return (1.0 - pi1) * xr[0] + pi1 * xr[1];
}

/* Outside pass of category k: adds fac times the posteriors and expected
 * counts to fp, fg, fl. */
static void outside(const struct rrun *R, struct rws *w, int k, double pi1,
                    double fac)
{
    const persiste_tree *tr = R->r->tree;
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    const double *x = w->x + (size_t)k * n * 2;
    const double *msg = w->msg + (size_t)k * n * 2;
    const int32_t *sc = w->sc + (size_t)k * n;
    const double *tab = w->tab + (size_t)k * n * RN;
    double *g = w->g;
    g[2 * (n - 1)] = 1.0 - pi1;
    g[2 * (n - 1) + 1] = pi1;
    w->fp[n - 1] += fac * x[2 * (n - 1) + 1] * pi1;
    for (int32_t v = n - 1; v >= nt; v--) {
        int32_t c0 = tr->child_start[v], m = tr->child_start[v + 1] - c0;
        double scale = ldexp(1.0, sc[v]);
        double *pre = w->pre, *suf = w->suf;
        pre[0] = pre[1] = suf[2 * m] = suf[2 * m + 1] = 1.0;
        for (int32_t j = 0; j < m; j++) {
            const double *mc = msg + 2 * tr->children[c0 + j];
            pre[2 * (j + 1)] = pre[2 * j] * mc[0];
            pre[2 * (j + 1) + 1] = pre[2 * j + 1] * mc[1];
        }
        for (int32_t j = m - 1; j >= 0; j--) {
            const double *mc = msg + 2 * tr->children[c0 + j];
            suf[2 * j] = suf[2 * (j + 1)] * mc[0];
            suf[2 * j + 1] = suf[2 * (j + 1) + 1] * mc[1];
        }
        for (int32_t j = 0; j < m; j++) {
            int32_t c = tr->children[c0 + j];
            const double *T = tab + (size_t)c * RN;
            double h[2];
            for (int i = 0; i < 2; i++)
                h[i] = scale * g[2 * v + i] * pre[2 * j + i] *
                       suf[2 * (j + 1) + i];
            const double *xc = x + 2 * (size_t)c;
            double p01 = T[R01], p10 = T[R10];
            double *gc = g + 2 * (size_t)c;
            gc[0] = (1.0 - p01) * h[0] + p10 * h[1];
            gc[1] = p01 * h[0] + (1.0 - p10) * h[1];
            w->fp[c] += fac * xc[1] * gc[1]; /* V = sum_s x_c(s) g_c(s) */
            /* expected counts: sum_ij h_i x_j I(i, j) */
            double lb = T[RLAM], mb = T[RMU], t = T[RT], s = lb + mb;
            if (t == 0.0 || s == 0.0)
                continue;
            double phi, A, B, C, e;
            phis(s * t, &phi, &A, &B, &C);
            e = exp(-s * t);
            double p = lb / s, q = mb / s;
            double mid = p * q * (1.0 + e) + (p * p + q * q) * phi;
            double f01[2][2] = {{q * q * A + p * q * B, mid},
                                {q * q * C, p * q * A + q * q * B}};
            double f10[2][2] = {{p * q * A + p * p * B, p * p * C},
                                {mid, p * p * A + p * q * B}};
            double sg = 0.0, sl = 0.0;
            for (int i = 0; i < 2; i++)
                for (int jj = 0; jj < 2; jj++) {
                    sg += h[i] * xc[jj] * f01[i][jj];
                    sl += h[i] * xc[jj] * f10[i][jj];
                }
            w->fg[c] += fac * lb * t * sg;
            w->fl[c] += fac * mb * t * sl;
        }
    }
}


/* Family f into w->fp, fg, fl; 0 if it is impossible. */
static int family(const struct rrun *R, struct rws *w, int64_t f)
{
    const struct persiste__recon *r = R->r;
    int32_t n = r->tree->n_nodes;
    double lg = r->log_gain[f], ll = r->log_loss[f];
    uint64_t kg, kl;
    memcpy(&kg, &lg, sizeof kg);
    memcpy(&kl, &ll, sizeof kl);
    if (!w->valid || kg != w->key_gain || kl != w->key_loss) {
        fill(R, w, lg, ll);
        w->valid = 1;
        w->key_gain = kg;
        w->key_loss = kl;
    }
    for (int k = 0; k < R->K; k++) {
        int64_t ns;
        w->pi1[k] = prior1(R, k, lg, ll);
        w->vt[k] = inside(R, w, k, f, w->pi1[k], &ns);
        w->lk[k] = w->vt[k] > 0.0 ? log(w->vt[k]) - (double)ns * LN2
                                  : -INFINITY;
    }
    memset(w->fp, 0, (size_t)n * sizeof *w->fp);
    memset(w->fg, 0, (size_t)n * sizeof *w->fg);
    memset(w->fl, 0, (size_t)n * sizeof *w->fl);
    if (!isfinite(persiste__mix(R->K, R->cw, w->lk, 1, w->rho)))
        return 0;
    for (int k = 0; k < R->K; k++)
        if (w->rho[k] > 0.0)
            outside(R, w, k, w->pi1[k], w->rho[k] / w->vt[k]);
    return 1;
}

static void run_chunk(void *arg, int64_t task, int worker)
{
    struct rrun *R = arg;
    const struct persiste__recon *r = R->r;
    struct rws *w = R->ws[worker];
    int32_t n = r->tree->n_nodes;
    size_t gn = (size_t)r->n_groups * (size_t)n;
    double *acc = R->round_bufs + (size_t)task * R->per_chunk;
    memset(acc, 0, R->per_chunk * sizeof *acc);
    int64_t chunk = R->first_chunk + task;
    int64_t f1 = (chunk + 1) * CHUNK;
    if (f1 > r->n_families)
        f1 = r->n_families;
    double *impossible = acc + 3 * gn;
    for (int64_t f = chunk * CHUNK; f < f1; f++) {
        int ok = family(R, w, f);
        double *outs[3] = {r->present, r->gains, r->losses};
        const double *vals[3] = {w->fp, w->fg, w->fl};
        for (int q = 0; q < 3; q++)
            if (outs[q])
                memcpy(outs[q] + (size_t)f * n, vals[q],
                       (size_t)n * sizeof(double));
        if (!ok) {
            *impossible += 1.0;
            continue;
        }
        double wt = r->weight ? r->weight[f] : 1.0;
        size_t g = r->group ? (size_t)r->group[f] * (size_t)n : 0;
        for (int q = 0; q < 3; q++)
            for (int32_t v = 0; v < n; v++)
                acc[q * gn + g + (size_t)v] += wt * vals[q][v];
    }
}

static void rws_free(struct rws *w)
{
    if (!w)
        return;
    double *arrays[] = {w->tab, w->x,  w->msg, w->g,  w->pre, w->suf, w->vt,
                        w->lk,  w->rho, w->pi1, w->fp, w->fg,  w->fl};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++)
        persiste__free(arrays[i]);
    persiste__free(w->sc);
    persiste__free(w);
}

static int rws_alloc(struct rws **out, const struct rrun *R)
{
    const persiste_tree *tr = R->r->tree;
    size_t n = (size_t)tr->n_nodes, K = (size_t)R->K;
    int32_t maxc = 1;
    for (int32_t v = tr->n_tips; v < tr->n_nodes; v++) {
        int32_t d = tr->child_start[v + 1] - tr->child_start[v];
        maxc = d > maxc ? d : maxc;
    }
    struct rws *w = persiste__calloc(1, sizeof *w);
    if (!w)
        return persiste__error(PERSISTE_E_NOMEM, "reconstruct: out of memory");
    w->tab = persiste__malloc(K * n * RN * sizeof(double));
    w->x = persiste__malloc(K * n * 2 * sizeof(double));
    w->msg = persiste__malloc(K * n * 2 * sizeof(double));
    w->sc = persiste__malloc(K * n * sizeof(int32_t));
    w->g = persiste__malloc(n * 2 * sizeof(double));
    w->pre = persiste__malloc(((size_t)maxc + 1) * 2 * sizeof(double));
    w->suf = persiste__malloc(((size_t)maxc + 1) * 2 * sizeof(double));
    w->vt = persiste__malloc(K * sizeof(double));
    w->lk = persiste__malloc(K * sizeof(double));
    w->rho = persiste__malloc(K * sizeof(double));
    w->pi1 = persiste__malloc(K * sizeof(double));
    w->fp = persiste__malloc(n * sizeof(double));
    w->fg = persiste__malloc(n * sizeof(double));
    w->fl = persiste__malloc(n * sizeof(double));
    if (!w->tab || !w->x || !w->msg || !w->sc || !w->g || !w->pre ||
        !w->suf || !w->vt || !w->lk || !w->rho || !w->pi1 || !w->fp ||
        !w->fg || !w->fl) {
        rws_free(w);
        return persiste__error(PERSISTE_E_NOMEM,
                               "reconstruct: out of memory for %zu nodes", n);
    }
    *out = w;
    return PERSISTE_OK;
}

int persiste__reconstruct_run(persiste_ctx *ctx,
                              const struct persiste__recon *r)
{
    const persiste_model *m = r->model;
    const persiste_tree *tr = r->tree;
    static const double one = 1.0;
    struct rrun R = {.r = r};
    R.K = m->n_cat ? m->n_cat : 1;
    R.cw = m->n_cat ? m->cat_weight : &one;
    R.cg = m->n_cat ? m->cat_gain : &one;
    R.cl = m->n_cat ? m->cat_loss : &one;
    int workers = persiste__ctx_workers(ctx), rc = PERSISTE_OK;
    size_t n = (size_t)tr->n_nodes, gn = (size_t)r->n_groups * n, total_n;
    /* a chunk's sums: 3 quantities by group, then its impossible count */
    R.per_chunk = 3 * gn + 1;
    int64_t round = 4 * (int64_t)workers;
    R.len = persiste__malloc(n * sizeof *R.len);
    R.ws = persiste__calloc((size_t)workers, sizeof *R.ws);
    if ((rc = persiste__mul_size((size_t)round + 1, R.per_chunk, &total_n)))
        goto done;
    R.round_bufs = persiste__malloc(total_n * sizeof(double));
    if (!R.len || !R.ws || !R.round_bufs) {
        rc = persiste__error(PERSISTE_E_NOMEM, "reconstruct: out of memory");
        goto done;
    }
    for (size_t v = 0; v < n; v++)
        R.len[v] = tr->length[v] < m->min_branch_length ? m->min_branch_length
                                                        : tr->length[v];
    for (int i = 0; i < workers; i++)
        if ((rc = rws_alloc(&R.ws[i], &R)))
            goto done;
    double *sum = R.round_bufs + (size_t)round * R.per_chunk;
    memset(sum, 0, R.per_chunk * sizeof *sum);
    R.n_chunks = (r->n_families + CHUNK - 1) / CHUNK;
    for (R.first_chunk = 0; R.first_chunk < R.n_chunks;
         R.first_chunk += round) {
        int64_t nr = R.n_chunks - R.first_chunk;
        nr = nr < round ? nr : round;
        persiste__ctx_run(ctx, nr, run_chunk, &R);
        for (int64_t c = 0; c < nr; c++) /* in chunk order: same bits */
            for (size_t i = 0; i < R.per_chunk; i++)
                sum[i] += R.round_bufs[(size_t)c * R.per_chunk + i];
    }
    double *sums[3] = {r->sum_present, r->sum_gains, r->sum_losses};
    for (int q = 0; q < 3; q++)
        if (sums[q])
            memcpy(sums[q], sum + q * gn, gn * sizeof(double));
    ctx->n_impossible = (int64_t)sum[3 * gn];
done:
    for (int i = 0; R.ws && i < workers; i++)
        rws_free(R.ws[i]);
    persiste__free(R.ws);
    persiste__free(R.len);
    persiste__free(R.round_bufs);
    return rc;
}
