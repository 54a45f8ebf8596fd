/* persiste_gamma_categories: discretised gamma rates (Yang 1994).
 *
 * Expected values come from outside the library: the published values of
 * Yang (1994) / PAML, and an oracle here that shares no numerics with it.
 * The oracle integrates the gamma density by adaptive Gauss-Legendre
 * quadrature in long double, in w = log t, where t^(c-1) e^-t dt becomes
 * e^(c w - e^w) dw: smooth, without the singularity at 0 of small shapes.
 * Quantiles are found by bisection on that CDF, slice means by integrating
 * t f(t) over each slice, and every normalising constant is the quadrature
 * of the whole line (no lgamma). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "persiste.h"

#define assert_close(a, b, tol)                                            \
    do {                                                                   \
        double a_ = (a), b_ = (b);                                         \
        if (!(fabs(a_ - b_) <= (tol))) {                                   \
            print_error("%.17g != %.17g (tol %g)\n", a_, b_, (double)(tol)); \
            fail();                                                        \
        }                                                                  \
    } while (0)

/* ---- Oracle: quadrature of e^(c w - e^w) ----------------------------- */

#define GL_N 20
static long double gl_node[GL_N], gl_weight[GL_N];

/* Gauss-Legendre nodes on [-1, 1]: Newton on P_20 from the Chebyshev-like
 * guesses cos(pi (i + 3/4) / (N + 1/2)). */
static void gl_init(void)
{
    if (gl_weight[0] != 0)
        return;
    const long double pi = 3.141592653589793238462643383279502884L;
    for (int i = 0; i < GL_N; i++) {
        long double z = cosl(pi * (i + 0.75L) / (GL_N + 0.5L)), dp = 1;
        for (int it = 0; it < 100; it++) {
            long double p0 = 1, p1 = z;
            for (int j = 2; j <= GL_N; j++) {
                long double p2 = ((2 * j - 1) * z * p1 - (j - 1) * p0) / j;
                p0 = p1;
                p1 = p2;
            }
            dp = GL_N * (z * p1 - p0) / (z * z - 1);
            long double dz = p1 / dp;
            z -= dz;
            if (fabsl(dz) < 1e-19L)
                break;
        }
        gl_node[i] = z;
        gl_weight[i] = 2 / ((1 - z * z) * dp * dp);
    }
}

typedef struct {
    long double c;     /* exponent: t^c e^-t dt/t, i.e. shape c */
    long double shift; /* max of c w - e^w, taken out against overflow */
} kernel;

static kernel kernel_make(long double c)
{
    kernel k = {c, c * logl(c) - c};
    return k;
}

static long double kern(const kernel *k, long double w)
{
    return expl(k->c * w - expl(w) - k->shift);
}

static long double gl_rule(const kernel *k, long double a, long double b)
{
    long double m = 0.5L * (a + b), h = 0.5L * (b - a), s = 0;
    for (int i = 0; i < GL_N; i++)
        s += gl_weight[i] * kern(k, m + h * gl_node[i]);
    return h * s;
}

/* The tolerance of a piece, relative: the kernel's own rounding, from its
 * exponent's (terms up to c |w| + e^w + shift, each to an ulp), times 16;
 * at least 1e-17. */
static long double piece_tol(const kernel *k, long double a, long double b)
{
    long double w = fmaxl(fabsl(a), fabsl(b));
    long double big = k->c * w + expl(fmaxl(a, b)) + fabsl(k->shift);
    return fmaxl(1e-17L, 16 * LDBL_EPSILON * (1 + big));
}

static long double adapt(const kernel *k, long double a, long double b,
                         long double whole, long double tol, int depth)
{
    long double m = 0.5L * (a + b);
    long double l = gl_rule(k, a, m), r = gl_rule(k, m, b);
    if (depth >= 16 || fabsl(l + r - whole) <= tol * (l + r))
        return l + r;
    return adapt(k, a, m, l, tol, depth + 1)
         + adapt(k, m, b, r, tol, depth + 1);
}

static long double integrate(const kernel *k, long double a, long double b)
{
    if (!(b > a))
        return 0;
    /* in unit pieces, so that no single rule straddles a feature unseen */
    long double s = 0;
    for (long double x = a; x < b; x += 1) {
        long double e = fminl(x + 1, b);
        s += adapt(k, x, e, gl_rule(k, x, e), piece_tol(k, x, e), 0);
    }
    return s;
}

/* Below W_LO, e^(c w - e^w) = e^(c w) (1 - O(e^w)) integrates in closed
 * form to relative 1e-21; above W_HI the kernel is below e^-100 of its
 * peak. */
