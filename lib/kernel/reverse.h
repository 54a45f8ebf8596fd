/* The reverse (pre-order) passes of the gradient kernels: outside vectors
 * and the terms of every branch, binary nodes sharing one denominator.
 * Part of the block kernel: included by lib/kernel.c only, which defines
 * W, V, L, FOR_V and the row names first (and is compiled once per
 * instruction set). */
#ifndef PERSISTE_KERNEL_REVERSE_H
#define PERSISTE_KERNEL_REVERSE_H

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
    vd p[2][PERSISTE_NP][V];
    prows(pv, c[0], NP, p[0]);
    prows(pv, c[1], NP, p[1]);
    const double *ov = s->out + (size_t)job->oslot[v] * 2 * L;
    vd f[2][2][V], dx[2][V], inv[V];
    vi bad = {0};
    for (int i = 0; i < 2; i++) {
        child_factors(job, s, c[i], k0 + i, p[i], f[i][0], f[i][1]);
        child_dx(job, s, c[i], k0 + i, dx[i]);
    }
    FOR_V {
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
            if (c[i] < tr->n_tips) /* no outside: nothing below */
                continue;
            /* outside of c in its own states, U P_c, not
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

#endif
