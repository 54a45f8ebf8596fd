/* Presence/absence data bound to a tree's tips: the one builder behind
 * persiste_data_from_matrix and persiste_data_read, and the accessors.
 *
 * Semantics (see also persiste.h):
 *  - every taxon name is looked up among the tree tips; a name given twice is
 *    an error, extra names are an error unless DROP_EXTRA_TAXA, tips without
 *    a column are an error unless MISSING_AS_UNKNOWN;
 *  - every cell of the matrix, dropped columns included, must be 0, 1 or 2;
 *  - a family is "all absent" when every kept column holds 0 (an unknown
 *    cell might hide a presence, so it does not count as absent). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__) && !defined(PERSISTE_PORTABLE)
#include <emmintrin.h>
#endif

#include "internal.h"

#define ALL_FLAGS                                                    \
    (PERSISTE_DATA_DROP_EXTRA_TAXA | PERSISTE_DATA_MISSING_AS_UNKNOWN | \
     PERSISTE_DATA_DROP_ABSENT_FAMILIES | PERSISTE_DATA_TAXA_IN_ROWS |  \
     PERSISTE_DATA_TAXA_IN_COLUMNS)

/* A mismatch message lists this many names, each cut to NAME_SHOWN bytes,
 * so that it fits persiste_last_error()'s buffer with its hint. */
enum { LIST_MAX = 5, NAME_SHOWN = 48, LIST_CAP = 320 };

/* Taxon columns bound to tree tips. */
typedef struct {
    int32_t *tip_of;     /* [n_taxa]: tip of column t, -1 if not in the tree */
    int64_t *col_of_tip; /* [n_tips]: column bound to the tip, -1 if none */
    int64_t n_extra;     /* columns whose name is not a tip */
    int64_t n_missing;   /* tips without a column */
    uint64_t *kept;      /* [(n_taxa + 63) / 64]: bit t%64 if tip_of[t] >= 0 */
} binding;

static int nomem(const char *where)
{
    return persiste__error(PERSISTE_E_NOMEM, "%s: out of memory", where);
}

/* Allocate count elements of size bytes (zeroed), with overflow checked. */
static int alloc_array(void *out, int64_t count, size_t size,
                       const char *where)
{
    size_t bytes;
    int rc = persiste__mul_size((size_t)count, size, &bytes);
    if (rc != PERSISTE_OK)
        return persiste__error(rc, "%s: %lld elements of %zu bytes overflow",
                               where, (long long)count, size);
    void *p = persiste__calloc((size_t)count, size);
    if (!p)
        return nomem(where);
    *(void **)out = p;
    return PERSISTE_OK;
}

static uint64_t magnitude(int64_t x)
{
    return x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
}

/* Every offset f*family_stride + t*taxon_stride must be representable, so
 * that indexing cannot overflow whatever strides a view has. */
static int check_extent(int64_t n_families, int64_t n_taxa, int64_t fs,
                        int64_t ts, const char *where)
{
    const uint64_t max = (uint64_t)PTRDIFF_MAX;
    uint64_t a = (uint64_t)(n_families - 1), b = (uint64_t)(n_taxa - 1);
    uint64_t sf = magnitude(fs), st = magnitude(ts);
    if ((sf && a > max / sf) || (st && b > max / st) ||
        a * sf > max - b * st)
        return persiste__error(PERSISTE_E_OVERFLOW,
                               "%s: strides %lld and %lld address beyond "
                               "memory for %lld families x %lld taxa",
                               where, (long long)fs, (long long)ts,
                               (long long)n_families, (long long)n_taxa);
    return PERSISTE_OK;
}

