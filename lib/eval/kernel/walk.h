/* The post-order walks: tip masks, a child's factor, the pattern's pruning
 * with rescaling (and B for conditioning), and P(variable) with its
 * forward-mode tangents.
 * Part of the block kernel: included by lib/eval/kernel.c only, which defines
 * W, V, L, FOR_V and the row names first (and is compiled once per
 * instruction set). */
#ifndef PERSISTE_KERNEL_WALK_H
#define PERSISTE_KERNEL_WALK_H

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
                             job->any_unknown ? job->unknown[i] >> shift : 0};
}

/* Lane-wise, for vector j of a tip: 1 where unknown, else `present` where
 * observed present and `absent` where observed absent. */
static inline vd tip_select(struct tip_bits b, int j, vd absent, vd present)
{
    unsigned p = (unsigned)(b.present >> (j * W)) & LANE_BITS;
    unsigned u = (unsigned)(b.unknown >> (j * W)) & LANE_BITS;
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

/* Child c's child_bits in the block at f0, from its tip's words (the
 * loads' addresses are known early, off the walk's chain of latencies). */
static inline struct child_bits child_bits(const struct persiste__job *job,
                                           int64_t f0, int32_t c)
{
    if (c >= job->tree->n_tips)
        return (struct child_bits){~(uint64_t)0, ~(uint64_t)0};
    struct tip_bits b = tip_bits(job, f0, c);
    return (struct child_bits){~b.present, b.present | b.unknown};
}

/* Lane-wise for vector j: a where the lane's bit in bits is set, else b. */
static inline vd sel_bits(uint64_t bits, int j, vd a, vd b)
{
#if defined(__AVX512F__)
    return (vd)_mm512_mask_blend_pd((__mmask8)(bits >> (j * W)),
                                    (__m512d)b, (__m512d)a);
#else
    return sel(lane_mask((unsigned)(bits >> (j * W)) & LANE_BITS), a, b);
#endif
}

/* x with the lanes of vector j whose bit in bits is clear zeroed. */
static inline vd keep_where(uint64_t bits, int j, vd x)
{
#if defined(__AVX512F__)
    return (vd)_mm512_maskz_mov_pd((__mmask8)(bits >> (j * W)), (__m512d)x);
#else
    return (vd)((vi)x & lane_mask((unsigned)(bits >> (j * W)) & LANE_BITS));
#endif
}

/* (f0, f1) = P x for vector j: one expression for every path, so that each
 * rounds (and contracts to FMAs) alike and results do not depend on the
 * path a block took. */
static inline void apply_p4(vd p00, vd p01, vd p10, vd p11, vd x0, vd x1,
                            vd *f0, vd *f1)
{
    *f0 = dot2(p00, x0, p01, x1);
    *f1 = dot2(p10, x0, p11, x1);
}
static inline void apply_p(vd p[][V], int j, vd x0, vd x1, vd *f0, vd *f1)
{
    apply_p4(p[P00][j], p[P01][j], p[P10][j], p[P11][j], x0, x1, f0, f1);
}

/* Child c's factor in its parent's product, lane-wise for vector j:
 * f = P_c x_c. A tip's slot holds ones (see persiste__assign_slots), which
 * its bits turn into (1, 0) where absent, (0, 1) where present. */
static inline void factor(const struct persiste__job *job, const double *in,
                          struct child_bits cb, int32_t c, vd p[][V], int j,
                          vd *f0v, vd *f1v)
{
    const double *x = in + (size_t)job->slot[c] * 2 * L + j * W;
    apply_p(p, j, keep_where(cb.keep0, j, ld(x)),
            keep_where(cb.keep1, j, ld(x + L)), f0v, f1v);
}

/* A tip's factor P x for vector j, x = (1, 0) where observed absent,
 * (0, 1) where present, (1, 1) where unknown: a select of P's columns (the
 * sum rounds as P times ones does on the general path). */
static inline void tip_factor(struct tip_bits b, int j, vd p00, vd p01,
                              vd p10, vd p11, vd *y0, vd *y1)
{
    *y0 = sel_bits(b.present, j, p01, p00);
    *y1 = sel_bits(b.present, j, p11, p10);
    if (b.unknown) {
        uint64_t u = b.unknown & ~b.present;
        *y0 = sel_bits(u, j, p00 + p01, *y0);
        *y1 = sel_bits(u, j, p10 + p11, *y1);
    }
}

/* Child c's factor for every vector of the block: for a tip a select of
 * P's columns by its bits (1 where unknown), for an internal node P x, x
 * read from its slot or, when in_regs, given in registers (x0, x1).
 * The binary nodes' fast path: half of all children are tips. */
static inline void child_factors(const struct persiste__job *job,
                                 const struct persiste__scratch *s,
                                 int64_t f0, int32_t c, vd p[][V],
                                 int in_regs, const vd *x0, const vd *x1,
                                 vd y0[V], vd y1[V])
{
    if (c < job->tree->n_tips) {
        struct tip_bits b = tip_bits(job, f0, c);
        FOR_V tip_factor(b, j, p[P00][j], p[P01][j], p[P10][j], p[P11][j],
                         &y0[j], &y1[j]);
        return;
    }
    if (in_regs) { /* the node just computed: still in registers */
        FOR_V apply_p(p, j, x0[j], x1[j], &y0[j], &y1[j]);
        return;
    }
    const double *x = s->in + (size_t)job->slot[c] * 2 * L;
    FOR_V apply_p(p, j, ld(x + j * W), ld(x + L + j * W), &y0[j], &y1[j]);
}

/* Node v's partial with a rescale after every child, stored at y: the
 * slow path, for the rare nodes whose plain product fell below 2^-256 in
 * some lane (and might have underflowed on the way). */
static __attribute__((noinline)) void node_rescaled(
    const struct persiste__job *job, const struct pview *pv,
    const struct persiste__scratch *s, int64_t f0, int32_t v, double *y,
    vi *cnt)
{
    const double *in = s->in;
    const persiste_tree *tr = job->tree;
    vd a0[V], a1[V];
    FOR_V a0[j] = a1[j] = splat(1.0);
    for (int32_t k = tr->child_start[v]; k < tr->child_start[v + 1]; k++) {
        int32_t c = tr->children[k];
        vd p[4][V];
        prows(pv, k, 4, p);
        struct child_bits cb = child_bits(job, f0, c);
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

static inline int clade_lookup(const struct persiste__job *job,
                               const struct persiste__scratch *s, int64_t f0,
                               const struct persiste__clade *cl, vd x0[V],
                               vd x1[V]); /* kernel/clades.h */

/* Post-order pruning of the block's pattern into s->in; per lane the scaled
 * root likelihood and the number of 2^256 rescales. With tables, the
 * clades' partials are looked up (see kernel/clades.h) where they can be.
 * A node's children are multiplied without rescaling and the product
 * checked once: partials stay at most 1 and every factor's larger entry is
 * far from underflow, so a node rarely needs node_rescaled.
 * With want_b, the same walk (and the same tables) also fills s->b with
 * B(s) = 1 - P(all tips below absent | state s), carried directly so that
 * slow gain (B tiny) loses no digits: 1-(1-B)(1-y) = B + y(1-B). */
static void forward(const struct persiste__job *job, const struct lanes *ln,
                    const struct pview *pv, struct persiste__scratch *s,
                    int64_t f0, int want_b, int tables, vb *lik,
                    vi *nscale)
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
    /* the node just computed (last, v - 1 unless rescaled): in post-order
     * it is v's last internal child, whose reload would wait for the store;
     * its product stays in a0, a1 from one iteration to the next (a copy
     * of it would live on the stack: 8% slower) */
    vd a0[V] = {{0}}, a1[V] = {{0}};
    int32_t last = -1;
    int32_t ci = 0, next_clade = tables ? job->clades[0].first : -1;
    for (int32_t v = nt; v < tr->n_nodes; v++) {
        if (v == next_clade) {
            const struct persiste__clade *cl = &job->clades[ci];
            int ok = s->clade_ok[ci++];
            next_clade = ci < job->n_clades ? job->clades[ci].first : -1;
            if (ok && clade_lookup(job, s, f0, cl, a0, a1)) {
                v = cl->root;
                double *y = s->in + (size_t)job->slot[v] * 2 * L;
                FOR_V {
                    st(y + j * W, a0[j]);
                    st(y + L + j * W, a1[j]);
                }
                last = v;
                continue;
            }
        }
        vd b0[V] = {{0}}, b1[V] = {{0}};
        int32_t k0 = tr->child_start[v], k1 = tr->child_start[v + 1];
        if (k1 - k0 == 2 && !want_b) {
            vd p[4][V], g0[V], g1[V];
            /* the child just computed first: its product is still a0, a1 */
            int kb = tr->children[k0 + 1] == last;
            int32_t cg = tr->children[k0 + kb], ca = tr->children[k0 + !kb];
            prows(pv, k0 + kb, 4, p);
            child_factors(job, s, f0, cg, p, cg == last, a0, a1, g0, g1);
            prows(pv, k0 + !kb, 4, p);
            child_factors(job, s, f0, ca, p, 0, NULL, NULL, a0, a1);
            FOR_V {
                a0[j] *= g0[j];
                a1[j] *= g1[j];
            }
            k0 = k1; /* done */
        } else {
            FOR_V a0[j] = a1[j] = splat(1.0);
        }
        for (int32_t k = k0; k < k1; k++) {
            int32_t c = tr->children[k];
            vd p[4][V];
            prows(pv, k, 4, p);
            struct child_bits cb = child_bits(job, f0, c);
            FOR_V {
                vd f0v, f1v;
                factor(job, s->in, cb, c, p, j, &f0v, &f1v);
                a0[j] *= f0v; /* the first product by 1 is exact */
                a1[j] *= f1v;
            }
            if (want_b) {
                const double *x = s->b + (size_t)job->slot[c] * 2 * L;
                FOR_V {
                    vd y0, y1;
                    apply_p(p, j, ld(x + j * W), ld(x + L + j * W), &y0, &y1);
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
        last = -1;
        if (any_lt(m, splat(SCALE_LOW))) {
            node_rescaled(job, pv, s, f0, v, y, cnt);
            continue;
        }
        FOR_V {
            st(y + j * W, a0[j]);
            st(y + L + j * W, a1[j]);
        }
        last = v;
    }
    /* the root's vector (a tip only in a one-node tree) */
    struct source root = {PASS_PATTERN, s->in, 2 * L, job->slot, job, f0};
    FOR_V {
        vd r0, r1, dx;
        child_x(&root, tr->n_nodes - 1, j, &r0, &r1, &dx);
        lik->v[j] = dot2(ln->pi0.v[j], r0, ln->pi1.v[j], r1);
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
            prows(pv, k, NP, p);
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

#endif
