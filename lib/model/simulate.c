/* Simulation under the model (persiste_simulate). Each family draws, from
 * its own random stream, a category, the root, every branch (pre-order)
 * and the observation error at the tips, and draws all of it again while
 * its observed pattern lies outside the conditioning event. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Rejections in a row after which a family's event counts as too rare. */
#define MAX_REJECTIONS 1000000

/* xoshiro256** (Blackman and Vigna): small, fast, and integer-only, so a
 * seed gives the same numbers on every machine. */
typedef struct {
    uint64_t s[4];
} rng;

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, 1) from the top 53 bits (every value exact). */
static inline double rng_uniform(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* The stream of family f, keyed by (seed, f) alone so that a family's
 * states depend neither on the other families nor on the order in which
 * they are drawn (a later parallel loop gives the same bits). The key is
 * expanded by splitmix64, as xoshiro's authors advise; its four outputs
 * come from distinct inputs of a bijection, so they are never all 0. */
static void rng_family(rng *r, uint64_t seed, int64_t f)
{
    uint64_t key = persiste__mix64(seed ^ 0x6A09E667F3BCC909ull);
    key = persiste__mix64(key ^ (uint64_t)f);
    for (int i = 0; i < 4; i++)
        r->s[i] = persiste__mix64(key += 0x9E3779B97F4A7C15ull);
}

/* a / (a + b) for a, b > 0, also where a + b overflows (huge multipliers):
 * the limit of the stationary share and of P01 / (1 - e^-x). */
static double share(double a, double b)
{
    double s = a + b;
    if (s < INFINITY)
        return a / s;
    if (isinf(a))
        return isinf(b) ? 0.5 : 1.0;
    if (isinf(b))
        return 0.0;
    return (0.5 * a) / (0.5 * a + 0.5 * b);
}

/* Whether a branch of length t leaves the parent's state at uniform u:
 * u < P, with P = P01 or P10 = rate * t * phi(x), x = (rate + other) * t,
 * rate leaving the parent's state and other coming back. P is evaluated
 * as rate * t * min(phi(x), 1) up to x = 1 and as the equal rate / s *
 * (1 - e^-x) above (finite at x = inf). Bounds on P settle most draws
 * without expm1; they hold with a margin of some ulps, so the answer is
 * the one P itself gives. */
static inline int leaves(double u, double rate, double other, double t)
{
    double rate_t = rate * t;
    if (!(u < rate_t)) /* P <= rate * t: most branches of most trees */
        return 0;
    double x = (rate + other) * t;
    if (x <= 1.0) {
        /* phi's alternating series brackets it: 1 - x/2 + x^2/6 - x^3/24
         * <= phi(x) <= 1 - x/2 + x^2/6 */
        double hi = 1.0 - x * (0.5 - x * (1.0 / 6.0));
        double lo = hi - x * x * x * (1.0 / 24.0);
        if (u < rate_t * lo * (1.0 - 0x1p-48))
            return 1;
        if (u >= rate_t * hi * (1.0 + 0x1p-48))
            return 0;
        return u < rate_t * fmin(-expm1(-x) / x, 1.0);
    }
    double pi = share(rate, other);
    /* 1 - e^-x lies in (0.6321, 1] for x > 1 */
    if (u >= pi)
        return 0;
    if (u < pi * 0.632)
        return 1;
    return u < pi * -expm1(-x);
}

/* What every family of a call shares. */
typedef struct {
    const persiste_model *m;
    int32_t n_nodes, n_tips;
    const int32_t *parent;
    const double *t;      /* [n_nodes] branch length, the minimum applied */
    const double *g, *l;  /* [n_nodes] lineage multipliers (1 if none) */
    const double *cum;    /* [n_cat] cumulative category weights */
    uint8_t *node;        /* [n_nodes] states of the family being drawn */
} sim;

/* One draw of a family at gain lambda and loss mu: the observed tip
 * states in s->node[0 .. n_tips); returns how many are present. */
static int32_t draw(const sim *s, double lambda, double mu, rng *r)
{
    const persiste_model *m = s->m;
    int32_t k = 0;
    if (m->n_cat > 0) {
        if (m->n_cat > 1) {
            /* weights sum to 1 within 1e-9: scaled by their sum exactly */
            double u = rng_uniform(r) * s->cum[m->n_cat - 1];
            while (k < m->n_cat - 1 && u >= s->cum[k])
                k++;
        }
    }
    /* the category's stationary share from the log ratio of its rates: a
     * category's multipliers may be 0 (or its rates underflow), where the
     * share is the limit along equal multipliers, the base rates' */
    double pi1 = share(lambda, mu);
    if (m->n_cat > 0) {
        double g = m->cat_gain[k], l = m->cat_loss[k];
        if (g != l)
            pi1 = persiste__category_share(log(mu) - log(lambda), g, l);
        lambda *= g;
        mu *= l;
    }
    uint8_t *node = s->node;
    int32_t root = s->n_nodes - 1;
    if (m->root_prior == PERSISTE_ROOT_STATIONARY)
        node[root] = rng_uniform(r) < pi1;
    else if (m->root_prior == PERSISTE_ROOT_FIXED)
        node[root] = rng_uniform(r) < m->root_freq;
    else
        node[root] = 0;
    /* Every parent is numbered after its children (tips first, then the
     * internal nodes in post-order), so going down visits parents first. */
    for (int32_t v = root - 1; v >= 0; v--) {
        uint8_t p = node[s->parent[v]];
        double lb = lambda * s->g[v], mb = mu * s->l[v];
        double u = rng_uniform(r);
        node[v] = p ^ (uint8_t)(p ? leaves(u, mb, lb, s->t[v])
                                  : leaves(u, lb, mb, s->t[v]));
    }
    int32_t present = 0;
    for (int32_t tip = 0; tip < s->n_tips; tip++) {
        uint8_t x = node[tip];
        if (m->n_error > 0) {
            double a, b, u = rng_uniform(r);
            persiste__model_error(m, tip, &a, &b);
            x = x ? !(u < a) : u < b;
        }
        node[tip] = x;
        present += x;
    }
    return present;
}

/* The conditioning event in words, for messages. */
static const char *event_name(const persiste_model *m, char buf[64])
{
    if (m->condition == PERSISTE_CONDITION_VARIABLE)
        return "an observed absence and an observed presence";
    snprintf(buf, 64, "%d observed presence%s or more", m->min_present,
             m->min_present == 1 ? "" : "s");
    return buf;
}

/* The plain cases of an event no family can hit, found before any draw so
 * that a call on a big tree fails at once rather than after 10^6
 * rejections: one tip is never variable, and without error and with every
 * branch at length 0 all tips copy the root. (Others, such as an absent
 * root with false absences only, are left to the rejections.) */
static int check_possible(const sim *s)
{
    const persiste_model *m = s->m;
    char buf[64];
    if (m->condition == PERSISTE_CONDITION_NONE)
        return PERSISTE_OK;
    if (m->condition == PERSISTE_CONDITION_VARIABLE && s->n_tips == 1)
        return persiste__error(PERSISTE_E_DOMAIN,
                               "simulate: a tree of one tip never has %s",
                               event_name(m, buf));
    for (int32_t i = 0; i < m->n_error; i++)
        if (m->error_absent[i] > 0.0 || m->error_present[i] > 0.0)
            return PERSISTE_OK;
    for (int32_t v = 0; v < s->n_nodes - 1; v++)
        if (s->t[v] > 0.0)
            return PERSISTE_OK;
    int root_never_present =
        m->root_prior == PERSISTE_ROOT_ABSENT ||
        (m->root_prior == PERSISTE_ROOT_FIXED && m->root_freq == 0.0);
    if (m->condition == PERSISTE_CONDITION_VARIABLE || root_never_present)
        return persiste__error(PERSISTE_E_DOMAIN,
                               "simulate: no family can have %s: every "
                               "branch has length 0 (minimum %g), there is "
                               "no observation error%s",
                               event_name(m, buf), m->min_branch_length,
                               root_never_present
                                   ? " and the root is never present"
                                   : ", so every tip copies the root");
    return PERSISTE_OK;
}

static int check_args(const persiste_model *model, const persiste_tree *tree,
                      int64_t n_families, const double *log_gain,
                      const double *log_loss, const uint8_t *states)
{
    if (!model || !tree)
        return persiste__error(PERSISTE_E_INVALID, "simulate: %s is NULL",
                               !model ? "model" : "tree");
    if (n_families < 0)
        return persiste__error(PERSISTE_E_INVALID,
                               "simulate: n_families is %lld (< 0)",
                               (long long)n_families);
    /* the arrays may be NULL only when there is nothing to read or write */
    if (n_families > 0 && (!log_gain || !log_loss || !states))
        return persiste__error(PERSISTE_E_INVALID, "simulate: %s is NULL",
                               !log_gain   ? "log_gain"
                               : !log_loss ? "log_loss"
                                           : "states");
    int rc = persiste__model_check_tree(model, tree);
    if (rc != PERSISTE_OK)
        return rc;
    if ((uint64_t)n_families > SIZE_MAX / (size_t)tree->n_tips)
        return persiste__error(PERSISTE_E_OVERFLOW,
                               "simulate: %lld families x %d tips overflow "
                               "the size of states",
                               (long long)n_families, (int)tree->n_tips);
    /* all checked before any state is written */
    for (int64_t f = 0; f < n_families; f++)
        if (!(fabs(log_gain[f]) <= 100.0 && fabs(log_loss[f]) <= 100.0))
            return persiste__error(PERSISTE_E_DOMAIN,
                                   "simulate: family %lld has log gain %g, "
                                   "log loss %g: expected both in "
                                   "[-100, 100]",
                                   (long long)f, log_gain[f], log_loss[f]);
    return PERSISTE_OK;
}

int persiste_simulate(const persiste_model *model, const persiste_tree *tree,
                      int64_t n_families, const double *log_gain,
                      const double *log_loss, uint64_t seed, uint8_t *states)
{
    int rc = check_args(model, tree, n_families, log_gain, log_loss, states);
    if (rc != PERSISTE_OK || n_families == 0)
        return rc;
    size_t nn = (size_t)tree->n_nodes, nc = (size_t)model->n_cat;
    /* 3 doubles and a state per node, a double per category (at most
     * 1024); the size can overflow only where size_t has 32 bits */
    size_t bytes;
    if ((rc = persiste__mul_size(nn, 3 * sizeof(double) + 1, &bytes)))
        return rc;
    if (bytes > SIZE_MAX - nc * sizeof(double))
        return persiste__error(PERSISTE_E_OVERFLOW,
                               "simulate: scratch for %zu nodes overflows",
                               nn);
    bytes += nc * sizeof(double);
    double *block = persiste__malloc(bytes);
    if (!block)
        return persiste__error(PERSISTE_E_NOMEM,
                               "simulate: out of memory (%zu bytes of "
                               "scratch)",
                               bytes);
    double *t = block, *g = t + nn, *l = g + nn, *cum = l + nn;
    for (size_t v = 0; v < nn; v++) {
        t[v] = fmax(tree->length[v], model->min_branch_length);
        g[v] = model->n_lineage ? model->lin_gain[v] : 1.0;
        l[v] = model->n_lineage ? model->lin_loss[v] : 1.0;
    }
    double sum = 0.0;
    for (size_t k = 0; k < nc; k++)
        cum[k] = sum += model->cat_weight[k];
    sim s = {model, tree->n_nodes, tree->n_tips, tree->parent, t, g, l, cum,
             (uint8_t *)(cum + nc)};
    if ((rc = check_possible(&s)) != PERSISTE_OK) {
        persiste__free(block);
        return rc;
    }
    size_t n_tips = (size_t)tree->n_tips;
    char buf[64];
    for (int64_t f = 0; f < n_families && rc == PERSISTE_OK; f++) {
        double lambda = exp(log_gain[f]), mu = exp(log_loss[f]);
        rng r;
        rng_family(&r, seed, f);
        int32_t rejections = 0;
        while (!persiste__model_event(model, draw(&s, lambda, mu, &r),
                                      tree->n_tips))
            if (++rejections == MAX_REJECTIONS) {
                /* families before f are written already */
                rc = persiste__error(PERSISTE_E_DOMAIN,
                                     "simulate: family %lld (gain %g, loss "
                                     "%g) missed the event (%s) %d times "
                                     "in a row: too rare to simulate",
                                     (long long)f, lambda, mu,
                                     event_name(model, buf),
                                     MAX_REJECTIONS);
                break;
            }
        if (rc == PERSISTE_OK)
            memcpy(states + (size_t)f * n_tips, s.node, n_tips);
    }
    persiste__free(block);
    return rc;
}
