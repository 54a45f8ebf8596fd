/* Hostile and absurd input through the public API: each gives a clear
 * status and message, and leaves what the caller owns as it was (handles
 * not set, output arrays not written). Rows of one table for text (Newick
 * strings and files, tables), then sizes, arrays, numbers and options.
 * test_tree.c and test_data.c hold the finer parser cases. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "persiste.h"

static char dir[64];

static const char *write_file(const char *name, const void *bytes, size_t n)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    fclose(fp);
    return path;
}

static persiste_tree *tree_of(const char *newick)
{
    persiste_tree *t = NULL;
    assert_int_equal(persiste_tree_from_newick(&t, newick), PERSISTE_OK);
    return t;
}

/* rc must be want; a failure must say `fragment` (and something). */
static void expect(int rc, int want, const char *fragment, const char *what)
{
    const char *msg = persiste_last_error();
    if (rc != want || (rc != PERSISTE_OK && (!msg[0] ||
                                             (fragment && !strstr(msg, fragment)))))
        fail_msg("%s: status %d (want %d), message '%s' (want '%s')", what,
                 rc, want, rc ? msg : "", fragment ? fragment : "");
}

/* ---- Text: Newick strings and files, tables ----------------------------- */
enum { NEWICK, NEWICK_FILE, TABLE };

/* The tree the tables are read against: awkward names on purpose. */
static const char TREE[] = "((A:1,'t\tab':1):1,('q\"t':1,'it''s':1):1,"
                           "('\xff\xfe':1,'%s%n':1):1);";

typedef struct {
    const char *what;
    int kind;
    const char *bytes;
    size_t len; /* 0: strlen(bytes) */
    uint32_t flags;
    int want;
    const char *fragment;
} text_case;

