/* The reverse (pre-order) passes of the gradient kernels: outside vectors
 * and the terms of every branch, binary nodes sharing one denominator.
 * Part of the block kernel: included by lib/eval/kernel.c only, which defines
 * W, V, L, FOR_V and the row names first (and is compiled once per
 * instruction set). */
#ifndef PERSISTE_KERNEL_REVERSE_H
#define PERSISTE_KERNEL_REVERSE_H

#if KERNEL_GRADIENT /* the likelihood kernels have no reverse pass */
/* The terms of node v's children, any number of them, for the vectors
 * whose bit is set in vecs: prefix and suffix products of the siblings'
 * factors give each child's U. */
static void reverse_node(const struct persiste__job *job,
                         const struct pview *pv, const struct source *src,
                         struct persiste__scratch *s, int32_t v,
                         unsigned vecs, const vi *use, const vb *coef,
                         const vi *wuse, const vb *wcoef, vb *dg, vb *dl,
                         double *branch)
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
        prows(pv, k, 4, p);
        double *fk = s->fx + (size_t)k * 5 * L; /* kept for the suffix */
        FOR_V {
            if (V > 1 && !(vecs >> j & 1))
                continue;
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
        prows(pv, k, NP, p);
        const double *fk = s->fx + (size_t)k * 5 * L;
        FOR_V {
            if (V > 1 && !(vecs >> j & 1))
                continue;
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
                double *bc = branch + (size_t)c * BW;
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

/* Branch rows where reverse_binary reads them: the block's scalar table
 * (each use a broadcast from memory: nothing held in registers) or the
 * rows built for the node (lane tables, in blocks of one vector). */
struct trows {
    const double *uni;
    vd (*rows)[V];
};
static inline __attribute__((always_inline)) vd trow(struct trows t, int r,
                                                     int j)
{
    return t.uni ? splat(t.uni[r]) : t.rows[r][j];
}

/* The terms of binary node v's two children in the pattern's pass (whose
 * coef is 1 in the lanes used, the bits of use; tip[i]: child i is a tip,
 * a constant in AVX-512's copies, see reverse_binary): each child's U is the
 * node's outside times its sibling's factor, so both share
 * U . f = outside . product, one division for the node. Vector by vector,
 * everything of one vector done before the next (with AVX-512 the loop is
 * unrolled and the vectors' work interleaves: see FOR_V). The terms go
 * straight into dg, dl and branch (a copy to restore would cost 13% of the
 * gradient): a vector whose denominator is too small to divide by safely
 * in some lane is left out whole, and its bit in the result says that
 * reverse_node must do it (it renormalises as it goes). */
static inline __attribute__((always_inline)) unsigned reverse_binary_rows(
    const struct persiste__job *job, struct persiste__scratch *s, int64_t f0,
    int32_t v, const int tip[2], const struct trows t[2], uint64_t use,
    uint64_t wuse, const vb *wcoef, vb *dg, vb *dl, double *branch)
{
    const persiste_tree *tr = job->tree;
    int32_t k0 = tr->child_start[v];
    int32_t c[2] = {tr->children[k0], tr->children[k0 + 1]};
    const double *ov = s->out + (size_t)job->oslot[v] * 2 * L;
    const double *x[2];
    double *oc[2];
    for (int i = 0; i < 2; i++) {
        x[i] = s->in + (size_t)job->slot[c[i]] * 2 * L;
        oc[i] = s->out + (size_t)job->oslot[c[i]] * 2 * L;
    }
    vd bt[2] = {{0}}; /* the children's branch terms, vectors added */
    unsigned redo = 0;
    FOR_V {
        vd f[2][2], dx[2];
        for (int i = 0; i < 2; i++) {
            vd p00 = trow(t[i], P00, j), p01 = trow(t[i], P01, j);
            vd p10 = trow(t[i], P10, j), p11 = trow(t[i], P11, j);
            if (tip[i]) { /* a select by the tip's bits */
                struct tip_bits b = tip_bits(job, f0, c[i]);
                tip_factor(b, j, p00, p01, p10, p11, &f[i][0], &f[i][1]);
                /* 1 where present, -1 where absent, 0 where unknown */
                dx[i] = sel_bits(b.present, j, splat(1.0), splat(-1.0));
                if (b.unknown)
                    dx[i] = sel_bits(b.unknown & ~b.present, j, splat(0.0),
                                     dx[i]);
            } else {
                vd x0 = ld(x[i] + j * W), x1 = ld(x[i] + L + j * W);
                f[i][0] = p00 * x0 + p01 * x1;
                f[i][1] = p10 * x0 + p11 * x1;
                dx[i] = x1 - x0;
            }
        }
        vd o0 = ld(ov + j * W), o1 = ld(ov + L + j * W);
        vd u[2][2] = {{o0 * f[1][0], o1 * f[1][1]}, {o0 * f[0][0], o1 * f[0][1]}};
        vd den = u[0][0] * f[0][0] + u[0][1] * f[0][1];
        /* a vector with a lane too small to divide by adds nothing (of
         * several vectors, skipped: that is faster; of one, masked) */
        int bad = (lt_bits(den, splat(DEN_LOW)) &
                   (unsigned)(use >> (j * W)) & LANE_BITS) != 0;
        redo |= (unsigned)bad << j;
        if (V > 1 && bad)
            continue;
        uint64_t keep = bad ? 0 : use, wkeep = bad ? 0 : wuse;
        /* numerators first: only the last products wait for 1 / den */
        vd inv = 1.0 / den, ng = {0}, nl = {0}, nb[2];
        for (int i = 0; i < 2; i++) {
            vd u0 = u[i][0], u1 = u[i][1];
            ng += dx[i] * (u0 * trow(t[i], D01G, j) - u1 * trow(t[i], D10G, j));
            nl += dx[i] * (u0 * trow(t[i], D01L, j) - u1 * trow(t[i], D10L, j));
            nb[i] = dx[i] * (u0 * trow(t[i], D01T, j) - u1 * trow(t[i], D10T, j));
        }
        vd r = keep_where(keep, j, inv); /* coef is 1 where used */
        vd wr = keep_where(wkeep, j, wcoef->v[j] * inv);
        dg->v[j] += r * ng;
        dl->v[j] += r * nl;
        for (int i = 0; i < 2; i++) {
            vd u0 = u[i][0], u1 = u[i][1];
            bt[i] += wr * nb[i];
            if (tip[i]) /* no outside: nothing below */
                continue;
            /* outside of c in its own states, U P_c, not renormalised:
             * this node's denominator was at least DEN_LOW, so U's larger
             * entry is at least DEN_LOW / 2 and W's at least
             * min(P00, P11) DEN_LOW / 2 > 2^-1000 (P's diagonal is at
             * least e^-200 in the rates' domain); a child whose
             * denominator then falls below DEN_LOW takes reverse_node,
             * which renormalises */
            st(oc[i] + j * W, u0 * trow(t[i], P00, j) + u1 * trow(t[i], P10, j));
            st(oc[i] + L + j * W,
               u0 * trow(t[i], P01, j) + u1 * trow(t[i], P11, j));
        }
    }
    if (branch)
        for (int i = 0; i < 2; i++) {
            double *bc = branch + (size_t)c[i] * BW;
            st(bc, ld(bc) + bt[i]);
        }
    return redo;
}

static inline __attribute__((always_inline)) unsigned reverse_binary(
    const struct persiste__job *job, const struct pview *pv,
    struct persiste__scratch *s, int64_t f0, int32_t v, uint64_t use,
    uint64_t wuse, const vb *wcoef, vb *dg, vb *dl, double *branch)
{
    const persiste_tree *tr = job->tree;
    int32_t k0 = tr->child_start[v], nt = tr->n_tips;
    int kind = (tr->children[k0] < nt) | (tr->children[k0 + 1] < nt) << 1;
#define ROWS(a, b) reverse_binary_rows(job, s, f0, v, (const int[2]){a, b}, \
                                       t, use, wuse, wcoef, dg, dl, branch)
#if W == 8 /* AVX-512: a copy per pair of child kinds (tip or not) */
#define ROWS_BY_KIND                                                        \
    switch (kind) {                                                         \
    case 0: return ROWS(0, 0);                                              \
    case 1: return ROWS(1, 0);                                              \
    case 2: return ROWS(0, 1);                                              \
    default: return ROWS(1, 1);                                             \
    }
#else /* 16 registers: the unrolled copies would spill */
#define ROWS_BY_KIND return ROWS(kind & 1, kind >> 1);
#endif
    if (pv->uni) { /* constant folded: one copy per table kind */
        struct trows t[2] = {{pv->uni + (size_t)k0 * NP, NULL},
                             {pv->uni + (size_t)(k0 + 1) * NP, NULL}};
        ROWS_BY_KIND
    }
    vd p[2][PERSISTE_NP][V]; /* lane tables: few vectors per block */
    struct trows t[2] = {{NULL, p[0]}, {NULL, p[1]}};
    for (int i = 0; i < 2; i++)
        prows(pv, k0 + i, NP, p[i]);
    ROWS_BY_KIND
#undef ROWS_BY_KIND
#undef ROWS
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
    uint64_t use_bits = 0, wuse_bits = 0; /* the same, bit l for lane l */
    FOR_V {
        use[j] = nonzero(coef->v[j]);
        wuse[j] = nonzero(wcoef->v[j]);
    }
    for (int l = 0; l < L; l++) {
        use_bits |= (uint64_t)(coef->d[l] != 0.0) << l;
        wuse_bits |= (uint64_t)(wcoef->d[l] != 0.0) << l;
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
    /* the pass's own sums, added to dg and dl once at the end (a block of
     * one vector keeps them in registers) */
    vb g = vb_splat(0.0), l = vb_splat(0.0);
    for (int32_t v = root; v >= tr->n_tips; v--) {
        int binary = tr->child_start[v + 1] - tr->child_start[v] == 2;
        unsigned vecs = ~0u; /* what reverse_node does: all, or the rest */
        if (scaled && binary &&
            !(vecs = reverse_binary(job, pv, s, src->f0, v, use_bits,
                                    wuse_bits, wcoef, &g, &l, branch)))
            continue;
        vb ng = vb_splat(0.0), nl = vb_splat(0.0);
        reverse_node(job, pv, src, s, v, vecs, use, coef, wuse, wcoef, &ng,
                     &nl, branch);
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

#endif
