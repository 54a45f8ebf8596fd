/* Discretised gamma rate categories (Yang 1994): the regularized incomplete
 * gamma function, its inverse, and the slice means or medians.
 *
 * Everything is done on the standard gamma (shape a, rate 1): the gamma(a, a)
 * quantile b and the standard one y are related by y = a b, and the slice
 * mean formula needs only P(a+1, a b) = P(a+1, y). Points are carried as
 * (x, log x) so that quantiles that underflow (a near 1e-3 puts the lower
 * ones below 1e-300) are still located exactly in log x. */
#include <float.h>
#include <inttypes.h>
#include <math.h>

#include "internal.h"

#define GAMMA_MAX_N 64
/* Series and continued fraction need O(sqrt(a)) terms: about 1000 at
 * a = 1e4 + 1, so this cap is never reached for valid input. */
#define GAMMA_MAX_TERMS 20000
#define LOG_2PI 1.8378770664093454684
#define LENTZ_TINY 1e-300

/* Both tails at one point, with logs that stay finite where a tail
 * underflows (Newton works on the logs). */
typedef struct {
    double p, q;   /* P(a, x) and Q(a, x) */
    double lp, lq; /* log P, log Q */
    double lfac;   /* log(x^a e^-x / Gamma(a+1)) */
} igamma;

/* lgamma(a) - [(a - 1/2) log a - a + log(2 pi) / 2] for a >= 10: the
 * Stirling series to a^-15 (next term < 1e-17 at a = 10). */
static double stirling_tail(double a)
{
    double r = 1.0 / a, r2 = r * r;
    return r * (1.0 / 12 + r2 * (-1.0 / 360 + r2 * (1.0 / 1260
           + r2 * (-1.0 / 1680 + r2 * (1.0 / 1188 + r2 * (-691.0 / 360360
           + r2 * (1.0 / 156 + r2 * (-3617.0 / 122400))))))));
}

/* log(x^a e^-x / Gamma(a+1)); lga1 = lgamma(a + 1). For large a the naive
 * sum cancels terms of size a log a (an absolute error of ~1e-11 at a = 1e4),
 * so it is rewritten as a [log(x/a) - (x/a - 1)] - log(2 pi a)/2 - stirling,
 * whose first term is computed to ~eps |x - a|. */
static double log_factor(double a, double lga1, double x, double lx)
{
    if (a >= 10.0 && x > 0.0) {
        double d = x - a, t = d / a;
        double l1 = fabs(d) < 0.5 * a ? log1p(t) - t : log(x / a) - t;
        return a * l1 - 0.5 * (LOG_2PI + log(a)) - stirling_tail(a);
    }
    return a * lx - x - lga1;
}

/* P and Q at shape a > 0 and x = e^lx >= 0 (x may have underflowed to 0;
 * lx is then what locates the point). */