#define W_LO (-48.0L)
static long double w_hi(const kernel *k)
{
    return logl(k->c + 50 * sqrtl(k->c) + 100);
}

/* integral from -inf to w */
static long double lower(const kernel *k, long double w)
{
    if (w <= W_LO)
        return expl(k->c * w - k->shift) / k->c;
    return expl(k->c * W_LO - k->shift) / k->c + integrate(k, W_LO, w);
}

/* integral from w0 to w1, each possibly +-inf */
static long double slice(const kernel *k, long double w0, long double w1)
{
    if (w1 > w_hi(k))
        w1 = w_hi(k);
    if (w0 <= W_LO)
        return lower(k, w1) - (w0 == -INFINITY ? 0 : lower(k, w0));
    return integrate(k, w0, w1);
}

/* log of the standard gamma(alpha) quantile of p, by bisection in w */
static long double oracle_log_quantile(double alpha, long double p)
{
    kernel k = kernel_make(alpha);
    long double total = lower(&k, w_hi(&k));
    long double lo = -60.0L - 40.0L / alpha, hi = w_hi(&k);
    long double f_lo = lower(&k, lo); /* kept as the integral up to lo */
    for (int it = 0; it < 200; it++) {
        long double mid = 0.5L * (lo + hi);
        if (!(mid > lo && mid < hi))
            break;
        long double f_mid = lo <= W_LO || mid <= W_LO
            ? lower(&k, mid) : f_lo + integrate(&k, lo, mid);
        if (f_mid < p * total) {
            lo = mid;
            f_lo = f_mid;
        } else {
            hi = mid;
        }
    }
    return 0.5L * (lo + hi);
}

/* Slice means (median == 0) or rescaled medians, as the library should
 * give them. */
static void oracle_rates(double alpha, int n, int median, long double *out)
{
    gl_init();
    if (median) {
        long double lq[64], mx = -INFINITY, sum = 0;
        for (int j = 0; j < n; j++) {
            lq[j] = oracle_log_quantile(alpha, (2.0L * j + 1) / (2.0L * n));
            mx = fmaxl(mx, lq[j]);
        }
        for (int j = 0; j < n; j++)
            sum += expl(lq[j] - mx);
        for (int j = 0; j < n; j++)
            out[j] = n * expl(lq[j] - mx) / sum;
        return;
    }
    long double w[65], sum = 0;
    kernel k = kernel_make(alpha + 1.0L); /* t f(t) has shape alpha + 1 */
    w[0] = -INFINITY;
    w[n] = INFINITY;
    for (int j = 1; j < n; j++)
        w[j] = oracle_log_quantile(alpha, (long double)j / n);
    for (int j = 0; j < n; j++)
        sum += out[j] = slice(&k, w[j], w[j + 1]);
    for (int j = 0; j < n; j++)
        out[j] = n * out[j] / sum;
}

/* ---- Helpers ------------------------------------------------------------ */

static void rates_ok(double alpha, int n, int median, double *r)
{
    int rc = persiste_gamma_categories(alpha, n, median, r);
    if (rc != PERSISTE_OK)
        print_error("alpha %g n %d: %s\n", alpha, n, persiste_last_error());
    assert_int_equal(rc, PERSISTE_OK);
}

/* finite, >= 0, increasing (zeros only as a prefix: underflow), mean 1 */
static void check_invariants(double alpha, int n, int median,
                             const double *r)
{
    double sum = 0;
    for (int k = 0; k < n; k++) {
        if (!(isfinite(r[k]) && r[k] >= 0)) {
            print_error("alpha %g n %d median %d: rate %d = %g\n", alpha, n,
                        median, k, r[k]);
            fail();
        }
        if (k > 0 && !(r[k] > r[k - 1] || (r[k] == 0 && r[k - 1] == 0))) {
            print_error("alpha %g n %d median %d: rates %d, %d = %.17g, "
                        "%.17g\n", alpha, n, median, k - 1, k, r[k - 1],
                        r[k]);
            fail();
        }
        sum += r[k];
    }
    if (!(fabs(sum / n - 1) <= 1e-12)) {
        print_error("alpha %g n %d median %d: mean - 1 = %g\n", alpha, n,
                    median, sum / n - 1);
        fail();
    }
}

/* ---- Tests -------------------------------------------------------------- */

/* Published by Yang (1994) and given by PAML: alpha 0.5, 4 categories,
 * slice means. */
