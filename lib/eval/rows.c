/* Families grouped into rows for a batch call: one row per distinct
 * (pattern, rate pair), the rows of one pair contiguous so that blocks share
 * one transition table. The grouping is kept between calls and reused while
 * the data and the partition of the families by rate pair stay the same
 * (the usual case in a fit, where only the values of the rates change). */
#include <string.h>

#include "kernel.h"

struct persiste__rows {
    uint64_t data_serial;      /* grouping valid for these data ... */
    int64_t n_families;
    int64_t *pair_of;          /* ... and this partition [F] */
    int64_t cap_families;      /* room of the [F] and [R] arrays */
    int64_t n_pairs, n_rows;
    int64_t *row_of;           /* [F] */
    int64_t *row_family;       /* [R] first family of each row */
    uint64_t *present, *unknown; /* row bits, or the data's pattern bits */
    int own_bits;
    double *lg, *ll, *w, *out_ll, *out_dg, *out_dl; /* [R] */
    int64_t *table;            /* hash table, [cap] */
    size_t cap;
    int64_t *tmp, *first;      /* work space [F] */
};

void persiste__rows_destroy(struct persiste__rows *r)
{
    if (!r)
        return;
    persiste__free(r->pair_of);
    persiste__free(r->row_of);
    persiste__free(r->row_family);
    if (r->own_bits) {
        persiste__free(r->present);
        persiste__free(r->unknown);
    }
    persiste__free(r->lg);
    persiste__free(r->ll);
    persiste__free(r->w);
    persiste__free(r->out_ll);
    persiste__free(r->out_dg);
    persiste__free(r->out_dl);
    persiste__free(r->table);
    persiste__free(r->tmp);
    persiste__free(r->first);
    persiste__free(r);
}

