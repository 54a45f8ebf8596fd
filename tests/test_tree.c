/* Trees: the Newick reader and persiste_tree_from_parents.
 *
 * Expected structures are known by construction: written by hand in the
 * documented numbering (tips left to right, then internal nodes in
 * post-order, root last), generated independently of the library (random
 * trees, caterpillars, balanced trees), or facts about the bundled real
 * trees (tip counts, ultrametric dating). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"

#define assert_close(a, b, tol)                                            \
    do {                                                                   \
        double a_ = (a), b_ = (b);                                         \
        if (!(fabs(a_ - b_) <= (tol))) {                                   \
            print_error("%.17g != %.17g (tol %g)\n", a_, b_, (double)(tol)); \
            fail();                                                        \
        }                                                                  \
    } while (0)

static persiste_tree *parse_ok(const char *text)
{
    persiste_tree *t = NULL;
    int rc = persiste_tree_from_newick(&t, text);
    if (rc != PERSISTE_OK)
        print_error("%s\n", persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    assert_non_null(t);
    return t;
}

static char *data_path(const char *rel)
{
    const char *dir = getenv("PERSISTE_DATA_DIR");
    assert_non_null(dir);
    char *p = malloc(strlen(dir) + strlen(rel) + 2);
    assert_non_null(p);
    sprintf(p, "%s/%s", dir, rel);
    return p;
}

static persiste_tree *read_ok(const char *rel)
{
    char *path = data_path(rel);
    persiste_tree *t = NULL;
    int rc = persiste_tree_from_newick_file(&t, path);
    if (rc != PERSISTE_OK)
        print_error("%s\n", persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    free(path);
    return t;
}

/* The documented numbering, checked from the public accessors and against
 * the private child lists: every child precedes its parent, the root is
 * last, tips (no children) come first. */
static void check_numbering(const persiste_tree *t)
{
    int32_t n = persiste_tree_n_nodes(t), nt = persiste_tree_n_tips(t);
    assert_true(n >= 1 && nt >= 1 && nt <= n);
    int32_t *par = malloc((size_t)n * sizeof *par);
    int32_t *nkids = calloc((size_t)n, sizeof *nkids);
    assert_true(par && nkids);
    assert_int_equal(persiste_tree_parents(t, par), PERSISTE_OK);
    assert_int_equal(par[n - 1], -1);
    for (int32_t i = 0; i < n - 1; i++) {
        assert_true(par[i] > i && par[i] < n);
        nkids[par[i]]++;
    }
    for (int32_t i = 0; i < n; i++) {
        assert_int_equal(nkids[i] == 0, i < nt);
        assert_int_equal(t->child_start[i + 1] - t->child_start[i], nkids[i]);
        for (int32_t j = t->child_start[i]; j < t->child_start[i + 1]; j++)
            assert_int_equal(par[t->children[j]], i);
        assert_non_null(persiste_tree_label(t, i));
    }
    assert_int_equal(t->child_start[n], n - 1);
    free(par);
    free(nkids);
}

/* ---- Real-world Newick variants, expected structure written by hand ---- */

#define MAXV 8
struct variant {
    const char *name, *text;
    int32_t n_tips, n_nodes;
    const char *label[MAXV];
    int32_t parent[MAXV];
    double length[MAXV];
};

static const struct variant variants[] = {
    {"simple", "((A:1,B:2)X:3,C:4)R;", 3, 5, {"A", "B", "C", "X", "R"},
     {3, 3, 4, 4, -1}, {1, 2, 4, 3, 0}},
    {"quoted labels", "('it''s':1,'a b':2,'x,y:(z)':3,'[no comment]':0.5)"
     "'root node';", 4, 5,
     {"it's", "a b", "x,y:(z)", "[no comment]", "root node"},
     {4, 4, 4, 4, -1}, {1, 2, 3, 0.5, 0}},
    {"IQ-TREE supports", "(A:0.1,B:0.2,(C:0.3,D:0.4)100/98:0.5);\n", 4, 6,
     {"A", "B", "C", "D", "100/98", ""}, {5, 5, 4, 4, 5, -1},
     {0.1, 0.2, 0.3, 0.4, 0.5, 0}},
    {"RAxML-NG exponents and NHX", "[&R] ((A:1e-06,B:1.5E+03)0.95:2.5e+0"
     "[&&NHX:S=x],C:7E-1):0.25;", 3, 5, {"A", "B", "C", "0.95", ""},
     {3, 3, 4, 4, -1}, {1e-6, 1500, 0.7, 2.5, 0.25}},
    {"FastTree over lines", "(\n  A : 1 ,\r\n\tB:2 ,\n  ( C:3,D:4 ) 0.950 :"
     " 5\n) ;\n\n", 4, 6, {"A", "B", "C", "D", "0.950", ""},
     {5, 5, 4, 4, 5, -1}, {1, 2, 3, 4, 5, 0}},
    {"pipeline names", "(sp_1#2:1,gene|x/y-z.1:2,'quoted_under':3,"
     "\xc3\x91" "and" "\xc3\xba:4);", 4, 5,
     {"sp_1#2", "gene|x/y-z.1", "quoted_under", "\xc3\x91" "and" "\xc3\xba",
      ""}, {4, 4, 4, 4, -1}, {1, 2, 3, 4, 0}},
    {"zero lengths, multifurcation", "(A:0,B:0,C:0,D:0,E:0)root:0;", 5, 6,
     {"A", "B", "C", "D", "E", "root"}, {5, 5, 5, 5, 5, -1},
     {0, 0, 0, 0, 0, 0}},
    {"unary node", "((A:1)u:2,B:3);", 2, 4, {"A", "B", "u", ""},
     {2, 3, 3, -1}, {1, 3, 2, 0}},
    {"comments everywhere", "[c0](A[&rate=1]:[x]1[y],[z]B:2)[&&NHX:x=1]R[q]"
     ";[end]\n", 2, 3, {"A", "B", "R"}, {2, 2, -1}, {1, 2, 0}},
    {"single tip", "A;", 1, 1, {"A"}, {-1}, {0}},
    {"single tip with length", " A:0.5 ;", 1, 1, {"A"}, {-1}, {0.5}},
    {"root with one child", "(A:1)r:2;", 1, 2, {"A", "r"}, {1, -1}, {1, 2}},
    {"negative root length kept", "(A:1,B:1):-3;", 2, 3, {"A", "B", ""},
     {2, 2, -1}, {1, 1, -3}},
    {"BOM and CRLF", "\xEF\xBB\xBF(A:1,\r\nB:2);\r\n", 2, 3, {"A", "B", ""},
     {2, 2, -1}, {1, 2, 0}},
    {"nested left", "(((A:1,B:2):3,C:4):5,D:6);", 4, 7,
     {"A", "B", "C", "D", "", "", ""}, {4, 4, 5, 6, 5, 6, -1},
     {1, 2, 4, 6, 3, 5, 0}},
    {"nested right", "(A:1,(B:2,(C:3,D:4):5):6);", 4, 7,
     {"A", "B", "C", "D", "", "", ""}, {6, 5, 4, 4, 5, 6, -1},
     {1, 2, 3, 4, 5, 6, 0}},
    {"old RAxML bracket support", "((A:1,B:1):1[100],C:1);", 3, 5,
     {"A", "B", "C", "", ""}, {3, 3, 4, 4, -1}, {1, 1, 1, 1, 0}},
    {"quoted internal label", "((A:1,B:1)'my node':1,C:1)'r''s';", 3, 5,
     {"A", "B", "C", "my node", "r's"}, {3, 3, 4, 4, -1}, {1, 1, 1, 1, 0}},
    {"trailing blanks", "(A:1,B:1);   \n\t\n", 2, 3, {"A", "B", ""},
     {2, 2, -1}, {1, 1, 0}},
};

