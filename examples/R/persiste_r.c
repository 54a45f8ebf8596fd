/* R's .C interface to libpersiste (used by persiste.R).
 *
 * .C passes copies of R vectors as plain pointers (double*, int*, char**),
 * and has no finalizers, so every entry point is stateless: it builds the
 * tree, data and model from its arguments, computes, destroys them, and
 * returns *status (0 or a persiste_status) with the library's message
 * copied into msg[0], a blank string preallocated by R whose length is the
 * room there is. Reading a file again on every call costs milliseconds;
 * keeping handles alive between calls would need .Call and external
 * pointers.
 *
 * Because the table is read again on every call, the sizes R allocated its
 * outputs with (from an earlier call) are passed in and compared with what
 * this call read: a file changed in between is an error, never an overrun.
 *
 * The input arguments come first in the data entry points, in this order:
 *   tree[1]        Newick text, or a path when *tree_is_file
 *   table[1]       path of a Roary/Panaroo table, or "" to use the matrix
 *   states[]       families x genomes, column-major (R's layout): 0, 1, 2
 *   dims[2]        number of families, number of genomes of the matrix
 *   taxa[]         genome names of the matrix columns
 *   flags[1]       persiste_data_flag bits
 * then the model options (persiste.R's .persiste_model_args):
 *   condition[1], min_present[1]
 *   n_error[1], error_absent[], error_present[]   (0, 1 or n_tips pairs)
 *   n_cat[1], cat_weight[], cat_mult[]            (the same multiplier for
 *                                                  gain and loss)
 *   n_lineage[1], lin_gain[], lin_loss[]          (0 or n_nodes)
 *   observable[1]  1: drop the families outside the conditioning event
 *                  (persiste_data_observable); they follow the reader's
 *                  dropped families in the data's dropped list
 * Arrays of n = 0 entries still hold one (unused) element.
 * Build: see build.sh (R CMD SHLIB with pkg-config's flags). */
#include <stdarg.h>
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
#define INPUT_PASS tree_text, tree_is_file, table, states, dims, taxa, flags

#define MODEL_ARGS                                                        \
    int *condition, int *min_present, int *n_error, double *error_absent, \
        double *error_present, int *n_cat, double *cat_weight,            \
        double *cat_mult, int *n_lineage, double *lin_gain,               \
        double *lin_loss, int *observable
#define MODEL_ARG_TYPES                                                   \
    INTSXP, INTSXP, INTSXP, REALSXP, REALSXP, INTSXP, REALSXP, REALSXP,   \
        INTSXP, REALSXP, REALSXP, INTSXP
#define MODEL_PASS                                                        \
    condition, min_present, n_error, error_absent, error_present, n_cat,  \
        cat_weight, cat_mult, n_lineage, lin_gain, lin_loss, observable

typedef struct inputs {
    persiste_tree *tree;
    persiste_data *data;
    persiste_model *model;
    /* families the reader dropped (drop_absent); those after them in the
     * data's dropped list were excluded by persiste_data_observable */
    int64_t n_read_dropped;
    /* A failure of the shim itself (the library's message would be stale
     * then); NULL when the library failed. */
    const char *detail;
    char detail_buf[200];
} inputs;

static void close_inputs(inputs *in)
{
    persiste_model_destroy(in->model);
    persiste_data_destroy(in->data);
    persiste_tree_destroy(in->tree);
}

/* A failure of the shim: returns rc, the message formatted into
 * in->detail_buf. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int fail(inputs *in, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(in->detail_buf, sizeof in->detail_buf, fmt, ap);
    va_end(ap);
    in->detail = in->detail_buf;
    return rc;
}

static int open_tree(inputs *in, char **tree_text, int *tree_is_file)
{
    memset(in, 0, sizeof *in);
    return *tree_is_file
               ? persiste_tree_from_newick_file(&in->tree, tree_text[0])
               : persiste_tree_from_newick(&in->tree, tree_text[0]);
}

/* R integers (NA already turned into 2 by persiste.R) become the library's
 * uint8_t states; anything else becomes 255 so that the library names the
 * offending cell. */
