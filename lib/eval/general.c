/* The general path: every model option (observation error, rate
 * categories, lineage multipliers, conditioning on the observed pattern of
 * each family's own known cells, at least k presences), with exact
 * gradients of every parameter by a reverse pass.
 *
 * One pruning serves the likelihood and every conditioning. A node's
 * partial is a vector over (state, label): the probability of the tips
 * below, given the state, with the tips' observations summarised by a label
 * of a small commutative monoid. The likelihood has one label; "at least k
 * presences" counts presences truncated at k (labels 0..k, a + b capped at
 * k); "variable" has labels none known (E), only absences (O), only
 * presences (I), both (M). Children combine by the monoid's convolution,
 * a sum of products of non-negative terms, so P(observable) is computed
 * without cancelling differences however rare the event. The reverse pass
 * of the same algebra gives every derivative.
 *
 * Work is cut into fixed chunks of units (families, or distinct patterns
 * when every family has the same rates), each evaluated by one thread into
 * its own sums, which are added in chunk order: the results do not depend
 * on the thread count.
 *
 * Inside a chunk, passes run over blocks of LANES units side by side, in
 * vectors of LANES doubles (GCC vector extensions; lib/meson.build compiles
 * this file once per instruction set and lib/eval/general_isa.c runs the
 * best the CPU has). Every lane does the same arithmetic, FMA contraction
 * is off and no sum depends on the lanes' grouping, so every copy, build
 * and thread count gives the same bits. Lanes are units for the likelihood
 * (consecutive ones, so their tips' bits are one byte of the data's
 * words) and the chunk's distinct conditioning events for the conditioning
 * (an event: a rate pair and a set of unknown cells; at one pair for every
 * family, the event with every cell known is evaluated once per call).
 *
 * The passes: the likelihood's (one label, two vectors a node), the
 * conditioning's (C <= LANES labels, specialised for the common label
 * counts), and a scalar one for many labels (one event a pass). Tips are
 * not stored: a tip's vector and message are selected by its lanes' cells
 * when its parent reads them (with shared tables, from the three messages
 * a tip can send). Transition tables are computed in vectors with a
 * polynomial exp (lib/eval/kernel/tables.h's method) in a form whose
 * entries do not cancel; shared by the lanes when they have one rate pair
 * (one table a call at one pair), else the lanes' own, which a block's
 * conditioning and likelihood share.
 *
 * Global derivatives are added lane-wise into [n_glob][LANES] per chunk
 * and the lanes summed in order at the chunk's end. A chunk's events are
 * evaluated before the block of their first unit, their reverse passes
 * weighted by the weights of all the units that use them; a unit found
 * impossible afterwards has its weight given back by a second reverse pass
 * of its event (rare). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "general.h"

#define CHUNK_UNITS 64 /* a chunk is one 64-bit word of the data's bits */
#define LANES 8        /* units (or events) per pass */
_Static_assert(CHUNK_UNITS % LANES == 0, "blocks tile a chunk");
#define LN2 0.693147180559945309417232121458176568
/* Partials are rescaled by a power of two when their largest entry falls
 * below this (exact, and far from both ends of double range). */
#define RESCALE_BELOW 0x1p-256
/* A worker keeps every category's partials (for the reverse passes) while
 * they fit in this; beyond, the reverse pass of a category recomputes its
 * inside pass. */
#define KEEP_BYTES ((size_t)48 << 20)

#define AI static inline __attribute__((always_inline))

#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* Vectors of LANES doubles (GCC vector extensions: one register with
 * AVX-512, two with AVX2, four with SSE2) and lane masks. */
typedef double v8 __attribute__((vector_size(LANES * sizeof(double))));
typedef int64_t v8i __attribute__((vector_size(LANES * sizeof(int64_t))));

/* Lane l all ones where bit l of the index is set. */
#define LM(b)                                                               \
    {-(int64_t)((b) & 1),      -(int64_t)((b) >> 1 & 1),                    \
     -(int64_t)((b) >> 2 & 1), -(int64_t)((b) >> 3 & 1),                    \
     -(int64_t)((b) >> 4 & 1), -(int64_t)((b) >> 5 & 1),                    \
     -(int64_t)((b) >> 6 & 1), -(int64_t)((b) >> 7 & 1)}
#define LM4(b) LM(b), LM((b) + 1), LM((b) + 2), LM((b) + 3)
#define LM16(b) LM4(b), LM4((b) + 4), LM4((b) + 8), LM4((b) + 12)
#define LM64(b) LM16(b), LM16((b) + 16), LM16((b) + 32), LM16((b) + 48)
static const v8i lane_masks[256] = {LM64(0), LM64(64), LM64(128), LM64(192)};
#undef LM
#undef LM4
#undef LM16
#undef LM64

AI v8 ld8(const double *p)
{
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}
AI void st8(double *p, v8 v) { memcpy(p, &v, sizeof v); }
AI v8 bc8(double x) { return (v8){x, x, x, x, x, x, x, x}; }
AI v8 sel8(v8i m, v8 a, v8 b) /* m ? a : b */
{
    return (v8)((m & (v8i)a) | (~m & (v8i)b));
}
/* Some lane where every x[i], i < n, is below RESCALE_BELOW: a partial to
 * rescale (the instruction set's mask tests; a loop over lanes compiles to
 * one extraction a lane). */
AI int any_low(const v8 *x, int n)
{
#if defined(__AVX512F__)
    __m512d th = _mm512_set1_pd(RESCALE_BELOW);
    __mmask8 k = 0xFF;
    for (int i = 0; i < n; i++)
        k &= _mm512_cmp_pd_mask((__m512d)x[i], th, _CMP_LT_OQ);
    return k != 0;
#elif defined(__AVX__)
    __m256d th = _mm256_set1_pd(RESCALE_BELOW);
    __m256d lo = _mm256_castsi256_pd(_mm256_set1_epi64x(-1)), hi = lo;
    for (int i = 0; i < n; i++) {
        __m256d h[2];
        memcpy(h, &x[i], sizeof h);
        lo = _mm256_and_pd(lo, _mm256_cmp_pd(h[0], th, _CMP_LT_OQ));
        hi = _mm256_and_pd(hi, _mm256_cmp_pd(h[1], th, _CMP_LT_OQ));
    }
    return _mm256_movemask_pd(_mm256_or_pd(lo, hi)) != 0;
#elif defined(__SSE2__)
    __m128d th = _mm_set1_pd(RESCALE_BELOW);
    __m128d one = _mm_castsi128_pd(_mm_set1_epi64x(-1));
    __m128d q[4] = {one, one, one, one};
    for (int i = 0; i < n; i++) {
        __m128d h[4];
        memcpy(h, &x[i], sizeof h);
        for (int j = 0; j < 4; j++)
            q[j] = _mm_and_pd(q[j], _mm_cmplt_pd(h[j], th));
    }
    return _mm_movemask_pd(
               _mm_or_pd(_mm_or_pd(q[0], q[1]), _mm_or_pd(q[2], q[3]))) != 0;
#else
    int any = 0;
    for (int l = 0; l < LANES; l++) {
        int low = 1;
        for (int i = 0; i < n; i++)
            low &= x[i][l] < RESCALE_BELOW;
        any |= low;
    }
    return any;
#endif
}

enum algebra { ALG_LIK, ALG_COUNT, ALG_VAR };
enum { VAR_E, VAR_O, VAR_I, VAR_M };

/* Transition tables of one branch at one category: the matrix, and its
 * derivatives in log gain and log loss of the branch and in its length. */
enum { T00, T01, T10, T11, T01G, T01L, T10G, T10L, T01T, T10T, NT };

/* An algebra: its labels, the accepted label at the root, the labels of
 * an observed 0 and 1 (conditioning). */
struct alg {
    int alg, C, k, acc, l0, l1;
};

/* The monoid's product of labels a and b. */
AI int op(const struct alg *A, int a, int b)
{
    if (A->alg == ALG_LIK)
        return 0;
    if (A->alg == ALG_COUNT)
        return a + b < A->k ? a + b : A->k;
    if (a == VAR_E)
        return b;
    if (b == VAR_E || a == b)
        return a;
    return VAR_M; /* O with I, or anything with M */
}

/* A category's partials of a block (kept for its reverse pass). */
struct slot {
    double *x, *msg;         /* [internal node][2][C][lanes] */
    int32_t *sc;             /* [internal node][LANES] rescale exponents */
    unsigned char *scaled;   /* [internal node] some lane rescaled */
};

/* The chunk's conditioning events. */
struct keys {
    int n;
    int64_t rep[CHUNK_UNITS];   /* a unit of each (-1: every cell known) */
    double w[CHUNK_UNITS];      /* the weights of its units */
    double fix[CHUNK_UNITS];    /* weights of its impossible units */
    double logp[CHUNK_UNITS], dg[CHUNK_UNITS], dl[CHUNK_UNITS];
    uint64_t hash[CHUNK_UNITS]; /* of each unit's unknown cells */
    unsigned char unk[CHUNK_UNITS]; /* the unit has an unknown cell */
    int of[CHUNK_UNITS];        /* each unit's event; -1 the call's */
};

struct ws {
    struct slot *slot;       /* [slots] */
    double *g;               /* [internal node][2][C][lanes] outside */
    double *suf;             /* [max_children + 1][node width] */
    double *tmp;             /* [6][node width] */
    double *accL;            /* [n_glob][LANES] a chunk's global sums */
    /* Tables of lanes with rates of their own, [ltab_n][n_nodes][NT]
     * [LANES]: every category's (ltab_n = K) or one's, kept for the lanes'
     * rates in ltab_key (a block's likelihood and conditioning share
     * them) */
    double *ltab;
    int ltab_valid, ltab_cat;
    uint64_t ltab_key[2 * LANES];
    double *tab_blk;         /* [K][n_nodes][NT] one pair of a block */
    double *tipm_blk;        /* [K][n_tips][6] its tips' messages */
    uint8_t *pq;             /* [n_tips][2] the likelihood's lanes' bits:
                              * present, unknown */
    int blk_valid;
    uint64_t blk_gain, blk_loss;
    /* [K][LANES] per category and lane */
    double *vt, *lk, *rho, *pi1, *dpi;
    int64_t *ns;
    struct keys keys;
};

struct gen {
    const struct persiste__call *c;
    const persiste_tree *tree;
    const persiste_model *m;
    int condition;       /* the call conditions */
    struct alg lik, cond;
    int cond_lanes;      /* LANES, or 1 for many labels */
    int K;
    const double *cw, *cg, *cl; /* category weights, multipliers */
    int gradient, global;
    /* units: families, or patterns when every family has one pair */
    int64_t n_units;
    const uint64_t *present, *unknown; /* the units' bits, data layout */
    const int64_t *rep;  /* [n_units] a family of each unit (NULL: itself) */
    const double *unit_w;/* [n_units] weights (NULL: weight or 1) */
    double *u_ll, *u_dg, *u_dl; /* unit outputs */
    double *len;         /* [n_nodes] branch lengths used */
    int *clamped;        /* [n_nodes] shorter than the minimum */
    double *tipo;        /* [n_tips][4] P(obs 0 | 0), P(obs 0 | 1),
                          * P(obs 1 | 0), P(obs 1 | 1) */
    int64_t n_glob;      /* n_nodes + d_model's size */
    int64_t n_chunks, first_chunk;
    double *round_bufs;  /* [round][n_glob] */
    int slots;           /* categories whose partials a worker keeps */
    int ltab_n;          /* categories whose lane tables a worker keeps */
    int nrow;            /* rows of the tables in use: T00 .. T11 for a
                          * likelihood, NT with derivatives */
    size_t width;        /* doubles of a node's partial, widest algebra */
    int32_t max_children;
    double *tab_one;     /* [K][n_nodes][NT] at the call's one pair */
    double *tipm_one;    /* [K][n_tips][6] its tips' messages */
    /* the conditioning at the one pair with every cell known */
    int have_global;
    double g_logp, g_dg, g_dl;
    double *g_vec;       /* [n_glob] its d log P / d (globals) */
    struct ws **ws;
};

/* Offsets of the model's derivatives in the globals. */
static inline int64_t off_err(const struct gen *G)
{
    return G->tree->n_nodes;
}
static inline int64_t off_cat(const struct gen *G)
{
    return off_err(G) + 2 * (int64_t)G->m->n_error;
}
static inline int64_t off_lin(const struct gen *G)
{
    return off_cat(G) + 3 * (int64_t)G->m->n_cat;
}

/* Branch v's table in tab: shared by the lanes ([n_nodes][NT]), or the
 * lanes' own ([n_nodes][nrow][LANES]). */
AI const double *btab(const struct gen *G, const double *tab, int SH,
                      int32_t v)
{
    return tab + (size_t)v * (SH ? NT : (size_t)G->nrow * LANES);
}

/* e = exp(-x) and em = 1 - e for x >= 0, lane-wise, to a few ulps, by
 * the method of the fast kernels (lib/eval/kernel/tables.h), written out
 * without FMA so that every build rounds alike: x = n ln2/8 - r with |r| <=
 * ln2/16 and n = 8k + i, expm1(-r) = p by its Taylor series (degree 8),
 * 2^(-i/8) = T_hi + T_lo from a table, then
 *   e = 2^-k (T_hi + (T_lo + T_hi p)),
 *   em = (1 - 2^-k T_hi) - 2^-k (T_lo + T_hi p),
 * where 1 - 2^-k T_hi is exact for k = 0 and at least 1/2 otherwise:
 * neither cancels. Beyond x = 700, e is 0 and em 1 exactly (derivatives
 * multiply e by branch lengths that may be huge). */