/* Append ", name" (cut to NAME_SHOWN bytes) to a list in buf[LIST_CAP]. */
static void list_add(char *buf, const char *name)
{
    size_t len = strlen(buf);
    snprintf(buf + len, LIST_CAP - len, "%s%.*s", len ? ", " : "",
             NAME_SHOWN, name);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Two columns named alike but not in the tree: found by sorting them. */
static int check_extra_duplicates(const binding *b,
                                  const char *const *names, int64_t n_taxa,
                                  const char *where)
{
    const char **extra = NULL; /* set by alloc_array (GCC -O3 cannot tell) */
    int rc = alloc_array(&extra, b->n_extra, sizeof *extra, where);
    if (rc != PERSISTE_OK)
        return rc;
    int64_t k = 0;
    for (int64_t t = 0; t < n_taxa; t++)
        if (b->tip_of[t] < 0)
            extra[k++] = names[t];
    qsort(extra, (size_t)k, sizeof *extra, cmp_names);
    for (int64_t i = 1; i < k && rc == PERSISTE_OK; i++)
        if (strcmp(extra[i - 1], extra[i]) == 0)
            rc = persiste__error(PERSISTE_E_NAMES,
                                 "%s: taxon %s appears twice", where,
                                 extra[i]);
    persiste__free(extra);
    return rc;
}

static void binding_free(binding *b)
{
    persiste__free(b->tip_of);
    persiste__free(b->col_of_tip);
    persiste__free(b->kept);
}

static int bind_taxa(binding *b, const persiste_tree *tree,
                     const char *const *names, int64_t n_taxa, uint32_t flags,
                     const char *where)
{
    const int32_t n_tips = tree->n_tips;
    int rc = alloc_array(&b->tip_of, n_taxa, sizeof *b->tip_of, where);
    if (rc == PERSISTE_OK)
        rc = alloc_array(&b->col_of_tip, n_tips, sizeof *b->col_of_tip,
                         where);
    if (rc == PERSISTE_OK)
        rc = alloc_array(&b->kept, (n_taxa + 63) / 64, sizeof *b->kept,
                         where);
    if (rc != PERSISTE_OK)
        return rc;
    for (int32_t v = 0; v < n_tips; v++)
        b->col_of_tip[v] = -1;
    for (int64_t t = 0; t < n_taxa; t++) {
        if (!names[t])
            return persiste__error(PERSISTE_E_INVALID,
                                   "%s: taxon name %lld is NULL", where,
                                   (long long)t + 1);
        int32_t tip = persiste__tree_find_tip(tree, names[t],
                                              strlen(names[t]));
        b->tip_of[t] = tip;
        b->kept[t / 64] |= (uint64_t)(tip >= 0) << (t % 64);
        if (tip < 0) {
            b->n_extra++;
        } else if (b->col_of_tip[tip] >= 0) {
            return persiste__error(PERSISTE_E_NAMES,
                                   "%s: taxon %s appears twice (columns "
                                   "%lld and %lld)",
                                   where, names[t],
                                   (long long)b->col_of_tip[tip] + 1,
                                   (long long)t + 1);
        } else {
            b->col_of_tip[tip] = t;
        }
    }
    b->n_missing = n_tips - (n_taxa - b->n_extra);

    char list[LIST_CAP] = "";
    if (b->n_missing == n_tips) {
        list_add(list, names[0]);
        return persiste__error(PERSISTE_E_NAMES,
                               "%s: none of the %lld genomes is a tip of "
                               "the tree (data: %s; tree: %.*s)",
                               where, (long long)n_taxa, list, NAME_SHOWN,
                               tree->label[0]);
    }
    if (b->n_extra > 0) {
        rc = check_extra_duplicates(b, names, n_taxa, where);
        if (rc != PERSISTE_OK)
            return rc;
    }
    if (b->n_extra > 0 && !(flags & PERSISTE_DATA_DROP_EXTRA_TAXA)) {
        for (int64_t t = 0, k = 0; t < n_taxa && k < LIST_MAX; t++) {
            if (b->tip_of[t] < 0) {
                list_add(list, names[t]);
                k++;
            }
        }
        return persiste__error(PERSISTE_E_NAMES,
                               "%s: %lld of %lld genomes not in the tree: "
                               "%s%s (use PERSISTE_DATA_DROP_EXTRA_TAXA to "
                               "drop them)",
                               where, (long long)b->n_extra,
                               (long long)n_taxa, list,
                               b->n_extra > LIST_MAX ? ", ..." : "");
    }
    if (b->n_missing > 0 && !(flags & PERSISTE_DATA_MISSING_AS_UNKNOWN)) {
        for (int32_t v = 0, k = 0; v < n_tips && k < LIST_MAX; v++) {
            if (b->col_of_tip[v] < 0) {
                list_add(list, tree->label[v]);
                k++;
            }
        }
        return persiste__error(PERSISTE_E_NAMES,
                               "%s: %lld of %d tree tips missing from the "
                               "data: %s%s (use "
                               "PERSISTE_DATA_MISSING_AS_UNKNOWN to treat "
                               "them as unknown)",
                               where, (long long)b->n_missing, (int)n_tips,
                               list, b->n_missing > LIST_MAX ? ", ..." : "");
    }
    return PERSISTE_OK;
}

/* Family name as given, or its 1-based index, into buf[24]. */
static const char *family_label(const char *const *family_names, int64_t f,
                                char *buf)
{
    if (family_names)
        return family_names[f];
    snprintf(buf, 24, "%lld", (long long)f + 1);
    return buf;
}

/* Bits of up to 64 cells: bit i of `present` where cells[i] == 1, of
 * `unknown` where 2, of `bad` where above 2. */
typedef struct {
    uint64_t present, unknown, bad;
} cell_bits;

static cell_bits classify64(const uint8_t *cells)
{
    cell_bits b = {0, 0, 0};
#if defined(__SSE2__) && !defined(PERSISTE_PORTABLE)
    const __m128i one = _mm_set1_epi8(1), two = _mm_set1_epi8(2);
    const __m128i zero = _mm_setzero_si128();
    for (int i = 0; i < 4; i++) {
        __m128i x = _mm_loadu_si128((const __m128i *)(cells + 16 * i));
        int sh = 16 * i;
        b.present |= (uint64_t)(uint16_t)_mm_movemask_epi8(
                         _mm_cmpeq_epi8(x, one)) << sh;
        b.unknown |= (uint64_t)(uint16_t)_mm_movemask_epi8(
                         _mm_cmpeq_epi8(x, two)) << sh;
        b.bad |= (uint64_t)(uint16_t)~_mm_movemask_epi8(
                     _mm_cmpeq_epi8(_mm_subs_epu8(x, two), zero)) << sh;
    }
#else
    for (int i = 0; i < 64; i++) {
        b.present |= (uint64_t)(cells[i] == PERSISTE_PRESENT) << i;
        b.unknown |= (uint64_t)(cells[i] == PERSISTE_UNKNOWN) << i;
        b.bad |= (uint64_t)(cells[i] > PERSISTE_UNKNOWN) << i;
    }
#endif
    return b;
}

/* The same for n <= 64 contiguous cells. */
static cell_bits classify(const uint8_t *cells, int64_t n)
{
    if (n == 64)
        return classify64(cells);
    uint8_t pad[64] = {0};
    memcpy(pad, cells, (size_t)n);
    return classify64(pad);
}

/* Bits of the first n of 64 (n <= 64). */
static uint64_t low_bits(int64_t n)
{
    return n >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << n) - 1;
}