static int open_data(inputs *in, char **table, int *states, int *dims,
                     char **taxa, int *flags)
{
    if (table[0][0])
        return persiste_data_read(&in->data, in->tree, table[0],
                                  (uint32_t)*flags);
    size_t n = (size_t)dims[0] * (size_t)dims[1];
    uint8_t *cells = malloc(n ? n : 1);
    if (!cells)
        return fail(in, PERSISTE_E_NOMEM, "persiste_r.c: out of memory");
    for (size_t i = 0; i < n; i++)
        cells[i] = states[i] >= 0 && states[i] <= 2 ? (uint8_t)states[i] : 255;
    /* Column-major: the next family is the next element, the next genome
     * is dims[0] elements on. Families are named by their 1-based row. */
    int rc = persiste_data_from_matrix(&in->data, in->tree, cells, dims[0],
                                       dims[1], 1, dims[0],
                                       (const char *const *)taxa, NULL,
                                       (uint32_t)*flags);
    free(cells);
    return rc;
}

/* The model from MODEL_ARGS; with *observable, in->data is replaced by its
 * copy without the families outside the conditioning event. */
static int open_model(inputs *in, MODEL_ARGS)
{
    int rc;
    if ((rc = persiste_model_create(&in->model)) ||
        (rc = persiste_model_set_int(in->model, PERSISTE_MODEL_CONDITION,
                                     *condition)) ||
        (rc = persiste_model_set_int(in->model, PERSISTE_MODEL_MIN_PRESENT,
                                     *min_present)) ||
        (*n_error &&
         (rc = persiste_model_set_error(in->model, *n_error, error_absent,
                                        error_present))) ||
        (*n_cat && (rc = persiste_model_set_categories(
                        in->model, *n_cat, cat_weight, cat_mult, NULL))) ||
        (*n_lineage && (rc = persiste_model_set_lineage(
                            in->model, *n_lineage, lin_gain, lin_loss))))
        return rc;
    in->n_read_dropped = persiste_data_n_dropped_families(in->data);
    if (*observable) {
        persiste_data *kept = NULL;
        if ((rc = persiste_data_observable(&kept, in->data, in->model)))
            return rc;
        persiste_data_destroy(in->data);
        in->data = kept;
    }
    return PERSISTE_OK;
}

