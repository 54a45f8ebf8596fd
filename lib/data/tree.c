/* Trees: validation, renumbering (tips in input order, then internal nodes
 * in post-order), the tip-name index and the accessors.
 *
 * Everything is iterative and O(n): caterpillar trees of 100,000 tips are
 * 100,000 deep, far beyond any C stack.
 *
 * Semantics chosen here (see also persiste.h):
 *  - any tree with at least one node is accepted, so n_tips >= 1; a single
 *    node is a tip (it must be named) and is also the root;
 *  - unary internal nodes are allowed;
 *  - the root's length is kept when finite and stored as 0 otherwise
 *    (absent); it may be negative since it is never used. */
#include <math.h>
#include <string.h>

#include "internal.h"

/* Label of nodes that have none; shared, never freed. */
static char empty_label[1];

static void free_labels(char **labels, int32_t n)
{
    if (!labels)
        return;
    for (int32_t i = 0; i < n; i++)
        if (labels[i] != empty_label)
            persiste__free(labels[i]);
    persiste__free(labels);
}

void persiste_tree_destroy(persiste_tree *tree)
{
    if (!tree)
        return;
    free_labels(tree->label, tree->n_nodes);
    persiste__free(tree->parent);
    persiste__free(tree->length);
    persiste__free(tree->child_start);
    persiste__free(tree->children);
    persiste__free(tree->tip_index);
    persiste__free(tree);
}

uint64_t persiste__hash_bytes(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325u ^ seed; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3u;
    }
    /* FNV's low bits mix poorly and the index masks them: finish with the
     * murmur3 avalanche. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return h;
}

int32_t persiste__tree_find_tip(const persiste_tree *tree, const char *name,
                                size_t len)
{
    uint32_t mask = tree->tip_index_size - 1;
    uint32_t k = (uint32_t)persiste__hash_bytes(name, len, 0) & mask;
    for (;; k = (k + 1) & mask) {
        int32_t t = tree->tip_index[k];
        if (t < 0)
            return -1;
        const char *l = tree->label[t];
        if (strnlen(l, len + 1) == len && memcmp(l, name, len) == 0)
            return t;
    }
}

/* Fills the tip index (power-of-two size, at most half full); a second
 * occurrence of a name is an error. */
static int index_tips(persiste_tree *t, const char *what)
{
    uint64_t size = 2;
    while (size < 2 * (uint64_t)t->n_tips)
        size *= 2;
    if (size > UINT32_MAX)
        return persiste__error(PERSISTE_E_OVERFLOW, "%s: %d tips are too many",
                               what, t->n_tips);
    t->tip_index_size = (uint32_t)size;
    t->tip_index = persiste__malloc(size * sizeof *t->tip_index);
    if (!t->tip_index)
        return persiste__error(PERSISTE_E_NOMEM, "%s: tip index", what);
    memset(t->tip_index, 0xff, size * sizeof *t->tip_index); /* all -1 */
    uint32_t mask = t->tip_index_size - 1;
    uint64_t fp = (uint64_t)t->n_tips;
    for (int32_t i = 0; i < t->n_tips; i++) {
        const char *name = t->label[i];
        size_t len = strlen(name);
        uint32_t k = (uint32_t)persiste__hash_bytes(name, len, 0) & mask;
        for (; t->tip_index[k] >= 0; k = (k + 1) & mask)
            if (strcmp(t->label[t->tip_index[k]], name) == 0)
                return persiste__error(PERSISTE_E_NAMES,
                                       "%s: duplicate tip name '%.200s'",
                                       what, name);
        t->tip_index[k] = i;
        /* The NUL separates names: ("ab","c") and ("a","bc") differ. */
        fp = persiste__hash_bytes(name, len + 1, fp);
    }
    t->fingerprint = fp;
    t->serial = persiste__serial();
    return PERSISTE_OK;
}

/* Checks parent[] and length[]; finds the root and counts children. */
static int check_nodes(int32_t n, const int32_t *parent, const double *length,
                       char **labels, int32_t *n_children, int32_t *root,
                       const char *what)
{
    *root = -1;
    for (int32_t i = 0; i < n; i++) {
        int32_t p = parent[i];
        if (p == -1) {
            if (*root >= 0)
                return persiste__error(PERSISTE_E_INVALID,
                                       "%s: nodes %d and %d are both roots "
                                       "(parent -1)", what, *root, i);
            *root = i;
            continue;
        }
        if (p < 0 || p >= n)
            return persiste__error(PERSISTE_E_INVALID,
                                   "%s: node %d has parent %d, outside "
                                   "-1..%d", what, i, p, n - 1);
        n_children[p]++;
        if (!isfinite(length[i]) || length[i] < 0) {
            int named = labels[i] && labels[i][0];
            return persiste__error(PERSISTE_E_DOMAIN,
                                   "%s: node %d%s%.200s%s has branch length "
                                   "%g (must be finite and >= 0)", what, i,
                                   named ? " ('" : "", named ? labels[i] : "",
                                   named ? "')" : "", length[i]);
        }
    }
    if (*root < 0)
        return persiste__error(PERSISTE_E_INVALID,
                               "%s: no root (no node has parent -1): the "
                               "parents form a cycle", what);
    for (int32_t i = 0; i < n; i++)
        if (n_children[i] == 0 && (!labels[i] || !labels[i][0]))
            return persiste__error(PERSISTE_E_INVALID,
                                   "%s: tip node %d has no name", what, i);
    return PERSISTE_OK;
}

