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
 * x_c: the reverse pass rescales freely and tracks no exponents.
 *
 * The parts, in lib/eval/kernel/: vec.h (vectors and rescaling), tables.h
 * (transition tables), walk.h (the post-order passes), clades.h (small
 * clades' partials looked up by their tips' bits), reverse.h (the
 * gradients' pre-order passes), classes.h (site repeats' partials). This
 * file holds the conditioning, the rates' scan and the block's entry
 * point. */
#include <math.h>
#include <string.h>

#include "kernel.h"

#ifndef KERNEL_ISA
#define KERNEL_ISA generic
#endif
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#ifndef KERNEL_LANES /* families per block: PERSISTE_LANES_LIK, _GRAD or _GRADPAIR */
#define KERNEL_LANES PERSISTE_LANES_GRAD
#define KERNEL_KIND grad
#define KERNEL_GRADIENT 1
#endif
#define EVAL_BLOCK CAT(CAT(persiste__eval_block_, KERNEL_ISA), CAT(_, KERNEL_KIND))

#define L KERNEL_LANES
/* Lanes per vector: the instruction set's register, so that GCC's vector
 * extensions map every operation to one instruction (wider vectors than the
 * registers spill and scalarise comparisons). */
#if defined(__AVX512F__)
#define W 8
#elif defined(__AVX__)
#define W 4
#else
#define W 2
#endif
#define LANE_BITS ((1u << W) - 1) /* a vector's bits, shifted down */
#define BW PERSISTE_VECTOR_LANES /* lanes of a branch accumulator */
_Static_assert(W <= BW && L % W == 0, "a block is whole vectors");
#define V (L / W)         /* vectors per block */
/* With AVX-512 (32 registers) the loops over a block's vectors are
 * unrolled: the gradient at global rates is 14% faster, with the children's
 * kinds constants in reverse_binary. With AVX2 and SSE2 (16 registers) the
 * unrolled loops spill: 2-8% slower. */
#if W == 8
#define FOR_V _Pragma("GCC unroll 4") for (int j = 0; j < V; j++)
#else
#define FOR_V for (int j = 0; j < V; j++)
#endif
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

#include "kernel/vec.h"
#include "kernel/tables.h"
#include "kernel/walk.h"
#include "kernel/clades.h"
#include "kernel/classes.h"
#include "kernel/reverse.h"

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
            memset(s->cond_branch, 0, n * BW * sizeof(double));
            conditioning_reverse(job, ln, pv, s, cd, &one, &one, &cg, &cl,
                                 s->cond_branch);
            for (size_t v = 0; v < n; v++)
                s->cond_branch[v] = s->cond_branch[v * BW];
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
                branch[v * BW] += wsum * s->cond_branch[v];
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

/* Ask for the tip bits of the next word of families: the walk reads them
 * in the tree's order, which the hardware prefetcher cannot follow. */
static void prefetch_bits(const struct persiste__job *job, int64_t f0)
{
    size_t nt = (size_t)job->tree->n_tips;
    size_t w = (size_t)(f0 / 64 + 1);
    if ((int64_t)w >= (job->n_families + 63) / 64)
        return;
    for (size_t t = 0; t < nt; t += 8) {
        __builtin_prefetch(job->present + w * nt + t);
        if (job->any_unknown)
            __builtin_prefetch(job->unknown + w * nt + t);
    }
}

