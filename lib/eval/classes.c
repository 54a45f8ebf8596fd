/* Site repeats (see struct persiste__classes in kernel.h): every internal
 * node's classes over each group of a data set's patterns, found once for
 * a (tree, data, threads) and kept in the ctx; lib/eval/kernel/classes.h
 * computes their partials. */
#include <stdint.h>
#include <string.h>

#include "kernel.h"

/* Classes pay where they are at most 1 / MIN_COMPRESSION of nodes x
 * patterns: a class, its ids and gathers, costs as much as about 16 lanes
 * of a node in a block (2.5 ns against 0.17 ns with AVX-512, measured). */
#define MIN_COMPRESSION 16
/* Nodes x patterns below which one thread does all (100 x 1,000 took
 * 11 us on 1 thread, 19 us on 2; 200 x 2,000: 32 us, 26 us). */
#define SHARED_WORK ((int64_t)1 << 18)
/* Memory they may hold: BUDGET_BITS times the data's bits, plus
 * BUDGET_FIXED (for data too small to matter). They took 1.15x the bits
 * at 1,324 x 25,420 and 0.44x at 5,000 x 50,000. */
#define BUDGET_BITS 2
#define BUDGET_FIXED ((size_t)1 << 20)

/* tests: 1 build at the first call whatever the compression or size (2:
 * the same with 32-bit ids), -1 never */
static int build_mode;

void persiste__classes_mode(int mode) { build_mode = mode; }

static void free_group(struct persiste__class_group *g)
{
    persiste__free(g->n_class);
    persiste__free(g->base);
    persiste__free(g->id_base);
    persiste__free(g->ids);
    persiste__free(g->x);
    persiste__free(g->cnt);
    persiste__free(g->scaled);
}

/* Back to no classes, the key kept. */
static void free_arrays(struct persiste__classes *c)
{
    for (int i = 0; c->group && i < c->threads; i++)
        free_group(&c->group[i]);
    persiste__free(c->group);
    persiste__free(c->root_ll);
    persiste__free(c->root_at);
    persiste__free(c->family);
    uint64_t ts = c->tree_serial, ds = c->data_serial;
    int threads = c->threads;
    memset(c, 0, sizeof *c);
    c->tree_serial = ts;
    c->data_serial = ds;
    c->threads = threads;
}

void persiste__classes_destroy(struct persiste__classes *c)
{
    if (!c)
        return;
    free_arrays(c);
    persiste__free(c);
}

/* ---- Finding the classes ------------------------------------------------ */
struct build {
    const persiste_tree *tr;
    const persiste_data *d;
    int64_t p0, np;   /* the group's patterns: p0 .. p0 + np */
    int32_t *slot;    /* [n_nodes] live nodes' rows of work */
    int32_t *work;    /* [rows][np] class of each pattern */
    int32_t *out;     /* [np] the node's, before its row is free */
    int64_t *rep;     /* [np] a pattern of each class */
    uint64_t *key;    /* [np] binary nodes: each class's children's */
    int32_t *table;   /* hash or direct table */
    size_t cap_table;
    int64_t (*hole)[2]; /* [n_nodes] free ranges of the partials, by start */
    int64_t n_holes;
    size_t cap_ids, n_ids;
    size_t bytes, budget; /* of the groups so far (ids, partials and
                           * per-node arrays), and their limit */
    int64_t found, limit; /* classes */
};

/* Class of the group's pattern p in child c: a tip's state, or the node's
 * class. */
static inline int32_t child_class(const struct build *b, int32_t c, int64_t p)
{
    int32_t nt = b->tr->n_tips;
    if (c >= nt)
        return b->work[(size_t)b->slot[c] * (size_t)b->np + (size_t)p];
    p += b->p0;
    size_t i = (size_t)(p / 64) * (size_t)nt + (size_t)c;
    int sh = (int)(p % 64);
    int32_t s = (int32_t)(b->d->pattern_present[i] >> sh & 1);
    if (b->d->any_unknown) /* an unknown cell's present bit is 0 */
        s |= (int32_t)(b->d->pattern_unknown[i] >> sh & 1) << 1;
    return s;
}

static int64_t classes_of(const struct build *b, const int64_t *n_class,
                          int32_t c)
{
    return c < b->tr->n_tips ? 3 : n_class[c];
}