static void test_variants(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof variants / sizeof *variants; k++) {
        const struct variant *v = &variants[k];
        print_message("variant: %s\n", v->name);
        persiste_tree *t = parse_ok(v->text);
        assert_int_equal(persiste_tree_n_tips(t), v->n_tips);
        assert_int_equal(persiste_tree_n_nodes(t), v->n_nodes);
        int32_t par[MAXV];
        double len[MAXV];
        assert_int_equal(persiste_tree_parents(t, par), PERSISTE_OK);
        assert_int_equal(persiste_tree_branch_lengths(t, len), PERSISTE_OK);
        for (int32_t i = 0; i < v->n_nodes; i++) {
            assert_string_equal(persiste_tree_label(t, i), v->label[i]);
            assert_int_equal(par[i], v->parent[i]);
            assert_close(len[i], v->length[i], 0);
        }
        check_numbering(t);
        persiste_tree_destroy(t);
    }
}

/* Children keep their text order, which is not index order here. */
static void test_child_order(void **state)
{
    (void)state;
    persiste_tree *t = parse_ok("(((A:1,B:2):3,C:4):5,D:6);");
    assert_int_equal(t->child_start[6 + 1] - t->child_start[6], 2);
    assert_int_equal(t->children[t->child_start[6]], 5);
    assert_int_equal(t->children[t->child_start[6] + 1], 3);
    persiste_tree_destroy(t);
    t = parse_ok("(C:1,(A:1,B:1):1,D:1);");
    assert_int_equal(t->child_start[5 + 1] - t->child_start[5], 3);
    assert_int_equal(t->children[t->child_start[5]], 0);
    assert_int_equal(t->children[t->child_start[5] + 1], 4);
    assert_int_equal(t->children[t->child_start[5] + 2], 3);
    persiste_tree_destroy(t);
}

/* ---- Bundled real trees ------------------------------------------------ */

/* Harris et al. 2022: 30 plants, dated (every tip at time 1), internal
 * nodes labelled 1..29, the root (29) without a length. */
static void test_harris_tree(void **state)
{
    (void)state;
    persiste_tree *t = read_ok("harris2022-plants30/harris2022_dated_tree.nwk");
    assert_int_equal(persiste_tree_n_tips(t), 30);
    assert_int_equal(persiste_tree_n_nodes(t), 59);
    check_numbering(t);
    assert_string_equal(persiste_tree_label(t, 0), "Arabidopsis");
    assert_string_equal(persiste_tree_label(t, 29), "Chlorokybus");
    assert_string_equal(persiste_tree_label(t, 58), "29");
    int32_t par[59];
    double len[59];
    assert_int_equal(persiste_tree_parents(t, par), PERSISTE_OK);
    assert_int_equal(persiste_tree_branch_lengths(t, len), PERSISTE_OK);
    assert_int_equal(par[29], 58);
    assert_close(len[29], 1.0, 0);
    assert_close(len[58], 0.0, 0);
    int seen[30] = {0};
    for (int32_t i = 30; i < 59; i++) {
        int k = atoi(persiste_tree_label(t, i));
        assert_true(k >= 1 && k <= 29);
        assert_int_equal(seen[k]++, 0);
    }
    for (int32_t i = 0; i < 30; i++) {
        double d = 0;
        for (int32_t v = i; par[v] >= 0; v = par[v])
            d += len[v];
        assert_close(d, 1.0, 2e-5); /* lengths are printed to 5 decimals */
    }
    persiste_tree_destroy(t);
}

/* Tip names in text order, by a scan valid for trees whose tip names are
 * unquoted and directly follow '(' or ','. */
