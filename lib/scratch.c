/* Per-worker kernel buffers, buffer slots, and the choice of kernel. */
#include <stdlib.h>
#include <string.h>

#include "kernel.h"

#define L PERSISTE_LANES_MAX

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
    persiste__free(s->cond_branch);
    persiste__free(s->branch_lane);
    persiste__free(s->slot);
    persiste__rows_destroy(s->rows);
    persiste__free(s);
}

int persiste__grow(void *pp, size_t n, size_t elem)
{
    size_t bytes;
    int rc = persiste__mul_size(n, elem, &bytes);
    if (rc)
        return rc;
    void *q = persiste__realloc(*(void **)pp, bytes);
    if (!q)
        return persiste__error(PERSISTE_E_NOMEM,
                               "workspace: cannot allocate %zu bytes", bytes);
    *(void **)pp = q;
    return PERSISTE_OK;
}

int persiste__scratch_reserve(struct persiste__scratch **sp, size_t n_nodes)
{
    struct persiste__scratch *s = *sp;
    if (!s) {
        s = persiste__calloc(1, sizeof *s);
        if (!s)
            return persiste__error(PERSISTE_E_NOMEM, "workspace: out of memory");
        *sp = s;
    }
    s->cache_valid = 0;
    if (s->cap_nodes >= n_nodes)
        return PERSISTE_OK;
    const size_t d = sizeof(double);
    int rc;
    if ((rc = persiste__grow(&s->p_lane, n_nodes, PERSISTE_NP * L * d)) ||
        (rc = persiste__grow(&s->p_uni, n_nodes, PERSISTE_NP * d)) ||
        (rc = persiste__grow(&s->in, n_nodes, 2 * L * d)) ||
        (rc = persiste__grow(&s->b, n_nodes, 2 * L * d)) ||
        (rc = persiste__grow(&s->acd, n_nodes, 18 * L * d)) ||
        (rc = persiste__grow(&s->out, n_nodes, 2 * L * d)) ||
        (rc = persiste__grow(&s->cond_branch, n_nodes, L * d)) ||
        (rc = persiste__grow(&s->branch_lane, n_nodes, L * d)) ||
        (rc = persiste__grow(&s->slot, n_nodes, sizeof(int32_t))))
        return rc;
    s->cap_nodes = n_nodes;
    return PERSISTE_OK;
}

void persiste__assign_slots(const persiste_tree *tree, int gradient,
                            int32_t *slot)
{
    int32_t nt = tree->n_tips, n = tree->n_nodes;
    if (gradient) {
        for (int32_t v = nt; v < n; v++)
            slot[v] = v - nt;
        return;
    }
    /* Post-order with a stack of free slots: a node takes a slot once its
     * children have released theirs (it may reuse one of them, as it is
     * written after its children are read). The free list lives in the
     * tips' entries of slot[], unused otherwise. */
    int32_t n_free = 0, n_used = 0;
    for (int32_t v = nt; v < n; v++) {
        for (int32_t k = tree->child_start[v]; k < tree->child_start[v + 1]; k++) {
            int32_t c = tree->children[k];
            if (c >= nt)
                slot[n_free++] = slot[c];
        }
        slot[v] = n_free ? slot[--n_free] : n_used++;
    }
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
           __builtin_cpu_supports("avx512dq");
}
#endif

/* The kernels of this build, fastest first. */
static const struct {
    const char *name;
    persiste__block_fn lik, grad;
    int (*runs)(void);
} kernels[] = {
#if defined(PERSISTE_HAVE_AVX512)
    {"avx512", persiste__eval_block_avx512_lik, persiste__eval_block_avx512_grad,
     cpu_avx512},
#endif
#if defined(PERSISTE_HAVE_AVX2)
    {"avx2", persiste__eval_block_avx2_lik, persiste__eval_block_avx2_grad,
     cpu_avx2},
#endif
    {"generic", persiste__eval_block_generic_lik,
     persiste__eval_block_generic_grad, cpu_generic},
};
#define N_KERNELS (sizeof kernels / sizeof kernels[0])

static int kernel_override = -1;

int persiste__kernel_select(const char *isa)
{
    for (size_t i = 0; i < N_KERNELS; i++)
        if (!strcmp(kernels[i].name, isa) && kernels[i].runs()) {
            kernel_override = (int)i;
            return 0;
        }
    return -1;
}

persiste__block_fn persiste__kernel(int gradient, int *lanes)
{
    size_t i = 0;
    if (kernel_override >= 0)
        i = (size_t)kernel_override;
    else
        while (!kernels[i].runs())
            i++;
    *lanes = gradient ? PERSISTE_LANES_GRAD : PERSISTE_LANES_LIK;
    return gradient ? kernels[i].grad : kernels[i].lik;
}