static const text_case text_cases[] = {
    /* empty and blank */
    {"empty newick", NEWICK, "", 0, 0, PERSISTE_E_PARSE, "empty input"},
    {"blank newick", NEWICK, " \n\t[comment]\r\n", 0, 0, PERSISTE_E_PARSE,
     "empty input"},
    {"empty newick file", NEWICK_FILE, "", 0, 0, PERSISTE_E_PARSE,
     "empty input"},
    {"empty table", TABLE, "", 0, 0, PERSISTE_E_PARSE, "empty file"},
    {"blank table", TABLE, "\n \r\n\n", 0, 0, PERSISTE_E_PARSE,
     "empty file"},
    {"blank lines, then a tab", TABLE, "\n \r\n\t\n", 0, 0,
     PERSISTE_E_PARSE, "line 3, column 2: empty name in the header"},
    {"header only", TABLE, "Gene\tA\tit's\n", 0, 0, PERSISTE_E_PARSE,
     "no data rows"},
    /* binary garbage */
    {"garbage newick", NEWICK, "\x01\x89PNG\r\n\x1a\n", 0, 0,
     PERSISTE_E_PARSE, "byte 0x01"},
    {"NUL in a newick file", NEWICK_FILE, "(A:1,B\0:1);", 11, 0,
     PERSISTE_E_PARSE, "byte 0x00"},
    {"NUL in a quoted label", NEWICK_FILE, "('A\0':1,B:1);", 13, 0,
     PERSISTE_E_PARSE, "NUL byte in quoted label"},
    {"garbage table", TABLE, "\x7f" "ELF\x02\x01\x01\0\0\0", 10, 0,
     PERSISTE_E_PARSE, "NUL byte"},
    {"gzip magic and garbage", TABLE, "\x1f\x8b\x08\0garbage!", 12, 0,
     PERSISTE_E_IO, "gzip"},
    {"gzip magic and garbage (newick)", NEWICK_FILE, "\x1f\x8b\x08\0junk!",
     9, 0, PERSISTE_E_IO, "newick: "},
    /* numbers */
    {"NaN length", NEWICK, "(A:1,B:nan);", 0, 0, PERSISTE_E_DOMAIN,
     "node 'B' has a branch length that is not a finite number"},
    {"Inf length", NEWICK, "(A:-inf,B:1);", 0, 0, PERSISTE_E_DOMAIN,
     "not a finite number"},
    {"overflowing length", NEWICK, "(A:1e309,B:1);", 0, 0,
     PERSISTE_E_DOMAIN, "too large for a double"},
    {"negative length", NEWICK, "(A:1,B:-0.5);", 0, 0, PERSISTE_E_DOMAIN,
     "negative branch length"},
    {"hex length", NEWICK, "(A:0x10,B:1);", 0, 0, PERSISTE_E_PARSE,
     "bad branch length '0x10'"},
    {"subnormal and huge lengths", NEWICK, "(A:4.9e-324,B:1.7e308);", 0, 0,
     PERSISTE_OK, NULL},
    {"copy number", TABLE, "Gene\tA\tit's\nf\t1\t3\n", 0, 0,
     PERSISTE_E_PARSE, "copy numbers are not read"},
    /* duplicate names */
    {"duplicate tips", NEWICK, "((A:1,B:1):1,A:1);", 0, 0, PERSISTE_E_NAMES,
     "duplicate tip name 'A'"},
    {"duplicate format tips", NEWICK, "('%s%n':1,'%s%n':1);", 0, 0,
     PERSISTE_E_NAMES, "duplicate tip name '%s%n'"},
    {"duplicate genomes", TABLE, "Gene\tA\tA\nf\t1\t0\n", 0, 0,
     PERSISTE_E_NAMES, "taxon A appears twice"},
    {"duplicate strangers", TABLE, "Gene\tA\tZ\tZ\nf\t1\t0\t1\n", 0,
     PERSISTE_DATA_DROP_EXTRA_TAXA, PERSISTE_E_NAMES, "taxon Z appears twice"},
    {"duplicate families", TABLE, "Gene\tA\tit's\nf\t1\t0\nf\t0\t1\n", 0,
     PERSISTE_DATA_MISSING_AS_UNKNOWN, PERSISTE_OK, NULL},
    /* names with tabs, quotes, non-UTF-8 bytes and format directives */
    {"awkward tips", NEWICK, TREE, 0, 0, PERSISTE_OK, NULL},
    {"awkward genomes (CSV)", TABLE,
     "Gene,A,\"t\tab\",\"q\"\"t\",it's,\xff\xfe,%s%n\nf,1,0,1,?,0,1\n", 0, 0,
     PERSISTE_OK, NULL},
    {"awkward genomes (Rtab)", TABLE,
     "Gene\tA\tq\"t\tit's\t\xff\xfe\t%s%n\tx\ty\nf\t1\t0\t1\t0\t1\t1\t0\n",
     0, PERSISTE_DATA_MISSING_AS_UNKNOWN | PERSISTE_DATA_DROP_EXTRA_TAXA,
     PERSISTE_OK, NULL},
    {"awkward strangers", TABLE,
     "Gene\tA\t%s%n%s\t\xc3\x28\nf\t1\t0\t1\n", 0,
     PERSISTE_DATA_MISSING_AS_UNKNOWN, PERSISTE_E_NAMES,
     "2 of 3 genomes not in the tree: %s%n%s, \xc3\x28"},
    {"unterminated quote", TABLE, "Gene,A,\"it's\nf,1,0\n", 0, 0,
     PERSISTE_E_PARSE, "unterminated quote"},
    {"unterminated quoted label", NEWICK, "('A:1,B:1);", 0, 0,
     PERSISTE_E_PARSE, "no closing quote"},
};

static void test_text(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE);
    for (size_t i = 0; i < sizeof text_cases / sizeof *text_cases; i++) {
        const text_case *c = &text_cases[i];
        size_t len = c->len ? c->len : strlen(c->bytes);
        void *sentinel = (void *)&len, *out = sentinel;
        int rc;
        if (c->kind == NEWICK)
            rc = persiste_tree_from_newick((persiste_tree **)&out, c->bytes);
        else if (c->kind == NEWICK_FILE)
            rc = persiste_tree_from_newick_file(
                (persiste_tree **)&out, write_file("t.nwk", c->bytes, len));
        else
            rc = persiste_data_read((persiste_data **)&out, tree,
                                    write_file("t.tab", c->bytes, len),
                                    c->flags);
        expect(rc, c->want, c->fragment, c->what);
        if (rc != PERSISTE_OK) {
            if (out != sentinel && out != NULL)
                fail_msg("%s: handle written on failure", c->what);
        } else if (c->kind == TABLE) {
            persiste_data_destroy(out);
        } else {
            persiste_tree_destroy(out);
        }
    }
    /* The awkward names are kept byte for byte. */
    assert_string_equal(persiste_tree_label(tree, 1), "t\tab");
    assert_string_equal(persiste_tree_label(tree, 2), "q\"t");
    assert_string_equal(persiste_tree_label(tree, 3), "it's");
    assert_string_equal(persiste_tree_label(tree, 4), "\xff\xfe");
    assert_string_equal(persiste_tree_label(tree, 5), "%s%n");
    persiste_tree_destroy(tree);
}

