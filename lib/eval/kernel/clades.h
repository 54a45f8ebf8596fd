/* Clade tables (see PERSISTE_CLADE_TIPS in kernel.h): building them at a
 * rate pair, and looking a block's partials up in them.
 * Part of the block kernel: included by lib/eval/kernel.c only, after walk.h. */
#ifndef PERSISTE_KERNEL_CLADES_H
#define PERSISTE_KERNEL_CLADES_H

#if !KERNEL_GRADIENT /* gradients prune every node: the reverse reads them */
/* Clade cl's table at the pair of the tables in pv: its root's partial for
 * each of the 2^k patterns of its k tips (no unknown cells), W patterns a
 * vector, pruned as forward() prunes them: the same factors, products in
 * the same order, so the same bits. Returns 0 if some pattern's partial at
 * some node of the clade falls below 2^-256, where the pruning would
 * rescale: such a clade is pruned at this pair. */
static int clade_table(const struct persiste__job *job,
                       const struct pview *pv,
                       const struct persiste__clade *cl, double *tab)
{
    const persiste_tree *tr = job->tree;
    const int32_t *tips = job->clade_tips + cl->tip0;
    int32_t nt = tr->n_tips;
    size_t n = (size_t)1 << cl->n_tips;
    size_t entries = persiste__clade_entries(cl->n_tips);
    /* the partials of its internal nodes, by v - first */
    vd x0[PERSISTE_CLADE_TIPS - 1], x1[PERSISTE_CLADE_TIPS - 1];
    int ok = 1;
    for (size_t g = 0; g < entries; g += W) {
        for (int32_t v = cl->first; v <= cl->root; v++) {
            vd a0 = splat(1.0), a1 = splat(1.0);
            for (int32_t k = tr->child_start[v]; k < tr->child_start[v + 1];
                 k++) {
                int32_t c = tr->children[k];
                vd p[4][V], f0, f1;
                prows(pv, k, 4, p);
                if (c < nt) { /* lane l: pattern (g + l) mod n, its bit i */
                    int i = 0;
                    while (tips[i] != c)
                        i++;
                    uint64_t bits = 0;
                    for (int l = 0; l < W; l++)
                        bits |= (uint64_t)(((g + (size_t)l) % n) >> i & 1) << l;
                    tip_factor((struct tip_bits){bits, 0}, 0, p[P00][0],
                               p[P01][0], p[P10][0], p[P11][0], &f0, &f1);
                } else {
                    apply_p(p, 0, x0[c - cl->first], x1[c - cl->first], &f0,
                            &f1);
                }
                a0 *= f0; /* the first product by 1 is exact */
                a1 *= f1;
            }
            ok &= !any_lt(a0 + a1, splat(SCALE_LOW));
            x0[v - cl->first] = a0;
            x1[v - cl->first] = a1;
        }
        st(tab + g, x0[cl->root - cl->first]);
        st(tab + entries + g, x1[cl->root - cl->first]);
    }
    return ok;
}

/* Every clade's table into s at the pair of pv's tables (once per pair
 * and worker: kept out of line, where it cannot crowd the walk's
 * registers). */
static __attribute__((noinline)) void clade_tables(
    const struct persiste__job *job, const struct pview *pv,
    struct persiste__scratch *s)
{
    for (int32_t c = 0; c < job->n_clades; c++)
        s->clade_ok[c] = (unsigned char)clade_table(
            job, pv, &job->clades[c], s->clade_tab + job->clades[c].table);
}
#endif

/* Clade cl's root partial for the block at f0 into x0, x1, from its table
 * by its tips' bits; 0 (and nothing written) where some tip has an unknown
 * cell in the block, which the table does not hold. */
static inline int clade_lookup(const struct persiste__job *job,
                               const struct persiste__scratch *s, int64_t f0,
                               const struct persiste__clade *cl, vd x0[V],
                               vd x1[V])
{
    const int32_t *tips = job->clade_tips + cl->tip0;
    int k = cl->n_tips;
    uint64_t bits[PERSISTE_CLADE_TIPS], unknown = 0;
    for (int i = 0; i < k; i++) {
        struct tip_bits b = tip_bits(job, f0, tips[i]);
        bits[i] = b.present;
        unknown |= b.unknown;
    }
    if (unknown & (L < 64 ? ((uint64_t)1 << (L % 64)) - 1 : ~(uint64_t)0))
        return 0;
    const double *t0 = s->clade_tab + cl->table;
    const double *t1 = t0 + persiste__clade_entries(k);
#if defined(__AVX512BW__)
    /* every lane's index as a byte, one masked add per tip for the whole
     * block, then widened 8 lanes at a time */
    _Static_assert(L <= 64, "a block's lanes are the bytes of a register");
    __m512i ib = _mm512_setzero_si512();
    for (int i = 0; i < k; i++)
        ib = _mm512_mask_add_epi8(ib, (__mmask64)bits[i], ib,
                                  _mm512_set1_epi8((char)(1 << i)));
    FOR_V { /* (the extract takes a constant: j is one once unrolled) */
        __m128i q = _mm512_extracti32x4_epi32(ib, 0);
        if (j / 2 == 1)
            q = _mm512_extracti32x4_epi32(ib, 1);
        else if (j / 2 == 2)
            q = _mm512_extracti32x4_epi32(ib, 2);
        else if (j / 2 == 3)
            q = _mm512_extracti32x4_epi32(ib, 3);
        if (j % 2)
            q = _mm_unpackhi_epi64(q, q);
        vi idx = (vi)_mm512_cvtepu8_epi64(q);
        x0[j] = lookup(t0, k, idx);
        x1[j] = lookup(t1, k, idx);
    }
#else /* AVX2 and SSE2: the index lane-wise, a mask per tip */
    FOR_V {
        vi idx = {0};
        for (int i = 0; i < k; i++) {
            unsigned m = (unsigned)(bits[i] >> (j * W)) & LANE_BITS;
            idx |= lane_mask(m) & ((int64_t)1 << i);
        }
        x0[j] = lookup(t0, k, idx);
        x1[j] = lookup(t1, k, idx);
    }
#endif
    return 1;
}

#endif
