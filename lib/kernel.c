/* Pruning over one block of families, forward (likelihood) and reverse
 * (exact gradients), with power-of-two rescaling.
 *
 * Notation: q1 = gain/s, q0 = loss/s with s = gain + loss; on a branch of
 * length t, e = exp(-s t), em = 1 - e (from expm1):
 *   P00 = q0 + q1 e   P01 = q1 em   P10 = q0 em   P11 = q1 + q0 e
 * Every entry is a sum of non-negative terms, so none cancels.
 *
 * Gradients use the outside ("U") vector at the top of each branch:
 * dL/dtheta through branch c = U . dP_c . in_c, and L = U . P_c . in_c for
 * the same U, so the ratio of the two is exact whatever the scaling of U and
 * in_c: the reverse pass rescales freely and tracks no exponents. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernel.h"

#define L PERSISTE_LANES
/* Rescale a partial whose larger entry falls below 2^-256 by 2^256: exact. */
#define SCALE_LOW 0x1p-256
#define SCALE_UP 0x1p256
#define LN2 0.693147180559945309417232121458176568

enum { P00, P01, P10, P11, D01G, D01L, D10G, D10L, D01T, D10T, NP };


void persiste__scratch_destroy(struct persiste__scratch *s)
{
    if (!s)
        return;
    persiste__free(s->p);
    persiste__free(s->in);
    persiste__free(s->acd);
    persiste__free(s->b);
    persiste__free(s->out);
    persiste__free(s->cond_branch);
    persiste__free(s);
}

static int grow(double **p, size_t n_nodes, size_t per_node)
{
    size_t bytes;
    int rc = persiste__mul_size(n_nodes, per_node * sizeof(double), &bytes);
    if (rc)
        return rc;
    double *q = persiste__realloc(*p, bytes);
    if (!q)
        return persiste__error(PERSISTE_E_NOMEM,
                               "workspace: cannot allocate %zu bytes", bytes);
    *p = q;
    return PERSISTE_OK;
}

int persiste__scratch_reserve(struct persiste__scratch **sp, size_t n_nodes)
{
    struct persiste__scratch *s = *sp;
    if (!s) {
        s = persiste__calloc(1, sizeof *s);
        if (!s)
            return persiste__error(PERSISTE_E_NOMEM, "workspace: out of memory");
        *sp = s;
    }
    s->cache_valid = 0;
    if (s->cap_nodes >= n_nodes)
        return PERSISTE_OK;
    int rc;
    if ((rc = grow(&s->p, n_nodes, NP * L)) ||
        (rc = grow(&s->in, n_nodes, 2 * L)) ||
        (rc = grow(&s->acd, n_nodes, 6 * L)) ||
        (rc = grow(&s->b, n_nodes, 2 * L)) ||
        (rc = grow(&s->out, n_nodes, 2 * L)) ||
        (rc = grow(&s->cond_branch, n_nodes, 1)))
        return rc;
    s->cap_nodes = n_nodes;
    return PERSISTE_OK;
}

/* e^-x - (1 - e^-x)/x, which cancels for small x: series there. */
static double e_minus_phi(double x, double e, double em)
{
    if (x >= 0.05)
        return e - em / x;
    /* sum_{k>=1} (-x)^k k/(k+1)!, Horner from k = 9 */
    static const double c[10] = {0.0, -1.0 / 2, 1.0 / 3, -1.0 / 8, 1.0 / 30,
                                 -1.0 / 144, 1.0 / 840, -1.0 / 5760,
                                 1.0 / 45360, -1.0 / 403200};
    double r = c[9];
    for (int k = 8; k >= 1; k--)
        r = r * x + c[k];
    return r * x;
}

/* Rates and root prior of the block's lanes. */
struct lanes {
    double gain[L], loss[L], q0[L], q1[L];
    double pi0[L], pi1[L];   /* root prior */
    double dpi_g[L], dpi_l[L]; /* d pi1 / d log gain, d log loss */
    int active[L];
};