static char **scan_tip_names(const char *text, int *n)
{
    char **names = NULL;
    *n = 0;
    for (const char *p = text; *p; p++) {
        if ((*p != '(' && *p != ',') || p[1] == '(')
            continue;
        size_t len = strcspn(p + 1, ":,)");
        names = realloc(names, (size_t)(*n + 1) * sizeof *names);
        assert_non_null(names);
        names[*n] = strndup(p + 1, len);
        (*n)++;
    }
    return names;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* The E. faecium clade tree of powerbacgwas: 761 genomes, binary. */
static void test_efm_tree(void **state)
{
    (void)state;
    const char *rel = "efm-clade-powerbacgwas/efm_clade.tree.nwk";
    persiste_tree *t = read_ok(rel);
    assert_int_equal(persiste_tree_n_tips(t), 761);
    assert_int_equal(persiste_tree_n_nodes(t), 2 * 761 - 1);
    check_numbering(t);
    for (int32_t v = 761; v < 1521; v++)
        assert_int_equal(t->child_start[v + 1] - t->child_start[v], 2);

    char *path = data_path(rel);
    char *text = slurp(path);
    int n;
    char **names = scan_tip_names(text, &n);
    assert_int_equal(n, 761);
    for (int32_t i = 0; i < 761; i++) {
        assert_string_equal(persiste_tree_label(t, i), names[i]);
        assert_non_null(strchr(names[i], '#'));
        assert_int_equal(persiste__tree_find_tip(t, names[i],
                                                 strlen(names[i])), i);
        free(names[i]);
    }
    double len[1521];
    assert_int_equal(persiste_tree_branch_lengths(t, len), PERSISTE_OK);
    assert_string_equal(persiste_tree_label(t, 0), "19952_1#146");
    assert_close(len[0], 0.01598337793, 0);

    /* The same text from memory gives the same tree. */
    persiste_tree *u = parse_ok(text);
    assert_true(u->fingerprint == t->fingerprint);
    persiste_tree_destroy(u);
    free(names);
    free(text);
    free(path);
    persiste_tree_destroy(t);
}

/* ---- Tip index and fingerprint ----------------------------------------- */

static void test_find_tip(void **state)
{
    (void)state;
    persiste_tree *t = read_ok("harris2022-plants30/harris2022_dated_tree.nwk");
    int32_t k = persiste__tree_find_tip(t, "Chara.braunii", 13);
    assert_true(k >= 0);
    assert_string_equal(persiste_tree_label(t, k), "Chara.braunii");
    /* Lengths bound the name: a prefix is a name of its own here. */
    k = persiste__tree_find_tip(t, "Marchantia.ruderalis", 10);
    assert_string_equal(persiste_tree_label(t, k), "Marchantia");
    k = persiste__tree_find_tip(t, "Marchantia.ruderalisXYZ", 20);
    assert_string_equal(persiste_tree_label(t, k), "Marchantia.ruderalis");
    assert_int_equal(persiste__tree_find_tip(t, "Azolla\0xy", 9), -1);
    assert_int_equal(persiste__tree_find_tip(t, "Nope", 4), -1);
    assert_int_equal(persiste__tree_find_tip(t, "29", 2), -1); /* internal */
    assert_int_equal(persiste__tree_find_tip(t, "", 0), -1);
    persiste_tree_destroy(t);
}

static uint64_t fingerprint_of(const char *text)
{
    persiste_tree *t = parse_ok(text);
    uint64_t fp = t->fingerprint;
    persiste_tree_destroy(t);
    return fp;
}

static void test_fingerprint(void **state)
{
    (void)state;
    /* Tip names in order, nothing else. */
    assert_true(fingerprint_of("(A:1,B:1);") ==
                fingerprint_of("((A:2)x:1,B:5)r:3;"));
    assert_true(fingerprint_of("(A:1,B:1);") != fingerprint_of("(B:1,A:1);"));
    assert_true(fingerprint_of("(ab:1,c:1);") !=
                fingerprint_of("(a:1,bc:1);"));
    assert_true(fingerprint_of("(A:1,B:1);") !=
                fingerprint_of("(A:1,B:1,C:1);"));
}

/* ---- from_parents against trees generated here ------------------------- */

#define GMAX 60
struct gen {
    int n;
    int parent[GMAX];
    double length[GMAX];
    char name[GMAX][8];
    int n_kids[GMAX];
};

static uint32_t rng_state;
static uint32_t rnd(uint32_t m)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (rng_state >> 8) % m;
}

/* Random attachment: multifurcations and unary nodes both arise. Tips are
 * named t<index>, some internal nodes n<index>, others unlabelled. */
static void gen_tree(struct gen *g, int n)
{
    g->n = n;
    memset(g->n_kids, 0, sizeof g->n_kids);
    g->parent[0] = -1;
    for (int i = 1; i < n; i++) {
        g->parent[i] = (int)rnd((uint32_t)i);
        g->n_kids[g->parent[i]]++;
    }
    for (int i = 0; i < n; i++) {
        g->length[i] = rnd(17) / 8.0;
        if (g->n_kids[i] == 0)
            snprintf(g->name[i], 8, "t%d", i);
        else if (rnd(2))
            snprintf(g->name[i], 8, "n%d", i);
        else
            g->name[i][0] = '\0';
    }
}

static void gen_newick(const struct gen *g, int v, char **p)
{
    if (g->n_kids[v] > 0) {
        *(*p)++ = '(';
        int first = 1;
        for (int c = 0; c < g->n; c++) {
            if (g->parent[c] != v)
                continue;
            if (!first)
                *(*p)++ = ',';
            first = 0;
            gen_newick(g, c, p);
        }
        *(*p)++ = ')';
    }
    *p += sprintf(*p, "%s:%.17g", g->name[v], g->length[v]);
}

/* A node's place independent of numbering: its tip set (bits by generator
 * index, from the names t<k>) and its depth. Two nodes with the same tip
 * set differ in depth (unary chains), so the pair is unique. */
struct key {
    uint64_t mask;
    int depth;
};

static void keys_of(int n, const int32_t *par, const char *const *label,
                    const int *is_tip, struct key *key)
{
    for (int i = 0; i < n; i++) {
        key[i].mask = 0;
        key[i].depth = 0;
        for (int v = i; par[v] >= 0; v = par[v])
            key[i].depth++;
    }
    for (int i = 0; i < n; i++) {
        if (!is_tip[i])
            continue;
        assert_int_equal(label[i][0], 't');
        uint64_t bit = 1ull << atoi(label[i] + 1);
        for (int v = i; v >= 0; v = par[v])
            key[v].mask |= bit;
    }
}