static igamma incomplete_gamma(double a, double lga1, double x, double lx)
{
    igamma r;
    r.lfac = log_factor(a, lga1, x, lx);
    if (x < a + 1.0) {
        /* P = x^a e^-x / Gamma(a+1) * sum_n x^n / ((a+1)...(a+n)): terms
         * positive and falling, so no cancellation. Stop once the tail,
         * bounded by a geometric series of ratio < x/(a+n+1), is below
         * half an ulp of the sum. */
        double sum = 1.0, term = 1.0;
        for (int i = 1; i < GAMMA_MAX_TERMS; i++) {
            term *= x / (a + i);
            sum += term;
            double ratio = x / (a + i + 1);
            if (term <= 0.5 * DBL_EPSILON * sum * (1.0 - ratio))
                break;
        }
        r.lp = r.lfac + log(sum);
        r.p = exp(r.lp);
        if (a < 1.0) {
            /* Here Q can be as small as a E1(2) ~ 5e-5 at a = 1e-3, and
             * 1 - P would lose its digits: use Q = 1 - x^a / Gamma(a+1) -
             * x^a / Gamma(a+1) a sum_{n>=1} (-x)^n / (n! (a+n)), from
             * integrating t^(a-1) (e^-t - 1) termwise. For x < a + 1 < 2
             * the sum is short and cancels by at most a factor ~30. */
            double u = a * lx - lga1, s = 0.0, pw = 1.0;
            for (int i = 1; i < GAMMA_MAX_TERMS; i++) {
                pw *= -x / i;
                double t = pw / (a + i);
                s += t;
                if (fabs(t) <= 0.25 * DBL_EPSILON * fabs(s))
                    break;
            }
            r.q = -expm1(u) - exp(u) * a * s;
        } else {
            /* Q >= Q(1, 2) = e^-2 on this side: 1 - P is accurate */
            r.q = -expm1(r.lp);
        }
        r.lq = log(r.q);
    } else {
        /* Q = x^a e^-x / Gamma(a) / (x+1-a - 1(1-a) / (x+3-a - 2(2-a) /
         * (x+5-a - ...))), evaluated forwards by the modified Lentz
         * method (no division by a zero partial denominator). P >= 1/2 on
         * this side, so P = 1 - Q loses nothing. */
        double b = x + 1.0 - a;
        double c = 1.0 / LENTZ_TINY, d = 1.0 / b, h = d;
        for (int i = 1; i < GAMMA_MAX_TERMS; i++) {
            double an = -i * (i - a);
            b += 2.0;
            d = an * d + b;
            if (fabs(d) < LENTZ_TINY)
                d = LENTZ_TINY;
            c = b + an / c;
            if (fabs(c) < LENTZ_TINY)
                c = LENTZ_TINY;
            d = 1.0 / d;
            double delta = c * d;
            h *= delta;
            if (fabs(delta - 1.0) <= DBL_EPSILON)
                break;
        }
        r.lq = r.lfac + log(a) + log(h);
        r.q = exp(r.lq);
        r.p = -expm1(r.lq);
        r.lp = log1p(-r.q);
    }
    return r;
}

/* The point x = e^lx where P(a, x) = p, given p and q = 1 - p both exactly
 * (the smaller tail then keeps its relative precision).
 *
 * Newton in u = log x on log P (p <= q) or log Q (otherwise): both are
 * concave in u (the density of log X, e^(a u - e^u) / Gamma(a), is
 * log-concave, so are its two tails), so Newton converges monotonically
 * once on the right side of the root, and u also reaches the underflowed
 * quantiles of small a. A bracket [lo, hi] is kept and a step leaving it
 * is replaced by bisection, in case rounding breaks the concavity. */
static void gamma_quantile(double a, double lga1, double p, double q,
                           double *x_out, double *lx_out)
{
    int use_p = p <= q;
    double target = use_p ? log(p) : log(q);
    /* P(a, x) <= x^a / Gamma(a+1), so this u has P <= p (up to rounding,
     * which the expansion below absorbs). */
    double lo = (log(p) + lga1) / a, hi;
    igamma g = incomplete_gamma(a, lga1, exp(lo), lo);
    double step = 1.0;
    /* past: P(a, e^u) > p, i.e. u is above the root */
#define PAST(g) (use_p ? (g).lp > target : (g).lq < target)
    for (int i = 0; i < 64 && PAST(g); i++) {
        lo -= step;
        step *= 2.0;
        g = incomplete_gamma(a, lga1, exp(lo), lo);
    }
    igamma g_lo = g;
    step = 1.0;
    hi = lo + step;
    g = incomplete_gamma(a, lga1, exp(hi), hi);
    for (int i = 0; i < 64 && !PAST(g); i++) {
        lo = hi;
        g_lo = g;
        step *= 2.0;
        hi += step;
        g = incomplete_gamma(a, lga1, exp(hi), hi);
    }
    /* Start on the side from which Newton on a concave function does not
     * overshoot: below the root for log P (increasing), above it for log
     * Q (decreasing). */
    double u = use_p ? lo : hi, x = exp(u);
    if (use_p)
        g = g_lo;
    double prev = HUGE_VAL;
    for (int it = 0; it < 200; it++) {
        double f = use_p ? g.lp - target : g.lq - target;
        if (f == 0.0)
            break;
        if (PAST(g))
            hi = u;
        else
            lo = u;
        /* d log P / du = x f(x) / P = a e^(lfac - lp); d log Q / du is
         * minus the same over Q */
        double slope = use_p ? a * exp(g.lfac - g.lp)
                             : -a * exp(g.lfac - g.lq);
        double du = -f / slope;
        double un = u + du;
        /* (not strict: a step below an ulp of u leaves un == lo) */
        int bisect = !(un >= lo && un <= hi);
        if (bisect) {
            un = 0.5 * (lo + hi);
            du = un - u;
            prev = HUGE_VAL;
        }
        /* Small steps are applied to x itself (x e^du, not e^(u+du)), so
         * that x is resolved to an ulp and not to an ulp of u. */
        if (fabs(du) < 0.125 && x >= DBL_MIN) {
            x += x * expm1(du);
            u = log(x);
        } else {
            u = un;
            x = exp(u);
        }
        /* Converged when a Newton step moves x by an ulp or two, or when
         * the steps stop shrinking: then they are rounding noise (for
         * small a the root is ill-conditioned, d log x = d log p / a). */
        double ad = fabs(du);
        double tol = 2.0 * DBL_EPSILON * (x >= DBL_MIN ? 1.0 : fabs(u));
        if (bisect ? hi - lo <= 2.0 * DBL_EPSILON * fmax(1.0, fabs(u))
                   : ad <= tol || (ad < 1e-9 && ad >= 0.5 * prev))
            break;
        if (!bisect)
            prev = ad;
        g = incomplete_gamma(a, lga1, x, u);
    }
#undef PAST
    *x_out = x;
    *lx_out = u;
}