static int open_inputs(inputs *in, INPUT_ARGS, MODEL_ARGS)
{
    int rc;
    if ((rc = open_tree(in, tree_text, tree_is_file)) ||
        (rc = open_data(in, table, states, dims, taxa, flags)))
        return rc;
    return open_model(in, MODEL_PASS);
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

/* Copies src into the blank R string dst, whose length is the room. */
static int copy_name(inputs *in, char *dst, const char *src, int64_t i)
{
    if (strlen(src) > strlen(dst))
        return fail(in, PERSISTE_E_INVALID,
                    "persiste_r.c: name %lld is longer than the %lld "
                    "characters R allotted (did the input change between "
                    "calls?)",
                    (long long)i + 1, (long long)strlen(dst));
    strcpy(dst, src);
    return PERSISTE_OK;
}

/* out[0..6] = families kept, genomes kept, tree tips, genomes dropped,
 * families dropped by the reader, families excluded by the conditioning
 * event (*observable), longest name of a kept or excluded family. For
 * matrix input, kept[f] = 1 if row f was kept, 0 if the reader dropped it,
 * 2 if it was excluded (row names are the 1-based indices). */
static void persiste_r_dims(INPUT_ARGS, MODEL_ARGS, int *out, int *kept,
                            int *status, char **msg)
{
    inputs in;
    int rc = open_inputs(&in, INPUT_PASS, MODEL_PASS);
    if (!rc) {
        int64_t n_dropped = persiste_data_n_dropped_families(in.data);
        out[0] = (int)persiste_data_n_families(in.data);
        out[1] = persiste_data_n_taxa(in.data);
        out[2] = persiste_tree_n_tips(in.tree);
        out[3] = (int)persiste_data_n_dropped_taxa(in.data);
        out[4] = (int)in.n_read_dropped;
        out[5] = (int)(n_dropped - in.n_read_dropped);
        out[6] = 0;
        for (int64_t f = 0; f < out[0] + out[5]; f++) {
            const char *name =
                f < out[0] ? persiste_data_family_name(in.data, f)
                           : persiste_data_dropped_family(
                                 in.data, in.n_read_dropped + f - out[0]);
            int len = (int)strlen(name);
            out[6] = len > out[6] ? len : out[6];
        }
        if (!table[0][0]) {
            for (int f = 0; f < dims[0]; f++)
                kept[f] = 1;
            for (int64_t i = 0; i < n_dropped; i++) {
                int row = atoi(persiste_data_dropped_family(in.data, i)) - 1;
                if (row < 0 || row >= dims[0]) {
                    rc = fail(&in, PERSISTE_E_INVALID,
                              "persiste_r.c: dropped family %lld is not a "
                              "row of the %lld-row matrix",
                              (long long)row + 1, (long long)dims[0]);
                    break;
                }
                kept[row] = i < in.n_read_dropped ? 0 : 2;
            }
        }
    }
    finish(&in, rc, status, msg);
}

/* names[0..n_names-1]: the kept families, then the excluded ones, into
 * blank strings of out[6] characters from persiste_r_dims. */
static void persiste_r_family_names(INPUT_ARGS, MODEL_ARGS, int *n_names,
                                    char **names, int *status, char **msg)
{
    inputs in;
    int rc = open_inputs(&in, INPUT_PASS, MODEL_PASS);
    int64_t n_kept = rc ? 0 : persiste_data_n_families(in.data);
    int64_t n_excl =
        rc ? 0 : persiste_data_n_dropped_families(in.data) - in.n_read_dropped;
    if (!rc && n_kept + n_excl != *n_names)
        rc = fail(&in, PERSISTE_E_INVALID,
                  "persiste_r.c: %lld families kept or excluded where R "
                  "expected %lld (did the table change between calls?)",
                  (long long)(n_kept + n_excl), (long long)*n_names);
    for (int64_t f = 0; !rc && f < n_kept + n_excl; f++)
        rc = copy_name(&in, names[f],
                       f < n_kept ? persiste_data_family_name(in.data, f)
                                  : persiste_data_dropped_family(
                                        in.data, in.n_read_dropped + f -
                                                     n_kept),
                       f);
    finish(&in, rc, status, msg);
}

/* The tree in the library's node order (tips first, then internal nodes in
 * post-order): sizes[0..2] = nodes, tips, longest label. With *room = 0
 * only the sizes are written; otherwise *room must be the number of nodes
 * and parent[] (root: -1), branch_length[] and labels[] (blank strings of
 * sizes[2] characters from the first call) are filled. */
static void persiste_r_tree(char **tree_text, int *tree_is_file, int *room,
                            int *sizes, int *parent, double *branch_length,
                            char **labels, int *status, char **msg)
{
    inputs in;
    int32_t *p = NULL;
    int rc = open_tree(&in, tree_text, tree_is_file);
    int32_t n = rc ? 0 : persiste_tree_n_nodes(in.tree);
    if (!rc) {
        sizes[0] = n;
        sizes[1] = persiste_tree_n_tips(in.tree);
        sizes[2] = 0;
        for (int32_t i = 0; i < n; i++) {
            int len = (int)strlen(persiste_tree_label(in.tree, i));
            sizes[2] = len > sizes[2] ? len : sizes[2];
        }
    }
    if (!rc && *room && *room != n)
        rc = fail(&in, PERSISTE_E_INVALID,
                  "persiste_r.c: the tree has %lld nodes where R expected "
                  "%lld (did the file change between calls?)",
                  (long long)n, (long long)*room);
    if (!rc && *room) {
        if (!(p = malloc((size_t)n * sizeof *p)))
            rc = fail(&in, PERSISTE_E_NOMEM, "persiste_r.c: out of memory");
        if (!rc && !(rc = persiste_tree_parents(in.tree, p)) &&
            !(rc = persiste_tree_branch_lengths(in.tree, branch_length)))
            for (int32_t i = 0; i < n; i++)
                parent[i] = p[i];
        for (int32_t i = 0; !rc && i < n; i++)
            rc = copy_name(&in, labels[i], persiste_tree_label(in.tree, i),
                           i);
    }
    free(p);
    finish(&in, rc, status, msg);
}

/* rates[*n]: persiste_gamma_categories (R allocates *n doubles). */
static void persiste_r_gamma(double *alpha, int *n, int *median,
                             double *rates, int *status, char **msg)
{
    inputs in;
    memset(&in, 0, sizeof in);
    finish(&in, persiste_gamma_categories(*alpha, *n, *median, rates),
           status, msg);
}

/* The batch calls take one rate per family: with n_rates = 1 (one gain
 * and one loss for every family) *log_gain and *log_loss are pointed at
 * n copies in *rates (freed by the caller), with n_rates = n they stay. */
static int rates_per_family(inputs *in, int64_t n, int n_rates,
                            double **log_gain, double **log_loss,
                            double **rates)
{
    if (n_rates != 1 && n_rates != n)
        return fail(in, PERSISTE_E_INVALID,
                    "rates: one gain and one loss, or one of each per "
                    "family");
    if (n_rates != 1 || n <= 1)
        return PERSISTE_OK;
    if (!(*rates = malloc(2 * (size_t)n * sizeof **rates)))
        return fail(in, PERSISTE_E_NOMEM, "persiste_r.c: out of memory");
    for (int64_t f = 0; f < n; f++) {
        (*rates)[f] = **log_gain;
        (*rates)[n + f] = **log_loss;
    }
    *log_gain = *rates;
    *log_loss = *rates + n;
    return PERSISTE_OK;
}

/* Per-family log-likelihoods (and, when d_log_gain is wanted, exact
 * derivatives w.r.t. the log rates; when sizes[1] > 0 also those of the
 * model's parameters, d_model[sizes[1]] with layout[2 * (which - 1)] =
 * offset, layout[2 * (which - 1) + 1] = count for which = 1..7 of
 * persiste_model_grad) at log_gain/log_loss, given either per family
 * (n_rates = families) or once for all (n_rates = 1). sizes[0] is the
 * number of families R allotted loglik[] and the derivatives for. */
static void evaluate(INPUT_ARGS, MODEL_ARGS, int *n_threads, int *sizes,
                     int *n_rates, double *log_gain, double *log_loss,
                     double *loglik, double *d_log_gain, double *d_log_loss,
                     double *d_model, int *layout, int *status, char **msg)
{
    inputs in;
    persiste_ctx *ctx = NULL;
    double *rates = NULL;
    int rc = open_inputs(&in, INPUT_PASS, MODEL_PASS);
    int64_t n = rc ? 0 : persiste_data_n_families(in.data);
    int64_t n_model =
        rc ? 0 : persiste_model_grad_layout(in.model, in.tree, 0, NULL);
    if (!rc && n != sizes[0]) {
        rc = fail(&in, PERSISTE_E_INVALID,
                  "persiste_r.c: the data has %lld families where R "
                  "expected %lld (did the table change between calls?)",
                  (long long)n, (long long)sizes[0]);
    } else if (!rc && d_model && sizes[1] > 0 && n_model != sizes[1]) {
        rc = fail(&in, PERSISTE_E_INVALID,
                  "persiste_r.c: the model has %lld derivatives where R "
                  "expected %lld",
                  (long long)n_model, (long long)sizes[1]);
    } else if (!rc) {
        rc = rates_per_family(&in, n, *n_rates, &log_gain, &log_loss, &rates);
    }
    if (!rc && layout) {
        for (int which = 1; which <= 7; which++) {
            int64_t offset = 0;
            layout[2 * which - 1] = (int)persiste_model_grad_layout(
                in.model, in.tree, which, &offset);
            layout[2 * which - 2] = (int)offset;
        }
    }
    if (d_model && sizes[1] <= 0)
        d_model = NULL; /* not wanted: the fast paths stay open */
    if (!rc && !(rc = persiste_ctx_create(&ctx)) &&
        !(rc = persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS,
                                      *n_threads)))
        rc = d_log_gain
                 ? persiste_gradient_model_batch(
                       ctx, in.model, in.tree, in.data, n, log_gain,
                       log_loss, NULL, loglik, d_log_gain, d_log_loss, NULL,
                       d_model)
                 : persiste_loglik_batch(ctx, in.model, in.tree, in.data, n,
                                         log_gain, log_loss, loglik);
    free(rates);
    persiste_ctx_destroy(ctx);
    finish(&in, rc, status, msg);
}