void persiste__pack_row(const uint8_t *cells, int64_t n, uint64_t *present,
                        uint64_t *unknown)
{
    for (int64_t c = 0; c * 64 < n; c++) {
        cell_bits x = classify(cells + c * 64, n - c * 64 < 64 ? n - c * 64
                                                                : 64);
        present[c] = x.present;
        unknown[c] = x.unknown;
    }
}

/* One pass over every cell: checks the states and sets bit f%64 of
 * observed[f/64] when family f is present or unknown in a kept column.
 * Blocks of 64 families keep both row- and column-major reads cache-local.
 * Any layout; it also finds the first bad state for the message. */
static int scan_any(uint64_t *observed, const uint8_t *states,
                       int64_t n_families, int64_t n_taxa, int64_t fs,
                       int64_t ts, const binding *b,
                       const char *const *taxon_names,
                       const char *const *family_names, const char *where)
{
    for (int64_t f0 = 0; f0 < n_families; f0 += 64) {
        int64_t nf = n_families - f0 < 64 ? n_families - f0 : 64;
        uint64_t seen = 0;
        for (int64_t t = 0; t < n_taxa; t++) {
            uint64_t kept = b->tip_of[t] >= 0 ? ~(uint64_t)0 : 0;
            for (int64_t k = 0; k < nf; k++) {
                uint8_t v = states[(f0 + k) * fs + t * ts];
                if (v > PERSISTE_UNKNOWN) {
                    char buf[24];
                    return persiste__error(
                        PERSISTE_E_DOMAIN,
                        "%s: family %lld (%s), taxon %s: state %u is not 0 "
                        "(absent), 1 (present) or 2 (unknown)",
                        where, (long long)(f0 + k) + 1,
                        family_label(family_names, f0 + k, buf),
                        taxon_names[t], (unsigned)v);
                }
                seen |= (uint64_t)(v != PERSISTE_ABSENT) << k & kept;
            }
        }
        observed[f0 / 64] = seen;
    }
    return PERSISTE_OK;
}

/* scan_any for contiguous taxa (taxon stride 1), a family's row at once;
 * 0 if some state is bad (scan_any then says which). */
static int scan_rows(uint64_t *observed, const uint8_t *states,
                     int64_t n_families, int64_t n_taxa, int64_t fs,
                     const binding *b)
{
    for (int64_t f = 0; f < n_families; f++) {
        const uint8_t *row = states + f * fs;
        uint64_t seen = 0, bad = 0;
        for (int64_t t0 = 0; t0 < n_taxa; t0 += 64) {
            cell_bits x = classify(row + t0, n_taxa - t0 < 64 ? n_taxa - t0
                                                              : 64);
            bad |= x.bad;
            seen |= (x.present | x.unknown) & b->kept[t0 / 64];
        }
        if (bad)
            return 0;
        observed[f / 64] |= (uint64_t)(seen != 0) << (f % 64);
    }
    return 1;
}

/* scan_any for contiguous families (family stride 1), a taxon's row at
 * once; 0 if some state is bad. */
