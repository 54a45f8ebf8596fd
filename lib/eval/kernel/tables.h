/* Transition tables: the block's lanes (rates, root prior), exp and the
 * P entries and their derivatives, for one rate pair or one a lane, and
 * where the walk reads them (pview, prows).
 * Part of the block kernel: included by lib/eval/kernel.c only, which defines
 * W, V, L, FOR_V and the row names first (and is compiled once per
 * instruction set). */
#ifndef PERSISTE_KERNEL_TABLES_H
#define PERSISTE_KERNEL_TABLES_H

/* Rates and root prior of the block's lanes. */
struct lanes {
    vb gain, loss, q0, q1, pi0, pi1;
    vb inv_s;        /* 1 / (gain + loss) */
    vb dpi_g, dpi_l; /* d pi1 / d log gain, d log loss */
    vb q01, q1g, q1u, q0g, q0u; /* products the derivative rows use */
    int n_active;    /* lanes 0 .. n_active-1 hold families */
};

/* The block's lanes; n_active lanes hold families (the rest copy the
 * first); with uniform (every lane the same pair) one lane is computed and
 * copied. */
static void lanes_init(struct lanes *ln, const struct persiste__job *job,
                       int64_t f0, int n_active, int uniform)
{
    const persiste_model *m = job->model;
    ln->n_active = n_active;
    for (int l = 0; l < L; l++) {
        if (uniform && l > 0) {
            struct lanes *x = ln;
            vb *rows[] = {&x->gain, &x->loss, &x->q1,    &x->q0,
                          &x->inv_s, &x->pi1, &x->pi0,  &x->dpi_g,
                          &x->dpi_l, &x->q01, &x->q1g,  &x->q1u,
                          &x->q0g,  &x->q0u};
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
                *lane(rows[r], l) = *lane(rows[r], 0);
            continue;
        }
        int64_t f = l < n_active ? f0 + l : f0; /* padding: a copy */
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
        *lane(&ln->q01, l) = q0 * q1;
        *lane(&ln->q1g, l) = q1 * g;
        *lane(&ln->q1u, l) = q1 * u;
        *lane(&ln->q0g, l) = q0 * g;
        *lane(&ln->q0u, l) = q0 * u;
    }
}

/* A lane-wise rate pair as the table entries use it (see table_rows). */
struct rates_v {
    vd q0, q1, g, u, q01, q1g, q1u, q0g, q0u;
};

/* Vector j of the block's lanes. */
static inline struct rates_v rates_lanes(const struct lanes *ln, int j)
{
    return (struct rates_v){ln->q0.v[j],  ln->q1.v[j],  ln->gain.v[j],
                            ln->loss.v[j], ln->q01.v[j], ln->q1g.v[j],
                            ln->q1u.v[j], ln->q0g.v[j], ln->q0u.v[j]};
}

/* Lane 0's pair in every lane (a block of one pair). */
static inline struct rates_v rates_uniform(const struct lanes *ln)
{
    return (struct rates_v){
        splat(ln->q0.d[0]),  splat(ln->q1.d[0]),  splat(ln->gain.d[0]),
        splat(ln->loss.d[0]), splat(ln->q01.d[0]), splat(ln->q1g.d[0]),
        splat(ln->q1u.d[0]), splat(ln->q0g.d[0]), splat(ln->q0u.d[0])};
}

/* Rows 0..n-1 of a branch's table into r, lane-wise, from e = exp(-s t),
 * em = 1 - e and (for n > PERSISTE_NP_LIK) t, tgm = t (e - phi) and
 * free_len (0 where the length was clamped: no derivative in t). Every
 * entry is a sum of non-negative terms. */
static inline void table_rows(const struct rates_v *k, vd e, vd em, vd t,
                              vd tgm, vd free_len, int n, vd r[PERSISTE_NP])
{
    r[P00] = k->q0 + k->q1 * e;
    r[P01] = k->q1 * em;
    r[P10] = k->q0 * em;
    r[P11] = k->q1 + k->q0 * e;
    if (n <= PERSISTE_NP_LIK)
        return;
    vd te = t * e, q01em = k->q01 * em;
    r[D01G] = q01em + k->q1g * te; /* q1 (q0 em + g t e) */
    r[D01L] = k->q1u * tgm;
    r[D10G] = k->q0g * tgm;
    r[D10L] = q01em + k->q0u * te; /* q0 (q1 em + u t e) */
    r[D01T] = free_len * (k->g * e);
    r[D10T] = free_len * (k->u * e);
}