#if !KERNEL_GRADIENT /* once per instruction set */
void CAT(persiste__scan_rates_, KERNEL_ISA)(const double *lg, const double *ll,
                                            int64_t n, double bound, int *ok,
                                            int *one_pair)
{
    /* as bits: |x| <= bound is (x without sign) <= bound, and Inf and NaN
     * are above every finite bound */
    uint64_t lim, g0 = 0, l0 = 0;
    memcpy(&lim, &bound, sizeof lim);
    if (n > 0) {
        memcpy(&g0, lg, sizeof g0);
        memcpy(&l0, ll, sizeof l0);
    }
    const uint64_t abs_bits = ~((uint64_t)1 << 63);
    vu bad = {0}, diff = {0};
    int64_t f = 0;
    for (; f + W <= n; f += W) {
        vu a = (vu)ld(lg + f), b = (vu)ld(ll + f);
        bad |= (vu)((a & abs_bits) > lim) | (vu)((b & abs_bits) > lim);
        diff |= (a ^ g0) | (b ^ l0);
    }
    uint64_t any_bad = 0, any_diff = 0;
    for (int l = 0; l < W; l++) {
        any_bad |= bad[l];
        any_diff |= diff[l];
    }
    for (; f < n; f++) {
        uint64_t a, b;
        memcpy(&a, lg + f, sizeof a);
        memcpy(&b, ll + f, sizeof b);
        any_bad |= ((a & abs_bits) > lim) | ((b & abs_bits) > lim);
        any_diff |= (a ^ g0) | (b ^ l0);
    }
    *ok = !any_bad;
    *one_pair = !any_diff;
}
#endif

const int CAT(EVAL_BLOCK, _lanes) = L;

#define CLADE_MIN_BLOCKS 16

void EVAL_BLOCK(const struct persiste__job *job, struct persiste__scratch *s,
                int64_t block, double *branch)
{
    int64_t f0 = block * L;
    prefetch_bits(job, f0);
    int64_t left = job->n_families - f0;
    int n_active = left < L ? (int)left : L;

    /* A block whose lanes share one rate pair uses one table, and reuses
     * the table and conditioning of the worker's previous such block. */
    int uniform = lanes_uniform(job, f0, n_active);
    struct lanes ln;
    lanes_init(&ln, job, f0, n_active, uniform);
    int cached = uniform && s->cache_valid &&
                 !memcmp(&s->cache_log_gain, &job->log_gain[f0], sizeof(double)) &&
                 !memcmp(&s->cache_log_loss, &job->log_loss[f0], sizeof(double));
    struct pview pv = {uniform ? s->p_uni : NULL,
                       KERNEL_GRADIENT ? s->p_lane : NULL, &ln, job->tree,
                       job->model->min_branch_length};
    if (!cached) {
        s->cache_valid = 0;
        s->clades_built = 0;
        s->pair_blocks = 0;
        if (uniform)
            fill_p(job, &ln, s);
    }
    /* Clade tables when one pair serves all families, else once a worker
     * has had CLADE_MIN_BLOCKS blocks in a row at a pair: building them
     * costs about two blocks and saves a quarter of one per block, so
     * runs of a pair shorter than that would pay for nothing. */
    int tables = 0;
#if !KERNEL_GRADIENT
    if (uniform && job->n_clades &&
        (job->one_pair || ++s->pair_blocks >= CLADE_MIN_BLOCKS)) {
        if (!s->clades_built)
            clade_tables(job, &pv, s);
        s->clades_built = tables = 1;
    }
#endif
#if KERNEL_GRADIENT
    if (!uniform)
        fill_lanes(job, &ln, s);
#endif

    vb lik;
    vi nscale[V];
    struct cond cd;
    int mode = job->model->condition;
    int want_b = !cached && mode != PERSISTE_CONDITION_NONE;
    forward(job, &ln, &pv, s, f0, want_b, tables && !want_b, &lik, nscale);
    if (cached) {
        cd.log = vb_splat(s->cache_log_cond);
        cd.inv = vb_splat(s->cache_inv_cond);
    } else {
        conditioning(job, &ln, &pv, s, &cd);
    }

    vb coef = vb_splat(0.0), w = vb_splat(1.0);
    for (int l = 0; l < ln.n_active; l++) {
        double ll = persiste__conditioned(
            persiste__unconditioned(*lane(&lik, l), nscale[l / W][l % W]),
            *lane(&cd.log, l));
        if (job->weight)
            *lane(&w, l) = job->weight[f0 + l];
        *lane(&coef, l) = ll > -INFINITY ? 1.0 : 0.0;
        job->loglik[f0 + l] = ll;
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