/* A table of n entries of -1. */
static int table_clear(struct build *b, size_t n)
{
    if (n > b->cap_table) {
        int rc = persiste__grow(&b->table, n, sizeof *b->table);
        if (rc)
            return rc;
        b->cap_table = n;
    }
    memset(b->table, 0xff, n * sizeof *b->table);
    return PERSISTE_OK;
}

/* v's class of every pattern into b->out, a pattern of each in b->rep;
 * returns their number or a negative status. A binary node whose
 * children's classes make few pairs indexes a table by the pair; others
 * hash the children's classes. */
static int64_t node_classes(struct build *b, const int64_t *n_class,
                            int32_t v)
{
    const persiste_tree *tr = b->tr;
    int32_t k0 = tr->child_start[v], k1 = tr->child_start[v + 1];
    int64_t np = b->np, n = 0;
    int rc;
    if (k1 - k0 == 2) {
        int32_t ca = tr->children[k0], cb = tr->children[k0 + 1];
        int64_t na = classes_of(b, n_class, ca);
        int64_t nb = classes_of(b, n_class, cb);
        if (na * nb <= 4 * np + 64) { /* both < 2^31: their product fits */
            if ((rc = table_clear(b, (size_t)(na * nb))))
                return rc;
            for (int64_t p = 0; p < np; p++) {
                int32_t *e = &b->table[child_class(b, ca, p) * nb +
                                       child_class(b, cb, p)];
                if (*e < 0) {
                    b->rep[n] = p;
                    *e = (int32_t)n++;
                }
                b->out[p] = *e;
            }
            return n;
        }
    }
    /* hash: at least twice as many entries as the classes can be */
    int64_t bound = 1;
    for (int32_t k = k0; k < k1 && bound < np; k++) {
        int64_t m = classes_of(b, n_class, tr->children[k]);
        bound = bound > np / m ? np : bound * m;
    }
    size_t cap = 16;
    while (cap < 2 * (size_t)(bound < np ? bound : np))
        cap *= 2;
    if ((rc = table_clear(b, cap)))
        return rc;
    int binary = k1 - k0 == 2;
    for (int64_t p = 0; p < np; p++) {
        uint64_t h = 0, key = 0;
        if (binary) {
            key = (uint64_t)child_class(b, tr->children[k0], p) << 32 |
                  (uint64_t)child_class(b, tr->children[k0 + 1], p);
            h = persiste__mix64(key);
        } else {
            for (int32_t k = k0; k < k1; k++)
                h = persiste__mix64(
                    h ^ (uint64_t)child_class(b, tr->children[k], p));
        }
        size_t i = h & (cap - 1);
        for (; b->table[i] >= 0; i = (i + 1) & (cap - 1)) {
            int32_t q = b->table[i];
            if (binary) {
                if (b->key[q] == key)
                    break;
                continue;
            }
            int32_t k = k0;
            while (k < k1 && child_class(b, tr->children[k], b->rep[q]) ==
                                 child_class(b, tr->children[k], p))
                k++;
            if (k == k1)
                break;
        }
        if (b->table[i] < 0) {
            b->rep[n] = p;
            if (binary)
                b->key[n] = key;
            b->table[i] = (int32_t)n++;
        }
        b->out[p] = b->table[i];
    }
    return n;
}

/* Where the partials of a node of `size` classes go: a node's partials
 * live from its computation until its parent's, so they take the tightest
 * free range (best fit), else the top. Planned once: the evaluation just
 * reads base[]. Returns the start; *top is the partials' extent. */
static int64_t place(struct build *b, int64_t size, int64_t *top)
{
    int64_t best = -1;
    for (int64_t i = 0; i < b->n_holes; i++)
        if (b->hole[i][1] >= size &&
            (best < 0 || b->hole[i][1] < b->hole[best][1]))
            best = i;
    if (best < 0) { /* the top, taking a free range that ends there */
        int64_t at = *top;
        if (b->n_holes && b->hole[b->n_holes - 1][0] +
                                  b->hole[b->n_holes - 1][1] == *top)
            at = b->hole[--b->n_holes][0];
        *top = at + size;
        return at;
    }
    int64_t at = b->hole[best][0];
    b->hole[best][0] += size;
    b->hole[best][1] -= size;
    if (b->hole[best][1] == 0) {
        memmove(b->hole[best], b->hole[best + 1],
                (size_t)(b->n_holes - best - 1) * sizeof *b->hole);
        b->n_holes--;
    }
    return at;
}

