/* Invariant checks shared by the fuzz targets. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt,
               ...)
{
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "%s:%d: check failed: %s: ", file, line, cond);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n  last error: %s\n", persiste_last_error());
    va_end(ap);
    abort();
}

void fuzz_check_failure(int rc, const void *out, const void *sentinel)
{
    FUZZ_CHECK(rc < 0 && rc >= PERSISTE_E_OVERFLOW, "status %d", rc);
    FUZZ_CHECK(rc != PERSISTE_E_NOMEM && rc != PERSISTE_E_BUSY &&
                   rc != PERSISTE_E_STATE,
               "status %d (%s) without a cause", rc, persiste_strerror(rc));
    FUZZ_CHECK(persiste_last_error()[0] != '\0', "status %d, no message", rc);
    FUZZ_CHECK(out == sentinel || out == NULL, "handle written on failure");
}

void fuzz_check_tree(const persiste_tree *tree)
{
    int32_t n = persiste_tree_n_nodes(tree), n_tips = persiste_tree_n_tips(tree);
    FUZZ_CHECK(n >= 1 && n_tips >= 1 && n_tips <= n, "%d nodes, %d tips", n,
               n_tips);
    int32_t *parent = malloc((size_t)n * sizeof *parent);
    int32_t *kids = calloc((size_t)n, sizeof *kids);
    double *length = malloc((size_t)n * sizeof *length);
    FUZZ_CHECK(parent && kids && length, "test out of memory");
    FUZZ_CHECK(persiste_tree_parents(tree, parent) == PERSISTE_OK &&
                   persiste_tree_branch_lengths(tree, length) == PERSISTE_OK,
               "getters");
    FUZZ_CHECK(parent[n - 1] == -1, "root is not last");
    for (int32_t v = 0; v < n - 1; v++) {
        FUZZ_CHECK(parent[v] > v && parent[v] < n && parent[v] >= n_tips,
                   "node %d has parent %d", v, parent[v]);
        FUZZ_CHECK(length[v] >= 0 && length[v] <= 1.7976931348623157e308,
                   "node %d has length %g", v, length[v]);
        kids[parent[v]]++;
    }
    for (int32_t v = 0; v < n; v++) {
        const char *label = persiste_tree_label(tree, v);
        FUZZ_CHECK(label != NULL, "node %d has no label", v);
        FUZZ_CHECK((v < n_tips) == (kids[v] == 0), "node %d: %d children", v,
                   kids[v]);
        FUZZ_CHECK(v >= n_tips || label[0], "tip %d unnamed", v);
        for (int32_t u = 0; u < v && v < n_tips && n_tips <= 64; u++)
            FUZZ_CHECK(strcmp(label, persiste_tree_label(tree, u)) != 0,
                       "tips %d and %d share a name", u, v);
    }
    FUZZ_CHECK(persiste_tree_label(tree, n) == NULL &&
                   persiste_tree_label(tree, -1) == NULL,
               "label out of range");
    free(parent);
    free(kids);
    free(length);
}

void fuzz_check_data(const persiste_data *data, const persiste_tree *tree)
{
    int32_t n_tips = persiste_tree_n_tips(tree);
    int64_t n_fam = persiste_data_n_families(data);
    FUZZ_CHECK(persiste_data_n_taxa(data) == n_tips, "taxa %d, tips %d",
               persiste_data_n_taxa(data), n_tips);
    FUZZ_CHECK(n_fam >= 1, "%lld families", (long long)n_fam);
    uint8_t *states = malloc((size_t)n_tips);
    FUZZ_CHECK(states != NULL, "test out of memory");
    /* Cells 0 everywhere count as all absent; so may families whose only
     * unknowns are tips missing from the table (not kept genomes). */
    int64_t all_absent = 0, no_present = 0;
    for (int64_t f = 0; f < n_fam; f++) {
        FUZZ_CHECK(persiste_data_family_name(data, f) != NULL, "family name");
        FUZZ_CHECK(persiste_data_states(data, f, states) == PERSISTE_OK,
                   "states");
        int absent = 1, present = 0;
        for (int32_t v = 0; v < n_tips; v++) {
            FUZZ_CHECK(states[v] <= PERSISTE_UNKNOWN, "state %u", states[v]);
            absent &= states[v] == PERSISTE_ABSENT;
            present |= states[v] == PERSISTE_PRESENT;
        }
        all_absent += absent;
        no_present += !present;
    }
    int64_t reported = persiste_data_n_all_absent(data);
    FUZZ_CHECK(all_absent <= reported && reported <= no_present,
               "%lld all absent, %lld without presence, %lld reported",
               (long long)all_absent, (long long)no_present,
               (long long)reported);
    for (int64_t i = 0; i < persiste_data_n_dropped_taxa(data); i++)
        FUZZ_CHECK(persiste_data_dropped_taxon(data, i) != NULL, "taxon");
    for (int64_t i = 0; i < persiste_data_n_dropped_families(data); i++)
        FUZZ_CHECK(persiste_data_dropped_family(data, i) != NULL, "family");
    FUZZ_CHECK(persiste_data_family_name(data, n_fam) == NULL &&
                   persiste_data_states(data, n_fam, states) ==
                       PERSISTE_E_INVALID,
               "family out of range");
    free(states);
}
