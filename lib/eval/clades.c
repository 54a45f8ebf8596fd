/* Which subtrees a likelihood looks up rather than prunes (see
 * PERSISTE_CLADE_TIPS in kernel.h): the largest subtrees of at most that
 * many tips, found once per call in O(nodes). */
#include "kernel.h"

/* A clade pays when it replaces at least two internal nodes: a lone
 * cherry's partial is two selects and a product, no dearer than a lookup. */
#define CLADE_MIN_INNER 2

static int clades_off; /* tests: prune every node */

/* Whether the subtree of v fits a clade table (kernel/clades.h keeps a
 * partial per internal node of a clade while it builds the table). */
static int fits(const int32_t *below, const int32_t *inner, int32_t v)
{
    return below[v] <= PERSISTE_CLADE_TIPS &&
           inner[v] <= PERSISTE_CLADE_TIPS - 1;
}

void persiste__clades_disable(int off) { clades_off = off; }

void persiste__assign_clades(struct persiste__scratch *s0,
                             struct persiste__job *job)
{
    const persiste_tree *tr = job->tree;
    int32_t nt = tr->n_tips, n = tr->n_nodes;
    job->n_clades = 0;
    if (job->gradient || n == nt || clades_off)
        return;
    /* tips below and internal nodes below every node first live in
     * clade_tips (room for [2][n], see persiste__scratch_clades) */
    int32_t *below = s0->clade_tips, *inner = below + n;
    for (int32_t v = 0; v < n; v++) {
        below[v] = v < nt;
        inner[v] = v >= nt;
    }
    for (int32_t v = 0; v < nt; v++)
        below[tr->parent[v]] += 1;
    for (int32_t v = nt; v < n - 1; v++) { /* children before parents */
        below[tr->parent[v]] += below[v];
        inner[tr->parent[v]] += inner[v];
    }
    /* the clades in post-order, each by its root: a node that fits (of
     * few tips, and as few internal nodes as a tree of them without
     * one-child nodes has) whose parent does not (or the root) */
    struct persiste__clade *cl = s0->clades;
    int32_t m = 0, n_tip_entries = 0;
    size_t table = 0;
    for (int32_t v = nt; v < n; v++) {
        if (!fits(below, inner, v) || inner[v] < CLADE_MIN_INNER ||
            (v < n - 1 && fits(below, inner, tr->parent[v])))
            continue;
        cl[m] = (struct persiste__clade){v - inner[v] + 1, v, below[v],
                                         n_tip_entries, table};
        n_tip_entries += below[v];
        table += 2 * persiste__clade_entries(below[v]);
        m++;
    }
    /* their tips, in the order of the children arrays: the tips of clade
     * c are the tip children of its internal nodes (which the counts
     * above no longer need) */
    int32_t *tips = s0->clade_tips;
    for (int32_t c = 0; c < m; c++) {
        int32_t t = cl[c].tip0;
        for (int32_t v = cl[c].first; v <= cl[c].root; v++)
            for (int32_t k = tr->child_start[v]; k < tr->child_start[v + 1];
                 k++)
                if (tr->children[k] < nt)
                    tips[t++] = tr->children[k];
    }
    job->clades = cl;
    job->clade_tips = tips;
    job->n_clades = m;
}
