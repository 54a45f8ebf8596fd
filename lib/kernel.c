/* Pruning over one block of families, forward (likelihood) and reverse
 * (exact gradients), with power-of-two rescaling. Families are the lanes of
 * vectors of W doubles (GCC vector extensions), so one source compiles to
 * AVX-512, AVX2 or plain SSE2 code; lib/meson.build builds one copy per
 * instruction set and job kind, persiste__eval_block_<ISA>_<lik|grad>. A
 * block is V such vectors: each node's work is done for the V vectors in turn,
 * independent chains the processor overlaps, while the walk over the tree
 * (indices, tables, tip bits) is paid once per block.
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
#ifndef KERNEL_LANES /* families per block: PERSISTE_LANES_LIK or _GRAD */
#define KERNEL_LANES PERSISTE_LANES_GRAD
#define KERNEL_KIND grad
#define KERNEL_GRADIENT 1
#endif
#define EVAL_BLOCK CAT(CAT(persiste__eval_block_, KERNEL_ISA), CAT(_, KERNEL_KIND))

#define L KERNEL_LANES
#define W PERSISTE_VECTOR_LANES /* lanes per vector */
#define V (L / W)         /* vectors per block */
#define FOR_V for (int j = 0; j < V; j++)
enum { P00 = PERSISTE_P00, P01, P10, P11, D01G, D01L, D10G, D10L, D01T, D10T };
#if KERNEL_GRADIENT /* table rows and (a, c, d) layers the buffers hold */
#define NP PERSISTE_NP
#define NT 3
#else
#define NP PERSISTE_NP_LIK
#define NT 1
#endif
/* Rescale a partial whose larger entry falls below 2^-256 by 2^256: exact. */
#define SCALE_LOW 0x1p-256
#define SCALE_UP 0x1p256
/* Smallest denominator of a binary node's terms divided without care. */
#define DEN_LOW 0x1p-700
#define LN2 0.693147180559945309417232121458176568

typedef double vd __attribute__((vector_size(W * sizeof(double))));
typedef int64_t vi __attribute__((vector_size(W * sizeof(int64_t))));
typedef uint64_t vu __attribute__((vector_size(W * sizeof(uint64_t))));
/* A block's worth of lane values, as vectors or one by one. */
typedef union {
    vd v[V];
    double d[L];
} vb;

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
/* Helpers some kernels do not use are marked unused: clang warns of them. */
static inline __attribute__((unused)) double hsum(vd v) /* fixed order: deterministic */
{
    double s = 0.0;
    for (int l = 0; l < W; l++)
        s += v[l];
    return s;
}
static inline double *lane(vb *x, int l) { return &x->d[l]; }
static inline vb vb_splat(double x)
{
    vb r;
    FOR_V r.v[j] = splat(x);
    return r;
}

#if defined(__AVX512F__)
/* Native width: comparisons map to single instructions, tip masks to
 * k-registers (tip_select, keep_where), the child masks to gathers. */
#include <immintrin.h>
static inline vi lt_nonneg(vd a, vd b) { return a < b; }
static inline __attribute__((unused)) vi nonzero(vd a) { return a != 0.0; }
/* Whether a < b in some lane (a, b non-negative). */
static inline int any_lt(vd a, vd b)
{
    return _mm512_cmp_pd_mask((__m512d)a, (__m512d)b, _CMP_LT_OQ) != 0;
}
/* Whether no lane of a mask is set. */
static inline __attribute__((unused)) int all_zero(vi m)
{
    return _mm512_test_epi64_mask((__m512i)m, (__m512i)m) == 0;
}
#else
/* Lane masks (all bits set where true) from integer arithmetic: GCC turns
 * vector comparisons wider than the instruction set into scalar code, but
 * splits shifts and logic cleanly. Non-negative doubles order like their
 * bit patterns. */
static inline vi sign_mask(vi x) { return -(vi)((vu)x >> 63); }
static inline vi lt_nonneg(vd a, vd b) { return sign_mask((vi)a - (vi)b); }
static inline __attribute__((unused)) vi nonzero(vd a) { return sign_mask(-((vi)a & INT64_MAX)); }
/* Lane l is set where bit l of `bits` is. */
static inline vi lane_mask(unsigned bits)
{
    vu v = (vu){0} + (uint64_t)bits;
    return -(vi)((v >> (vu){0, 1, 2, 3, 4, 5, 6, 7}) & 1);
}
static inline __attribute__((unused)) int all_zero(vi m)
{
    int64_t r = m[0];
    for (int l = 1; l < W; l++)
        r |= m[l];
    return r == 0;
}
static inline int any_lt(vd a, vd b)
{
    return !all_zero(lt_nonneg(a, b));
}
#endif

static inline vd vmin_nonneg(vd a, vd b)
{
#if defined(__AVX512F__)
    return (vd)_mm512_min_pd((__m512d)a, (__m512d)b);
#else
    return sel(lt_nonneg(a, b), a, b);
#endif
}

/* Keep a partial's entries' sum above 2^-256; count the rescales. */
static inline void rescale(vd *a0, vd *a1, vi *cnt)
{
    /* the sum stands for the larger entry (within 2x); a zero partial is
     * rescaled harmlessly: its family is impossible whatever the count */
    vi r = lt_nonneg(*a0 + *a1, splat(SCALE_LOW));
    vd f = sel(r, splat(SCALE_UP), splat(1.0));
    *a0 *= f;
    *a1 *= f;
    *cnt -= r; /* r is -1 where rescaled */
}
static inline __attribute__((unused)) void renormalise(vd *a0, vd *a1)
{
    vi cnt = {0};
    rescale(a0, a1, &cnt);
}

/* Rates and root prior of the block's lanes. */
struct lanes {
    vb gain, loss, q0, q1, pi0, pi1;
    vb inv_s;        /* 1 / (gain + loss) */
    vb dpi_g, dpi_l; /* d pi1 / d log gain, d log loss */
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
        double pi1 = q1, pi0 = q0, dpi = q0 * q1;
        if (m->root_prior != PERSISTE_ROOT_STATIONARY) {
            pi1 = m->root_prior == PERSISTE_ROOT_FIXED ? m->root_freq : 0.0;
            pi0 = 1.0 - pi1;
            dpi = 0.0;
        }
        *lane(&ln->gain, l) = g;
        *lane(&ln->loss, l) = u;
        *lane(&ln->q1, l) = q1;
        *lane(&ln->q0, l) = q0;
        *lane(&ln->inv_s, l) = 1.0 / s;
        *lane(&ln->pi1, l) = pi1;
        *lane(&ln->pi0, l) = pi0;
        *lane(&ln->dpi_g, l) = dpi;
        *lane(&ln->dpi_l, l) = -dpi;
    }
}

