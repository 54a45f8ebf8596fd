/* Reading the library's error messages on bad input.
 *
 *   errors
 *
 * Every fallible call returns 0 or a negative persiste_status;
 * persiste_strerror(status) names the code and persiste_last_error() says
 * what exactly went wrong (line and column of a Newick error, the genomes
 * that do not match). The message belongs to the calling thread and is
 * meaningful only right after the failing call: read it before the next
 * call. Exits 0 when each bad input fails with the documented status. */
#include <stdio.h>

#include <persiste/persiste.h>

static int report(const char *what, int rc, int expected)
{
    printf("%s: status %d (%s): %s\n", what, rc, persiste_strerror(rc),
           rc ? persiste_last_error() : "no error");
    return rc != expected;
}

int main(void)
{
    int wrong = 0;

    /* A Newick string with a missing ':' before a branch length. */
    persiste_tree *tree = NULL;
    int rc = persiste_tree_from_newick(&tree, "((A:0.1,B:0.2):0.3,C 0.4);");
    wrong += report("malformed Newick", rc, PERSISTE_E_PARSE);

    rc = persiste_tree_from_newick(&tree, "((A:0.1,B:0.2):0.3,C:0.4);");
    wrong += report("valid Newick", rc, PERSISTE_OK);
    if (rc)
        return 1;

    /* Two families over genomes A, B, D: the tree has C, not D. Rows are
     * families, so the stride between families is 3, between genomes 1. */
    const uint8_t states[] = {1, 0, 1, /**/ 0, 1, 1};
    const char *const genomes[] = {"A", "B", "D"};
    persiste_data *data = NULL;
    rc = persiste_data_from_matrix(&data, tree, states, 2, 3, 3, 1, genomes,
                                   NULL, 0);
    wrong += report("table that does not match the tree", rc,
                    PERSISTE_E_NAMES);

    /* What the message suggests: drop D, treat the missing C as unknown. */
    rc = persiste_data_from_matrix(&data, tree, states, 2, 3, 3, 1, genomes,
                                   NULL,
                                   PERSISTE_DATA_DROP_EXTRA_TAXA |
                                       PERSISTE_DATA_MISSING_AS_UNKNOWN);
    wrong += report("same table, D dropped, C unknown", rc, PERSISTE_OK);
    if (!rc)
        printf("dropped genome: %s\n", persiste_data_dropped_taxon(data, 0));

    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
    return wrong != 0;
}
