/* Per-worker kernel buffers, buffer slots, and the choice of kernel. */
#include <stdlib.h>
#include <string.h>

#include "general.h"
#include "kernel.h"


void persiste__scratch_destroy(struct persiste__scratch *s)
{
    if (!s)
        return;
    persiste__free(s->p_lane);
    persiste__free(s->p_uni);
    persiste__free(s->in);
    persiste__free(s->b);
    persiste__free(s->acd);
    persiste__free(s->out);
    persiste__free(s->fx);
    persiste__free(s->cond_branch);
    persiste__free(s->branch_lane);
    persiste__free(s->slot);
    persiste__free(s->oslot);
    persiste__free(s->branch_sums);
    persiste__free(s->clades);
    persiste__free(s->clade_tips);
    persiste__free(s->clade_tab);
    persiste__free(s->clade_ok);
    persiste__rows_destroy(s->rows);
    persiste__free(s);
}

static int nomem(size_t bytes)
{
    return persiste__error(PERSISTE_E_NOMEM,
                           "workspace: cannot allocate %zu bytes", bytes);
}

int persiste__grow(void *pp, size_t n, size_t elem)
{
    size_t bytes;
    int rc = persiste__mul_size(n, elem, &bytes);
    if (rc)
        return rc;
    void *q = persiste__realloc(*(void **)pp, bytes);
    if (!q)
        return nomem(bytes);
    *(void **)pp = q;
    return PERSISTE_OK;
}

/* Grow-only: keeps the largest size asked for in *cap (elements). The
 * contents are not kept (every call fills what it reads); 64-byte aligned,
 * as a vector straddling two cache lines costs two accesses (and the
 * kernel stores partials it reloads at once). */
static int ensure(void *pp, size_t *cap, size_t n, size_t elem)
{
    size_t bytes;
    if (n <= *cap)
        return PERSISTE_OK;
    int rc = persiste__mul_size(n, elem, &bytes);
    if (rc)
        return rc;
    void *q = persiste__malloc_aligned(bytes);
    if (!q)
        return nomem(bytes);
    persiste__free(*(void **)pp);
    *(void **)pp = q;
    *cap = n;
    return PERSISTE_OK;
}

int persiste__scratch_create(struct persiste__scratch **sp)
{
    if (!*sp && !(*sp = persiste__calloc(1, sizeof **sp)))
        return persiste__error(PERSISTE_E_NOMEM, "workspace: out of memory");
    (*sp)->cache_valid = 0; /* its first block resets the rest */
    return PERSISTE_OK;
}

int persiste__scratch_slots(struct persiste__scratch *s, size_t n_nodes)
{
    int rc = ensure(&s->slot, &s->cap.slot, n_nodes, sizeof(int32_t));
    return rc ? rc : ensure(&s->oslot, &s->cap.oslot, n_nodes, sizeof(int32_t));
}

int persiste__scratch_branch_sums(struct persiste__scratch *s, size_t n)
{
    return ensure(&s->branch_sums, &s->cap.branch_sums, n, sizeof(double));
}

/* What a job needs: tables for every branch; partials for n_bufs internal
 * nodes (a few slots for a likelihood); outside partials, branch sums and
 * derivative rows only for gradients; (a, c, d) only for VARIABLE. */
int persiste__scratch_reserve(struct persiste__scratch *s,
                              const struct persiste__job *job, size_t n_bufs)
{
    size_t n = (size_t)job->tree->n_nodes, d = sizeof(double);
    int grad = job->gradient;
    size_t lanes = (size_t)job->lanes;
    size_t rows = grad ? PERSISTE_NP : PERSISTE_NP_LIK;
    size_t acd = job->model->condition == PERSISTE_CONDITION_VARIABLE
                     ? (grad ? 18 : 6) * lanes * n_bufs
                     : 0;
    size_t per_node_grad = grad ? n * lanes : 0;
    size_t branch_lanes = grad ? n * PERSISTE_VECTOR_LANES : 0;
    int rc;
    size_t p_lane = job->one_pair || !grad ? 0 : n * PERSISTE_NP_LANE * lanes;
    if ((rc = ensure(&s->p_lane, &s->cap.p_lane, p_lane, d)) ||
        (rc = ensure(&s->p_uni, &s->cap.p_uni, n * rows, d)) ||
        (rc = ensure(&s->in, &s->cap.in, n_bufs * 2 * lanes, d)) ||
        (rc = ensure(&s->b, &s->cap.b, n_bufs * 2 * lanes, d)) ||
        (rc = ensure(&s->acd, &s->cap.acd, acd, d)) ||
        (rc = ensure(&s->out, &s->cap.out, 2 * (per_node_grad + lanes), d)) ||
        (rc = ensure(&s->fx, &s->cap.fx, 5 * per_node_grad, d)) ||
        (rc = ensure(&s->cond_branch, &s->cap.cond_branch, branch_lanes, d)) ||
        (rc = ensure(&s->branch_lane, &s->cap.branch_lane, branch_lanes, d)))
        return rc;
    return PERSISTE_OK;
}

int persiste__scratch_clade_tables(struct persiste__scratch *s,
                                   const struct persiste__job *job)
{
    if (job->n_clades == 0)
        return PERSISTE_OK;
    const struct persiste__clade *last = &job->clades[job->n_clades - 1];
    size_t n = last->table + 2 * persiste__clade_entries(last->n_tips);
    int rc = ensure(&s->clade_tab, &s->cap.clade_tab, n, sizeof(double));
    return rc ? rc : ensure(&s->clade_ok, &s->cap.clade_ok,
                            (size_t)job->n_clades, 1);
}

