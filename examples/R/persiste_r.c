/* R's .C interface to libpersiste (used by persiste.R).
 *
 * .C passes copies of R vectors as plain pointers (double*, int*, char**),
 * and has no finalizers, so every entry point is stateless: it builds the
 * tree and data from its arguments, computes, destroys them, and returns
 * *status (0 or a persiste_status) with the library's message copied into
 * msg[0], a blank string preallocated by R whose length is the room there
 * is. Reading a file again on every call costs milliseconds; keeping
 * handles alive between calls would need .Call and external pointers.
 *
 * The input arguments come first in every entry point, in this order:
 *   tree[1]        Newick text, or a path when *tree_is_file
 *   table[1]       path of a Roary/Panaroo table, or "" to use the matrix
 *   states[]       families x genomes, column-major (R's layout): 0, 1, 2
 *   dims[2]        number of families, number of genomes of the matrix
 *   taxa[]         genome names of the matrix columns
 *   flags[1]       persiste_data_flag bits
 * Build: see build.sh (R CMD SHLIB with pkg-config's flags). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define R_NO_REMAP /* only the type codes (INTSXP ...) are wanted */
#include <Rinternals.h>
#include <R_ext/Rdynload.h>
#include <persiste/persiste.h>

#define INPUT_ARGS                                                        \
    char **tree_text, int *tree_is_file, char **table, int *states,       \
        int *dims, char **taxa, int *flags
#define INPUT_ARG_TYPES STRSXP, INTSXP, STRSXP, INTSXP, INTSXP, STRSXP, INTSXP

typedef struct inputs {
    persiste_tree *tree;
    persiste_data *data;
    /* A failure of the shim itself (the library's message would be stale
     * then); NULL when the library failed. */
    const char *detail;
} inputs;

static void close_inputs(inputs *in)
{
    persiste_data_destroy(in->data);
    persiste_tree_destroy(in->tree);
}

/* R integers (NA already turned into 2 by persiste.R) become the library's
 * uint8_t states; anything else becomes 255 so that the library names the
 * offending cell. */
static int open_inputs(inputs *in, INPUT_ARGS)
{
    memset(in, 0, sizeof *in);
    int rc = *tree_is_file
                 ? persiste_tree_from_newick_file(&in->tree, tree_text[0])
                 : persiste_tree_from_newick(&in->tree, tree_text[0]);
    if (rc || table[0][0])
        return rc ? rc
                  : persiste_data_read(&in->data, in->tree, table[0],
                                       (uint32_t)*flags);
    size_t n = (size_t)dims[0] * (size_t)dims[1];
    uint8_t *cells = malloc(n ? n : 1);
    if (!cells) {
        in->detail = "persiste_r.c: out of memory";
        return PERSISTE_E_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        cells[i] = states[i] >= 0 && states[i] <= 2 ? (uint8_t)states[i] : 255;
    /* Column-major: the next family is the next element, the next genome
     * is dims[0] elements on. Families are named by their 1-based row. */
    rc = persiste_data_from_matrix(&in->data, in->tree, cells, dims[0],
                                   dims[1], 1, dims[0],
                                   (const char *const *)taxa, NULL,
                                   (uint32_t)*flags);
    free(cells);
    return rc;
}

/* Sets *status and copies "detail (code name)" into msg[0], writing no more
 * than the blank string R preallocated there. */
static void finish(inputs *in, int rc, int *status, char **msg)
{
    if (rc)
        snprintf(msg[0], strlen(msg[0]) + 1, "%s (%s)",
                 in->detail ? in->detail : persiste_last_error(),
                 persiste_strerror(rc));
    *status = rc;
    close_inputs(in);
}

/* out[0..4] = families kept, genomes kept, tree tips, genomes dropped,
 * families dropped; out[5] = longest family name. For matrix input,
 * kept[f] = 1 if row f was kept (row names are the 1-based indices). */
static void persiste_r_dims(INPUT_ARGS, int *out, int *kept, int *status,
                            char **msg)
{
    inputs in;
    int rc = open_inputs(&in, tree_text, tree_is_file, table, states, dims,
                         taxa, flags);
    if (!rc) {
        out[0] = (int)persiste_data_n_families(in.data);
        out[1] = persiste_data_n_taxa(in.data);
        out[2] = persiste_tree_n_tips(in.tree);
        out[3] = (int)persiste_data_n_dropped_taxa(in.data);
        out[4] = (int)persiste_data_n_dropped_families(in.data);
        out[5] = 0;
        for (int64_t f = 0; f < out[0]; f++) {
            int len = (int)strlen(persiste_data_family_name(in.data, f));
            out[5] = len > out[5] ? len : out[5];
        }
        if (!table[0][0]) {
            for (int f = 0; f < dims[0]; f++)
                kept[f] = 1;
            for (int i = 0; i < out[4]; i++)
                kept[atoi(persiste_data_dropped_family(in.data, i)) - 1] = 0;
        }
    }
    finish(&in, rc, status, msg);
}

/* names[f]: blank strings of out[5] characters from persiste_r_dims. */
static void persiste_r_family_names(INPUT_ARGS, char **names, int *status,
                                    char **msg)
{
    inputs in;
    int rc = open_inputs(&in, tree_text, tree_is_file, table, states, dims,
                         taxa, flags);
    for (int64_t f = 0; !rc && f < persiste_data_n_families(in.data); f++)
        strcpy(names[f], persiste_data_family_name(in.data, f));
    finish(&in, rc, status, msg);
}

/* Per-family log-likelihoods (and, when d_log_gain is wanted, exact
 * derivatives w.r.t. the log rates) at log_gain/log_loss, given either per
 * family (n_rates = families) or once for all (n_rates = 1). */
static void evaluate(INPUT_ARGS, int *condition, int *n_threads,
                     int *n_rates, double *log_gain, double *log_loss,
                     double *loglik, double *d_log_gain, double *d_log_loss,
                     int *status, char **msg)
{
    inputs in;
    persiste_model *model = NULL;
    persiste_ctx *ctx = NULL;
    double *rates = NULL;
    int rc = open_inputs(&in, tree_text, tree_is_file, table, states, dims,
                         taxa, flags);
    int64_t n = rc ? 0 : persiste_data_n_families(in.data);
    if (!rc && *n_rates != 1 && *n_rates != n) {
        rc = PERSISTE_E_INVALID;
        in.detail = "rates: one gain and one loss, or one of each per family";
    } else if (!rc && *n_rates == 1 && n > 1) {
        /* The batch calls take one rate per family. */
        if (!(rates = malloc(2 * (size_t)n * sizeof *rates))) {
            rc = PERSISTE_E_NOMEM;
            in.detail = "persiste_r.c: out of memory";
        } else {
            for (int64_t f = 0; f < n; f++) {
                rates[f] = *log_gain;
                rates[n + f] = *log_loss;
            }
            log_gain = rates;
            log_loss = rates + n;
        }
    }
    if (!rc && !(rc = persiste_model_create(&model)) &&
        !(rc = persiste_model_set_int(model, PERSISTE_MODEL_CONDITION,
                                      *condition)) &&
        !(rc = persiste_ctx_create(&ctx)) &&
        !(rc = persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS,
                                      *n_threads)))
        rc = d_log_gain ? persiste_gradient_batch(ctx, model, in.tree, in.data,
                                                  n, log_gain, log_loss, NULL,
                                                  loglik, d_log_gain,
                                                  d_log_loss, NULL)
                        : persiste_loglik_batch(ctx, model, in.tree, in.data,
                                                n, log_gain, log_loss, loglik);
    free(rates);
    persiste_ctx_destroy(ctx);
    persiste_model_destroy(model);
    finish(&in, rc, status, msg);
}