/* ---- Sizes: deep trees, a million columns ------------------------------- */
enum { DEEP = 100000, WIDE = 1000000 };
static const double SENTINEL = -4242.5;

static void fill(double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = SENTINEL;
}

static void untouched(const double *x, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (x[i] != SENTINEL)
            fail_msg("%s: output %zu written on failure", what, i);
}

/* A chain of DEEP unary nodes above tip A, beside tip B. */
static char *deep_newick(int closed)
{
    char *s = malloc(2 * DEEP + DEEP * 4 + 64), *p = s;
    assert_non_null(s);
    *p++ = '(';
    memset(p, '(', DEEP);
    p += DEEP;
    p += sprintf(p, "A:1");
    for (int i = 0; i < DEEP && closed; i++)
        p += sprintf(p, "):1");
    strcpy(p, closed ? ",B:1);" : ";");
    return s;
}

static void test_deep_tree(void **state)
{
    (void)state;
    char *text = deep_newick(0);
    persiste_tree *tree = (persiste_tree *)&text;
    expect(persiste_tree_from_newick(&tree, text), PERSISTE_E_PARSE,
           "unbalanced parentheses: too few ')'", "unclosed deep tree");
    assert_ptr_equal(tree, (persiste_tree *)&text);
    free(text);
    text = deep_newick(1);
    tree = NULL;
    expect(persiste_tree_from_newick(&tree, text), PERSISTE_OK, NULL,
           "deep tree");
    free(text);
    assert_int_equal(persiste_tree_n_nodes(tree), DEEP + 3);
    /* Evaluated and differentiated without recursion. */
    const uint8_t states[4] = {1, 0, 0, 1};
    const char *const names[2] = {"A", "B"};
    persiste_data *data = NULL;
    persiste_model *model = NULL;
    persiste_ctx *ctx = NULL;
    assert_int_equal(persiste_data_from_matrix(&data, tree, states, 2, 2, 2,
                                               1, names, NULL, 0),
                     PERSISTE_OK);
    assert_int_equal(persiste_model_create(&model), PERSISTE_OK);
    assert_int_equal(persiste_ctx_create(&ctx), PERSISTE_OK);
    double lg[2] = {-3, -3}, ll[2] = {-2, -2}, lnl[2], dg[2], dl[2];
    double *db = malloc((DEEP + 3) * sizeof *db);
    assert_non_null(db);
    assert_int_equal(persiste_gradient_batch(ctx, model, tree, data, 2, lg,
                                             ll, NULL, lnl, dg, dl, db),
                     PERSISTE_OK);
    for (int f = 0; f < 2; f++)
        assert_true(isfinite(lnl[f]) && isfinite(dg[f]) && isfinite(dl[f]));
    for (int v = 0; v < DEEP + 3; v++)
        assert_true(isfinite(db[v]));
    free(db);
    persiste_ctx_destroy(ctx);
    persiste_model_destroy(model);
    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
}

/* A header of a million genome names: an error naming a few of them, or,
 * dropping the strangers, data on the tree's two tips. */