AI void exp_pair8(v8 x, v8 *e, v8 *em)
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
    static const double inv_fact[7] = {1.0 / 5040, 1.0 / 720, 1.0 / 120,
                                       1.0 / 24,   1.0 / 6,   1.0 / 2, 1.0};
    v8i big = x >= bc8(700.0);
    x = sel8(big, bc8(700.0), x);
    /* n = round(x 8/ln2) <= 8080: adding 1.5 2^52 rounds it into the low
     * bits of the mantissa */
    const double shifter = 0x1.8p52;
    v8 t = x * (8.0 / LN2) + shifter;
    v8 nd = t - shifter;
    v8i n = (v8i)t - (v8i)bc8(shifter);
    v8 r = (nd * step_hi - x) + nd * step_lo; /* -x + n ln2/8 */
    v8 p = bc8(1.0 / 40320); /* 1/8! */
    for (int i = 0; i < 7; i++)
        p = p * r + inv_fact[i];
    p = p * r; /* expm1(r) */
    v8 th, tl;
    for (int l = 0; l < LANES; l++) {
        th[l] = t_hi[n[l] & 7];
        tl[l] = t_lo[n[l] & 7];
    }
    v8 scale = (v8)((1023 - (n >> 3)) << 52); /* 2^-k, n >= 0 */
    v8 tail = tl + th * p;
    *e = sel8(big, bc8(0.0), scale * (th + tail));
    *em = sel8(big, bc8(1.0), (1.0 - scale * th) - scale * tail);
}

/* Tables of LANES branches or lanes: rates lb, mb on the branch (lineage
 * multipliers applied), length t, free 1 where the length is not clamped
 * (else its derivative rows are 0); rows 0 .. nrow-1 into T[row * LANES]
 * (a likelihood needs T00 .. T11). With s = lb + mb, x = s t, e = exp(-x),
 * em = 1 - e, q1 = lb / s, q0 = mb / s and tgm = t (e - phi(x)), phi(x) =
 * em / x:
 *   P00 = q0 + q1 e   P01 = q1 em   P10 = q0 em   P11 = q1 + q0 e
 *   dP01/dlog lb = q1 (q0 em + lb t e)   dP01/dlog mb = q1 mb tgm
 *   dP10/dlog mb = q0 (q1 em + mb t e)   dP10/dlog lb = q0 lb tgm
 *   dP01/dt = lb e   dP10/dt = mb e
 * Every entry but the tgm ones (<= 0) is a sum of non-negative terms; tgm
 * comes from its series where t e - em / s would cancel. */
AI void table_rows8(v8 lb, v8 mb, v8 t, v8 fr, int nrow, double *T)
{
    /* sum_{k>=1} (-x)^k k/(k+1)! = e^-x - phi(x), to k = 9: exact to an
     * ulp below 0.05 */
    static const double emp_coef[10] = {
        0.0,         -1.0 / 2,   1.0 / 3,    -1.0 / 8,    1.0 / 30,
        -1.0 / 144,  1.0 / 840,  -1.0 / 5760, 1.0 / 45360, -1.0 / 403200};
    v8 s = lb + mb, x = s * t, e, em;
    exp_pair8(x, &e, &em);
    /* s below the normal range (rates underflown by tiny multipliers):
     * P is the identity, whatever split q1 + q0 = 1 */
    v8i tiny = s < bc8(DBL_MIN);
    v8 inv_s = sel8(tiny, bc8(0.0), 1.0 / s);
    v8 q1 = sel8(tiny, bc8(0.5), lb * inv_s);
    v8 q0 = sel8(tiny, bc8(0.5), mb * inv_s);
    st8(T + T00 * LANES, q0 + q1 * e);
    st8(T + T01 * LANES, q1 * em);
    st8(T + T10 * LANES, q0 * em);
    st8(T + T11 * LANES, q1 + q0 * e);
    if (nrow <= T11 + 1)
        return;
    v8 r = bc8(emp_coef[9]);
    for (int k = 8; k >= 1; k--)
        r = r * x + emp_coef[k];
    v8 tgm = sel8(x < bc8(0.05), t * (r * x), t * e - em * inv_s);
    v8 te = t * e;
    st8(T + T01G * LANES, q1 * (q0 * em + lb * te));
    st8(T + T01L * LANES, q1 * mb * tgm);
    st8(T + T10G * LANES, q0 * lb * tgm);
    st8(T + T10L * LANES, q0 * (q1 * em + mb * te));
    st8(T + T01T * LANES, fr * (lb * e));
    st8(T + T10T * LANES, fr * (mb * e));
}

static void tip_messages(const struct gen *G, const double *T, int32_t t,
                         double *M);

/* Every branch's tables at one pair, for each category: [K][n_nodes][NT],
 * LANES branches at a time, and the messages of the tips by their cell,
 * [K][n_tips][6] (see tip_messages). */
static void fill_tables(const struct gen *G, double lg, double ll,
                        double *tab, double *tipm)
{
    const persiste_model *m = G->m;
    int32_t n = G->tree->n_nodes, nt = G->tree->n_tips, nb = n - 1;
    int nrow = G->nrow;
    for (int k = 0; k < G->K; k++) {
        double lam = exp(lg) * G->cg[k], mu = exp(ll) * G->cl[k];
        double *tk = tab + (size_t)k * n * NT;
        for (int32_t v0 = 0; v0 < nb; v0 += LANES) {
            v8 lb, mb, t, fr;
            double rows[NT * LANES];
            for (int l = 0; l < LANES; l++) {
                int32_t v = v0 + l < nb ? v0 + l : nb - 1;
                lb[l] = lam * (m->n_lineage ? m->lin_gain[v] : 1.0);
                mb[l] = mu * (m->n_lineage ? m->lin_loss[v] : 1.0);
                t[l] = G->len[v];
                fr[l] = G->clamped[v] ? 0.0 : 1.0;
            }
            table_rows8(lb, mb, t, fr, nrow, rows);
            for (int l = 0; l < LANES && v0 + l < nb; l++)
                for (int r = 0; r < nrow; r++)
                    tk[(size_t)(v0 + l) * NT + r] = rows[r * LANES + l];
        }
        for (int32_t t = 0; t < nt && t + 1 < n; t++)
            tip_messages(G, tk + (size_t)t * NT, t,
                         tipm + ((size_t)k * nt + t) * 6);
    }
}

/* Category k's tables of lanes with rates of their own: [n_nodes][nrow]
 * [LANES]. */
static void fill_lane_tables(const struct gen *G, int k, const double *lg,
                             const double *ll, double *tab)
{
    const persiste_model *m = G->m;
    int32_t n = G->tree->n_nodes;
    int nrow = G->nrow;
    v8 lam, mu;
    for (int l = 0; l < LANES; l++) {
        lam[l] = exp(lg[l]) * G->cg[k];
        mu[l] = exp(ll[l]) * G->cl[k];
    }
    for (int32_t v = 0; v + 1 < n; v++) {
        v8 lb = lam, mb = mu;
        if (m->n_lineage) {
            lb = lam * m->lin_gain[v];
            mb = mu * m->lin_loss[v];
        }
        table_rows8(lb, mb, bc8(G->len[v]), bc8(G->clamped[v] ? 0.0 : 1.0),
                    nrow, tab + (size_t)v * nrow * LANES);
    }
}

/* Root prior of category k at a pair: pi1, and d pi1 / d log gain (= -d
 * pi1 / d log loss). */
static void root_prior(const struct gen *G, int k, double lg, double ll,
                       double *pi1, double *dpi)
{
    const persiste_model *m = G->m;
    if (m->root_prior == PERSISTE_ROOT_STATIONARY) {
        double lam = exp(lg) * G->cg[k], mu = exp(ll) * G->cl[k];
        double s = lam + mu;
        if (s > 0.0) {
            *pi1 = lam / s;
            *dpi = lam / s * (mu / s);
        } else {
            /* a category of multiplier 0 (gamma at tiny alpha), or rates
             * that underflow: the limit along the multipliers, from the
             * log ratio (the base rates' share when they are equal) */
            *pi1 = persiste__category_share(ll - lg, G->cg[k], G->cl[k]);
            *dpi = *pi1 * (1.0 - *pi1);
        }
    } else {
        *pi1 = m->root_prior == PERSISTE_ROOT_FIXED ? m->root_freq : 0.0;
        *dpi = 0.0;
    }
}

/* ---- The conditioning with many labels, one event a pass ---------------
 * At least k presences with k >= LANES: [2][C] partials a node and C^2
 * products a combination, so one event a pass (the first lane of its
 * block, whose tables are then shared). The arithmetic of inside_cv_t and
 * reverse_cv_t, in scalars. */

/* Tip t's vector [2][C]: each possible observation of a known cell, or
 * label 0 (the identity of every algebra) for an unknown one. */
static void sc_tip(const struct gen *G, const struct ws *w,
                   const struct alg *A, int32_t t, double *x)
{
    int C = A->C;
    const double *o = G->tipo + 4 * (size_t)t;
    int unknown = w->pq[2 * (size_t)t + 1] & 1;
    for (int s = 0; s < 2; s++)
        for (int a = 0; a < C; a++)
            x[s * C + a] = unknown ? (a == 0 ? 1.0 : 0.0)
                           : a == A->l0 ? o[s]
                           : a == A->l1 ? o[2 + s]
                                        : 0.0;
}

/* The message to the parent: P (table T) applied to the partial x. */
static void sc_msg(int C, const double *T, const double *x, double *m)
{
    for (int a = 0; a < C; a++) {
        double a0 = x[a], a1 = x[C + a];
        m[a] = T[T00] * a0 + T[T01] * a1;
        m[C + a] = T[T10] * a0 + T[T11] * a1;
    }
}

/* out[s][c] = sum over op(a, b) = c of x[s][a] y[s][b]. */
static void sc_combine(const struct alg *A, const double *x, const double *y,
                       double *out)
{
    int C = A->C;
    for (int s = 0; s < 2; s++) {
        const double *xs = x + (size_t)s * C, *ys = y + (size_t)s * C;
        double *os = out + (size_t)s * C;
        for (int c = 0; c < C; c++)
            os[c] = 0.0;
        for (int a = 0; a < C; a++) {
            if (xs[a] == 0.0)
                continue; /* adds nothing */
            for (int b = 0; b < C; b++)
                os[op(A, a, b)] += xs[a] * ys[b];
        }
    }
}

/* dx[s][a] = sum_b d[s][op(a, b)] y[s][b]: the reverse of sc_combine in
 * x; y NULL is the identity (dx = d). */
static void sc_combine_back(const struct alg *A, const double *d,
                            const double *y, double *dx)
{
    int C = A->C;
    if (!y) {
        memcpy(dx, d, 2 * (size_t)C * sizeof *dx);
        return;
    }
    for (int s = 0; s < 2; s++) {
        const double *ds = d + (size_t)s * C, *ys = y + (size_t)s * C;
        for (int a = 0; a < C; a++) {
            double acc = 0.0;
            for (int b = 0; b < C; b++)
                acc += ds[op(A, a, b)] * ys[b];
            dx[s * C + a] = acc;
        }
    }
}

/* Child c's message: stored, or a tip's into buf (its vector into xbuf,
 * or past buf's message). */
static const double *sc_child(const struct gen *G, const struct ws *w,
                              const struct alg *A, const double *tab,
                              const struct slot *p, int32_t c, double *buf,
                              double *xbuf)
{
    int32_t nt = G->tree->n_tips;
    size_t Wn = 2 * (size_t)A->C;
    if (c >= nt)
        return p->msg + (size_t)(c - nt) * Wn;
    double *xv = xbuf ? xbuf : buf + Wn;
    sc_tip(G, w, A, c, xv);
    sc_msg(A->C, tab + (size_t)c * NT, xv, buf);
    return buf;
}

/* inside_cv_t for lane 0. */
static void inside_many(const struct gen *G, struct ws *w,
                        const struct alg *A, const double *tab,
                        struct slot *p, const double *pi1, double *vt,
                        int64_t *nscale)
{
    const persiste_tree *tr = G->tree;
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    int C = A->C;
    size_t Wn = 2 * (size_t)C;
    double *t0 = w->tmp, *t1 = w->tmp + 2 * Wn;
    int64_t total = 0;
    const double *xr = t0;
    if (n == nt) {
        sc_tip(G, w, A, 0, t0);
    } else {
        for (int32_t v = nt; v < n; v++) {
            size_t i = (size_t)(v - nt);
            double *xv = p->x + i * Wn;
            int32_t c0 = tr->child_start[v], c1 = tr->child_start[v + 1];
            const double *m0 =
                sc_child(G, w, A, tab, p, tr->children[c0], t0, NULL);
            memcpy(xv, m0, Wn * sizeof *xv);
            for (int32_t j = c0 + 1; j < c1; j++) {
                const double *mj =
                    sc_child(G, w, A, tab, p, tr->children[j], t1, NULL);
                sc_combine(A, xv, mj, t0);
                memcpy(xv, t0, Wn * sizeof *xv);
            }
            double mx = 0.0;
            for (size_t r = 0; r < Wn; r++)
                mx = xv[r] > mx ? xv[r] : mx;
            p->scaled[i] = 0;
            if (mx < RESCALE_BELOW && mx > 0.0) {
                int e = ilogb(mx);
                for (size_t r = 0; r < Wn; r++)
                    xv[r] = ldexp(xv[r], -e);
                p->sc[i * LANES] = -e;
                total += -e;
                p->scaled[i] = 1;
            }
            if (v + 1 < n)
                sc_msg(C, tab + (size_t)v * NT, xv, p->msg + i * Wn);
        }
        xr = p->x + (size_t)(n - 1 - nt) * Wn;
    }
    vt[0] = (1.0 - pi1[0]) * xr[A->acc] + pi1[0] * xr[C + A->acc];
    nscale[0] = total;
}

