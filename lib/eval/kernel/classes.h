/* Site repeats (see struct persiste__classes in kernel.h): the partials of
 * a node's classes, W classes a vector, each from its children's classes
 * by the walk's arithmetic (apply_p, products in the children's order, the
 * same rescale test and slow path), so every family gets the bits its
 * block would.
 * Part of the block kernel: included by lib/eval/kernel.c only, after walk.h. */
#ifndef PERSISTE_KERNEL_CLASSES_H
#define PERSISTE_KERNEL_CLASSES_H

#if !KERNEL_GRADIENT
/* A vector's worth of class ids, as 32-bit integers. */
#if defined(__AVX512F__)
typedef __m256i vids;
#elif defined(__AVX2__)
typedef __m128i vids;
#else
typedef struct {
    int32_t l[W];
} vids;
#endif

/* The ids of classes i .. i + W, stored in 16 or 32 bits. */
static inline vids load_ids(const uint16_t *id16, const int32_t *id32,
                            int64_t i)
{
#if defined(__AVX512F__)
    return id16 ? _mm256_cvtepu16_epi32(
                      _mm_loadu_si128((const __m128i *)(id16 + i)))
                : _mm256_loadu_si256((const __m256i *)(id32 + i));
#elif defined(__AVX2__)
    return id16 ? _mm_cvtepu16_epi32(
                      _mm_loadl_epi64((const __m128i *)(id16 + i)))
                : _mm_loadu_si128((const __m128i *)(id32 + i));
#else
    vids r;
    for (int l = 0; l < W; l++)
        r.l[l] = id16 ? id16[i + l] : id32[i + l];
    return r;
#endif
}

/* The ids lane by lane, 64 bits each. */
static inline vi ids_lanes(vids id)
{
#if defined(__AVX512F__)
    return (vi)_mm512_cvtepi32_epi64(id);
#elif defined(__AVX2__)
    return (vi)_mm256_cvtepi32_epi64(id);
#else
    vi r;
    for (int l = 0; l < W; l++)
        r[l] = id.l[l];
    return r;
#endif
}

/* x[id] lane-wise. */
static inline vd gather_ids(const double *x, vids id)
{
#if defined(__AVX512F__)
    return (vd)_mm512_i32gather_pd(id, x, 8);
#elif defined(__AVX2__)
    return (vd)_mm256_i32gather_pd(x, id, 8);
#else
    vd r;
    for (int l = 0; l < W; l++)
        r[l] = x[id.l[l]];
    return r;
#endif
}

/* A child's part in its parent's classes, set up once per node. */
struct class_child {
    int tip;           /* a tip: its classes are its states */
    int scaled;        /* some class of it was rescaled */
    /* its class of each of the parent's classes, in 16 or 32 bits */
    const uint16_t *id16;
    const int32_t *id32;
    const double *x0, *x1;
    const int32_t *cnt;
    vd p[4];           /* P00 .. P11 of its branch */
};

static void class_child(const struct persiste__job *job,
                        const struct persiste__class_group *g,
                        const struct pview *pv, int32_t v, int32_t k,
                        struct class_child *ch)
{
    const persiste_tree *tr = job->tree;
    int32_t u = tr->children[k];
    int64_t pad = persiste__class_padded(g->n_class[v]);
    ch->tip = u < tr->n_tips;
    int64_t at = g->id_base[v] + (int64_t)(k - tr->child_start[v]) * pad;
    ch->id16 = g->ids16 ? (const uint16_t *)g->ids + at : NULL;
    ch->id32 = g->ids16 ? NULL : (const int32_t *)g->ids + at;
    ch->scaled = !ch->tip && g->scaled[u];
    ch->x0 = ch->tip ? NULL : g->x + g->base[u];
    ch->x1 = ch->tip ? NULL : ch->x0 + g->total;
    ch->cnt = ch->tip ? NULL : g->cnt + g->base[u];
    vd p[4][V];
    prows(pv, k, 4, p);
    for (int r = 0; r < 4; r++)
        ch->p[r] = p[r][0];
}

/* The child's factor for classes i .. i + W (f = P x, x its class's
 * partial; a tip's class is its state, whose factor is a column of P or,
 * unknown, their sum, as in tip_factor), adding its rescales to cnt. */
static inline void class_factor(const struct persiste__job *job,
                                const struct class_child *ch, int64_t i,
                                vd *f0, vd *f1, vi *cnt)
{
    vids id = load_ids(ch->id16, ch->id32, i);
    const vd *p = ch->p;
    if (ch->tip) {
        vi s = ids_lanes(id);
        *f0 = sel(s == 1, p[P01], p[P00]);
        *f1 = sel(s == 1, p[P11], p[P10]);
        if (job->any_unknown) {
            *f0 = sel(s == 2, p[P00] + p[P01], *f0);
            *f1 = sel(s == 2, p[P10] + p[P11], *f1);
        }
        return;
    }
    apply_p4(p[P00], p[P01], p[P10], p[P11], gather_ids(ch->x0, id),
             gather_ids(ch->x1, id), f0, f1);
    if (ch->scaled) {
        vi at = ids_lanes(id);
        for (int l = 0; l < W; l++)
            (*cnt)[l] += ch->cnt[at[l]];
    }
}