/* Frees [at, at + size), merged with the free ranges next to it. */
static void release(struct build *b, int64_t at, int64_t size)
{
    int64_t i = 0;
    while (i < b->n_holes && b->hole[i][0] < at)
        i++;
    memmove(b->hole[i + 1], b->hole[i],
            (size_t)(b->n_holes - i) * sizeof *b->hole);
    b->hole[i][0] = at;
    b->hole[i][1] = size;
    b->n_holes++;
    if (i + 1 < b->n_holes && at + size == b->hole[i + 1][0]) { /* after */
        b->hole[i][1] += b->hole[i + 1][1];
        memmove(b->hole[i + 1], b->hole[i + 2],
                (size_t)(b->n_holes - i - 2) * sizeof *b->hole);
        b->n_holes--;
    }
    if (i > 0 && b->hole[i - 1][0] + b->hole[i - 1][1] == at) { /* before */
        b->hole[i - 1][1] += b->hole[i][1];
        memmove(b->hole[i], b->hole[i + 1],
                (size_t)(b->n_holes - i - 1) * sizeof *b->hole);
        b->n_holes--;
    }
}

/* Group g's classes of every node, their children's classes (ids) and the
 * root's class of each pattern; 0 if the classes so far exceed the limits
 * (declined). */
static int find_classes(struct persiste__class_group *g, struct build *b)
{
    const persiste_tree *tr = b->tr;
    int32_t nt = tr->n_tips, n = tr->n_nodes;
    int64_t np = b->np;
    size_t cells;
    int rc;
    if ((rc = persiste__mul_size((size_t)persiste__assign_slots(tr, 0,
                                                                b->slot),
                                 (size_t)np, &cells)) ||
        (rc = persiste__grow(&b->work, cells, sizeof *b->work)))
        return rc;
    b->n_ids = b->cap_ids = 0;
    b->n_holes = 0;
    g->ids16 = np <= 65536 && build_mode != 2; /* a node has <= np classes */
    size_t id_bytes = g->ids16 ? sizeof(uint16_t) : sizeof(int32_t);
    g->total = 0;
    size_t bytes0 = b->bytes; /* of the groups before */
    for (int32_t v = nt; v < n; v++) {
        int64_t m = node_classes(b, g->n_class, v);
        if (m < 0)
            return (int)m;
        int32_t k0 = tr->child_start[v], k1 = tr->child_start[v + 1];
        int64_t pad = persiste__class_padded(m);
        size_t need = b->n_ids + (size_t)(k1 - k0) * (size_t)pad;
        g->base[v] = place(b, pad, &g->total);
        for (int32_t k = k0; k < k1; k++) /* read for the last time */
            if (tr->children[k] >= nt)
                release(b, g->base[tr->children[k]],
                        persiste__class_padded(g->n_class[tr->children[k]]));
        b->found += m;
        b->bytes = bytes0 + need * id_bytes +
                   (size_t)g->total * (2 * sizeof(double) + sizeof(int32_t));
        if (b->found > b->limit || b->bytes > b->budget)
            return 0;
        if (need > b->cap_ids) {
            size_t cap = 2 * b->cap_ids > need ? 2 * b->cap_ids : need;
            if ((rc = persiste__grow(&g->ids, cap, id_bytes)))
                return rc;
            b->cap_ids = cap;
        }
        g->n_class[v] = m;
        g->id_base[v] = (int64_t)b->n_ids;
        for (int32_t k = k0; k < k1; k++) { /* padding: class 0, valid */
            for (int64_t q = 0; q < pad; q++) {
                int32_t id = q < m ? child_class(b, tr->children[k], b->rep[q])
                                   : 0;
                if (g->ids16)
                    ((uint16_t *)g->ids)[b->n_ids + (size_t)q] = (uint16_t)id;
                else
                    ((int32_t *)g->ids)[b->n_ids + (size_t)q] = id;
            }
            b->n_ids += (size_t)pad;
        }
        memcpy(b->work + (size_t)b->slot[v] * (size_t)np, b->out,
               (size_t)np * sizeof *b->out);
    }
    return 1;
}

/* Group g of patterns p0 .. p1, its root classes from entry *at of the
 * classes' root_ll on (each pattern's in root_at): 1 found, 0 declined,
 * or a status. */
