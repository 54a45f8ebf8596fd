/* Identical columns of a presence/absence matrix, found once when the data
 * are built, so that a batch call evaluates each distinct (pattern, rate
 * pair) once (real pangenomes repeat core and singleton patterns a lot).
 *
 * The bits are stored by word of 64 families per tip; a column (one family,
 * every tip) is spread over n_tips words. Blocks of 64 x 64 bits are
 * transposed so that each family's column becomes n_tips / 64 words, which
 * are hashed and compared a word at a time, then transposed back into the
 * patterns' bits. */
#include <string.h>

#include "internal.h"

/* One step of the transpose: swaps the j x j blocks off the diagonal of
 * each 2j x 2j block (m: the low j bits of each 2j). The steps are written
 * out with j constant so that the inner loop runs straight (and
 * vectorizes): 2.5-3.5 times faster than one loop over j and k. */
static void transpose_step(uint64_t a[64], int j, uint64_t m)
{
    for (int k0 = 0; k0 < 64; k0 += 2 * j)
        for (int k = k0; k < k0 + j; k++) {
            uint64_t t = ((a[k] >> j) ^ a[k + j]) & m;
            a[k] ^= t << j;
            a[k + j] ^= t;
        }
}

void persiste__transpose64(uint64_t a[64])
{
    transpose_step(a, 32, 0x00000000FFFFFFFFull);
    transpose_step(a, 16, 0x0000FFFF0000FFFFull);
    transpose_step(a, 8, 0x00FF00FF00FF00FFull);
    transpose_step(a, 4, 0x0F0F0F0F0F0F0F0Full);
    transpose_step(a, 2, 0x3333333333333333ull);
    transpose_step(a, 1, 0x5555555555555555ull);
}

/* A hash of n words: four chains of persiste__mix64 over every fourth
 * word, so that the multiplies of one chain overlap the others'. */
static uint64_t hash_words(const uint64_t *p, int64_t n)
{
    uint64_t h[4] = {0, 1, 2, 3};
    int64_t c = 0;
    for (; c + 4 <= n; c += 4)
        for (int i = 0; i < 4; i++)
            h[i] = persiste__mix64(h[i] ^ p[c + i]);
    for (; c < n; c++)
        h[c % 4] = persiste__mix64(h[c % 4] ^ p[c]);
    return persiste__mix64(
        h[0] ^ persiste__mix64(h[1] ^ persiste__mix64(h[2] ^
                                                      persiste__mix64(h[3]))));
}

/* The columns of bits (words of 64 families per tip, n_tips of them per
 * word of families) as col[f * n_chunks + c]: tips 64c .. 64c+63 of family
 * f. */
static void columns(const uint64_t *bits, int64_t nf, int32_t nt,
                    int64_t n_chunks, uint64_t *col)
{
    uint64_t blk[64];
    for (int64_t w = 0; w * 64 < nf; w++) {
        int nb = nf - w * 64 < 64 ? (int)(nf - w * 64) : 64;
        for (int64_t c = 0; c < n_chunks; c++) {
            int n = nt - c * 64 < 64 ? (int)(nt - c * 64) : 64;
            const uint64_t *src = bits + (size_t)w * (size_t)nt + (size_t)c * 64;
            for (int i = 0; i < 64; i++)
                blk[i] = i < n ? src[i] : 0;
            persiste__transpose64(blk);
            for (int b = 0; b < nb; b++)
                col[(size_t)(w * 64 + b) * (size_t)n_chunks + (size_t)c] = blk[b];
        }
    }
}

/* The patterns' bits in the families' layout from their first families'
 * columns. */