/* The error pair's derivatives of tip t from gc, the reverse partial of
 * its vector, weighted by gfac, into lane 0 of accL. */
static void sc_tip_error(const struct gen *G, const struct ws *w,
                         const struct alg *A, int32_t t, const double *gc,
                         double gfac, double *accL)
{
    const persiste_model *m = G->m;
    int64_t ne = m->n_error;
    if (w->pq[2 * (size_t)t + 1] & 1)
        return; /* unknown: no error */
    double a_, b_;
    persiste__model_error(m, t, &a_, &b_);
    int64_t i = ne == 1 ? 0 : t;
    int C = A->C;
    double da = gc[C + A->l0] - gc[C + A->l1], db = gc[A->l1] - gc[A->l0];
    accL[(size_t)(off_err(G) + i) * LANES] += gfac * a_ * da;
    accL[(size_t)(off_err(G) + ne + i) * LANES] += gfac * b_ * db;
}

/* cv_child_back for one event; r its siblings' product (NULL: none), xc
 * its partial, sc its node's exponent. */
static void sc_child_back(const struct gen *G, struct ws *w,
                          const struct alg *A, const double *tab,
                          const double *gv, const double *r, int32_t sc,
                          const double *xc, int32_t c, double gfac,
                          double *accL, double *dg, double *dl)
{
    const persiste_model *m = G->m;
    int32_t nt = G->tree->n_tips;
    int C = A->C;
    size_t Wn = 2 * (size_t)C;
    double *h = w->tmp + 4 * Wn, *gt = w->tmp + 5 * Wn;
    sc_combine_back(A, gv, r, h);
    if (sc)
        for (size_t i = 0; i < Wn; i++)
            h[i] = ldexp(h[i], sc);
    const double *T = tab + (size_t)c * NT;
    const double *h0 = h, *h1 = h + C, *x0 = xc, *x1 = xc + C;
    /* dVt/dP(i, j) = sum_a h[i][a] x_c[j][a] */
    double d00 = 0.0, d01 = 0.0, d10 = 0.0, d11 = 0.0;
    for (int a = 0; a < C; a++) {
        d00 += h0[a] * x0[a];
        d01 += h0[a] * x1[a];
        d10 += h1[a] * x0[a];
        d11 += h1[a] * x1[a];
    }
    double e01 = d01 - d00, e10 = d10 - d11;
    double bg = e01 * T[T01G] + e10 * T[T10G];
    double bl = e01 * T[T01L] + e10 * T[T10L];
    *dg += bg;
    *dl += bl;
    if (accL) {
        int64_t nl = m->n_lineage;
        accL[(size_t)c * LANES] += gfac * (e01 * T[T01T] + e10 * T[T10T]);
        if (nl) {
            accL[(size_t)(off_lin(G) + c) * LANES] += gfac * bg;
            accL[(size_t)(off_lin(G) + nl + c) * LANES] += gfac * bl;
        }
    }
    int tip_err = c < nt && accL && m->n_error;
    if (c < nt && !tip_err)
        return;
    /* the child's reverse partial: P^T h */
    double *gc = c >= nt ? w->g + (size_t)(c - nt) * Wn : gt;
    for (int a = 0; a < C; a++) {
        gc[a] = T[T00] * h0[a] + T[T10] * h1[a];
        gc[C + a] = T[T01] * h0[a] + T[T11] * h1[a];
    }
    if (tip_err)
        sc_tip_error(G, w, A, c, gc, gfac, accL);
}

/* reverse_cv_t for lane 0. */
static void reverse_many(const struct gen *G, struct ws *w,
                         const struct alg *A, const double *tab,
                         const struct slot *p, int k, const double *pi1,
                         const double *dpi, const double *gfac, double *accL,
                         double *dg_out, double *dl_out)
{
    const persiste_tree *tr = G->tree;
    const persiste_model *m = G->m;
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    int C = A->C, acc = A->acc;
    size_t Wn = 2 * (size_t)C;
    double *t0 = w->tmp, *t1 = w->tmp + Wn, *t2 = w->tmp + 2 * Wn,
           *t3 = w->tmp + 3 * Wn;
    const double *xr = n == nt ? t0 : p->x + (size_t)(n - 1 - nt) * Wn;
    if (n == nt)
        sc_tip(G, w, A, 0, t0);
    /* the root prior */
    double droot = (xr[C + acc] - xr[acc]) * dpi[0];
    double dg = droot, dl = -droot;
    double *gr = n == nt ? t1 : w->g + (size_t)(n - 1 - nt) * Wn;
    for (size_t i = 0; i < Wn; i++)
        gr[i] = 0.0;
    gr[acc] = 1.0 - pi1[0];
    gr[C + acc] = pi1[0];
    if (n == nt && accL && m->n_error)
        sc_tip_error(G, w, A, 0, gr, gfac[0], accL);
    for (int32_t v = n - 1; v >= nt; v--) {
        size_t i = (size_t)(v - nt);
        const double *gv = w->g + i * Wn;
        int32_t c0 = tr->child_start[v], c1 = tr->child_start[v + 1];
        int32_t m_ch = c1 - c0;
        int32_t sc = p->scaled[i] ? p->sc[i * LANES] : 0;
        if (m_ch == 2) {
            int32_t a = tr->children[c0], b = tr->children[c0 + 1];
            const double *ma = sc_child(G, w, A, tab, p, a, t0, t2);
            const double *mb = sc_child(G, w, A, tab, p, b, t1, t3);
            const double *xa = a < nt ? t2 : p->x + (size_t)(a - nt) * Wn;
            const double *xb = b < nt ? t3 : p->x + (size_t)(b - nt) * Wn;
            sc_child_back(G, w, A, tab, gv, mb, sc, xa, a, gfac[0], accL,
                          &dg, &dl);
            sc_child_back(G, w, A, tab, gv, ma, sc, xb, b, gfac[0], accL,
                          &dg, &dl);
            continue;
        }
        if (m_ch == 1) {
            int32_t a = tr->children[c0];
            const double *xa = t2;
            if (a < nt)
                sc_tip(G, w, A, a, t2);
            else
                xa = p->x + (size_t)(a - nt) * Wn;
            sc_child_back(G, w, A, tab, gv, NULL, sc, xa, a, gfac[0], accL,
                          &dg, &dl);
            continue;
        }
        /* suffix products of the children's messages, a running prefix */
        double *suf = w->suf, *pre = t3, *sm = suf + (size_t)m_ch * Wn;
        for (size_t q = 0; q < Wn; q++)
            sm[q] = pre[q] = 0.0;
        sm[0] = sm[C] = pre[0] = pre[C] = 1.0; /* the identity */
        for (int32_t j = m_ch - 1; j >= 0; j--) {
            const double *mj =
                sc_child(G, w, A, tab, p, tr->children[c0 + j], t0, NULL);
            sc_combine(A, suf + (size_t)(j + 1) * Wn, mj, suf + (size_t)j * Wn);
        }
        for (int32_t j = 0; j < m_ch; j++) {
            int32_t c = tr->children[c0 + j];
            sc_combine(A, pre, suf + (size_t)(j + 1) * Wn, t1);
            const double *mj = sc_child(G, w, A, tab, p, c, t0, t2);
            const double *xc = c < nt ? t2 : p->x + (size_t)(c - nt) * Wn;
            sc_child_back(G, w, A, tab, gv, t1, sc, xc, c, gfac[0], accL, &dg,
                          &dl);
            sc_combine(A, pre, mj, t1); /* the next prefix */
            memcpy(pre, t1, Wn * sizeof *pre);
        }
    }
    if (accL && m->n_cat) {
        int64_t nk = m->n_cat;
        accL[(size_t)(off_cat(G) + k) * LANES] += gfac[0] * dg;
        accL[(size_t)(off_cat(G) + nk + k) * LANES] += gfac[0] * dl;
    }
    dg_out[0] = dg;
    dl_out[0] = dl;
}

/* ---- The likelihood's passes, in vectors of LANES doubles --------------
 * One label: a node's partial is two vectors (states 0 and 1), a tip's
 * vector and message are selected by its lanes' bits (two bytes a tip in
 * w->pq: present, unknown). Shared tables broadcast their entries, and
 * the three messages a tip can send through them are computed with them
 * (tip_messages); lanes' own tables load a vector per entry. */
/* Entry r of a branch's table T: broadcast, or the lanes' own. */
#define TV(T, r) (SH ? bc8((T)[r]) : ld8((T) + (r) * LANES))

/* The three messages tip t can send through table T: for an observed 0,
 * an observed 1 and an unknown cell, states 0 and 1 each (the message
 * arithmetic of the passes: the same bits). */
static void tip_messages(const struct gen *G, const double *T, int32_t t,
                         double *M)
{
    const double *o = G->tipo + 4 * (size_t)t;
    M[0] = T[T00] * o[0] + T[T01] * o[1];
    M[1] = T[T10] * o[0] + T[T11] * o[1];
    M[2] = T[T00] * o[2] + T[T01] * o[3];
    M[3] = T[T10] * o[2] + T[T11] * o[3];
    M[4] = T[T00] * 1.0 + T[T01] * 1.0;
    M[5] = T[T10] * 1.0 + T[T11] * 1.0;
}

/* Tip t's vector (x0, x1) of the lanes' cells. */
AI void lik_tip_x(const struct gen *G, const struct ws *w, int32_t t, v8 *x0,
                  v8 *x1)
{
    const double *o = G->tipo + 4 * (size_t)t;
    v8i mp = lane_masks[w->pq[2 * (size_t)t]];
    v8i mq = lane_masks[w->pq[2 * (size_t)t + 1]];
    *x0 = sel8(mq, bc8(1.0), sel8(mp, bc8(o[2]), bc8(o[0])));
    *x1 = sel8(mq, bc8(1.0), sel8(mp, bc8(o[3]), bc8(o[1])));
}

/* Tip t's message (m0, m1). */
AI void lik_tip_msg(const struct gen *G, const struct ws *w, int SH,
                    const double *tab, const double *tipm, int32_t t, v8 *m0,
                    v8 *m1)
{
    if (SH) {
        const double *M = tipm + 6 * (size_t)t;
        v8i mp = lane_masks[w->pq[2 * (size_t)t]];
        v8i mq = lane_masks[w->pq[2 * (size_t)t + 1]];
        *m0 = sel8(mq, bc8(M[4]), sel8(mp, bc8(M[2]), bc8(M[0])));
        *m1 = sel8(mq, bc8(M[5]), sel8(mp, bc8(M[3]), bc8(M[1])));
        return;
    }
    const double *T = btab(G, tab, 0, t);
    v8 x0, x1;
    lik_tip_x(G, w, t, &x0, &x1);
    *m0 = TV(T, T00) * x0 + TV(T, T01) * x1;
    *m1 = TV(T, T10) * x0 + TV(T, T11) * x1;
}

/* Child c's message. */
AI void lik_child(const struct gen *G, const struct ws *w, int SH,
                  const double *tab, const double *tipm,
                  const struct slot *p, int32_t c, v8 *m0, v8 *m1)
{
    int32_t nt = G->tree->n_tips;
    if (c < nt) {
        lik_tip_msg(G, w, SH, tab, tipm, c, m0, m1);
    } else {
        const double *m = p->msg + (size_t)(c - nt) * 2 * LANES;
        *m0 = ld8(m);
        *m1 = ld8(m + LANES);
    }
}