static int scan_taxa(uint64_t *observed, const uint8_t *states,
                     int64_t n_families, int64_t n_taxa, int64_t ts,
                     const binding *b)
{
    for (int64_t t = 0; t < n_taxa; t++) {
        const uint8_t *row = states + t * ts;
        uint64_t kept = b->tip_of[t] >= 0 ? ~(uint64_t)0 : 0;
        for (int64_t f0 = 0; f0 < n_families; f0 += 64) {
            cell_bits x = classify(row + f0, n_families - f0 < 64
                                                 ? n_families - f0
                                                 : 64);
            if (x.bad)
                return 0;
            observed[f0 / 64] |= (x.present | x.unknown) & kept;
        }
    }
    return 1;
}

/* The scan of rows of bits (persiste__cells), whose states need no
 * check. */
static void scan_bits(uint64_t *observed, const persiste__cells *cells,
                      int64_t n_families, int64_t n_taxa, const binding *b)
{
    const int64_t rs = cells->row_stride, ws = cells->word_stride;
    const int64_t u = cells->unknown_at;
    if (cells->rows_are_taxa) {
        for (int64_t w = 0; w < (n_families + 63) / 64; w++) {
            const uint64_t *word = cells->bits + w * ws;
            for (int64_t t = 0; t < n_taxa; t++)
                if (b->tip_of[t] >= 0)
                    observed[w] |= word[t * rs] | word[t * rs + u];
        }
        return;
    }
    for (int64_t f = 0; f < n_families; f++) {
        const uint64_t *row = cells->bits + f * rs;
        uint64_t seen = 0;
        for (int64_t w = 0; w < (n_taxa + 63) / 64; w++)
            seen |= (row[w * ws] | row[w * ws + u]) & b->kept[w];
        observed[f / 64] |= (uint64_t)(seen != 0) << (f % 64);
    }
}

static int scan_states(uint64_t *observed, const persiste__cells *cells,
                       int64_t n_families, int64_t n_taxa, const binding *b,
                       const char *const *taxon_names,
                       const char *const *family_names, const char *where)
{
    const uint8_t *states = cells->states;
    const int64_t fs = cells->family_stride, ts = cells->taxon_stride;
    if (cells->repeats) {
        memcpy(observed, cells->repeats->observed,
               (size_t)(n_families + 63) / 64 * sizeof *observed);
        return PERSISTE_OK;
    }
    if (!states) {
        scan_bits(observed, cells, n_families, n_taxa, b);
        return PERSISTE_OK;
    }
    if (ts == 1 && scan_rows(observed, states, n_families, n_taxa, fs, b))
        return PERSISTE_OK;
    if (ts != 1 && fs == 1 &&
        scan_taxa(observed, states, n_families, n_taxa, ts, b))
        return PERSISTE_OK;
    return scan_any(observed, states, n_families, n_taxa, fs, ts, b,
                    taxon_names, family_names, where);
}

static int copy_name(char **dst, const char *src, const char *where)
{
    *dst = persiste__strndup(src, strlen(src));
    return *dst ? PERSISTE_OK : nomem(where);
}

static int is_observed(const uint64_t *observed, int64_t f)
{
    return (int)(observed[f / 64] >> (f % 64) & 1);
}

/* Names of kept and dropped families, the kept ones' source rows in src. */
static int select_families(persiste_data *d, int64_t *src,
                           const uint64_t *observed, int64_t n_families,
                           const char *const *family_names, uint32_t flags,
                           const char *where)
{
    const int drop = (flags & PERSISTE_DATA_DROP_ABSENT_FAMILIES) != 0;
    int64_t n_kept = 0, n_dropped = 0;
    for (int64_t f = 0; f < n_families; f++) {
        char buf[24];
        const char *name = family_label(family_names, f, buf);
        int keep = !drop || is_observed(observed, f);
        int rc = keep ? copy_name(&d->family_name[n_kept], name, where)
                      : copy_name(&d->dropped_family[n_dropped], name, where);
        if (rc != PERSISTE_OK)
            return rc;
        if (keep) {
            d->n_all_absent += !is_observed(observed, f);
            src[n_kept++] = f;
        } else {
            n_dropped++;
        }
    }
    return PERSISTE_OK;
}

/* Pack the kept families into bits, 64 families per word, per tip: for
 * each 64 families and 64 tips, each family's cells become a word of tip
 * bits, and the 64 x 64 block is transposed into words of family bits.
 * Any layout. */
