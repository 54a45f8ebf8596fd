/* Presence/absence data: persiste_data_from_matrix (layouts, name binding,
 * every error path) and persiste_data_read (formats, errors, the bundled
 * real datasets). Expected values come from the test's own matrices, from
 * an independent reading of the files below, or from the datasets'
 * SOURCE.md. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"
#include "reader.h"

/* ---- Helpers ------------------------------------------------------------ */

/* Five tips A..E; the data names them in another order. */
static const char *const TREE5 = "((A:1,B:1):1,(C:1,(D:1,E:1):1):1);";

static persiste_tree *tree_of(const char *newick)
{
    persiste_tree *t = NULL;
    int rc = persiste_tree_from_newick(&t, newick);
    if (rc != PERSISTE_OK)
        print_error("newick: %s\n", persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    return t;
}

/* rc must be code and the message must hold every given fragment. */
static void expect_error(int rc, int code, ...)
{
    const char *msg = persiste_last_error();
    if (rc != code)
        print_error("status %d, message: %s\n", rc, msg);
    assert_int_equal(rc, code);
    va_list ap;
    va_start(ap, code);
    for (const char *s = va_arg(ap, const char *); s;
         s = va_arg(ap, const char *)) {
        if (!strstr(msg, s)) {
            print_error("not in the message: %s\n", msg);
            fail_msg("missing: %s", s);
        }
    }
    va_end(ap);
}
#define EXPECT_ERROR(rc, code, ...) expect_error(rc, code, __VA_ARGS__, NULL)

/* Column of the data named like tip `tip` of the tree, by strcmp. */
static int column_of_tip(const persiste_tree *tree, int32_t tip,
                         const char *const *names, int n)
{
    const char *label = persiste_tree_label(tree, tip);
    for (int t = 0; t < n; t++)
        if (strcmp(names[t], label) == 0)
            return t;
    return -1;
}

/* Every family of d must read as truth[f * n_taxa + t] in tree tip order. */
static void check_states(const persiste_data *d, const persiste_tree *tree,
                         const uint8_t *truth, int n_families, int n_taxa,
                         const char *const *names)
{
    int32_t n_tips = persiste_tree_n_tips(tree);
    assert_int_equal(persiste_data_n_families(d), n_families);
    assert_int_equal(persiste_data_n_taxa(d), n_tips);
    uint8_t out[64];
    for (int f = 0; f < n_families; f++) {
        assert_int_equal(persiste_data_states(d, f, out), PERSISTE_OK);
        for (int32_t v = 0; v < n_tips; v++) {
            int t = column_of_tip(tree, v, names, n_taxa);
            assert_true(t >= 0);
            assert_int_equal(out[v], truth[f * n_taxa + t]);
        }
    }
}

static char tmp_dir[64];

static int make_tmp_dir(void **state)
{
    (void)state;
    strcpy(tmp_dir, "/tmp/persiste-test-data-XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int remove_tmp_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write n bytes to a file named name in the temporary folder. */
static const char *write_file(const char *name, const void *p, size_t n)
{
    static char path[160];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
    return path;
}

static const char *write_text(const char *name, const char *text)
{
    return write_file(name, text, strlen(text));
}

/* A gzip member of n bytes of text, written with zlib, appended to the
 * file. */
static void append_gzip_n(const char *path, const char *text, size_t n)
{
    gzFile gz = gzopen(path, "ab");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, text, (unsigned)n), (int)n);
    assert_int_equal(gzclose(gz), Z_OK);
}

static void append_gzip(const char *path, const char *text)
{
    append_gzip_n(path, text, strlen(text));
}

static persiste_data *read_ok(const persiste_tree *tree, const char *path,
                              uint32_t flags)
{
    persiste_data *d = NULL;
    int rc = persiste_data_read(&d, tree, path, flags);
    if (rc != PERSISTE_OK)
        print_error("%s\n", persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    return d;
}

/* Read path expecting code; out must stay untouched. */
static void read_fails(const persiste_tree *tree, const char *path,
                       uint32_t flags, int code, const char *frag1,
                       const char *frag2)
{
    persiste_data *d = (persiste_data *)&d;
    int rc = persiste_data_read(&d, tree, path, flags);
    expect_error(rc, code, frag1, frag2, NULL);
    assert_ptr_equal(d, (persiste_data *)&d);
}

/* ---- from_matrix -------------------------------------------------------- */

enum { NF = 70, NT = 5 }; /* 70 families cross a 64-bit word */
static const char *const SHUFFLED[NT] = {"C", "A", "E", "B", "D"};

/* truth[f * NT + t]: a fixed pseudo-random mix of 0, 1 and unknown. */
static void make_truth(uint8_t *truth)
{
    uint32_t x = 12345;
    for (int i = 0; i < NF * NT; i++) {
        x = x * 1103515245u + 12345u;
        truth[i] = (uint8_t)((x >> 16) % 3);
    }
}

static persiste_data *matrix_ok(const persiste_tree *tree,
                                const uint8_t *states, int64_t fs,
                                int64_t ts, uint32_t flags)
{
    persiste_data *d = NULL;
    int rc = persiste_data_from_matrix(&d, tree, states, NF, NT, fs, ts,
                                       SHUFFLED, NULL, flags);
    if (rc != PERSISTE_OK)
        print_error("%s\n", persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    return d;
}

static void test_matrix_layouts(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE5);
    uint8_t truth[NF * NT], col_major[NF * NT], wide[NF * NT * 3];
    make_truth(truth);
    memset(wide, 9, sizeof wide); /* cells outside the view are invalid */
    for (int f = 0; f < NF; f++)
        for (int t = 0; t < NT; t++) {
            col_major[t * NF + f] = truth[f * NT + t];
            wide[f * 3 * NT + t * 3] = truth[f * NT + t];
        }
    struct {
        const uint8_t *p;
        int64_t fs, ts;
    } views[] = {
        {truth, NT, 1},                                /* row-major */
        {col_major, 1, NF},                            /* column-major */
        {wide, 3 * NT, 3},                             /* strided view */
        {truth + NF * NT - 1, -NT, -1},                /* reversed rows */
        {wide + (NF - 1) * 3 * NT, -3 * NT, 3},        /* negative stride */
    };
    /* reversed views read family f from row NF-1-f, taxon t from NT-1-t */
    uint8_t reversed[NF * NT], flipped[NF * NT];
    const char *rev_names[NT];
    for (int t = 0; t < NT; t++)
        rev_names[t] = SHUFFLED[NT - 1 - t];
    for (int f = 0; f < NF; f++)
        for (int t = 0; t < NT; t++) {
            reversed[f * NT + t] = truth[(NF - 1 - f) * NT + (NT - 1 - t)];
            flipped[f * NT + t] = truth[(NF - 1 - f) * NT + t];
        }
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        persiste_data *d = NULL;
        const char *const *names = i == 3 ? rev_names : SHUFFLED;
        assert_int_equal(persiste_data_from_matrix(&d, tree, views[i].p, NF,
                                                   NT, views[i].fs,
                                                   views[i].ts, names, NULL,
                                                   0),
                         PERSISTE_OK);
        const uint8_t *expect = i == 3 ? reversed : i == 4 ? flipped : truth;
        check_states(d, tree, expect, NF, NT, names);
        /* families are named by their 1-based index */
        assert_string_equal(persiste_data_family_name(d, 0), "1");
        assert_string_equal(persiste_data_family_name(d, NF - 1), "70");
        assert_null(persiste_data_family_name(d, NF));
        assert_null(persiste_data_family_name(d, -1));
        assert_int_equal(persiste_data_n_dropped_taxa(d), 0);
        assert_int_equal(persiste_data_n_dropped_families(d), 0);
        persiste_data_destroy(d);
    }

    /* A zero taxon stride repeats one column in every taxon. */
    persiste_data *d = matrix_ok(tree, truth, NT, 0, 0);
    uint8_t repeated[NF * NT];
    for (int f = 0; f < NF; f++)
        for (int t = 0; t < NT; t++)
            repeated[f * NT + t] = truth[f * NT];
    check_states(d, tree, repeated, NF, NT, SHUFFLED);
    persiste_data_destroy(d);
    persiste_tree_destroy(tree);
}

static void test_matrix_family_names(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE5);
    const uint8_t s[2 * NT] = {1, 0, 0, 0, 0, 0, 1, 2, 0, 0};
    const char *fam[2] = {"galE", "group_12"};
    persiste_data *d = NULL;
    assert_int_equal(persiste_data_from_matrix(&d, tree, s, 2, NT, NT, 1,
                                               SHUFFLED, fam, 0),
                     PERSISTE_OK);
    assert_string_equal(persiste_data_family_name(d, 0), "galE");
    assert_string_equal(persiste_data_family_name(d, 1), "group_12");
    check_states(d, tree, s, 2, NT, SHUFFLED);
    /* the caller's strings are copied, not kept */
    char name[] = "galE";
    const char *fam2[2] = {name, "x"};
    persiste_data *d2 = NULL;
    assert_int_equal(persiste_data_from_matrix(&d2, tree, s, 2, NT, NT, 1,
                                               SHUFFLED, fam2, 0),
                     PERSISTE_OK);
    name[0] = 'X';
    assert_string_equal(persiste_data_family_name(d2, 0), "galE");
    persiste_data_destroy(d2);
    persiste_data_destroy(d);
    persiste_data_destroy(NULL);
    persiste_tree_destroy(tree);
}