/* e^-x - (1 - e^-x)/x, which cancels for small x: a series there,
 * sum_{k>=1} (-x)^k k/(k+1)! (to k = 9: exact to an ulp below 0.05). */
#define EMP_SERIES_MAX 0.05
static const double emp_coef[10] = {0.0,         -1.0 / 2,   1.0 / 3,
                                    -1.0 / 8,    1.0 / 30,   -1.0 / 144,
                                    1.0 / 840,   -1.0 / 5760, 1.0 / 45360,
                                    -1.0 / 403200};

/* t (e^-x - phi(x)) with x = s t: by the series for small x, else as
 * t e^-x - (1 - e^-x)/s, which stays finite for huge t. */
static double t_emp(double x, double t, double s, double e, double em)
{
    if (x >= EMP_SERIES_MAX)
        return t * e - em / s;
    double r = emp_coef[9];
    for (int k = 8; k >= 1; k--)
        r = r * x + emp_coef[k];
    return t * (r * x);
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
    double te = t * e, tgm = t_emp(x, t, s, e, em); /* never inf * 0 */
    pv[D01G * stride] = q1 * (q0 * em + g * te);
    pv[D01L * stride] = q1 * u * tgm;
    pv[D10G * stride] = q0 * g * tgm;
    pv[D10L * stride] = q0 * (q1 * em + u * te);
    pv[D01T * stride] = clamped ? 0.0 : g * e;
    pv[D10T * stride] = clamped ? 0.0 : u * e;
}

/* t[idx] lane-wise, for idx in 0..7: one permute with AVX-512. */
static inline vd lookup8(const double t[8], vi idx)
{
#if defined(__AVX512F__)
    return (vd)_mm512_permutexvar_pd((__m512i)idx, _mm512_loadu_pd(t));
#else
    vd r;
    for (int l = 0; l < W; l++)
        r[l] = t[idx[l]];
    return r;
#endif
}

/* e = exp(-x) and em = 1 - e for x >= 0, lane-wise, to a few ulps (a
 * sweep of x against long double: e 1.1, em 3.8 at most): x = n ln2/8 - r
 * with |r| <= ln2/16 and n = 8k + i, expm1(-r) = p by its Taylor series
 * (degree 8), 2^(-i/8) = T_hi + T_lo from a table, then
 *   e = 2^-k (T_hi + (T_lo + T_hi p)),
 *   em = (1 - 2^-k T_hi) - 2^-k (T_lo + T_hi p),
 * where 1 - 2^-k T_hi is exact for k = 0 (Sterbenz) and at least 1/2
 * otherwise: neither cancels. Beyond x = 700, e is 0 and em 1 with
 * exact_tail; without, e is exp(-700) ~ 1e-304 there, as good for a
 * transition probability and two operations cheaper (derivatives multiply
 * e by branch lengths that may be huge: they need the exact 0). */
static inline void exp_pair_tail(vd x, vd *e, vd *em, int exact_tail)
{
    const double step_hi = 0x1.62e42fef00000p-4; /* ln2/8, n step_hi exact */
    const double step_lo = 0x1.473de6af278edp-37;
    static const double t_hi[8] = {
        0x1.0000000000000p+0, 0x1.d5818dcfba487p-1, 0x1.ae89f995ad3adp-1,
        0x1.8ace5422aa0dbp-1, 0x1.6a09e667f3bcdp-1, 0x1.4bfdad5362a27p-1,
        0x1.306fe0a31b715p-1, 0x1.172b83c7d517bp-1};
    static const double t_lo[8] = {
        0.0,                   0x1.2ed02d75b3707p-56, 0x1.7a1cd345dcc81p-55,
        0x1.6e9f156864b27p-55, -0x1.bdd3413b26456p-55, 0x1.d4397afec42e2p-57,
        0x1.6f46ad23182e4p-56, -0x1.19041b9d78a76p-56};
    vi big = ~lt_nonneg(x, splat(700.0));
    x = exact_tail ? sel(big, splat(700.0), x) : vmin_nonneg(x, splat(700.0));
    /* n = round(x 8/ln2) <= 8080: adding 1.5 2^52 rounds it into the low
     * bits of the mantissa, no conversion needed */
    const double shifter = 0x1.8p52;
    vd t = x * (8.0 / LN2) + shifter;
    vd nd = t - shifter;
    vi n = (vi)t - (vi)splat(shifter);
    vd r = (nd * step_hi - x) + nd * step_lo; /* -x + n ln2/8 */
    vd p = splat(1.0 / 40320); /* 1/8! */
    static const double inv_fact[7] = {1.0 / 5040, 1.0 / 720, 1.0 / 120,
                                       1.0 / 24,   1.0 / 6,   1.0 / 2, 1.0};
    for (int i = 0; i < 7; i++)
        p = p * r + inv_fact[i];
    p *= r; /* expm1(r) */
    vi idx = n & 7;
    vd th = lookup8(t_hi, idx), tl = lookup8(t_lo, idx);
    vd scale = (vd)((1023 - (n >> 3)) << 52); /* 2^-k */
    vd tail = tl + th * p;
    *e = scale * (th + tail);
    *em = (1.0 - scale * th) - scale * tail;
    if (exact_tail) {
        *e = sel(big, splat(0.0), *e);
        *em = sel(big, splat(1.0), *em);
    }
}
#if KERNEL_GRADIENT
static inline void exp_pair(vd x, vd *e, vd *em)
{
    exp_pair_tail(x, e, em, 1);
}

/* t_emp lane-wise (both forms computed, one kept). */
static inline vd t_emp_v(vd x, double t, vd inv_s, vd e, vd em)
{
    vd r = splat(emp_coef[9]);
    for (int k = 8; k >= 1; k--)
        r = r * x + emp_coef[k];
    return sel(lt_nonneg(x, splat(EMP_SERIES_MAX)), t * (r * x),
               t * e - em * inv_s);
}

/* What a gradient kernel keeps of branch c's tables for lanes of their own
 * rates: e, em and t (e - phi) (lane tables have PERSISTE_NP_LANE rows);
 * prows_lanes builds every row from them. Ten rows a branch would not stay
 * in cache. */
enum { LE, LEM, LTGM };
static void transition_lanes(const struct lanes *ln, double t, double *pv)
{
    FOR_V {
        vd x = (ln->gain.v[j] + ln->loss.v[j]) * t, e, em;
        double *p = pv + j * W;
        exp_pair(x, &e, &em);
        st(p + LE * L, e);
        st(p + LEM * L, em);
        st(p + LTGM * L, t_emp_v(x, t, ln->inv_s.v[j], e, em));
    }
}
#endif

/* Transition tables of every branch for a block whose lanes share one
 * rate pair (lanes of their own rates build theirs as they go: see
 * pview). */