static int build_group(struct persiste__classes *c,
                       struct persiste__class_group *g, struct build *b,
                       int64_t p0, int64_t p1, int64_t *at)
{
    int32_t n = b->tr->n_nodes;
    int64_t np = p1 - p0;
    int rc;
    g->p0 = p0;
    g->p1 = p1;
    b->p0 = p0;
    b->np = np;
    if ((rc = persiste__grow(&g->n_class, (size_t)n, sizeof *g->n_class)) ||
        (rc = persiste__grow(&g->base, (size_t)n, sizeof *g->base)) ||
        (rc = persiste__grow(&g->id_base, (size_t)n, sizeof *g->id_base)))
        return rc;
    memset(g->n_class, 0, (size_t)n * sizeof *g->n_class);
    if ((rc = find_classes(g, b)) != 1)
        return rc;
    for (int64_t p = 0; p < np; p++) /* b->out: the root's classes */
        c->root_at[p0 + p] = (int32_t)(*at + b->out[p]);
    *at += persiste__class_padded(g->n_class[n - 1]);
    g->scaled = persiste__calloc((size_t)n, 1);
    g->x = persiste__malloc_aligned((size_t)g->total * 2 * sizeof(double));
    g->cnt = persiste__malloc_aligned((size_t)g->total * sizeof(int32_t));
    if (!g->scaled || !g->x || !g->cnt)
        return persiste__error(PERSISTE_E_NOMEM, "site repeats: out of memory");
    b->bytes += (size_t)n * (3 * sizeof(int64_t) + 1);
    return 1;
}

/* Pattern p's group, the one whose range holds it: groups are cut at
 * np * i / threads, so (p + 1) * threads / np is it or after it. */
static int group_of(const struct persiste__classes *c, int64_t p)
{
    int i = (int)((p + 1) * c->threads / c->n_patterns);
    i = i < c->threads ? i : c->threads - 1;
    while (p < c->group[i].p0)
        i--;
    return i;
}

/* The families in the order of their patterns' groups, and each group's
 * range of them: 1, or a negative status. */
static int group_families(struct persiste__classes *c, const persiste_data *d)
{
    int64_t nf = d->n_families;
    c->family = persiste__malloc((size_t)nf * sizeof *c->family);
    if (!c->family)
        return persiste__error(PERSISTE_E_NOMEM, "site repeats: out of memory");
    for (int i = 0; i < c->threads; i++) /* counts */
        c->group[i].f0 = c->group[i].f1 = 0;
    int64_t at = 0;
    for (int64_t f = 0; f < nf; f++)
        c->group[group_of(c, d->pattern[f])].f1++;
    for (int i = 0; i < c->threads; i++) {
        int64_t n = c->group[i].f1;
        c->group[i].f0 = c->group[i].f1 = at;
        at += n;
    }
    for (int64_t f = 0; f < nf; f++)
        c->family[c->group[group_of(c, d->pattern[f])].f1++] = f;
    return 1;
}

/* Every group's classes, the patterns cut into c->threads groups: 1
 * found, 0 declined (over the limits), or a negative status. */