static void test_wide_header(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of("(A:1,B:1);");
    size_t cap = (size_t)WIDE * 12 + 64, n = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    n += (size_t)sprintf(text, "Gene\tA\tB");
    for (int i = 0; i < WIDE; i++)
        n += (size_t)sprintf(text + n, "\tg%d", i);
    const char *path = write_file("wide.Rtab", text, n);
    persiste_data *data = (persiste_data *)&n;
    expect(persiste_data_read(&data, tree, path, 0), PERSISTE_E_PARSE,
           "no data rows", "wide header alone");
    n += (size_t)sprintf(text + n, "\nf\t1\t0");
    for (int i = 0; i < WIDE; i++)
        n += (size_t)sprintf(text + n, "\t1");
    text[n++] = '\n';
    path = write_file("wide.Rtab", text, n);
    free(text);
    expect(persiste_data_read(&data, tree, path, 0), PERSISTE_E_NAMES,
           "1000000 of 1000002 genomes not in the tree: g0, g1, g2, g3, g4, "
           "...",
           "wide table");
    assert_ptr_equal(data, (persiste_data *)&n);
    expect(persiste_data_read(&data, tree, path,
                              PERSISTE_DATA_DROP_EXTRA_TAXA),
           PERSISTE_OK, NULL, "wide table, strangers dropped");
    assert_int_equal(persiste_data_n_families(data), 1);
    assert_int_equal(persiste_data_n_dropped_taxa(data), WIDE);
    assert_string_equal(persiste_data_dropped_taxon(data, WIDE - 1),
                        "g999999");
    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
}