/* Child k of v: ch[k] as set up, or for a wide node (more children than
 * ch holds) set up in *tmp. */
static inline const struct class_child *
child_at(const struct persiste__job *job, const struct persiste__class_group *g,
         const struct pview *pv, int32_t v, const struct class_child *ch,
         int wide, int k, struct class_child *tmp)
{
    if (!wide)
        return &ch[k];
    class_child(job, g, pv, v, job->tree->child_start[v] + k, tmp);
    return tmp;
}

/* The product of the children's factors for classes i .. i + W, rescaled
 * as forward() does: unless some lane falls below 2^-256, one product;
 * else node_rescaled's, rescaling after every child. */
static inline void class_partial(const struct persiste__job *job,
                                 const struct persiste__class_group *g,
                                 const struct pview *pv, int32_t v,
                                 const struct class_child *ch, int wide,
                                 int n_ch, int64_t i, vd *a0, vd *a1, vi *cnt)
{
    struct class_child tmp;
    vd f0, f1;
    *cnt = (vi){0};
    /* a0, a1 = 1 x the first factor: exact */
    class_factor(job, child_at(job, g, pv, v, ch, wide, 0, &tmp), i, a0, a1,
                 cnt);
    for (int k = 1; k < n_ch; k++) {
        class_factor(job, child_at(job, g, pv, v, ch, wide, k, &tmp), i, &f0,
                     &f1, cnt);
        *a0 *= f0;
        *a1 *= f1;
    }
    if (!any_lt(*a0 + *a1, splat(SCALE_LOW)))
        return;
    *a0 = *a1 = splat(1.0);
    *cnt = (vi){0};
    for (int k = 0; k < n_ch; k++) {
        class_factor(job, child_at(job, g, pv, v, ch, wide, k, &tmp), i, &f0,
                     &f1, cnt);
        *a0 *= f0;
        *a1 *= f1;
        rescale(a0, a1, cnt);
    }
}

/* Children a node sets up once; a node with more (a wide multifurcation,
 * rare) sets each up for every vector. */
#define CLASS_CHILDREN 8

void CAT(persiste__classes_, KERNEL_ISA)(const struct persiste__job *job,
                                         struct persiste__class_group *g,
                                         struct persiste__scratch *s,
                                         int32_t v)
{
    if (v < 0) {
        struct lanes ln;
        lanes_init(&ln, job, 0, 1, 1);
        fill_p(job, &ln, s);
        s->cache_valid = 0; /* a block here would still need its own */
        return;
    }
    int64_t end = persiste__class_padded(g->n_class[v]);
    const persiste_tree *tr = job->tree;
    int32_t k0 = tr->child_start[v], k1 = tr->child_start[v + 1];
    struct pview pv = {s->p_uni, NULL, NULL, tr,
                       job->model->min_branch_length};
    double *y0 = g->x + g->base[v], *y1 = y0 + g->total;
    int32_t *yn = g->cnt + g->base[v];
    struct class_child ch[CLASS_CHILDREN];
    int n_ch = k1 - k0, scaled = 0, wide = n_ch > CLASS_CHILDREN;
    for (int k = 0; k < n_ch && !wide; k++)
        class_child(job, g, &pv, v, k0 + k, &ch[k]);
    for (int64_t i = 0; i < end; i += W) {
        vd a0, a1;
        vi cnt;
        if (n_ch == 2) /* most nodes: unrolled */
            class_partial(job, g, &pv, v, ch, 0, 2, i, &a0, &a1, &cnt);
        else
            class_partial(job, g, &pv, v, ch, wide, n_ch, i, &a0, &a1, &cnt);
        st(y0 + i, a0);
        st(y1 + i, a1);
        for (int l = 0; l < W; l++)
            yn[i + l] = (int32_t)cnt[l];
        for (int l = 0; l < W; l++)
            scaled |= cnt[l] != 0;
    }
    g->scaled[v] = (unsigned char)scaled;
    if (v == tr->n_nodes - 1) { /* the root: the families' values */
        struct lanes ln;
        lanes_init(&ln, job, 0, 1, 1);
        for (int64_t i = 0; i < end; i += W) {
            vd lk = dot2(ln.pi0.v[0], ld(y0 + i), ln.pi1.v[0], ld(y1 + i));
            for (int l = 0; l < W; l++)
                g->root_ll[i + l] = persiste__unconditioned(lk[l], yn[i + l]);
        }
    }
}
#endif

#endif
