/* The planner: which evaluation path serves a batch call. Every model
 * option is decided here, once, for every path: the fast paths (blocks,
 * rows, clade tables and site repeats, lib/eval/batch.c) evaluate the plain
 * two-state model with conditioning over all tips; anything else goes to
 * the general path (lib/eval/general.c), which evaluates every option. So a
 * new option is either taught to a fast path here, or declined here. */
#include "general.h"

static int force_general; /* test hook */

void persiste__plan_force_general(int on) { force_general = on; }

enum persiste__path persiste__plan(const struct persiste__call *c)
{
    const persiste_model *m = c->model;
    if (force_general)
        return PERSISTE_PATH_GENERAL;
    /* error, categories, lineage multipliers, k > 1: the fast kernels
     * have tip bits and one rate pair per branch and family */
    if (!persiste__model_is_plain(m))
        return PERSISTE_PATH_GENERAL;
    /* the derivatives of the model's own parameters (e.g. of error rates
     * set to 0, or of one category) are the general path's */
    if (c->d_model && persiste__model_grad_size(m) > 0)
        return PERSISTE_PATH_GENERAL;
    /* conditioning on each family's known cells: the fast paths condition
     * over every tip, which is right only without unknown cells */
    if (m->condition != PERSISTE_CONDITION_NONE && c->data->any_unknown)
        return PERSISTE_PATH_GENERAL;
    return PERSISTE_PATH_FAST;
}

int64_t persiste__model_grad_size(const persiste_model *m)
{
    return 2 * (int64_t)m->n_error + 3 * (int64_t)m->n_cat +
           2 * (int64_t)m->n_lineage;
}

int64_t persiste_model_grad_layout(const persiste_model *m,
                                   const persiste_tree *tree, int which,
                                   int64_t *offset)
{
    if (!m || !tree || which < 0 || which > PERSISTE_GRAD_LINEAGE_LOSS) {
        persiste__error(PERSISTE_E_INVALID,
                        "model: grad layout needs a model, a tree and "
                        "which in 0..%d",
                        (int)PERSISTE_GRAD_LINEAGE_LOSS);
        return -1;
    }
    int64_t ne = m->n_error, nk = m->n_cat, nl = m->n_lineage;
    /* counts of the blocks in order; which = 0 is the total */
    const int64_t count[] = {ne, ne, nk, nk, nk, nl, nl};
    int64_t at = 0;
    for (int i = 1; i < which; i++)
        at += count[i - 1];
    if (offset)
        *offset = which ? at : 0;
    return which ? count[which - 1] : persiste__model_grad_size(m);
}