static void pack_any(persiste_data *d, const int64_t *src,
                     const uint8_t *states, int64_t fs, int64_t ts,
                     const binding *b)
{
    const int32_t n_tips = d->n_tips;
    uint64_t pb[64], ub[64];
    uint8_t cell[64];
    for (int64_t w = 0; w < d->n_words; w++) {
        int64_t f0 = w * 64;
        int nb = d->n_families - f0 < 64 ? (int)(d->n_families - f0) : 64;
        for (int32_t t0 = 0; t0 < n_tips; t0 += 64) {
            int n = n_tips - t0 < 64 ? n_tips - t0 : 64;
            for (int k = 0; k < 64; k++) {
                if (k >= nb) {
                    pb[k] = ub[k] = 0;
                    continue;
                }
                const uint8_t *row = states + src[f0 + k] * fs;
                for (int i = 0; i < 64; i++) {
                    int64_t t = i < n ? b->col_of_tip[t0 + i] : 0;
                    /* a tip without a column is unknown everywhere */
                    cell[i] = i >= n ? PERSISTE_ABSENT
                              : t < 0 ? PERSISTE_UNKNOWN
                                      : row[t * ts];
                }
                cell_bits x = classify64(cell);
                pb[k] = x.present;
                ub[k] = x.unknown;
            }
            persiste__transpose64(pb);
            persiste__transpose64(ub);
            memcpy(d->present + (size_t)w * (size_t)n_tips + (size_t)t0, pb,
                   (size_t)n * sizeof *pb);
            memcpy(d->unknown + (size_t)w * (size_t)n_tips + (size_t)t0, ub,
                   (size_t)n * sizeof *ub);
        }
    }
}

/* Tips without a column are unknown in every family. */
static void mark_missing(persiste_data *d, const binding *b)
{
    for (int64_t w = 0; b->n_missing > 0 && w < d->n_words; w++) {
        uint64_t nb = low_bits(d->n_families - w * 64);
        for (int32_t v = 0; v < d->n_tips; v++)
            if (b->col_of_tip[v] < 0)
                d->unknown[(size_t)w * (size_t)d->n_tips + (size_t)v] = nb;
    }
}

/* pack_any for contiguous taxa (taxon stride 1) and for rows of bits a
 * family each: each family's row becomes (or is) bits by column, and
 * 64 x 64 blocks of (family, column) bits are transposed in column order,
 * so that each column's word of family bits goes to its tip whole. work
 * holds 2 * 64 words per 64 columns. */
static void pack_rows(persiste_data *d, const int64_t *src,
                      const persiste__cells *cells, int64_t n_taxa,
                      const binding *b, uint64_t *work)
{
    const size_t n_tips = (size_t)d->n_tips;
    const int64_t n_blocks = (n_taxa + 63) / 64;
    uint64_t *pw = work, *uw = work + 64 * n_blocks;
    for (int64_t w = 0; w < d->n_words; w++) {
        int64_t f0 = w * 64;
        int nb = d->n_families - f0 < 64 ? (int)(d->n_families - f0) : 64;
        for (int k = 0; k < 64; k++) {
            const int64_t f = k < nb ? src[f0 + k] : -1;
            const uint8_t *row = f >= 0 && cells->states
                                     ? cells->states + f * cells->family_stride
                                     : NULL;
            const uint64_t *bits = f >= 0 && !row
                                       ? cells->bits + f * cells->row_stride
                                       : NULL;
            const int64_t ws = cells->word_stride, u = cells->unknown_at;
            for (int64_t c = 0; c < n_blocks; c++) {
                int64_t n = n_taxa - c * 64 < 64 ? n_taxa - c * 64 : 64;
                cell_bits x = {0, 0, 0};
                if (row)
                    x = classify(row + c * 64, n);
                else if (bits)
                    x = (cell_bits){bits[c * ws], bits[c * ws + u], 0};
                pw[c * 64 + k] = x.present;
                uw[c * 64 + k] = x.unknown;
            }
        }
        uint64_t *present = d->present + (size_t)w * n_tips;
        uint64_t *unknown = d->unknown + (size_t)w * n_tips;
        for (int64_t c = 0; c < n_blocks; c++) {
            persiste__transpose64(pw + c * 64);
            persiste__transpose64(uw + c * 64);
            for (int64_t j = 0; j < 64 && c * 64 + j < n_taxa; j++) {
                int32_t tip = b->tip_of[c * 64 + j];
                if (tip >= 0) {
                    present[tip] = pw[c * 64 + j];
                    unknown[tip] = uw[c * 64 + j];
                }
            }
        }
    }
    mark_missing(d, b);
}

/* pack_any for contiguous families (family stride 1): each tip's word is
 * 64 cells of its column, read at once when the kept families are. */
static void pack_taxa(persiste_data *d, const int64_t *src,
                      const uint8_t *states, int64_t ts, const binding *b)
{
    const size_t n_tips = (size_t)d->n_tips;
    uint8_t cell[64] = {0};
    for (int64_t w = 0; w < d->n_words; w++) {
        int64_t f0 = w * 64;
        int nb = d->n_families - f0 < 64 ? (int)(d->n_families - f0) : 64;
        int together = src[f0 + nb - 1] - src[f0] == nb - 1;
        for (size_t v = 0; v < n_tips; v++) {
            int64_t t = b->col_of_tip[v];
            if (t < 0)
                continue;
            const uint8_t *col = states + t * ts;
            cell_bits x;
            if (together) {
                x = classify(col + src[f0], nb);
            } else {
                for (int k = 0; k < nb; k++)
                    cell[k] = col[src[f0 + k]];
                x = classify64(cell);
            }
            d->present[(size_t)w * n_tips + v] = x.present;
            d->unknown[(size_t)w * n_tips + v] = x.unknown;
        }
    }
    mark_missing(d, b);
}

