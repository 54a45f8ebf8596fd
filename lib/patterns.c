/* Identical columns of a presence/absence matrix, found once when the data
 * are built, so that a batch call evaluates each distinct (pattern, rate
 * pair) once (real pangenomes repeat core and singleton patterns a lot). */
#include <stdatomic.h>
#include <string.h>

#include "internal.h"

static int column_bit(const uint64_t *bits, int32_t n_tips, int64_t f,
                      int32_t t)
{
    return (int)((bits[(size_t)(f / 64) * (size_t)n_tips + (size_t)t] >>
                  (f % 64)) & 1);
}

static int same_column(const persiste_data *d, int64_t f, int64_t g)
{
    for (int32_t t = 0; t < d->n_tips; t++)
        if (column_bit(d->present, d->n_tips, f, t) !=
                column_bit(d->present, d->n_tips, g, t) ||
            column_bit(d->unknown, d->n_tips, f, t) !=
                column_bit(d->unknown, d->n_tips, g, t))
            return 0;
    return 1;
}

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int persiste__data_patterns(persiste_data *d, const char *where)
{
    static _Atomic uint64_t serial;
    d->serial = atomic_fetch_add(&serial, 1) + 1;
    int64_t nf = d->n_families;
    int32_t nt = d->n_tips;
    uint64_t *hash = persiste__calloc((size_t)nf, sizeof *hash);
    int64_t *table = NULL, *first = NULL;
    size_t cap = 16;
    while (cap < 2 * (size_t)nf)
        cap *= 2;
    table = persiste__malloc(cap * sizeof *table);
    first = persiste__malloc((size_t)nf * sizeof *first);
    d->pattern = persiste__malloc((size_t)nf * sizeof *d->pattern);
    if (!hash || !table || !first || !d->pattern) {
        persiste__free(hash);
        persiste__free(table);
        persiste__free(first);
        return persiste__error(PERSISTE_E_NOMEM,
                               "%s: out of memory finding repeated patterns",
                               where);
    }
    /* A column's hash: a sum of per-tip random keys (cheap and vectorised
     * over the 64 families of a word), mixed once at the end. */
    for (int64_t w = 0; w < d->n_words; w++) {
        uint64_t *h = hash + w * 64;
        int nb = nf - w * 64 < 64 ? (int)(nf - w * 64) : 64;
        for (int32_t t = 0; t < nt; t++) {
            uint64_t p = d->present[w * nt + t], u = d->unknown[w * nt + t];
            uint64_t kp = mix(2 * (uint64_t)t + 1), ku = mix(2 * (uint64_t)t + 2);
            for (int b = 0; b < nb; b++)
                h[b] += ((p >> b) & 1) * kp + ((u >> b) & 1) * ku;
        }
    }
    for (size_t i = 0; i < cap; i++)
        table[i] = -1;
    int64_t np = 0;
    for (int64_t f = 0; f < nf; f++) {
        size_t i = mix(hash[f]) & (cap - 1);
        for (; table[i] >= 0; i = (i + 1) & (cap - 1)) {
            int64_t g = first[table[i]];
            if (hash[g] == hash[f] && same_column(d, f, g))
                break;
        }
        if (table[i] < 0) {
            table[i] = np;
            first[np++] = f;
        }
        d->pattern[f] = table[i];
    }
    d->n_patterns = np;
    persiste__free(hash);
    persiste__free(table);

    /* The distinct patterns' bits, in the families' layout. */
    size_t n_words = (size_t)(np + 63) / 64, bytes = n_words * (size_t)nt * 8;
    d->pattern_present = persiste__calloc(1, bytes);
    d->pattern_unknown = persiste__calloc(1, bytes);
    if (!d->pattern_present || !d->pattern_unknown) {
        persiste__free(first);
        return persiste__error(PERSISTE_E_NOMEM,
                               "%s: out of memory storing patterns", where);
    }
    for (int64_t q = 0; q < np; q++) {
        size_t base = (size_t)(q / 64) * (size_t)nt;
        uint64_t bit = 1ull << (q % 64);
        for (int32_t t = 0; t < nt; t++) {
            if (column_bit(d->present, nt, first[q], t))
                d->pattern_present[base + (size_t)t] |= bit;
            if (column_bit(d->unknown, nt, first[q], t)) {
                d->pattern_unknown[base + (size_t)t] |= bit;
                d->any_unknown = 1;
            }
        }
    }
    persiste__free(first);
    return PERSISTE_OK;
}
