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
    model->min_present = 1;
    model->n_error = model->n_cat = model->n_lineage = 0;
    model->cat_shared = 0;
    model->error_absent = model->error_present = NULL;
    model->cat_weight = model->cat_gain = model->cat_loss = NULL;
    model->lin_gain = model->lin_loss = NULL;
    *out = model;
    return PERSISTE_OK;
}

static void free_arrays(double **a, int n)
{
    for (int i = 0; i < n; i++) {
        persiste__free(a[i]);
        a[i] = NULL;
    }
}

void persiste_model_destroy(persiste_model *model)
{
    if (!model)
        return;
    free_arrays((double *[]){model->error_absent, model->error_present,
                             model->cat_weight, model->cat_gain,
                             model->cat_loss, model->lin_gain,
                             model->lin_loss},
                7);
    persiste__free(model);
}

static int is_int_param(int param)
{
    return param == PERSISTE_MODEL_CONDITION ||
           param == PERSISTE_MODEL_ROOT_PRIOR ||
           param == PERSISTE_MODEL_MIN_PRESENT;
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
    } else if (param == PERSISTE_MODEL_MIN_PRESENT) {
        if (value < 1 || value > 1000000)
            return persiste__error(PERSISTE_E_INVALID,
                                   "model: min_present %lld outside "
                                   "1..1000000",
                                   (long long)value);
        model->min_present = (int)value;
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
    *value = param == PERSISTE_MODEL_CONDITION   ? model->condition
             : param == PERSISTE_MODEL_ROOT_PRIOR ? model->root_prior
                                                  : model->min_present;
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

/* n copies of src (or NULL when n is 0) into *dst, the old array freed. */
static int replace(double **dst, const double *src, int32_t n)
{
    double *a = NULL;
    if (n > 0) {
        a = persiste__malloc((size_t)n * sizeof *a);
        if (!a)
            return persiste__error(PERSISTE_E_NOMEM, "model: out of memory");
        for (int32_t i = 0; i < n; i++)
            a[i] = src[i];
    }
    persiste__free(*dst);
    *dst = a;
    return PERSISTE_OK;
}

/* Each x[i] finite and > 0, or >= 0 where zero_ok (what: the array's name
 * in the message). */
static int check_positive(const double *x, int32_t n, const char *what,
                          int zero_ok)
{
    for (int32_t i = 0; i < n; i++)
        if (!((x[i] > 0.0 || (zero_ok && x[i] == 0.0)) && isfinite(x[i])))
            return persiste__error(PERSISTE_E_DOMAIN,
                                   "model: %s[%d] is %g: expected a finite "
                                   "number %s 0",
                                   what, (int)i, x[i], zero_ok ? ">=" : ">");
    return PERSISTE_OK;
}

int persiste_model_set_error(persiste_model *model, int32_t n,
                             const double *absent, const double *present)
{
    if (!model || n < 0 || (n > 0 && (!absent || !present)))
        return persiste__error(PERSISTE_E_INVALID,
                               "model: error rates need a model, n >= 0 and "
                               "both arrays");
    for (int32_t i = 0; i < n; i++) {
        double a = absent[i], b = present[i];
        if (!(a >= 0.0 && a < 1.0 && b >= 0.0 && b < 1.0 && a + b < 1.0))
            return persiste__error(PERSISTE_E_DOMAIN,
                                   "model: error pair %d is (absent %g, "
                                   "present %g): expected each in [0, 1) "
                                   "with a sum below 1",
                                   (int)i, a, b);
    }
    /* both copies made before either replaces: a failure changes nothing */
    double *na = NULL, *nb = NULL;
    int rc = replace(&na, absent, n);
    if (rc == PERSISTE_OK && (rc = replace(&nb, present, n)) != PERSISTE_OK)
        persiste__free(na);
    if (rc != PERSISTE_OK)
        return rc;
    persiste__free(model->error_absent);
    persiste__free(model->error_present);
    model->error_absent = na;
    model->error_present = nb;
    model->n_error = n;
    return PERSISTE_OK;
}

int persiste_model_set_categories(persiste_model *model, int32_t n,
                                  const double *weight,
                                  const double *gain_mult,
                                  const double *loss_mult)
{
    if (!model || n < 0 || n > 1024 || (n > 0 && (!weight || !gain_mult)))
        return persiste__error(PERSISTE_E_INVALID,
                               "model: categories need a model, 0 <= n <= "
                               "1024, weights and gain multipliers");
    int rc;
    /* a category's multipliers may be 0: the gamma's slowest slices are 0
     * in double at tiny alpha (families that never change) */
    if ((rc = check_positive(weight, n, "weight", 0)) ||
        (rc = check_positive(gain_mult, n, "gain_mult", 1)) ||
        (loss_mult && (rc = check_positive(loss_mult, n, "loss_mult", 1))))
        return rc;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++)
        sum += weight[i];
    if (n > 0 && !(fabs(sum - 1.0) <= 1e-9))
        return persiste__error(PERSISTE_E_DOMAIN,
                               "model: the %d category weights sum to %.17g, "
                               "not 1",
                               (int)n, sum);
    double *w = NULL, *g = NULL, *l = NULL;
    if ((rc = replace(&w, weight, n)) ||
        (rc = replace(&g, gain_mult, n)) ||
        (rc = replace(&l, loss_mult ? loss_mult : gain_mult, n))) {
        persiste__free(w);
        persiste__free(g);
        return rc;
    }
    free_arrays((double *[]){model->cat_weight, model->cat_gain,
                             model->cat_loss},
                3);
    model->cat_weight = w;
    model->cat_gain = g;
    model->cat_loss = l;
    model->n_cat = n;
    model->cat_shared = loss_mult == NULL;
    return PERSISTE_OK;
}