/* A word of cells src[0 .. nb) of a row of bits whose words are ws
 * apart: at once when they are a run. */
static uint64_t gather_bits(const uint64_t *row, int64_t ws,
                            const int64_t *src, int nb)
{
    const int64_t s = src[0];
    if (src[nb - 1] - s == nb - 1) {
        const int r = (int)(s % 64);
        uint64_t x = row[s / 64 * ws] >> r;
        if (r && r + nb > 64)
            x |= row[(s / 64 + 1) * ws] << (64 - r);
        return x & low_bits(nb);
    }
    uint64_t x = 0;
    for (int k = 0; k < nb; k++)
        x |= (row[src[k] / 64 * ws] >> (src[k] % 64) & 1) << k;
    return x;
}

/* pack_taxa for rows of bits a taxon each: a tip's words are its row's,
 * gathered when families are dropped. */
static void pack_taxon_bits(persiste_data *d, const int64_t *src,
                            const persiste__cells *cells, const binding *b)
{
    const size_t n_tips = (size_t)d->n_tips;
    const int64_t ws = cells->word_stride, u = cells->unknown_at;
    const int64_t rs = cells->row_stride;
    for (int64_t w = 0; w < d->n_words; w++) {
        int64_t f0 = w * 64;
        int nb = d->n_families - f0 < 64 ? (int)(d->n_families - f0) : 64;
        if (src[f0] % 64 == 0 && src[f0 + nb - 1] - src[f0] == nb - 1) {
            /* a whole word of each row (no family dropped before) */
            const uint64_t *word = cells->bits + src[f0] / 64 * ws;
            const uint64_t mask = low_bits(nb);
            for (size_t v = 0; v < n_tips; v++) {
                const int64_t t = b->col_of_tip[v];
                if (t >= 0) {
                    d->present[(size_t)w * n_tips + v] = word[t * rs] & mask;
                    d->unknown[(size_t)w * n_tips + v] =
                        word[t * rs + u] & mask;
                }
            }
            continue;
        }
        for (size_t v = 0; v < n_tips; v++) {
            const int64_t t = b->col_of_tip[v];
            if (t < 0)
                continue;
            const uint64_t *row = cells->bits + t * rs;
            d->present[(size_t)w * n_tips + v] = gather_bits(row, ws,
                                                             src + f0, nb);
            d->unknown[(size_t)w * n_tips + v] = gather_bits(row + u, ws,
                                                             src + f0, nb);
        }
    }
    mark_missing(d, b);
}

/* The bits made as the rows came (persiste__cells' repeats), taken; the
 * tips without a column, which they leave unset, marked. */
static void take_bits(persiste_data *d, persiste__repeats *r,
                      const binding *b)
{
    d->present = r->present;
    d->unknown = r->unknown;
    r->present = r->unknown = NULL;
    for (int64_t w = 0; b->n_missing > 0 && w < d->n_words; w++)
        for (int32_t v = 0; v < d->n_tips; v++)
            if (b->col_of_tip[v] < 0)
                d->present[(size_t)w * (size_t)d->n_tips + (size_t)v] = 0;
    mark_missing(d, b);
}

static int pack_bits(persiste_data *d, const int64_t *src,
                     const persiste__cells *cells, int64_t n_taxa,
                     const binding *b, const char *where)
{
    const uint8_t *states = cells->states;
    if (cells->repeats) {
        take_bits(d, cells->repeats, b);
        return PERSISTE_OK;
    }
    const int64_t fs = cells->family_stride, ts = cells->taxon_stride;
    if (!states && cells->rows_are_taxa) {
        pack_taxon_bits(d, src, cells, b);
        return PERSISTE_OK;
    }
    if (!states || ts == 1) {
        uint64_t *work = NULL;
        int rc = alloc_array(&work, (n_taxa + 63) / 64 * 128, sizeof *work,
                             where);
        if (rc == PERSISTE_OK)
            pack_rows(d, src, cells, n_taxa, b, work);
        persiste__free(work);
        return rc;
    }
    if (fs == 1)
        pack_taxa(d, src, states, ts, b);
    else
        pack_any(d, src, states, fs, ts, b);
    return PERSISTE_OK;
}