/* Same rooted tree, lengths (root's included) and labels as g. */
static void assert_same_as(const persiste_tree *t, const struct gen *g)
{
    int n = g->n;
    assert_int_equal(persiste_tree_n_nodes(t), n);
    int32_t par[GMAX] = {0}, gpar[GMAX] = {0};
    double len[GMAX] = {0};
    const char *label[GMAX] = {0}, *glabel[GMAX] = {0};
    int tip[GMAX] = {0}, gtip[GMAX] = {0}, n_tips = 0;
    struct key key[GMAX], gkey[GMAX];
    persiste_tree_parents(t, par);
    persiste_tree_branch_lengths(t, len);
    for (int i = 0; i < n; i++) {
        label[i] = persiste_tree_label(t, i);
        tip[i] = i < persiste_tree_n_tips(t);
        gpar[i] = g->parent[i];
        glabel[i] = g->name[i];
        gtip[i] = g->n_kids[i] == 0;
        n_tips += gtip[i];
    }
    assert_int_equal(persiste_tree_n_tips(t), n_tips);
    keys_of(n, par, label, tip, key);
    keys_of(n, gpar, glabel, gtip, gkey);
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < n && !(gkey[j].mask == key[i].mask &&
                          gkey[j].depth == key[i].depth))
            j++;
        assert_true(j < n);
        assert_string_equal(label[i], glabel[j]);
        assert_close(len[i], g->length[j], 0);
    }
}

static void test_random_trees(void **state)
{
    (void)state;
    static char text[GMAX * 40];
    rng_state = 12345;
    for (int rep = 0; rep < 300; rep++) {
        struct gen g;
        gen_tree(&g, 1 + (int)rnd(GMAX));
        /* Newick: tips numbered in text order, i.e. generator DFS order. */
        char *p = text;
        gen_newick(&g, 0, &p);
        strcpy(p, ";");
        persiste_tree *a = parse_ok(text);
        assert_same_as(a, &g);
        check_numbering(a);

        /* Parent arrays under a shuffled numbering. */
        int perm[GMAX], inv[GMAX];
        for (int i = 0; i < g.n; i++)
            perm[i] = i;
        for (int i = g.n - 1; i > 0; i--) {
            int j = (int)rnd((uint32_t)i + 1), x = perm[i];
            perm[i] = perm[j];
            perm[j] = x;
        }
        int32_t par[GMAX];
        double len[GMAX];
        const char *names[GMAX];
        for (int i = 0; i < g.n; i++) {
            par[perm[i]] = g.parent[i] < 0 ? -1 : perm[g.parent[i]];
            len[perm[i]] = g.length[i];
            /* Unlabelled internal nodes as NULL or "". */
            names[perm[i]] = g.name[i][0] || rnd(2) ? g.name[i] : NULL;
            inv[perm[i]] = i;
        }
        persiste_tree *b = NULL;
        assert_int_equal(persiste_tree_from_parents(&b, g.n, par, len, names),
                         PERSISTE_OK);
        assert_same_as(b, &g);
        check_numbering(b);
        /* Tips in input order: by their shuffled index. */
        int32_t k = 0;
        for (int i = 0; i < g.n; i++)
            if (g.n_kids[inv[i]] == 0)
                assert_string_equal(persiste_tree_label(b, k++),
                                     g.name[inv[i]]);
        persiste_tree_destroy(a);
        persiste_tree_destroy(b);
    }
}

/* A hand-written scrambled numbering of ((A:1,B:2)X:3,C:4)R. */
static void test_from_parents_by_hand(void **state)
{
    (void)state;
    const int32_t par[] = {-1, 0, 0, 2, 2};
    const double len[] = {0, 4, 3, 2, 1};
    const char *names[] = {"R", "C", "X", "B", "A"};
    persiste_tree *t = NULL;
    assert_int_equal(persiste_tree_from_parents(&t, 5, par, len, names),
                     PERSISTE_OK);
    /* Tips in input order C, B, A; then X, then R. */
    const char *want_label[] = {"C", "B", "A", "X", "R"};
    const int32_t want_par[] = {4, 3, 3, 4, -1};
    const double want_len[] = {4, 2, 1, 3, 0};
    int32_t p[5];
    double l[5];
    persiste_tree_parents(t, p);
    persiste_tree_branch_lengths(t, l);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(persiste_tree_label(t, i), want_label[i]);
        assert_int_equal(p[i], want_par[i]);
        assert_close(l[i], want_len[i], 0);
    }
    persiste_tree_destroy(t);
}

/* Names are copied; a root length may be anything finite (kept) or
 * absent/non-finite (0). */
static void test_from_parents_semantics(void **state)
{
    (void)state;
    char a[] = "A", b[] = "B";
    const char *names[] = {NULL, a, b};
    const int32_t par[] = {-1, 0, 0};
    double len[] = {-2.5, 1, 2}, l[3];
    persiste_tree *t = NULL;
    assert_int_equal(persiste_tree_from_parents(&t, 3, par, len, names),
                     PERSISTE_OK);
    a[0] = 'Z';
    assert_string_equal(persiste_tree_label(t, 0), "A");
    assert_string_equal(persiste_tree_label(t, 2), "");
    persiste_tree_branch_lengths(t, l);
    assert_close(l[2], -2.5, 0);
    persiste_tree_destroy(t);
    len[0] = NAN;
    assert_int_equal(persiste_tree_from_parents(&t, 3, par, len, names),
                     PERSISTE_OK);
    persiste_tree_branch_lengths(t, l);
    assert_close(l[2], 0, 0);
    persiste_tree_destroy(t);
    /* A single node is a tip and the root. */
    const int32_t root_only[] = {-1};
    const char *one[] = {"solo"};
    assert_int_equal(persiste_tree_from_parents(&t, 1, root_only, len, one),
                     PERSISTE_OK);
    assert_int_equal(persiste_tree_n_tips(t), 1);
    assert_string_equal(persiste_tree_label(t, 0), "solo");
    persiste_tree_destroy(t);
}

struct bad_parents {
    int32_t n;
    int32_t parent[5];
    double length[5];
    const char *name[5];
    int code;
    const char *want1, *want2;
};