static void lanes_init(struct lanes *ln, const struct persiste__job *job,
                       int64_t f0)
{
    const persiste_model *m = job->model;
    for (int l = 0; l < L; l++) {
        int64_t f = f0 + l;
        ln->active[l] = f < job->n_families;
        if (!ln->active[l])
            f = f0; /* padding lanes repeat the first family */
        double g = exp(job->log_gain[f]), u = exp(job->log_loss[f]);
        double s = g + u;
        ln->gain[l] = g;
        ln->loss[l] = u;
        ln->q1[l] = g / s;
        ln->q0[l] = u / s;
        switch (m->root_prior) {
        case PERSISTE_ROOT_FIXED:
            ln->pi1[l] = m->root_freq;
            ln->pi0[l] = 1.0 - m->root_freq;
            ln->dpi_g[l] = ln->dpi_l[l] = 0.0;
            break;
        case PERSISTE_ROOT_ABSENT:
            ln->pi1[l] = 0.0;
            ln->pi0[l] = 1.0;
            ln->dpi_g[l] = ln->dpi_l[l] = 0.0;
            break;
        default:
            ln->pi1[l] = ln->q1[l];
            ln->pi0[l] = ln->q0[l];
            ln->dpi_g[l] = ln->q0[l] * ln->q1[l];
            ln->dpi_l[l] = -ln->dpi_g[l];
        }
    }
}

/* Transition probabilities (and their derivatives) of every branch. */
static void fill_p(const struct persiste__job *job, const struct lanes *ln,
                   double *p)
{
    const persiste_tree *tr = job->tree;
    double tmin = job->model->min_branch_length;
    for (int32_t v = 0; v + 1 < tr->n_nodes; v++) {
        double *pv = p + (size_t)v * NP * L;
        double t = tr->length[v];
        int clamped = t < tmin;
        if (clamped)
            t = tmin;
        for (int l = 0; l < L; l++) {
            double g = ln->gain[l], u = ln->loss[l];
            double q0 = ln->q0[l], q1 = ln->q1[l];
            double x = (g + u) * t, e = exp(-x), em = -expm1(-x);
            pv[P00 * L + l] = q0 + q1 * e;
            pv[P01 * L + l] = q1 * em;
            pv[P10 * L + l] = q0 * em;
            pv[P11 * L + l] = q1 + q0 * e;
            if (!job->gradient)
                continue;
            double gm = e_minus_phi(x, e, em);
            pv[D01G * L + l] = q1 * (q0 * em + g * t * e);
            pv[D01L * L + l] = q1 * u * t * gm;
            pv[D10G * L + l] = q0 * g * t * gm;
            pv[D10L * L + l] = q0 * (q1 * em + u * t * e);
            pv[D01T * L + l] = clamped ? 0.0 : g * e;
            pv[D10T * L + l] = clamped ? 0.0 : u * e;
        }
    }
}

/* Tip partials from the bit-packed data. */
static void fill_tips(const struct persiste__job *job, int64_t f0, double *in)
{
    const persiste_data *d = job->data;
    int32_t nt = job->tree->n_tips;
    int64_t word = f0 / 64;
    int shift = (int)(f0 % 64);
    for (int32_t v = 0; v < nt; v++) {
        double *x = in + (size_t)v * 2 * L;
        unsigned pres = (unsigned)(d->present[word * nt + v] >> shift) & 0xFF;
        unsigned unk = (unsigned)(d->unknown[word * nt + v] >> shift) & 0xFF;
        for (int l = 0; l < L; l++) {
            unsigned pb = (pres >> l) & 1, ub = (unk >> l) & 1;
            x[l] = (double)((pb ^ 1) | ub);
            x[L + l] = (double)(pb | ub);
        }
    }
}

/* Post-order pruning of a pattern; returns per lane the scaled root
 * likelihood in lik[] and the number of 2^256 rescales in nscale[]. */
static void forward(const struct persiste__job *job, const struct lanes *ln,
                    const double *p, double *in, double *lik, int64_t *nscale)
{
    const persiste_tree *tr = job->tree;
    int64_t cnt[L] = {0};
    for (int32_t v = tr->n_tips; v < tr->n_nodes; v++) {
        double a0[L], a1[L];
        for (int l = 0; l < L; l++)
            a0[l] = a1[l] = 1.0;
        for (int32_t k = tr->child_start[v]; k < tr->child_start[v + 1]; k++) {
            int32_t c = tr->children[k];
            const double *pc = p + (size_t)c * NP * L;
            const double *x = in + (size_t)c * 2 * L;
            for (int l = 0; l < L; l++) {
                a0[l] *= pc[P00 * L + l] * x[l] + pc[P01 * L + l] * x[L + l];
                a1[l] *= pc[P10 * L + l] * x[l] + pc[P11 * L + l] * x[L + l];
                /* per child, so even a huge multifurcation cannot underflow */
                double m = a0[l] > a1[l] ? a0[l] : a1[l];
                int r = m < SCALE_LOW && m > 0.0;
                a0[l] *= r ? SCALE_UP : 1.0;
                a1[l] *= r ? SCALE_UP : 1.0;
                cnt[l] += r;
            }
        }
        double *y = in + (size_t)v * 2 * L;
        for (int l = 0; l < L; l++) {
            y[l] = a0[l];
            y[L + l] = a1[l];
        }
    }
    const double *r = in + (size_t)(tr->n_nodes - 1) * 2 * L;
    for (int l = 0; l < L; l++) {
        lik[l] = ln->pi0[l] * r[l] + ln->pi1[l] * r[L + l];
        nscale[l] = cnt[l];
    }
}

