/*
 * persiste — phylogenetic likelihoods of gene content (presence/absence)
 * under a two-state gain/loss model, batched over gene families, with exact
 * gradients.
 *
 * Stability promise: every declaration below is part of the ABI of
 * libpersiste.so.PERSISTE_ABI_VERSION. No struct is exposed; objects are
 * opaque handles made by *_create / *_from_* / *_read and released by the
 * matching *_destroy (which accepts NULL). Enum values are pinned and never
 * reused. New functions are added under a new symbol version; changed
 * behaviour gets a new name.
 *
 * Conventions:
 *  - Every fallible call returns an int status: PERSISTE_OK (0) or a negative
 *    persiste_status. persiste_strerror(status) names the code and
 *    persiste_last_error() gives the detail of the calling thread's most
 *    recent failure (file, line, column, taxon, family ...).
 *  - Results are written to caller-owned arrays; on failure nothing is
 *    written to them.
 *  - The library never keeps a pointer the caller passed in: trees and data
 *    are copied in and are immutable afterwards, so they may be shared
 *    read-only between threads and destroyed in any order.
 *  - A persiste_ctx is used by one thread at a time (a second concurrent
 *    call gets PERSISTE_E_BUSY); separate contexts are independent.
 *  - Rates are per unit branch length: gain (0 -> 1) and loss (1 -> 0).
 *    Batch calls take natural logarithms of the rates, one value per family.
 */
#ifndef PERSISTE_H
#define PERSISTE_H

#include <stddef.h>
#include <stdint.h>

#include "persiste_version.h"

#if defined(_WIN32)
#  define PERSISTE_API
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define PERSISTE_API __attribute__((visibility("default")))
#else
#  define PERSISTE_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Everything between the cdef markers is also the declaration source of the
 * Python binding (cffi): keep it to typedefs, enums and prototypes. */
/* @cdef-begin */

/* ---- Status codes (values pinned; new codes are appended) -------------- */
typedef enum persiste_status {
    PERSISTE_OK = 0,
    PERSISTE_E_NOMEM = -1,    /* an allocation failed */
    PERSISTE_E_INVALID = -2,  /* bad argument: NULL, size, unknown option */
    PERSISTE_E_PARSE = -3,    /* malformed Newick or table text */
    PERSISTE_E_IO = -4,       /* file cannot be opened, read or inflated */
    PERSISTE_E_NAMES = -5,    /* duplicate names, or data and tree disagree */
    PERSISTE_E_DOMAIN = -6,   /* NaN, infinite or negative number */
    PERSISTE_E_STATE = -7,    /* object unusable here (context after fork) */
    PERSISTE_E_BUSY = -8,     /* context in use by another thread */
    PERSISTE_E_OVERFLOW = -9  /* sizes beyond what can be addressed */
} persiste_status;

/* ---- Version and errors ------------------------------------------------ */
/* PERSISTE_VERSION_NUMBER of the loaded library (compare with the header). */
PERSISTE_API unsigned persiste_version_number(void);
PERSISTE_API const char *persiste_version_string(void);
/* Static text naming a status code; never NULL. */
PERSISTE_API const char *persiste_strerror(int status);
/* Detail of the calling thread's last failure; meaningful only right after
 * a call returned an error. Never NULL. */
PERSISTE_API const char *persiste_last_error(void);

/* ---- Context: worker pool and scratch space ---------------------------- */
typedef struct persiste_ctx persiste_ctx;

typedef enum persiste_ctx_param {
    /* Worker threads used by batch calls, the calling thread included.
     * Default 1; 0 means one per online core. Range 0..256. */
    PERSISTE_CTX_NTHREADS = 1
} persiste_ctx_param;

PERSISTE_API int persiste_ctx_create(persiste_ctx **out);
PERSISTE_API void persiste_ctx_destroy(persiste_ctx *ctx);
PERSISTE_API int persiste_ctx_set_param(persiste_ctx *ctx, int param,
                                        int64_t value);
