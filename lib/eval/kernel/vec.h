/* Vectors of W lanes (GCC vector extensions): loads, selects, lane-wise
 * comparisons per instruction set, and power-of-two rescaling.
 * Part of the block kernel: included by lib/eval/kernel.c only, which defines
 * W, V, L, FOR_V and the row names first (and is compiled once per
 * instruction set). */
#ifndef PERSISTE_KERNEL_VEC_H
#define PERSISTE_KERNEL_VEC_H

#if defined(__SSE2__)
#include <immintrin.h>
#endif

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
static inline vd splat(double x) /* not 0 + x: that is an addition */
{
#if W == 8
    return (vd){x, x, x, x, x, x, x, x};
#elif W == 4
    return (vd){x, x, x, x};
#else
    return (vd){x, x};
#endif
}
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

/* a x + b y, rounded as fma(a, x, b y): written out, because compilers
 * choose which product to fuse by context, and the classes and the blocks
 * must round alike (clang chose differently in the two). Without FMA
 * instructions there is nothing to fuse. */
static inline vd dot2(vd a, vd x, vd b, vd y)
{
#if defined(__FMA__) && W == 8
    return (vd)_mm512_fmadd_pd((__m512d)a, (__m512d)x, (__m512d)(b * y));
#elif defined(__FMA__) && W == 4
    return (vd)_mm256_fmadd_pd((__m256d)a, (__m256d)x, (__m256d)(b * y));
#else
    return a * x + b * y;
#endif
}

/* Lane masks, all bits set where true (vectors of the register's width:
 * one instruction each). */
static inline vi lt_nonneg(vd a, vd b) { return a < b; }
static inline __attribute__((unused)) vi nonzero(vd a) { return a != 0.0; }

#if defined(__AVX512F__)
/* Lanes where a < b, as bits (a k-register, as are the tip masks of
 * tip_select and keep_where). */
static inline unsigned lt_bits(vd a, vd b)
{
    return _mm512_cmp_pd_mask((__m512d)a, (__m512d)b, _CMP_LT_OQ);
}
#else
/* Lane l is set where bit l of `bits` is. */
static inline vi lane_mask(unsigned bits)
{
#if W == 2 /* SSE2 has no 64-bit comparison: a table */
    static const vi masks[4] = {{0, 0}, {-1, 0}, {0, -1}, {-1, -1}};
    return masks[bits & 3];
#else /* W is 4 here: one load, not a broadcast, a test and a comparison */
#define M(b) {-(int64_t)((b) & 1), -(int64_t)((b) >> 1 & 1), \
              -(int64_t)((b) >> 2 & 1), -(int64_t)((b) >> 3 & 1)}
    static const vi masks[16] = {M(0),  M(1),  M(2),  M(3), M(4),  M(5),
                                 M(6),  M(7),  M(8),  M(9), M(10), M(11),
                                 M(12), M(13), M(14), M(15)};
#undef M
    return masks[bits & 15];
#endif
}
/* Lanes where a < b, as bits. */
static inline unsigned lt_bits(vd a, vd b)
{
#if defined(__AVX__) && W == 4
    return (unsigned)_mm256_movemask_pd((__m256d)(a < b));
#elif defined(__SSE2__) && W == 2
    return (unsigned)_mm_movemask_pd((__m128d)(a < b));
#else
    vi m = a < b;
    unsigned r = 0;
    for (int l = 0; l < W; l++)
        r |= (unsigned)(m[l] & 1) << l;
    return r;
#endif
}
#endif
/* Whether a < b in some lane. */
static inline int any_lt(vd a, vd b) { return lt_bits(a, b) != 0; }

static inline vd vmin_nonneg(vd a, vd b)
{
#if defined(__AVX512F__)
    return (vd)_mm512_min_pd((__m512d)a, (__m512d)b);
#elif defined(__AVX__) && W == 4
    return (vd)_mm256_min_pd((__m256d)a, (__m256d)b);
#elif defined(__SSE2__) && W == 2
    return (vd)_mm_min_pd((__m128d)a, (__m128d)b);
#else
    return sel(lt_nonneg(a, b), a, b);
#endif
}

/* t[idx] lane-wise, idx < 2^bits, t of at least W entries: with AVX-512
 * permutes of registers up to 32 entries, else a gather (AVX2) or loads. */
static inline vd lookup(const double *t, int bits, vi idx)
{
#if defined(__AVX512F__)
    __m512i x = (__m512i)idx;
    if (bits <= 3)
        return (vd)_mm512_permutexvar_pd(x, _mm512_loadu_pd(t));
    if (bits == 4)
        return (vd)_mm512_permutex2var_pd(_mm512_loadu_pd(t), x,
                                          _mm512_loadu_pd(t + 8));
    if (bits == 5) {
        __m512d lo = _mm512_permutex2var_pd(_mm512_loadu_pd(t), x,
                                            _mm512_loadu_pd(t + 8));
        __m512d hi = _mm512_permutex2var_pd(_mm512_loadu_pd(t + 16), x,
                                            _mm512_loadu_pd(t + 24));
        __mmask8 up = _mm512_test_epi64_mask(x, _mm512_set1_epi64(16));
        return (vd)_mm512_mask_blend_pd(up, lo, hi);
    }
    return (vd)_mm512_i64gather_pd(x, t, 8);
#elif defined(__AVX2__)
    (void)bits;
    return (vd)_mm256_i64gather_pd(t, (__m256i)idx, 8);
#else
    (void)bits;
    vd r;
    for (int l = 0; l < W; l++)
        r[l] = t[idx[l]];
    return r;
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

#endif