/* B(s) = 1 - P(all tips below absent | state s), carried directly so that
 * slow gain (B tiny) loses no digits: 1-(1-B)(1-y) = B + y(1-B).
 * Returns per lane B at the root under the root prior. */
static void forward_absent(const struct persiste__job *job,
                           const struct lanes *ln, const double *p, double *b,
                           double *b_total)
{
    const persiste_tree *tr = job->tree;
    for (int32_t v = 0; v < tr->n_tips; v++) {
        double *x = b + (size_t)v * 2 * L;
        for (int l = 0; l < L; l++) {
            x[l] = 0.0;
            x[L + l] = 1.0;
        }
    }
    for (int32_t v = tr->n_tips; v < tr->n_nodes; v++) {
        double b0[L] = {0}, b1[L] = {0};
        for (int32_t k = tr->child_start[v]; k < tr->child_start[v + 1]; k++) {
            int32_t c = tr->children[k];
            const double *pc = p + (size_t)c * NP * L;
            const double *x = b + (size_t)c * 2 * L;
            for (int l = 0; l < L; l++) {
                double y0 = pc[P00 * L + l] * x[l] + pc[P01 * L + l] * x[L + l];
                double y1 = pc[P10 * L + l] * x[l] + pc[P11 * L + l] * x[L + l];
                b0[l] += y0 * (1.0 - b0[l]);
                b1[l] += y1 * (1.0 - b1[l]);
            }
        }
        double *y = b + (size_t)v * 2 * L;
        for (int l = 0; l < L; l++) {
            y[l] = b0[l];
            y[L + l] = b1[l];
        }
    }
    const double *r = b + (size_t)(tr->n_nodes - 1) * 2 * L;
    for (int l = 0; l < L; l++)
        b_total[l] = ln->pi0[l] * r[l] + ln->pi1[l] * r[L + l];
}

/* P(tips below neither all absent nor all present | state), carried as
 * (a, c, d) = P(all absent), P(all present), P(mixed) per state. Joining two
 * independent subtrees, d = d1 + d2 (1 - d1) + a1 c2 + c1 a2: no term
 * cancels, so short trees, where d is tiny next to a and c, keep every
 * digit (1 - A - C would lose them). a and c may underflow harmlessly.
 * Returns per lane d at the root under the root prior. */
static void forward_variable(const struct persiste__job *job,
                             const struct lanes *ln, const double *p,
                             double *acd, double *d_total)
{
    const persiste_tree *tr = job->tree;
    enum { A0, A1, C0, C1, D0, D1, NV };
    for (int32_t v = 0; v < tr->n_tips; v++) {
        double *x = acd + (size_t)v * NV * L;
        for (int l = 0; l < L; l++) {
            x[A0 * L + l] = 1.0;
            x[C1 * L + l] = 1.0;
            x[A1 * L + l] = x[C0 * L + l] = x[D0 * L + l] = x[D1 * L + l] = 0.0;
        }
    }
    for (int32_t v = tr->n_tips; v < tr->n_nodes; v++) {
        double *y = acd + (size_t)v * NV * L;
        int32_t k0 = tr->child_start[v];
        for (int32_t k = k0; k < tr->child_start[v + 1]; k++) {
            int32_t c = tr->children[k];
            const double *pc = p + (size_t)c * NP * L;
            const double *x = acd + (size_t)c * NV * L;
            for (int s = 0; s < 2; s++) {
                const double *ps = pc + (s ? P10 : P00) * L; /* P_s0, P_s1 */
                for (int l = 0; l < L; l++) {
                    double t0 = ps[l], t1 = ps[L + l];
                    double a2 = t0 * x[A0 * L + l] + t1 * x[A1 * L + l];
                    double c2 = t0 * x[C0 * L + l] + t1 * x[C1 * L + l];
                    double d2 = t0 * x[D0 * L + l] + t1 * x[D1 * L + l];
                    double *a1 = &y[(A0 + s) * L + l], *c1 = &y[(C0 + s) * L + l];
                    double *d1 = &y[(D0 + s) * L + l];
                    if (k == k0) { /* an empty set would be both a and c */
                        *a1 = a2;
                        *c1 = c2;
                        *d1 = d2;
                        continue;
                    }
                    *d1 = *d1 + d2 * (1.0 - *d1) + *a1 * c2 + *c1 * a2;
                    *a1 *= a2;
                    *c1 *= c2;
                }
            }
        }
    }
    const double *r = acd + (size_t)(tr->n_nodes - 1) * NV * L;
    for (int l = 0; l < L; l++)
        d_total[l] = ln->pi0[l] * r[D0 * L + l] + ln->pi1[l] * r[D1 * L + l];
}