/* The likelihood's inside pass (inside_cv_t with one label). */
AI void inside_lik_t(const struct gen *G, struct ws *w, int SH,
                     const double *tab, const double *tipm, struct slot *p,
                     const double *pi1, double *vt, int64_t *nscale)
{
    const persiste_tree *tr = G->tree;
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    int64_t total[LANES] = {0};
    v8 r0, r1;
    if (n == nt) {
        lik_tip_x(G, w, 0, &r0, &r1);
    } else {
        for (int32_t v = nt; v < n; v++) {
            size_t i = (size_t)(v - nt);
            double *xv = p->x + i * 2 * LANES;
            int32_t c0 = tr->child_start[v], c1 = tr->child_start[v + 1];
            v8 a0, a1, b0, b1;
            lik_child(G, w, SH, tab, tipm, p, tr->children[c0], &a0, &a1);
            for (int32_t j = c0 + 1; j < c1; j++) {
                lik_child(G, w, SH, tab, tipm, p, tr->children[j], &b0, &b1);
                a0 = a0 * b0;
                a1 = a1 * b1;
            }
            st8(xv, a0);
            st8(xv + LANES, a1);
            p->scaled[i] = 0;
            v8 ab[2] = {a0, a1};
            if (any_low(ab, 2)) {
                v8 mx = sel8(a1 > a0, a1, a0);
                int32_t *sc = p->sc + i * LANES;
                for (int l = 0; l < LANES; l++) {
                    sc[l] = 0;
                    if (mx[l] < RESCALE_BELOW && mx[l] > 0.0) {
                        int e = ilogb(mx[l]);
                        xv[l] = ldexp(xv[l], -e);
                        xv[LANES + l] = ldexp(xv[LANES + l], -e);
                        sc[l] = -e;
                        total[l] += -e;
                        p->scaled[i] = 1;
                    }
                }
                a0 = ld8(xv);
                a1 = ld8(xv + LANES);
            }
            if (v + 1 < n) {
                const double *T = btab(G, tab, SH, v);
                double *m = p->msg + i * 2 * LANES;
                st8(m, TV(T, T00) * a0 + TV(T, T01) * a1);
                st8(m + LANES, TV(T, T10) * a0 + TV(T, T11) * a1);
            }
        }
        r0 = ld8(p->x + (size_t)(n - 1 - nt) * 2 * LANES);
        r1 = ld8(p->x + (size_t)(n - 1 - nt) * 2 * LANES + LANES);
    }
    v8 q = ld8(pi1);
    st8(vt, (1.0 - q) * r0 + q * r1);
    for (int l = 0; l < LANES; l++)
        nscale[l] = total[l];
}

/* x1 - x0 of child c: of its partial, or of its tip vector (one of three
 * values, by its lanes' cells). */
AI v8 lik_child_dx(const struct gen *G, const struct ws *w,
                   const struct slot *p, int32_t c)
{
    int32_t nt = G->tree->n_tips;
    if (c >= nt) {
        const double *x = p->x + (size_t)(c - nt) * 2 * LANES;
        return ld8(x + LANES) - ld8(x);
    }
    const double *o = G->tipo + 4 * (size_t)c;
    v8i mp = lane_masks[w->pq[2 * (size_t)c]];
    v8i mq = lane_masks[w->pq[2 * (size_t)c + 1]];
    return sel8(mq, bc8(0.0), sel8(mp, bc8(o[3] - o[2]), bc8(o[1] - o[0])));
}

/* Child c of a node with reverse partial (g0, g1) (cv_child_back with one
 * label): r0, r1 its siblings' product (ones: none); dx = x1 - x0 of its
 * partial. */
AI void lik_child_back(const struct gen *G, struct ws *w, int SH,
                       const double *tab, v8 g0, v8 g1, v8 r0, v8 r1,
                       int scaled, const int32_t *sc, v8 dx, int32_t c,
                       v8 vg, double *accL, v8 *dg, v8 *dl)
{
    const persiste_model *m = G->m;
    int32_t nt = G->tree->n_tips;
    v8 h0 = g0 * r0, h1 = g1 * r1;
    if (scaled) {
        double hb[2 * LANES];
        st8(hb, h0);
        st8(hb + LANES, h1);
        for (int l = 0; l < LANES; l++)
            if (sc[l]) {
                hb[l] = ldexp(hb[l], sc[l]);
                hb[LANES + l] = ldexp(hb[LANES + l], sc[l]);
            }
        h0 = ld8(hb);
        h1 = ld8(hb + LANES);
    }
    const double *T = btab(G, tab, SH, c);
    /* dVt/dP(i, j) = h_i x_j, and P's rows sum to 1: the terms of
     * dP01 = -dP00 and dP10 = -dP11 (x1 - x0 is exact where it cancels) */
    v8 e01 = h0 * dx, e10 = -(h1 * dx);
    v8 bg = e01 * TV(T, T01G) + e10 * TV(T, T10G);
    v8 bl = e01 * TV(T, T01L) + e10 * TV(T, T10L);
    *dg += bg;
    *dl += bl;
    if (accL) {
        double *bt = accL + (size_t)c * LANES;
        st8(bt, ld8(bt) + vg * (e01 * TV(T, T01T) + e10 * TV(T, T10T)));
        int64_t nl = m->n_lineage;
        if (nl) {
            double *a = accL + (size_t)(off_lin(G) + c) * LANES;
            double *b = accL + (size_t)(off_lin(G) + nl + c) * LANES;
            st8(a, ld8(a) + vg * bg);
            st8(b, ld8(b) + vg * bl);
        }
    }
    int tip_err = c < nt && accL && m->n_error;
    if (c < nt && !tip_err)
        return;
    /* the child's reverse partial: P^T h */
    v8 gc0 = TV(T, T00) * h0 + TV(T, T10) * h1;
    v8 gc1 = TV(T, T01) * h0 + TV(T, T11) * h1;
    if (c >= nt) {
        double *gc = w->g + (size_t)(c - nt) * 2 * LANES;
        st8(gc, gc0);
        st8(gc + LANES, gc1);
        return;
    }
    /* the error pair of tip c */
    int64_t ne = m->n_error;
    double a_, b_;
    persiste__model_error(m, c, &a_, &b_);
    int64_t i = ne == 1 ? 0 : c;
    v8i mp = lane_masks[w->pq[2 * (size_t)c]];
    v8i mq = lane_masks[w->pq[2 * (size_t)c + 1]];
    v8 da = sel8(mp, -gc1, gc1), db = sel8(mp, gc0, -gc0);
    double *ga = accL + (size_t)(off_err(G) + i) * LANES;
    double *gb = accL + (size_t)(off_err(G) + ne + i) * LANES;
    st8(ga, ld8(ga) + sel8(mq, bc8(0.0), vg * bc8(a_) * da));
    st8(gb, ld8(gb) + sel8(mq, bc8(0.0), vg * bc8(b_) * db));
}

/* The likelihood's reverse pass (reverse_cv_t with one label). */
AI void reverse_lik_t(const struct gen *G, struct ws *w, int SH,
                      const double *tab, const double *tipm,
                      const struct slot *p, int k, const double *pi1,
                      const double *dpi, const double *gfac, double *accL,
                      double *dg, double *dl)
{
    const persiste_tree *tr = G->tree;
    const persiste_model *m = G->m;
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    v8 vg = ld8(gfac), q = ld8(pi1), r0, r1, one = bc8(1.0);
    if (n == nt) {
        lik_tip_x(G, w, 0, &r0, &r1);
    } else {
        r0 = ld8(p->x + (size_t)(n - 1 - nt) * 2 * LANES);
        r1 = ld8(p->x + (size_t)(n - 1 - nt) * 2 * LANES + LANES);
    }
    /* the root prior */
    v8 droot = (r1 - r0) * ld8(dpi);
    v8 vdg = droot, vdl = -droot;
    if (n == nt) {
        if (accL && m->n_error) { /* a tip's error pair at the root */
            double *ga = accL + (size_t)off_err(G) * LANES;
            double *gb = accL + (size_t)(off_err(G) + m->n_error) * LANES;
            double a_, b_;
            persiste__model_error(m, 0, &a_, &b_);
            v8i mp = lane_masks[w->pq[0]], mq = lane_masks[w->pq[1]];
            v8 gc0 = 1.0 - q, gc1 = q;
            v8 da = sel8(mp, -gc1, gc1), db = sel8(mp, gc0, -gc0);
            st8(ga, ld8(ga) + sel8(mq, bc8(0.0), vg * bc8(a_) * da));
            st8(gb, ld8(gb) + sel8(mq, bc8(0.0), vg * bc8(b_) * db));
        }
    } else {
        double *gr = w->g + (size_t)(n - 1 - nt) * 2 * LANES;
        st8(gr, 1.0 - q);
        st8(gr + LANES, q);
    }
    for (int32_t v = n - 1; v >= nt; v--) {
        size_t i = (size_t)(v - nt);
        v8 g0 = ld8(w->g + i * 2 * LANES), g1 = ld8(w->g + i * 2 * LANES + LANES);
        int32_t c0 = tr->child_start[v], c1 = tr->child_start[v + 1];
        int scaled = p->scaled[i];
        const int32_t *sc = p->sc + i * LANES;
        if (c1 - c0 == 2) {
            int32_t a = tr->children[c0], b = tr->children[c0 + 1];
            v8 ma0, ma1, mb0, mb1;
            lik_child(G, w, SH, tab, tipm, p, a, &ma0, &ma1);
            lik_child(G, w, SH, tab, tipm, p, b, &mb0, &mb1);
            lik_child_back(G, w, SH, tab, g0, g1, mb0, mb1, scaled, sc,
                           lik_child_dx(G, w, p, a), a, vg, accL, &vdg,
                           &vdl);
            lik_child_back(G, w, SH, tab, g0, g1, ma0, ma1, scaled, sc,
                           lik_child_dx(G, w, p, b), b, vg, accL, &vdg,
                           &vdl);
            continue;
        }
        /* suffix products of the children's messages, a running prefix */
        double *suf = w->suf;
        int32_t m_ch = c1 - c0;
        st8(suf + (size_t)m_ch * 2 * LANES, one);
        st8(suf + (size_t)m_ch * 2 * LANES + LANES, one);
        for (int32_t j = m_ch - 1; j >= 0; j--) {
            v8 m0, m1;
            lik_child(G, w, SH, tab, tipm, p, tr->children[c0 + j], &m0, &m1);
            double *s = suf + (size_t)j * 2 * LANES;
            st8(s, ld8(s + 2 * LANES) * m0);
            st8(s + LANES, ld8(s + 3 * LANES) * m1);
        }
        v8 p0 = one, p1 = one;
        for (int32_t j = 0; j < m_ch; j++) {
            int32_t c = tr->children[c0 + j];
            const double *s = suf + (size_t)(j + 1) * 2 * LANES;
            v8 m0, m1;
            lik_child(G, w, SH, tab, tipm, p, c, &m0, &m1);
            lik_child_back(G, w, SH, tab, g0, g1, p0 * ld8(s),
                           p1 * ld8(s + LANES), scaled, sc,
                           lik_child_dx(G, w, p, c), c, vg, accL, &vdg,
                           &vdl);
            p0 = p0 * m0;
            p1 = p1 * m1;
        }
    }
    st8(dg, vdg);
    st8(dl, vdl);
    if (accL && m->n_cat) {
        int64_t nk = m->n_cat;
        double *cg = accL + (size_t)(off_cat(G) + k) * LANES;
        double *cl = accL + (size_t)(off_cat(G) + nk + k) * LANES;
        st8(cg, ld8(cg) + vg * vdg);
        st8(cl, ld8(cl) + vg * vdl);
    }
}
/* ---- The conditioning's passes, in vectors of LANES doubles ------------
 * C <= LANES labels; ALG and C are constants where the entry points can
 * give them (ALG < 0: the call's). A node's partial is [2][C] vectors;
 * lanes are events, whose unknown cells are the second byte of w->pq (the
 * first is 0). */
#define CMAX LANES

/* The monoid's product for algebra alg, count cap k. */
AI int opk(int alg, int k, int a, int b)
{
    if (alg == ALG_COUNT)
        return a + b < k ? a + b : k;
    if (a == VAR_E)
        return b;
    if (b == VAR_E || a == b)
        return a;
    return VAR_M;
}

/* Tip t's vector for the lanes' cells. */
AI void cv_tip(const struct gen *G, const struct ws *w, const struct alg *A,
               int C, int32_t t, v8 *x)
{
    const double *o = G->tipo + 4 * (size_t)t;
    v8i mq = lane_masks[w->pq[2 * (size_t)t + 1]];
    for (int s = 0; s < 2; s++)
        for (int a = 0; a < C; a++) {
            double kn = a == A->l0 ? o[s] : a == A->l1 ? o[2 + s] : 0.0;
            x[s * C + a] = sel8(mq, bc8(a == 0 ? 1.0 : 0.0), bc8(kn));
        }
}

/* P applied to x (table T of the branch). */
AI void cv_msg(int C, int SH, const double *T, const v8 *x, v8 *m)
{
    v8 t00 = TV(T, T00), t01 = TV(T, T01), t10 = TV(T, T10),
       t11 = TV(T, T11);
    for (int a = 0; a < C; a++) {
        m[a] = t00 * x[a] + t01 * x[C + a];
        m[C + a] = t10 * x[a] + t11 * x[C + a];
    }
}

/* Child c's message (and its vector into xc if not NULL). */
AI void cv_child(const struct gen *G, const struct ws *w, const struct alg *A,
                 int C, int SH, const double *tab, const struct slot *p,
                 int32_t c, v8 *m, v8 *xc)
{
    int32_t nt = G->tree->n_tips;
    size_t Wn = 2 * (size_t)C * LANES;
    if (c < nt) {
        v8 xt[2 * CMAX];
        v8 *x = xc ? xc : xt;
        cv_tip(G, w, A, C, c, x);
        cv_msg(C, SH, btab(G, tab, SH, c), x, m);
        return;
    }
    const double *mp = p->msg + (size_t)(c - nt) * Wn;
    for (int i = 0; i < 2 * C; i++)
        m[i] = ld8(mp + (size_t)i * LANES);
    if (xc) {
        const double *xp = p->x + (size_t)(c - nt) * Wn;
        for (int i = 0; i < 2 * C; i++)
            xc[i] = ld8(xp + (size_t)i * LANES);
    }
}