static void fill_p(const struct persiste__job *job, const struct lanes *ln,
                   struct persiste__scratch *s)
{
    const persiste_tree *tr = job->tree;
    double tmin = job->model->min_branch_length;
    for (int32_t v = 0; v + 1 < tr->n_nodes; v++) {
        double t = tr->length[v];
        int clamped = t < tmin;
        if (clamped)
            t = tmin;
        transition(ln->gain.v[0][0], ln->loss.v[0][0], t, clamped,
                   job->gradient, s->p_uni + (size_t)v * NP, 1);
    }
}

/* Where the kernel finds a branch's table: scalars broadcast to every lane,
 * or, for lanes of their own rates, built when needed from the lanes' rates
 * (likelihood kernels) or from the three rows transition_lanes kept
 * (gradient kernels): whole tables of every branch would not stay in
 * cache. */
struct pview {
    const double *uni;
    double *lane;
    const struct lanes *ln;
    const persiste_tree *tree;
    double tmin;
    int fill; /* gradients: the forward walk computes the lane rows */
};

#if !KERNEL_GRADIENT
/* Rows P00..P11 of branch c, one pair a lane. */
static inline void prows_compute(const struct pview *pv, int32_t c,
                                 vd p[][V])
{
    double t = pv->tree->length[c];
    t = t < pv->tmin ? pv->tmin : t;
    FOR_V {
        vd q0 = pv->ln->q0.v[j], q1 = pv->ln->q1.v[j], e, em;
        exp_pair_tail((pv->ln->gain.v[j] + pv->ln->loss.v[j]) * t, &e, &em,
                      0);
        p[P00][j] = q0 + q1 * e;
        p[P01][j] = q1 * em;
        p[P10][j] = q0 * em;
        p[P11][j] = q1 + q0 * e;
    }
}
#endif

#if KERNEL_GRADIENT
/* Rows 0..n-1 of branch c's table, one pair a lane, from what
 * transition_lanes kept (the branch length is clamped: its D..T rows are
 * then 0). */
static inline void prows_lanes(const struct pview *pv, int32_t c, int n,
                               vd p[][V])
{
    double *r = pv->lane + (size_t)c * PERSISTE_NP_LANE * L;
    double t = pv->tree->length[c];
    int clamped = t < pv->tmin;
    t = clamped ? pv->tmin : t;
    if (pv->fill) /* each branch once, as the forward walk reaches it */
        transition_lanes(pv->ln, t, r);
    FOR_V {
        const struct lanes *ln = pv->ln;
        vd q0 = ln->q0.v[j], q1 = ln->q1.v[j];
        vd e = ld(r + LE * L + j * W), em = ld(r + LEM * L + j * W);
        p[P00][j] = q0 + q1 * e;
        p[P01][j] = q1 * em;
        p[P10][j] = q0 * em;
        p[P11][j] = q1 + q0 * e;
        if (n <= PERSISTE_NP_LIK)
            continue;
        vd g = ln->gain.v[j], u = ln->loss.v[j], te = t * e;
        vd tgm = ld(r + LTGM * L + j * W);
        p[D01G][j] = q1 * (q0 * em + g * te);
        p[D01L][j] = q1 * u * tgm;
        p[D10G][j] = q0 * g * tgm;
        p[D10L][j] = q0 * (q1 * em + u * te);
        p[D01T][j] = clamped ? splat(0.0) : g * e;
        p[D10T][j] = clamped ? splat(0.0) : u * e;
    }
}
#endif

/* Rows 0..n-1 of branch c's table for every vector of the block (one
 * broadcast each when the block shares a pair). */
static inline void prows(const struct pview *pv, int32_t c, int n, vd p[][V])
{
#if KERNEL_GRADIENT
    if (!pv->uni) {
        prows_lanes(pv, c, n, p);
        return;
    }
#else /* n is 4 */
    if (!pv->uni && !pv->lane) {
        prows_compute(pv, c, p);
        return;
    }
#endif
    for (int r = 0; r < n; r++) {
        if (pv->uni) {
            vd b = splat(pv->uni[(size_t)c * NP + r]);
            FOR_V p[r][j] = b;
        } else {
            FOR_V p[r][j] = ld(pv->lane + ((size_t)c * NP + r) * L + j * W);
        }
    }
}

/* A tip's cells in the block: bits observed present, unknown. */
struct tip_bits {
    uint64_t present, unknown;
};

static inline struct tip_bits tip_bits(const struct persiste__job *job,
                                       int64_t f0, int32_t tip)
{
    size_t i = (size_t)(f0 / 64) * (size_t)job->tree->n_tips + (size_t)tip;
    int shift = (int)(f0 % 64); /* blocks of L lanes never straddle a word */
    return (struct tip_bits){job->present[i] >> shift,
                             job->unknown[i] >> shift};
}

/* Lane-wise, for vector j of a tip: 1 where unknown, else `present` where
 * observed present and `absent` where observed absent. */