/* ---- Arrays: sizes whose product overflows, bad parents and states ------ */
static void test_arrays(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of("(A:1,B:1,C:1);");
    const char *const names[3] = {"A", "B", "C"};
    const char *const dup[3] = {"A", "B", "A"};
    const char *const with_null[3] = {"A", NULL, "C"};
    uint8_t st[6] = {0, 1, 2, 1, 1, 0}, bad[6] = {0, 1, 2, 3, 1, 0};
    const struct {
        const char *what;
        const uint8_t *states;
        int64_t n_fam, n_taxa, fs, ts;
        const char *const *names;
        uint32_t flags;
        int want;
        const char *fragment;
    } m[] = {
        {"families x taxa overflow", st, INT64_MAX, 3, 3, 1, names, 0,
         PERSISTE_E_OVERFLOW, "at most 2^53"},
        {"words of families overflow", st, INT64_MAX - 10, 3, 0, 0, names,
         0, PERSISTE_E_OVERFLOW, "at most 2^53"},
        {"strides overflow", st, 1 << 20, 3, INT64_MAX / 4, 1, names, 0,
         PERSISTE_E_OVERFLOW, "address beyond memory"},
        {"most negative stride", st, 2, 3, INT64_MIN, 1, names, 0,
         PERSISTE_E_OVERFLOW, "strides"},
        {"no families", st, 0, 3, 3, 1, names, 0, PERSISTE_E_INVALID,
         "both must be positive"},
        {"negative taxa", st, 2, -3, 3, 1, names, 0, PERSISTE_E_INVALID,
         "both must be positive"},
        {"state 3", bad, 2, 3, 3, 1, names, 0, PERSISTE_E_DOMAIN,
         "state 3 is not 0"},
        {"duplicate taxa", st, 2, 3, 3, 1, dup, 0, PERSISTE_E_NAMES,
         "taxon A appears twice"},
        {"NULL taxon name", st, 2, 3, 3, 1, with_null, 0, PERSISTE_E_INVALID,
         "taxon name 2 is NULL"},
        {"unknown flag", st, 2, 3, 3, 1, names, 1u << 20, PERSISTE_E_INVALID,
         "unknown flag bits 0x100000"},
    };
    for (size_t i = 0; i < sizeof m / sizeof *m; i++) {
        persiste_data *data = (persiste_data *)&m;
        int rc = persiste_data_from_matrix(&data, tree, m[i].states,
                                           m[i].n_fam, m[i].n_taxa, m[i].fs,
                                           m[i].ts, m[i].names, NULL,
                                           m[i].flags);
        expect(rc, m[i].want, m[i].fragment, m[i].what);
        assert_ptr_equal(data, (persiste_data *)&m);
    }

    const int32_t cycle[4] = {3, 3, 3, 2}, two_roots[4] = {2, 2, -1, -1},
                  outside[4] = {2, 2, -1, 7}, ok[4] = {3, 3, 3, -1};
    const double len[4] = {1, 1, 1, 0}, nan_len[4] = {1, NAN, 1, 0},
                 inf_len[4] = {1, 1, INFINITY, 0}, neg_len[4] = {-1, 1, 1, 0};
    const char *const tips[4] = {"a", "b", "c", NULL};
    const char *const same[4] = {"a", "b", "a", NULL};
    const char *const unnamed[4] = {"a", "", "c", NULL};
    const struct {
        const char *what;
        int32_t n;
        const int32_t *parent;
        const double *len;
        const char *const *names;
        int want;
        const char *fragment;
    } p[] = {
        {"no nodes", 0, ok, len, tips, PERSISTE_E_INVALID, "at least one"},
        {"negative count", -5, ok, len, tips, PERSISTE_E_INVALID,
         "at least one"},
        {"cycle", 4, cycle, len, tips, PERSISTE_E_INVALID, "cycle"},
        {"two roots", 4, two_roots, len, tips, PERSISTE_E_INVALID,
         "both roots"},
        {"parent outside", 4, outside, len, tips, PERSISTE_E_INVALID,
         "outside -1..3"},
        {"NaN length", 4, ok, nan_len, tips, PERSISTE_E_DOMAIN,
         "node 1 ('b') has branch length nan"},
        {"Inf length", 4, ok, inf_len, tips, PERSISTE_E_DOMAIN,
         "branch length inf"},
        {"negative length", 4, ok, neg_len, tips, PERSISTE_E_DOMAIN,
         "branch length -1"},
        {"duplicate tips", 4, ok, len, same, PERSISTE_E_NAMES,
         "duplicate tip name 'a'"},
        {"unnamed tip", 4, ok, len, unnamed, PERSISTE_E_INVALID,
         "tip node 1 has no name"},
        {"NULL parents", 4, NULL, len, tips, PERSISTE_E_INVALID,
         "parent is NULL"},
    };
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) {
        persiste_tree *t = (persiste_tree *)&p;
        int rc = persiste_tree_from_parents(&t, p[i].n, p[i].parent,
                                            p[i].len, p[i].names);
        expect(rc, p[i].want, p[i].fragment, p[i].what);
        assert_ptr_equal(t, (persiste_tree *)&p);
    }

    /* Getters: NULL or out of range, nothing written. */
    int32_t parents[4] = {99, 99, 99, 99};
    double lengths[4];
    uint8_t states[3] = {9, 9, 9};
    fill(lengths, 4);
    persiste_data *data = NULL;
    assert_int_equal(persiste_data_from_matrix(&data, tree, st, 2, 3, 3, 1,
                                               names, NULL, 0),
                     PERSISTE_OK);
    expect(persiste_tree_parents(NULL, parents), PERSISTE_E_INVALID,
           "tree is NULL", "parents of NULL");
    expect(persiste_tree_branch_lengths(NULL, lengths), PERSISTE_E_INVALID,
           "tree is NULL", "lengths of NULL");
    expect(persiste_data_states(data, 2, states), PERSISTE_E_INVALID,
           "family 2 out of range", "states past the end");
    expect(persiste_data_states(data, -1, states), PERSISTE_E_INVALID,
           "out of range", "states before the start");
    assert_true(parents[0] == 99 && states[0] == 9 && states[2] == 9);
    untouched(lengths, 4, "lengths");
    assert_null(persiste_tree_label(tree, INT32_MAX));
    assert_null(persiste_data_family_name(data, INT64_MIN));
    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
}

/* ---- Numbers and options: batch calls, model, context ------------------- */
typedef struct {
    persiste_tree *tree, *other;
    persiste_data *data;
    persiste_model *model;
    persiste_ctx *ctx;
    double lg[3], ll[3], w[3];
    double lnl[3], dg[3], dl[3], db[5];
} fixture;

static void fixture_init(fixture *x)
{
    memset(x, 0, sizeof *x);
    const uint8_t st[9] = {1, 0, 1, 0, 0, 1, 1, 1, 0};
    const char *const names[3] = {"A", "B", "C"};
    x->tree = tree_of("((A:1,B:2):1,C:0.5);");
    x->other = tree_of("((A:1,B:2):1,D:0.5);");
    assert_int_equal(persiste_data_from_matrix(&x->data, x->tree, st, 3, 3,
                                               3, 1, names, NULL, 0),
                     PERSISTE_OK);
    assert_int_equal(persiste_model_create(&x->model), PERSISTE_OK);
    assert_int_equal(persiste_ctx_create(&x->ctx), PERSISTE_OK);
    for (int f = 0; f < 3; f++) {
        x->lg[f] = -1 - f;
        x->ll[f] = 0.5 * f;
        x->w[f] = 1;
    }
}