static void test_from_parents_errors(void **state)
{
    (void)state;
    static const struct bad_parents cases[] = {
        {3, {2, 5, -1}, {1, 1, 0}, {"A", "B", ""}, PERSISTE_E_INVALID,
         "node 1", "parent 5"},
        {3, {2, -2, -1}, {1, 1, 0}, {"A", "B", ""}, PERSISTE_E_INVALID,
         "node 1", "parent -2"},
        {3, {-1, -1, 0}, {0, 0, 1}, {"", "A", "B"}, PERSISTE_E_INVALID,
         "nodes 0 and 1", "roots"},
        {2, {1, 0}, {1, 1}, {"A", "B"}, PERSISTE_E_INVALID, "no root",
         "cycle"},
        {5, {-1, 0, 3, 2, 0}, {0, 1, 1, 1, 1}, {"", "A", "x", "y", "B"},
         PERSISTE_E_INVALID, "node 2", "not connected"},
        {3, {-1, 1, 0}, {0, 1, 1}, {"", "A", "B"}, PERSISTE_E_INVALID,
         "node 1", "not connected"},
        {3, {-1, 0, 0}, {0, -1, 1}, {"", "A", "B"}, PERSISTE_E_DOMAIN,
         "node 1", "'A'"},
        {3, {-1, 0, 0}, {0, 1, NAN}, {"", "A", "B"}, PERSISTE_E_DOMAIN,
         "node 2", "'B'"},
        {3, {-1, 0, 0}, {0, INFINITY, 1}, {"", "A", "B"}, PERSISTE_E_DOMAIN,
         "node 1", "inf"},
        {3, {-1, 0, 0}, {0, 1, 1}, {"", "A", NULL}, PERSISTE_E_INVALID,
         "tip node 2", "no name"},
        {3, {-1, 0, 0}, {0, 1, 1}, {"", "", "B"}, PERSISTE_E_INVALID,
         "tip node 1", "no name"},
        {4, {-1, 0, 0, 0}, {0, 1, 1, 1}, {"", "A", "B", "A"},
         PERSISTE_E_NAMES, "duplicate", "'A'"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const struct bad_parents *c = &cases[k];
        persiste_tree *t = (persiste_tree *)&rng_state; /* sentinel */
        int rc = persiste_tree_from_parents(&t, c->n, c->parent, c->length,
                                            c->name);
        print_message("case %zu: %d %s\n", k, rc, persiste_last_error());
        assert_int_equal(rc, c->code);
        assert_ptr_equal(t, &rng_state);
        assert_non_null(strstr(persiste_last_error(), "tree: "));
        assert_non_null(strstr(persiste_last_error(), c->want1));
        assert_non_null(strstr(persiste_last_error(), c->want2));
    }
}

static void test_argument_errors(void **state)
{
    (void)state;
    const int32_t par[] = {-1};
    const double len[] = {0};
    const char *names[] = {"A"};
    persiste_tree *t = NULL;
    assert_int_equal(persiste_tree_from_parents(NULL, 1, par, len, names),
                     PERSISTE_E_INVALID);
    assert_non_null(strstr(persiste_last_error(), "out"));
    assert_int_equal(persiste_tree_from_parents(&t, 1, NULL, len, names),
                     PERSISTE_E_INVALID);
    assert_non_null(strstr(persiste_last_error(), "parent"));
    assert_int_equal(persiste_tree_from_parents(&t, 1, par, NULL, names),
                     PERSISTE_E_INVALID);
    assert_non_null(strstr(persiste_last_error(), "branch_length"));
    assert_int_equal(persiste_tree_from_parents(&t, 1, par, len, NULL),
                     PERSISTE_E_INVALID);
    assert_non_null(strstr(persiste_last_error(), "names"));
    assert_int_equal(persiste_tree_from_parents(&t, 0, par, len, names),
                     PERSISTE_E_INVALID);
    assert_int_equal(persiste_tree_from_parents(&t, -3, par, len, names),
                     PERSISTE_E_INVALID);
    assert_non_null(strstr(persiste_last_error(), "-3"));
    assert_int_equal(persiste_tree_from_newick(NULL, "A;"),
                     PERSISTE_E_INVALID);
    assert_int_equal(persiste_tree_from_newick(&t, NULL), PERSISTE_E_INVALID);
    assert_int_equal(persiste_tree_from_newick_file(&t, NULL),
                     PERSISTE_E_INVALID);
    assert_int_equal(persiste_tree_from_newick_file(NULL, "x"),
                     PERSISTE_E_INVALID);
    assert_null(t);

    t = parse_ok("(A:1,B:1);");
    int32_t p[3];
    assert_null(persiste_tree_label(t, -1));
    assert_null(persiste_tree_label(t, 3));
    assert_null(persiste_tree_label(NULL, 0));
    assert_int_equal(persiste_tree_n_nodes(NULL), 0);
    assert_int_equal(persiste_tree_n_tips(NULL), 0);
    assert_int_equal(persiste_tree_parents(NULL, p), PERSISTE_E_INVALID);
    assert_int_equal(persiste_tree_parents(t, NULL), PERSISTE_E_INVALID);
    assert_int_equal(persiste_tree_branch_lengths(t, NULL),
                     PERSISTE_E_INVALID);
    persiste_tree_destroy(t);
    persiste_tree_destroy(NULL);
}

/* ---- Malformed Newick -------------------------------------------------- */

struct bad_newick {
    const char *text;
    int code;
    const char *want1, *want2;
};

static const struct bad_newick bad[] = {
    {"", PERSISTE_E_PARSE, "line 1, column 1:", "empty"},
    {" \n\t[comment]\n", PERSISTE_E_PARSE, "line 3, column 1:", "empty"},
    {"(A:1,B:1)", PERSISTE_E_PARSE, "column 10:", "';' after the tree but "
     "found end of input"},
    {"((A:1,B:1):1;", PERSISTE_E_PARSE, "column 13:", "too few ')'"},
    {"(A:1,B:1));", PERSISTE_E_PARSE, "column 10:", "too many ')'"},
    {"(A:1,B:1);x", PERSISTE_E_PARSE, "column 11:", "found 'x' after"},
    {"(A:1,B:1);(C:1,D:1);", PERSISTE_E_PARSE, "column 11:", "one tree"},
    {"('A:1,B:1);", PERSISTE_E_PARSE, "column 2:", "unterminated quoted"},
    {"(A:1[x,B:1);", PERSISTE_E_PARSE, "column 5:", "unterminated comment"},
    {"(A:1,B:1)R:1 ;[open", PERSISTE_E_PARSE, "column 15:",
     "unterminated comment"},
    {"(A:1.2.3,B:1);", PERSISTE_E_PARSE, "column 4:", "'1.2.3'"},
    {"(A:abc,B:1);", PERSISTE_E_PARSE, "column 4:", "'abc' for node 'A'"},
    {"(A:0x10,B:1);", PERSISTE_E_PARSE, "column 4:", "'0x10'"},
    {"(A:1e,B:1);", PERSISTE_E_PARSE, "column 4:", "'1e'"},
    {"(A:.,B:1);", PERSISTE_E_PARSE, "column 4:", "'.'"},
    {"(A:NaN,B:1);", PERSISTE_E_DOMAIN, "column 4:", "node 'A'"},
    {"(A:1,B:-inf);", PERSISTE_E_DOMAIN, "column 8:", "node 'B'"},
    {"(A:1e999,B:1);", PERSISTE_E_DOMAIN, "column 4:", "node 'A'"},
    {"(A:-1,B:1);", PERSISTE_E_DOMAIN, "column 4:", "node 'A' has a negative"},
    {"((A:1,B:1):-0.5,C:1);", PERSISTE_E_DOMAIN, "column 12:",
     "unlabelled internal node has a negative"},
    {"(:1,B:1);", PERSISTE_E_PARSE, "column 2:", "tip name"},
    {"('':1,B:1);", PERSISTE_E_PARSE, "column 2:", "empty tip name"},
    {"(A:1,B:1,);", PERSISTE_E_PARSE, "column 10:", "tip name or '(' but "
     "found ')'"},
    {"();", PERSISTE_E_PARSE, "column 2:", "found ')'"},
    {"(A:1,A:2);", PERSISTE_E_NAMES, "duplicate", "'A'"},
    {"(A,B);", PERSISTE_E_PARSE, "column 3:", "node 'A' has no branch length"},
    {"((A:1,B:1),C:1);", PERSISTE_E_PARSE, "column 11:",
     "unlabelled internal node has no branch length"},
    {"(A:1,B:1)x y;", PERSISTE_E_PARSE, "column 12:", "found 'y'"},
    {"(A:1 B:1);", PERSISTE_E_PARSE, "column 6:",
     "expected ',' or ')' but found 'B'"},
    {"(A B:1);", PERSISTE_E_PARSE, "column 4:",
     "expected ':' or ',' or ')' but found 'B'"},
    {"(A:,B:1);", PERSISTE_E_PARSE, "column 4:", "branch length after ':'"},
    {"(A:1,B:1):1:2;", PERSISTE_E_PARSE, "column 12:", "found ':'"},
    {"(A:1:2,B:1);", PERSISTE_E_PARSE, "column 5:", "found ':'"},
    {"A:1,B:1;", PERSISTE_E_PARSE, "column 4:", "after the tree"},
    {"(A:1,\n B:1,\n C:x);", PERSISTE_E_PARSE, "line 3, column 4:", "'x'"},
    {"(A:1,\x01" "B:1);", PERSISTE_E_PARSE, "column 6:", "byte 0x01"},
    {"\xff\xfe(A:1);", PERSISTE_E_PARSE, "column 3:", "found '('"},
};

static void test_malformed(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        persiste_tree *t = (persiste_tree *)&rng_state; /* sentinel */
        int rc = persiste_tree_from_newick(&t, bad[k].text);
        const char *msg = persiste_last_error();
        print_message("case %zu: %d %s\n", k, rc, msg);
        assert_int_equal(rc, bad[k].code);
        assert_ptr_equal(t, &rng_state);
        assert_int_equal(strncmp(msg, "newick: ", 8), 0);
        assert_non_null(strstr(msg, bad[k].want1));
        assert_non_null(strstr(msg, bad[k].want2));
    }
}