static void persiste_r_loglik(INPUT_ARGS, int *condition, int *n_threads,
                              int *n_rates, double *log_gain,
                              double *log_loss, double *loglik, int *status,
                              char **msg)
{
    evaluate(tree_text, tree_is_file, table, states, dims, taxa, flags,
             condition, n_threads, n_rates, log_gain, log_loss, loglik, NULL,
             NULL, status, msg);
}

static void persiste_r_gradient(INPUT_ARGS, int *condition, int *n_threads,
                                int *n_rates, double *log_gain,
                                double *log_loss, double *loglik,
                                double *d_log_gain, double *d_log_loss,
                                int *status, char **msg)
{
    evaluate(tree_text, tree_is_file, table, states, dims, taxa, flags,
             condition, n_threads, n_rates, log_gain, log_loss, loglik,
             d_log_gain, d_log_loss, status, msg);
}

/* Registration (as R packages do): .C finds exactly these names, and R
 * checks the argument types before the call. */
static R_NativePrimitiveArgType dims_types[] = {
    INPUT_ARG_TYPES, INTSXP, INTSXP, INTSXP, STRSXP};
static R_NativePrimitiveArgType names_types[] = {INPUT_ARG_TYPES, STRSXP,
                                                 INTSXP, STRSXP};
static R_NativePrimitiveArgType loglik_types[] = {
    INPUT_ARG_TYPES, INTSXP,  INTSXP, INTSXP,
    REALSXP,         REALSXP, REALSXP, INTSXP, STRSXP};
static R_NativePrimitiveArgType gradient_types[] = {
    INPUT_ARG_TYPES, INTSXP,  INTSXP,  INTSXP,  REALSXP, REALSXP,
    REALSXP,         REALSXP, REALSXP, INTSXP,  STRSXP};

/* Through void (*)(void), which GCC's -Wcast-function-type accepts as
 * "any function": DL_FUNC's own signature matches none of the shims. */
#define ENTRY(name, types)                                                 \
    {#name, (DL_FUNC)(void (*)(void))&name,                                \
     (int)(sizeof types / sizeof types[0]), types}
static const R_CMethodDef c_methods[] = {
    ENTRY(persiste_r_dims, dims_types),
    ENTRY(persiste_r_family_names, names_types),
    ENTRY(persiste_r_loglik, loglik_types),
    ENTRY(persiste_r_gradient, gradient_types),
    {NULL, NULL, 0, NULL}};

void R_init_persiste_r(DllInfo *dll)
{
    R_registerRoutines(dll, c_methods, NULL, NULL, NULL);
    R_useDynamicSymbols(dll, FALSE);
}