static void test_drop_absent_families(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE5);
    /* columns C A E B X (X is not in the tree and is dropped) */
    const char *names[6] = {"C", "A", "E", "B", "D", "X"};
    const uint8_t s[6 * 6] = {
        0, 0, 0, 0, 0, 1, /* f1: absent from every kept taxon */
        0, 0, 1, 0, 0, 0, /* f2: singleton */
        0, 2, 0, 0, 0, 0, /* f3: absent or unknown: may be present */
        0, 0, 0, 0, 0, 0, /* f4: absent everywhere */
        1, 1, 1, 1, 1, 1, /* f5: core */
        2, 2, 2, 2, 2, 0, /* f6: unknown everywhere */
    };
    const char *fam[6] = {"f1", "f2", "f3", "f4", "f5", "f6"};
    const uint32_t extra = PERSISTE_DATA_DROP_EXTRA_TAXA;
    persiste_data *d = NULL;
    assert_int_equal(persiste_data_from_matrix(&d, tree, s, 6, 6, 6, 1,
                                               names, fam, extra),
                     PERSISTE_OK);
    assert_int_equal(persiste_data_n_families(d), 6);
    assert_int_equal(persiste_data_n_all_absent(d), 2);
    assert_int_equal(persiste_data_n_dropped_families(d), 0);
    assert_null(persiste_data_dropped_family(d, 0));
    assert_int_equal(persiste_data_n_dropped_taxa(d), 1);
    assert_string_equal(persiste_data_dropped_taxon(d, 0), "X");
    assert_null(persiste_data_dropped_taxon(d, 1));
    persiste_data_destroy(d);

    d = NULL;
    assert_int_equal(
        persiste_data_from_matrix(&d, tree, s, 6, 6, 6, 1, names, fam,
                                  extra | PERSISTE_DATA_DROP_ABSENT_FAMILIES),
        PERSISTE_OK);
    assert_int_equal(persiste_data_n_families(d), 4);
    assert_int_equal(persiste_data_n_all_absent(d), 0);
    assert_int_equal(persiste_data_n_dropped_families(d), 2);
    assert_string_equal(persiste_data_dropped_family(d, 0), "f1");
    assert_string_equal(persiste_data_dropped_family(d, 1), "f4");
    const char *kept[4] = {"f2", "f3", "f5", "f6"};
    const int rows[4] = {1, 2, 4, 5};
    uint8_t truth[4 * 6];
    for (int k = 0; k < 4; k++) {
        assert_string_equal(persiste_data_family_name(d, k), kept[k]);
        memcpy(truth + 6 * k, s + 6 * rows[k], 6);
    }
    check_states(d, tree, truth, 4, 6, names);
    persiste_data_destroy(d);

    /* Nothing left to keep is an error. */
    d = (persiste_data *)&d;
    EXPECT_ERROR(persiste_data_from_matrix(
                     &d, tree, s + 18, 1, 6, 6, 1, names, NULL,
                     extra | PERSISTE_DATA_DROP_ABSENT_FAMILIES),
                 PERSISTE_E_INVALID, "matrix: all 1 families are absent");
    assert_ptr_equal(d, (persiste_data *)&d);
    persiste_tree_destroy(tree);
}

static void test_matrix_name_errors(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE5);
    uint8_t s[2 * 12] = {0};
    s[0] = 1;
    persiste_data *d = (persiste_data *)&d;
    persiste_data *const untouched = d;

    /* A taxon not in the tree, without and with DROP_EXTRA_TAXA. */
    const char *extra1[6] = {"A", "B", "C", "D", "E", "Aus0004"};
    EXPECT_ERROR(persiste_data_from_matrix(&d, tree, s, 2, 6, 6, 1, extra1,
                                           NULL, 0),
                 PERSISTE_E_NAMES,
                 "matrix: 1 of 6 genomes not in the tree: Aus0004 (use "
                 "PERSISTE_DATA_DROP_EXTRA_TAXA to drop them)");
    assert_ptr_equal(d, untouched);
    d = NULL;
    assert_int_equal(persiste_data_from_matrix(&d, tree, s, 2, 6, 6, 1,
                                               extra1, NULL,
                                               PERSISTE_DATA_DROP_EXTRA_TAXA),
                     PERSISTE_OK);
    assert_string_equal(persiste_data_dropped_taxon(d, 0), "Aus0004");
    persiste_data_destroy(d);
    d = untouched;

    /* Many extra taxa: the first five are listed, then the count. */
    const char *extra7[12] = {"A",  "x1", "B",  "x2", "C",  "x3",
                              "x4", "D",  "x5", "x6", "E",  "x7"};
    EXPECT_ERROR(persiste_data_from_matrix(&d, tree, s, 2, 12, 12, 1, extra7,
                                           NULL, 0),
                 PERSISTE_E_NAMES,
                 "7 of 12 genomes not in the tree: x1, x2, x3, x4, x5, ...");

    /* Tips missing from the data, without and with MISSING_AS_UNKNOWN. */
    const char *three[3] = {"E", "A", "C"};
    EXPECT_ERROR(persiste_data_from_matrix(&d, tree, s, 2, 3, 3, 1, three,
                                           NULL, 0),
                 PERSISTE_E_NAMES,
                 "matrix: 2 of 5 tree tips missing from the data: B, D",
                 "PERSISTE_DATA_MISSING_AS_UNKNOWN");
    d = NULL;
    const uint8_t s3[2 * 3] = {1, 0, 2, 0, 1, 1};
    assert_int_equal(
        persiste_data_from_matrix(&d, tree, s3, 2, 3, 3, 1, three, NULL,
                                  PERSISTE_DATA_MISSING_AS_UNKNOWN),
        PERSISTE_OK);
    const char *five[5] = {"E", "A", "C", "B", "D"};
    const uint8_t s5[2 * 5] = {1, 0, 2, 2, 2, 0, 1, 1, 2, 2};
    check_states(d, tree, s5, 2, 5, five);
    persiste_data_destroy(d);
    d = untouched;

    /* No name matches at all. */
    const char *none[2] = {"p", "q"};
    EXPECT_ERROR(persiste_data_from_matrix(&d, tree, s, 2, 2, 2, 1, none,
                                           NULL,
                                           PERSISTE_DATA_DROP_EXTRA_TAXA |
                                               PERSISTE_DATA_MISSING_AS_UNKNOWN),
                 PERSISTE_E_NAMES, "none of the 2 genomes is a tip");

    /* Duplicate names, among tips and among extra names. */
    const char *dup[6] = {"A", "B", "C", "B", "D", "E"};
    EXPECT_ERROR(persiste_data_from_matrix(&d, tree, s, 2, 6, 6, 1, dup,
                                           NULL, 0),
                 PERSISTE_E_NAMES, "taxon B appears twice (columns 2 and 4)");
    const char *dup_extra[7] = {"A", "y", "B", "C", "y", "D", "E"};
    EXPECT_ERROR(persiste_data_from_matrix(&d, tree, s, 2, 7, 7, 1,
                                           dup_extra, NULL,
                                           PERSISTE_DATA_DROP_EXTRA_TAXA),
                 PERSISTE_E_NAMES, "taxon y appears twice");
    assert_ptr_equal(d, untouched);
    persiste_tree_destroy(tree);
}