static inline vd tip_select(struct tip_bits b, int j, vd absent, vd present)
{
    unsigned p = (unsigned)(b.present >> (j * W)) & 0xFF;
    unsigned u = (unsigned)(b.unknown >> (j * W)) & 0xFF;
#if defined(__AVX512F__)
    vd r = (vd)_mm512_mask_blend_pd((__mmask8)p, (__m512d)absent,
                                    (__m512d)present);
    if (b.unknown) /* most matrices have no unknown cells */
        r = (vd)_mm512_mask_blend_pd((__mmask8)u, (__m512d)r,
                                     _mm512_set1_pd(1.0));
    return r;
#else
    vd r = sel(lane_mask(p), present, absent);
    if (b.unknown)
        r = sel(lane_mask(u), splat(1.0), r);
    return r;
#endif
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

static inline void child_x(const struct source *src, int32_t c, int j,
                           vd *x0, vd *x1, vd *dx)
{
    int32_t nt = src->job->tree->n_tips;
    if (c < nt) {
        if (src->kind == PASS_PATTERN) {
            struct tip_bits tb = tip_bits(src->job, src->f0, c);
            *x0 = tip_select(tb, j, splat(1.0), splat(0.0));
            *x1 = tip_select(tb, j, splat(0.0), splat(1.0));
        } else { /* A = (1, 0), C = (0, 1) at a tip */
            *x0 = splat(src->kind == PASS_ABSENT ? 1.0 : 0.0);
            *x1 = splat(src->kind == PASS_ABSENT ? 0.0 : 1.0);
        }
        *dx = *x1 - *x0;
        return;
    }
    const double *p = src->buf + (size_t)src->slot[c] * src->stride + j * W;
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

/* A child's lanes whose x0 (not observed present) and x1 (not observed
 * absent) keep their value in the block; all lanes for an internal node. */
struct child_bits {
    uint64_t keep0, keep1;
};

/* The block's child_bits of every child, by its position k in the children
 * array, into s->keep0 and s->keep1: gathered once per block with AVX-512
 * (one instruction per 8 children) rather than found child by child in the
 * walk, where the index, load, shift and complement of each cost more than
 * the child's arithmetic. */
static void child_masks(const struct persiste__job *job, int64_t f0,
                        uint64_t *keep0, uint64_t *keep1)
{
    const persiste_tree *tr = job->tree;
    int32_t nt = tr->n_tips, n_ch = tr->n_nodes - 1;
    const uint64_t *pw = job->present + (size_t)(f0 / 64) * (size_t)nt;
    const uint64_t *uw = job->unknown + (size_t)(f0 / 64) * (size_t)nt;
    int shift = (int)(f0 % 64); /* blocks of L lanes never straddle a word */
    int32_t k = 0;
#if defined(__AVX512F__)
    __m512i ntv = _mm512_set1_epi64(nt), ones = _mm512_set1_epi64(-1);
    __m128i sh = _mm_cvtsi32_si128(shift);
    for (; k + 8 <= n_ch; k += 8) {
        __m512i c = _mm512_cvtepi32_epi64(
            _mm256_loadu_si256((const __m256i *)(tr->children + k)));
        __mmask8 tip = _mm512_cmplt_epi64_mask(c, ntv);
        __m512i p = _mm512_srl_epi64(
            _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), tip, c, pw, 8),
            sh);
        __m512i pu = p;
        if (job->any_unknown)
            pu = _mm512_or_si512(
                p, _mm512_srl_epi64(_mm512_mask_i64gather_epi64(
                                        _mm512_setzero_si512(), tip, c, uw, 8),
                                    sh));
        _mm512_storeu_si512(keep0 + k, _mm512_xor_si512(p, ones));
        _mm512_storeu_si512(keep1 + k, _mm512_mask_mov_epi64(ones, tip, pu));
    }
#endif
    for (; k < n_ch; k++) {
        int32_t c = tr->children[k];
        if (c >= nt) {
            keep0[k] = keep1[k] = ~(uint64_t)0;
            continue;
        }
        uint64_t p = pw[c] >> shift;
        uint64_t u = job->any_unknown ? uw[c] >> shift : 0;
        keep0[k] = ~p;
        keep1[k] = p | u;
    }
}

/* x with the lanes of vector j whose bit in bits is clear zeroed. */
static inline vd keep_where(uint64_t bits, int j, vd x)
{
#if defined(__AVX512F__)
    return (vd)_mm512_maskz_mov_pd((__mmask8)(bits >> (j * W)), (__m512d)x);
#else
    return (vd)((vi)x & lane_mask((unsigned)(bits >> (j * W)) & 0xFF));
#endif
}

/* Child c's factor in its parent's product, lane-wise for vector j:
 * f = P_c x_c. A tip's slot holds ones (see persiste__assign_slots), which
 * its bits turn into (1, 0) where absent, (0, 1) where present. */
static inline void factor(const struct persiste__job *job, const double *in,
                          struct child_bits cb, int32_t c, vd p[][V], int j,
                          vd *f0v, vd *f1v)
{
    const double *x = in + (size_t)job->slot[c] * 2 * L + j * W;
    vd x0 = keep_where(cb.keep0, j, ld(x));
    vd x1 = keep_where(cb.keep1, j, ld(x + L));
    *f0v = p[P00][j] * x0 + p[P01][j] * x1;
    *f1v = p[P10][j] * x0 + p[P11][j] * x1;
}

/* Node v's partial with a rescale after every child, stored at y: the
 * slow path, for the rare nodes whose plain product fell below 2^-256 in
 * some lane (and might have underflowed on the way). */
static __attribute__((noinline)) void node_rescaled(
    const struct persiste__job *job, const struct pview *pv,
    const struct persiste__scratch *s, int32_t v, double *y, vi *cnt)
{
    const double *in = s->in;
    const persiste_tree *tr = job->tree;
    vd a0[V], a1[V];
    FOR_V a0[j] = a1[j] = splat(1.0);
    for (int32_t k = tr->child_start[v]; k < tr->child_start[v + 1]; k++) {
        int32_t c = tr->children[k];
        vd p[4][V];
        prows(pv, c, 4, p);
        struct child_bits cb = {s->keep0[k], s->keep1[k]};
        FOR_V {
            vd f0v, f1v;
            factor(job, in, cb, c, p, j, &f0v, &f1v);
            a0[j] *= f0v;
            a1[j] *= f1v;
            rescale(&a0[j], &a1[j], &cnt[j]);
        }
    }
    FOR_V {
        st(y + j * W, a0[j]);
        st(y + L + j * W, a1[j]);
    }
}

/* Post-order pruning of the block's pattern into s->in; per lane the scaled
 * root likelihood and the number of 2^256 rescales. A node's children are
 * multiplied without rescaling and the product checked once: partials stay
 * at most 1 and every factor's larger entry is far from underflow, so a
 * node rarely needs node_rescaled.
 * With want_b, the same walk (and the same tables) also fills s->b with
 * B(s) = 1 - P(all tips below absent | state s), carried directly so that
 * slow gain (B tiny) loses no digits: 1-(1-B)(1-y) = B + y(1-B). */
