/* Maximum-likelihood gain and loss rates shared by all families, fitted
 * with the exact gradient.
 *
 *   fit TREE.nwk TABLE.Rtab[.gz] [none|present|variable] [GAIN0 LOSS0]
 *
 * The optimiser is a compact BFGS quasi-Newton method on x = (log gain,
 * log loss): log rates keep the rates positive without bounds and make the
 * surface close to quadratic. It minimises f(x) = -lnL; each evaluation is
 * one persiste_gradient_batch call, which returns lnL and its gradient
 * together. */
#include <math.h>

#include "common.h"

#define MAX_ITER 200
/* Stop when every |d lnL / d log rate| is below GTOL * |lnL|: a sum over
 * thousands of families carries rounding noise proportional to its size,
 * so an absolute threshold can be out of reach. At this size the remaining
 * error of lnL (about grad^2 / curvature) is far below 1e-6. */
#define GTOL 1e-9

/* f and its gradient at x; +inf when the likelihood is zero or the call
 * failed, which the line search treats as "step too long". */
static double objective(example *ex, const double x[2], double g[2])
{
    double t[3] = {0};
    if (example_eval(ex, x[0], x[1], t) || !isfinite(t[0]))
        return INFINITY;
    g[0] = -t[1];
    g[1] = -t[2];
    return -t[0];
}

/* Returns the number of iterations, or -1 if no step could improve f while
 * the gradient was still above the tolerance. */
static int bfgs(example *ex, double x[2], double *fx)
{
    double g[2], H[2][2] = {{1, 0}, {0, 1}};
    double f = objective(ex, x, g);
    if (!isfinite(f))
        return -1;
    /* First step: length 1 in log space, i.e. at most a factor e. */
    double gn = hypot(g[0], g[1]);
    if (gn > 0)
        H[0][0] = H[1][1] = 1 / gn;
    for (int it = 0; it < MAX_ITER; it++) {
        printf("iteration %3d  gain %.8g  loss %.8g  lnL %.6f  |grad| %.3g\n",
               it, exp(x[0]), exp(x[1]), -f, fmax(fabs(g[0]), fabs(g[1])));
        if (fmax(fabs(g[0]), fabs(g[1])) < GTOL * fabs(f)) {
            *fx = f;
            return it;
        }
        double p[2] = {-(H[0][0] * g[0] + H[0][1] * g[1]),
                       -(H[1][0] * g[0] + H[1][1] * g[1])};
        double slope = g[0] * p[0] + g[1] * p[1];
        if (slope >= 0) { /* H lost positive definiteness: restart */
            p[0] = -g[0];
            p[1] = -g[1];
            slope = -(g[0] * g[0] + g[1] * g[1]);
            H[0][0] = H[1][1] = 1 / hypot(g[0], g[1]);
            H[0][1] = H[1][0] = 0;
        }
        /* Backtracking line search with the Armijo condition. */
        double xn[2], gnew[2], fn = INFINITY, step = 1;
        for (int k = 0; k < 60; k++, step /= 2) {
            xn[0] = x[0] + step * p[0];
            xn[1] = x[1] + step * p[1];
            fn = objective(ex, xn, gnew);
            if (fn <= f + 1e-4 * step * slope)
                break;
        }
        if (!(fn < f))
            return -1; /* no decrease left at machine precision */
        /* BFGS update of the inverse Hessian from s = step, y = change of
         * gradient; skipped when the curvature s'y is not positive. */
        double s[2] = {xn[0] - x[0], xn[1] - x[1]};
        double y[2] = {gnew[0] - g[0], gnew[1] - g[1]};
        double sy = s[0] * y[0] + s[1] * y[1];
        if (sy > 0) {
            if (it == 0) { /* rescale the guess to the observed curvature */
                double yy = y[0] * y[0] + y[1] * y[1];
                H[0][0] = H[1][1] = sy / yy;
            }
            double Hy[2] = {H[0][0] * y[0] + H[0][1] * y[1],
                            H[1][0] * y[0] + H[1][1] * y[1]};
            double yHy = y[0] * Hy[0] + y[1] * Hy[1];
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++)
                    H[i][j] += (sy + yHy) * s[i] * s[j] / (sy * sy) -
                               (Hy[i] * s[j] + s[i] * Hy[j]) / sy;
        }
        x[0] = xn[0];
        x[1] = xn[1];
        g[0] = gnew[0];
        g[1] = gnew[1];
        f = fn;
    }
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc == 5) {
        fprintf(stderr, "usage: fit TREE TABLE [none|present|variable] "
                        "[GAIN0 LOSS0]\n");
        return 2;
    }
    double x[2] = {0, 0}, f = 0; /* start at gain = loss = 1 */
    if (argc > 5) {
        x[0] = log(atof(argv[4]));
        x[1] = log(atof(argv[5]));
    }
    example ex;
    int status = example_open(&ex, argv[1], argv[2], argc > 3 ? argv[3] : NULL);
    if (!status) {
        int iterations = bfgs(&ex, x, &f);
        if (iterations < 0) {
            fprintf(stderr, "fit: did not converge\n");
            status = 1;
        } else {
            printf("families %lld, %d iterations\n", (long long)ex.n,
                   iterations);
            printf("fitted gain %.6f loss %.6f log-likelihood %.6f\n",
                   exp(x[0]), exp(x[1]), -f);
        }
    }
    example_close(&ex);
    return status;
}