static void test_matrix_bad_values(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE5);
    const uint8_t s[3 * NT] = {0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
    const char *fam[3] = {"galE", "pbp5", "vanA"};
    persiste_data *d = (persiste_data *)&d;
    persiste_data *const untouched = d;

    uint8_t bad[3 * NT];
    memcpy(bad, s, sizeof bad);
    bad[2 * NT + 2] = 7; /* family 3, column 3 (taxon E) */
    const char *null_taxon[NT] = {"C", "A", NULL, "B", "D"};
    const char *null_fam[3] = {"a", NULL, "c"};
    /* Each case changes one argument of a valid call. */
    const struct {
        persiste_data **out;
        const persiste_tree *tree;
        const uint8_t *states;
        int64_t nf, nt, fs, ts;
        const char *const *taxa, *const *fams;
        uint32_t flags;
        int code;
        const char *frag;
    } cases[] = {
        {&d, tree, bad, 3, NT, NT, 1, SHUFFLED, fam, 0, PERSISTE_E_DOMAIN,
         "matrix: family 3 (vanA), taxon E: state 7 is not 0"},
        {&d, tree, bad, 3, NT, NT, 1, SHUFFLED, NULL, 0, PERSISTE_E_DOMAIN,
         "family 3 (3), taxon E"},
        {NULL, tree, s, 3, NT, NT, 1, SHUFFLED, fam, 0, PERSISTE_E_INVALID,
         "out is NULL"},
        {&d, NULL, s, 3, NT, NT, 1, SHUFFLED, fam, 0, PERSISTE_E_INVALID,
         "tree is NULL"},
        {&d, tree, NULL, 3, NT, NT, 1, SHUFFLED, fam, 0, PERSISTE_E_INVALID,
         "states is NULL"},
        {&d, tree, s, 3, NT, NT, 1, NULL, fam, 0, PERSISTE_E_INVALID,
         "taxon_names is NULL"},
        {&d, tree, s, 0, NT, NT, 1, SHUFFLED, fam, 0, PERSISTE_E_INVALID,
         "0 families x 5 taxa"},
        {&d, tree, s, 3, -1, NT, 1, SHUFFLED, fam, 0, PERSISTE_E_INVALID,
         "must be positive"},
        {&d, tree, s, 3, NT, NT, 1, SHUFFLED, fam, 1u << 9,
         PERSISTE_E_INVALID, "unknown flag bits 0x200"},
        {&d, tree, s, 3, NT, NT, 1, null_taxon, fam, 0, PERSISTE_E_INVALID,
         "taxon name 3 is NULL"},
        {&d, tree, s, 3, NT, NT, 1, SHUFFLED, null_fam, 0,
         PERSISTE_E_INVALID, "family name 2 is NULL"},
        /* strides whose offsets cannot be represented */
        {&d, tree, s, 3, NT, INT64_MAX, 1, SHUFFLED, fam, 0,
         PERSISTE_E_OVERFLOW, "strides"},
        {&d, tree, s, 3, NT, INT64_MIN, INT64_MIN, SHUFFLED, fam, 0,
         PERSISTE_E_OVERFLOW, "strides"},
        {&d, tree, s, 3, NT, INT64_MAX / 3, INT64_MAX / 5, SHUFFLED, fam, 0,
         PERSISTE_E_OVERFLOW, "strides"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        EXPECT_ERROR(persiste_data_from_matrix(
                         cases[i].out, cases[i].tree, cases[i].states,
                         cases[i].nf, cases[i].nt, cases[i].fs, cases[i].ts,
                         cases[i].taxa, cases[i].fams, cases[i].flags),
                     cases[i].code, cases[i].frag);
    assert_ptr_equal(d, untouched);

    /* Accessors on NULL and out-of-range input. */
    uint8_t out[NT];
    EXPECT_ERROR(persiste_data_states(NULL, 0, out), PERSISTE_E_INVALID,
                 "data is NULL");
    assert_int_equal(persiste_data_n_families(NULL), 0);
    assert_int_equal(persiste_data_n_taxa(NULL), 0);
    assert_null(persiste_data_family_name(NULL, 0));
    assert_null(persiste_data_dropped_taxon(NULL, 0));
    d = NULL;
    assert_int_equal(persiste_data_from_matrix(&d, tree, s, 3, NT, NT, 1,
                                               SHUFFLED, fam, 0),
                     PERSISTE_OK);
    EXPECT_ERROR(persiste_data_states(d, 3, out), PERSISTE_E_INVALID,
                 "family 3 out of range");
    EXPECT_ERROR(persiste_data_states(d, -1, out), PERSISTE_E_INVALID,
                 "out of range");
    EXPECT_ERROR(persiste_data_states(d, 0, NULL), PERSISTE_E_INVALID,
                 "out is NULL");
    assert_int_equal(d->fingerprint, tree->fingerprint);
    persiste_data_destroy(d);
    persiste_tree_destroy(tree);
}

/* Bits per cell, not bytes or doubles: 2 words per 64 families per tip. */
static void test_storage_is_bits(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE5);
    enum { N = 1000 };
    static uint8_t s[N * NT];
    for (int i = 0; i < N * NT; i++)
        s[i] = (uint8_t)(i % 7 == 0);
    persiste_data *d = NULL;
    assert_int_equal(persiste_data_from_matrix(&d, tree, s, N, NT, NT, 1,
                                               SHUFFLED, NULL, 0),
                     PERSISTE_OK);
    assert_int_equal(d->n_words, (N + 63) / 64);
    /* family 999 of taxon "C" (column 0) is bit 39 of word 15 of tip 2 */
    int32_t tip_c = 2;
    assert_string_equal(persiste_tree_label(tree, tip_c), "C");
    assert_int_equal(d->present[15 * NT + tip_c] >> 39 & 1,
                     (999 * NT) % 7 == 0);
    persiste_data_destroy(d);
    persiste_tree_destroy(tree);
}

/* ---- File reader -------------------------------------------------------- */

/* The 4 x 5 matrix every small file below encodes, by tip name. */
static const char *const FILE_TAXA[NT] = {"B", "D", "A", "C", "E"};
static const uint8_t FILE_STATES[4 * NT] = {
    1, 0, 1, 1, 0, /* galE */
    0, 0, 0, 1, 2, /* pbp5 */
    1, 1, 1, 1, 1, /* core */
    0, 2, 2, 0, 1, /* odd */
};

static void check_small(const persiste_data *d, const persiste_tree *tree)
{
    check_states(d, tree, FILE_STATES, 4, NT, FILE_TAXA);
    assert_string_equal(persiste_data_family_name(d, 0), "galE");
    assert_string_equal(persiste_data_family_name(d, 3), "odd");
}

static void test_read_formats(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE5);
    const char *texts[][2] = {
        {"plain.Rtab", "Gene\tB\tD\tA\tC\tE\n"
                       "galE\t1\t0\t1\t1\t0\n"
                       "pbp5\t0\t0\t0\t1\t?\n"
                       "core\t1\t1\t1\t1\t1\n"
                       "odd\t0\t-\tNA\t0\t1\n"},
        {"crlf.tsv", "\r\nGene\tB\tD\tA\tC\tE\r\n"
                     "galE\t1\t0\t1\t1\t0\r\n"
                     "# a comment line\r\n"
                     "pbp5\t0\t0\t0\t1\t\r\n"
                     "\r\n"
                     "core\t1\t1\t1\t1\t1\r\n"
                     "odd\t0\t ? \tNA\t0\t1"},
        {"rows.csv", "taxon,galE,pbp5,core,odd\n"
                     "B,1, 0 ,1,0\n"
                     "D,0,0,1,-\n"
                     "A,1,0,1,\n"
                     " C , 1 , 1 ,1,0\n"
                     "E,0,\t?\t,1,1\n"},
        {"quoted.csv", ",\"galE\",pbp5,\"core\",\"odd\"\n"
                       "\"B\",1,0,\"1\",0\n"
                       "D,\"0\",0,1,\"\"\n"
                       "A,1,0,1,NA\n"
                       "C,1,1,1,0\n"
                       "E,0,,1,1\n"},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        persiste_data *d = read_ok(tree, write_text(texts[i][0],
                                                    texts[i][1]), 0);
        check_small(d, tree);
        persiste_data_destroy(d);
    }
    /* Forcing the orientation gives the same data; forcing the wrong one
     * makes the families look like genomes. */
    const char *rows = write_text("rows.csv", texts[2][1]);
    persiste_data *d = read_ok(tree, rows, PERSISTE_DATA_TAXA_IN_ROWS);
    check_small(d, tree);
    persiste_data_destroy(d);
    read_fails(tree, rows, PERSISTE_DATA_TAXA_IN_COLUMNS, PERSISTE_E_NAMES,
               "rows.csv: none of the 4 genomes is a tip", NULL);
    read_fails(tree, rows,
               PERSISTE_DATA_TAXA_IN_ROWS | PERSISTE_DATA_TAXA_IN_COLUMNS,
               PERSISTE_E_INVALID, "exclusive", NULL);
    persiste_tree_destroy(tree);
}