/* ---- Files ------------------------------------------------------------- */

static char *write_temp(const char *bytes, size_t n)
{
    char *path = strdup("/tmp/persiste_test_tree_XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, n), (ssize_t)n);
    close(fd);
    return path;
}

static void assert_file_fails(const char *bytes, size_t n, int code,
                              const char *want1, const char *want2)
{
    char *path = write_temp(bytes, n);
    persiste_tree *t = NULL;
    int rc = persiste_tree_from_newick_file(&t, path);
    const char *msg = persiste_last_error();
    print_message("%d %s\n", rc, msg);
    assert_int_equal(rc, code);
    assert_null(t);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "newick: %s: ", path);
    assert_int_equal(strncmp(msg, prefix, strlen(prefix)), 0);
    assert_non_null(strstr(msg, want1));
    assert_non_null(strstr(msg, want2));
    unlink(path);
    free(path);
}

static void test_files(void **state)
{
    (void)state;
    persiste_tree *t = NULL;
    const char *missing = "/nonexistent-dir/tree.nwk";
    assert_int_equal(persiste_tree_from_newick_file(&t, missing),
                     PERSISTE_E_IO);
    assert_null(t);
    assert_non_null(strstr(persiste_last_error(), missing));
    assert_non_null(strstr(persiste_last_error(), "No such file"));
    const char *dir = getenv("PERSISTE_DATA_DIR");
    assert_int_equal(persiste_tree_from_newick_file(&t, dir), PERSISTE_E_IO);
    assert_non_null(strstr(persiste_last_error(), dir));

    assert_file_fails("(A:1,\n B:1,\n C:x);\n", 19, PERSISTE_E_PARSE,
                      "line 3, column 4:", "'x'");
    assert_file_fails("(A:1,\0B:1);", 11, PERSISTE_E_PARSE, "column 6:",
                      "byte 0x00");
    assert_file_fails("('A\0B':1,C:1);", 14, PERSISTE_E_PARSE, "column 4:",
                      "NUL byte");
    assert_file_fails("\x7f" "ELF\x02\x01\x01", 7, PERSISTE_E_PARSE,
                      "column 1:", "byte 0x7f");
    /* gzip magic, then nothing: the reader's error, said to come from here */
    assert_file_fails("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", 10,
                      PERSISTE_E_IO, "gzip", "");
    assert_file_fails("(A:1,A:1);", 10, PERSISTE_E_NAMES, "duplicate",
                      "'A'");
    assert_file_fails("", 0, PERSISTE_E_PARSE, "column 1:", "empty");

    /* gzip-compressed trees read like plain ones. */
    char gz[] = "/tmp/persiste_test_tree_gz_XXXXXX";
    int fd = mkstemp(gz);
    assert_true(fd >= 0);
    close(fd);
    gzFile z = gzopen(gz, "wb");
    assert_non_null(z);
    assert_true(gzputs(z, "((A:1,B:2)X:3,C:4)R;\n") > 0);
    assert_int_equal(gzclose(z), Z_OK);
    assert_int_equal(persiste_tree_from_newick_file(&t, gz), PERSISTE_OK);
    assert_int_equal(persiste_tree_n_nodes(t), 5);
    assert_string_equal(persiste_tree_label(t, 3), "X");
    persiste_tree_destroy(t);
    unlink(gz);

    /* A file larger than the first read buffer. */
    size_t n = 200000;
    char *big = malloc(n + 16);
    assert_non_null(big);
    memset(big, ' ', n);
    strcpy(big + n, "(A:1,B:2);\n");
    char *path = write_temp(big, strlen(big));
    assert_int_equal(persiste_tree_from_newick_file(&t, path), PERSISTE_OK);
    assert_int_equal(persiste_tree_n_nodes(t), 3);
    persiste_tree_destroy(t);
    unlink(path);
    free(path);
    free(big);
}