/* e^-x - (1 - e^-x)/x, which cancels for small x: a series there,
 * sum_{k>=1} (-x)^k k/(k+1)! (to k = 9: exact to an ulp below 0.05). */
#define EMP_SERIES_MAX 0.05
static const double emp_coef[10] = {0.0,         -1.0 / 2,   1.0 / 3,
                                    -1.0 / 8,    1.0 / 30,   -1.0 / 144,
                                    1.0 / 840,   -1.0 / 5760, 1.0 / 45360,
                                    -1.0 / 403200};

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
    vd th = lookup(t_hi, 3, idx), tl = lookup(t_lo, 3, idx);
    vd scale = (vd)((1023 - (vi)((vu)n >> 3)) << 52); /* 2^-k, n >= 0 */
    vd tail = tl + th * p;
    *e = scale * (th + tail);
    *em = (1.0 - scale * th) - scale * tail;
    if (exact_tail) {
        *e = sel(big, splat(0.0), *e);
        *em = sel(big, splat(1.0), *em);
    }
}
/* t (e^-x - phi(x)) with x = s t, lane-wise: by the series for small x,
 * else as t e^-x - (1 - e^-x)/s, which stays finite for huge t (both
 * forms computed, one kept). */
static inline __attribute__((unused)) vd t_emp_v(vd x, vd t, vd inv_s, vd e,
                                                 vd em)
{
    vd r = splat(emp_coef[9]);
    for (int k = 8; k >= 1; k--)
        r = r * x + emp_coef[k];
    return sel(lt_nonneg(x, splat(EMP_SERIES_MAX)), t * (r * x),
               t * e - em * inv_s);
}

#if KERNEL_GRADIENT
static inline void exp_pair(vd x, vd *e, vd *em)
{
    /* the exact tail only where some lane needs it, x >= 700 (x above
     * the double just below 700): the same values */
    if (any_lt(splat(0x1.5dfffffffffffp+9), x))
        exp_pair_tail(x, e, em, 1);
    else
        exp_pair_tail(x, e, em, 0);
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
        st(p + LTGM * L, t_emp_v(x, splat(t), ln->inv_s.v[j], e, em));
    }
}
#endif

/* Transition tables of every branch for a block whose lanes share one
 * rate pair, W branches a vector (lanes of their own rates build theirs as
 * they go: see pview). A clamped branch length's derivative rows are 0. */
static void fill_p(const struct persiste__job *job, const struct lanes *ln,
                   struct persiste__scratch *s)
{
    const persiste_tree *tr = job->tree;
    double tmin = job->model->min_branch_length;
    struct rates_v k = rates_uniform(ln);
    double inv_s = ln->inv_s.d[0];
    int n = job->gradient ? NP : PERSISTE_NP_LIK;
    int32_t nb = tr->n_nodes - 1; /* edges */
    for (int32_t k0 = 0; k0 < nb; k0 += W) {
        vd t, free_len; /* free_len: 1 where not clamped */
        for (int l = 0; l < W; l++) {
            double tl = tr->length[tr->children[k0 + l < nb ? k0 + l : nb - 1]];
            t[l] = tl < tmin ? tmin : tl;
            free_len[l] = tl < tmin ? 0.0 : 1.0;
        }
        vd x = (k.g + k.u) * t, e, em, r[PERSISTE_NP];
        exp_pair_tail(x, &e, &em, 1); /* derivatives need e = 0 exactly */
        vd tgm = n > PERSISTE_NP_LIK ? t_emp_v(x, t, splat(inv_s), e, em)
                                     : splat(0.0);
        table_rows(&k, e, em, t, tgm, free_len, n, r);
        for (int l = 0; l < W && k0 + l < nb; l++)
            for (int row = 0; row < n; row++)
                s->p_uni[(size_t)(k0 + l) * NP + row] = r[row][l];
    }
}