/* out = the monoid's convolution of x and y, per state. */
AI void cv_combine(int alg, int k, int C, const v8 *x, const v8 *y, v8 *out)
{
    for (int s = 0; s < 2; s++) {
        for (int c = 0; c < C; c++)
            out[s * C + c] = bc8(0.0);
        for (int a = 0; a < C; a++)
            for (int b = 0; b < C; b++) {
                int o = opk(alg, k, a, b);
                out[s * C + o] = out[s * C + o] + x[s * C + a] * y[s * C + b];
            }
    }
}

/* dx[s][a] = sum_b d[s][op(a, b)] y[s][b]. */
AI void cv_combine_back(int alg, int k, int C, const v8 *d, const v8 *y,
                        v8 *dx)
{
    for (int s = 0; s < 2; s++)
        for (int a = 0; a < C; a++) {
            v8 acc = bc8(0.0);
            for (int b = 0; b < C; b++)
                acc = acc + d[s * C + opk(alg, k, a, b)] * y[s * C + b];
            dx[s * C + a] = acc;
        }
}

/* Inside pass of one category over the lanes: the partials and messages of
 * the internal nodes into p, each partial rescaled by a power of two (its
 * exponent in p->sc) where its largest entry falls below RESCALE_BELOW;
 * the scaled root values into vt and the sums of the exponents into nscale
 * (vt 0 where impossible). */
AI void inside_cv_t(const struct gen *G, struct ws *w, const struct alg *A,
                    int ALG, int C, int SH, const double *tab,
                    struct slot *p, const double *pi1, double *vt,
                    int64_t *nscale)
{
    const persiste_tree *tr = G->tree;
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    int alg = ALG >= 0 ? ALG : A->alg, k = ALG == ALG_COUNT ? C - 1 : A->k;
    size_t Wn = 2 * (size_t)C * LANES;
    int64_t total[LANES] = {0};
    v8 xr[2 * CMAX];
    if (n == nt) {
        cv_tip(G, w, A, C, 0, xr);
    } else {
        for (int32_t v = nt; v < n; v++) {
            size_t i = (size_t)(v - nt);
            double *xv = p->x + i * Wn;
            int32_t c0 = tr->child_start[v], c1 = tr->child_start[v + 1];
            v8 a[2 * CMAX], b[2 * CMAX], o[2 * CMAX];
            cv_child(G, w, A, C, SH, tab, p, tr->children[c0], a, NULL);
            for (int32_t j = c0 + 1; j < c1; j++) {
                cv_child(G, w, A, C, SH, tab, p, tr->children[j], b, NULL);
                cv_combine(alg, k, C, a, b, o);
                for (int q = 0; q < 2 * C; q++)
                    a[q] = o[q];
            }
            for (int q = 0; q < 2 * C; q++)
                st8(xv + (size_t)q * LANES, a[q]);
            p->scaled[i] = 0;
            if (any_low(a, 2 * C)) {
                v8 mx = bc8(0.0);
                for (int q = 0; q < 2 * C; q++)
                    mx = sel8(a[q] > mx, a[q], mx);
                int32_t *sc = p->sc + i * LANES;
                for (int l = 0; l < LANES; l++) {
                    sc[l] = 0;
                    if (mx[l] < RESCALE_BELOW && mx[l] > 0.0) {
                        int e = ilogb(mx[l]);
                        for (int q = 0; q < 2 * C; q++)
                            xv[(size_t)q * LANES + l] =
                                ldexp(xv[(size_t)q * LANES + l], -e);
                        sc[l] = -e;
                        total[l] += -e;
                        p->scaled[i] = 1;
                    }
                }
                for (int q = 0; q < 2 * C; q++)
                    a[q] = ld8(xv + (size_t)q * LANES);
            }
            if (v + 1 < n) {
                v8 m[2 * CMAX];
                cv_msg(C, SH, btab(G, tab, SH, v), a, m);
                double *mp = p->msg + i * Wn;
                for (int q = 0; q < 2 * C; q++)
                    st8(mp + (size_t)q * LANES, m[q]);
            }
        }
        const double *xp = p->x + (size_t)(n - 1 - nt) * Wn;
        for (int q = 0; q < 2 * C; q++)
            xr[q] = ld8(xp + (size_t)q * LANES);
    }
    v8 q1 = ld8(pi1);
    st8(vt, (1.0 - q1) * xr[A->acc] + q1 * xr[C + A->acc]);
    for (int l = 0; l < LANES; l++)
        nscale[l] = total[l];
}

/* The error pair's derivatives of tip t from gc, the reverse partial of
 * its vector. */
AI void cv_tip_error(const struct gen *G, const struct ws *w,
                     const struct alg *A, int C, int32_t t, const v8 *gc,
                     v8 vg, double *accL)
{
    const persiste_model *m = G->m;
    int64_t ne = m->n_error;
    double a_, b_;
    persiste__model_error(m, t, &a_, &b_);
    int64_t i = ne == 1 ? 0 : t;
    v8i mq = lane_masks[w->pq[2 * (size_t)t + 1]];
    v8 da = gc[C + A->l0] - gc[C + A->l1], db = gc[A->l1] - gc[A->l0];
    double *ga = accL + (size_t)(off_err(G) + i) * LANES;
    double *gb = accL + (size_t)(off_err(G) + ne + i) * LANES;
    st8(ga, ld8(ga) + sel8(mq, bc8(0.0), vg * bc8(a_) * da));
    st8(gb, ld8(gb) + sel8(mq, bc8(0.0), vg * bc8(b_) * db));
}

/* Child c of a node with reverse partial gv (scaled by the node's
 * exponents sc where scaled): with its siblings' product r (NULL: none), h
 * = dVt / d(its message); with its partial xc, the derivatives of its
 * branch's table, into dg, dl and (weighted by vg) accL; then its own
 * reverse partial P^T h, into w->g for an internal node, into its error
 * pair's derivatives for a tip. */
AI void cv_child_back(const struct gen *G, struct ws *w, const struct alg *A,
                      int alg, int k, int C, int SH, const double *tab,
                      const v8 *gv, const v8 *r, int scaled,
                      const int32_t *sc, const v8 *xc, int32_t c, v8 vg,
                      double *accL, v8 *dg, v8 *dl)
{
    const persiste_model *m = G->m;
    int32_t nt = G->tree->n_tips;
    v8 h[2 * CMAX];
    if (r)
        cv_combine_back(alg, k, C, gv, r, h);
    else
        for (int q = 0; q < 2 * C; q++)
            h[q] = gv[q];
    if (scaled) {
        double hb[2 * CMAX * LANES];
        for (int q = 0; q < 2 * C; q++)
            st8(hb + (size_t)q * LANES, h[q]);
        for (int l = 0; l < LANES; l++)
            if (sc[l])
                for (int q = 0; q < 2 * C; q++)
                    hb[(size_t)q * LANES + l] =
                        ldexp(hb[(size_t)q * LANES + l], sc[l]);
        for (int q = 0; q < 2 * C; q++)
            h[q] = ld8(hb + (size_t)q * LANES);
    }
    const double *T = btab(G, tab, SH, c);
    /* dVt/dP(i, j) = sum_a h[i][a] x_c[j][a] */
    v8 d00 = h[0] * xc[0], d01 = h[0] * xc[C], d10 = h[C] * xc[0],
       d11 = h[C] * xc[C];
    for (int a = 1; a < C; a++) {
        d00 = d00 + h[a] * xc[a];
        d01 = d01 + h[a] * xc[C + a];
        d10 = d10 + h[C + a] * xc[a];
        d11 = d11 + h[C + a] * xc[C + a];
    }
    v8 e01 = d01 - d00, e10 = d10 - d11;
    v8 bg = e01 * TV(T, T01G) + e10 * TV(T, T10G);
    v8 bl = e01 * TV(T, T01L) + e10 * TV(T, T10L);
    *dg += bg;
    *dl += bl;
    if (accL) {
        double *bt = accL + (size_t)c * LANES;
        st8(bt, ld8(bt) + vg * (e01 * TV(T, T01T) + e10 * TV(T, T10T)));
        int64_t nl = m->n_lineage;
        if (nl) {
            double *a = accL + (size_t)(off_lin(G) + c) * LANES;
            double *b = accL + (size_t)(off_lin(G) + nl + c) * LANES;
            st8(a, ld8(a) + vg * bg);
            st8(b, ld8(b) + vg * bl);
        }
    }
    int tip_err = c < nt && accL && m->n_error;
    if (c < nt && !tip_err)
        return;
    v8 gc[2 * CMAX];
    v8 t00 = TV(T, T00), t01 = TV(T, T01), t10 = TV(T, T10),
       t11 = TV(T, T11);
    for (int a = 0; a < C; a++) {
        gc[a] = t00 * h[a] + t10 * h[C + a];
        gc[C + a] = t01 * h[a] + t11 * h[C + a];
    }
    if (c >= nt) {
        double *gp = w->g + (size_t)(c - nt) * 2 * C * LANES;
        for (int q = 0; q < 2 * C; q++)
            st8(gp + (size_t)q * LANES, gc[q]);
        return;
    }
    cv_tip_error(G, w, A, C, c, gc, vg, accL);
}

/* Reverse pass of the inside pass stored in p (category k): the reverse
 * partial of every node, d Vt / d(its scaled partial), from its parent's;
 * adds gfac * d Vt / d(global) to accL (if not NULL) lane-wise, and sets
 * dg, dl to d Vt / d log gain and d log loss of the lanes' rates (branches
 * and root). */
AI void reverse_cv_t(const struct gen *G, struct ws *w, const struct alg *A,
                     int ALG, int C, int SH, const double *tab,
                     const struct slot *p, int k, const double *pi1,
                     const double *dpi, const double *gfac, double *accL,
                     double *dg, double *dl)
{
    const persiste_tree *tr = G->tree;
    const persiste_model *m = G->m;
    int32_t n = tr->n_nodes, nt = tr->n_tips;
    int alg = ALG >= 0 ? ALG : A->alg, kk = ALG == ALG_COUNT ? C - 1 : A->k;
    size_t Wn = 2 * (size_t)C * LANES;
    int acc = A->acc;
    v8 vg = ld8(gfac), q = ld8(pi1);
    v8 xr[2 * CMAX], gr[2 * CMAX];
    if (n == nt) {
        cv_tip(G, w, A, C, 0, xr);
    } else {
        const double *xp = p->x + (size_t)(n - 1 - nt) * Wn;
        for (int i = 0; i < 2 * C; i++)
            xr[i] = ld8(xp + (size_t)i * LANES);
    }
    /* the root prior */
    v8 droot = (xr[C + acc] - xr[acc]) * ld8(dpi);
    v8 vdg = droot, vdl = -droot;
    for (int i = 0; i < 2 * C; i++)
        gr[i] = bc8(0.0);
    gr[acc] = 1.0 - q;
    gr[C + acc] = q;
    if (n == nt) {
        if (accL && m->n_error)
            cv_tip_error(G, w, A, C, 0, gr, vg, accL);
    } else {
        double *gp = w->g + (size_t)(n - 1 - nt) * Wn;
        for (int i = 0; i < 2 * C; i++)
            st8(gp + (size_t)i * LANES, gr[i]);
    }
    for (int32_t v = n - 1; v >= nt; v--) {
        size_t i = (size_t)(v - nt);
        v8 gv[2 * CMAX];
        const double *gp = w->g + i * Wn;
        for (int q2 = 0; q2 < 2 * C; q2++)
            gv[q2] = ld8(gp + (size_t)q2 * LANES);
        int32_t c0 = tr->child_start[v], c1 = tr->child_start[v + 1];
        int scaled = p->scaled[i];
        const int32_t *sc = p->sc + i * LANES;
        if (c1 - c0 == 2) {
            int32_t a = tr->children[c0], b = tr->children[c0 + 1];
            v8 ma[2 * CMAX], mb[2 * CMAX], xa[2 * CMAX], xb[2 * CMAX];
            cv_child(G, w, A, C, SH, tab, p, a, ma, xa);
            cv_child(G, w, A, C, SH, tab, p, b, mb, xb);
            cv_child_back(G, w, A, alg, kk, C, SH, tab, gv, mb, scaled, sc,
                          xa, a, vg, accL, &vdg, &vdl);
            cv_child_back(G, w, A, alg, kk, C, SH, tab, gv, ma, scaled, sc,
                          xb, b, vg, accL, &vdg, &vdl);
            continue;
        }
        if (c1 - c0 == 1) {
            int32_t a = tr->children[c0];
            v8 ma[2 * CMAX], xa[2 * CMAX];
            cv_child(G, w, A, C, SH, tab, p, a, ma, xa);
            cv_child_back(G, w, A, alg, kk, C, SH, tab, gv, NULL, scaled, sc,
                          xa, a, vg, accL, &vdg, &vdl);
            continue;
        }
        /* suffix products of the children's messages, a running prefix */
        double *suf = w->suf;
        int32_t m_ch = c1 - c0;
        v8 pre[2 * CMAX], t[2 * CMAX], mj[2 * CMAX], xj[2 * CMAX];
        for (int q2 = 0; q2 < 2 * C; q2++) /* the identity */
            pre[q2] = t[q2] = bc8(q2 % C == 0 ? 1.0 : 0.0);
        for (int q2 = 0; q2 < 2 * C; q2++)
            st8(suf + (size_t)m_ch * Wn + (size_t)q2 * LANES, t[q2]);
        for (int32_t j = m_ch - 1; j >= 0; j--) {
            cv_child(G, w, A, C, SH, tab, p, tr->children[c0 + j], mj, NULL);
            cv_combine(alg, kk, C, t, mj, xj);
            for (int q2 = 0; q2 < 2 * C; q2++) {
                t[q2] = xj[q2];
                st8(suf + (size_t)j * Wn + (size_t)q2 * LANES, t[q2]);
            }
        }
        for (int32_t j = 0; j < m_ch; j++) {
            int32_t c = tr->children[c0 + j];
            v8 s[2 * CMAX], r[2 * CMAX];
            for (int q2 = 0; q2 < 2 * C; q2++)
                s[q2] = ld8(suf + (size_t)(j + 1) * Wn + (size_t)q2 * LANES);
            cv_combine(alg, kk, C, pre, s, r);
            cv_child(G, w, A, C, SH, tab, p, c, mj, xj);
            cv_child_back(G, w, A, alg, kk, C, SH, tab, gv, r, scaled, sc, xj,
                          c, vg, accL, &vdg, &vdl);
            cv_combine(alg, kk, C, pre, mj, r);
            for (int q2 = 0; q2 < 2 * C; q2++)
                pre[q2] = r[q2];
        }
    }
    st8(dg, vdg);
    st8(dl, vdl);
    if (accL && m->n_cat) {
        int64_t nk = m->n_cat;
        double *cg = accL + (size_t)(off_cat(G) + k) * LANES;
        double *cl = accL + (size_t)(off_cat(G) + nk + k) * LANES;
        st8(cg, ld8(cg) + vg * vdg);
        st8(cl, ld8(cl) + vg * vdl);
    }
}