static void pattern_bits(const uint64_t *col, const int64_t *first,
                         int64_t np, int32_t nt, int64_t n_chunks,
                         uint64_t *bits)
{
    uint64_t blk[64];
    for (int64_t w = 0; w * 64 < np; w++) {
        int nb = np - w * 64 < 64 ? (int)(np - w * 64) : 64;
        for (int64_t c = 0; c < n_chunks; c++) {
            for (int b = 0; b < 64; b++)
                blk[b] = b < nb ? col[(size_t)first[w * 64 + b] *
                                          (size_t)n_chunks + (size_t)c]
                                : 0;
            persiste__transpose64(blk);
            int n = nt - c * 64 < 64 ? (int)(nt - c * 64) : 64;
            memcpy(bits + (size_t)w * (size_t)nt + (size_t)c * 64, blk,
                   (size_t)n * sizeof *blk);
        }
    }
}

/* ---- Families and their repeats found as rows come --------------------- */

static int repeats_nomem(const char *where)
{
    return persiste__error(PERSISTE_E_NOMEM,
                           "%s: out of memory finding repeated patterns",
                           where);
}

int persiste__repeats_init(persiste__repeats *r, int64_t n_cells,
                           const int32_t *to, int32_t n_out, int drop_absent,
                           const char *where)
{
    memset(r, 0, sizeof *r);
    r->n_cells = n_cells;
    r->nw = (n_cells + 63) / 64;
    r->n_out = n_out;
    r->drop_absent = drop_absent;
    r->kept = persiste__calloc((size_t)r->nw, sizeof *r->kept);
    r->row = persiste__malloc(2 * (size_t)r->nw * sizeof *r->row);
    r->to = persiste__malloc((size_t)n_cells * sizeof *r->to);
    if (!r->kept || !r->row || !r->to)
        return repeats_nomem(where);
    memcpy(r->to, to, (size_t)n_cells * sizeof *r->to);
    for (int64_t c = 0; c < n_cells; c++)
        r->kept[c / 64] |= (uint64_t)(to[c] >= 0) << (c % 64);
    return PERSISTE_OK;
}

int persiste__repeats_reserve(persiste__repeats *r, int64_t n_rows,
                              const char *where)
{
    const size_t out = (size_t)r->n_out;
    if (n_rows > r->cap) {
        /* kept rows and patterns are no more than the rows */
        const size_t cap = ((size_t)n_rows + 63) / 64 * 64;
        if (persiste__grow(&r->of, cap, sizeof *r->of) ||
            persiste__grow(&r->observed, cap / 64, sizeof *r->observed) ||
            persiste__grow(&r->present, cap / 64 * out, sizeof *r->present) ||
            persiste__grow(&r->unknown, cap / 64 * out, sizeof *r->unknown) ||
            persiste__grow(&r->first, cap, sizeof *r->first) ||
            persiste__grow(&r->hash, cap, sizeof *r->hash) ||
            persiste__grow(&r->pattern_present, cap / 64 * out,
                           sizeof *r->pattern_present) ||
            persiste__grow(&r->pattern_unknown, cap / 64 * out,
                           sizeof *r->pattern_unknown))
            return repeats_nomem(where);
        memset(r->observed + r->cap / 64, 0,
               (cap - (size_t)r->cap) / 64 * sizeof *r->observed);
        r->cap = (int64_t)cap;
    }
    return PERSISTE_OK;
}

/* Room for one more row (and pattern), and n_slots >= 2 * (patterns + 1)
 * table entries. */
static int repeats_room(persiste__repeats *r, const char *where)
{
    if (r->n_rows == r->cap) {
        int rc = persiste__repeats_reserve(r, r->cap ? 2 * r->cap : 64,
                                           where);
        if (rc != PERSISTE_OK)
            return rc;
    }
    if (2 * (size_t)(r->n + 1) > r->n_slots) {
        size_t n_slots = r->n_slots ? 2 * r->n_slots : 256;
        int64_t *slot = persiste__malloc(n_slots * sizeof *slot);
        if (!slot)
            return repeats_nomem(where);
        for (size_t i = 0; i < n_slots; i++)
            slot[i] = -1;
        for (int64_t p = 0; p < r->n; p++) {
            size_t i = persiste__mix64(r->hash[p]) & (n_slots - 1);
            while (slot[i] >= 0)
                i = (i + 1) & (n_slots - 1);
            slot[i] = p;
        }
        persiste__free(r->slot);
        r->slot = slot;
        r->n_slots = n_slots;
    }
    return PERSISTE_OK;
}