static void test_read_names_with_delimiters(void **state)
{
    (void)state;
    /* Names with commas, quotes and '#', bound through parent arrays. */
    const int32_t parent[4] = {3, 3, 3, -1};
    const double len[4] = {1, 1, 1, 0};
    const char *labels[4] = {"name, with comma", "19647_8#40", "say \"x\"",
                             ""};
    persiste_tree *tree = NULL;
    assert_int_equal(persiste_tree_from_parents(&tree, 4, parent, len,
                                                labels),
                     PERSISTE_OK);
    const char *csv = "Gene,\"name, with comma\",19647_8#40,\"say \"\"x\"\"\"\n"
                      "#comment,1,1,1\n"
                      "fam,1,0,1\n";
    persiste_data *d = read_ok(tree, write_text("names.csv", csv), 0);
    const uint8_t truth[3] = {1, 0, 1};
    check_states(d, tree, truth, 1, 3, labels);
    persiste_data_destroy(d);
    persiste_tree_destroy(tree);
}

static void test_read_gzip(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE5);
    const char *head = "Gene\tB\tD\tA\tC\tE\n"
                       "galE\t1\t0\t1\t1\t0\n"
                       "pbp5\t0\t0\t0\t1\t?\n";
    const char *tail = "core\t1\t1\t1\t1\t1\n"
                       "odd\t0\t-\tNA\t0\t1\n";
    char whole[256];
    snprintf(whole, sizeof whole, "%s%s", head, tail);

    char one_gz[256];
    snprintf(one_gz, sizeof one_gz, "%s", write_text("one.Rtab.gz", ""));
    append_gzip(one_gz, whole);
    persiste_data *d = read_ok(tree, one_gz, 0);
    check_small(d, tree);
    persiste_data_destroy(d);

    /* Two concatenated members, then zero padding. */
    const char *path = write_text("two.Rtab.gz", "");
    append_gzip(path, head);
    append_gzip(path, tail);
    d = read_ok(tree, path, 0);
    check_small(d, tree);
    persiste_data_destroy(d);
    FILE *fp = fopen(path, "ab");
    assert_non_null(fp);
    assert_int_equal(fwrite("\0\0\0\0", 1, 4, fp), 4);
    assert_int_equal(fclose(fp), 0);
    d = read_ok(tree, path, 0);
    check_small(d, tree);
    persiste_data_destroy(d);

    /* Corrupt and truncated gzip data (one member). */
    static unsigned char gz[512];
    fp = fopen(one_gz, "rb");
    assert_non_null(fp);
    size_t n = fread(gz, 1, sizeof gz, fp);
    fclose(fp);
    assert_true(n > 40);
    read_fails(tree, write_file("trunc.gz", gz, n / 2), 0, PERSISTE_E_IO,
               "trunc.gz: truncated gzip data", NULL);
    gz[12] ^= 0x55;
    gz[13] ^= 0xff;
    read_fails(tree, write_file("bad.gz", gz, n), 0, PERSISTE_E_IO,
               "bad.gz: ", "gzip");
    read_fails(tree, write_file("magic.gz", "\x1f\x8b", 2), 0,
               PERSISTE_E_IO, "magic.gz: truncated gzip data", NULL);
    persiste_tree_destroy(tree);
}

static void test_read_errors(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE5);
    const char *hdr = "Gene\tB\tD\tA\tC\tE\n";
    char text[512];
    struct {
        const char *name, *body;
        int code;
        const char *frag1, *frag2;
    } cases[] = {
        {"short.Rtab", "galE\t1\t0\t1\t1\t0\npbp5\t0\t0\t1\t1\n",
         PERSISTE_E_PARSE, "short.Rtab: line 3: 5 fields, expected 6", NULL},
        {"long.Rtab", "galE\t1\t0\t1\t1\t0\t1\t0\n", PERSISTE_E_PARSE,
         "long.Rtab: line 2: 8 fields, expected 6", NULL},
        {"trail.Rtab", "galE\t1\t0\t1\t1\t0\t\n", PERSISTE_E_PARSE,
         "line 2: 7 fields, expected 6", NULL},
        {"seven.Rtab", "galE\t1\t0\t1\t1\t0\npbp5\t0\t0\t7\t1\t0\n",
         PERSISTE_E_PARSE,
         "seven.Rtab: line 3, column 4 (genome A, family pbp5): '7' is not "
         "0/1",
         "copy numbers are not read"},
        {"word.Rtab", "galE\t1\t0\t1\t1\tyes\n", PERSISTE_E_PARSE,
         "line 2, column 6 (genome E, family galE): 'yes' is not 0/1 or "
         "unknown",
         NULL},
        {"quote.Rtab", "galE\t1\t\"0\t1\t1\t0\n", PERSISTE_E_PARSE,
         "quote.Rtab: line 2, column 3: unterminated quote", NULL},
        {"after.Rtab", "galE\t1\t\"0\"x\t1\t1\t0\n", PERSISTE_E_PARSE,
         "line 2, column 3: text after a closing quote", NULL},
        {"headonly.Rtab", "", PERSISTE_E_PARSE,
         "headonly.Rtab: no data rows", NULL},
        {"comments.Rtab", "# only\n#comments\n\n", PERSISTE_E_PARSE,
         "no data rows", NULL},
        {"extra.Rtab", NULL, PERSISTE_E_NAMES,
         "extra.Rtab: 1 of 6 genomes not in the tree: ref", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].body)
            snprintf(text, sizeof text, "%s%s", hdr, cases[i].body);
        else
            snprintf(text, sizeof text, "Gene\tB\tD\tref\tA\tC\tE\n"
                                        "galE\t1\t0\t1\t1\t1\t0\n");
        read_fails(tree, write_text(cases[i].name, text), 0, cases[i].code,
                   cases[i].frag1, cases[i].frag2);
    }
    read_fails(tree, write_text("empty.Rtab", ""), 0, PERSISTE_E_PARSE,
               "empty.Rtab: empty file", NULL);
    read_fails(tree, write_text("blank.Rtab", " \n\r\n\n"), 0,
               PERSISTE_E_PARSE, "blank.Rtab: empty file", NULL);
    read_fails(tree, write_text("one.txt", "Gene\ngalE\n"), 0,
               PERSISTE_E_PARSE, "one.txt: line 1: the header has no names",
               NULL);
    read_fails(tree, write_text("emptyname.csv", "Gene,A,,B\n"), 0,
               PERSISTE_E_PARSE, "line 1, column 3: empty name", NULL);
    read_fails(tree, write_text("other.csv", "Gene,p,q\nf,1,0\n"), 0,
               PERSISTE_E_NAMES,
               "other.csv: neither the header (p, ...) nor the first column "
               "(f, ...)",
               NULL);
    const char *missing = "/nonexistent/persiste/x.Rtab";
    read_fails(tree, missing, 0, PERSISTE_E_IO,
               "/nonexistent/persiste/x.Rtab: cannot open", NULL);
    read_fails(tree, tmp_dir, 0, PERSISTE_E_IO, tmp_dir, NULL);
    /* Binary garbage, with and without NUL bytes. */
    unsigned char junk[4096];
    uint32_t x = 7;
    for (size_t i = 0; i < sizeof junk; i++) {
        x = x * 1664525u + 1013904223u;
        junk[i] = (unsigned char)(x >> 24);
    }
    junk[0] = 'G';
    read_fails(tree, write_file("junk.bin", junk, sizeof junk), 0,
               PERSISTE_E_PARSE, "junk.bin: line ", "NUL byte");
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = junk[i] ? junk[i] : 'z';
    persiste_data *d = (persiste_data *)&d;
    assert_true(persiste_data_read(&d, tree,
                                   write_file("junk2.bin", junk,
                                              sizeof junk),
                                   0) < 0);
    assert_ptr_equal(d, (persiste_data *)&d);
    EXPECT_ERROR(persiste_data_read(NULL, tree, "x", 0), PERSISTE_E_INVALID,
                 "out is NULL");
    EXPECT_ERROR(persiste_data_read(&d, NULL, "x", 0), PERSISTE_E_INVALID,
                 "tree is NULL");
    EXPECT_ERROR(persiste_data_read(&d, tree, NULL, 0), PERSISTE_E_INVALID,
                 "path is NULL");
    persiste_tree_destroy(tree);
}