/* ---- Robustness -------------------------------------------------------- */

/* Random byte edits of valid trees: every outcome is a tree that passes the
 * numbering checks or an error with a located message; ASan and UBSan
 * watch for everything else. */
static void test_mutations(void **state)
{
    (void)state;
    static const char *seeds[] = {
        "((A:1,B:2)X:3,C:4)R;",
        "('it''s':1,[c]'a b':2,(C:1e-3,D:4)95:0.5)'r':0;",
        "(A:0.1,B:0.2,(C:0.3,D:0.4)100/98:0.5);\n",
    };
    static const char alphabet[] = "():,;[]' \n\tAB1.e-+#_\x01\xff";
    char buf[128];
    rng_state = 777;
    for (int rep = 0; rep < 30000; rep++) {
        const char *seed = seeds[rnd(3)];
        size_t n = strlen(seed);
        memcpy(buf, seed, n + 1);
        for (uint32_t e = 0, edits = 1 + rnd(3); e < edits && n > 0; e++) {
            size_t at = rnd((uint32_t)n);
            char c = alphabet[rnd(sizeof alphabet - 1)];
            switch (rnd(3)) {
            case 0: /* replace */
                buf[at] = c;
                break;
            case 1: /* delete */
                memmove(buf + at, buf + at + 1, n - at);
                n--;
                break;
            default: /* insert */
                if (n + 2 < sizeof buf) {
                    memmove(buf + at + 1, buf + at, n - at + 1);
                    buf[at] = c;
                    n++;
                }
            }
        }
        persiste_tree *t = NULL;
        int rc = persiste_tree_from_newick(&t, buf);
        if (rc == PERSISTE_OK) {
            check_numbering(t);
            persiste_tree_destroy(t);
            continue;
        }
        assert_null(t);
        assert_true(rc == PERSISTE_E_PARSE || rc == PERSISTE_E_DOMAIN ||
                    rc == PERSISTE_E_NAMES);
        const char *msg = persiste_last_error();
        assert_int_equal(strncmp(msg, "newick: ", 8), 0);
        if (rc != PERSISTE_E_NAMES)
            assert_non_null(strstr(msg, ", column "));
    }
}

/* Numbers are read with '.' whatever LC_NUMERIC the host set (R and
 * Python programs may set a comma locale). Skipped when none is
 * installed; run with LOCPATH pointing at a localedef output to force it. */
static void test_comma_locale(void **state)
{
    (void)state;
    if (!setlocale(LC_NUMERIC, "de_DE.UTF-8") &&
        !setlocale(LC_NUMERIC, "fr_FR.UTF-8")) {
        skip();
        return;
    }
    persiste_tree *t = NULL;
    int rc = persiste_tree_from_newick(&t, "(A:0.5,B:1.25e-1);");
    setlocale(LC_NUMERIC, "C");
    assert_int_equal(rc, PERSISTE_OK);
    double len[3];
    persiste_tree_branch_lengths(t, len);
    assert_close(len[0], 0.5, 0);
    assert_close(len[1], 0.125, 0);
    persiste_tree_destroy(t);
}

#ifdef PERSISTE_ALLOC_FAILURE
extern long persiste__alloc_fail_at, persiste__alloc_count;

/* Build with -Dc_args=-DPERSISTE_ALLOC_FAILURE: fail each allocation in
 * turn; every failure must be clean (status, nothing written, no leak). */