static void fixture_free(fixture *x)
{
    persiste_ctx_destroy(x->ctx);
    persiste_model_destroy(x->model);
    persiste_data_destroy(x->data);
    persiste_tree_destroy(x->other);
    persiste_tree_destroy(x->tree);
}

/* A gradient call that must fail with want, writing nothing. */
static void batch_fails(fixture *x, const persiste_tree *tree, int64_t n,
                        int want, const char *fragment, const char *what,
                        int loglik_too)
{
    fill(x->lnl, 3);
    fill(x->dg, 3);
    fill(x->dl, 3);
    fill(x->db, 5);
    int rc = persiste_gradient_batch(x->ctx, x->model, tree, x->data, n,
                                     x->lg, x->ll, x->w, x->lnl, x->dg, x->dl,
                                     x->db);
    expect(rc, want, fragment, what);
    untouched(x->lnl, 3, what);
    untouched(x->dg, 3, what);
    untouched(x->dl, 3, what);
    untouched(x->db, 5, what);
    if (loglik_too) {
        rc = persiste_loglik_batch(x->ctx, x->model, tree, x->data, n, x->lg,
                                   x->ll, x->lnl);
        expect(rc, want, fragment, what);
        untouched(x->lnl, 3, what);
    }
}

static void test_numbers(void **state)
{
    (void)state;
    fixture x;
    fixture_init(&x);
    const double bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        double keep;
        double *arrays[3] = {x.lg, x.ll, x.w};
        const char *names[3] = {"log_gain[1]", "log_loss[1]", "weight[1]"};
        for (int a = 0; a < 3; a++) {
            keep = arrays[a][1];
            arrays[a][1] = bad[i];
            batch_fails(&x, x.tree, 3, PERSISTE_E_DOMAIN, names[a],
                        "non-finite input", a < 2);
            arrays[a][1] = keep;
        }
    }
    batch_fails(&x, x.tree, 4, PERSISTE_E_INVALID, "n_families is 4",
                "too many families", 1);
    batch_fails(&x, x.tree, -1, PERSISTE_E_INVALID, "n_families is -1",
                "negative family count", 1);
    batch_fails(&x, x.tree, INT64_MAX, PERSISTE_E_INVALID, "n_families",
                "huge family count", 1);
    batch_fails(&x, x.other, 3, PERSISTE_E_INVALID, "another tree",
                "data of another tree", 1);
    batch_fails(&x, NULL, 3, PERSISTE_E_INVALID, "must not be NULL",
                "NULL tree", 1);

    /* Model and context options out of range: refused, nothing changed. */
    const struct {
        int param;
        double value;
        int want;
    } md[] = {{PERSISTE_MODEL_ROOT_FREQ, NAN, PERSISTE_E_DOMAIN},
              {PERSISTE_MODEL_ROOT_FREQ, -0.1, PERSISTE_E_DOMAIN},
              {PERSISTE_MODEL_ROOT_FREQ, 1.5, PERSISTE_E_DOMAIN},
              {PERSISTE_MODEL_ROOT_FREQ, INFINITY, PERSISTE_E_DOMAIN},
              {PERSISTE_MODEL_MIN_BRANCH_LENGTH, NAN, PERSISTE_E_DOMAIN},
              {PERSISTE_MODEL_MIN_BRANCH_LENGTH, -1e-9, PERSISTE_E_DOMAIN},
              {PERSISTE_MODEL_MIN_BRANCH_LENGTH, INFINITY, PERSISTE_E_DOMAIN},
              {PERSISTE_MODEL_CONDITION, 0.5, PERSISTE_E_INVALID},
              {12345, 1.0, PERSISTE_E_INVALID}};
    for (size_t i = 0; i < sizeof md / sizeof *md; i++) {
        double before = 0, after = 0;
        persiste_model_get_double(x.model, PERSISTE_MODEL_ROOT_FREQ, &before);
        expect(persiste_model_set_double(x.model, md[i].param, md[i].value),
               md[i].want, "model: ", "model double");
        persiste_model_get_double(x.model, PERSISTE_MODEL_ROOT_FREQ, &after);
        assert_true(before == after);
    }
    const int64_t ints[][3] = {{PERSISTE_MODEL_CONDITION, 3, 0},
                               {PERSISTE_MODEL_CONDITION, -1, 0},
                               {PERSISTE_MODEL_ROOT_PRIOR, INT64_MAX, 0},
                               {PERSISTE_MODEL_ROOT_PRIOR, INT64_MIN, 0},
                               {PERSISTE_MODEL_ROOT_FREQ, 1, 0},
                               {-7, 0, 0}};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
        expect(persiste_model_set_int(x.model, (int)ints[i][0], ints[i][1]),
               PERSISTE_E_INVALID, "model: ", "model int");
    int64_t v = 123;
    expect(persiste_model_get_int(NULL, PERSISTE_MODEL_CONDITION, &v),
           PERSISTE_E_INVALID, "NULL", "model get of NULL");
    assert_int_equal(v, 123);
    const int64_t threads[] = {-1, 257, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
        expect(persiste_ctx_set_param(x.ctx, PERSISTE_CTX_NTHREADS,
                                      threads[i]),
               PERSISTE_E_INVALID, "outside 0..256", "thread count");
    expect(persiste_ctx_set_param(x.ctx, 99, 1), PERSISTE_E_INVALID,
           "unknown parameter 99", "ctx parameter");
    expect(persiste_ctx_get_param(x.ctx, 99, &v), PERSISTE_E_INVALID,
           "unknown parameter 99", "ctx get parameter");
    assert_int_equal(v, 123);
    expect(persiste_ctx_set_param(NULL, PERSISTE_CTX_NTHREADS, 1),
           PERSISTE_E_INVALID, "NULL", "NULL ctx");
    assert_int_equal(persiste_ctx_get_param(x.ctx, PERSISTE_CTX_NTHREADS, &v),
                     PERSISTE_OK);
    assert_int_equal(v, 1);
    /* Still usable after all that. */
    assert_int_equal(persiste_gradient_batch(x.ctx, x.model, x.tree, x.data,
                                             3, x.lg, x.ll, NULL, x.lnl, x.dg,
                                             x.dl, x.db),
                     PERSISTE_OK);
    assert_true(isfinite(x.lnl[0]) && isfinite(x.db[0]));
    fixture_free(&x);
}