/* NTHREADS reads back the number of threads actually running. */
PERSISTE_API int persiste_ctx_get_param(const persiste_ctx *ctx, int param,
                                        int64_t *value);
/* Families whose likelihood was exactly zero in the last batch call on this
 * context (log-likelihood -inf; typically a zero-length branch between
 * genomes that differ: see PERSISTE_MODEL_MIN_BRANCH_LENGTH). */
PERSISTE_API int64_t persiste_ctx_n_impossible(const persiste_ctx *ctx);

/* ---- Tree -------------------------------------------------------------- */
/* Nodes are numbered 0..n_nodes-1: the tips first, in input order
 * (left-to-right in Newick), then the internal nodes in post-order, so every
 * child precedes its parent and the root is n_nodes-1. Branch i is the edge
 * above node i; the root's own length, if any, is kept but not used. */
typedef struct persiste_tree persiste_tree;

/* text: NUL-terminated Newick (one tree, terminated by ';'). */
PERSISTE_API int persiste_tree_from_newick(persiste_tree **out,
                                           const char *text);
PERSISTE_API int persiste_tree_from_newick_file(persiste_tree **out,
                                                const char *path);
/* parent[i]: index of node i's parent, -1 for the single root.
 * branch_length[i] >= 0 (the root's is ignored). names[i]: tip name, or an
 * internal label; tips (nodes without children) must have unique non-empty
 * names, internal nodes may have "" or NULL. Input indices need not be
 * ordered; the tree is renumbered as described above. */
PERSISTE_API int persiste_tree_from_parents(persiste_tree **out,
                                            int32_t n_nodes,
                                            const int32_t *parent,
                                            const double *branch_length,
                                            const char *const *names);
PERSISTE_API void persiste_tree_destroy(persiste_tree *tree);

PERSISTE_API int32_t persiste_tree_n_nodes(const persiste_tree *tree);
PERSISTE_API int32_t persiste_tree_n_tips(const persiste_tree *tree);
/* Tip name or internal label of node i ("" if none); NULL if out of range. */
PERSISTE_API const char *persiste_tree_label(const persiste_tree *tree,
                                             int32_t node);
/* Copy parent indices (root: -1) / branch lengths into out[n_nodes]. */
PERSISTE_API int persiste_tree_parents(const persiste_tree *tree,
                                       int32_t *out);
PERSISTE_API int persiste_tree_branch_lengths(const persiste_tree *tree,
                                              double *out);

/* ---- Data: presence/absence bound to a tree's tips --------------------- */
typedef struct persiste_data persiste_data;

typedef enum persiste_state {
    PERSISTE_ABSENT = 0,
    PERSISTE_PRESENT = 1,
    PERSISTE_UNKNOWN = 2
} persiste_state;

typedef enum persiste_data_flag {
    /* Drop genomes of the table that are not tips of the tree (they are
     * reported by persiste_data_dropped_taxon); default: error. */
    PERSISTE_DATA_DROP_EXTRA_TAXA = 1,
    /* Tree tips missing from the table become unknown in every family;
     * default: error. */
    PERSISTE_DATA_MISSING_AS_UNKNOWN = 2,
    /* Drop families absent from every kept genome (reported by
     * persiste_data_dropped_family); default: keep them (their number is
     * persiste_data_n_all_absent) — under conditioning they are impossible. */
    PERSISTE_DATA_DROP_ABSENT_FAMILIES = 4,
    /* File orientation; default: detected from which side names the tips. */
    PERSISTE_DATA_TAXA_IN_ROWS = 8,
    PERSISTE_DATA_TAXA_IN_COLUMNS = 16
} persiste_data_flag;

/* states[f * family_stride + t * taxon_stride] is the state of family f in
 * taxon t (persiste_state values), for f < n_families, t < n_taxa; strides
 * count elements and may be any value (row- or column-major, views).
 * taxon_names[n_taxa] bind columns to tree tips by name. family_names may be
 * NULL (families are then named by their 1-based index). */