/* What the reverse pass differentiates: the family's pattern (scaled
 * partials, ratio form), or, absolutely, P(all tips absent) from s->b or
 * P(all tips present) from the c entries of s->acd. */
enum pass_kind { PASS_PATTERN, PASS_ABSENT, PASS_PRESENT };

/* Per-lane state of a child vector for the reverse pass: the vector that
 * multiplies into the parent (x), and x1 - x0 computed without
 * cancellation. For the all-absent pass x = A = 1 - B and x1 - x0 = B0 - B1. */
static inline void child_vec(enum pass_kind kind, const double *src, int l,
                             double *x0, double *x1, double *dx)
{
    if (kind != PASS_ABSENT) {
        *x0 = src[l];
        *x1 = src[L + l];
        *dx = *x1 - *x0;
    } else {
        *x0 = 1.0 - src[l];
        *x1 = 1.0 - src[L + l];
        *dx = src[l] - src[L + l];
    }
}

static inline void renormalise(double *u0, double *u1)
{
    double m = *u0 > *u1 ? *u0 : *u1;
    int r = m < SCALE_LOW && m > 0.0;
    *u0 *= r ? SCALE_UP : 1.0;
    *u1 *= r ? SCALE_UP : 1.0;
}

/* Reverse (pre-order) pass. PASS_PATTERN adds coef[l] * dlogX/dtheta (ratio
 * form, free scaling); PASS_ABSENT / PASS_PRESENT add coef[l] * dX/dtheta
 * (absolute, no scaling: X <= 1 and what underflows is negligible; exact
 * zeros, e.g. C on a zero-length path from an absent root, keep their
 * nonzero derivatives). theta = log gain
 * (dg), log loss (dl) and, if branch != NULL, each branch length, whose
 * terms are summed over lanes with weights wcoef[l]. */