static void persiste_r_loglik(INPUT_ARGS, MODEL_ARGS, int *n_threads,
                              int *sizes, int *n_rates, double *log_gain,
                              double *log_loss, double *loglik, int *status,
                              char **msg)
{
    evaluate(INPUT_PASS, MODEL_PASS, n_threads, sizes, n_rates, log_gain,
             log_loss, loglik, NULL, NULL, NULL, NULL, status, msg);
}

static void persiste_r_gradient(INPUT_ARGS, MODEL_ARGS, int *n_threads,
                                int *sizes, int *n_rates, double *log_gain,
                                double *log_loss, double *loglik,
                                double *d_log_gain, double *d_log_loss,
                                double *d_model, int *layout, int *status,
                                char **msg)
{
    evaluate(INPUT_PASS, MODEL_PASS, n_threads, sizes, n_rates, log_gain,
             log_loss, loglik, d_log_gain, d_log_loss, d_model, layout,
             status, msg);
}

/* Where the families were gained and lost: persiste_reconstruct_batch at
 * log_gain/log_loss (n_rates = 1 or the number of families, as
 * evaluate()). sizes[0..3] = the families, tree nodes and groups R
 * allotted the outputs for, and 1 when the per-family outputs are wanted;
 * the first two are compared with what this call read. group[sizes[0]]:
 * each family's group, 0-based. Outputs in the library's layout and node
 * order: present[], gains[], losses[] of sizes[0] x sizes[1] (family f,
 * node v at f * sizes[1] + v) when sizes[3], else one unused element each;
 * sum_present[], sum_gains[], sum_losses[] of sizes[2] x sizes[1] (group g
 * at g * sizes[1] + v). n_impossible[0]: families of likelihood 0 (zeros in
 * the per-family outputs, left out of the sums). */