/* A header of a million genomes parses in linear time. */
static void test_read_wide_header(void **state)
{
    (void)state;
    enum { N = 1000000 };
    size_t cap = (size_t)N * 12 + 64, n = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    n += (size_t)sprintf(text + n, "Gene");
    for (int i = 0; i < N; i++)
        n += (size_t)sprintf(text + n, "\tg%d", i);
    n += (size_t)sprintf(text + n, "\nfam");
    for (int i = 0; i < N; i++) {
        text[n++] = '\t';
        text[n++] = i % 3 == 0 ? '1' : '0';
    }
    text[n++] = '\n';
    const char *path = write_file("wide.Rtab", text, n);
    free(text);
    persiste_tree *tree = tree_of("((g3:1,g999999:1):1,g4:1);");
    persiste_data *d = read_ok(tree, path, PERSISTE_DATA_DROP_EXTRA_TAXA);
    assert_int_equal(persiste_data_n_dropped_taxa(d), N - 3);
    assert_string_equal(persiste_data_dropped_taxon(d, 0), "g0");
    assert_string_equal(persiste_data_dropped_taxon(d, N - 4), "g999998");
    uint8_t out[3];
    assert_int_equal(persiste_data_states(d, 0, out), PERSISTE_OK);
    assert_int_equal(out[0], 1); /* g3 */
    assert_int_equal(out[1], 1); /* g999999 */
    assert_int_equal(out[2], 0); /* g4 */
    persiste_data_destroy(d);
    persiste_tree_destroy(tree);
}

/* ---- Streaming: tables spanning many chunks ----------------------------- */

/* A star tree of n tips t0..t{n-1}. */
static persiste_tree *star_tree(int n)
{
    char *nwk = malloc((size_t)n * 16 + 8);
    assert_non_null(nwk);
    size_t k = 0;
    nwk[k++] = '(';
    for (int i = 0; i < n; i++)
        k += (size_t)sprintf(nwk + k, "%st%d:1", i ? "," : "", i);
    strcpy(nwk + k, ");");
    persiste_tree *t = tree_of(nwk);
    free(nwk);
    return t;
}

enum { BIG_TAXA = 150, BIG_FAMILIES = 15000 };

/* An Rtab of BIG_FAMILIES rows over genomes t{BIG_TAXA-1}..t0 (reversed,
 * so the columns are not in tip order), with '?' and "NA" (not in the first
 * ten cells) here and there,
 * comments and blank lines; `eol` ends each line. 4.7 MB: more chunks of
 * the reader than its ring holds. With CRLF, a comment after the header
 * puts a family's CR at the end of the first chunk and its LF in the next.
 * *len gets its size; the text is malloc'd. */
static char *big_table(const char *eol, size_t *len)
{
    size_t cap = (size_t)BIG_FAMILIES * (BIG_TAXA * 3 + 32) + 4096, n = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    n += (size_t)sprintf(text + n, "Gene");
    for (int t = BIG_TAXA - 1; t >= 0; t--)
        n += (size_t)sprintf(text + n, "\tt%d", t);
    n += (size_t)sprintf(text + n, "%s", eol);
    size_t rows = n; /* where the padding comment goes */
    uint32_t x = 99;
    for (int f = 0; f < BIG_FAMILIES; f++) {
        if (f % 997 == 500)
            n += (size_t)sprintf(text + n, "# comment%s%s", eol, eol);
        n += (size_t)sprintf(text + n, "fam%d", f);
        for (int t = 0; t < BIG_TAXA; t++) {
            x = x * 1664525u + 1013904223u;
            unsigned r = x >> 24;
            n += (size_t)sprintf(text + n, "\t%s",
                                 r < 3         ? "?"
                                 : r < 5 && t > 9 ? "NA"
                                 : r < 100        ? "1"
                                                  : "0");
        }
        n += (size_t)sprintf(text + n, "%s", eol);
    }
    if (!strcmp(eol, "\r\n")) {
        /* a comment of q bytes after the header moves the last CR before
         * the first chunk's end onto its last byte: a family's line ends
         * in one chunk and its LF starts the next */
        size_t c = PERSISTE__CHUNK - 4;
        while (text[c] != '\r')
            c--;
        size_t q = PERSISTE__CHUNK - 1 - c;
        assert_true(c > rows && q >= 3 && n + q < cap);
        memmove(text + rows + q, text + rows, n - rows);
        text[rows] = '#';
        memset(text + rows + 1, 'x', q - 3);
        memcpy(text + rows + q - 2, "\r\n", 2);
        n += q;
        assert_true(text[PERSISTE__CHUNK - 1] == '\r' &&
                    text[PERSISTE__CHUNK] == '\n');
    }
    assert_true(n < cap);
    *len = n;
    return text;
}

/* Families of a and b read alike. */
static void same_data(const persiste_data *a, const persiste_data *b)
{
    int64_t nf = persiste_data_n_families(a);
    int32_t nt = persiste_data_n_taxa(a);
    assert_int_equal(persiste_data_n_families(b), nf);
    assert_int_equal(persiste_data_n_taxa(b), nt);
    uint8_t *sa = malloc((size_t)nt), *sb = malloc((size_t)nt);
    assert_true(sa && sb);
    for (int64_t f = 0; f < nf; f++) {
        assert_string_equal(persiste_data_family_name(a, f),
                            persiste_data_family_name(b, f));
        assert_int_equal(persiste_data_states(a, f, sa), PERSISTE_OK);
        assert_int_equal(persiste_data_states(b, f, sb), PERSISTE_OK);
        assert_memory_equal(sa, sb, (size_t)nt);
    }
    free(sa);
    free(sb);
}

/* gzip members of text cut at the given offsets (0-terminated list). */
static const char *write_gzip(const char *name, const char *text, size_t n,
                              const size_t *cuts)
{
    static char path[160];
    snprintf(path, sizeof path, "%s", write_text(name, ""));
    size_t at = 0;
    for (const size_t *c = cuts; *c; c++) {
        append_gzip_n(path, text + at, *c - at);
        at = *c;
    }
    append_gzip_n(path, text + at, n - at);
    return path;
}

