/* libFuzzer target: persiste_data_read (Rtab, CSV/TSV, gzip).
 *
 * Input: one byte of flags (bits of persiste_data_flag), then the file's
 * bytes, which go to a memfd read back through /proc/self/fd, so the whole
 * reader runs as for a file on disk. The tree's tips have awkward names
 * (blank, quote, '#', comma, tab, a non-UTF-8 byte) that tables may use.
 * Any input must give data bound to the tree or a clean error; data must
 * read back consistently and evaluate to no NaN. */
#define _GNU_SOURCE /* memfd_create */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"

static const char TREE[] =
    "((A:1,B:0.5):1,(C:1,('x y':0.2,'19647_8#40':0):1):0.3,"
    "('q\"t':2,('a,b':1,'t\tab':1,'\xff\xfe':0.1):0.5):1);";

static persiste_tree *tree;
static persiste_model *model;
static persiste_ctx *ctx;
static char path[64];
static int fd = -1;

static void setup(void)
{
    FUZZ_CHECK(persiste_tree_from_newick(&tree, TREE) == PERSISTE_OK &&
                   persiste_model_create(&model) == PERSISTE_OK &&
                   persiste_ctx_create(&ctx) == PERSISTE_OK,
               "setup");
    fd = memfd_create("fuzz_table", 0);
    FUZZ_CHECK(fd >= 0, "memfd_create");
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
}

static void evaluate(const persiste_data *d)
{
    int64_t n = persiste_data_n_families(d);
    double *x = calloc(3 * (size_t)n, sizeof *x);
    FUZZ_CHECK(x != NULL, "test out of memory");
    double *lnl = x + 2 * n;
    FUZZ_CHECK(persiste_loglik_batch(ctx, model, tree, d, n, x, x + n, lnl) ==
                   PERSISTE_OK,
               "loglik");
    int64_t impossible = 0;
    for (int64_t f = 0; f < n; f++) {
        FUZZ_CHECK(!isnan(lnl[f]) && lnl[f] < INFINITY, "family %lld: %g",
                   (long long)f, lnl[f]);
        impossible += lnl[f] == -INFINITY;
    }
    FUZZ_CHECK(impossible == persiste_ctx_n_impossible(ctx), "impossible");
    free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tree)
        setup();
    if (size == 0)
        return 0;
    uint32_t flags = data[0] & 0x1f;
    if ((flags & 0x18) == 0x18 && !(data[0] & 0x80))
        flags &= ~(uint32_t)PERSISTE_DATA_TAXA_IN_COLUMNS; /* mostly valid */
    FUZZ_CHECK(ftruncate(fd, 0) == 0 &&
                   pwrite(fd, data + 1, size - 1, 0) == (ssize_t)(size - 1),
               "memfd write");
    persiste_data *sentinel = (persiste_data *)&flags, *d = sentinel;
    int rc = persiste_data_read(&d, tree, path, flags);
    if (rc != PERSISTE_OK) {
        fuzz_check_failure(rc, d, sentinel);
        return 0;
    }
    fuzz_check_data(d, tree);
    evaluate(d);
    persiste_data_destroy(d);
    return 0;
}
