/* Independent oracles for the likelihood tests.
 *
 * Nothing here shares code or formulas with lib/: the two-state model is
 * written again from its definition (DESIGN.md section 2), in long double.
 *  - oracle_brute_*: enumerate every assignment of internal states (no
 *    pruning), with exact forward-mode derivatives (dual numbers).
 *  - oracle_logspace_loglik: log-space pruning over any parent array (own
 *    topological order), for trees of 100,000 tips.
 * Plus test plumbing: a deterministic RNG, tree/data builders over the public
 * API, finite differences, and a tolerance check that prints mismatches. */
#ifndef PERSISTE_TEST_ORACLE_H
#define PERSISTE_TEST_ORACLE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "persiste.h"

/* ---- Deterministic RNG (splitmix64) ------------------------------------ */
typedef struct oracle_rng {
    uint64_t state;
} oracle_rng;

uint64_t oracle_next(oracle_rng *rng);
double oracle_uniform(oracle_rng *rng, double lo, double hi);
int oracle_below(oracle_rng *rng, int n); /* uniform in [0, n) */

/* ---- Trees as plain arrays --------------------------------------------- */
/* Any numbering: parent[root] = -1; tips are the nodes without children.
 * length[i] is the length used for branch i (callers clamp). */
typedef struct oracle_tree {
    int32_t n_nodes;
    int32_t n_tips;
    int32_t *parent;
    double *length;
} oracle_tree;

/* Structure of a library tree read back through the public getters. */
void oracle_tree_read(const persiste_tree *tree, oracle_tree *out);
void oracle_tree_free(oracle_tree *t);
/* Lengths below min_length raised to it (the model's clamp). */
void oracle_tree_clamp(oracle_tree *t, double min_length);

/* Model settings, as the oracle understands them. */
typedef struct oracle_model {
    int condition;  /* persiste_condition */
    int root_prior; /* persiste_root_prior */
    double root_freq;
} oracle_model;

/* ---- Brute force (up to ~16 internal nodes) ----------------------------- */
/* obs[node] (persiste_state) is read at the tips only. Masses of one family,
 * each summed over internal and tip states:
 *   lik           L = P(pattern)
 *   all_absent    P(all known tips absent), all_present likewise (the
 *                 conditioning is on the family's known cells)
 *   not_absent    1 - P(all absent)                  (the PRESENT normaliser)
 *   variable      1 - P(all absent) - P(all present) (the VARIABLE one)
 * The complements are sums of non-negative terms (no cancellation). The
 * conditioned log-likelihood is log L - log(normaliser), whatever the
 * family's own pattern (persiste.h: unobservable patterns are not singled
 * out). */
typedef struct oracle_masses {
    long double lik, all_absent, not_absent, all_present, variable;
} oracle_masses;

/* Derivative selector: ORACLE_D_LOG_GAIN, ORACLE_D_LOG_LOSS, or a branch
 * (node) index >= 0 (derivative in that branch's length). */
enum { ORACLE_D_NONE = -3, ORACLE_D_LOG_LOSS = -2, ORACLE_D_LOG_GAIN = -1 };

/* Masses and their derivatives (tangent) with respect to `wrt`. */
void oracle_brute_masses(const oracle_tree *t, const oracle_model *m,
                         const uint8_t *obs, double log_gain, double log_loss,
                         int wrt, oracle_masses *value, oracle_masses *tangent);
/* Conditioned log-likelihood from masses (-inf when L = 0); with tangent
 * masses d (may be NULL), *dll gets its derivative (0 when L = 0). */
long double oracle_masses_loglik(int condition, const oracle_masses *v,
                                 const oracle_masses *d, long double *dll);
/* The same in one call. */
long double oracle_brute_loglik(const oracle_tree *t, const oracle_model *m,
                                const uint8_t *obs, double log_gain,
                                double log_loss);