static void test_read_streamed(void **state)
{
    (void)state;
    persiste_tree *tree = star_tree(BIG_TAXA);
    size_t n;
    char *text = big_table("\n", &n);
    assert_true(n > PERSISTE__RING * PERSISTE__CHUNK);
    persiste_data *plain = read_ok(tree, write_file("big.Rtab", text, n), 0);
    assert_int_equal(persiste_data_n_families(plain), BIG_FAMILIES);
    /* the truth, spot-checked: the first cell of the last family is in
     * genome t149, the last tip */
    char last_name[32];
    snprintf(last_name, sizeof last_name, "\nfam%d\t", BIG_FAMILIES - 1);
    const char *last = strstr(text, last_name) + strlen(last_name);
    uint8_t out[BIG_TAXA];
    assert_int_equal(persiste_data_states(plain, BIG_FAMILIES - 1, out),
                     PERSISTE_OK);
    assert_int_equal(out[BIG_TAXA - 1],
                     *last == '1' ? 1 : *last == '0' ? 0 : 2);

    const size_t none[] = {0};
    persiste_data *d = read_ok(tree, write_gzip("big.gz", text, n, none), 0);
    same_data(plain, d);
    persiste_data_destroy(d);
    /* members cut mid-line, one of them empty, then 100 kB of padding */
    const size_t cuts[] = {1, 300001, 300001, 777777, n - 3, 0};
    const char *path = write_gzip("members.gz", text, n, cuts);
    d = read_ok(tree, path, 0);
    same_data(plain, d);
    persiste_data_destroy(d);
    char *zeros = calloc(100000, 1);
    assert_non_null(zeros);
    FILE *fp = fopen(path, "ab");
    assert_non_null(fp);
    assert_int_equal(fwrite(zeros, 1, 100000, fp), 100000);
    assert_int_equal(fclose(fp), 0);
    d = read_ok(tree, path, 0);
    same_data(plain, d);
    persiste_data_destroy(d);
    /* padding, then another member: not padding */
    append_gzip(path, "x");
    read_fails(tree, path, 0, PERSISTE_E_IO, "members.gz: corrupt gzip data",
               NULL);
    free(zeros);

    /* CRLF line ends (some CR at a chunk's end, its LF in the next) */
    size_t n2;
    char *crlf = big_table("\r\n", &n2);
    d = read_ok(tree, write_gzip("crlf.gz", crlf, n2, none), 0);
    same_data(plain, d);
    persiste_data_destroy(d);
    free(crlf);
    persiste_data_destroy(plain);

    /* Errors far in: the same message as for the plain text, which is the
     * oracle for the line; the column and names are checked outright. */
    char *bad = strstr(text, "\nfam3500\t") + 1; /* line 3505 */
    int64_t line = 1;
    for (const char *p = text; p < bad; p++)
        line += *p == '\n';
    /* the 8th cell (genome t142): the 7 before are one byte each */
    char *cell = bad + strlen("fam3500\t") + 2 * 7;
    char saved = *cell;
    *cell = 'x';
    char frag[128];
    snprintf(frag, sizeof frag,
             "line %lld, column 9 (genome t142, family fam3500): 'x' is not",
             (long long)line);
    read_fails(tree, write_file("bad.Rtab", text, n), 0, PERSISTE_E_PARSE,
               "bad.Rtab: ", frag);
    read_fails(tree, write_gzip("bad.gz", text, n, none), 0,
               PERSISTE_E_PARSE, "bad.gz: ", frag);
    *cell = '\t'; /* a field too many */
    snprintf(frag, sizeof frag, "line %lld: %d fields, expected %d",
             (long long)line, BIG_TAXA + 2, BIG_TAXA + 1);
    read_fails(tree, write_gzip("ragged.gz", text, n, cuts), 0,
               PERSISTE_E_PARSE, "ragged.gz: ", frag);
    *cell = '\0';
    snprintf(frag, sizeof frag, "line %lld: NUL byte", (long long)line);
    read_fails(tree, write_gzip("nul.gz", text, n, cuts), 0,
               PERSISTE_E_PARSE, "nul.gz: ", frag);
    *cell = saved;

    /* Truncated: whatever lines came first, the truncation is reported. */
    const char *whole = write_gzip("whole.gz", text, n, none);
    fp = fopen(whole, "rb");
    assert_non_null(fp);
    static unsigned char gz[1 << 20];
    size_t gz_n = fread(gz, 1, sizeof gz, fp);
    fclose(fp);
    assert_true(gz_n > 1000 && gz_n < sizeof gz);
    read_fails(tree, write_file("cut.gz", gz, gz_n * 3 / 5), 0,
               PERSISTE_E_IO, "cut.gz: truncated gzip data (after ",
               "inflated bytes)");
    gz[gz_n / 2] ^= 0x5a;
    gz[gz_n / 2 + 1] ^= 0xa5;
    read_fails(tree, write_file("flip.gz", gz, gz_n), 0, PERSISTE_E_IO,
               "flip.gz: corrupt gzip data", NULL);
    free(text);
    persiste_tree_destroy(tree);
}

/* Lines of a gzip file that inflates 1000-fold: the reader sizes its
 * first slot from the file (8 times it), smaller than the others, and that
 * slot comes round again after the ring's other slots. Every line comes
 * back whole, in order, across the chunks of both sizes. */