/* n <= 64 rows (row k at rows[which[k] * 2 * nw]) transposed into words
 * of row bits by tip: kept cell c's into present[to[c]] and unknown[to[c]];
 * the unknown words only if unknown_too (else none is set in these rows:
 * zeros). */
static void transpose_rows(const persiste__repeats *r, const uint64_t *rows,
                           const int64_t *which, int64_t n, int unknown_too,
                           uint64_t *present, uint64_t *unknown)
{
    const int64_t nw = r->nw;
    uint64_t blk[64];
    const uint64_t *row[64];
    for (int64_t k = 0; k < n; k++)
        row[k] = rows + (size_t)which[k] * 2 * (size_t)nw;
    for (int64_t u = 0; u < 1 + unknown_too; u++)
        for (int64_t c = 0; c < nw; c++) {
            uint64_t any = 0;
            for (int64_t k = 0; k < n; k++) {
                blk[k] = row[k][u * nw + c];
                any |= blk[k];
            }
            for (int64_t k = n; k < 64; k++)
                blk[k] = 0;
            if (any) /* else already its transpose */
                persiste__transpose64(blk);
            const int64_t m = r->n_cells - c * 64 < 64 ? r->n_cells - c * 64
                                                        : 64;
            const int32_t *to = r->to + c * 64;
            uint64_t *out = u ? unknown : present;
            for (int64_t j = 0; j < m; j++)
                if (to[j] >= 0)
                    out[to[j]] = blk[j];
        }
    for (int64_t c = 0; !unknown_too && c < r->n_cells; c++)
        if (r->to[c] >= 0)
            unknown[r->to[c]] = 0;
}

/* Whether row g of rows (2 * nw words each) has the kept cells of r->row. */
static int same_kept(const persiste__repeats *r, const uint64_t *rows,
                     int64_t g)
{
    const int64_t nw = r->nw;
    const uint64_t *x = rows + (size_t)g * 2 * (size_t)nw;
    uint64_t diff = 0;
    for (int64_t c = 0; c < nw; c++)
        diff |= ((x[c] & r->kept[c]) ^ r->row[c]) |
                ((x[nw + c] & r->kept[c]) ^ r->row[nw + c]);
    return diff == 0;
}

/* The pattern of r->row (its kept cells, whose hash is h): an earlier
 * one's number, or a new one. */
static int64_t pattern_of(persiste__repeats *r, const uint64_t *rows,
                          int64_t row, uint64_t h, uint64_t unknown)
{
    size_t i = persiste__mix64(h) & (r->n_slots - 1);
    for (; r->slot[i] >= 0; i = (i + 1) & (r->n_slots - 1)) {
        const int64_t p = r->slot[i];
        if (r->hash[p] == h && same_kept(r, rows, r->first[p]))
            return p;
    }
    const int64_t p = r->n++;
    r->slot[i] = p;
    r->hash[p] = h;
    r->first[p] = row;
    r->any_unknown |= unknown != 0;
    r->pattern_group_unknown |= unknown != 0;
    if (r->n % 64 == 0) {
        transpose_rows(r, rows, r->first + p - 63, 64,
                       r->pattern_group_unknown,
                       r->pattern_present + p / 64 * r->n_out,
                       r->pattern_unknown + p / 64 * r->n_out);
        r->pattern_group_unknown = 0;
    }
    return p;
}