int persiste_gamma_categories(double alpha, int32_t n, int median,
                              double *rates)
{
    if (!rates)
        return persiste__error(PERSISTE_E_INVALID, "gamma: rates is NULL");
    if (n < 1 || n > GAMMA_MAX_N)
        return persiste__error(PERSISTE_E_INVALID,
                               "gamma: n = %" PRId32
                               " categories, expected 1 to %d",
                               n, GAMMA_MAX_N);
    if (!(alpha >= 1e-3 && alpha <= 1e4))
        return persiste__error(PERSISTE_E_DOMAIN,
                               "gamma: alpha = %g, expected a finite shape "
                               "in [1e-3, 1e4]", alpha);
    if (n == 1) {
        rates[0] = 1.0;
        return PERSISTE_OK;
    }
    double a = alpha, lga1 = lgamma(a + 1.0);
    if (median) {
        double x[GAMMA_MAX_N], lx[GAMMA_MAX_N], sum = 0.0;
        for (int32_t k = 0; k < n; k++) {
            gamma_quantile(a, lga1, (2.0 * k + 1) / (2.0 * n),
                           (2.0 * (n - k) - 1) / (2.0 * n), &x[k], &lx[k]);
            sum += x[k];
        }
        /* sum >= the top median, > 1e-126 (a = 1e-3, n = 2: P ~ x^a /
         * Gamma(a+1) = 3/4), so scale is finite. Medians that underflowed
         * are rescaled in logs, so that a rate that is representable is
         * not returned as 0. */
        double scale = n / sum, lscale = log(scale);
        for (int32_t k = 0; k < n; k++)
            rates[k] = x[k] >= DBL_MIN ? x[k] * scale : exp(lx[k] + lscale);
        return PERSISTE_OK;
    }
    /* P(a+1, y_k) at the boundaries y_0 = 0 .. y_n = inf */
    double p1[GAMMA_MAX_N + 1], lga2 = lgamma(a + 2.0);
    p1[0] = 0.0;
    p1[n] = 1.0;
    for (int32_t k = 1; k < n; k++) {
        double x, lx;
        gamma_quantile(a, lga1, (double)k / n, (double)(n - k) / n, &x, &lx);
        p1[k] = incomplete_gamma(a + 1.0, lga2, x, lx).p;
    }
    /* Differences of P keep each slice's relative precision: as the rates
     * increase, P at a slice's lower end is at most k times the slice's
     * mass, and where P > 1/2 the mass is >= 1/(2n). They telescope, so
     * the rates sum to n to rounding, with no renormalisation. */
    for (int32_t k = 0; k < n; k++)
        rates[k] = n * (p1[k + 1] - p1[k]);
    return PERSISTE_OK;
}