int persiste__scratch_clades(struct persiste__scratch *s, size_t n_nodes,
                             size_t n_tips)
{
    int rc = ensure(&s->clades, &s->cap.clades, n_tips / 2 + 1,
                    sizeof *s->clades);
    return rc ? rc : ensure(&s->clade_tips, &s->cap.clade_tips, 2 * n_nodes,
                            sizeof(int32_t));
}

/* Post-order with a stack of free slots: a node takes a slot once its
 * children have released theirs (it may reuse one of them, as it is
 * written after its children are read). The free list lives in the
 * tips' entries of slot[], set afterwards. Returns the slots used. */
static int32_t stack_slots(const persiste_tree *tree, int32_t *slot)
{
    int32_t nt = tree->n_tips, n = tree->n_nodes;
    int32_t n_free = 0, n_used = 0;
    for (int32_t v = nt; v < n; v++) {
        for (int32_t k = tree->child_start[v]; k < tree->child_start[v + 1]; k++) {
            int32_t c = tree->children[k];
            if (c >= nt)
                slot[n_free++] = slot[c];
        }
        slot[v] = n_free ? slot[--n_free] : n_used++;
    }
    return n_used;
}

int32_t persiste__assign_slots(const persiste_tree *tree, int gradient,
                               int32_t *slot)
{
    int32_t nt = tree->n_tips, n = tree->n_nodes;
    int32_t n_used = 0;
    if (gradient) {
        for (int32_t v = nt; v < n; v++)
            slot[v] = n_used++;
    } else {
        n_used = stack_slots(tree, slot);
    }
    /* one more slot, of ones, shared by the tips (the kernel fills it) */
    for (int32_t v = 0; v < nt; v++)
        slot[v] = n_used;
    return n_used + 1;
}

void persiste__assign_oslots(const persiste_tree *tree, int32_t *oslot)
{
    /* Reverse post-order: a node's children take slots before it gives its
     * own back (their outsides are written while its own is read). The
     * free list lives in the tips' entries, set last. */
    int32_t nt = tree->n_tips, n = tree->n_nodes;
    int32_t n_free = 0, n_used = 1;
    oslot[n - 1] = 0; /* the root */
    for (int32_t v = n - 1; v >= nt; v--) {
        for (int32_t k = tree->child_start[v]; k < tree->child_start[v + 1]; k++) {
            int32_t c = tree->children[k];
            if (c >= nt)
                oslot[c] = n_free ? oslot[--n_free] : n_used++;
        }
        oslot[n_free++] = oslot[v];
    }
    for (int32_t v = 0; v < nt; v++)
        oslot[v] = n_used;
}

static int cpu_generic(void) { return 1; }
#if defined(PERSISTE_HAVE_AVX2)
static int cpu_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif
#if defined(PERSISTE_HAVE_AVX512)
static int cpu_avx512(void)
{
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw");
}
#endif

/* The kernels of this build, fastest first. */
#define KERNELS(isa)                                                       \
    {persiste__eval_block_##isa##_lik, persiste__eval_block_##isa##_grad,  \
     persiste__eval_block_##isa##_gradpair},                               \
    {&persiste__eval_block_##isa##_lik_lanes,                              \
     &persiste__eval_block_##isa##_grad_lanes,                             \
     &persiste__eval_block_##isa##_gradpair_lanes},                        \
    persiste__classes_##isa, persiste__scan_rates_##isa
static const struct {
    const char *name;
    persiste__block_fn fn[3]; /* by enum persiste__kind */
    const int *lanes[3];      /* families per block, the same */
    persiste__classes_fn classes;
    persiste__scan_fn scan;
    int (*runs)(void);
} kernels[] = {
#if defined(PERSISTE_HAVE_AVX512)
    {"avx512", KERNELS(avx512), cpu_avx512},
#endif
#if defined(PERSISTE_HAVE_AVX2)
    {"avx2", KERNELS(avx2), cpu_avx2},
#endif
    {"generic", KERNELS(generic), cpu_generic},
};
#define N_KERNELS (sizeof kernels / sizeof kernels[0])

static int kernel_override = -1;

int persiste__kernel_select(const char *isa)
{
    for (size_t i = 0; i < N_KERNELS; i++)
        if (!strcmp(kernels[i].name, isa) && kernels[i].runs()) {
            kernel_override = (int)i;
            /* the general path's copy for the same instruction set */
            return persiste__general_select(isa);
        }
    return -1;
}

static size_t kernel_index(void)
{
    size_t i = 0;
    if (kernel_override >= 0)
        return (size_t)kernel_override;
    while (!kernels[i].runs())
        i++;
    return i;
}

persiste__block_fn persiste__kernel(enum persiste__kind kind, int *lanes)
{
    size_t i = kernel_index();
    *lanes = *kernels[i].lanes[kind];
    return kernels[i].fn[kind];
}

persiste__classes_fn persiste__classes_kernel(void)
{
    return kernels[kernel_index()].classes;
}

persiste__scan_fn persiste__scan_kernel(void)
{
    return kernels[kernel_index()].scan;
}