static int check_args(persiste_data **out, const persiste_tree *tree,
                      const persiste__cells *cells, int64_t n_families,
                      int64_t n_taxa, const char *const *taxon_names,
                      const char *const *family_names, uint32_t flags,
                      const char *where)
{
    const int no_cells = !cells->states && !cells->bits;
    const char *null = !out           ? "out"
                       : !tree        ? "tree"
                       : no_cells     ? "states"
                       : !taxon_names ? "taxon_names"
                                      : NULL;
    if (null)
        return persiste__error(PERSISTE_E_INVALID, "%s: %s is NULL", where,
                               null);
    if (n_families <= 0 || n_taxa <= 0)
        return persiste__error(PERSISTE_E_INVALID,
                               "%s: %lld families x %lld taxa: both must be "
                               "positive",
                               where, (long long)n_families,
                               (long long)n_taxa);
    /* a cap far above any table (and any memory), so that the sizes'
     * arithmetic ((n + 63) / 64, n * strides) cannot overflow */
    const int64_t cap = (int64_t)1 << 53;
    if (n_families > cap || n_taxa > cap)
        return persiste__error(PERSISTE_E_OVERFLOW,
                               "%s: %lld families x %lld taxa: each must be "
                               "at most 2^53",
                               where, (long long)n_families,
                               (long long)n_taxa);
    if (flags & ~(uint32_t)ALL_FLAGS)
        return persiste__error(PERSISTE_E_INVALID,
                               "%s: unknown flag bits 0x%x", where,
                               (unsigned)(flags & ~(uint32_t)ALL_FLAGS));
    for (int64_t f = 0; family_names && f < n_families; f++)
        if (!family_names[f])
            return persiste__error(PERSISTE_E_INVALID,
                                   "%s: family name %lld is NULL", where,
                                   (long long)f + 1);
    return PERSISTE_OK;
}

/* Allocate d's arrays for n_kept families (the bits too unless !bits) and
 * copy the dropped taxa. */
static int alloc_data(persiste_data *d, const persiste_tree *tree,
                      int64_t n_kept, int64_t n_dropped_families,
                      const binding *b, const char *const *taxon_names,
                      int64_t n_taxa, uint32_t flags, int bits,
                      const char *where)
{
    d->n_tips = tree->n_tips;
    d->fingerprint = tree->fingerprint;
    d->n_families = n_kept;
    d->n_words = (n_kept + 63) / 64;
    d->n_dropped_families = n_dropped_families;
    size_t n_cells;
    int rc = persiste__mul_size((size_t)d->n_words, (size_t)d->n_tips,
                                &n_cells);
    if (rc == PERSISTE_OK && bits)
        rc = alloc_array(&d->present, (int64_t)n_cells, sizeof(uint64_t),
                         where);
    if (rc == PERSISTE_OK && bits)
        rc = alloc_array(&d->unknown, (int64_t)n_cells, sizeof(uint64_t),
                         where);
    if (rc == PERSISTE_OK)
        rc = alloc_array(&d->family_name, n_kept, sizeof(char *), where);
    if (rc == PERSISTE_OK && n_dropped_families > 0)
        rc = alloc_array(&d->dropped_family, n_dropped_families,
                         sizeof(char *), where);
    if (rc == PERSISTE_OK && (flags & PERSISTE_DATA_DROP_EXTRA_TAXA) &&
        b->n_extra > 0) {
        rc = alloc_array(&d->dropped_taxon, b->n_extra, sizeof(char *),
                         where);
        for (int64_t t = 0; t < n_taxa && rc == PERSISTE_OK; t++)
            if (b->tip_of[t] < 0)
                rc = copy_name(&d->dropped_taxon[d->n_dropped_taxa++],
                               taxon_names[t], where);
    }
    return rc;
}

int persiste__data_build(persiste_data **out, const persiste_tree *tree,
                         const persiste__cells *cells, int64_t n_families,
                         int64_t n_taxa, const char *const *taxon_names,
                         const char *const *family_names, uint32_t flags,
                         const char *where)
{
    int rc = check_args(out, tree, cells, n_families, n_taxa, taxon_names,
                        family_names, flags, where);
    if (rc == PERSISTE_OK && cells->states)
        rc = check_extent(n_families, n_taxa, cells->family_stride,
                          cells->taxon_stride, where);
    if (rc != PERSISTE_OK)
        return rc;

    binding b = {0};
    uint64_t *observed = NULL;
    int64_t *src = NULL;
    persiste_data *d = NULL;
    rc = bind_taxa(&b, tree, taxon_names, n_taxa, flags, where);
    if (rc == PERSISTE_OK)
        rc = alloc_array(&observed, (n_families + 63) / 64, sizeof *observed,
                         where);
    if (rc == PERSISTE_OK)
        rc = scan_states(observed, cells, n_families, n_taxa, &b,
                         taxon_names, family_names, where);
    if (rc != PERSISTE_OK)
        goto done;

    int64_t n_kept = n_families;
    if (flags & PERSISTE_DATA_DROP_ABSENT_FAMILIES) {
        n_kept = 0;
        for (int64_t f = 0; f < n_families; f++)
            n_kept += is_observed(observed, f);
        if (n_kept == 0) {
            rc = persiste__error(PERSISTE_E_INVALID,
                                 "%s: all %lld families are absent from "
                                 "every genome; none is left",
                                 where, (long long)n_families);
            goto done;
        }
    }
    rc = alloc_array(&d, 1, sizeof *d, where);
    if (rc == PERSISTE_OK)
        rc = alloc_data(d, tree, n_kept, n_families - n_kept, &b,
                        taxon_names, n_taxa, flags, !cells->repeats, where);
    if (rc == PERSISTE_OK)
        rc = alloc_array(&src, n_kept, sizeof *src, where);
    if (rc == PERSISTE_OK)
        rc = select_families(d, src, observed, n_families, family_names,
                             flags, where);
    if (rc == PERSISTE_OK)
        rc = pack_bits(d, src, cells, n_taxa, &b, where);
    if (rc == PERSISTE_OK)
        rc = persiste__data_patterns(d, cells->repeats, src, b.col_of_tip,
                                     where);
    if (rc == PERSISTE_OK) {
        *out = d;
        d = NULL;
    }
done:
    persiste_data_destroy(d);
    persiste__free(src);
    persiste__free(observed);
    binding_free(&b);
    return rc;
}