#undef TV

/* The entry points: each specialisation of the passes. */
#define PASS_ARGS                                                          \
    const struct gen *G, struct ws *w, const struct alg *A,                \
        const double *tab, const double *tipm, struct slot *p
#define LIK(SH, sfx)                                                       \
    static void inside_lik_##sfx(PASS_ARGS, const double *pi1, double *vt, \
                                 int64_t *ns)                              \
    {                                                                      \
        (void)A;                                                           \
        inside_lik_t(G, w, SH, tab, tipm, p, pi1, vt, ns);                 \
    }                                                                      \
    static void reverse_lik_##sfx(PASS_ARGS, int k, const double *pi1,     \
                                  const double *dpi, const double *gfac,   \
                                  double *accL, double *dg, double *dl)    \
    {                                                                      \
        (void)A;                                                           \
        reverse_lik_t(G, w, SH, tab, tipm, p, k, pi1, dpi, gfac, accL, dg, \
                      dl);                                                 \
    }
LIK(1, sh)
LIK(0, ln)
#define CV(name, ALG, C, SH)                                               \
    static void inside_##name(PASS_ARGS, const double *pi1, double *vt,    \
                              int64_t *ns)                                 \
    {                                                                      \
        (void)tipm;                                                        \
        inside_cv_t(G, w, A, ALG, C, SH, tab, p, pi1, vt, ns);             \
    }                                                                      \
    static void reverse_##name(PASS_ARGS, int k, const double *pi1,        \
                               const double *dpi, const double *gfac,      \
                               double *accL, double *dg, double *dl)       \
    {                                                                      \
        (void)tipm;                                                        \
        reverse_cv_t(G, w, A, ALG, C, SH, tab, p, k, pi1, dpi, gfac, accL, \
                     dg, dl);                                              \
    }
CV(count2_sh, ALG_COUNT, 2, 1)
CV(count2_ln, ALG_COUNT, 2, 0)
CV(count3_sh, ALG_COUNT, 3, 1)
CV(count3_ln, ALG_COUNT, 3, 0)
CV(var_sh, ALG_VAR, 4, 1)
CV(var_ln, ALG_VAR, 4, 0)
CV(cn_sh, -1, A->C, 1)
CV(cn_ln, -1, A->C, 0)
static void inside_c1(PASS_ARGS, const double *pi1, double *vt, int64_t *ns)
{
    (void)tipm;
    inside_many(G, w, A, tab, p, pi1, vt, ns);
}
static void reverse_c1(PASS_ARGS, int k, const double *pi1, const double *dpi,
                       const double *gfac, double *accL, double *dg,
                       double *dl)
{
    (void)tipm;
    reverse_many(G, w, A, tab, p, k, pi1, dpi, gfac, accL, dg, dl);
}

typedef void (*inside_fn)(PASS_ARGS, const double *, double *, int64_t *);
typedef void (*reverse_fn)(PASS_ARGS, int, const double *, const double *,
                           const double *, double *, double *, double *);

/* ---- Blocks ---------------------------------------------------------- */

/* A block of lanes: units of the likelihood or events of the
 * conditioning, their rates, and where their tables are. */
struct block {
    int lik;
    int LN;                  /* lanes computed */
    double lg[LANES], ll[LANES];
    const double *tab_sh;    /* [K][n_nodes][NT] shared by every lane, or
                              * NULL: each lane's own (w->ltab) */
    const double *tipm_sh;   /* [K][n_tips][6] with tab_sh */
    inside_fn inside;
    reverse_fn reverse;
};

/* Which tables and passes serve block b, its lanes' rates set. */
static void block_setup(const struct gen *G, struct ws *w, struct block *b)
{
    int one = 1;
    for (int l = 1; l < b->LN && one; l++)
        one = !memcmp(&b->lg[l], &b->lg[0], sizeof b->lg[0]) &&
              !memcmp(&b->ll[l], &b->ll[0], sizeof b->ll[0]);
    uint64_t kg, kl;
    memcpy(&kg, &b->lg[0], sizeof kg);
    memcpy(&kl, &b->ll[0], sizeof kl);
    b->tab_sh = b->tipm_sh = NULL;
    if (one && G->tab_one) {
        b->tab_sh = G->tab_one; /* the call's one pair */
        b->tipm_sh = G->tipm_one;
    } else if (one) {
        if (!w->blk_valid || w->blk_gain != kg || w->blk_loss != kl) {
            fill_tables(G, b->lg[0], b->ll[0], w->tab_blk, w->tipm_blk);
            w->blk_valid = 1;
            w->blk_gain = kg;
            w->blk_loss = kl;
        }
        b->tab_sh = w->tab_blk;
        b->tipm_sh = w->tipm_blk;
    }
    const struct alg *A = b->lik ? &G->lik : &G->cond;
    int sh = b->tab_sh != NULL;
    if (b->lik) {
        b->inside = sh ? inside_lik_sh : inside_lik_ln;
        b->reverse = sh ? reverse_lik_sh : reverse_lik_ln;
    } else if (b->LN == 1) {
        /* one lane: a lane table is a shared one */
        b->inside = inside_c1;
        b->reverse = reverse_c1;
    } else if (A->alg == ALG_COUNT && A->C == 2) {
        b->inside = sh ? inside_count2_sh : inside_count2_ln;
        b->reverse = sh ? reverse_count2_sh : reverse_count2_ln;
    } else if (A->alg == ALG_COUNT && A->C == 3) {
        b->inside = sh ? inside_count3_sh : inside_count3_ln;
        b->reverse = sh ? reverse_count3_sh : reverse_count3_ln;
    } else if (A->alg == ALG_VAR) {
        b->inside = sh ? inside_var_sh : inside_var_ln;
        b->reverse = sh ? reverse_var_sh : reverse_var_ln;
    } else {
        b->inside = sh ? inside_cn_sh : inside_cn_ln;
        b->reverse = sh ? reverse_cn_sh : reverse_cn_ln;
    }
}

/* Category k's tables for block b, and its tips' messages if shared
 * (else the lanes' own tables, built if not kept). */
static const double *block_tables(const struct gen *G, struct ws *w,
                                  const struct block *b, int k,
                                  const double **tipm)
{
    size_t n = (size_t)G->tree->n_nodes, nt = (size_t)G->tree->n_tips;
    if (b->tab_sh) {
        *tipm = b->tipm_sh + (size_t)k * nt * 6;
        return b->tab_sh + (size_t)k * n * NT;
    }
    *tipm = NULL;
    uint64_t key[2 * LANES];
    memcpy(key, b->lg, sizeof b->lg);
    memcpy(key + LANES, b->ll, sizeof b->ll);
    int same = w->ltab_valid && !memcmp(key, w->ltab_key, sizeof key);
    size_t per = n * (size_t)G->nrow * LANES;
    if (G->ltab_n == G->K) {
        if (!same)
            for (int j = 0; j < G->K; j++)
                fill_lane_tables(G, j, b->lg, b->ll, w->ltab + (size_t)j * per);
        w->ltab_cat = -1;
    } else if (!same || w->ltab_cat != k) {
        fill_lane_tables(G, k, b->lg, b->ll, w->ltab);
        w->ltab_cat = k;
    }
    w->ltab_valid = 1;
    memcpy(w->ltab_key, key, sizeof key);
    return w->ltab + (G->ltab_n == G->K ? (size_t)k * per : 0);
}

/* log sum_k w_k exp(l[k]) and the posterior weights rho[k], for lane l of
 * [K][LANES] arrays. */
static double mix(const struct gen *G, const double *lk, double *rho, int l)
{
    if (!G->m->n_cat) { /* one category of weight 1 */
        rho[l] = isfinite(lk[l]) ? 1.0 : 0.0;
        return isfinite(lk[l]) ? lk[l] : -INFINITY;
    }
    return persiste__mix(G->K, G->cw, lk + l, LANES, rho + l);
}

/* Inside passes of every category over block b (w->pq set): val[l] =
 * log sum_k w_k V_k of each lane, posterior weights in w->rho. */
static void block_inside(const struct gen *G, struct ws *w,
                         const struct block *b, double *val)
{
    const struct alg *A = b->lik ? &G->lik : &G->cond;
    for (int k = 0; k < G->K; k++) {
        int s = G->slots == G->K ? k : 0;
        const double *tipm, *tab = block_tables(G, w, b, k, &tipm);
        double *pi1 = w->pi1 + (size_t)k * LANES, *dpi = w->dpi + (size_t)k * LANES;
        double *vt = w->vt + (size_t)k * LANES, *lk = w->lk + (size_t)k * LANES;
        int64_t *ns = w->ns + (size_t)k * LANES;
        for (int l = 0; l < b->LN; l++)
            root_prior(G, k, b->lg[l], b->ll[l], &pi1[l], &dpi[l]);
        b->inside(G, w, A, tab, tipm, &w->slot[s], pi1, vt, ns);
        for (int l = 0; l < b->LN; l++)
            lk[l] = vt[l] > 0.0 ? log(vt[l]) - (double)ns[l] * LN2
                                : -INFINITY;
    }
    for (int l = 0; l < b->LN; l++)
        val[l] = mix(G, w->lk, w->rho, l);
}

/* Reverse passes of the block whose inside passes just ran, for the lanes
 * with active[l]: dg[l], dl[l] = d log sum_k w_k V_k / d log gain, log loss
 * of each lane, and wt[l] times the lane's global derivatives into accL
 * (if not NULL). */
static void block_reverse(const struct gen *G, struct ws *w,
                          const struct block *b, const int *active,
                          const double *wt, double *accL, double *dg,
                          double *dl)
{
    const struct alg *A = b->lik ? &G->lik : &G->cond;
    int64_t nk = G->m->n_cat;
    for (int l = 0; l < LANES; l++)
        dg[l] = dl[l] = 0.0;
    for (int k = 0; k < G->K; k++) {
        const double *rho = w->rho + (size_t)k * LANES;
        const double *vt = w->vt + (size_t)k * LANES;
        double f[LANES], gfac[LANES], dgk[LANES], dlk[LANES];
        int any = 0;
        for (int l = 0; l < LANES; l++) {
            int on = l < b->LN && active[l] && rho[l] != 0.0;
            f[l] = on ? rho[l] / vt[l] : 0.0;
            gfac[l] = on ? wt[l] * f[l] : 0.0;
            any |= on;
        }
        if (!any)
            continue;
        int s = G->slots == G->K ? k : 0;
        const double *tipm;
        const double *tab = block_tables(G, w, b, k, &tipm);
        if (G->slots != G->K) { /* the inside pass again, into the one slot */
            double vt2[LANES];
            int64_t ns2[LANES];
            b->inside(G, w, A, tab, tipm, &w->slot[s],
                      w->pi1 + (size_t)k * LANES, vt2, ns2);
        }
        b->reverse(G, w, A, tab, tipm, &w->slot[s], k,
                   w->pi1 + (size_t)k * LANES, w->dpi + (size_t)k * LANES,
                   gfac, accL, dgk, dlk);
        for (int l = 0; l < b->LN; l++)
            if (active[l] && rho[l] != 0.0) {
                dg[l] += f[l] * dgk[l];
                dl[l] += f[l] * dlk[l];
            }
        if (accL && nk) { /* d/dw_k of log sum w P */
            double *cw = accL + (size_t)(off_cat(G) + 2 * nk + k) * LANES;
            for (int l = 0; l < b->LN; l++)
                if (active[l] && rho[l] != 0.0)
                    cw[l] += wt[l] * rho[l] / G->cw[k];
        }
    }
}

/* ---- Chunks ---------------------------------------------------------- */