static void yang_published(void **state)
{
    (void)state;
    static const double expect[4] = {0.033388, 0.251916, 0.820268, 2.894428};
    double r[4];
    rates_ok(0.5, 4, 0, r);
    for (int k = 0; k < 4; k++)
        assert_close(r[k], expect[k], 1e-5);
}

static const double oracle_alpha[] = {0.05, 0.3, 1, 2.5, 20, 200};
static const int oracle_n[] = {1, 2, 4, 8};
#define N_ORACLE_ALPHA (sizeof oracle_alpha / sizeof *oracle_alpha)

static double compare_oracle(const double *alphas, size_t n_alpha,
                             int median, double tol)
{
    double worst = 0;
    for (size_t i = 0; i < n_alpha; i++) {
        for (size_t j = 0; j < sizeof oracle_n / sizeof *oracle_n; j++) {
            int n = oracle_n[j];
            double r[64];
            long double o[64];
            rates_ok(alphas[i], n, median, r);
            oracle_rates(alphas[i], n, median, o);
            for (int k = 0; k < n; k++) {
                /* relative, down to where the double result is subnormal */
                double e = fabs(r[k] - (double)o[k])
                         / fmax((double)o[k], 1e-290);
                if (!(e <= tol)) {
                    print_error("alpha %g n %d median %d rate %d: %.17g, "
                                "oracle %.17Lg (rel %g)\n", alphas[i], n,
                                median, k, r[k], o[k], e);
                    fail();
                }
                worst = fmax(worst, e);
            }
        }
    }
    return worst;
}

/* 1e-8 relative is what is asked of the rates; the agreement seen is
 * ~5e-15, so these six shapes are held to 1e-10, which still leaves room
 * for another libm but catches a loosened series, fraction or iteration
 * (each gives ~1e-9). */
#define ORACLE_TOL 1e-10

static void means_match_oracle(void **state)
{
    (void)state;
    double e = compare_oracle(oracle_alpha, N_ORACLE_ALPHA, 0, ORACLE_TOL);
    print_message("slice means: max relative error %.3g\n", e);
}

/* Slice medians, rescaled to mean 1, against bisection on the oracle CDF. */
static void medians_match_oracle(void **state)
{
    (void)state;
    double e = compare_oracle(oracle_alpha, N_ORACLE_ALPHA, 1,
                              ORACLE_TOL);
    print_message("medians: max relative error %.3g\n", e);
}

/* The ends of the range against the oracle too (lower rates of alpha 1e-3
 * underflow; the comparison is relative down to 1e-290). */
static void extremes_match_oracle(void **state)
{
    (void)state;
    static const double ext[] = {1e-3, 1e4};
    double e = fmax(compare_oracle(ext, 2, 0, 1e-8),
                    compare_oracle(ext, 2, 1, 1e-8));
    print_message("alpha 1e-3, 1e4: max relative error %.3g\n", e);
}

static void invariants(void **state)
{
    (void)state;
    static const double alphas[] = {1e-3, 2e-3, 0.01, 0.05, 0.1, 0.3, 0.5,
                                    0.99, 1, 1.01, 2, 5, 9.99, 10, 10.5,
                                    50, 200, 1000, 9999, 1e4};
    double r[64];
    for (size_t i = 0; i < sizeof alphas / sizeof *alphas; i++) {
        for (int median = 0; median <= 1; median++) {
            for (int n = 1; n <= 64; n++) {
                rates_ok(alphas[i], n, median, r);
                check_invariants(alphas[i], n, median, r);
                if (alphas[i] >= 0.05) /* no underflow: strictly */
                    for (int k = 1; k < n; k++)
                        assert_true(r[k] > r[k - 1]);
            }
        }
    }
}

static void one_category(void **state)
{
    (void)state;
    static const double alphas[] = {1e-3, 0.5, 1, 7, 1e4};
    for (size_t i = 0; i < sizeof alphas / sizeof *alphas; i++) {
        for (int median = 0; median <= 1; median++) {
            double r = 0;
            rates_ok(alphas[i], 1, median, &r);
            assert_true(r == 1.0);
        }
    }
}

/* alpha 1e-3: almost all the rate is in the top category; alpha 1e4: every
 * rate within a few standard deviations (0.01) of 1. */