static int build(struct persiste__classes *c, const persiste_tree *tr,
                 const persiste_data *d)
{
    int32_t n = tr->n_nodes;
    int64_t np = d->n_patterns;
    struct build b = {.tr = tr, .d = d};
    size_t bits = (size_t)d->n_words * (size_t)d->n_tips * sizeof(uint64_t) *
                  (d->any_unknown ? 2 : 1);
    b.budget = build_mode >= 1 ? SIZE_MAX : BUDGET_FIXED + BUDGET_BITS * bits;
    b.limit = build_mode >= 1
                  ? INT64_MAX
                  : (int64_t)(n - tr->n_tips) * np / MIN_COMPRESSION;
    c->n_nodes = n;
    c->n_patterns = np;
    int rc = PERSISTE_OK;
    c->group = persiste__calloc((size_t)c->threads, sizeof *c->group);
    c->root_at = persiste__malloc((size_t)np * sizeof *c->root_at);
    if (!c->group || !c->root_at ||
        (rc = persiste__grow(&b.slot, (size_t)n, sizeof *b.slot)) ||
        (rc = persiste__grow(&b.hole, (size_t)n + 1, sizeof *b.hole)) ||
        (rc = persiste__grow(&b.out, (size_t)np, sizeof *b.out)) ||
        (rc = persiste__grow(&b.rep, (size_t)np, sizeof *b.rep)) ||
        (rc = persiste__grow(&b.key, (size_t)np, sizeof *b.key))) {
        rc = rc ? rc
                : persiste__error(PERSISTE_E_NOMEM,
                                  "site repeats: out of memory");
        goto done;
    }
    rc = 1;
    int64_t at = 0; /* root classes so far */
    for (int i = 0; i < c->threads && rc == 1; i++)
        rc = build_group(c, &c->group[i], &b, np * i / c->threads,
                         np * (i + 1) / c->threads, &at);
    if (rc == 1 && !(c->root_ll = persiste__malloc((size_t)at *
                                                   sizeof *c->root_ll)))
        rc = persiste__error(PERSISTE_E_NOMEM, "site repeats: out of memory");
    for (int64_t i = 0, first = 0; rc == 1 && i < c->threads; i++) {
        c->group[i].root_ll = c->root_ll + first;
        first += persiste__class_padded(c->group[i].n_class[n - 1]);
    }
    if (rc == 1)
        rc = group_families(c, d);
    c->found = b.found;
done:
    persiste__free(b.slot);
    persiste__free(b.hole);
    persiste__free(b.work);
    persiste__free(b.out);
    persiste__free(b.rep);
    persiste__free(b.key);
    persiste__free(b.table);
    return rc;
}

/* Whether n_pairs passes over the classes cost less than the blocks: the
 * blocks' cost does not grow with the pairs (each prunes its own rows). */
static int pays(const struct persiste__classes *c, const persiste_tree *tr,
                int n_pairs)
{
    return build_mode >= 1 ||
           c->found * n_pairs <=
               (int64_t)(tr->n_nodes - tr->n_tips) * c->n_patterns /
                   MIN_COMPRESSION;
}

int persiste__classes_prepare(struct persiste__classes **cp,
                              const struct persiste__job *job, int n_pairs,
                              int threads)
{
    const persiste_tree *tr = job->tree;
    const persiste_data *d = job->data;
    if (job->gradient || n_pairs < 1 || n_pairs > PERSISTE_CLASSES_PAIRS ||
        build_mode < 0 || tr->n_tips < 2 ||
        job->n_families == 0 || d->n_patterns > INT32_MAX) /* int32 ids */
        return 0;
    if (!*cp && !(*cp = persiste__calloc(1, sizeof **cp)))
        return persiste__error(PERSISTE_E_NOMEM, "site repeats: out of memory");
    struct persiste__classes *c = *cp;
    /* a group per thread, at least a pattern each, and one group for work
     * too small to share (the threads' start would cost more) */
    if (threads > d->n_patterns)
        threads = (int)d->n_patterns;
    if ((int64_t)(tr->n_nodes - tr->n_tips) * d->n_patterns < SHARED_WORK &&
        build_mode == 0)
        threads = 1;
    if (c->tree_serial != tr->serial || c->data_serial != d->serial ||
        c->threads != threads) {
        free_arrays(c);
        c->tree_serial = tr->serial;
        c->data_serial = d->serial;
        c->threads = threads;
    }
    if (c->state != PERSISTE_CLASSES_UNBUILT)
        return c->state == PERSISTE_CLASSES_BUILT && pays(c, tr, n_pairs);
    /* Finding a node's class of a pattern (a hash) costs about 15 times
     * pruning a family at the node (2.2-2.8 ns against 0.17 ns with
     * AVX-512): after PERSISTE_CLASSES_CALLS calls in blocks the classes
     * cost no more than the blocks so far did, so the whole is at most
     * twice what the best choice in hindsight would cost (ski rental). A
     * fit's few lnL calls (its start) pay nothing. */
    if (++c->calls < PERSISTE_CLASSES_CALLS && build_mode == 0)
        return 0;
    int rc = build(c, tr, d);
    if (rc < 0 || rc == 0) {
        int calls = c->calls;
        free_arrays(c);
        c->calls = calls;
        c->state = rc == 0 ? PERSISTE_CLASSES_DECLINED
                            : PERSISTE_CLASSES_UNBUILT;
        return rc;
    }
    c->state = PERSISTE_CLASSES_BUILT;
    return pays(c, tr, n_pairs);
}