PERSISTE_API int persiste_data_from_matrix(persiste_data **out,
                                           const persiste_tree *tree,
                                           const uint8_t *states,
                                           int64_t n_families, int64_t n_taxa,
                                           int64_t family_stride,
                                           int64_t taxon_stride,
                                           const char *const *taxon_names,
                                           const char *const *family_names,
                                           uint32_t flags);
/* Roary/Panaroo gene_presence_absence.Rtab (tab-separated, header "Gene" +
 * genome names, one row per family), or a CSV/TSV 0/1 matrix in either
 * orientation; gzip-compressed input is recognised by its magic bytes.
 * Cells: 0, 1, and "?", "-", "NA" or "" for unknown. */
PERSISTE_API int persiste_data_read(persiste_data **out,
                                    const persiste_tree *tree,
                                    const char *path, uint32_t flags);
PERSISTE_API void persiste_data_destroy(persiste_data *data);

PERSISTE_API int64_t persiste_data_n_families(const persiste_data *data);
PERSISTE_API int32_t persiste_data_n_taxa(const persiste_data *data);
PERSISTE_API const char *persiste_data_family_name(const persiste_data *data,
                                                   int64_t family);
/* Kept families absent from every genome. */
PERSISTE_API int64_t persiste_data_n_all_absent(const persiste_data *data);
PERSISTE_API int64_t persiste_data_n_dropped_taxa(const persiste_data *data);
PERSISTE_API const char *persiste_data_dropped_taxon(const persiste_data *data,
                                                     int64_t i);
PERSISTE_API int64_t persiste_data_n_dropped_families(
    const persiste_data *data);
PERSISTE_API const char *persiste_data_dropped_family(
    const persiste_data *data, int64_t i);
/* out[n_tips]: states of one family in tree tip order. */
PERSISTE_API int persiste_data_states(const persiste_data *data,
                                      int64_t family, uint8_t *out);

/* ---- Model options ----------------------------------------------------- */
typedef struct persiste_model persiste_model;

/* Conditioning divides a family's likelihood by the probability of the
 * event that makes a family observable, defined on the OBSERVED cells
 * (through the observation error model, if set) and on the family's own
 * known cells: its unknown cells are marginalised (as IQ-TREE's +ASC_MIS),
 * so families that share a set of unknown tips share the divisor. A family
 * whose own pattern lies outside the event is not singled out here: remove
 * such families with persiste_data_observable (which reports them). */
typedef enum persiste_condition {
    PERSISTE_CONDITION_NONE = 0,
    /* at least PERSISTE_MODEL_MIN_PRESENT (default 1) observed presences:
     * with 1, L / (1 - P(all observed absent)) */
    PERSISTE_CONDITION_PRESENT = 1,
    /* neither all observed absent nor all observed present */
    PERSISTE_CONDITION_VARIABLE = 2
} persiste_condition;

typedef enum persiste_root_prior {
    PERSISTE_ROOT_STATIONARY = 0, /* pi1 = gain / (gain + loss) */
    PERSISTE_ROOT_FIXED = 1,      /* pi1 = PERSISTE_MODEL_ROOT_FREQ */
    PERSISTE_ROOT_ABSENT = 2      /* the root lacks the family */
} persiste_root_prior;

typedef enum persiste_model_param {
    PERSISTE_MODEL_CONDITION = 1,   /* int: persiste_condition; PRESENT */
    PERSISTE_MODEL_ROOT_PRIOR = 2,  /* int: persiste_root_prior; STATIONARY */
    PERSISTE_MODEL_ROOT_FREQ = 3,   /* double in [0,1]: pi1 when FIXED; 0.5 */
    /* double >= 0: every branch shorter than this is evaluated at this
     * length (its branch gradient is then 0); default 0 */
    PERSISTE_MODEL_MIN_BRANCH_LENGTH = 4,
    /* int >= 1: under CONDITION_PRESENT, a family is observable with at
     * least this many observed presences among its known cells (a dynamic
     * programme on the count, truncated at k); 1 (the default) is
     * PRESENT itself. Values above 1 need CONDITION_PRESENT. */
    PERSISTE_MODEL_MIN_PRESENT = 5
} persiste_model_param;