long double oracle_brute_dloglik(const oracle_tree *t, const oracle_model *m,
                                 const uint8_t *obs, double log_gain,
                                 double log_loss, int wrt);

/* ---- Log-space pruning (any size) -------------------------------------- */
/* All three conditionings at once: out[persiste_condition]. */
void oracle_logspace_conds(const oracle_tree *t, const oracle_model *m,
                           const uint8_t *obs, double log_gain, double log_loss,
                           long double out[3]);
long double oracle_logspace_loglik(const oracle_tree *t, const oracle_model *m,
                                   const uint8_t *obs, double log_gain,
                                   double log_loss);

/* ---- Library plumbing (return NULL / nonzero on failure) --------------- */
persiste_ctx *oracle_ctx(int n_threads);
persiste_model *oracle_lib_model(const oracle_model *m, double min_length);
persiste_tree *oracle_newick(const char *text);
/* Random tree of n_tips tips named t0..; each internal node has 2 children,
 * or 3 with probability p_multi; lengths uniform in [lo, hi]. */
persiste_tree *oracle_random_tree(oracle_rng *rng, int n_tips, double p_multi,
                                  double lo, double hi);
/* Same tree (same node numbering) with branch `node` of length `length`. */
persiste_tree *oracle_tree_with_length(const persiste_tree *tree, int32_t node,
                                       double length);
/* states[f * n_tips + tip] in the tree's tip order. */
persiste_data *oracle_data(const persiste_tree *tree, const uint8_t *states,
                           int64_t n_families);
/* All families of data, as states[f * n_tips + tip] (malloc'd). */
uint8_t *oracle_data_states(const persiste_data *data, int32_t n_tips);
/* Random tip states: present with probability p_present, unknown with
 * probability p_unknown. */
void oracle_random_states(oracle_rng *rng, uint8_t *states, int64_t n,
                          double p_present, double p_unknown);

/* Small hand-written trees (multifurcations, zero, very long and very short
 * branches, a root length, 12 internal nodes, a tree of only very short
 * branches), NULL-terminated. */
extern const char *const oracle_small_trees[];

/* A tree with random families: per-family log rates uniform in [-5, 3];
 * family 0 all absent, 1 all present, the others random (presence
 * probability drawn per family, unknown with probability p_unknown). */
typedef struct oracle_case {
    persiste_tree *tree;
    oracle_tree t; /* its structure, lengths as given */
    int64_t n_fam;
    uint8_t *states; /* [n_fam * n_tips], tip order */
    double *log_gain, *log_loss;
    double pairs[2][2]; /* rates first drawn for families 0 and 1 */
    persiste_data *data;
} oracle_case;

/* Trees with one-child nodes, multifurcations and a node of more than 8
 * children (more than the site repeats' kernel sets up at once),
 * NULL-terminated. */
extern const char *const oracle_shape_trees[];

/* Rate pairs for comparisons of two ways to the same bits: ordinary ones,
 * then ones at the bounds, where partials fall below 2^-256 and even
 * underflow unless rescaled. */
#define ORACLE_N_BITWISE_PAIRS 6
extern const double oracle_bitwise_pairs[ORACLE_N_BITWISE_PAIRS][2];

/* fn(tree, rng, unknown) for two random trees of each size (unknown 0,
 * then 1; multifurcations; lengths from 1e-6 to 1 or to 50), then for each
 * shape tree. */
void oracle_for_each_tree(uint64_t seed, const int *sizes, size_t n_sizes,
                          void (*fn)(persiste_tree *tr, oracle_rng *rng,
                                     int unknown));

/* At an ordinary pair of oracle_bitwise_pairs (the first 3; at the
 * bounds the log-space oracle loses P(observable) = 1 - P(all absent) to
 * cancellation, which the library carries directly): got[f] against the
 * log-space oracle for every 50th of n_fam families (states[f * n_tips +
 * tip]), to 1e-9. Prints and returns false on a mismatch. */
