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

/* Conditioning divides every family's likelihood by the probability that a
 * family is observable at all, computed over the true states of all tips
 * (it depends on the rates and the tree, not on the family's cells). A
 * family whose own pattern is unobservable (absent everywhere, or under
 * VARIABLE present everywhere) is not singled out: remove such families
 * from the data (PERSISTE_DATA_DROP_ABSENT_FAMILIES, or core genes). */
typedef enum persiste_condition {
    PERSISTE_CONDITION_NONE = 0,
    /* present in at least one genome: L / (1 - P(all absent)) */
    PERSISTE_CONDITION_PRESENT = 1,
    /* neither all absent nor all present */
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
    PERSISTE_MODEL_MIN_BRANCH_LENGTH = 4
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

/* @cdef-end */

#ifdef __cplusplus
}
#endif

#endif /* PERSISTE_H */