PERSISTE_API int persiste_model_create(persiste_model **out);
PERSISTE_API void persiste_model_destroy(persiste_model *model);
PERSISTE_API int persiste_model_set_int(persiste_model *model, int param,
                                        int64_t value);
PERSISTE_API int persiste_model_set_double(persiste_model *model, int param,
                                           double value);
PERSISTE_API int persiste_model_get_int(const persiste_model *model, int param,
                                        int64_t *value);
PERSISTE_API int persiste_model_get_double(const persiste_model *model,
                                           int param, double *value);

/* Observation error (a genome's draft assembly misses genes, annotation
 * splits or merges them). Genome g has a_g = absent[g] = P(observed 0 |
 * truly present) and b_g = present[g] = P(observed 1 | truly absent); a
 * tip's partial over (absent, present) is: observed 1 -> (b_g, 1 - a_g),
 * observed 0 -> (1 - b_g, a_g), unknown -> (1, 1). n = 1: one pair for
 * every genome; n > 1: one pair per tip of the tree evaluated, in tree tip
 * order (its n_tips must equal n); n = 0 removes the error model. Each
 * a, b in [0, 1) with a + b < 1. The arrays are copied. */
PERSISTE_API int persiste_model_set_error(persiste_model *model, int32_t n,
                                          const double *absent,
                                          const double *present);
/* Rate categories across families: L_f = sum_k weight[k] * L_f(gain *
 * gain_mult[k], loss * loss_mult[k]), each category with its own root prior
 * (stationary: its own rates). loss_mult may be NULL (the same multipliers
 * as gain). weight[k] > 0 summing to 1 (within 1e-9), multipliers >= 0
 * and finite (a category of multiplier 0 never changes; its root prior is
 * the limit, the base rates' stationary share when both are 0). Under conditioning, lnL_f = log sum_k w_k L_fk - log sum_k w_k
 * P_k(observable). n = 0 removes the categories (as n = 1, multiplier 1).
 * See persiste_gamma_categories for a discretised gamma. */
PERSISTE_API int persiste_model_set_categories(persiste_model *model,
                                               int32_t n,
                                               const double *weight,
                                               const double *gain_mult,
                                               const double *loss_mult);
/* Lineage multipliers: on the branch above node i the rates are gain *
 * gain_mult[i] and loss * loss_mult[i] (the root's entry is unused and the
 * root prior is not affected). n = the tree's n_nodes (node order of
 * persiste_tree_label), or 0 to remove them. Multipliers > 0, finite. */
PERSISTE_API int persiste_model_set_lineage(persiste_model *model, int32_t n,
                                            const double *gain_mult,
                                            const double *loss_mult);
/* Sizes of the arrays last set (0 when unset): what = 1 error pairs, 2
 * categories, 3 lineage multipliers; -1 for another value of what. */
PERSISTE_API int32_t persiste_model_n_values(const persiste_model *model,
                                             int what);

/* Discretised gamma rates with shape alpha and mean 1 over n equal-
 * probability categories (Yang 1994): rates[k] = the mean of slice k, n *
 * [P(alpha+1, alpha q_k) - P(alpha+1, alpha q_(k-1))] with q_k the
 * gamma(alpha, alpha) quantile of (k+1)/n, or, when median != 0, each
 * slice's median rescaled so that the rates average 1. Weights are 1/n.
 * alpha in [1e-3, 1e4] (finite, > 0), 1 <= n <= 64. */
PERSISTE_API int persiste_gamma_categories(double alpha, int32_t n,
                                           int median, double *rates);