static void persiste_r_reconstruct(INPUT_ARGS, MODEL_ARGS, int *n_threads,
                                   int *sizes, int *n_rates,
                                   double *log_gain, double *log_loss,
                                   int *group, double *present, double *gains,
                                   double *losses, double *sum_present,
                                   double *sum_gains, double *sum_losses,
                                   int *n_impossible, int *status, char **msg)
{
    inputs in;
    persiste_ctx *ctx = NULL;
    double *rates = NULL;
    int32_t *groups = NULL;
    int rc = open_inputs(&in, INPUT_PASS, MODEL_PASS);
    int64_t n = rc ? 0 : persiste_data_n_families(in.data);
    int32_t n_nodes = rc ? 0 : persiste_tree_n_nodes(in.tree);
    if (!rc && (n != sizes[0] || n_nodes != sizes[1]))
        rc = fail(&in, PERSISTE_E_INVALID,
                  "persiste_r.c: %lld families and %lld nodes where R "
                  "expected %lld and %lld (did the input change between "
                  "calls?)",
                  (long long)n, (long long)n_nodes, (long long)sizes[0],
                  (long long)sizes[1]);
    else if (!rc && sizes[2] < 1)
        rc = fail(&in, PERSISTE_E_INVALID,
                  "persiste_r.c: %d groups, expected at least 1", sizes[2]);
    if (!rc)
        rc = rates_per_family(&in, n, *n_rates, &log_gain, &log_loss, &rates);
    /* R's int and int32_t are alike on every platform R runs on, but the
     * copy costs nothing beside the reconstruction and assumes nothing. */
    if (!rc && !(groups = malloc((n ? (size_t)n : 1) * sizeof *groups)))
        rc = fail(&in, PERSISTE_E_NOMEM, "persiste_r.c: out of memory");
    for (int64_t f = 0; !rc && f < n; f++)
        groups[f] = group[f];
    if (!sizes[3])
        present = gains = losses = NULL;
    if (!rc && !(rc = persiste_ctx_create(&ctx)) &&
        !(rc = persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS,
                                      *n_threads)) &&
        !(rc = persiste_reconstruct_batch(
              ctx, in.model, in.tree, in.data, n, log_gain, log_loss, NULL,
              groups, sizes[2], present, gains, losses, sum_present,
              sum_gains, sum_losses)))
        *n_impossible = (int)persiste_ctx_n_impossible(ctx);
    free(groups);
    free(rates);
    persiste_ctx_destroy(ctx);
    finish(&in, rc, status, msg);
}

