/* Model options: a small handle of validated settings. */
#include <math.h>

#include "internal.h"

int persiste_model_create(persiste_model **out)
{
    if (!out)
        return persiste__error(PERSISTE_E_INVALID, "model: out is NULL");
    *out = NULL;
    persiste_model *model = persiste__malloc(sizeof *model);
    if (!model)
        return persiste__error(PERSISTE_E_NOMEM, "model: out of memory");
    model->condition = PERSISTE_CONDITION_PRESENT;
    model->root_prior = PERSISTE_ROOT_STATIONARY;
    model->root_freq = 0.5;
    model->min_branch_length = 0.0;
    *out = model;
    return PERSISTE_OK;
}

void persiste_model_destroy(persiste_model *model) { persiste__free(model); }

static int is_int_param(int param)
{
    return param == PERSISTE_MODEL_CONDITION ||
           param == PERSISTE_MODEL_ROOT_PRIOR;
}

static int is_double_param(int param)
{
    return param == PERSISTE_MODEL_ROOT_FREQ ||
           param == PERSISTE_MODEL_MIN_BRANCH_LENGTH;
}

/* Common checks of the four accessors: handle and pointer present, and the
 * parameter is known and of the accessor's type. */
static int check(const void *model, const void *value, int param,
                 int want_int)
{
    if (!model || !value)
        return persiste__error(PERSISTE_E_INVALID,
                               "model: NULL argument");
    const char *type = want_int ? "integer" : "double";
    if (want_int ? is_int_param(param) : is_double_param(param))
        return PERSISTE_OK;
    if (want_int ? is_double_param(param) : is_int_param(param))
        return persiste__error(PERSISTE_E_INVALID,
                               "model: parameter %d is not of type %s", param,
                               type);
    return persiste__error(PERSISTE_E_INVALID,
                           "model: unknown %s parameter %d", type, param);
}

int persiste_model_set_int(persiste_model *model, int param, int64_t value)
{
    int rc = check(model, model, param, 1);
    if (rc != PERSISTE_OK)
        return rc;
    if (param == PERSISTE_MODEL_CONDITION) {
        if (value < PERSISTE_CONDITION_NONE ||
            value > PERSISTE_CONDITION_VARIABLE)
            return persiste__error(PERSISTE_E_INVALID,
                                   "model: condition %lld outside 0..2",
                                   (long long)value);
        model->condition = (int)value;
    } else {
        if (value < PERSISTE_ROOT_STATIONARY || value > PERSISTE_ROOT_ABSENT)
            return persiste__error(PERSISTE_E_INVALID,
                                   "model: root prior %lld outside 0..2",
                                   (long long)value);
        model->root_prior = (int)value;
    }
    return PERSISTE_OK;
}

int persiste_model_set_double(persiste_model *model, int param, double value)
{
    int rc = check(model, model, param, 0);
    if (rc != PERSISTE_OK)
        return rc;
    if (param == PERSISTE_MODEL_ROOT_FREQ) {
        if (!(value >= 0.0 && value <= 1.0)) /* NaN fails too */
            return persiste__error(PERSISTE_E_DOMAIN,
                                   "model: root frequency %g outside [0,1]",
                                   value);
        model->root_freq = value;
    } else {
        if (!(value >= 0.0 && isfinite(value)))
            return persiste__error(PERSISTE_E_DOMAIN,
                                   "model: minimum branch length %g is not "
                                   "a finite number >= 0",
                                   value);
        model->min_branch_length = value;
    }
    return PERSISTE_OK;
}

int persiste_model_get_int(const persiste_model *model, int param,
                           int64_t *value)
{
    int rc = check(model, value, param, 1);
    if (rc != PERSISTE_OK)
        return rc;
    *value = param == PERSISTE_MODEL_CONDITION ? model->condition
                                               : model->root_prior;
    return PERSISTE_OK;
}

int persiste_model_get_double(const persiste_model *model, int param,
                              double *value)
{
    int rc = check(model, value, param, 0);
    if (rc != PERSISTE_OK)
        return rc;
    *value = param == PERSISTE_MODEL_ROOT_FREQ ? model->root_freq
                                               : model->min_branch_length;
    return PERSISTE_OK;
}