static double unit_rate(const struct gen *G, const double *r, int64_t u)
{
    return r[G->rep ? G->rep[u] : u];
}

static double unit_weight(const struct gen *G, int64_t u)
{
    return G->unit_w ? G->unit_w[u] : G->c->weight ? G->c->weight[u] : 1.0;
}

static int same_double(double a, double b)
{
    return !memcmp(&a, &b, sizeof a);
}

/* The bits of the likelihood's lanes, units u0 .. u0 + n - 1 of one word
 * (the lanes past n copy the first): present, unknown. */
static void cells_units(const struct gen *G, int64_t u0, int n, uint8_t *pq)
{
    int32_t nt = G->tree->n_tips;
    const uint64_t *P = G->present + (size_t)(u0 >> 6) * nt;
    const uint64_t *U = G->unknown + (size_t)(u0 >> 6) * nt;
    int sh = (int)(u0 & 63);
    unsigned keep = (1u << n) - 1, pad = 0xFFu & ~keep;
    for (int32_t t = 0; t < nt; t++) {
        unsigned p = (unsigned)(P[t] >> sh) & keep;
        unsigned q = (unsigned)(U[t] >> sh) & keep;
        pq[2 * (size_t)t] = (uint8_t)(p | (p & 1 ? pad : 0));
        pq[2 * (size_t)t + 1] = (uint8_t)(q | (q & 1 ? pad : 0));
    }
}

/* The bits of the conditioning's lanes (as cells_units gives them): each
 * event's unknown cells; rep[l] < 0 knows every cell; events of one word. */
static void cells_events(const struct gen *G, const int64_t *rep, int n,
                         uint8_t *pq)
{
    int32_t nt = G->tree->n_tips;
    int64_t word = -1;
    for (int l = 0; l < n; l++)
        if (rep[l] >= 0)
            word = rep[l] >> 6;
    for (int32_t t = 0; t < nt; t++) {
        uint64_t q = word >= 0 ? G->unknown[(size_t)word * nt + t] : 0;
        unsigned bits = 0;
        for (int l = 0; l < LANES; l++) {
            int64_t r = rep[l < n ? l : 0];
            bits |= (unsigned)(r >= 0 && ((q >> (r & 63)) & 1)) << l;
        }
        pq[2 * (size_t)t] = 0;
        pq[2 * (size_t)t + 1] = (uint8_t)bits;
    }
}

/* Events ev[0 .. n-1] of the chunk's keys (at most the conditioning's
 * lanes): log P(event), its derivatives, and wt[] times its global
 * derivatives into accL. */
static void eval_events(const struct gen *G, struct ws *w, const int *ev,
                        int n, const double *wt, double *accL, int store)
{
    struct keys *ks = &w->keys;
    struct block b = {.lik = 0, .LN = G->cond_lanes};
    int64_t rep[LANES];
    double val[LANES], dg[LANES], dl[LANES], wl[LANES] = {0};
    int active[LANES] = {0};
    for (int l = 0; l < b.LN; l++) {
        int e = ev[l < n ? l : 0];
        int64_t u = ks->rep[e];
        rep[l] = u;
        b.lg[l] = unit_rate(G, G->c->log_gain, u);
        b.ll[l] = unit_rate(G, G->c->log_loss, u);
    }
    block_setup(G, w, &b);
    cells_events(G, rep, n, w->pq);
    block_inside(G, w, &b, val);
    for (int l = 0; l < n; l++) {
        active[l] = isfinite(val[l]);
        wl[l] = wt[l];
    }
    if (G->gradient)
        block_reverse(G, w, &b, active, wl, accL, dg, dl);
    if (store)
        for (int l = 0; l < n; l++) {
            ks->logp[ev[l]] = val[l];
            ks->dg[ev[l]] = active[l] && G->gradient ? dg[l] : 0.0;
            ks->dl[ev[l]] = active[l] && G->gradient ? dl[l] : 0.0;
        }
}

/* The unknown cells of units a and b (of one word) are the same. */
static int same_unknown(const struct gen *G, int64_t a, int64_t b)
{
    int32_t nt = G->tree->n_tips;
    const uint64_t *U = G->unknown + (size_t)(a >> 6) * nt;
    int sa = (int)(a & 63), sb = (int)(b & 63);
    for (int32_t t = 0; t < nt; t++)
        if (((U[t] >> sa) ^ (U[t] >> sb)) & 1)
            return 0;
    return 1;
}

/* The chunk's events: each unit's (rate pair, unknown cells), the same
 * ones found once; the call's own at one pair with every cell known. */
static void find_events(const struct gen *G, struct ws *w, int64_t u0,
                        int nu)
{
    struct keys *ks = &w->keys;
    int32_t nt = G->tree->n_tips;
    ks->n = 0;
    for (int i = 0; i < nu; i++) {
        ks->hash[i] = 0;
        ks->unk[i] = 0;
    }
    if (G->c->data->any_unknown) {
        const uint64_t *U = G->unknown + (size_t)(u0 >> 6) * nt;
        for (int32_t t = 0; t < nt; t++) {
            uint64_t q = U[t];
            while (q) {
                int i = __builtin_ctzll(q);
                q &= q - 1;
                if (i >= nu)
                    break;
                ks->unk[i] = 1;
                ks->hash[i] = persiste__mix64(ks->hash[i] + (uint64_t)t + 1);
            }
        }
    }
    for (int i = 0; i < nu; i++) {
        int64_t u = u0 + i;
        double uw = unit_weight(G, u);
        if (G->have_global && !ks->unk[i]) {
            ks->of[i] = -1;
            continue;
        }
        double lg = unit_rate(G, G->c->log_gain, u);
        double ll = unit_rate(G, G->c->log_loss, u);
        int e = 0;
        for (; e < ks->n; e++) {
            int64_t r = ks->rep[e];
            int j = (int)(r - u0);
            if (ks->unk[j] == ks->unk[i] && ks->hash[j] == ks->hash[i] &&
                same_double(unit_rate(G, G->c->log_gain, r), lg) &&
                same_double(unit_rate(G, G->c->log_loss, r), ll) &&
                (!ks->unk[i] || same_unknown(G, r, u)))
                break;
        }
        if (e == ks->n) {
            ks->rep[e] = u;
            ks->w[e] = 0.0;
            ks->fix[e] = 0.0;
            ks->n++;
        }
        ks->w[e] += uw;
        ks->of[i] = e;
    }
}

static void run_chunk(void *arg, int64_t task, int worker)
{
    struct gen *G = arg;
    struct ws *w = G->ws[worker];
    struct keys *ks = &w->keys;
    int64_t chunk = G->first_chunk + task;
    int64_t u0 = chunk * CHUNK_UNITS, u1 = u0 + CHUNK_UNITS;
    if (u1 > G->n_units)
        u1 = G->n_units;
    int nu = (int)(u1 - u0);
    double *acc = NULL, *accL = NULL;
    if (G->global) {
        acc = G->round_bufs + (size_t)task * (size_t)G->n_glob;
        accL = w->accL;
        memset(accL, 0, (size_t)G->n_glob * LANES * sizeof *accL);
    }
    int LNc = G->cond_lanes, next = 0; /* the next event to evaluate */
    if (G->condition)
        find_events(G, w, u0, nu);
    double pending = 0.0; /* weights of the units at the call's event */
    for (int64_t b0 = u0; b0 < u1; b0 += LANES) {
        int n = u1 - b0 < LANES ? (int)(u1 - b0) : LANES;
        /* the events first seen in this block, before it: when the block
         * has one event a unit, they are its lanes (the same tables) */
        while (G->condition && next < ks->n && ks->rep[next] < b0 + n) {
            int ev[LANES], m = 0;
            double wt[LANES];
            while (m < LNc && next < ks->n && ks->rep[next] < b0 + n) {
                ev[m] = next;
                wt[m++] = -ks->w[next++];
            }
            eval_events(G, w, ev, m, wt, accL, 1);
        }
        struct block b = {.lik = 1, .LN = LANES};
        double val[LANES], logp[LANES], cdg[LANES], cdl[LANES], wt[LANES];
        double dg[LANES], dl[LANES];
        int active[LANES] = {0};
        for (int l = 0; l < LANES; l++) {
            int64_t u = b0 + (l < n ? l : 0);
            b.lg[l] = unit_rate(G, G->c->log_gain, u);
            b.ll[l] = unit_rate(G, G->c->log_loss, u);
            wt[l] = l < n ? unit_weight(G, u) : 0.0;
            logp[l] = cdg[l] = cdl[l] = 0.0;
            if (G->condition && l < n) {
                int e = ks->of[b0 - u0 + l];
                logp[l] = e < 0 ? G->g_logp : ks->logp[e];
                cdg[l] = e < 0 ? G->g_dg : ks->dg[e];
                cdl[l] = e < 0 ? G->g_dl : ks->dl[e];
            }
        }
        block_setup(G, w, &b);
        cells_units(G, b0, n, w->pq);
        block_inside(G, w, &b, val);
        for (int l = 0; l < n; l++) {
            double out = isfinite(val[l]) && isfinite(logp[l])
                             ? val[l] - logp[l]
                             : -INFINITY;
            G->u_ll[b0 + l] = out;
            active[l] = isfinite(out);
        }
        if (!G->gradient)
            continue;
        block_reverse(G, w, &b, active, wt, accL, dg, dl);
        for (int l = 0; l < n; l++) {
            int64_t u = b0 + l;
            G->u_dg[u] = active[l] ? dg[l] - cdg[l] : 0.0;
            G->u_dl[u] = active[l] ? dl[l] - cdl[l] : 0.0;
            if (!G->condition)
                continue;
            int e = ks->of[u - u0];
            if (e < 0 && active[l])
                pending += wt[l];
            else if (e >= 0 && !active[l] && isfinite(logp[l]))
                ks->fix[e] += wt[l]; /* counted in its event's weight */
        }
    }
    if (!acc)
        return;
    if (G->condition) { /* give back the impossible units' weights */
        int ev[LANES], n = 0;
        double wt[LANES];
        for (int e = 0; e < ks->n; e++) {
            if (ks->fix[e] == 0.0)
                continue;
            ev[n] = e;
            wt[n++] = ks->fix[e];
            if (n == LNc || e + 1 == ks->n) {
                eval_events(G, w, ev, n, wt, accL, 0);
                n = 0;
            }
        }
        if (n)
            eval_events(G, w, ev, n, wt, accL, 0);
    }
    for (int64_t i = 0; i < G->n_glob; i++) {
        const double *a = accL + (size_t)i * LANES;
        double s = a[0];
        for (int l = 1; l < LANES; l++)
            s += a[l];
        acc[i] = s;
    }
    if (G->have_global && pending != 0.0)
        for (int64_t i = 0; i < G->n_glob; i++)
            acc[i] -= pending * G->g_vec[i];
}

/* ---- Workspaces and the call ----------------------------------------- */

static void ws_free(const struct gen *G, struct ws *w)
{
    if (!w)
        return;
    for (int s = 0; w->slot && s < G->slots; s++) {
        persiste__free(w->slot[s].x);
        persiste__free(w->slot[s].msg);
        persiste__free(w->slot[s].sc);
        persiste__free(w->slot[s].scaled);
    }
    persiste__free(w->slot);
    persiste__free(w->g);
    persiste__free(w->suf);
    persiste__free(w->tmp);
    persiste__free(w->accL);
    persiste__free(w->ltab);
    persiste__free(w->tab_blk);
    persiste__free(w->tipm_blk);
    persiste__free(w->pq);
    persiste__free(w->vt);
    persiste__free(w->lk);
    persiste__free(w->rho);
    persiste__free(w->pi1);
    persiste__free(w->dpi);
    persiste__free(w->ns);
    persiste__free(w);
}

/* n elements of size each, 64-byte aligned, or NULL (also on overflow). */
static void *alloc_n(size_t n, size_t size)
{
    size_t bytes;
    if (persiste__mul_size(n ? n : 1, size, &bytes))
        return NULL;
    return persiste__malloc_aligned(bytes);
}

static int ws_alloc(struct ws **out, const struct gen *G)
{
    const persiste_tree *tr = G->tree;
    size_t n = (size_t)tr->n_nodes, ni = n - (size_t)tr->n_tips;
    size_t K = (size_t)G->K, W = G->width;
    struct ws *w = persiste__calloc(1, sizeof *w);
    if (!w)
        return persiste__error(PERSISTE_E_NOMEM, "general: out of memory");
    int ok = (w->slot = persiste__calloc((size_t)G->slots, sizeof *w->slot)) !=
             NULL;
    for (int s = 0; ok && s < G->slots; s++) {
        struct slot *p = &w->slot[s];
        ok = ok && (p->x = alloc_n(ni, W * sizeof(double))) &&
             (p->msg = alloc_n(ni, W * sizeof(double))) &&
             (p->sc = alloc_n(ni, LANES * sizeof(int32_t))) &&
             (p->scaled = alloc_n(ni, 1));
    }
    ok = ok && (w->tmp = alloc_n(6, W * sizeof(double))) &&
         (w->suf = alloc_n((size_t)G->max_children + 1, W * sizeof(double))) &&
         (w->pq = alloc_n((size_t)tr->n_tips, 2)) &&
         (w->vt = alloc_n(K, LANES * sizeof(double))) &&
         (w->lk = alloc_n(K, LANES * sizeof(double))) &&
         (w->rho = alloc_n(K, LANES * sizeof(double))) &&
         (w->pi1 = alloc_n(K, LANES * sizeof(double))) &&
         (w->dpi = alloc_n(K, LANES * sizeof(double))) &&
         (w->ns = alloc_n(K, LANES * sizeof(int64_t)));
    if (ok && G->gradient)
        ok = (w->g = alloc_n(ni, W * sizeof(double))) != NULL;
    if (ok && G->global)
        ok = (w->accL = alloc_n((size_t)G->n_glob, LANES * sizeof(double))) !=
             NULL;
    if (ok && !G->tab_one)
        ok = (w->ltab = alloc_n((size_t)G->ltab_n * n * (size_t)G->nrow,
                                LANES * sizeof(double))) &&
             (w->tab_blk = alloc_n(K * n, NT * sizeof(double))) &&
             (w->tipm_blk = alloc_n(K * (size_t)tr->n_tips, 6 * sizeof(double)));
    if (!ok) {
        ws_free(G, w);
        return persiste__error(PERSISTE_E_NOMEM,
                               "general: out of memory for a workspace of "
                               "%zu nodes",
                               n);
    }
    *out = w;
    return PERSISTE_OK;
}

