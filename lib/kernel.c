/* Pruning over one block of families, forward (likelihood) and reverse
 * (exact gradients), with power-of-two rescaling. Families are the lanes of
 * a vector (GCC vector extensions), so one source compiles to AVX-512, AVX2
 * or plain SSE2 code; lib/meson.build builds one copy per instruction set
 * under the name persiste__eval_block_<KERNEL_ISA>.
 *
 * Notation: q1 = gain/s, q0 = loss/s with s = gain + loss; on a branch of
 * length t, e = exp(-s t), em = 1 - e (from expm1):
 *   P00 = q0 + q1 e   P01 = q1 em   P10 = q0 em   P11 = q1 + q0 e
 * Every entry is a sum of non-negative terms, so none cancels.
 *
 * Gradients use the outside vector U at the top of each branch:
 * dL/dtheta through branch c = U . dP_c . x_c, and L = U . P_c . x_c for
 * the same U, so the ratio of the two is exact whatever the scaling of U and
 * x_c: the reverse pass rescales freely and tracks no exponents. */
#include <math.h>
#include <string.h>

#include "kernel.h"

#ifndef KERNEL_ISA
#define KERNEL_ISA generic
#endif
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define EVAL_BLOCK CAT(persiste__eval_block_, KERNEL_ISA)

#define L PERSISTE_LANES
enum { P00 = PERSISTE_P00, P01, P10, P11, D01G, D01L, D10G, D10L, D01T, D10T,
       NP = PERSISTE_NP };
/* Rescale a partial whose larger entry falls below 2^-256 by 2^256: exact. */
#define SCALE_LOW 0x1p-256
#define SCALE_UP 0x1p256
#define LN2 0.693147180559945309417232121458176568

typedef double vd __attribute__((vector_size(L * sizeof(double))));
typedef int64_t vi __attribute__((vector_size(L * sizeof(int64_t))));
typedef uint64_t vu __attribute__((vector_size(L * sizeof(uint64_t))));