/* Extreme but finite numbers: a clean PERSISTE_E_DOMAIN, or results with
 * no NaN (impossible families -inf with zero derivatives). */
static void test_extreme_numbers(void **state)
{
    (void)state;
    fixture x;
    fixture_init(&x);
    const double logs[] = {-800, -745, -500, 300, 709.8, 710, 1e300,
                           DBL_MAX};
    for (size_t i = 0; i < sizeof logs / sizeof *logs; i++) {
        for (int which = 0; which < 2; which++) {
            double *a = which ? x.ll : x.lg, keep = a[0];
            a[0] = logs[i];
            fill(x.lnl, 3);
            int rc = persiste_gradient_batch(x.ctx, x.model, x.tree, x.data,
                                             3, x.lg, x.ll, NULL, x.lnl, x.dg,
                                             x.dl, x.db);
            a[0] = keep;
            if (rc == PERSISTE_E_DOMAIN)
                continue;
            assert_int_equal(rc, PERSISTE_OK);
            for (int f = 0; f < 3; f++)
                if (isnan(x.lnl[f]) || isnan(x.dg[f]) || isnan(x.dl[f]))
                    fail_msg("log %s %g: family %d: %g %g %g",
                             which ? "loss" : "gain", logs[i], f, x.lnl[f],
                             x.dg[f], x.dl[f]);
        }
    }
    fixture_free(&x);
}

static int make_dir(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/persiste-hostile-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    const char *names[] = {"t.nwk", "t.tab", "wide.Rtab"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    return rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_deep_tree),
        cmocka_unit_test(test_wide_header),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_extreme_numbers),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