static void test_alloc_failures(void **state)
{
    (void)state;
    char *path = data_path("harris2022-plants30/harris2022_dated_tree.nwk");
    const int32_t par[] = {-1, 0, 0};
    const double len[] = {0, 1, 2};
    const char *names[] = {NULL, "A", "B"};
    for (int which = 0; which < 3; which++) {
        int rc = PERSISTE_E_NOMEM;
        long k;
        for (k = 1; rc != PERSISTE_OK; k++) {
            persiste_tree *t = NULL;
            persiste__alloc_count = 0;
            persiste__alloc_fail_at = k;
            rc = which == 0 ? persiste_tree_from_newick(&t, "((A:1,'B':2)x:3"
                                                            ",C:4);")
                 : which == 1 ? persiste_tree_from_newick_file(&t, path)
                              : persiste_tree_from_parents(&t, 3, par, len,
                                                           names);
            persiste__alloc_fail_at = 0;
            if (rc != PERSISTE_OK) {
                assert_int_equal(rc, PERSISTE_E_NOMEM);
                assert_null(t);
            } else {
                check_numbering(t);
                persiste_tree_destroy(t);
            }
        }
        assert_true(k > 3);
    }
    free(path);
}
#endif

/* ---- Big trees: iterative and linear ----------------------------------- */

#define BIG 100000

/* (((t0:1,t1:1):1,t2:1):1,...,tN-1:1); nests BIG-1 deep. */
static char *caterpillar(int n)
{
    char *s = malloc((size_t)n * 24 + 16), *p = s;
    assert_non_null(s);
    memset(p, '(', (size_t)n - 1);
    p += n - 1;
    p += sprintf(p, "t0:1");
    for (int k = 1; k < n; k++)
        p += sprintf(p, ",t%d:1)%s", k, k < n - 1 ? ":1" : "");
    strcpy(p, ";");
    return s;
}

/* The documented numbering of the caterpillar: tips t0..tN-1, then the
 * cherry (t0,t1) = N, each later node one more, root 2N-2. */
static void check_caterpillar(const persiste_tree *t, int n)
{
    assert_int_equal(persiste_tree_n_tips(t), n);
    assert_int_equal(persiste_tree_n_nodes(t), 2 * n - 1);
    int32_t *par = malloc((size_t)(2 * n - 1) * sizeof *par);
    double *len = malloc((size_t)(2 * n - 1) * sizeof *len);
    assert_true(par && len);
    persiste_tree_parents(t, par);
    persiste_tree_branch_lengths(t, len);
    char name[16];
    for (int k = 0; k < n; k++) {
        snprintf(name, sizeof name, "t%d", k);
        assert_string_equal(persiste_tree_label(t, k), name);
        assert_int_equal(par[k], k < 2 ? n : n + k - 1);
    }
    for (int j = n; j < 2 * n - 2; j++)
        assert_int_equal(par[j], j + 1);
    assert_int_equal(par[2 * n - 2], -1);
    double d = 0;
    for (int32_t v = 0; par[v] >= 0; v = par[v])
        d += len[v];
    assert_close(d, n - 1, 0);
    free(par);
    free(len);
}

static void test_big_caterpillar(void **state)
{
    (void)state;
    char *s = caterpillar(BIG);
    persiste_tree *t = parse_ok(s);
    check_caterpillar(t, BIG);
    check_numbering(t);
    persiste_tree_destroy(t);
    free(s);

    /* The same tree from parents numbered root first, deepest last. */
    int n = 2 * BIG - 1;
    int32_t *par = malloc((size_t)n * sizeof *par);
    double *len = malloc((size_t)n * sizeof *len);
    char **names = calloc((size_t)n, sizeof *names);
    assert_true(par && len && names);
    /* Internal node with depth d (root d = 0) is index d; tip tk is index
     * BIG-1+k; the cherry is at depth BIG-2. */
    for (int d = 0; d < BIG - 1; d++) {
        par[d] = d - 1;
        len[d] = 1;
    }
    for (int k = 0; k < BIG; k++) {
        int i = BIG - 1 + k;
        par[i] = k < 2 ? BIG - 2 : BIG - 1 - k;
        len[i] = 1;
        names[i] = malloc(16);
        snprintf(names[i], 16, "t%d", k);
    }
    assert_int_equal(persiste_tree_from_parents(&t, n, par, len,
                                                (const char *const *)names),
                     PERSISTE_OK);
    check_caterpillar(t, BIG);
    persiste_tree_destroy(t);
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(par);
    free(len);
}

static void balanced(char **p, int lo, int hi)
{
    if (hi - lo == 1) {
        *p += sprintf(*p, "t%d:1", lo);
        return;
    }
    int mid = lo + (hi - lo) / 2;
    *(*p)++ = '(';
    balanced(p, lo, mid);
    *(*p)++ = ',';
    balanced(p, mid, hi);
    *p += sprintf(*p, "):1");
}

static void test_big_balanced(void **state)
{
    (void)state;
    char *s = malloc((size_t)BIG * 24), *p = s;
    assert_non_null(s);
    balanced(&p, 0, BIG);
    strcpy(p, ";");
    persiste_tree *t = parse_ok(s);
    assert_int_equal(persiste_tree_n_tips(t), BIG);
    assert_int_equal(persiste_tree_n_nodes(t), 2 * BIG - 1);
    check_numbering(t);
    int32_t *par = malloc((size_t)(2 * BIG - 1) * sizeof *par);
    assert_non_null(par);
    persiste_tree_parents(t, par);
    char name[16];
    for (int k = 0; k < BIG; k++) {
        snprintf(name, sizeof name, "t%d", k);
        assert_string_equal(persiste_tree_label(t, k), name);
        int depth = 0;
        for (int32_t v = k; par[v] >= 0; v = par[v])
            depth++;
        assert_true(depth == 16 || depth == 17); /* ceil(log2 100000) = 17 */
    }
    free(par);
    persiste_tree_destroy(t);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_variants),
        cmocka_unit_test(test_child_order),
        cmocka_unit_test(test_harris_tree),
        cmocka_unit_test(test_efm_tree),
        cmocka_unit_test(test_find_tip),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_random_trees),
        cmocka_unit_test(test_from_parents_by_hand),
        cmocka_unit_test(test_from_parents_semantics),
        cmocka_unit_test(test_from_parents_errors),
        cmocka_unit_test(test_argument_errors),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_big_caterpillar),
        cmocka_unit_test(test_big_balanced),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_comma_locale),
#ifdef PERSISTE_ALLOC_FAILURE
        cmocka_unit_test(test_alloc_failures),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