static void reverse(const struct persiste__job *job, const struct lanes *ln,
                    enum pass_kind kind, const double *p, const double *src,
                    double *out, const double *coef, const double *wcoef,
                    double *dg, double *dl, double *branch)
{
    const persiste_tree *tr = job->tree;
    int scaled = kind == PASS_PATTERN;
    size_t stride = kind == PASS_PRESENT ? 6 * L : 2 * L; /* see struct scratch */
    int32_t root = tr->n_nodes - 1;
    double *o = out + (size_t)root * 2 * L;
    const double *sr = src + (size_t)root * stride;
    for (int l = 0; l < L; l++) {
        double x0, x1, dx;
        child_vec(kind, sr, l, &x0, &x1, &dx);
        double den = scaled ? ln->pi0[l] * x0 + ln->pi1[l] * x1 : 1.0;
        double c = coef[l] != 0.0 ? coef[l] / den : 0.0;
        dg[l] += c * ln->dpi_g[l] * dx;
        dl[l] += c * ln->dpi_l[l] * dx;
        o[l] = ln->pi0[l];
        o[L + l] = ln->pi1[l];
    }
    for (int32_t v = root; v >= tr->n_tips; v--) {
        const double *ov = out + (size_t)v * 2 * L;
        int32_t k0 = tr->child_start[v], k1 = tr->child_start[v + 1];
        /* prefix products of the siblings, parked in the children's slots */
        double r0[L], r1[L];
        for (int l = 0; l < L; l++) {
            r0[l] = ov[l];
            r1[l] = ov[L + l];
        }
        for (int32_t k = k0; k < k1; k++) {
            int32_t c = tr->children[k];
            const double *pc = p + (size_t)c * NP * L;
            const double *sc = src + (size_t)c * stride;
            double *oc = out + (size_t)c * 2 * L;
            for (int l = 0; l < L; l++) {
                oc[l] = r0[l];
                oc[L + l] = r1[l];
                double x0, x1, dx;
                child_vec(kind, sc, l, &x0, &x1, &dx);
                r0[l] *= pc[P00 * L + l] * x0 + pc[P01 * L + l] * x1;
                r1[l] *= pc[P10 * L + l] * x0 + pc[P11 * L + l] * x1;
                if (scaled)
                    renormalise(&r0[l], &r1[l]);
            }
        }
        /* suffix products, then each child's U, its terms and outside */
        for (int l = 0; l < L; l++)
            r0[l] = r1[l] = 1.0;
        for (int32_t k = k1 - 1; k >= k0; k--) {
            int32_t c = tr->children[k];
            const double *pc = p + (size_t)c * NP * L;
            const double *sc = src + (size_t)c * stride;
            double *oc = out + (size_t)c * 2 * L;
            double bt = 0.0;
            for (int l = 0; l < L; l++) {
                double u0 = oc[l] * r0[l], u1 = oc[L + l] * r1[l];
                if (scaled)
                    renormalise(&u0, &u1);
                double x0, x1, dx;
                child_vec(kind, sc, l, &x0, &x1, &dx);
                double f0 = pc[P00 * L + l] * x0 + pc[P01 * L + l] * x1;
                double f1 = pc[P10 * L + l] * x0 + pc[P11 * L + l] * x1;
                double den = scaled ? u0 * f0 + u1 * f1 : 1.0;
                double cf = coef[l] != 0.0 ? coef[l] / den : 0.0;
                dg[l] += cf * dx * (u0 * pc[D01G * L + l] - u1 * pc[D10G * L + l]);
                dl[l] += cf * dx * (u0 * pc[D01L * L + l] - u1 * pc[D10L * L + l]);
                double wf = wcoef[l] != 0.0 ? wcoef[l] / den : 0.0;
                bt += wf * dx * (u0 * pc[D01T * L + l] - u1 * pc[D10T * L + l]);
                r0[l] *= f0;
                r1[l] *= f1;
                if (scaled)
                    renormalise(&r0[l], &r1[l]);
                /* outside of c in its own states: U P_c */
                double w0 = u0 * pc[P00 * L + l] + u1 * pc[P10 * L + l];
                double w1 = u0 * pc[P01 * L + l] + u1 * pc[P11 * L + l];
                if (scaled)
                    renormalise(&w0, &w1);
                oc[l] = w0;
                oc[L + l] = w1;
            }
            if (branch)
                branch[c] += bt;
        }
    }
}

static int lanes_uniform(const struct persiste__job *job, int64_t f0)
{
    int64_t end = f0 + L < job->n_families ? f0 + L : job->n_families;
    for (int64_t f = f0 + 1; f < end; f++)
        if (memcmp(&job->log_gain[f], &job->log_gain[f0], sizeof(double)) ||
            memcmp(&job->log_loss[f], &job->log_loss[f0], sizeof(double)))
            return 0;
    return 1;
}

/* Conditioning of every lane: log P(observable) and 1 / P(observable),
 * the coefficient of its derivative: P(obs) = 1 - A (PRESENT) or
 * 1 - A - C (VARIABLE), so d log P(obs) = -(dA + dC) / P(obs). Fills s->b
 * and, for VARIABLE, s->acd. */
struct cond {
    double log[L], inv[L];
};

static void conditioning(const struct persiste__job *job,
                         const struct lanes *ln, struct persiste__scratch *s,
                         struct cond *cd)
{
    int mode = job->model->condition;
    double obs[L];
    for (int l = 0; l < L; l++)
        obs[l] = 1.0;
    if (mode != PERSISTE_CONDITION_NONE)
        forward_absent(job, ln, s->p, s->b, obs);
    if (mode == PERSISTE_CONDITION_VARIABLE)
        forward_variable(job, ln, s->p, s->acd, obs);
    for (int l = 0; l < L; l++) {
        cd->log[l] = log(obs[l]);
        cd->inv[l] = 1.0 / obs[l];
    }
}

/* Adds the derivatives of -log P(observable), as k[l] * d(A + C)/dtheta
 * with branch terms weighted by wk[l]. */
