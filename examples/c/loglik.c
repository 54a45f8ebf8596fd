/* Log-likelihood and exact gradient of a pangenome at given rates.
 *
 *   loglik TREE.nwk TABLE.Rtab[.gz] GAIN LOSS [none|present|variable]
 *
 * Prints the total log-likelihood and its derivatives with respect to log
 * gain and log loss (global rates: the sums of the per-family derivatives).
 * The reading, the model and the batch call are in common.h. */
#include <math.h>

#include "common.h"

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: loglik TREE TABLE GAIN LOSS "
                        "[none|present|variable]\n");
        return 2;
    }
    double gain = atof(argv[3]), loss = atof(argv[4]), total[3] = {0};
    example ex;
    int status = example_open(&ex, argv[1], argv[2], argc > 5 ? argv[5] : NULL);
    if (status)
        goto done;
    for (int64_t i = 0; i < persiste_data_n_dropped_taxa(ex.data); i++)
        printf("dropped genome not in the tree: %s\n",
               persiste_data_dropped_taxon(ex.data, i));
    printf("families absent from every tree genome, dropped: %lld\n",
           (long long)persiste_data_n_dropped_families(ex.data));
    if ((status = example_eval(&ex, log(gain), log(loss), total)))
        goto done;
    printf("genomes %d, families %lld, gain %g, loss %g\n",
           persiste_tree_n_tips(ex.tree), (long long)ex.n, gain, loss);
    printf("log-likelihood %.10f\n", total[0]);
    printf("d/dlog(gain) %.6f  d/dlog(loss) %.6f\n", total[1], total[2]);
    printf("impossible families %lld\n",
           (long long)persiste_ctx_n_impossible(ex.ctx));
done:
    example_close(&ex);
    return status;
}
