/* Reconstruction (lib/eval/reconstruct.c): ancestral posteriors and
 * expected gains and losses per branch. Private to lib/eval. */
#ifndef PERSISTE_RECONSTRUCT_H
#define PERSISTE_RECONSTRUCT_H

#include "internal.h"

struct persiste__recon {
    const persiste_model *model;
    const persiste_tree *tree;
    const persiste_data *data;
    int64_t n_families;
    const double *log_gain, *log_loss, *weight; /* weight may be NULL */
    const int32_t *group;                       /* may be NULL */
    int32_t n_groups;
    double *present, *gains, *losses;           /* [f][node], may be NULL */
    double *sum_present, *sum_gains, *sum_losses; /* [group][node] or NULL */
};

/* Evaluates r on ctx (entered by the caller); sets ctx->n_impossible. */
int persiste__reconstruct_run(persiste_ctx *ctx,
                              const struct persiste__recon *r);

#endif