/* Scratch for the renumbering, one allocation. */
struct scratch {
    int32_t *start; /* [n+1] input CSR */
    int32_t *kids;  /* [n] */
    int32_t *next;  /* [n] DFS cursor into kids */
    int32_t *stack; /* [n] */
    int32_t *id;    /* [n] input index -> new number (internal: -1 until
                     * the walk reaches it) */
};

/* Numbers the tips by input index, the internal nodes in post-order of an
 * iterative depth-first walk from the root (children in input order). */
static int renumber(int32_t n, const int32_t *parent, int32_t root,
                    const struct scratch *s, int32_t *n_tips,
                    const char *what)
{
    int32_t tips = 0;
    for (int32_t i = 0; i < n; i++)
        s->id[i] = s->start[i] == s->start[i + 1] ? tips++ : -1;
    /* Input CSR, children ordered by input index. */
    memcpy(s->next, s->start, (size_t)n * sizeof *s->next);
    for (int32_t i = 0; i < n; i++)
        if (parent[i] >= 0)
            s->kids[s->next[parent[i]]++] = i;
    memcpy(s->next, s->start, (size_t)n * sizeof *s->next);

    int32_t internal = tips, sp = 0, reached = 1;
    s->stack[sp++] = root;
    while (sp > 0) {
        int32_t v = s->stack[sp - 1];
        if (s->next[v] < s->start[v + 1]) {
            s->stack[sp++] = s->kids[s->next[v]++];
            reached++;
        } else {
            sp--;
            if (s->start[v] < s->start[v + 1])
                s->id[v] = internal++;
        }
    }
    if (reached < n) {
        /* Every node has one parent, so unreached nodes lie on a cycle or
         * hang below one; an unreached tip's parent is an unreached internal
         * node, which is still unnumbered. */
        int32_t i = 0;
        while (s->id[i] >= 0)
            i++;
        return persiste__error(PERSISTE_E_INVALID,
                               "%s: node %d is not connected to the root "
                               "(its parents form a cycle)", what, i);
    }
    *n_tips = tips;
    return PERSISTE_OK;
}

static int alloc_scratch(struct scratch *s, int32_t n, const char *what)
{
    size_t count;
    if (persiste__mul_size((size_t)n, 5, &count) != PERSISTE_OK)
        return PERSISTE_E_OVERFLOW;
    int32_t *block = persiste__calloc(count + 1, sizeof *block);
    if (!block)
        return persiste__error(PERSISTE_E_NOMEM, "%s: %d nodes", what, n);
    s->start = block;
    s->kids = s->start + n + 1;
    s->next = s->kids + n;
    s->stack = s->next + n;
    s->id = s->stack + n;
    return PERSISTE_OK;
}

/* Moves the validated input into *t in the new numbering. */
static int fill_tree(persiste_tree *t, const int32_t *parent,
                     const double *length, char **labels,
                     const struct scratch *s)
{
    int32_t n = t->n_nodes;
    t->parent = persiste__calloc((size_t)n, sizeof *t->parent);
    t->length = persiste__calloc((size_t)n, sizeof *t->length);
    t->child_start = persiste__calloc((size_t)n + 1, sizeof *t->child_start);
    t->children = persiste__calloc((size_t)n, sizeof *t->children);
    t->label = persiste__calloc((size_t)n, sizeof *t->label);
    if (!t->parent || !t->length || !t->child_start || !t->children ||
        !t->label)
        return PERSISTE_E_NOMEM;
    for (int32_t i = 0; i < n; i++) {
        int32_t v = s->id[i];
        t->parent[v] = parent[i] >= 0 ? s->id[parent[i]] : -1;
        t->length[v] = length[i];
        t->label[v] = labels[i] ? labels[i] : empty_label;
        labels[i] = NULL;
        t->child_start[v + 1] = s->start[i + 1] - s->start[i];
    }
    if (!isfinite(t->length[n - 1]))
        t->length[n - 1] = 0; /* an absent root length */
    for (int32_t v = 0; v < n; v++)
        t->child_start[v + 1] += t->child_start[v];
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = s->start[i]; j < s->start[i + 1]; j++)
            t->children[t->child_start[s->id[i]] + (j - s->start[i])] =
                s->id[s->kids[j]];
    return PERSISTE_OK;
}