static void test_read_lines_small_first_slot(void **state)
{
    (void)state;
    enum { LINES = 50000, WIDTH = 99 };
    size_t n = (size_t)LINES * (WIDTH + 1);
    char *text = malloc(n);
    assert_non_null(text);
    for (size_t i = 0; i < LINES; i++) { /* i % 7 'b's, then 'a's */
        char *p = text + i * (WIDTH + 1);
        memset(p, 'a', WIDTH);
        memset(p, 'b', i % 7);
        p[WIDTH] = '\n';
    }
    const size_t none[] = {0};
    const char *path = write_gzip("lines.gz", text, n, none);
    persiste__lines r;
    assert_int_equal(persiste__lines_open(&r, path), PERSISTE_OK);
    assert_true(r.slot_cap[0] < PERSISTE__CHUNK &&
                n > r.slot_cap[0] + PERSISTE__RING * PERSISTE__CHUNK);
    char *line, *eol;
    size_t i = 0;
    int rc;
    while ((rc = persiste__lines_next(&r, &line, &eol)) > 0) {
        assert_true(i < LINES && eol - line == WIDTH);
        assert_memory_equal(line, text + i * (WIDTH + 1), WIDTH);
        i++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(i, LINES);
    persiste__lines_close(&r);
    free(text);
}

/* The layout-specific packers (taxa contiguous, families contiguous)
 * against the general one (a strided view), with dropped families, extra
 * taxa and tips without a column, over several words of each. */
static void test_matrix_fast_layouts(void **state)
{
    (void)state;
    enum { TIPS = 140, TAXA = 150, FAMS = 200 };
    persiste_tree *tree = star_tree(TIPS);
    /* columns: t{TAXA-1}.. t0 minus every 13th tip, plus x0.. extras */
    char names_buf[TAXA][12];
    const char *names[TAXA];
    for (int t = 0, tip = TIPS - 1, k = 0; t < TAXA; t++) {
        while (tip >= 0 && tip % 13 == 5)
            tip--;
        if (tip >= 0)
            snprintf(names_buf[t], sizeof names_buf[t], "t%d", tip--);
        else
            snprintf(names_buf[t], sizeof names_buf[t], "x%d", k++);
        names[t] = names_buf[t];
    }
    static uint8_t rows[FAMS * TAXA], cols[FAMS * TAXA],
        wide[FAMS * TAXA * 2];
    uint32_t x = 5;
    for (int f = 0; f < FAMS; f++)
        for (int t = 0; t < TAXA; t++) {
            x = x * 1103515245u + 12345u;
            unsigned r = (x >> 16) % 8;
            /* every 7th family: absent (or only in extra taxa) */
            uint8_t v = f % 7 == 3 && names[t][0] == 't' ? 0
                        : r < 1 ? 2 : r < 4 ? 1 : 0;
            rows[f * TAXA + t] = cols[t * FAMS + f] =
                wide[f * TAXA * 2 + t * 2] = v;
        }
    const uint32_t flags = PERSISTE_DATA_DROP_EXTRA_TAXA |
                           PERSISTE_DATA_MISSING_AS_UNKNOWN;
    for (int drop = 0; drop < 2; drop++) {
        uint32_t fl = flags | (drop ? PERSISTE_DATA_DROP_ABSENT_FAMILIES : 0);
        persiste_data *a = NULL, *b = NULL, *c = NULL;
        assert_int_equal(persiste_data_from_matrix(&a, tree, wide, FAMS,
                                                   TAXA, TAXA * 2, 2, names,
                                                   NULL, fl),
                         PERSISTE_OK);
        assert_int_equal(persiste_data_from_matrix(&b, tree, rows, FAMS,
                                                   TAXA, TAXA, 1, names,
                                                   NULL, fl),
                         PERSISTE_OK);
        assert_int_equal(persiste_data_from_matrix(&c, tree, cols, FAMS,
                                                   TAXA, 1, FAMS, names,
                                                   NULL, fl),
                         PERSISTE_OK);
        assert_int_equal(persiste_data_n_dropped_families(a),
                         drop ? (FAMS + 6) / 7 : 0);
        same_data(a, b);
        same_data(a, c);
        assert_int_equal(persiste_data_n_all_absent(b),
                         persiste_data_n_all_absent(a));
        assert_int_equal(persiste_data_n_all_absent(c),
                         persiste_data_n_all_absent(a));
        persiste_data_destroy(a);
        persiste_data_destroy(b);
        persiste_data_destroy(c);
    }
    /* a bad state is reported alike whatever the layout */
    rows[57 * TAXA + 99] = cols[99 * FAMS + 57] = 3;
    persiste_data *d = (persiste_data *)&d;
    EXPECT_ERROR(persiste_data_from_matrix(&d, tree, rows, FAMS, TAXA, TAXA,
                                           1, names, NULL, flags),
                 PERSISTE_E_DOMAIN, "family 58 (58)", "state 3");
    EXPECT_ERROR(persiste_data_from_matrix(&d, tree, cols, FAMS, TAXA, 1,
                                           FAMS, names, NULL, flags),
                 PERSISTE_E_DOMAIN, "family 58 (58)", "state 3");
    assert_ptr_equal(d, (persiste_data *)&d);
    persiste_tree_destroy(tree);
}

/* persiste__transpose64 against its definition, bit by bit. */
static void test_transpose64(void **state)
{
    (void)state;
    uint64_t a[64], b[64], x = 88172645463325252ull;
    for (int r = 0; r < 20; r++) {
        for (int i = 0; i < 64; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            a[i] = b[i] = r == 0 ? (uint64_t)1 << i : x; /* 0: identity */
        }
        persiste__transpose64(b);
        for (int i = 0; i < 64; i++)
            for (int k = 0; k < 64; k++)
                assert_int_equal(b[i] >> k & 1, a[k] >> i & 1);
    }
}

/* Two data alike to the bit: cells, names, counts, patterns. */
static void same_bits(const persiste_data *a, const persiste_data *b)
{
    same_data(a, b);
    size_t words = (size_t)a->n_words * (size_t)a->n_tips;
    assert_memory_equal(a->present, b->present, words * sizeof *a->present);
    assert_memory_equal(a->unknown, b->unknown, words * sizeof *a->unknown);
    assert_int_equal(a->n_all_absent, b->n_all_absent);
    assert_int_equal(a->n_dropped_taxa, b->n_dropped_taxa);
    for (int64_t i = 0; i < a->n_dropped_taxa; i++)
        assert_string_equal(a->dropped_taxon[i], b->dropped_taxon[i]);
    assert_int_equal(a->n_dropped_families, b->n_dropped_families);
    for (int64_t i = 0; i < a->n_dropped_families; i++)
        assert_string_equal(a->dropped_family[i], b->dropped_family[i]);
    assert_int_equal(a->n_patterns, b->n_patterns);
    assert_int_equal(a->any_unknown, b->any_unknown);
    assert_memory_equal(a->pattern, b->pattern,
                        (size_t)a->n_families * sizeof *a->pattern);
    size_t pwords = (size_t)(a->n_patterns + 63) / 64 * (size_t)a->n_tips;
    assert_memory_equal(a->pattern_present, b->pattern_present,
                        pwords * sizeof *a->pattern_present);
    assert_memory_equal(a->pattern_unknown, b->pattern_unknown,
                        pwords * sizeof *a->pattern_unknown);
}

/* The reader packs each row into bits as it parses it: kept as rows, or,
 * when the header surely names the taxa, transposed 64 rows at a time
 * into columns. Both against persiste_data_from_matrix on the same cells
 * (the oracle), in both orientations, over several words and groups of 64
 * rows (the last partial or not), with unknown cells in every spelling,
 * extra and missing taxa, repeated families (some differing only in
 * dropped taxa, or only where one is unknown) and families absent
 * everywhere (dropped or not). */
static void test_read_packed_like_matrix(void **state)
{
    (void)state;
    enum { TIPS = 70, MAX_TAXA = 70, MAX_FAMS = 1100 };
    persiste_tree *tree = star_tree(TIPS);
    /* n_taxa, n_families, whether some taxa are not tips (1) or most
     * families are named like tips (2: with taxa in rows, the header looks
     * like taxa until the rows' names are counted) */
    static const int shapes[][3] = {{70, 130, 0}, {70, 130, 1}, {69, 128, 0},
                                    {64, 65, 1},  {3, 200, 0},  {70, 1, 0},
                                    {65, 64, 1},  {70, 67, 2},  {66, 70, 2},
                                    {70, 1100, 1}, {67, 1030, 0}};
    static const char *const unknown[] = {"?", "NA", "", "-"};
    static char taxon_buf[MAX_TAXA][16], family_buf[MAX_FAMS][16];
    static uint8_t cells[MAX_FAMS * MAX_TAXA];
    static char text[MAX_FAMS * MAX_TAXA * 4 + 4096];
    const char *taxon[MAX_TAXA], *family[MAX_FAMS];
    uint32_t x = 17;
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        const int nt = shapes[k][0], nf = shapes[k][1];
        for (int t = 0; t < nt; t++) {
            /* a permutation of the tips, some replaced by extra names */
            if (shapes[k][2] == 1 && t % 11 == 4)
                snprintf(taxon_buf[t], sizeof taxon_buf[t], "x%d", t);
            else
                snprintf(taxon_buf[t], sizeof taxon_buf[t], "t%d",
                         t * 29 % TIPS);
            taxon[t] = taxon_buf[t];
        }
        for (int f = 0; f < nf; f++) {
            if (shapes[k][2] == 2 && f % 4 != 3)
                snprintf(family_buf[f], sizeof family_buf[f], "t%d", f);
            else
                snprintf(family_buf[f], sizeof family_buf[f], "fam%d", f);
            family[f] = family_buf[f];
            for (int t = 0; t < nt; t++) {
                x = x * 1103515245u + 12345u;
                unsigned r = (x >> 16) % 8;
                /* absent: only early, so that later words of kept
                 * families are runs that start within a word */
                /* f % 9 == 7: a repeat of f - 1 but in the extra taxa
                 * (dropped), so the same pattern; 8: the same but where
                 * f - 1 is unknown, so another; none unknown in families
                 * 64 .. 191 (whole groups of 64 without) */
                const uint8_t prev = f ? cells[(f - 1) * nt + t] : 0;
                const int extra = shapes[k][2] == 1 && t % 11 == 4;
                cells[f * nt + t] = f % 9 == 2 && f < 40 ? 0
                                    : f % 9 == 5 ? cells[(f - 3) * nt + t]
                                    : f % 9 == 7 ? (extra ? 1 - prev % 2
                                                          : prev)
                                    : f % 9 == 8 ? (prev == 2 ? 1 : prev)
                                    : r < 1 && (f < 64 || f >= 192) ? 2
                                    : r < 4 ? 1
                                            : 0;
            }
        }
        for (int taxa_rows = 0; taxa_rows < 2; taxa_rows++) {
            /* the text: a header, then a line per row */
            const int n_rows = taxa_rows ? nt : nf, n_cols = taxa_rows ? nf
                                                                       : nt;
            const char *const *rn = taxa_rows ? taxon : family;
            const char *const *cn = taxa_rows ? family : taxon;
            size_t n = (size_t)sprintf(text, "Gene");
            for (int c = 0; c < n_cols; c++)
                n += (size_t)sprintf(text + n, "\t%s", cn[c]);
            for (int r = 0; r < n_rows; r++) {
                n += (size_t)sprintf(text + n, "\n%s", rn[r]);
                for (int c = 0; c < n_cols; c++) {
                    uint8_t v = taxa_rows ? cells[c * nt + r]
                                          : cells[r * nt + c];
                    n += (size_t)sprintf(text + n, "\t%s",
                                         v == 2 ? unknown[(r + c) % 4]
                                         : v    ? "1"
                                                : "0");
                }
            }
            assert_true(n < sizeof text);
            const char *path = write_file("packed.tsv", text, n);
            const uint32_t base = PERSISTE_DATA_DROP_EXTRA_TAXA |
                                  PERSISTE_DATA_MISSING_AS_UNKNOWN;
            const uint32_t side = taxa_rows ? PERSISTE_DATA_TAXA_IN_ROWS
                                            : PERSISTE_DATA_TAXA_IN_COLUMNS;
            for (int v = 0; v < 4; v++) {
                uint32_t flags =
                    base | (v & 1 ? PERSISTE_DATA_DROP_ABSENT_FAMILIES : 0);
                persiste_data *a = NULL;
                assert_int_equal(persiste_data_from_matrix(&a, tree, cells,
                                                           nf, nt, nt, 1,
                                                           taxon, family,
                                                           flags),
                                 PERSISTE_OK);
                /* v & 2: orientation as flagged, else as found */
                persiste_data *b = read_ok(tree, path,
                                           flags | (v & 2 ? side : 0));
                same_bits(a, b);
                persiste_data_destroy(a);
                persiste_data_destroy(b);
            }
        }
    }
    persiste_tree_destroy(tree);
}

/* ---- Bundled real datasets --------------------------------------------- */

static const char *data_path(const char *rel)
{
    static char path[2][512];
    static int k;
    const char *dir = getenv("PERSISTE_DATA_DIR");
    assert_non_null(dir);
    k ^= 1;
    snprintf(path[k], sizeof path[k], "%s/%s", dir, rel);
    return path[k];
}