static void extreme_alpha(void **state)
{
    (void)state;
    static const int ns[] = {2, 3, 4, 8, 16, 63, 64};
    double r[64];
    for (size_t j = 0; j < sizeof ns / sizeof *ns; j++) {
        int n = ns[j];
        for (int median = 0; median <= 1; median++) {
            rates_ok(1e-3, n, median, r);
            check_invariants(1e-3, n, median, r);
            assert_true(r[n - 1] > 0.99 * n);
            rates_ok(1e4, n, median, r);
            check_invariants(1e4, n, median, r);
            for (int k = 0; k < n; k++)
                assert_close(r[k], 1.0, 0.03);
            assert_true(r[0] < 1 && r[n - 1] > 1);
        }
    }
}

/* The large-alpha limit, independently: the gamma(alpha, alpha) tends to
 * N(1, 1/alpha), whose slice means are 1 + n (phi(z_k) - phi(z_k+1)) /
 * sqrt(alpha) (z_k the normal quantiles of k/n), with an O(1/alpha) error. */
static double normal_quantile(double p)
{
    double lo = -40, hi = 40;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        if (0.5 * erfc(-mid / sqrt(2.0)) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

static void normal_limit(void **state)
{
    (void)state;
    const double alpha = 1e4, s = 1 / sqrt(alpha);
    const double inv_sqrt_2pi = 0.39894228040143267794;
    double r[16];
    rates_ok(alpha, 16, 0, r);
    for (int k = 0; k < 16; k++) {
        const double inf = INFINITY;
        double z0 = k == 0 ? -inf : normal_quantile(k / 16.0);
        double z1 = k == 15 ? inf : normal_quantile((k + 1) / 16.0);
        double phi0 = isinf(z0) ? 0 : inv_sqrt_2pi * exp(-0.5 * z0 * z0);
        double phi1 = isinf(z1) ? 0 : inv_sqrt_2pi * exp(-0.5 * z1 * z1);
        assert_close(r[k], 1 + 16 * (phi0 - phi1) * s, 3 / alpha);
    }
}

/* Means and medians are different summaries: the median variant must not
 * return the means (and vice versa). */
static void median_differs(void **state)
{
    (void)state;
    double m[4], d[4];
    rates_ok(0.5, 4, 0, m);
    rates_ok(0.5, 4, 7, d); /* any non-zero value selects medians */
    for (int k = 0; k < 4; k++)
        assert_true(fabs(m[k] - d[k]) > 1e-3);
}

static void expect_error(double alpha, int32_t n, double *rates, int code,
                         const char *needle)
{
    double sentinel[4] = {-7, -7, -7, -7};
    double *out = rates ? sentinel : NULL;
    int rc = persiste_gamma_categories(alpha, n, 0, out);
    assert_int_equal(rc, code);
    const char *msg = persiste_last_error();
    if (!strstr(msg, needle)) {
        print_error("message \"%s\" lacks \"%s\"\n", msg, needle);
        fail();
    }
    assert_non_null(strstr(msg, "gamma"));
    for (int k = 0; k < 4; k++)
        assert_true(sentinel[k] == -7); /* nothing written */
}

static void bad_input(void **state)
{
    (void)state;
    double r[4];
    expect_error(1.0, 4, NULL, PERSISTE_E_INVALID, "rates");
    expect_error(1.0, 0, r, PERSISTE_E_INVALID, "n = 0");
    expect_error(1.0, -3, r, PERSISTE_E_INVALID, "n = -3");
    expect_error(1.0, 65, r, PERSISTE_E_INVALID, "n = 65");
    expect_error(0.0, 4, r, PERSISTE_E_DOMAIN, "alpha = 0");
    expect_error(-1.0, 4, r, PERSISTE_E_DOMAIN, "alpha = -1");
    expect_error(NAN, 4, r, PERSISTE_E_DOMAIN, "nan");
    expect_error(INFINITY, 4, r, PERSISTE_E_DOMAIN, "alpha = inf");
    expect_error(-INFINITY, 4, r, PERSISTE_E_DOMAIN, "alpha = -inf");
    expect_error(9e-4, 4, r, PERSISTE_E_DOMAIN, "alpha = 0.0009");
    expect_error(1.0001e4, 4, r, PERSISTE_E_DOMAIN, "alpha = 10001");
    /* the ends of the ranges are valid */
    double r64[64];
    rates_ok(1e-3, 64, 0, r64);
    rates_ok(1e4, 1, 0, r64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(yang_published),
        cmocka_unit_test(means_match_oracle),
        cmocka_unit_test(medians_match_oracle),
        cmocka_unit_test(extremes_match_oracle),
        cmocka_unit_test(invariants),
        cmocka_unit_test(one_category),
        cmocka_unit_test(extreme_alpha),
        cmocka_unit_test(normal_limit),
        cmocka_unit_test(median_differs),
        cmocka_unit_test(bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
