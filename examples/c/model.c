/* The model options: observation error, gamma rate categories, lineage
 * multipliers, conditioning on at least k presences; the families the
 * conditioning cannot observe; the derivatives of the model's own
 * parameters; and a simulated table.
 *
 *   model TREE.nwk TABLE.Rtab[.gz] GAIN LOSS
 *
 * Prints the total log-likelihood of the plain model (whose value
 * data/REFERENCE.md gives), then with each option, and the derivatives of
 * the total with respect to the error rates and the gamma categories. */
#include <math.h>

#include "common.h"

/* Total log-likelihood of ex's families at one rate pair; d_model (may be
 * NULL) gets the model's own derivatives. */
static int total(example *ex, double lg, double ll, double *sum,
                 double *d_model)
{
    for (int64_t f = 0; f < ex->n; f++) {
        ex->log_gain[f] = lg;
        ex->log_loss[f] = ll;
    }
    int rc = persiste_gradient_model_batch(
        ex->ctx, ex->model, ex->tree, ex->data, ex->n, ex->log_gain,
        ex->log_loss, NULL, ex->loglik, ex->d_log_gain, ex->d_log_loss, NULL,
        d_model);
    if (rc)
        return example_fail("gradient", rc);
    *sum = 0;
    for (int64_t f = 0; f < ex->n; f++)
        *sum += ex->loglik[f];
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: model TREE.nwk TABLE.Rtab GAIN LOSS\n");
        return 2;
    }
    example ex;
    int rc = example_open(&ex, argv[1], argv[2], "present");
    if (rc) {
        example_close(&ex);
        return rc;
    }
    double lg = log(atof(argv[3])), ll = log(atof(argv[4])), sum;
    double d_model[64];

    /* The plain model: what the reference programs compute. */
    double t[3] = {0};
    if ((rc = example_eval(&ex, lg, ll, t)))
        goto out;
    printf("plain model: log-likelihood %.10f\n", t[0]);

    /* Observation error, one pair for every genome: 1% of present families
     * reported absent, 0.5% of absent ones present. */
    double a = 0.01, b = 0.005;
    if ((rc = persiste_model_set_error(ex.model, 1, &a, &b))) {
        rc = example_fail("error", rc);
        goto out;
    }
    if ((rc = total(&ex, lg, ll, &sum, d_model)))
        goto out;
    int64_t at;
    persiste_model_grad_layout(ex.model, ex.tree, PERSISTE_GRAD_ERROR_ABSENT,
                               &at);
    printf("error: lnL %.10f  d/dlog a= %.6g  d/dlog b= %.6g\n",
           sum, d_model[at], d_model[at + 1]);

    /* Plus gamma rate variation: 4 categories of shape 0.5, weights 1/4. */
    double rates[4], w[4] = {0.25, 0.25, 0.25, 0.25};
    if ((rc = persiste_gamma_categories(0.5, 4, 0, rates)) ||
        (rc = persiste_model_set_categories(ex.model, 4, w, rates, NULL))) {
        rc = example_fail("categories", rc);
        goto out;
    }
    if ((rc = total(&ex, lg, ll, &sum, d_model)))
        goto out;
    persiste_model_grad_layout(ex.model, ex.tree,
                               PERSISTE_GRAD_CATEGORY_GAIN, &at);
    printf("gamma rates %.6f %.6f %.6f %.6f\n", rates[0], rates[1], rates[2],
           rates[3]);
    printf("error+gamma: lnL %.10f  d/dlog r1 (gain)= %.6g\n",
           sum, d_model[at]);

    /* Plus a lineage that loses genes twice as fast: the clade of the
     * root's first child (nodes are numbered children first). */
    int32_t nn = persiste_tree_n_nodes(ex.tree);
    int32_t *parent = malloc((size_t)nn * sizeof *parent);
    double *gm = malloc(2 * (size_t)nn * sizeof *gm), *lm = gm + nn;
    unsigned char *in = calloc((size_t)nn, 1);
    if (!parent || !gm || !in) {
        rc = example_fail("memory", PERSISTE_E_NOMEM);
        goto lineage_out;
    }
    persiste_tree_parents(ex.tree, parent);
    int32_t clade = -1;
    for (int32_t v = 0; v < nn - 1 && clade < 0; v++)
        if (parent[v] == nn - 1)
            clade = v;
    for (int32_t v = nn - 1; v >= 0; v--) {
        in[v] = v == clade || (parent[v] >= 0 && in[parent[v]]);
        gm[v] = 1.0;
        lm[v] = in[v] ? 2.0 : 1.0;
    }
    if ((rc = persiste_model_set_lineage(ex.model, nn, gm, lm))) {
        rc = example_fail("lineage", rc);
        goto lineage_out;
    }
    if ((rc = total(&ex, lg, ll, &sum, NULL)))
        goto lineage_out;
    printf("error+gamma+lineage: lnL %.10f\n", sum);

    /* At least 2 observed presences: the families seen in one genome only
     * are outside the event; persiste_data_observable removes them. */
    persiste_data *kept = NULL;
    if ((rc = persiste_model_set_int(ex.model, PERSISTE_MODEL_MIN_PRESENT,
                                     2)) ||
        (rc = persiste_data_observable(&kept, ex.data, ex.model))) {
        rc = example_fail("observable", rc);
        goto lineage_out;
    }
    int64_t before = persiste_data_n_dropped_families(ex.data);
    printf("min_present 2 excludes %lld families (first: %s)\n",
           (long long)(persiste_data_n_dropped_families(kept) - before),
           persiste_data_n_dropped_families(kept) > before
               ? persiste_data_dropped_family(kept, before)
               : "none");

    /* A simulated table under the same model, from a seed. */
    int32_t nt = persiste_tree_n_tips(ex.tree);
    enum { NSIM = 1000 };
    uint8_t *sim = malloc((size_t)NSIM * (size_t)nt);
    double sg[NSIM], sl[NSIM];
    for (int i = 0; i < NSIM; i++) {
        sg[i] = lg;
        sl[i] = ll;
    }
    if (!sim || (rc = persiste_simulate(ex.model, ex.tree, NSIM, sg, sl, 42,
                                        sim))) {
        rc = example_fail("simulate", sim ? rc : PERSISTE_E_NOMEM);
    } else {
        long long present = 0;
        for (size_t i = 0; i < (size_t)NSIM * (size_t)nt; i++)
            present += sim[i] == PERSISTE_PRESENT;
        printf("simulated %d families: %.4f of the cells present\n", NSIM,
               (double)present / ((double)NSIM * nt));
    }
    free(sim);
    persiste_data_destroy(kept);
lineage_out:
    free(parent);
    free(gm);
    free(in);
out:
    example_close(&ex);
    return rc;
}