int persiste__repeats_add(persiste__repeats *r, const uint64_t *rows,
                          const char *where)
{
    int rc = repeats_room(r, where);
    if (rc != PERSISTE_OK)
        return rc;
    const int64_t nw = r->nw, row = r->n_rows++;
    const uint64_t *x = rows + (size_t)row * 2 * (size_t)nw;
    uint64_t seen = 0, unknown = 0;
    for (int64_t c = 0; c < nw; c++) {
        r->row[c] = x[c] & r->kept[c];
        r->row[nw + c] = x[nw + c] & r->kept[c];
        seen |= r->row[c];
        unknown |= r->row[nw + c];
    }
    r->observed[row / 64] |= (uint64_t)((seen | unknown) != 0) << (row % 64);
    if (r->drop_absent && !(seen | unknown)) {
        r->of[row] = -1;
        return PERSISTE_OK;
    }
    r->group[r->n_kept % 64] = row;
    r->group_unknown |= unknown != 0;
    if (++r->n_kept % 64 == 0) {
        transpose_rows(r, rows, r->group, 64, r->group_unknown,
                       r->present + (r->n_kept / 64 - 1) * r->n_out,
                       r->unknown + (r->n_kept / 64 - 1) * r->n_out);
        r->group_unknown = 0;
    }
    uint64_t h = hash_words(r->row, nw);
    if (unknown)
        h = persiste__mix64(h ^ hash_words(r->row + nw, nw));
    r->of[row] = pattern_of(r, rows, row, h, unknown);
    return PERSISTE_OK;
}

void persiste__repeats_end(persiste__repeats *r, const uint64_t *rows)
{
    const int64_t nk = r->n_kept % 64, np = r->n % 64;
    if (nk && rows)
        transpose_rows(r, rows, r->group, nk, r->group_unknown,
                       r->present + r->n_kept / 64 * r->n_out,
                       r->unknown + r->n_kept / 64 * r->n_out);
    if (np && rows)
        transpose_rows(r, rows, r->first + r->n - np, np,
                       r->pattern_group_unknown,
                       r->pattern_present + r->n / 64 * r->n_out,
                       r->pattern_unknown + r->n / 64 * r->n_out);
    persiste__free(r->slot);
    persiste__free(r->hash);
    r->slot = NULL;
    r->hash = NULL;
    r->n_slots = 0;
}

void persiste__repeats_free(persiste__repeats *r)
{
    persiste__free(r->slot);
    persiste__free(r->hash);
    persiste__free(r->kept);
    persiste__free(r->row);
    persiste__free(r->to);
    persiste__free(r->of);
    persiste__free(r->observed);
    persiste__free(r->present);
    persiste__free(r->unknown);
    persiste__free(r->first);
    persiste__free(r->pattern_present);
    persiste__free(r->pattern_unknown);
    memset(r, 0, sizeof *r);
}

/* The pattern fields from the repeats of the families' source rows,
 * taking their bits; a tip without a column is unknown in every pattern
 * (every other tip has one, or the data would not be built). */
static int patterns_found(persiste_data *d, persiste__repeats *r,
                          const int64_t *src, const int64_t *col_of_tip,
                          const char *where)
{
    const int64_t nf = d->n_families, np = r->n;
    const size_t nt = (size_t)d->n_tips;
    d->pattern = persiste__malloc(((size_t)nf + 1) * sizeof *d->pattern);
    if (!d->pattern)
        return persiste__error(PERSISTE_E_NOMEM,
                               "%s: out of memory storing patterns", where);
    for (int64_t f = 0; f < nf; f++)
        d->pattern[f] = r->of[src[f]];
    d->n_patterns = np;
    d->any_unknown = r->any_unknown;
    d->pattern_present = r->pattern_present;
    d->pattern_unknown = r->pattern_unknown;
    r->pattern_present = r->pattern_unknown = NULL;
    for (int64_t w = 0; w * 64 < np; w++)
        for (size_t v = 0; v < nt; v++)
            if (col_of_tip[v] < 0) {
                d->pattern_present[(size_t)w * nt + v] = 0;
                d->pattern_unknown[(size_t)w * nt + v] =
                    np - w * 64 >= 64 ? ~(uint64_t)0
                                      : ((uint64_t)1 << (np - w * 64)) - 1;
                d->any_unknown = 1;
            }
    return PERSISTE_OK;
}