static persiste_tree *tree_file(const char *rel)
{
    persiste_tree *t = NULL;
    int rc = persiste_tree_from_newick_file(&t, data_path(rel));
    if (rc != PERSISTE_OK)
        print_error("%s\n", persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
    return t;
}

/* Independent reading of a table line by line with zlib's gzgets (which
 * also reads plain files): the fields of the line whose first field is
 * key (or of the header when key is NULL), split by hand. */
static int table_line(const char *path, const char *key, char *line,
                      size_t cap, char **fields, int max_fields)
{
    gzFile gz = gzopen(path, "rb");
    assert_non_null(gz);
    int found = 0;
    while (!found && gzgets(gz, line, (int)cap)) {
        size_t n = strcspn(line, "\t");
        found = key ? strlen(key) == n && strncmp(line, key, n) == 0 : 1;
    }
    gzclose(gz);
    assert_true(found);
    line[strcspn(line, "\r\n")] = '\0';
    int k = 0;
    for (char *p = line; k < max_fields; p++) {
        fields[k++] = p;
        p = strchr(p, '\t');
        if (!p)
            break;
        *p = '\0';
    }
    return k;
}

/* Compare families of d with the text of the file for the named rows. */
static void cross_check(const persiste_data *d, const persiste_tree *tree,
                        const char *path, const char *const *families,
                        int n_families)
{
    enum { CAP = 1 << 16, MAXF = 1024 };
    static char head_line[CAP], row_line[CAP];
    static char *head[MAXF], *row[MAXF];
    int nh = table_line(path, NULL, head_line, CAP, head, MAXF);
    int32_t n_tips = persiste_tree_n_tips(tree);
    uint8_t out[MAXF];
    for (int i = 0; i < n_families; i++) {
        assert_int_equal(table_line(path, families[i], row_line, CAP, row,
                                    MAXF),
                         nh);
        int64_t f = 0;
        while (f < persiste_data_n_families(d) &&
               strcmp(persiste_data_family_name(d, f), families[i]) != 0)
            f++;
        assert_true(f < persiste_data_n_families(d));
        assert_int_equal(persiste_data_states(d, f, out), PERSISTE_OK);
        int checked = 0;
        for (int32_t v = 0; v < n_tips; v++)
            for (int c = 1; c < nh; c++)
                if (strcmp(head[c], persiste_tree_label(tree, v)) == 0) {
                    assert_int_equal(out[v], atoi(row[c]));
                    checked++;
                }
        assert_int_equal(checked, n_tips);
    }
}

static void test_real_efm(void **state)
{
    (void)state;
    persiste_tree *tree = tree_file("efm-clade-powerbacgwas/efm_clade.tree.nwk");
    assert_int_equal(persiste_tree_n_tips(tree), 761);
    const char *path = data_path(
        "efm-clade-powerbacgwas/efm_clade.gene_presence_absence.Rtab.gz");
    read_fails(tree, path, 0, PERSISTE_E_NAMES,
               "1 of 762 genomes not in the tree: "
               "Enterococcus_faecium_Aus0004_v1.prokka",
               "PERSISTE_DATA_DROP_EXTRA_TAXA");

    persiste_data *d = read_ok(tree, path, PERSISTE_DATA_DROP_EXTRA_TAXA);
    assert_int_equal(persiste_data_n_families(d), 5443);
    assert_int_equal(persiste_data_n_all_absent(d), 86);
    persiste_data_destroy(d);

    d = read_ok(tree, path,
                PERSISTE_DATA_DROP_EXTRA_TAXA |
                    PERSISTE_DATA_DROP_ABSENT_FAMILIES);
    /* counts stated in the dataset's SOURCE.md */
    assert_int_equal(persiste_data_n_families(d), 5357);
    assert_int_equal(persiste_data_n_dropped_families(d), 86);
    assert_int_equal(persiste_data_n_all_absent(d), 0);
    assert_int_equal(persiste_data_n_taxa(d), 761);
    assert_int_equal(persiste_data_n_dropped_taxa(d), 1);
    assert_string_equal(persiste_data_dropped_taxon(d, 0),
                        "Enterococcus_faecium_Aus0004_v1.prokka");
    assert_string_equal(persiste_data_family_name(d, 0), "galE");
    const char *families[] = {"galE", "acyP", "group_1000",
                              persiste_data_family_name(d, 5356)};
    cross_check(d, tree, path, families, 4);
    persiste_data_destroy(d);
    persiste_tree_destroy(tree);
}

static void test_real_harris(void **state)
{
    (void)state;
    persiste_tree *tree =
        tree_file("harris2022-plants30/harris2022_dated_tree.nwk");
    const char *path = data_path("harris2022-plants30/harris2022_pam.Rtab");
    persiste_data *d = read_ok(tree, path, 0);
    /* counts stated in the dataset's SOURCE.md */
    assert_int_equal(persiste_data_n_families(d), 20822);
    assert_int_equal(persiste_data_n_taxa(d), 30);
    assert_int_equal(persiste_data_n_all_absent(d), 0);
    int64_t all = 0, single = 0;
    uint8_t out[30];
    for (int64_t f = 0; f < 20822; f++) {
        assert_int_equal(persiste_data_states(d, f, out), PERSISTE_OK);
        int k = 0;
        for (int v = 0; v < 30; v++)
            k += out[v] == PERSISTE_PRESENT;
        all += k == 30;
        single += k == 1;
    }
    assert_int_equal(all, 1023);
    assert_int_equal(single, 3167);
    const char *families[] = {"7049", "3602", "12876",
                              persiste_data_family_name(d, 20821)};
    cross_check(d, tree, path, families, 4);
    persiste_data_destroy(d);
    persiste_tree_destroy(tree);
}

#ifdef PERSISTE_ALLOC_FAILURE
/* Builds with -DPERSISTE_ALLOC_FAILURE: make each allocation fail in turn;
 * every failure must be reported cleanly (leaks show under ASan). */
extern long persiste__alloc_fail_at, persiste__alloc_count;

static void test_alloc_failures(void **state)
{
    (void)state;
    persiste_tree *tree = tree_of(TREE5);
    const char *path = write_text("alloc.Rtab", "Gene\tB\tD\tX\tA\tC\tE\n"
                                                "galE\t1\t0\t1\t1\t1\t0\n"
                                                "none\t0\t0\t1\t0\t0\t0\n");
    const uint32_t flags = PERSISTE_DATA_DROP_EXTRA_TAXA |
                           PERSISTE_DATA_DROP_ABSENT_FAMILIES;
    int failures = 0;
    for (long k = 1;; k++) {
        persiste_data *d = (persiste_data *)&d;
        persiste__alloc_count = 0;
        persiste__alloc_fail_at = k;
        int rc = persiste_data_read(&d, tree, path, flags);
        persiste__alloc_fail_at = 0;
        if (rc == PERSISTE_OK) {
            assert_int_equal(persiste_data_n_families(d), 1);
            assert_string_equal(persiste_data_dropped_family(d, 0), "none");
            persiste_data_destroy(d);
            break;
        }
        EXPECT_ERROR(rc, PERSISTE_E_NOMEM, "out of memory");
        assert_ptr_equal(d, (persiste_data *)&d);
        failures++;
    }
    assert_true(failures > 8);
    persiste_tree_destroy(tree);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matrix_layouts),
        cmocka_unit_test(test_matrix_family_names),
        cmocka_unit_test(test_drop_absent_families),
        cmocka_unit_test(test_matrix_name_errors),
        cmocka_unit_test(test_matrix_bad_values),
        cmocka_unit_test(test_storage_is_bits),
        cmocka_unit_test(test_read_formats),
        cmocka_unit_test(test_read_names_with_delimiters),
        cmocka_unit_test(test_read_gzip),
        cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_read_wide_header),
        cmocka_unit_test(test_read_streamed),
        cmocka_unit_test(test_read_lines_small_first_slot),
        cmocka_unit_test(test_matrix_fast_layouts),
        cmocka_unit_test(test_transpose64),
        cmocka_unit_test(test_read_packed_like_matrix),
        cmocka_unit_test(test_real_efm),
        cmocka_unit_test(test_real_harris),
#ifdef PERSISTE_ALLOC_FAILURE
        cmocka_unit_test(test_alloc_failures),
#endif
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
