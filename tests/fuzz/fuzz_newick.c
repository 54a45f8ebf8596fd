/* libFuzzer target: the Newick reader.
 *
 * Any input must give a tree or a clean error. A tree must have the
 * documented structure, and writing it back as Newick (labels quoted,
 * lengths with 17 digits) and reading that again must give the same tree:
 * same numbering, labels and lengths to the bit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

typedef struct {
    char *s;
    size_t n, cap;
} buffer;

static void put(buffer *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1);
        b->s = realloc(b->s, b->cap);
        FUZZ_CHECK(b->s != NULL, "test out of memory");
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

/* Label quoted ('' stands for a quote), then ":length". */
static void put_node(buffer *b, const persiste_tree *t, int32_t v,
                     double length)
{
    const char *label = persiste_tree_label(t, v);
    if (label[0]) {
        put(b, "'", 1);
        for (const char *p = label; *p; p++)
            put(b, *p == '\'' ? "''" : p, *p == '\'' ? 2 : 1);
        put(b, "'", 1);
    }
    char num[40];
    put(b, num, (size_t)snprintf(num, sizeof num, ":%.17g", length));
}

/* Newick of t. Siblings in text order are in order of their leftmost tips
 * (tips are numbered left to right). Iterative: trees may be deep. */
static char *write_newick(const persiste_tree *t)
{
    int32_t n = persiste_tree_n_nodes(t), n_tips = persiste_tree_n_tips(t);
    int32_t *parent = malloc((size_t)n * sizeof *parent);
    int32_t *leftmost = malloc((size_t)n * sizeof *leftmost);
    int32_t *first = calloc((size_t)n + 1, sizeof *first);
    int32_t *cursor = malloc((size_t)n * sizeof *cursor);
    int32_t *kids = malloc((size_t)n * sizeof *kids);
    int32_t *order = malloc((size_t)n * sizeof *order);
    int32_t *bucket = calloc((size_t)n_tips + 1, sizeof *bucket);
    double *length = malloc((size_t)n * sizeof *length);
    FUZZ_CHECK(parent && leftmost && first && cursor && kids && order &&
                   bucket && length,
               "test out of memory");
    persiste_tree_parents(t, parent);
    persiste_tree_branch_lengths(t, length);
    for (int32_t v = 0; v < n; v++)
        leftmost[v] = v < n_tips ? v : n_tips;
    for (int32_t v = 0; v < n - 1; v++) { /* children precede parents */
        if (leftmost[v] < leftmost[parent[v]])
            leftmost[parent[v]] = leftmost[v];
        first[parent[v] + 1]++;
        bucket[leftmost[v] + 1]++;
    }
    for (int32_t v = 0; v < n; v++)
        first[v + 1] += first[v];
    for (int32_t k = 0; k < n_tips; k++)
        bucket[k + 1] += bucket[k];
    for (int32_t v = 0; v < n - 1; v++)
        order[bucket[leftmost[v]]++] = v;
    memcpy(cursor, first, (size_t)n * sizeof *cursor);
    for (int32_t i = 0; i < n - 1; i++)
        kids[cursor[parent[order[i]]]++] = order[i];
    memcpy(cursor, first, (size_t)n * sizeof *cursor);

    buffer b = {0};
    int32_t *stack = order, sp = 0; /* order is no longer needed */
    stack[sp++] = n - 1;
    while (sp > 0) {
        int32_t v = stack[sp - 1];
        int internal = first[v] < first[v + 1];
        if (internal && cursor[v] < first[v + 1]) {
            put(&b, cursor[v] == first[v] ? "(" : ",", 1);
            stack[sp++] = kids[cursor[v]++];
            continue;
        }
        sp--;
        if (internal)
            put(&b, ")", 1);
        put_node(&b, t, v, length[v]);
    }
    put(&b, ";", 1);
    free(parent);
    free(leftmost);
    free(first);
    free(cursor);
    free(kids);
    free(order);
    free(bucket);
    free(length);
    return b.s;
}

static void check_same(const persiste_tree *a, const persiste_tree *b)
{
    int32_t n = persiste_tree_n_nodes(a);
    FUZZ_CHECK(persiste_tree_n_nodes(b) == n &&
                   persiste_tree_n_tips(b) == persiste_tree_n_tips(a),
               "sizes differ after writing back");
    int32_t *pa = malloc((size_t)n * sizeof *pa);
    int32_t *pb = malloc((size_t)n * sizeof *pb);
    double *la = malloc((size_t)n * sizeof *la);
    double *lb = malloc((size_t)n * sizeof *lb);
    FUZZ_CHECK(pa && pb && la && lb, "test out of memory");
    persiste_tree_parents(a, pa);
    persiste_tree_parents(b, pb);
    persiste_tree_branch_lengths(a, la);
    persiste_tree_branch_lengths(b, lb);
    for (int32_t v = 0; v < n; v++) {
        FUZZ_CHECK(pa[v] == pb[v], "node %d: parent %d, then %d", v, pa[v],
                   pb[v]);
        FUZZ_CHECK(memcmp(&la[v], &lb[v], sizeof la[v]) == 0,
                   "node %d: length %.17g, then %.17g", v, la[v], lb[v]);
        FUZZ_CHECK(strcmp(persiste_tree_label(a, v),
                          persiste_tree_label(b, v)) == 0,
                   "node %d: label '%s', then '%s'", v,
                   persiste_tree_label(a, v), persiste_tree_label(b, v));
    }
    free(pa);
    free(pb);
    free(la);
    free(lb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL, "test out of memory");
    memcpy(text, data, size);
    text[size] = '\0';
    persiste_tree *sentinel = (persiste_tree *)&text, *tree = sentinel;
    int rc = persiste_tree_from_newick(&tree, text);
    free(text);
    if (rc != PERSISTE_OK) {
        fuzz_check_failure(rc, tree, sentinel);
        return 0;
    }
    fuzz_check_tree(tree);
    char *again = write_newick(tree);
    persiste_tree *copy = NULL;
    rc = persiste_tree_from_newick(&copy, again);
    FUZZ_CHECK(rc == PERSISTE_OK, "written back: %.200s", again);
    check_same(tree, copy);
    free(again);
    persiste_tree_destroy(copy);
    persiste_tree_destroy(tree);
    return 0;
}
