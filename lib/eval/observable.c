/* Copies of data with some of its families: persiste_data_observable
 * (without the families whose observed cells lie outside the model's
 * conditioning event: they would have likelihood 0 given the event; it
 * sits beside the evaluation because the event is the one general.c
 * conditions on) and persiste_data_select (the families listed). */
#include <string.h>

#include "internal.h"

/* Family f's known cells satisfy the event of model m. */
static int observable(const persiste_data *d, const persiste_model *m,
                      int64_t f)
{
    if (m->condition == PERSISTE_CONDITION_NONE)
        return 1;
    int64_t w = f >> 6;
    int sh = (int)(f & 63);
    int64_t n_present = 0, n_absent = 0;
    for (int32_t t = 0; t < d->n_tips; t++) {
        size_t i = (size_t)w * (size_t)d->n_tips + (size_t)t;
        if ((d->unknown[i] >> sh) & 1)
            continue;
        if ((d->present[i] >> sh) & 1)
            n_present++;
        else
            n_absent++;
    }
    return persiste__model_event(m, n_present, n_present + n_absent);
}

static int copy_names(char **dst, char *const *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(dst[i] = persiste__strndup(src[i], strlen(src[i]))))
            return persiste__error(PERSISTE_E_NOMEM,
                                   "observable: out of memory");
    return PERSISTE_OK;
}

/* A copy of data with the families order[0 .. keep) in that order; every
 * other family goes to the dropped ones, in data's order (ok[f]: kept). */
static int copy_families(persiste_data **out, const persiste_data *data,
                         const int64_t *order, int64_t keep,
                         const unsigned char *ok);

int persiste_data_observable(persiste_data **out, const persiste_data *data,
                             const persiste_model *model)
{
    if (!out || !data || !model)
        return persiste__error(PERSISTE_E_INVALID,
                               "observable: out, data and model must not "
                               "be NULL");
    *out = NULL;
    int64_t nf = data->n_families, keep = 0;
    unsigned char *ok = persiste__malloc((size_t)nf + 1);
    int64_t *order = persiste__malloc(((size_t)nf + 1) * sizeof *order);
    int rc;
    if (!ok || !order) {
        rc = persiste__error(PERSISTE_E_NOMEM, "observable: out of memory");
    } else {
        for (int64_t f = 0; f < nf; f++)
            if ((ok[f] = (unsigned char)observable(data, model, f)))
                order[keep++] = f;
        rc = copy_families(out, data, order, keep, ok);
    }
    persiste__free(ok);
    persiste__free(order);
    return rc;
}

int persiste_data_select(persiste_data **out, const persiste_data *data,
                         int64_t n, const int64_t *families)
{
    if (!out || !data || n < 0 || (n > 0 && !families))
        return persiste__error(PERSISTE_E_INVALID,
                               "select: out, data and families must not be "
                               "NULL, n >= 0");
    *out = NULL;
    int64_t nf = data->n_families;
    unsigned char *ok = persiste__calloc((size_t)nf + 1, 1);
    if (!ok)
        return persiste__error(PERSISTE_E_NOMEM, "select: out of memory");
    int rc = PERSISTE_OK;
    for (int64_t i = 0; i < n && rc == PERSISTE_OK; i++) {
        int64_t f = families[i];
        if (f < 0 || f >= nf)
            rc = persiste__error(PERSISTE_E_INVALID,
                                 "select: families[%lld] is %lld, outside "
                                 "0..%lld",
                                 (long long)i, (long long)f,
                                 (long long)nf - 1);
        else if (ok[f])
            rc = persiste__error(PERSISTE_E_INVALID,
                                 "select: family %lld ('%s') is listed twice",
                                 (long long)f, data->family_name[f]);
        else
            ok[f] = 1;
    }
    if (rc == PERSISTE_OK)
        rc = copy_families(out, data, families, n, ok);
    persiste__free(ok);
    return rc;
}

static int copy_families(persiste_data **out, const persiste_data *data,
                         const int64_t *order, int64_t keep,
                         const unsigned char *ok)
{
    int64_t nf = data->n_families;
    int32_t nt = data->n_tips;
    persiste_data *d = persiste__calloc(1, sizeof *d);
    int rc = PERSISTE_OK;
    if (!d)
        return persiste__error(PERSISTE_E_NOMEM, "data: out of memory");
    int64_t drop = nf - keep;
    d->n_tips = nt;
    d->fingerprint = data->fingerprint;
    d->n_families = keep;
    d->n_words = (keep + 63) / 64;
    size_t nwords = (size_t)(d->n_words ? d->n_words : 1) * (size_t)nt;
    d->present = persiste__calloc(nwords, sizeof *d->present);
    d->unknown = persiste__calloc(nwords, sizeof *d->unknown);
    d->family_name = persiste__calloc((size_t)keep + 1, sizeof(char *));
    d->n_dropped_taxa = data->n_dropped_taxa;
    d->dropped_taxon =
        persiste__calloc((size_t)data->n_dropped_taxa + 1, sizeof(char *));
    d->n_dropped_families = data->n_dropped_families + drop;
    d->dropped_family =
        persiste__calloc((size_t)d->n_dropped_families + 1, sizeof(char *));
    if (!d->present || !d->unknown || !d->family_name || !d->dropped_taxon ||
        !d->dropped_family) {
        rc = persiste__error(PERSISTE_E_NOMEM, "data: out of memory");
        goto fail;
    }
    if ((rc = copy_names(d->dropped_taxon, data->dropped_taxon,
                         data->n_dropped_taxa)) ||
        (rc = copy_names(d->dropped_family, data->dropped_family,
                         data->n_dropped_families)))
        goto fail;
    int64_t j = data->n_dropped_families;
    for (int64_t f = 0; f < nf; f++)
        if (!ok[f] && (rc = copy_names(d->dropped_family + j++,
                                       data->family_name + f, 1)))
            goto fail;
    for (int64_t k = 0; k < keep; k++) {
        int64_t f = order[k];
        if ((rc = copy_names(d->family_name + k, data->family_name + f, 1)))
            goto fail;
        size_t from = (size_t)(f >> 6) * (size_t)nt;
        size_t to = (size_t)(k >> 6) * (size_t)nt;
        int sf = (int)(f & 63), sk = (int)(k & 63);
        for (int32_t t = 0; t < nt; t++) {
            d->present[to + t] |= ((data->present[from + t] >> sf) & 1)
                                  << sk;
            d->unknown[to + t] |= ((data->unknown[from + t] >> sf) & 1)
                                  << sk;
        }
    }
    /* kept families observed nowhere (possible under NONE only) */
    for (int64_t f = 0; f < keep; f++) {
        int any = 0;
        for (int32_t t = 0; t < nt && !any; t++)
            any = (d->present[(size_t)(f >> 6) * nt + t] >> (f & 63)) & 1;
        d->n_all_absent += !any;
    }
    if ((rc = persiste__data_patterns(d, NULL, NULL, NULL, "data")))
        goto fail;
    *out = d;
    return PERSISTE_OK;
fail:
    persiste_data_destroy(d);
    return rc;
}