int persiste_data_from_matrix(persiste_data **out, const persiste_tree *tree,
                              const uint8_t *states, int64_t n_families,
                              int64_t n_taxa, int64_t family_stride,
                              int64_t taxon_stride,
                              const char *const *taxon_names,
                              const char *const *family_names, uint32_t flags)
{
    const persiste__cells cells = {.states = states,
                                   .family_stride = family_stride,
                                   .taxon_stride = taxon_stride};
    return persiste__data_build(out, tree, &cells, n_families, n_taxa,
                                taxon_names, family_names, flags, "matrix");
}

static void free_names(char **names, int64_t n)
{
    for (int64_t i = 0; names && i < n; i++)
        persiste__free(names[i]);
    persiste__free(names);
}

void persiste_data_destroy(persiste_data *data)
{
    if (!data)
        return;
    persiste__free(data->present);
    persiste__free(data->unknown);
    persiste__free(data->pattern);
    persiste__free(data->pattern_present);
    persiste__free(data->pattern_unknown);
    free_names(data->family_name, data->n_families);
    free_names(data->dropped_taxon, data->n_dropped_taxa);
    free_names(data->dropped_family, data->n_dropped_families);
    persiste__free(data);
}

/* Accessors: a NULL handle reads as empty, an index out of range as NULL. */
int64_t persiste_data_n_families(const persiste_data *data)
{
    return data ? data->n_families : 0;
}

int32_t persiste_data_n_taxa(const persiste_data *data)
{
    return data ? data->n_tips : 0;
}

int64_t persiste_data_n_all_absent(const persiste_data *data)
{
    return data ? data->n_all_absent : 0;
}

int64_t persiste_data_n_dropped_taxa(const persiste_data *data)
{
    return data ? data->n_dropped_taxa : 0;
}

int64_t persiste_data_n_dropped_families(const persiste_data *data)
{
    return data ? data->n_dropped_families : 0;
}

static const char *name_at(char *const *names, int64_t n, int64_t i)
{
    return names && i >= 0 && i < n ? names[i] : NULL;
}

const char *persiste_data_family_name(const persiste_data *data,
                                      int64_t family)
{
    return data ? name_at(data->family_name, data->n_families, family) : NULL;
}

const char *persiste_data_dropped_taxon(const persiste_data *data, int64_t i)
{
    return data ? name_at(data->dropped_taxon, data->n_dropped_taxa, i)
                : NULL;
}

const char *persiste_data_dropped_family(const persiste_data *data, int64_t i)
{
    return data ? name_at(data->dropped_family, data->n_dropped_families, i)
                : NULL;
}

int persiste_data_states(const persiste_data *data, int64_t family,
                         uint8_t *out)
{
    if (!data || !out)
        return persiste__error(PERSISTE_E_INVALID,
                               "data states: %s is NULL",
                               data ? "out" : "data");
    if (family < 0 || family >= data->n_families)
        return persiste__error(PERSISTE_E_INVALID,
                               "data states: family %lld out of range "
                               "[0, %lld)",
                               (long long)family,
                               (long long)data->n_families);
    const uint64_t *present = data->present + family / 64 * data->n_tips;
    const uint64_t *unknown = data->unknown + family / 64 * data->n_tips;
    const int bit = (int)(family % 64);
    for (int32_t v = 0; v < data->n_tips; v++)
        out[v] = (present[v] >> bit & 1)   ? PERSISTE_PRESENT
                 : (unknown[v] >> bit & 1) ? PERSISTE_UNKNOWN
                                           : PERSISTE_ABSENT;
    return PERSISTE_OK;
}
