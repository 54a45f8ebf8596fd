/* persiste_data_observable: a copy of the data without the families whose
 * observed cells lie outside the model's conditioning event (they would
 * have likelihood 0 given the event), reported as dropped. It sits beside
 * the evaluation because the event is the one general.c conditions on. */
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
    if (m->condition == PERSISTE_CONDITION_VARIABLE)
        return n_present > 0 && n_absent > 0;
    return n_present >= m->min_present;
}

static int copy_names(char **dst, char *const *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(dst[i] = persiste__strndup(src[i], strlen(src[i]))))
            return persiste__error(PERSISTE_E_NOMEM,
                                   "observable: out of memory");
    return PERSISTE_OK;
}

int persiste_data_observable(persiste_data **out, const persiste_data *data,
                             const persiste_model *model)
{
    if (!out || !data || !model)
        return persiste__error(PERSISTE_E_INVALID,
                               "observable: out, data and model must not "
                               "be NULL");
    *out = NULL;
    int64_t nf = data->n_families, keep = 0;
    int32_t nt = data->n_tips;
    unsigned char *ok = persiste__malloc((size_t)nf + 1);
    persiste_data *d = persiste__calloc(1, sizeof *d);
    int rc = PERSISTE_OK;
    if (!ok || !d) {
        rc = persiste__error(PERSISTE_E_NOMEM, "observable: out of memory");
        goto fail;
    }
    for (int64_t f = 0; f < nf; f++)
        keep += ok[f] = (unsigned char)observable(data, model, f);
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
        rc = persiste__error(PERSISTE_E_NOMEM, "observable: out of memory");
        goto fail;
    }
    if ((rc = copy_names(d->dropped_taxon, data->dropped_taxon,
                         data->n_dropped_taxa)) ||
        (rc = copy_names(d->dropped_family, data->dropped_family,
                         data->n_dropped_families)))
        goto fail;
    int64_t k = 0, j = data->n_dropped_families;
    for (int64_t f = 0; f < nf; f++) {
        if (!ok[f]) {
            if ((rc = copy_names(d->dropped_family + j++,
                                 data->family_name + f, 1)))
                goto fail;
            continue;
        }
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
        k++;
    }
    /* kept families observed nowhere (possible under NONE only) */
    for (int64_t f = 0; f < keep; f++) {
        int any = 0;
        for (int32_t t = 0; t < nt && !any; t++)
            any = (d->present[(size_t)(f >> 6) * nt + t] >> (f & 63)) & 1;
        d->n_all_absent += !any;
    }
    if ((rc = persiste__data_patterns(d, NULL, NULL, NULL, "observable")))
        goto fail;
    persiste__free(ok);
    *out = d;
    return PERSISTE_OK;
fail:
    persiste__free(ok);
    persiste_data_destroy(d);
    return rc;
}
