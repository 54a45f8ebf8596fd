/* What the example programs share: read a tree and a Roary/Panaroo table,
 * make a model and a context, and evaluate global rates.
 *
 * Genomes of the table that the tree lacks are dropped (Roary tables often
 * carry a reference genome), as are the families then absent from every
 * genome: a pangenome never lists a family nobody has, and the reference
 * values in data/ are computed the same way. */
#ifndef EXAMPLE_COMMON_H
#define EXAMPLE_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <persiste/persiste.h>

typedef struct example {
    persiste_tree *tree;
    persiste_data *data;
    persiste_model *model;
    persiste_ctx *ctx;
    int64_t n; /* families */
    /* Per family, n each: log gain and log loss in; loglik and the two
     * derivatives out. The batch calls take one array per quantity. */
    double *log_gain, *log_loss, *loglik, *d_log_gain, *d_log_loss;
} example;

/* Prints the library's own explanation: persiste_last_error() holds the
 * detail (file, line, column, taxon) of this thread's last failure. */
static int example_fail(const char *what, int rc)
{
    fprintf(stderr, "%s: %s (%s)\n", what, persiste_last_error(),
            persiste_strerror(rc));
    return 2;
}

static void example_close(example *ex)
{
    persiste_ctx_destroy(ex->ctx); /* every destroy accepts NULL */
    persiste_model_destroy(ex->model);
    persiste_data_destroy(ex->data);
    persiste_tree_destroy(ex->tree);
    free(ex->log_gain);
}

/* condition: "none", "present" (the library's default) or "variable". */
static int example_open(example *ex, const char *tree_path,
                        const char *table_path, const char *condition)
{
    memset(ex, 0, sizeof *ex);
    int cond = PERSISTE_CONDITION_PRESENT;
    if (condition && !strcmp(condition, "none"))
        cond = PERSISTE_CONDITION_NONE;
    else if (condition && !strcmp(condition, "variable"))
        cond = PERSISTE_CONDITION_VARIABLE;
    else if (condition && strcmp(condition, "present")) {
        fprintf(stderr, "condition must be none, present or variable\n");
        return 2;
    }
    int rc;
    if ((rc = persiste_tree_from_newick_file(&ex->tree, tree_path)))
        return example_fail("tree", rc);
    if ((rc = persiste_data_read(&ex->data, ex->tree, table_path,
                                 PERSISTE_DATA_DROP_EXTRA_TAXA |
                                     PERSISTE_DATA_DROP_ABSENT_FAMILIES)))
        return example_fail("table", rc);
    if ((rc = persiste_model_create(&ex->model)) ||
        (rc = persiste_model_set_int(ex->model, PERSISTE_MODEL_CONDITION,
                                     cond)) ||
        (rc = persiste_ctx_create(&ex->ctx)) ||
        /* All cores; results do not depend on it (see threads.c). */
        (rc = persiste_ctx_set_param(ex->ctx, PERSISTE_CTX_NTHREADS, 0)))
        return example_fail("setup", rc);
    ex->n = persiste_data_n_families(ex->data);
    double *buf = malloc(5 * (size_t)ex->n * sizeof *buf);
    if (!buf)
        return example_fail("memory", PERSISTE_E_NOMEM);
    ex->log_gain = buf;
    ex->log_loss = buf + ex->n;
    ex->loglik = buf + 2 * ex->n;
    ex->d_log_gain = buf + 3 * ex->n;
    ex->d_log_loss = buf + 4 * ex->n;
    return 0;
}

/* Every family at the same rates; out[0] = total log-likelihood, out[1..2]
 * = its derivatives w.r.t. the shared log gain and log loss (the sums of
 * the per-family derivatives). Per-family values stay in ex. */
static int example_eval(example *ex, double log_gain, double log_loss,
                        double out[3])
{
    for (int64_t f = 0; f < ex->n; f++) {
        ex->log_gain[f] = log_gain;
        ex->log_loss[f] = log_loss;
    }
    int rc = persiste_gradient_batch(ex->ctx, ex->model, ex->tree, ex->data,
                                     ex->n, ex->log_gain, ex->log_loss, NULL,
                                     ex->loglik, ex->d_log_gain,
                                     ex->d_log_loss, NULL);
    if (rc)
        return example_fail("gradient", rc);
    out[0] = out[1] = out[2] = 0;
    for (int64_t f = 0; f < ex->n; f++) {
        out[0] += ex->loglik[f];
        out[1] += ex->d_log_gain[f];
        out[2] += ex->d_log_loss[f];
    }
    return 0;
}

#endif