static uint64_t bits_of(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* An empty hash table of at least 2n entries. */
static int table_reset(struct persiste__rows *r, int64_t n)
{
    size_t cap = 16;
    while (cap < 2 * (size_t)n)
        cap *= 2;
    if (cap > r->cap) {
        int rc = persiste__grow(&r->table, cap, sizeof *r->table);
        if (rc)
            return rc;
        r->cap = cap;
    }
    for (size_t i = 0; i < cap; i++)
        r->table[i] = -1;
    r->cap = cap;
    return PERSISTE_OK;
}

/* pair[f]: index of f's rate pair, numbered by first occurrence. */
static int64_t number_pairs(struct persiste__rows *r, const double *lg,
                            const double *ll, int64_t nf, int64_t *pair,
                            int64_t *first)
{
    int64_t n = 0;
    for (int64_t f = 0; f < nf; f++) {
        uint64_t a = bits_of(lg[f]), b = bits_of(ll[f]);
        size_t i = persiste__mix64(a ^ persiste__mix64(b)) & (r->cap - 1);
        for (; r->table[i] >= 0; i = (i + 1) & (r->cap - 1)) {
            int64_t g = first[r->table[i]];
            if (bits_of(lg[g]) == a && bits_of(ll[g]) == b)
                break;
        }
        if (r->table[i] < 0) {
            r->table[i] = n;
            first[n++] = f;
        }
        pair[f] = r->table[i];
    }
    return n;
}

/* Rows: distinct (pair, pattern), grouped by pair in order of first
 * occurrence; row_of and row_family. */
static int group(struct persiste__rows *r, const persiste_data *d)
{
    int64_t *tmp = r->tmp;
    int64_t nf = d->n_families;
    int rc = table_reset(r, nf);
    if (rc)
        return rc;
    /* provisional rows in order of first occurrence (tmp: their family) */
    int64_t n = 0;
    for (int64_t f = 0; f < nf; f++) {
        int64_t p = r->pair_of[f], q = d->pattern[f];
        size_t i = persiste__mix64((uint64_t)p * 0x9E3779B97F4A7C15ull ^
                                   persiste__mix64((uint64_t)q)) &
                   (r->cap - 1);
        for (; r->table[i] >= 0; i = (i + 1) & (r->cap - 1)) {
            int64_t g = tmp[r->table[i]];
            if (r->pair_of[g] == p && d->pattern[g] == q)
                break;
        }
        if (r->table[i] < 0) {
            r->table[i] = n;
            tmp[n++] = f;
        }
        r->row_of[f] = r->table[i];
    }
    r->n_rows = n;
    /* stable counting sort of the rows by pair: final row numbers */
    int64_t *start = r->table; /* reused: [n_pairs + 1] <= cap */
    memset(start, 0, (size_t)(r->n_pairs + 1) * sizeof *start);
    for (int64_t k = 0; k < n; k++)
        start[r->pair_of[tmp[k]] + 1]++;
    for (int64_t p = 0; p < r->n_pairs; p++)
        start[p + 1] += start[p];
    for (int64_t k = 0; k < n; k++) {
        int64_t row = start[r->pair_of[tmp[k]]]++;
        r->row_family[row] = tmp[k];
    }
    /* row_of through each row's first family */
    for (int64_t row = 0; row < n; row++)
        tmp[r->row_of[r->row_family[row]]] = row; /* provisional -> final */
    for (int64_t f = 0; f < nf; f++)
        r->row_of[f] = tmp[r->row_of[f]];
    return PERSISTE_OK;
}

/* The rows' bits: the data's pattern bits when rows are the patterns in
 * order, else copied column by column. */
static int row_bits(struct persiste__rows *r, const persiste_data *d)
{
    if (r->own_bits) {
        persiste__free(r->present);
        persiste__free(r->unknown);
    }
    r->own_bits = 0;
    int identity = r->n_rows == d->n_patterns;
    for (int64_t k = 0; identity && k < r->n_rows; k++)
        identity = d->pattern[r->row_family[k]] == k;
    if (identity) {
        r->present = d->pattern_present;
        r->unknown = d->pattern_unknown;
        return PERSISTE_OK;
    }
    int32_t nt = d->n_tips;
    size_t words = (size_t)(r->n_rows + 63) / 64 * (size_t)nt;
    r->present = persiste__calloc(words, sizeof(uint64_t));
    r->unknown = persiste__calloc(words, sizeof(uint64_t));
    r->own_bits = 1;
    if (!r->present || !r->unknown)
        return persiste__error(PERSISTE_E_NOMEM,
                               "batch: out of memory grouping families");
    for (int64_t k = 0; k < r->n_rows; k++) {
        int64_t q = d->pattern[r->row_family[k]];
        const uint64_t *pp = d->pattern_present + (size_t)(q / 64) * nt;
        const uint64_t *pu = d->pattern_unknown + (size_t)(q / 64) * nt;
        uint64_t *rp = r->present + (size_t)(k / 64) * nt;
        uint64_t *ru = r->unknown + (size_t)(k / 64) * nt;
        int sq = (int)(q % 64), sk = (int)(k % 64);
        for (int32_t t = 0; t < nt; t++) {
            rp[t] |= ((pp[t] >> sq) & 1) << sk;
            ru[t] |= ((pu[t] >> sq) & 1) << sk;
        }
    }
    return PERSISTE_OK;
}

int persiste__rows_prepare(struct persiste__rows **rp,
                           struct persiste__job *job)
{
    const persiste_data *d = job->data;
    int64_t nf = d->n_families;
    struct persiste__rows *r = *rp;
    if (!r) {
        r = persiste__calloc(1, sizeof *r);
        if (!r)
            return persiste__error(PERSISTE_E_NOMEM,
                                   "batch: out of memory grouping families");
        *rp = r;
    }
    int rc;
    if (r->cap_families < nf &&
        ((rc = persiste__grow(&r->row_of, (size_t)nf, sizeof(int64_t))) ||
         (rc = persiste__grow(&r->row_family, (size_t)nf, sizeof(int64_t))) ||
         (rc = persiste__grow(&r->lg, (size_t)nf, sizeof(double))) ||
         (rc = persiste__grow(&r->ll, (size_t)nf, sizeof(double))) ||
         (rc = persiste__grow(&r->w, (size_t)nf, sizeof(double))) ||
         (rc = persiste__grow(&r->out_ll, (size_t)nf, sizeof(double))) ||
         (rc = persiste__grow(&r->out_dg, (size_t)nf, sizeof(double))) ||
         (rc = persiste__grow(&r->out_dl, (size_t)nf, sizeof(double))) ||
         (rc = persiste__grow(&r->tmp, (size_t)nf, sizeof(int64_t))) ||
         (rc = persiste__grow(&r->first, (size_t)nf, sizeof(int64_t))) ||
         (rc = persiste__grow(&r->pair_of, (size_t)nf, sizeof(int64_t)))))
        return rc;
    if (r->cap_families < nf)
        r->cap_families = nf;
    int64_t *tmp = r->tmp, n_pairs = 1;
    /* this call's partition into rate pairs (tmp), against the cached one;
     * one pair for all is pair 0 for all (pairs are numbered in order of
     * first appearance), known without hashing or comparing */
    if (!job->one_pair) {
        if ((rc = table_reset(r, nf)))
            return rc;
        n_pairs = number_pairs(r, job->log_gain, job->log_loss, nf, tmp,
                               r->first);
    }
    int same = r->data_serial == d->serial && r->n_families == nf &&
               r->n_pairs == n_pairs &&
               (job->one_pair ||
                !memcmp(r->pair_of, tmp, (size_t)nf * sizeof *tmp));
    if (!same) {
        r->data_serial = 0; /* invalid until rebuilt */
        if (job->one_pair)
            memset(r->pair_of, 0, (size_t)nf * sizeof *r->pair_of);
        else
            memcpy(r->pair_of, tmp, (size_t)nf * sizeof *tmp);
        r->n_pairs = n_pairs;
        r->n_families = nf;
        if ((rc = group(r, d)) || (rc = row_bits(r, d)))
            return rc;
        r->data_serial = d->serial;
    }
    /* Grouping pays when it removes repeats or gathers few rate pairs. */
    if (r->n_rows == nf && n_pairs * 64 > nf)
        return 0;
    for (int64_t k = 0; k < r->n_rows; k++) {
        r->lg[k] = job->log_gain[r->row_family[k]];
        r->ll[k] = job->log_loss[r->row_family[k]];
        r->w[k] = 0.0;
    }
    for (int64_t f = 0; f < nf; f++)
        r->w[r->row_of[f]] += job->weight ? job->weight[f] : 1.0;
    job->n_families = r->n_rows;
    job->log_gain = r->lg;
    job->log_loss = r->ll;
    job->weight = r->w;
    job->present = r->present;
    job->unknown = r->unknown;
    return 1;
}

void persiste__rows_outputs(const struct persiste__rows *r,
                            struct persiste__job *job)
{
    job->loglik = r->out_ll;
    if (job->d_log_gain)
        job->d_log_gain = r->out_dg;
    if (job->d_log_loss)
        job->d_log_loss = r->out_dl;
}

void persiste__rows_scatter(const struct persiste__rows *r, int64_t nf,
                            double *loglik, double *d_log_gain,
                            double *d_log_loss)
{
    for (int64_t f = 0; f < nf; f++) {
        int64_t k = r->row_of[f];
        loglik[f] = r->out_ll[k];
        if (d_log_gain)
            d_log_gain[f] = r->out_dg[k];
        if (d_log_loss)
            d_log_loss[f] = r->out_dl[k];
    }
}
