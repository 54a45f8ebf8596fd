/* Log-likelihood and exact gradient of a pangenome at given rates.
 *
 *   loglik TREE.nwk TABLE.Rtab[.gz] GAIN LOSS [none|present|variable]
 *
 * Genomes of the table that the tree lacks are dropped (and named), as are
 * the families that are then absent everywhere. Prints the total
 * log-likelihood and its derivatives with respect to log gain and log loss
 * (global rates: the sum of the per-family derivatives). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <persiste/persiste.h>

static int fail(const char *what, int rc)
{
    fprintf(stderr, "loglik: %s: %s (%s)\n", what, persiste_last_error(),
            persiste_strerror(rc));
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: loglik TREE TABLE GAIN LOSS "
                        "[none|present|variable]\n");
        return 2;
    }
    int condition = PERSISTE_CONDITION_PRESENT;
    if (argc > 5)
        condition = !strcmp(argv[5], "none") ? PERSISTE_CONDITION_NONE
                    : !strcmp(argv[5], "variable") ? PERSISTE_CONDITION_VARIABLE
                                                   : PERSISTE_CONDITION_PRESENT;
    double gain = atof(argv[3]), loss = atof(argv[4]);

    persiste_tree *tree = NULL;
    persiste_data *data = NULL;
    persiste_model *model = NULL;
    persiste_ctx *ctx = NULL;
    int rc, status = 0;
    if ((rc = persiste_tree_from_newick_file(&tree, argv[1])))
        return fail("tree", rc);
    if ((rc = persiste_data_read(&data, tree, argv[2],
                                 PERSISTE_DATA_DROP_EXTRA_TAXA |
                                     PERSISTE_DATA_DROP_ABSENT_FAMILIES))) {
        status = fail("table", rc);
        goto done;
    }
    if ((rc = persiste_model_create(&model)) ||
        (rc = persiste_model_set_int(model, PERSISTE_MODEL_CONDITION,
                                     condition)) ||
        (rc = persiste_ctx_create(&ctx)) ||
        (rc = persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, 0))) {
        status = fail("setup", rc);
        goto done;
    }
    for (int64_t i = 0; i < persiste_data_n_dropped_taxa(data); i++)
        printf("dropped genome not in the tree: %s\n",
               persiste_data_dropped_taxon(data, i));
    printf("families absent from every tree genome, dropped: %lld\n",
           (long long)persiste_data_n_dropped_families(data));

    int64_t n = persiste_data_n_families(data);
    double *buf = malloc(5 * (size_t)n * sizeof *buf);
    if (!buf) {
        status = 2;
        goto done;
    }
    double *lg = buf, *ll = buf + n, *lnl = buf + 2 * n, *dg = buf + 3 * n,
           *dl = buf + 4 * n;
    for (int64_t f = 0; f < n; f++) {
        lg[f] = log(gain);
        ll[f] = log(loss);
    }
    if ((rc = persiste_gradient_batch(ctx, model, tree, data, n, lg, ll, NULL,
                                      lnl, dg, dl, NULL))) {
        status = fail("gradient", rc);
    } else {
        double total = 0, tg = 0, tl = 0;
        for (int64_t f = 0; f < n; f++) {
            total += lnl[f];
            tg += dg[f];
            tl += dl[f];
        }
        printf("genomes %d, families %lld, gain %g, loss %g\n",
               persiste_tree_n_tips(tree), (long long)n, gain, loss);
        printf("log-likelihood %.10f\n", total);
        printf("d/dlog(gain) %.6f  d/dlog(loss) %.6f\n", tg, tl);
        printf("impossible families %lld\n",
               (long long)persiste_ctx_n_impossible(ctx));
    }
    free(buf);
done:
    persiste_ctx_destroy(ctx);
    persiste_model_destroy(model);
    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
    return status;
}