bool oracle_bitwise_pair_close(const oracle_tree *t, const oracle_model *m,
                               const uint8_t *states, int64_t n_fam,
                               size_t pair, const double *got);

/* The first f < n where a[f] and b[f] differ in some bit, or -1. */
int64_t oracle_first_other_bits(const double *a, const double *b, int64_t n);

/* cmocka check that a[f] and b[f] have the same bits for every f < n;
 * else fails naming `what`, the first family and both values (a_how and
 * b_how say how each was computed). Use in files including cmocka.h. */
#define ORACLE_ASSERT_SAME_BITS(a, a_how, b, b_how, n, what)                 \
    do {                                                                     \
        int64_t f_ = oracle_first_other_bits((a), (b), (n));                 \
        if (f_ >= 0)                                                         \
            fail_msg("%s, family %lld: %.17g %s, %.17g %s", (what),         \
                     (long long)f_, (a)[f_], (a_how), (b)[f_], (b_how));     \
    } while (0)

/* Test tree i: the small trees, then four random multifurcating ones
 * (4 to 10 tips, lengths in [0.001, 2]); NULL past the end. */
persiste_tree *oracle_test_tree(int i, oracle_rng *rng);

/* Takes ownership of tree; false on failure. */
bool oracle_case_init(oracle_case *c, persiste_tree *tree, oracle_rng *rng,
                      int64_t n_fam, double p_unknown);
void oracle_case_free(oracle_case *c);
const uint8_t *oracle_case_obs(const oracle_case *c, int64_t f);
/* Calls fn(ctx, case, rng, name) for a case of n_fam families on every
 * test tree, in the first n_layouts rate layouts. */
typedef void (*oracle_case_fn)(persiste_ctx *ctx, oracle_case *c,
                               oracle_rng *rng, const char *name);
void oracle_for_each_case(uint64_t seed, int64_t n_fam, double p_unknown,
                          int n_layouts, oracle_case_fn fn);

/* The three conditions and root priors (FIXED at ORACLE_FIXED_FREQ). */
#define ORACLE_FIXED_FREQ 0.3
extern const int oracle_conditions[3], oracle_priors[3];

/* Rate layouts. OWN: per-family rates (as drawn); the others use the
 * pairs (g0, l0), (g1, l1) first drawn for families 0 and 1: GLOBAL, one
 * pair for all; TWO, the two pairs in runs of 5; RUNS, the four pairs
 * (g0,l0), (g0,l1), (g1,l1), (g1,l0) in runs of 16, 16, 12 and 12 families,
 * so that neighbouring runs share a gain or a loss and blocks of families
 * (of 4 or 8) are uniform in a row, or mixed. Data unchanged. */
enum {
    ORACLE_RATES_OWN,
    ORACLE_RATES_TWO,
    ORACLE_RATES_GLOBAL,
    ORACLE_RATES_RUNS,
    ORACLE_N_LAYOUTS
};
void oracle_case_share_rates(oracle_case *c, int layout);

/* ---- Numerics ----------------------------------------------------------- */
/* Fourth-order central difference of f at x with step h. */
double oracle_fd(double (*f)(double x, void *arg), void *arg, double x,
                 double h);
/* Derivative in a length t >= 0: central when t > 2h, else one-sided
 * (third order), so that lengths stay non-negative. */
double oracle_fd_length(double (*f)(double x, void *arg), void *arg, double t,
                        double h);

/* |got - want| <= rel * max(|want|, floor), or both the same infinity.
 * Prints `what` and both values on failure. */
bool oracle_close(double got, long double want, double rel, double floor,
                  const char *what);

/* cmocka check with a formatted label (use in files including cmocka.h). */
#define ORACLE_ASSERT_CLOSE(got, want, rel, floor, ...)                        \
    do {                                                                       \
        char what_[200];                                                       \
        snprintf(what_, sizeof what_, __VA_ARGS__);                            \
        assert_true(oracle_close((got), (want), (rel), (floor), what_));       \
    } while (0)

#endif