int persiste__tree_build(persiste_tree **out, int32_t n_nodes,
                         const int32_t *parent, const double *length,
                         char **labels, const char *what)
{
    if (n_nodes < 1) {
        persiste__free(labels);
        return persiste__error(PERSISTE_E_INVALID,
                               "%s: a tree needs at least one node, got %d",
                               what, n_nodes);
    }
    struct scratch s = {0};
    persiste_tree *t = NULL;
    int32_t root = -1, n_tips = 0;
    int rc = alloc_scratch(&s, n_nodes, what);
    if (rc != PERSISTE_OK)
        goto done;
    /* Count children straight into the CSR offsets, then prefix-sum. */
    rc = check_nodes(n_nodes, parent, length, labels, s.start + 1, &root,
                     what);
    if (rc != PERSISTE_OK)
        goto done;
    for (int32_t i = 0; i < n_nodes; i++)
        s.start[i + 1] += s.start[i];
    rc = renumber(n_nodes, parent, root, &s, &n_tips, what);
    if (rc != PERSISTE_OK)
        goto done;
    t = persiste__calloc(1, sizeof *t);
    if (!t) {
        rc = persiste__error(PERSISTE_E_NOMEM, "%s: tree", what);
        goto done;
    }
    t->n_nodes = n_nodes;
    t->n_tips = n_tips;
    rc = fill_tree(t, parent, length, labels, &s);
    if (rc != PERSISTE_OK) {
        rc = persiste__error(rc, "%s: %d nodes", what, n_nodes);
        goto done;
    }
    rc = index_tips(t, what);
done:
    persiste__free(s.start);
    free_labels(labels, n_nodes); /* entries moved into t are NULL here */
    if (rc != PERSISTE_OK) {
        persiste_tree_destroy(t);
        return rc;
    }
    *out = t;
    return PERSISTE_OK;
}

int persiste_tree_from_parents(persiste_tree **out, int32_t n_nodes,
                               const int32_t *parent,
                               const double *branch_length,
                               const char *const *names)
{
    if (!out || !parent || !branch_length || !names)
        return persiste__error(PERSISTE_E_INVALID,
                               "tree: %s is NULL",
                               !out ? "out" : !parent ? "parent"
                               : !branch_length ? "branch_length" : "names");
    if (n_nodes < 1)
        return persiste__error(PERSISTE_E_INVALID,
                               "tree: a tree needs at least one node, got %d",
                               n_nodes);
    /* Copied: the library never keeps caller pointers. */
    char **labels = persiste__calloc((size_t)n_nodes, sizeof *labels);
    if (!labels)
        return persiste__error(PERSISTE_E_NOMEM, "tree: %d labels", n_nodes);
    for (int32_t i = 0; i < n_nodes; i++) {
        if (names[i] && !(labels[i] = persiste__strndup(names[i],
                                                        strlen(names[i])))) {
            free_labels(labels, n_nodes);
            return persiste__error(PERSISTE_E_NOMEM, "tree: label of node %d",
                                   i);
        }
    }
    return persiste__tree_build(out, n_nodes, parent, branch_length, labels,
                                "tree");
}

int32_t persiste_tree_n_nodes(const persiste_tree *tree)
{
    return tree ? tree->n_nodes : 0;
}

int32_t persiste_tree_n_tips(const persiste_tree *tree)
{
    return tree ? tree->n_tips : 0;
}

const char *persiste_tree_label(const persiste_tree *tree, int32_t node)
{
    if (!tree || node < 0 || node >= tree->n_nodes)
        return NULL;
    return tree->label[node];
}

int persiste_tree_parents(const persiste_tree *tree, int32_t *out)
{
    if (!tree || !out)
        return persiste__error(PERSISTE_E_INVALID, "tree_parents: %s is NULL",
                               !tree ? "tree" : "out");
    memcpy(out, tree->parent, (size_t)tree->n_nodes * sizeof *out);
    return PERSISTE_OK;
}

int persiste_tree_branch_lengths(const persiste_tree *tree, double *out)
{
    if (!tree || !out)
        return persiste__error(PERSISTE_E_INVALID,
                               "tree_branch_lengths: %s is NULL",
                               !tree ? "tree" : "out");
    memcpy(out, tree->length, (size_t)tree->n_nodes * sizeof *out);
    return PERSISTE_OK;
}