int persiste__data_patterns(persiste_data *d, persiste__repeats *found,
                            const int64_t *src, const int64_t *col_of_tip,
                            const char *where)
{
    d->serial = persiste__serial();
    if (found)
        return patterns_found(d, found, src, col_of_tip, where);
    int64_t nf = d->n_families;
    int32_t nt = d->n_tips;
    int64_t n_chunks = (nt + 63) / 64;
    size_t n_col = (size_t)nf * (size_t)n_chunks; /* fits: <= the bits' size */
    size_t cap = 16;
    while (cap < 2 * (size_t)nf)
        cap *= 2;
    uint64_t any = 0;
    for (size_t i = 0; i < (size_t)d->n_words * (size_t)nt; i++)
        any |= d->unknown[i];
    d->any_unknown = any != 0;
    uint64_t *colp = persiste__malloc((n_col ? n_col : 1) * sizeof *colp);
    uint64_t *colu = d->any_unknown
                         ? persiste__malloc((n_col ? n_col : 1) * sizeof *colu)
                         : NULL;
    uint64_t *hash = persiste__malloc(((size_t)nf + 1) * sizeof *hash);
    int64_t *table = persiste__malloc(cap * sizeof *table);
    int64_t *first = persiste__malloc(((size_t)nf + 1) * sizeof *first);
    d->pattern = persiste__malloc(((size_t)nf + 1) * sizeof *d->pattern);
    int rc = PERSISTE_OK;
    if (!colp || (d->any_unknown && !colu) || !hash || !table || !first ||
        !d->pattern) {
        rc = persiste__error(PERSISTE_E_NOMEM,
                             "%s: out of memory finding repeated patterns",
                             where);
        goto done;
    }
    columns(d->present, nf, nt, n_chunks, colp);
    if (colu)
        columns(d->unknown, nf, nt, n_chunks, colu);

    /* A column's hash, then open addressing; equal hashes are confirmed
     * word by word. */
    for (int64_t f = 0; f < nf; f++) {
        const size_t at = (size_t)f * (size_t)n_chunks;
        uint64_t h = hash_words(colp + at, n_chunks);
        hash[f] = colu ? persiste__mix64(h ^ hash_words(colu + at, n_chunks))
                       : h;
    }
    for (size_t i = 0; i < cap; i++)
        table[i] = -1;
    size_t words = (size_t)n_chunks * sizeof(uint64_t);
    int64_t np = 0;
    for (int64_t f = 0; f < nf; f++) {
        size_t i = persiste__mix64(hash[f]) & (cap - 1);
        for (; table[i] >= 0; i = (i + 1) & (cap - 1)) {
            int64_t g = first[table[i]];
            if (hash[g] == hash[f] &&
                !memcmp(colp + (size_t)f * (size_t)n_chunks,
                        colp + (size_t)g * (size_t)n_chunks, words) &&
                (!colu || !memcmp(colu + (size_t)f * (size_t)n_chunks,
                                  colu + (size_t)g * (size_t)n_chunks, words)))
                break;
        }
        if (table[i] < 0) {
            table[i] = np;
            first[np++] = f;
        }
        d->pattern[f] = table[i];
    }
    d->n_patterns = np;

    /* The distinct patterns' bits, in the families' layout. */
    size_t n_words = (size_t)(np + 63) / 64, bytes = n_words * (size_t)nt * 8;
    d->pattern_present = persiste__calloc(1, bytes ? bytes : 1);
    d->pattern_unknown = persiste__calloc(1, bytes ? bytes : 1);
    if (!d->pattern_present || !d->pattern_unknown) {
        rc = persiste__error(PERSISTE_E_NOMEM,
                             "%s: out of memory storing patterns", where);
        goto done;
    }
    pattern_bits(colp, first, np, nt, n_chunks, d->pattern_present);
    if (colu)
        pattern_bits(colu, first, np, nt, n_chunks, d->pattern_unknown);
done:
    persiste__free(colp);
    persiste__free(colu);
    persiste__free(hash);
    persiste__free(table);
    persiste__free(first);
    return rc;
}