/* Registration (as R packages do): .C finds exactly these names, and R
 * checks the argument types before the call. */
static R_NativePrimitiveArgType dims_types[] = {
    INPUT_ARG_TYPES, MODEL_ARG_TYPES, INTSXP, INTSXP, INTSXP, STRSXP};
static R_NativePrimitiveArgType names_types[] = {
    INPUT_ARG_TYPES, MODEL_ARG_TYPES, INTSXP, STRSXP, INTSXP, STRSXP};
static R_NativePrimitiveArgType tree_types[] = {
    STRSXP, INTSXP, INTSXP, INTSXP, INTSXP, REALSXP, STRSXP, INTSXP, STRSXP};
static R_NativePrimitiveArgType gamma_types[] = {REALSXP, INTSXP, INTSXP,
                                                 REALSXP, INTSXP, STRSXP};
static R_NativePrimitiveArgType loglik_types[] = {
    INPUT_ARG_TYPES, MODEL_ARG_TYPES, INTSXP, INTSXP,  INTSXP,
    REALSXP,         REALSXP,         REALSXP, INTSXP, STRSXP};
static R_NativePrimitiveArgType gradient_types[] = {
    INPUT_ARG_TYPES, MODEL_ARG_TYPES, INTSXP,  INTSXP,  INTSXP,
    REALSXP,         REALSXP,         REALSXP, REALSXP, REALSXP,
    REALSXP,         INTSXP,          INTSXP,  STRSXP};
static R_NativePrimitiveArgType reconstruct_types[] = {
    INPUT_ARG_TYPES, MODEL_ARG_TYPES, INTSXP,  INTSXP,  INTSXP,  REALSXP,
    REALSXP,         INTSXP,          REALSXP, REALSXP, REALSXP, REALSXP,
    REALSXP,         REALSXP,         INTSXP,  INTSXP,  STRSXP};

/* Through void (*)(void), which GCC's -Wcast-function-type accepts as
 * "any function": DL_FUNC's own signature matches none of the shims. */
#define ENTRY(name, types)                                                 \
    {#name, (DL_FUNC)(void (*)(void))&name,                                \
     (int)(sizeof types / sizeof types[0]), types}
static const R_CMethodDef c_methods[] = {
    ENTRY(persiste_r_dims, dims_types),
    ENTRY(persiste_r_family_names, names_types),
    ENTRY(persiste_r_tree, tree_types),
    ENTRY(persiste_r_gamma, gamma_types),
    ENTRY(persiste_r_loglik, loglik_types),
    ENTRY(persiste_r_gradient, gradient_types),
    ENTRY(persiste_r_reconstruct, reconstruct_types),
    {NULL, NULL, 0, NULL}};

void R_init_persiste_r(DllInfo *dll)
{
    R_registerRoutines(dll, c_methods, NULL, NULL, NULL);
    R_useDynamicSymbols(dll, FALSE);
}