int persiste_model_set_lineage(persiste_model *model, int32_t n,
                               const double *gain_mult,
                               const double *loss_mult)
{
    if (!model || n < 0 || (n > 0 && (!gain_mult || !loss_mult)))
        return persiste__error(PERSISTE_E_INVALID,
                               "model: lineage multipliers need a model, "
                               "n >= 0 and both arrays");
    int rc;
    if ((rc = check_positive(gain_mult, n, "gain_mult", 0)) ||
        (rc = check_positive(loss_mult, n, "loss_mult", 0)))
        return rc;
    double *g = NULL, *l = NULL;
    if ((rc = replace(&g, gain_mult, n)) || (rc = replace(&l, loss_mult, n))) {
        persiste__free(g);
        return rc;
    }
    persiste__free(model->lin_gain);
    persiste__free(model->lin_loss);
    model->lin_gain = g;
    model->lin_loss = l;
    model->n_lineage = n;
    return PERSISTE_OK;
}

int32_t persiste_model_n_values(const persiste_model *model, int what)
{
    if (!model)
        return -1;
    switch (what) {
    case 1: return model->n_error;
    case 2: return model->n_cat;
    case 3: return model->n_lineage;
    default: return -1;
    }
}

int persiste__model_check_tree(const persiste_model *m,
                               const persiste_tree *tree)
{
    if (m->n_error > 1 && m->n_error != tree->n_tips)
        return persiste__error(PERSISTE_E_INVALID,
                               "model: %d error pairs for a tree of %d tips "
                               "(give 1, or one per tip)",
                               (int)m->n_error, (int)tree->n_tips);
    if (m->n_lineage > 0 && m->n_lineage != tree->n_nodes)
        return persiste__error(PERSISTE_E_INVALID,
                               "model: %d lineage multipliers for a tree of "
                               "%d nodes (give one per node)",
                               (int)m->n_lineage, (int)tree->n_nodes);
    if (m->min_present > 1 && m->condition != PERSISTE_CONDITION_PRESENT)
        return persiste__error(PERSISTE_E_INVALID,
                               "model: min_present %d needs conditioning "
                               "on presence (PERSISTE_CONDITION_PRESENT)",
                               m->min_present);
    if (m->min_present > tree->n_tips &&
        m->condition == PERSISTE_CONDITION_PRESENT)
        return persiste__error(PERSISTE_E_INVALID,
                               "model: min_present %d exceeds the tree's "
                               "%d tips",
                               m->min_present, (int)tree->n_tips);
    return PERSISTE_OK;
}

int persiste__model_is_plain(const persiste_model *m)
{
    for (int32_t i = 0; i < m->n_error; i++)
        if (m->error_absent[i] != 0.0 || m->error_present[i] != 0.0)
            return 0;
    if (m->n_cat > 1 ||
        (m->n_cat == 1 && (m->cat_gain[0] != 1.0 || m->cat_loss[0] != 1.0)))
        return 0;
    for (int32_t i = 0; i < m->n_lineage; i++)
        if (m->lin_gain[i] != 1.0 || m->lin_loss[i] != 1.0)
            return 0;
    return m->min_present == 1 || m->condition != PERSISTE_CONDITION_PRESENT;
}

int persiste__model_event(const persiste_model *m, int64_t n_present,
                          int64_t n_known)
{
    if (m->condition == PERSISTE_CONDITION_PRESENT)
        return n_present >= m->min_present;
    if (m->condition == PERSISTE_CONDITION_VARIABLE)
        return n_present > 0 && n_present < n_known;
    return 1;
}