static void forward(const struct persiste__job *job, const struct lanes *ln,
                    const struct pview *pv, struct persiste__scratch *s,
                    int64_t f0, int want_b, vb *lik, vi *nscale)
{
    const persiste_tree *tr = job->tree;
    int32_t nt = tr->n_tips;
    vi cnt[V] = {{0}};
    /* the tips' slot: x = (1, 1) masked by the tip's bits, B = (0, 1) */
    size_t tips = (size_t)job->slot[0] * 2 * L;
    for (int i = 0; i < 2 * L; i++) {
        s->in[tips + i] = 1.0;
        if (want_b)
            s->b[tips + i] = i < L ? 0.0 : 1.0;
    }
    for (int32_t v = nt; v < tr->n_nodes; v++) {
        vd a0[V], a1[V], b0[V] = {{0}}, b1[V] = {{0}};
        int32_t k0 = tr->child_start[v], k1 = tr->child_start[v + 1];
        FOR_V a0[j] = a1[j] = splat(1.0);
        for (int32_t k = k0; k < k1; k++) {
            int32_t c = tr->children[k];
            vd p[4][V];
            prows(pv, c, 4, p);
            struct child_bits cb = {s->keep0[k], s->keep1[k]};
            FOR_V {
                vd f0v, f1v;
                factor(job, s->in, cb, c, p, j, &f0v, &f1v);
                a0[j] *= f0v; /* the first product by 1 is exact */
                a1[j] *= f1v;
            }
            if (want_b) {
                const double *x = s->b + (size_t)job->slot[c] * 2 * L;
                FOR_V {
                    vd x0 = ld(x + j * W), x1 = ld(x + L + j * W);
                    vd y0 = p[P00][j] * x0 + p[P01][j] * x1;
                    vd y1 = p[P10][j] * x0 + p[P11][j] * x1;
                    b0[j] += y0 * (1.0 - b0[j]);
                    b1[j] += y1 * (1.0 - b1[j]);
                }
            }
        }
        if (want_b) {
            double *y = s->b + (size_t)job->slot[v] * 2 * L;
            FOR_V {
                st(y + j * W, b0[j]);
                st(y + L + j * W, b1[j]);
            }
        }
        double *y = s->in + (size_t)job->slot[v] * 2 * L;
        vd m = a0[0] + a1[0];
        for (int j = 1; j < V; j++)
            m = vmin_nonneg(m, a0[j] + a1[j]);
        if (any_lt(m, splat(SCALE_LOW))) {
            node_rescaled(job, pv, s, v, y, cnt);
            continue;
        }
        FOR_V {
            st(y + j * W, a0[j]);
            st(y + L + j * W, a1[j]);
        }
    }
    /* the root's vector (a tip only in a one-node tree) */
    struct source root = {PASS_PATTERN, s->in, 2 * L, job->slot, job, f0};
    FOR_V {
        vd r0, r1, dx;
        child_x(&root, tr->n_nodes - 1, j, &r0, &r1, &dx);
        lik->v[j] = ln->pi0.v[j] * r0 + ln->pi1.v[j] * r1;
        nscale[j] = cnt[j];
    }
}