/* ---- Batch evaluation -------------------------------------------------- */
/* Per-family log-likelihood (conditioning term included):
 * loglik[f] for f < n_families, at gain exp(log_gain[f]), loss
 * exp(log_loss[f]); log rates must lie in [-100, 100] (PERSISTE_E_DOMAIN
 * otherwise). n_families must equal persiste_data_n_families(data).
 * An impossible family gets -inf (counted by persiste_ctx_n_impossible).
 * Site repeats: when the families share one rate pair, or up to 4, a
 * fit's repeated calls get faster. From the 16th such call with the same
 * tree and data the context keeps the distinct patterns of the tips below
 * every node and computes each node's partial once per pattern and pair
 * (the results are the same bits). It keeps them (at most twice the
 * data's bit-packed matrix plus 1 MB; nothing where patterns repeat too
 * little to pay) until such a call with another tree, data or thread
 * count, or persiste_ctx_destroy. */
PERSISTE_API int persiste_loglik_batch(persiste_ctx *ctx,
                                       const persiste_model *model,
                                       const persiste_tree *tree,
                                       const persiste_data *data,
                                       int64_t n_families,
                                       const double *log_gain,
                                       const double *log_loss,
                                       double *loglik);

/* As persiste_loglik_batch, plus exact derivatives of loglik[f] with respect
 * to log_gain[f] and log_loss[f], and, when d_branch is not NULL, the
 * derivative of sum_f weight[f] * loglik[f] with respect to every branch
 * length (d_branch[n_nodes]; the root's entry is 0). weight may be NULL
 * (all 1). Impossible families get zero derivatives and are left out of
 * d_branch. d_log_gain / d_log_loss may be NULL when not wanted. Known
 * limit: where P(observable) falls below DBL_MIN (subnormal; e.g. a branch
 * of 1e-308 under a fixed root frequency of 0) the derivatives are NaN. */
PERSISTE_API int persiste_gradient_batch(persiste_ctx *ctx,
                                         const persiste_model *model,
                                         const persiste_tree *tree,
                                         const persiste_data *data,
                                         int64_t n_families,
                                         const double *log_gain,
                                         const double *log_loss,
                                         const double *weight,
                                         double *loglik,
                                         double *d_log_gain,
                                         double *d_log_loss,
                                         double *d_branch);

/* The derivatives of the model's own parameters (what
 * persiste_gradient_model_batch writes in d_model[]): the layout for a
 * model on a tree. which = 0: the total size (the return value), else
 * one of these (count returned, its start written to *offset, count 0
 * when the model lacks the option). */
typedef enum persiste_model_grad {
    /* d/d log a_g and d/d log b_g of each error pair as set (1 or n_tips) */
    PERSISTE_GRAD_ERROR_ABSENT = 1,
    PERSISTE_GRAD_ERROR_PRESENT = 2,
    /* d/d log gain_mult[k] and d/d log loss_mult[k] of each category
     * (with loss_mult NULL, the shared multiplier's is their sum) */
    PERSISTE_GRAD_CATEGORY_GAIN = 3,
    PERSISTE_GRAD_CATEGORY_LOSS = 4,
    /* d/d weight[k], the weights taken as free (not renormalised) */
    PERSISTE_GRAD_CATEGORY_WEIGHT = 5,
    /* d/d log gain_mult[i], d/d log loss_mult[i] of each node's branch */
    PERSISTE_GRAD_LINEAGE_GAIN = 6,
    PERSISTE_GRAD_LINEAGE_LOSS = 7
} persiste_model_grad;
PERSISTE_API int64_t persiste_model_grad_layout(const persiste_model *model,
                                                const persiste_tree *tree,
                                                int which, int64_t *offset);

/* As persiste_gradient_batch, plus d_model[persiste_model_grad_layout(
 * model, tree, 0, NULL)]: the derivatives of sum_f weight[f] * loglik[f]
 * with respect to the model's parameters (impossible families left out).
 * d_model may be NULL. */