#if KERNEL_GRADIENT
/* What transition_lanes keeps of every branch, for a block of lanes with
 * rates of their own: in one loop, whose iterations are independent (the
 * exp's latencies overlap), rather than one call per branch as the walk
 * reaches it. */
static void fill_lanes(const struct persiste__job *job,
                       const struct lanes *ln, struct persiste__scratch *s)
{
    const persiste_tree *tr = job->tree;
    double tmin = job->model->min_branch_length;
    for (int32_t k = 0; k + 1 < tr->n_nodes; k++) {
        double t = tr->length[tr->children[k]];
        transition_lanes(ln, t < tmin ? tmin : t,
                         s->p_lane + (size_t)k * PERSISTE_NP_LANE * L);
    }
}
#endif

/* Tables are by edge k, the branch above tree->children[k]: in the walks'
 * order, so the forward pass reads them front to back and the reverse back
 * to front, wherever the tips are numbered.
 * Where the kernel finds a branch's table: scalars broadcast to every lane,
 * or, for lanes of their own rates, built when needed from the lanes' rates
 * (likelihood kernels) or from the three rows fill_lanes kept (gradient
 * kernels): whole tables of every branch would not stay in cache. */
struct pview {
    const double *uni;
    double *lane;
    const struct lanes *ln;
    const persiste_tree *tree;
    double tmin;
};

#if !KERNEL_GRADIENT
/* Rows P00..P11 of edge k, one pair a lane. */
static inline void prows_compute(const struct pview *pv, int32_t k,
                                 vd p[][V])
{
    double t = pv->tree->length[pv->tree->children[k]];
    t = t < pv->tmin ? pv->tmin : t;
    FOR_V {
        struct rates_v q = rates_lanes(pv->ln, j);
        vd e, em, r[PERSISTE_NP];
        exp_pair_tail((q.g + q.u) * t, &e, &em, 0);
        table_rows(&q, e, em, splat(t), splat(0.0), splat(0.0),
                   PERSISTE_NP_LIK, r);
        for (int row = 0; row < PERSISTE_NP_LIK; row++)
            p[row][j] = r[row];
    }
}
#endif

#if KERNEL_GRADIENT
/* Rows 0..n-1 of edge k's table for vector j, one pair a lane, from
 * what transition_lanes kept (the branch length is clamped: its D..T rows
 * are then 0). */
static inline void prows_lanes_j(const struct pview *pv, int32_t k, int n,
                                 int j, vd p[][V])
{
    const double *rl = pv->lane + (size_t)k * PERSISTE_NP_LANE * L;
    double t = pv->tree->length[pv->tree->children[k]];
    int clamped = t < pv->tmin;
    t = clamped ? pv->tmin : t;
    struct rates_v q = rates_lanes(pv->ln, j);
    vd r[PERSISTE_NP];
    table_rows(&q, ld(rl + LE * L + j * W), ld(rl + LEM * L + j * W),
               splat(t), ld(rl + LTGM * L + j * W),
               splat(clamped ? 0.0 : 1.0), n, r);
    for (int row = 0; row < n; row++)
        p[row][j] = r[row];
}

/* The same for every vector. */
static inline void prows_lanes(const struct pview *pv, int32_t k, int n,
                               vd p[][V])
{
    FOR_V prows_lanes_j(pv, k, n, j, p);
}
#endif

/* Rows 0..n-1 of edge k's table for every vector of the block (one
 * broadcast each when the block shares a pair). */
static inline void prows(const struct pview *pv, int32_t k, int n, vd p[][V])
{
#if KERNEL_GRADIENT
    if (!pv->uni) {
        prows_lanes(pv, k, n, p);
        return;
    }
#else /* n is 4 */
    if (!pv->uni && !pv->lane) {
        prows_compute(pv, k, p);
        return;
    }
#endif
    for (int r = 0; r < n; r++) {
        if (pv->uni) {
            vd b = splat(pv->uni[(size_t)k * NP + r]);
            FOR_V p[r][j] = b;
        } else {
            FOR_V p[r][j] = ld(pv->lane + ((size_t)k * NP + r) * L + j * W);
        }
    }
}

#endif