/* B at the root under the root prior, per lane (see forward). */
static vb absent_root(const struct persiste__job *job, const struct lanes *ln,
                      const double *b)
{
    const persiste_tree *tr = job->tree;
    if (tr->n_nodes == tr->n_tips) /* one node: B = (0, 1) */
        return ln->pi1;
    const double *r = b + (size_t)job->slot[tr->n_nodes - 1] * 2 * L;
    vb out;
    FOR_V out.v[j] = ln->pi0.v[j] * ld(r + j * W) + ln->pi1.v[j] * ld(r + L + j * W);
    return out;
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
enum { A0, A1, C0, C1, D0, D1, NV };

static vb forward_variable(const struct persiste__job *job,
                           const struct lanes *ln, const struct pview *pv,
                           double *acd, vb *dd)
{
    const persiste_tree *tr = job->tree;
    int32_t nt = tr->n_tips;
    int nc = NT; /* the value, and derivatives for gradients */
    const size_t per_slot = (size_t)NT * NV * L;
    for (int32_t v = nt; v < tr->n_nodes; v++) {
        vd y[V][NT][NV] = {{{{0}}}}; /* set by the first child */
        int32_t k0 = tr->child_start[v];
        for (int32_t k = k0; k < tr->child_start[v + 1]; k++) {
            int32_t c = tr->children[k];
            vd p[PERSISTE_NP][V];
            prows(pv, c, NP, p);
            FOR_V {
                vd x[NT][NV] = {{splat(1.0), {0}, {0}, splat(1.0), {0}, {0}}};
                if (c >= nt) /* else a tip: constants, no derivatives */
                    for (int d = 0; d < nc; d++)
                        for (int i = 0; i < NV; i++)
                            x[d][i] = ld(acd + job->slot[c] * per_slot +
                                         ((size_t)d * NV + i) * L + j * W);
                for (int st0 = 0; st0 < 2; st0++) {
                    vd t0 = p[st0 ? P10 : P00][j];
                    vd t1 = p[st0 ? P11 : P01][j];
                    /* the child's (a, c, d) seen from state st0, and
                     * tangents: d t1 = -d t0 (rows of P sum to 1) */
                    vd z[NT][3];
                    for (int d = 0; d < nc; d++)
                        for (int i = 0; i < 3; i++)
                            z[d][i] = t0 * x[d][2 * i] + t1 * x[d][2 * i + 1];
                    for (int d = 1; d < nc; d++) {
                        vd dt1 = p[st0 ? (d == 1 ? D10G : D10L)
                                       : (d == 1 ? D01G : D01L)][j];
                        if (st0)
                            dt1 = -dt1;
                        for (int i = 0; i < 3; i++)
                            z[d][i] += dt1 * (x[0][2 * i + 1] - x[0][2 * i]);
                    }
                    vd(*yj)[NV] = y[j];
                    if (k == k0) { /* an empty set would be both a and c */
                        for (int d = 0; d < nc; d++)
                            for (int i = 0; i < 3; i++)
                                yj[d][2 * i + st0] = z[d][i];
                        continue;
                    }
                    vd a1 = yj[0][A0 + st0], c1 = yj[0][C0 + st0];
                    vd d1 = yj[0][D0 + st0];
                    for (int d = 1; d < nc; d++) {
                        vd da = yj[d][A0 + st0], dc = yj[d][C0 + st0];
                        vd dd1 = yj[d][D0 + st0];
                        yj[d][D0 + st0] = dd1 * (1.0 - z[0][2]) +
                                          z[d][2] * (1.0 - d1) + da * z[0][1] +
                                          a1 * z[d][1] + dc * z[0][0] +
                                          c1 * z[d][0];
                        yj[d][A0 + st0] = da * z[0][0] + a1 * z[d][0];
                        yj[d][C0 + st0] = dc * z[0][1] + c1 * z[d][1];
                    }
                    yj[0][D0 + st0] = d1 + z[0][2] * (1.0 - d1) +
                                      a1 * z[0][1] + c1 * z[0][0];
                    yj[0][A0 + st0] = a1 * z[0][0];
                    yj[0][C0 + st0] = c1 * z[0][1];
                }
            }
        }
        FOR_V for (int d = 0; d < nc; d++) for (int i = 0; i < NV; i++)
            st(acd + job->slot[v] * per_slot + ((size_t)d * NV + i) * L + j * W,
               y[j][d][i]);
    }
    vb out = vb_splat(0.0);
    dd[0] = dd[1] = vb_splat(0.0);
    if (tr->n_nodes == nt) /* one node: never mixed */
        return out;
    const double *r = acd + job->slot[tr->n_nodes - 1] * per_slot;
    FOR_V {
        vd r0 = ld(r + D0 * L + j * W), r1 = ld(r + D1 * L + j * W);
        for (int d = 1; d < nc; d++) {
            const double *rd = r + (size_t)d * NV * L + j * W;
            dd[d - 1].v[j] =
                (d == 1 ? ln->dpi_g.v[j] : ln->dpi_l.v[j]) * (r1 - r0) +
                ln->pi0.v[j] * ld(rd + D0 * L) + ln->pi1.v[j] * ld(rd + D1 * L);
        }
        out.v[j] = ln->pi0.v[j] * r0 + ln->pi1.v[j] * r1;
    }
    return out;
}

#if KERNEL_GRADIENT /* the likelihood kernels have no reverse pass */
/* The terms of node v's children, any number of them: prefix and suffix
 * products of the siblings' factors give each child's U. */
static void reverse_node(const struct persiste__job *job,
                         const struct pview *pv, const struct source *src,
                         struct persiste__scratch *s, int32_t v,
                         const vi *use, const vb *coef, const vi *wuse,
                         const vb *wcoef, vb *dg, vb *dl, double *branch)
{
    const persiste_tree *tr = job->tree;
    int scaled = src->kind == PASS_PATTERN;
    const double *ov = s->out + (size_t)job->oslot[v] * 2 * L;
    int32_t k0 = tr->child_start[v], k1 = tr->child_start[v + 1];
    int many = k1 - k0 > 2;
    /* prefix products of the siblings, parked with each child's factors
     * (fx: f0, f1, x1 - x0, prefix0, prefix1) */
    vd r0[V], r1[V];
    FOR_V {
        r0[j] = ld(ov + j * W);
        r1[j] = ld(ov + L + j * W);
        /* reverse_binary leaves outsides as small as 2^-1000: bring them
         * back above 2^-256 (each step is exact) before any product */
        for (int i = 0; scaled && i < 3; i++)
            renormalise(&r0[j], &r1[j]);
    }
    for (int32_t k = k0; k < k1; k++) {
        int32_t c = tr->children[k];
        vd p[4][V];
        prows(pv, c, 4, p);
        double *fk = s->fx + (size_t)k * 5 * L; /* kept for the suffix */
        FOR_V {
            st(fk + 3 * L + j * W, r0[j]);
            st(fk + 4 * L + j * W, r1[j]);
            vd x0, x1, dx;
            child_x(src, c, j, &x0, &x1, &dx);
            vd f0 = p[P00][j] * x0 + p[P01][j] * x1;
            vd f1 = p[P10][j] * x0 + p[P11][j] * x1;
            st(fk + j * W, f0);
            st(fk + L + j * W, f1);
            st(fk + 2 * L + j * W, dx);
            r0[j] *= f0;
            r1[j] *= f1;
            if (scaled && many) /* else each U is renormalised itself */
                renormalise(&r0[j], &r1[j]);
        }
    }
    /* suffix products, then each child's U, its terms and outside */
    FOR_V r0[j] = r1[j] = splat(1.0);
    for (int32_t k = k1 - 1; k >= k0; k--) {
        int32_t c = tr->children[k];
        double *oc = s->out + (size_t)job->oslot[c] * 2 * L;
        vd p[PERSISTE_NP][V];
        prows(pv, c, NP, p);
        const double *fk = s->fx + (size_t)k * 5 * L;
        FOR_V {
            vd p00 = p[P00][j], p01 = p[P01][j];
            vd p10 = p[P10][j], p11 = p[P11][j];
            vd u0 = ld(fk + 3 * L + j * W) * r0[j];
            vd u1 = ld(fk + 4 * L + j * W) * r1[j];
            if (scaled)
                renormalise(&u0, &u1);
            vd f0 = ld(fk + j * W), f1 = ld(fk + L + j * W);
            vd dx = ld(fk + 2 * L + j * W);
            vd rd = dx;
            if (scaled)
                rd = dx / (u0 * f0 + u1 * f1);
            vd cf = sel(use[j], coef->v[j] * rd, splat(0.0));
            dg->v[j] += cf * (u0 * p[D01G][j] - u1 * p[D10G][j]);
            dl->v[j] += cf * (u0 * p[D01L][j] - u1 * p[D10L][j]);
            if (branch) {
                vd wf = sel(wuse[j], wcoef->v[j] * rd, splat(0.0));
                double *bc = branch + (size_t)c * W;
                st(bc, ld(bc) + wf * (u0 * p[D01T][j] - u1 * p[D10T][j]));
            }
            r0[j] *= f0;
            r1[j] *= f1;
            if (scaled && many)
                renormalise(&r0[j], &r1[j]);
            if (c < tr->n_tips)
                continue;
            /* outside of c in its own states: U P_c */
            vd w0 = u0 * p00 + u1 * p10, w1 = u0 * p01 + u1 * p11;
            if (scaled)
                renormalise(&w0, &w1);
            st(oc + j * W, w0);
            st(oc + L + j * W, w1);
        }
    }
}

/* The terms of binary node v's two children in the pattern's pass: each
 * child's U is the node's outside times its sibling's factor, so both share
 * U . f = outside . product, one division for the node. Returns 0, having
 * changed nothing, where that denominator is too small to divide by safely
 * (reverse_node then renormalises as it goes). */
static inline __attribute__((always_inline)) int reverse_binary(const struct persiste__job *job,
                                 const struct pview *pv,
                                 struct persiste__scratch *s,
                                 int32_t v, const vi *use, const vb *coef,
                                 const vi *wuse, const vb *wcoef, vb *dg,
                                 vb *dl, double *branch)
{
    const persiste_tree *tr = job->tree;
    int32_t k0 = tr->child_start[v];
    int32_t c[2] = {tr->children[k0], tr->children[k0 + 1]};
    struct child_bits cb[2] = {{s->keep0[k0], s->keep1[k0]},
                               {s->keep0[k0 + 1], s->keep1[k0 + 1]}};
    vd p[2][PERSISTE_NP][V];
    prows(pv, c[0], NP, p[0]);
    prows(pv, c[1], NP, p[1]);
    const double *ov = s->out + (size_t)job->oslot[v] * 2 * L;
    vd f[2][2][V], dx[2][V], inv[V];
    vi bad = {0};
    FOR_V {
        for (int i = 0; i < 2; i++) {
            const double *x = s->in + (size_t)job->slot[c[i]] * 2 * L + j * W;
            vd x0 = keep_where(cb[i].keep0, j, ld(x));
            vd x1 = keep_where(cb[i].keep1, j, ld(x + L));
            f[i][0][j] = p[i][P00][j] * x0 + p[i][P01][j] * x1;
            f[i][1][j] = p[i][P10][j] * x0 + p[i][P11][j] * x1;
            dx[i][j] = x1 - x0;
        }
        vd den = ld(ov + j * W) * f[0][0][j] * f[1][0][j] +
                 ld(ov + L + j * W) * f[0][1][j] * f[1][1][j];
        bad |= use[j] & lt_nonneg(den, splat(DEN_LOW));
        inv[j] = 1.0 / den;
    }
    if (!all_zero(bad))
        return 0;
    vd bt[2] = {{0}}; /* the children's branch terms, vectors added */
    FOR_V {
        vd o0 = ld(ov + j * W), o1 = ld(ov + L + j * W);
        vd r = sel(use[j], coef->v[j] * inv[j], splat(0.0));
        vd wr = sel(wuse[j], wcoef->v[j] * inv[j], splat(0.0));
        for (int i = 0; i < 2; i++) {
            vd(*pc)[V] = p[i];
            vd u0 = o0 * f[1 - i][0][j], u1 = o1 * f[1 - i][1][j];
            vd t = dx[i][j] * r;
            dg->v[j] += t * (u0 * pc[D01G][j] - u1 * pc[D10G][j]);
            dl->v[j] += t * (u0 * pc[D01L][j] - u1 * pc[D10L][j]);
            bt[i] += dx[i][j] * wr * (u0 * pc[D01T][j] - u1 * pc[D10T][j]);
            /* outside of c in its own states, U P_c (also for a tip,
             * unread, rather than a branch no one could predict), not
             * renormalised: this node's denominator was at least
             * DEN_LOW, so U's larger entry is at least DEN_LOW / 2 and
             * W's at least min(P00, P11) DEN_LOW / 2 > 2^-1000 (P's
             * diagonal is at least e^-200 in the rates' domain); a child
             * whose denominator then falls below DEN_LOW takes
             * reverse_node, which renormalises */
            vd w0 = u0 * pc[P00][j] + u1 * pc[P10][j];
            vd w1 = u0 * pc[P01][j] + u1 * pc[P11][j];
            double *oc = s->out + (size_t)job->oslot[c[i]] * 2 * L + j * W;
            st(oc, w0);
            st(oc + L, w1);
        }
    }
    if (branch)
        for (int i = 0; i < 2; i++) {
            double *bc = branch + (size_t)c[i] * W;
            st(bc, ld(bc) + bt[i]);
        }
    return 1;
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
                    struct persiste__scratch *s, const vb *coef,
                    const vb *wcoef, vb *dg, vb *dl, double *branch)
{
    const persiste_tree *tr = job->tree;
    int scaled = src->kind == PASS_PATTERN;
    vi use[V], wuse[V];
    FOR_V {
        use[j] = nonzero(coef->v[j]);
        wuse[j] = nonzero(wcoef->v[j]);
    }
    int32_t root = tr->n_nodes - 1;
    FOR_V {
        vd x0, x1, dx;
        child_x(src, root, j, &x0, &x1, &dx);
        vd pi0 = ln->pi0.v[j], pi1 = ln->pi1.v[j];
        vd den = scaled ? pi0 * x0 + pi1 * x1 : splat(1.0);
        vd c = sel(use[j], coef->v[j] / den, splat(0.0));
        dg->v[j] += c * ln->dpi_g.v[j] * dx;
        dl->v[j] += c * ln->dpi_l.v[j] * dx;
        double *o = s->out + (size_t)job->oslot[root] * 2 * L;
        st(o + j * W, pi0);
        st(o + L + j * W, pi1);
    }
    /* sums in registers: through memory, each node's addition would wait
     * for the previous node's store */
    vb g = vb_splat(0.0), l = vb_splat(0.0);
    for (int32_t v = root; v >= tr->n_tips; v--) {
        int binary = tr->child_start[v + 1] - tr->child_start[v] == 2;
        if (scaled && binary &&
            reverse_binary(job, pv, s, v, use, coef, wuse, wcoef,
                           &g, &l, branch))
            continue;
        vb ng = vb_splat(0.0), nl = vb_splat(0.0);
        reverse_node(job, pv, src, s, v, use, coef, wuse, wcoef, &ng, &nl,
                     branch);
        FOR_V {
            g.v[j] += ng.v[j];
            l.v[j] += nl.v[j];
        }
    }
    FOR_V {
        dg->v[j] += g.v[j];
        dl->v[j] += l.v[j];
    }
}

#endif

/* Conditioning of every lane: log P(observable), and 1 / P(observable),
 * the coefficient of its derivatives: P(obs) = 1 - A (PRESENT) or
 * 1 - A - C (VARIABLE), so d log P(obs) = -(dA + dC) / P(obs) in the
 * reverse passes. For VARIABLE the rate derivatives of -log P(obs) come
 * from forward mode instead (dnorm). Reads s->b (filled by forward) and,
 * for VARIABLE, fills s->acd. */
struct cond {
    vb log, inv, dnorm[2];
};

static void conditioning(const struct persiste__job *job,
                         const struct lanes *ln, const struct pview *pv,
                         struct persiste__scratch *s, struct cond *cd)
{
    int mode = job->model->condition;
    vb obs = vb_splat(1.0), dd[2] = {vb_splat(0.0), vb_splat(0.0)};
    if (mode != PERSISTE_CONDITION_NONE)
        obs = absent_root(job, ln, s->b);
    if (mode == PERSISTE_CONDITION_VARIABLE)
        obs = forward_variable(job, ln, pv, s->acd, dd);
    for (int l = 0; l < L; l++)
        *lane(&cd->log, l) = log(*lane(&obs, l));
    FOR_V {
        cd->inv.v[j] = 1.0 / obs.v[j];
        cd->dnorm[0].v[j] = -dd[0].v[j] * cd->inv.v[j];
        cd->dnorm[1].v[j] = -dd[1].v[j] * cd->inv.v[j];
    }
}

#if KERNEL_GRADIENT
/* Adds the derivatives of -log P(observable): k * d(A + C)/dtheta, branch
 * terms weighted by wk; for VARIABLE, the rate terms are coef * dnorm. */
static void conditioning_reverse(const struct persiste__job *job,
                                 const struct lanes *ln,
                                 const struct pview *pv,
                                 struct persiste__scratch *s,
                                 const struct cond *cd, const vb *coef,
                                 const vb *wk, vb *dg, vb *dl, double *branch)
{
    vb k, wa; /* lanes left out (coef 0) stay out even where inv is inf */
    FOR_V {
        vi on = nonzero(coef->v[j]);
        k.v[j] = sel(on, coef->v[j] * cd->inv.v[j], splat(0.0));
        wa.v[j] = sel(on, wk->v[j] * cd->inv.v[j], splat(0.0));
    }
    struct source a = {PASS_ABSENT, s->b, 2 * L, job->slot, job, 0};
    if (job->model->condition != PERSISTE_CONDITION_VARIABLE) {
        reverse(job, ln, pv, &a, s, &k, &wa, dg, dl, branch);
        return;
    }
    FOR_V {
        vi on = nonzero(coef->v[j]);
        dg->v[j] += sel(on, coef->v[j] * cd->dnorm[0].v[j], splat(0.0));
        dl->v[j] += sel(on, coef->v[j] * cd->dnorm[1].v[j], splat(0.0));
    }
    if (!branch)
        return;
    vb ig = vb_splat(0.0), il = vb_splat(0.0); /* rate terms: counted */
    struct source c = {PASS_PRESENT, s->acd + C0 * L, NT * NV * L, job->slot,
                       job, 0};
    reverse(job, ln, pv, &a, s, &k, &wa, &ig, &il, branch);
    reverse(job, ln, pv, &c, s, &k, &wa, &ig, &il, branch);
}
#endif

static int lanes_uniform(const struct persiste__job *job, int64_t f0, int n)
{
    for (int64_t f = f0 + 1; f < f0 + n; f++)
        if (memcmp(&job->log_gain[f], &job->log_gain[f0], sizeof(double)) ||
            memcmp(&job->log_loss[f], &job->log_loss[f0], sizeof(double)))
            return 0;
    return 1;
}

#if KERNEL_GRADIENT
/* The block's derivatives: the pattern's reverse pass, then the
 * normaliser's (for a uniform block computed once per pair and cached). */
static void gradient(const struct persiste__job *job,
                     struct persiste__scratch *s, const struct lanes *ln,
                     const struct pview *pv, const struct cond *cd,
                     int uniform, int cached, int64_t f0, const vb *coef,
                     const vb *w, double *branch)
{
    size_t n = (size_t)job->tree->n_nodes;
    int mode = job->model->condition;
    vb wk, dg = vb_splat(0.0), dl = vb_splat(0.0);
    FOR_V wk.v[j] = coef->v[j] * w->v[j];
    struct source x = {PASS_PATTERN, s->in, 2 * L, job->slot, job, f0};
    reverse(job, ln, pv, &x, s, coef, &wk, &dg, &dl, branch);
    if (mode != PERSISTE_CONDITION_NONE && uniform) {
        if (!cached) { /* lane 0 only, then packed to one per node */
            vb one = vb_splat(0.0), cg = vb_splat(0.0), cl = vb_splat(0.0);
            *lane(&one, 0) = 1.0;
            memset(s->cond_branch, 0, n * W * sizeof(double));
            conditioning_reverse(job, ln, pv, s, cd, &one, &one, &cg, &cl,
                                 s->cond_branch);
            for (size_t v = 0; v < n; v++)
                s->cond_branch[v] = s->cond_branch[v * W];
            s->cache_dcond_g = *lane(&cg, 0);
            s->cache_dcond_l = *lane(&cl, 0);
        }
        double wsum = 0.0;
        FOR_V {
            vi on = nonzero(coef->v[j]);
            dg.v[j] += sel(on, coef->v[j] * s->cache_dcond_g, splat(0.0));
            dl.v[j] += sel(on, coef->v[j] * s->cache_dcond_l, splat(0.0));
            wsum += hsum(wk.v[j]);
        }
        if (branch && wsum != 0.0)
            for (size_t v = 0; v < n; v++)
                branch[v * W] += wsum * s->cond_branch[v];
    } else if (mode != PERSISTE_CONDITION_NONE) {
        conditioning_reverse(job, ln, pv, s, cd, coef, &wk, &dg, &dl, branch);
    }
    for (int l = 0; l < ln->n_active; l++) {
        if (job->d_log_gain)
            job->d_log_gain[f0 + l] = *lane(&dg, l);
        if (job->d_log_loss)
            job->d_log_loss[f0 + l] = *lane(&dl, l);
    }
}
#endif

/* Ask for the tip bits of this block and the next: the tree's walk reads
 * them in an order the hardware prefetcher cannot follow. */
static void prefetch_bits(const struct persiste__job *job, int64_t f0)
{
    size_t nt = (size_t)job->tree->n_tips;
    int64_t words = (job->n_families + 63) / 64;
    for (int64_t w = f0 / 64; w < f0 / 64 + 2 && w < words; w++)
        for (size_t t = 0; t < nt; t += 8) {
            __builtin_prefetch(job->present + (size_t)w * nt + t);
            if (job->any_unknown)
                __builtin_prefetch(job->unknown + (size_t)w * nt + t);
        }
}

void EVAL_BLOCK(const struct persiste__job *job, struct persiste__scratch *s,
                int64_t block, double *branch)
{
    int64_t f0 = block * L;
    prefetch_bits(job, f0);
    child_masks(job, f0, s->keep0, s->keep1);
    struct lanes ln;
    lanes_init(&ln, job, f0);

    /* A block whose lanes share one rate pair uses one table, and reuses
     * the table and conditioning of the worker's previous such block. */
    int uniform = lanes_uniform(job, f0, ln.n_active);
    int cached = uniform && s->cache_valid &&
                 !memcmp(&s->cache_log_gain, &job->log_gain[f0], sizeof(double)) &&
                 !memcmp(&s->cache_log_loss, &job->log_loss[f0], sizeof(double));
    struct pview pv = {uniform ? s->p_uni : NULL,
                       KERNEL_GRADIENT ? s->p_lane : NULL, &ln, job->tree,
                       job->model->min_branch_length,
                       KERNEL_GRADIENT && !uniform};
    if (!cached) {
        s->cache_valid = 0;
        if (uniform)
            fill_p(job, &ln, s);
    }

    vb lik;
    vi nscale[V];
    struct cond cd;
    int mode = job->model->condition;
    forward(job, &ln, &pv, s, f0, !cached && mode != PERSISTE_CONDITION_NONE,
            &lik, nscale);
    pv.fill = 0; /* every branch's rows are kept now */
    if (cached) {
        cd.log = vb_splat(s->cache_log_cond);
        cd.inv = vb_splat(s->cache_inv_cond);
    } else {
        conditioning(job, &ln, &pv, s, &cd);
    }

    vb coef = vb_splat(0.0), w = vb_splat(1.0);
    for (int l = 0; l < ln.n_active; l++) {
        double lk = *lane(&lik, l), lc = *lane(&cd.log, l);
        int possible = lk > 0.0 && isfinite(lc);
        if (job->weight)
            *lane(&w, l) = job->weight[f0 + l];
        *lane(&coef, l) = possible ? 1.0 : 0.0;
        job->loglik[f0 + l] =
            possible ? log(lk) - (double)nscale[l / W][l % W] * 256 * LN2 - lc
                     : -INFINITY;
    }
#if KERNEL_GRADIENT
    if (job->gradient)
        gradient(job, s, &ln, &pv, &cd, uniform, cached, f0, &coef, &w, branch);
#else
    (void)branch; /* a likelihood kernel: batch.c never asks it for more */
#endif

    if (uniform && !cached) {
        s->cache_valid = 1;
        s->cache_log_gain = job->log_gain[f0];
        s->cache_log_loss = job->log_loss[f0];
        s->cache_log_cond = *lane(&cd.log, 0);
        s->cache_inv_cond = *lane(&cd.inv, 0);
    }
}