static void conditioning_reverse(const struct persiste__job *job,
                                 const struct lanes *ln,
                                 struct persiste__scratch *s, const double *k,
                                 const double *wk, double *dg, double *dl,
                                 double *branch)
{
    reverse(job, ln, PASS_ABSENT, s->p, s->b, s->out, k, wk, dg, dl, branch);
    if (job->model->condition == PERSISTE_CONDITION_VARIABLE)
        reverse(job, ln, PASS_PRESENT, s->p, s->acd + 2 * L, s->out, k, wk, dg,
                dl, branch);
}

static void times(const double *a, const double *b, double *out)
{
    for (int l = 0; l < L; l++)
        out[l] = a[l] * b[l];
}

int64_t persiste__eval_block(const struct persiste__job *job,
                             struct persiste__scratch *s, int64_t block,
                             double *branch)
{
    const persiste_tree *tr = job->tree;
    int mode = job->model->condition;
    int64_t f0 = block * L;
    struct lanes ln;
    lanes_init(&ln, job, f0);

    /* A block whose lanes share the rate pair of the worker's previous
     * uniform block reuses its matrices and conditioning. */
    int uniform = lanes_uniform(job, f0);
    int cached = uniform && s->cache_valid &&
                 !memcmp(&s->cache_log_gain, &job->log_gain[f0], sizeof(double)) &&
                 !memcmp(&s->cache_log_loss, &job->log_loss[f0], sizeof(double));
    if (!cached) {
        s->cache_valid = 0;
        fill_p(job, &ln, s->p);
    }

    double lik[L];
    int64_t nscale[L];
    struct cond cd;
    fill_tips(job, f0, s->in);
    forward(job, &ln, s->p, s->in, lik, nscale);
    if (cached) {
        for (int l = 0; l < L; l++) {
            cd.log[l] = s->cache_log_cond;
            cd.inv[l] = s->cache_inv_cond;
        }
    } else {
        conditioning(job, &ln, s, &cd);
    }

    int64_t n_impossible = 0;
    double w[L], coef[L], dg[L] = {0}, dl[L] = {0};
    for (int l = 0; l < L; l++) {
        int possible = lik[l] > 0.0 && isfinite(cd.log[l]);
        w[l] = job->weight && ln.active[l] ? job->weight[f0 + l] : 1.0;
        coef[l] = ln.active[l] && possible ? 1.0 : 0.0;
        if (!ln.active[l])
            continue;
        n_impossible += !possible;
        job->loglik[f0 + l] = possible ? log(lik[l]) - nscale[l] * 256 * LN2 -
                                             cd.log[l]
                                       : -INFINITY;
    }

    if (job->gradient) {
        double wk[L], k[L];
        times(coef, w, wk);
        reverse(job, &ln, PASS_PATTERN, s->p, s->in, s->out, coef, wk, dg, dl,
                branch);
        if (mode != PERSISTE_CONDITION_NONE && uniform) {
            /* one family's normaliser terms, shared by every lane */
            if (!cached) {
                double one[L] = {cd.inv[0]}, cg[L] = {0}, cl[L] = {0};
                memset(s->cond_branch, 0, (size_t)tr->n_nodes * sizeof(double));
                conditioning_reverse(job, &ln, s, one, one, cg, cl,
                                     s->cond_branch);
                s->cache_dcond_g = cg[0];
                s->cache_dcond_l = cl[0];
            }
            double wsum = 0.0;
            for (int l = 0; l < L; l++) {
                dg[l] += coef[l] * s->cache_dcond_g;
                dl[l] += coef[l] * s->cache_dcond_l;
                wsum += wk[l];
            }
            if (branch && wsum != 0.0)
                for (int32_t v = 0; v < tr->n_nodes; v++)
                    branch[v] += wsum * s->cond_branch[v];
        } else if (mode != PERSISTE_CONDITION_NONE) {
            times(coef, cd.inv, k);
            times(wk, cd.inv, wk);
            conditioning_reverse(job, &ln, s, k, wk, dg, dl, branch);
        }
        for (int l = 0; l < L && ln.active[l]; l++) {
            if (job->d_log_gain)
                job->d_log_gain[f0 + l] = dg[l];
            if (job->d_log_loss)
                job->d_log_loss[f0 + l] = dl[l];
        }
    }

    if (uniform && !cached) {
        s->cache_valid = 1;
        s->cache_log_gain = job->log_gain[f0];
        s->cache_log_loss = job->log_loss[f0];
        s->cache_log_cond = cd.log[0];
        s->cache_inv_cond = cd.inv[0];
    }
    return n_impossible;
}