/* Units: the distinct patterns when every family has one rate pair (their
 * weights summed in family order), else the families themselves. */
static int make_units(struct gen *G, int64_t **rep, double **uw,
                      double **outs)
{
    const struct persiste__call *c = G->c;
    const persiste_data *d = c->data;
    int64_t nf = c->n_families;
    *rep = NULL;
    *uw = NULL;
    *outs = NULL;
    if (c->one_pair && d->n_patterns < nf) {
        int64_t np = d->n_patterns;
        *rep = persiste__malloc((size_t)np * sizeof **rep);
        *uw = persiste__calloc((size_t)np, sizeof **uw);
        *outs = persiste__malloc((size_t)np * 3 * sizeof **outs);
        if (!*rep || !*uw || !*outs)
            return persiste__error(PERSISTE_E_NOMEM,
                                   "general: out of memory");
        for (int64_t p = 0; p < np; p++)
            (*rep)[p] = -1;
        for (int64_t f = 0; f < nf; f++) {
            int64_t p = d->pattern[f];
            if ((*rep)[p] < 0)
                (*rep)[p] = f;
            (*uw)[p] += c->weight ? c->weight[f] : 1.0;
        }
        G->n_units = np;
        G->present = d->pattern_present;
        G->unknown = d->pattern_unknown;
        G->rep = *rep;
        G->unit_w = *uw;
        G->u_ll = *outs;
        G->u_dg = *outs + np;
        G->u_dl = *outs + 2 * np;
        return PERSISTE_OK;
    }
    G->n_units = nf;
    G->present = d->present;
    G->unknown = d->unknown;
    G->u_ll = c->loglik;
    if (G->gradient) {
        /* derivatives are computed even when the caller wants only one */
        *outs = persiste__malloc((size_t)nf * 2 * sizeof **outs);
        if (!*outs)
            return persiste__error(PERSISTE_E_NOMEM,
                                   "general: out of memory");
        G->u_dg = c->d_log_gain ? c->d_log_gain : *outs;
        G->u_dl = c->d_log_loss ? c->d_log_loss : *outs + nf;
    }
    return PERSISTE_OK;
}

/* Some unit has every cell known. */
static int some_unit_known(const struct gen *G)
{
    if (!G->c->data->any_unknown)
        return 1;
    int32_t nt = G->tree->n_tips;
    for (int64_t wd = 0; wd * 64 < G->n_units; wd++) {
        uint64_t any = 0;
        for (int32_t t = 0; t < nt; t++)
            any |= G->unknown[(size_t)wd * nt + t];
        int64_t left = G->n_units - wd * 64;
        uint64_t valid = left >= 64 ? ~0ull : (1ull << left) - 1;
        if (~any & valid)
            return 1;
    }
    return 0;
}

/* The conditioning at the call's one pair with every cell known, on
 * worker 0's workspace before the chunks. */
static void global_event(struct gen *G)
{
    struct ws *w = G->ws[0];
    struct block b = {.lik = 0, .LN = G->cond_lanes};
    int64_t rep[LANES];
    double val[LANES], dg[LANES], dl[LANES], wt[LANES] = {1.0};
    int active[LANES] = {0};
    for (int l = 0; l < LANES; l++) {
        rep[l] = -1;
        b.lg[l] = G->c->log_gain[0];
        b.ll[l] = G->c->log_loss[0];
    }
    block_setup(G, w, &b);
    cells_events(G, rep, 1, w->pq);
    block_inside(G, w, &b, val);
    G->g_logp = val[0];
    G->g_dg = G->g_dl = 0.0;
    if (!G->gradient || !isfinite(val[0]))
        return;
    active[0] = 1;
    double *accL = G->global ? w->accL : NULL;
    if (accL)
        memset(accL, 0, (size_t)G->n_glob * LANES * sizeof *accL);
    block_reverse(G, w, &b, active, wt, accL, dg, dl);
    G->g_dg = dg[0];
    G->g_dl = dl[0];
    if (accL)
        for (int64_t i = 0; i < G->n_glob; i++)
            G->g_vec[i] = accL[(size_t)i * LANES];
}

#ifndef GENERAL_ISA /* the instruction set of this copy (lib/meson.build) */
#define GENERAL_ISA generic
#endif
#define GEN_CAT2(a, b) a##b
#define GEN_CAT(a, b) GEN_CAT2(a, b)

int GEN_CAT(persiste__general_run_, GENERAL_ISA)(
    persiste_ctx *ctx, const struct persiste__call *c)
{
    const persiste_model *m = c->model;
    const persiste_tree *tr = c->tree;
    static const double one = 1.0;
    struct gen G = {.c = c, .tree = tr, .m = m};
    G.K = m->n_cat ? m->n_cat : 1;
    G.cw = m->n_cat ? m->cat_weight : &one;
    G.cg = m->n_cat ? m->cat_gain : &one;
    G.cl = m->n_cat ? m->cat_loss : &one;
    G.lik = (struct alg){.alg = ALG_LIK, .C = 1};
    G.condition = m->condition != PERSISTE_CONDITION_NONE;
    if (m->condition == PERSISTE_CONDITION_VARIABLE)
        G.cond = (struct alg){.alg = ALG_VAR, .C = 4, .acc = VAR_M,
                              .l0 = VAR_O, .l1 = VAR_I};
    else
        G.cond = (struct alg){.alg = ALG_COUNT, .C = m->min_present + 1,
                              .k = m->min_present, .acc = m->min_present,
                              .l0 = 0, .l1 = 1};
    G.cond_lanes = G.cond.C <= LANES ? LANES : 1;
    G.gradient = c->d_log_gain || c->d_log_loss || c->d_branch || c->d_model;
    G.nrow = G.gradient ? NT : T11 + 1;
    G.global = c->d_branch || c->d_model;
    G.n_glob = tr->n_nodes + persiste__model_grad_size(m);
    G.width = 2 * LANES;
    if (G.condition && 2 * (size_t)G.cond.C * G.cond_lanes > G.width)
        G.width = 2 * (size_t)G.cond.C * G.cond_lanes;
    G.max_children = 1;
    for (int32_t v = tr->n_tips; v < tr->n_nodes; v++) {
        int32_t d = tr->child_start[v + 1] - tr->child_start[v];
        G.max_children = d > G.max_children ? d : G.max_children;
    }
    int workers = persiste__ctx_workers(ctx), rc = PERSISTE_OK;
    int64_t *rep = NULL;
    double *uw = NULL, *outs = NULL, *total = NULL;
    size_t n = (size_t)tr->n_nodes, ni = n - (size_t)tr->n_tips;
    G.len = persiste__malloc(n * sizeof *G.len);
    G.clamped = persiste__malloc(n * sizeof *G.clamped);
    G.tipo = persiste__malloc((size_t)tr->n_tips * 4 * sizeof *G.tipo);
    G.ws = persiste__calloc((size_t)workers, sizeof *G.ws);
    if (!G.len || !G.clamped || !G.tipo || !G.ws) {
        rc = persiste__error(PERSISTE_E_NOMEM, "general: out of memory");
        goto done;
    }
    for (int32_t v = 0; v < tr->n_nodes; v++) {
        G.clamped[v] = tr->length[v] < m->min_branch_length;
        G.len[v] = G.clamped[v] ? m->min_branch_length : tr->length[v];
    }
    for (int32_t t = 0; t < tr->n_tips; t++) {
        double a, b;
        persiste__model_error(m, t, &a, &b);
        /* P(observed 0 | absent, present) and P(observed 1 | ...) */
        G.tipo[4 * t + 0] = 1.0 - b;
        G.tipo[4 * t + 1] = a;
        G.tipo[4 * t + 2] = b;
        G.tipo[4 * t + 3] = 1.0 - a;
    }
    if ((rc = make_units(&G, &rep, &uw, &outs)))
        goto done;
    if (c->one_pair) {
        if (!(G.tab_one = alloc_n((size_t)G.K * n, NT * sizeof(double))) ||
            !(G.tipm_one = alloc_n((size_t)G.K * (size_t)tr->n_tips,
                                   6 * sizeof(double)))) {
            rc = persiste__error(PERSISTE_E_NOMEM, "general: out of memory");
            goto done;
        }
        fill_tables(&G, c->log_gain[0], c->log_loss[0], G.tab_one,
                    G.tipm_one);
    }
    /* categories kept for the reverse passes: all if they fit */
    size_t per_slot = 2 * ni * G.width * sizeof(double) +
                      ni * (LANES * sizeof(int32_t) + 1);
    G.slots = G.gradient && (size_t)G.K * per_slot <= KEEP_BYTES ? G.K : 1;
    G.ltab_n = (size_t)G.K * n * G.nrow * LANES * sizeof(double) <= KEEP_BYTES
                   ? G.K
                   : 1;
    for (int i = 0; i < workers; i++)
        if ((rc = ws_alloc(&G.ws[i], &G)))
            goto done;
    if (G.condition && c->one_pair && some_unit_known(&G)) {
        if (G.global &&
            !(G.g_vec = persiste__malloc((size_t)G.n_glob * sizeof(double)))) {
            rc = persiste__error(PERSISTE_E_NOMEM, "general: out of memory");
            goto done;
        }
        global_event(&G);
        G.have_global = 1;
    }
    G.n_chunks = (G.n_units + CHUNK_UNITS - 1) / CHUNK_UNITS;
    if (!G.global) {
        G.first_chunk = 0;
        persiste__ctx_run(ctx, G.n_chunks, run_chunk, &G);
    } else {
        /* rounds of chunks; the chunks' sums are added in chunk order, so
         * the round size (from the thread count) changes no bit */
        int64_t round = 4 * (int64_t)workers;
        size_t nb;
        if ((rc = persiste__mul_size((size_t)round + 1, (size_t)G.n_glob,
                                     &nb)))
            goto done;
        G.round_bufs = persiste__malloc(nb * sizeof(double));
        if (!G.round_bufs) {
            rc = persiste__error(PERSISTE_E_NOMEM,
                                 "general: out of memory for gradient sums");
            goto done;
        }
        total = G.round_bufs + (size_t)round * (size_t)G.n_glob;
        memset(total, 0, (size_t)G.n_glob * sizeof *total);
        for (G.first_chunk = 0; G.first_chunk < G.n_chunks;
             G.first_chunk += round) {
            int64_t nr = G.n_chunks - G.first_chunk;
            nr = nr < round ? nr : round;
            persiste__ctx_run(ctx, nr, run_chunk, &G);
            for (int64_t r = 0; r < nr; r++)
                for (int64_t i = 0; i < G.n_glob; i++)
                    total[i] += G.round_bufs[(size_t)r * G.n_glob + i];
        }
        if (c->d_branch) {
            memcpy(c->d_branch, total, (size_t)tr->n_nodes * sizeof *total);
            c->d_branch[tr->n_nodes - 1] = 0.0;
        }
        if (c->d_model)
            memcpy(c->d_model, total + tr->n_nodes,
                   (size_t)(G.n_glob - tr->n_nodes) * sizeof *total);
    }
    /* scatter the units' values to their families, count the impossible */
    int64_t n_impossible = 0;
    for (int64_t f = 0; f < c->n_families; f++) {
        if (G.rep) {
            int64_t p = c->data->pattern[f];
            c->loglik[f] = G.u_ll[p];
            if (c->d_log_gain)
                c->d_log_gain[f] = G.u_dg[p];
            if (c->d_log_loss)
                c->d_log_loss[f] = G.u_dl[p];
        }
        n_impossible += isinf(c->loglik[f]) != 0;
    }
    ctx->n_impossible = n_impossible;
done:
    for (int i = 0; G.ws && i < workers; i++)
        ws_free(&G, G.ws[i]);
    persiste__free(G.ws);
    persiste__free(G.len);
    persiste__free(G.clamped);
    persiste__free(G.tipo);
    persiste__free(G.tab_one);
    persiste__free(G.tipm_one);
    persiste__free(G.g_vec);
    persiste__free(G.round_bufs);
    persiste__free(rep);
    persiste__free(uw);
    persiste__free(outs);
    return rc;
}