PERSISTE_API int persiste_gradient_model_batch(
    persiste_ctx *ctx, const persiste_model *model, const persiste_tree *tree,
    const persiste_data *data, int64_t n_families, const double *log_gain,
    const double *log_loss, const double *weight, double *loglik,
    double *d_log_gain, double *d_log_loss, double *d_branch,
    double *d_model);

/* A copy of data without the families whose observed cells lie outside the
 * model's conditioning event (none under CONDITION_NONE): under PRESENT
 * those with fewer than MIN_PRESENT observed presences, under VARIABLE
 * those without both an observed absence and an observed presence. They
 * are appended to the copy's dropped families (persiste_data_dropped_
 * family), after any the data already had. */
PERSISTE_API int persiste_data_observable(persiste_data **out,
                                          const persiste_data *data,
                                          const persiste_model *model);

/* ---- Reconstruction: where families were gained and lost ------------- */
/* Given each family's observed cells, under every model option: per family
 * f and node v (n = the tree's n_nodes; each output may be NULL)
 *   present[f * n + v]  P(node v truly present | the family's cells)
 *                       (at a tip with observation error: its true state)
 *   gains[f * n + v]    expected number of gain events (0 -> 1) on the
 *   losses[f * n + v]   branch above v, and of loss events; 0 at the root
 * (exact endpoint-conditioned expectations of the two-state chain, without
 * cancellation on very short branches), mixed over rate categories by
 * their posterior weights; and the same summed over families, weighted by
 * weight[f] (NULL: 1), into group[f] in 0 .. n_groups - 1 (group NULL:
 * every family in group 0; n_groups >= 1):
 *   sum_present[g * n + v], sum_gains[g * n + v], sum_losses[g * n + v]
 * The sums never hold a families x nodes matrix: memory O(threads x
 * nodes x groups). Expectations are not conditioned on ascertainment (for
 * families inside the conditioning event they are the same). Impossible
 * families (likelihood 0) get 0 in every per-family output, are left out of
 * the sums and are counted by persiste_ctx_n_impossible. The results do not
 * depend on the thread count. */
PERSISTE_API int persiste_reconstruct_batch(
    persiste_ctx *ctx, const persiste_model *model, const persiste_tree *tree,
    const persiste_data *data, int64_t n_families, const double *log_gain,
    const double *log_loss, const double *weight, const int32_t *group,
    int32_t n_groups, double *present, double *gains, double *losses,
    double *sum_present, double *sum_gains, double *sum_losses);

/* A copy of data with only the families families[0 .. n) (indices into
 * data, in that order, each at most once); the others are appended to its
 * dropped families. For fits where a set of families has a model of its
 * own (e.g. a lineage effect on one gene set). */
PERSISTE_API int persiste_data_select(persiste_data **out,
                                      const persiste_data *data, int64_t n,
                                      const int64_t *families);

/* Simulation: states[f * n_tips + t] (persiste_state, tree tip order) of
 * n_families families at exp(log_gain[f]), exp(log_loss[f]) under every
 * model option: a category drawn by weight, the root from its prior, each
 * branch's transition at its multipliers and (minimum) length, then the
 * observation error. Under conditioning (a new model conditions on
 * PRESENT: set CONDITION_NONE to keep families absent everywhere) a family
 * outside the event is drawn again; after 10^6 rejections in a row the
 * call fails with PERSISTE_E_DOMAIN naming the family, and the families
 * before it have been written. Each family has its own random stream from
 * (seed, family): the same seed gives the same states whatever the number
 * of families after it (with the same libm, on every machine). */
PERSISTE_API int persiste_simulate(const persiste_model *model,
                                   const persiste_tree *tree,
                                   int64_t n_families, const double *log_gain,
                                   const double *log_loss, uint64_t seed,
                                   uint8_t *states);

/* @cdef-end */

#ifdef __cplusplus
}
#endif

#endif /* PERSISTE_H */