static inline vd ld(const double *p)
{
    vd v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void st(double *p, vd v) { memcpy(p, &v, sizeof v); }
static inline vd splat(double x) { return (vd){x, x, x, x, x, x, x, x}; }
static inline vd sel(vi m, vd a, vd b) /* m ? a : b, lane-wise */
{
    return (vd)((m & (vi)a) | (~m & (vi)b));
}
static inline double hsum(vd v) /* fixed order: deterministic */
{
    double s = 0.0;
    for (int l = 0; l < L; l++)
        s += v[l];
    return s;
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
/* Native width: comparisons and masks map to single instructions. */
#include <immintrin.h>
static inline vi lt_nonneg(vd a, vd b) { return a < b; }
static inline vi nonzero(vd a) { return a != 0.0; }
static inline vi lane_mask(unsigned bits)
{
    return (vi)_mm512_movm_epi64((__mmask8)bits);
}
#else
/* Lane masks (all bits set where true) from integer arithmetic: GCC turns
 * vector comparisons wider than the instruction set into scalar code, but
 * splits shifts and logic cleanly. Non-negative doubles order like their
 * bit patterns. */
static inline vi sign_mask(vi x) { return -(vi)((vu)x >> 63); }
static inline vi lt_nonneg(vd a, vd b) { return sign_mask((vi)a - (vi)b); }
static inline vi nonzero(vd a) { return sign_mask(-((vi)a & INT64_MAX)); }
/* Lane l is set where bit l of `bits` is. */
static inline vi lane_mask(unsigned bits)
{
    vu v = (vu){0} + (uint64_t)bits;
    return -(vi)((v >> (vu){0, 1, 2, 3, 4, 5, 6, 7}) & 1);
}
#endif
static inline vd max_nonneg(vd a, vd b) { return sel(lt_nonneg(a, b), b, a); }

/* Keep a partial's larger entry above 2^-256; count the rescales. */
static inline void rescale(vd *a0, vd *a1, vi *cnt)
{
    vd m = max_nonneg(*a0, *a1);
    vi r = lt_nonneg(m, splat(SCALE_LOW)) & nonzero(m);
    vd f = sel(r, splat(SCALE_UP), splat(1.0));
    *a0 *= f;
    *a1 *= f;
    *cnt -= r; /* r is -1 where rescaled */
}
static inline void renormalise(vd *a0, vd *a1)
{
    vi cnt = {0};
    rescale(a0, a1, &cnt);
}

/* Rates and root prior of the block's lanes. */
struct lanes {
    vd gain, loss, q0, q1, pi0, pi1;
    vd dpi_g, dpi_l; /* d pi1 / d log gain, d log loss */
    int n_active;    /* lanes 0 .. n_active-1 hold families */
};

static void lanes_init(struct lanes *ln, const struct persiste__job *job,
                       int64_t f0)
{
    const persiste_model *m = job->model;
    int64_t left = job->n_families - f0;
    ln->n_active = left < L ? (int)left : L;
    for (int l = 0; l < L; l++) {
        int64_t f = l < ln->n_active ? f0 + l : f0; /* padding: a copy */
        double g = exp(job->log_gain[f]), u = exp(job->log_loss[f]);
        double s = g + u, q1 = g / s, q0 = u / s;
        ln->gain[l] = g;
        ln->loss[l] = u;
        ln->q1[l] = q1;
        ln->q0[l] = q0;
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
            ln->pi1[l] = q1;
            ln->pi0[l] = q0;
            ln->dpi_g[l] = q0 * q1;
            ln->dpi_l[l] = -q0 * q1;
        }
    }
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

/* One table entry (stride apart) for gain g, loss u on a branch of length
 * t (clamped: the derivative in t is 0). */
static void transition(double g, double u, double t, int clamped,
                       int gradient, double *pv, size_t stride)
{
    double s = g + u, q1 = g / s, q0 = u / s;
    double x = s * t, e = exp(-x), em = -expm1(-x);
    pv[P00 * stride] = q0 + q1 * e;
    pv[P01 * stride] = q1 * em;
    pv[P10 * stride] = q0 * em;
    pv[P11 * stride] = q1 + q0 * e;
    if (!gradient)
        return;
    double gm = e_minus_phi(x, e, em);
    pv[D01G * stride] = q1 * (q0 * em + g * t * e);
    pv[D01L * stride] = q1 * u * t * gm;
    pv[D10G * stride] = q0 * g * t * gm;
    pv[D10L * stride] = q0 * (q1 * em + u * t * e);
    pv[D01T * stride] = clamped ? 0.0 : g * e;
    pv[D10T * stride] = clamped ? 0.0 : u * e;
}

/* e = exp(-x) and em = 1 - e for x >= 0, lane-wise, each to about an ulp:
 * x = k ln2 - r with |r| <= ln2/2, expm1(-r) by its Taylor series, then
 * e = 2^-k (1 + p) and em = (1 - 2^-k) - 2^-k p, neither of which cancels.
 * (x is clamped at 700, where e is below every other term by far.) */
static inline void exp_pair(vd x, vd *e, vd *em)
{
    const double ln2_hi = 0x1.62e42fee00000p-1, ln2_lo = 0x1.a39ef35793c76p-33;
    x = sel(lt_nonneg(x, splat(700.0)), x, splat(700.0));
    vi k = __builtin_convertvector(x * (1.0 / LN2) + 0.5, vi); /* round */
    vd kd = __builtin_convertvector(k, vd);
    vd r = (kd * ln2_hi - x) + kd * ln2_lo; /* -x + k ln2, |r| <= 0.35 */
    vd p = splat(1.0 / 6227020800.0); /* 1/13! */
    static const double inv_fact[12] = {
        1.0 / 479001600, 1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880,
        1.0 / 40320,     1.0 / 5040,     1.0 / 720,     1.0 / 120,
        1.0 / 24,        1.0 / 6,        1.0 / 2,       1.0};
    for (int i = 0; i < 12; i++)
        p = p * r + inv_fact[i];
    p *= r; /* expm1(r) */
    vd scale = (vd)((1023 - k) << 52); /* 2^-k */
    *e = scale + scale * p;
    *em = (1.0 - scale) - scale * p;
}

/* The transition table entries of branch c for every lane's own pair. */
static void transition_lanes(const struct lanes *ln, double t, int clamped,
                             int gradient, double *pv)
{
    vd g = ln->gain, u = ln->loss, q0 = ln->q0, q1 = ln->q1;
    vd x = (g + u) * t, e, em;
    exp_pair(x, &e, &em);
    st(pv + P00 * L, q0 + q1 * e);
    st(pv + P01 * L, q1 * em);
    st(pv + P10 * L, q0 * em);
    st(pv + P11 * L, q1 + q0 * e);
    if (!gradient)
        return;
    vd gm = e - em / x; /* e_minus_phi, with its series below 0.05 */
    for (int l = 0; l < L; l++)
        if (x[l] < 0.05)
            gm[l] = e_minus_phi(x[l], e[l], em[l]);
    st(pv + D01G * L, q1 * (q0 * em + g * t * e));
    st(pv + D01L * L, q1 * u * t * gm);
    st(pv + D10G * L, q0 * g * t * gm);
    st(pv + D10L * L, q0 * (q1 * em + u * t * e));
    st(pv + D01T * L, clamped ? splat(0.0) : g * e);
    st(pv + D10T * L, clamped ? splat(0.0) : u * e);
}

/* Transition tables of every branch: one pair for the whole block
 * (uniform) or one a lane. */
static void fill_p(const struct persiste__job *job, const struct lanes *ln,
                   int uniform, struct persiste__scratch *s)
{
    const persiste_tree *tr = job->tree;
    double tmin = job->model->min_branch_length;
    for (int32_t v = 0; v + 1 < tr->n_nodes; v++) {
        double t = tr->length[v];
        int clamped = t < tmin;
        if (clamped)
            t = tmin;
        if (uniform)
            transition(ln->gain[0], ln->loss[0], t, clamped, job->gradient,
                       s->p_uni + (size_t)v * NP, 1);
        else
            transition_lanes(ln, t, clamped, job->gradient,
                             s->p_lane + (size_t)v * NP * L);
    }
}

/* Where the kernel reads a branch's table: scalars broadcast to every lane,
 * or one value a lane. */
struct pview {
    const double *uni, *lane;
};

static inline vd pget(const struct pview *pv, int32_t c, int row)
{
    if (pv->uni)
        return splat(pv->uni[(size_t)c * NP + row]);
    return ld(pv->lane + ((size_t)c * NP + row) * L);
}

/* Masks of a tip's cells in the block: observed present, unknown. */
static inline void tip_masks(const struct persiste__job *job, int64_t f0,
                             int32_t tip, vi *present, vi *unknown)
{
    size_t i = (size_t)(f0 / 64) * (size_t)job->tree->n_tips + (size_t)tip;
    int shift = (int)(f0 % 64);
    *present = lane_mask((unsigned)(job->present[i] >> shift) & 0xFF);
    *unknown = lane_mask((unsigned)(job->unknown[i] >> shift) & 0xFF);
}

/* A child's vector in the parent's pruning: for the pattern (x), for
 * P(all absent) (x = A = 1 - B, dx = x1 - x0 = B0 - B1 without
 * cancellation) or P(all present) (x = C). Tips come from bits or are
 * constants. */
enum pass_kind { PASS_PATTERN, PASS_ABSENT, PASS_PRESENT };

struct source {
    enum pass_kind kind;
    const double *buf; /* slot-indexed partials of internal nodes */
    size_t stride;     /* doubles per slot */
    const int32_t *slot;
    const struct persiste__job *job;
    int64_t f0;
};

static inline void child_x(const struct source *src, int32_t c, vd *x0,
                           vd *x1, vd *dx)
{
    int32_t nt = src->job->tree->n_tips;
    if (c < nt) {
        if (src->kind == PASS_PATTERN) {
            vi pm, um;
            tip_masks(src->job, src->f0, c, &pm, &um);
            *x0 = sel(pm & ~um, splat(0.0), splat(1.0));
            *x1 = sel(~pm & ~um, splat(0.0), splat(1.0));
        } else { /* A = (1, 0), C = (0, 1) at a tip */
            *x0 = splat(src->kind == PASS_ABSENT ? 1.0 : 0.0);
            *x1 = splat(src->kind == PASS_ABSENT ? 0.0 : 1.0);
        }
        *dx = *x1 - *x0;
        return;
    }
    const double *p = src->buf + (size_t)src->slot[c] * src->stride;
    vd y0 = ld(p), y1 = ld(p + L);
    if (src->kind == PASS_ABSENT) {
        *x0 = 1.0 - y0;
        *x1 = 1.0 - y1;
        *dx = y0 - y1;
    } else {
        *x0 = y0;
        *x1 = y1;
        *dx = y1 - y0;
    }
}

/* Post-order pruning of the block's pattern into s->in; per lane the scaled
 * root likelihood and the number of 2^256 rescales. */
static void forward(const struct persiste__job *job, const struct lanes *ln,
                    const struct pview *pv, struct persiste__scratch *s,
                    int64_t f0, vd *lik, vi *nscale)
{
    const persiste_tree *tr = job->tree;
    int32_t nt = tr->n_tips;
    vi cnt = {0};
    for (int32_t v = nt; v < tr->n_nodes; v++) {
        vd a0 = splat(1.0), a1 = splat(1.0);
        int32_t k0 = tr->child_start[v], k1 = tr->child_start[v + 1];
        for (int32_t k = k0; k < k1; k++) {
            int32_t c = tr->children[k];
            vd p00 = pget(pv, c, P00), p01 = pget(pv, c, P01);
            vd p10 = pget(pv, c, P10), p11 = pget(pv, c, P11);
            vd f0v, f1v;
            if (c < nt) { /* a tip selects a column of P */
                vi pm, um;
                tip_masks(job, f0, c, &pm, &um);
                f0v = sel(um, splat(1.0), sel(pm, p01, p00));
                f1v = sel(um, splat(1.0), sel(pm, p11, p10));
            } else {
                const double *x = s->in + (size_t)job->slot[c] * 2 * L;
                vd x0 = ld(x), x1 = ld(x + L);
                f0v = p00 * x0 + p01 * x1;
                f1v = p10 * x0 + p11 * x1;
            }
            a0 *= f0v;
            a1 *= f1v;
            /* a product of more than two factors is kept in range as it
             * grows, so even a huge multifurcation cannot underflow */
            if (k1 - k0 > 2)
                rescale(&a0, &a1, &cnt);
        }
        if (k1 - k0 <= 2)
            rescale(&a0, &a1, &cnt);
        double *y = s->in + (size_t)job->slot[v] * 2 * L;
        st(y, a0);
        st(y + L, a1);
    }
    /* the root's vector (a tip only in a one-node tree) */
    struct source root = {PASS_PATTERN, s->in, 2 * L, job->slot, job, f0};
    vd r0, r1, dx;
    child_x(&root, tr->n_nodes - 1, &r0, &r1, &dx);
    *lik = ln->pi0 * r0 + ln->pi1 * r1;
    *nscale = cnt;
}

/* B(s) = 1 - P(all tips below absent | state s), carried directly so that
 * slow gain (B tiny) loses no digits: 1-(1-B)(1-y) = B + y(1-B).
 * Returns per lane B at the root under the root prior. */
static vd forward_absent(const struct persiste__job *job,
                         const struct lanes *ln, const struct pview *pv,
                         double *b)
{
    const persiste_tree *tr = job->tree;
    int32_t nt = tr->n_tips;
    for (int32_t v = nt; v < tr->n_nodes; v++) {
        vd b0 = {0}, b1 = {0};
        for (int32_t k = tr->child_start[v]; k < tr->child_start[v + 1]; k++) {
            int32_t c = tr->children[k];
            vd y0 = pget(pv, c, P01), y1 = pget(pv, c, P11); /* tip: (0, 1) */
            if (c >= nt) {
                const double *x = b + (size_t)job->slot[c] * 2 * L;
                vd x0 = ld(x), x1 = ld(x + L);
                y0 = pget(pv, c, P00) * x0 + y0 * x1;
                y1 = pget(pv, c, P10) * x0 + y1 * x1;
            }
            b0 += y0 * (1.0 - b0);
            b1 += y1 * (1.0 - b1);
        }
        double *y = b + (size_t)job->slot[v] * 2 * L;
        st(y, b0);
        st(y + L, b1);
    }
    if (tr->n_nodes == nt) /* one node: B = (0, 1) */
        return ln->pi1;
    const double *r = b + (size_t)job->slot[tr->n_nodes - 1] * 2 * L;
    return ln->pi0 * ld(r) + ln->pi1 * ld(r + L);
}

/* P(tips below neither all absent nor all present | state), carried as
 * (a, c, d) = P(all absent), P(all present), P(mixed) per state. Joining two
 * independent subtrees, d = d1 + d2 (1 - d1) + a1 c2 + c1 a2: no term
 * cancels, so short trees, where d is tiny next to a and c, keep every
 * digit (1 - A - C would lose them). a and c may underflow harmlessly.
 * With gradients, the derivatives in log gain and log loss are carried
 * along (forward mode): d(A + C) from the reverse passes would cancel just
 * where d is tiny. acd is [slot][value, d/dlog gain, d/dlog loss][NV][L].
 * Returns per lane d at the root under the root prior, and in dd[2] its
 * derivatives. */
enum { A0, A1, C0, C1, D0, D1, NV, NT = 3 };

static vd forward_variable(const struct persiste__job *job,
                           const struct lanes *ln, const struct pview *pv,
                           double *acd, vd *dd)
{
    const persiste_tree *tr = job->tree;
    int32_t nt = tr->n_tips;
    int nc = job->gradient ? NT : 1;
    for (int32_t v = nt; v < tr->n_nodes; v++) {
        vd y[NT][NV] = {{{0}}}; /* set by the first child */
        int32_t k0 = tr->child_start[v];
        for (int32_t k = k0; k < tr->child_start[v + 1]; k++) {
            int32_t c = tr->children[k];
            vd x[NT][NV] = {{splat(1.0), {0}, {0}, splat(1.0), {0}, {0}}};
            if (c >= nt) /* else a tip: constants, no derivatives */
                for (int j = 0; j < nc; j++)
                    for (int i = 0; i < NV; i++)
                        x[j][i] = ld(acd + (((size_t)job->slot[c] * NT + j) *
                                                NV + i) * L);
            for (int st0 = 0; st0 < 2; st0++) {
                vd t0 = pget(pv, c, st0 ? P10 : P00);
                vd t1 = pget(pv, c, st0 ? P11 : P01);
                /* the child's (a, c, d) seen from state st0, and tangents:
                 * d t1 = -d t0 (rows of P sum to 1) */
                vd z[NT][3];
                for (int j = 0; j < nc; j++)
                    for (int i = 0; i < 3; i++)
                        z[j][i] = t0 * x[j][2 * i] + t1 * x[j][2 * i + 1];
                for (int j = 1; j < nc; j++) {
                    vd dt1 = pget(pv, c, st0 ? (j == 1 ? D10G : D10L)
                                             : (j == 1 ? D01G : D01L));
                    if (st0)
                        dt1 = -dt1;
                    for (int i = 0; i < 3; i++)
                        z[j][i] += dt1 * (x[0][2 * i + 1] - x[0][2 * i]);
                }
                if (k == k0) { /* an empty set would be both a and c */
                    for (int j = 0; j < nc; j++)
                        for (int i = 0; i < 3; i++)
                            y[j][2 * i + st0] = z[j][i];
                    continue;
                }
                vd a1 = y[0][A0 + st0], c1 = y[0][C0 + st0];
                vd d1 = y[0][D0 + st0];
                for (int j = 1; j < nc; j++) {
                    vd da = y[j][A0 + st0], dc = y[j][C0 + st0];
                    vd dd1 = y[j][D0 + st0];
                    y[j][D0 + st0] = dd1 * (1.0 - z[0][2]) +
                                     z[j][2] * (1.0 - d1) + da * z[0][1] +
                                     a1 * z[j][1] + dc * z[0][0] + c1 * z[j][0];
                    y[j][A0 + st0] = da * z[0][0] + a1 * z[j][0];
                    y[j][C0 + st0] = dc * z[0][1] + c1 * z[j][1];
                }
                y[0][D0 + st0] = d1 + z[0][2] * (1.0 - d1) + a1 * z[0][1] +
                                 c1 * z[0][0];
                y[0][A0 + st0] = a1 * z[0][0];
                y[0][C0 + st0] = c1 * z[0][1];
            }
        }
        for (int j = 0; j < nc; j++)
            for (int i = 0; i < NV; i++)
                st(acd + (((size_t)job->slot[v] * NT + j) * NV + i) * L,
                   y[j][i]);
    }
    dd[0] = dd[1] = splat(0.0);
    if (tr->n_nodes == nt) /* one node: never mixed */
        return splat(0.0);
    const double *r = acd + (size_t)job->slot[tr->n_nodes - 1] * NT * NV * L;
    vd r0 = ld(r + D0 * L), r1 = ld(r + D1 * L);
    for (int j = 1; j < nc; j++) {
        const double *rj = r + (size_t)j * NV * L;
        dd[j - 1] = (j == 1 ? ln->dpi_g : ln->dpi_l) * (r1 - r0) +
                    ln->pi0 * ld(rj + D0 * L) + ln->pi1 * ld(rj + D1 * L);
    }
    return ln->pi0 * r0 + ln->pi1 * r1;
}

/* Reverse (pre-order) pass. PASS_PATTERN adds coef * dlogX/dtheta (ratio
 * form, free scaling); PASS_ABSENT / PASS_PRESENT add coef * dX/dtheta
 * (absolute, no scaling: X <= 1 and what underflows is negligible; exact
 * zeros, e.g. C on a zero-length path from an absent root, keep their
 * nonzero derivatives). theta = log gain (dg), log loss (dl) and, if
 * branch != NULL, each branch length, whose terms weighted by wcoef are
 * added lane-wise to branch[node][lane]. s->out holds the outside vectors. */
static void reverse(const struct persiste__job *job, const struct lanes *ln,
                    const struct pview *pv, const struct source *src,
                    struct persiste__scratch *s, vd coef, vd wcoef, vd *dg,
                    vd *dl, double *branch)
{
    const persiste_tree *tr = job->tree;
    int scaled = src->kind == PASS_PATTERN;
    vi use = nonzero(coef), wuse = nonzero(wcoef);
    int32_t root = tr->n_nodes - 1;
    {
        vd x0, x1, dx;
        child_x(src, root, &x0, &x1, &dx);
        vd den = scaled ? ln->pi0 * x0 + ln->pi1 * x1 : splat(1.0);
        vd c = sel(use, coef / den, splat(0.0));
        *dg += c * ln->dpi_g * dx;
        *dl += c * ln->dpi_l * dx;
        st(s->out + (size_t)root * 2 * L, ln->pi0);
        st(s->out + (size_t)root * 2 * L + L, ln->pi1);
    }
    for (int32_t v = root; v >= tr->n_tips; v--) {
        const double *ov = s->out + (size_t)v * 2 * L;
        int32_t k0 = tr->child_start[v], k1 = tr->child_start[v + 1];
        int many = k1 - k0 > 2;
        /* prefix products of the siblings, parked in the children's slots */
        vd r0 = ld(ov), r1 = ld(ov + L);
        for (int32_t k = k0; k < k1; k++) {
            int32_t c = tr->children[k];
            double *oc = s->out + (size_t)c * 2 * L;
            st(oc, r0);
            st(oc + L, r1);
            vd x0, x1, dx;
            child_x(src, c, &x0, &x1, &dx);
            r0 *= pget(pv, c, P00) * x0 + pget(pv, c, P01) * x1;
            r1 *= pget(pv, c, P10) * x0 + pget(pv, c, P11) * x1;
            if (scaled && many) /* else each U is renormalised itself */
                renormalise(&r0, &r1);
        }
        /* suffix products, then each child's U, its terms and outside */
        r0 = r1 = splat(1.0);
        for (int32_t k = k1 - 1; k >= k0; k--) {
            int32_t c = tr->children[k];
            double *oc = s->out + (size_t)c * 2 * L;
            vd p00 = pget(pv, c, P00), p01 = pget(pv, c, P01);
            vd p10 = pget(pv, c, P10), p11 = pget(pv, c, P11);
            vd u0 = ld(oc) * r0, u1 = ld(oc + L) * r1;
            if (scaled)
                renormalise(&u0, &u1);
            vd x0, x1, dx;
            child_x(src, c, &x0, &x1, &dx);
            vd f0 = p00 * x0 + p01 * x1, f1 = p10 * x0 + p11 * x1;
            vd rd = dx;
            if (scaled)
                rd = dx / (u0 * f0 + u1 * f1);
            vd cf = sel(use, coef * rd, splat(0.0));
            *dg += cf * (u0 * pget(pv, c, D01G) - u1 * pget(pv, c, D10G));
            *dl += cf * (u0 * pget(pv, c, D01L) - u1 * pget(pv, c, D10L));
            if (branch) {
                vd wf = sel(wuse, wcoef * rd, splat(0.0));
                double *bc = branch + (size_t)c * L;
                st(bc, ld(bc) + wf * (u0 * pget(pv, c, D01T) -
                                      u1 * pget(pv, c, D10T)));
            }
            r0 *= f0;
            r1 *= f1;
            if (scaled && many)
                renormalise(&r0, &r1);
            if (c < tr->n_tips)
                continue;
            /* outside of c in its own states: U P_c */
            vd w0 = u0 * p00 + u1 * p10, w1 = u0 * p01 + u1 * p11;
            if (scaled)
                renormalise(&w0, &w1);
            st(oc, w0);
            st(oc + L, w1);
        }
    }
}

/* Conditioning of every lane: log P(observable), and 1 / P(observable),
 * the coefficient of its derivatives: P(obs) = 1 - A (PRESENT) or
 * 1 - A - C (VARIABLE), so d log P(obs) = -(dA + dC) / P(obs) in the
 * reverse passes. For VARIABLE the rate derivatives of -log P(obs) come
 * from forward mode instead (dnorm). Fills s->b and, for VARIABLE, s->acd. */
struct cond {
    vd log, inv, dnorm[2];
};

static void conditioning(const struct persiste__job *job,
                         const struct lanes *ln, const struct pview *pv,
                         struct persiste__scratch *s, struct cond *cd)
{
    int mode = job->model->condition;
    vd obs = splat(1.0), dd[2] = {{0}, {0}};
    if (mode != PERSISTE_CONDITION_NONE)
        obs = forward_absent(job, ln, pv, s->b);
    if (mode == PERSISTE_CONDITION_VARIABLE)
        obs = forward_variable(job, ln, pv, s->acd, dd);
    for (int l = 0; l < L; l++)
        cd->log[l] = log(obs[l]);
    cd->inv = 1.0 / obs;
    cd->dnorm[0] = -dd[0] * cd->inv;
    cd->dnorm[1] = -dd[1] * cd->inv;
}

/* Adds the derivatives of -log P(observable): k * d(A + C)/dtheta, branch
 * terms weighted by wk; for VARIABLE, the rate terms are coef * dnorm. */
static void conditioning_reverse(const struct persiste__job *job,
                                 const struct lanes *ln,
                                 const struct pview *pv,
                                 struct persiste__scratch *s,
                                 const struct cond *cd, vd coef, vd wk,
                                 vd *dg, vd *dl, double *branch)
{
    vd k = coef * cd->inv, wa = wk * cd->inv;
    struct source a = {PASS_ABSENT, s->b, 2 * L, job->slot, job, 0};
    if (job->model->condition != PERSISTE_CONDITION_VARIABLE) {
        reverse(job, ln, pv, &a, s, k, wa, dg, dl, branch);
        return;
    }
    *dg += coef * cd->dnorm[0];
    *dl += coef * cd->dnorm[1];
    if (!branch)
        return;
    vd ig = {0}, il = {0}; /* rate terms: already counted */
    struct source c = {PASS_PRESENT, s->acd + C0 * L, NT * NV * L, job->slot,
                       job, 0};
    reverse(job, ln, pv, &a, s, k, wa, &ig, &il, branch);
    reverse(job, ln, pv, &c, s, k, wa, &ig, &il, branch);
}

static int lanes_uniform(const struct persiste__job *job, int64_t f0, int n)
{
    for (int64_t f = f0 + 1; f < f0 + n; f++)
        if (memcmp(&job->log_gain[f], &job->log_gain[f0], sizeof(double)) ||
            memcmp(&job->log_loss[f], &job->log_loss[f0], sizeof(double)))
            return 0;
    return 1;
}

void EVAL_BLOCK(const struct persiste__job *job, struct persiste__scratch *s,
                int64_t block, double *branch)
{
    const persiste_tree *tr = job->tree;
    int mode = job->model->condition;
    int64_t f0 = block * L;
    struct lanes ln;
    lanes_init(&ln, job, f0);

    /* A block whose lanes share one rate pair uses one table, and reuses
     * the table and conditioning of the worker's previous such block. */
    int uniform = lanes_uniform(job, f0, ln.n_active);
    int cached = uniform && s->cache_valid &&
                 !memcmp(&s->cache_log_gain, &job->log_gain[f0], sizeof(double)) &&
                 !memcmp(&s->cache_log_loss, &job->log_loss[f0], sizeof(double));
    struct pview pv = {uniform ? s->p_uni : NULL, s->p_lane};
    if (!cached) {
        s->cache_valid = 0;
        fill_p(job, &ln, uniform, s);
    }

    vd lik;
    vi nscale;
    struct cond cd;
    forward(job, &ln, &pv, s, f0, &lik, &nscale);
    if (cached) {
        cd.log = splat(s->cache_log_cond);
        cd.inv = splat(s->cache_inv_cond);
    } else {
        conditioning(job, &ln, &pv, s, &cd);
    }

    vd coef = {0}, w = splat(1.0), dg = {0}, dl = {0};
    for (int l = 0; l < ln.n_active; l++) {
        int possible = lik[l] > 0.0 && isfinite(cd.log[l]);
        if (job->weight)
            w[l] = job->weight[f0 + l];
        coef[l] = possible ? 1.0 : 0.0;
        job->loglik[f0 + l] = possible ? log(lik[l]) -
                                             (double)nscale[l] * 256 * LN2 -
                                             cd.log[l]
                                       : -INFINITY;
    }

    if (job->gradient) {
        vd wk = coef * w;
        struct source x = {PASS_PATTERN, s->in, 2 * L, job->slot, job, f0};
        reverse(job, &ln, &pv, &x, s, coef, wk, &dg, &dl, branch);
        if (mode != PERSISTE_CONDITION_NONE && uniform) {
            /* one family's normaliser terms, shared by every lane */
            size_t n = (size_t)tr->n_nodes;
            if (!cached) { /* lane 0 only, then packed to one per node */
                vd one = {1.0}, cg = {0}, cl = {0};
                memset(s->cond_branch, 0, n * L * sizeof(double));
                conditioning_reverse(job, &ln, &pv, s, &cd, one, one, &cg, &cl,
                                     s->cond_branch);
                for (size_t v = 0; v < n; v++)
                    s->cond_branch[v] = s->cond_branch[v * L];
                s->cache_dcond_g = cg[0];
                s->cache_dcond_l = cl[0];
            }
            dg += coef * s->cache_dcond_g;
            dl += coef * s->cache_dcond_l;
            double wsum = hsum(wk);
            if (branch && wsum != 0.0)
                for (size_t v = 0; v < n; v++)
                    branch[v * L] += wsum * s->cond_branch[v];
        } else if (mode != PERSISTE_CONDITION_NONE) {
            conditioning_reverse(job, &ln, &pv, s, &cd, coef, wk, &dg, &dl,
                                 branch);
        }
        for (int l = 0; l < ln.n_active; l++) {
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
}
