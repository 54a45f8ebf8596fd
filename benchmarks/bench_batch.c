/* Times persiste_loglik_batch and persiste_gradient_batch on simulated data:
 * a random rooted binary tree of N genomes and F families simulated under
 * the model (fixed seed), with global rates and with distinct per-family
 * rates, on 1 and 2 threads. Run on purpose (not a test):
 *
 *   build/benchmarks/bench_batch [N F [repeats [task]]]
 *
 * task 0-3 runs one row of the table only (for profilers). The model
 * conditions on nothing, or as BENCH_CONDITION=present|variable says;
 * BENCH_STAT=min reports the fastest call instead of the median;
 * BENCH_KERNEL=avx512|avx2|generic runs that kernel (the library otherwise
 * picks the fastest the CPU runs); BENCH_REPEATS=off keeps the likelihood
 * at global rates in blocks (no site repeats, lib/eval/classes.c).
 * Prints a table of median times and the 2-thread speed-up. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <persiste/persiste.h>

#include "kernel.h" /* persiste__kernel_select, persiste__classes_mode: it
                     * links the library's objects */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double uniform(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return ((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench: %s: %s (%s)\n", what, persiste_last_error(),
            persiste_strerror(rc));
    exit(2);
}

int main(int argc, char **argv)
{
    int32_t n_tips = argc > 1 ? atoi(argv[1]) : 1324;
    int64_t n_fam = argc > 2 ? atoll(argv[2]) : 25420;
    int reps = argc > 3 ? atoi(argv[3]) : 7;
    int only = argc > 4 ? atoi(argv[4]) : -1;
    double gain = 0.5, loss = 1.5;
    if (n_tips < 2 || n_fam < 1 || reps < 1) {
        fprintf(stderr, "usage: bench_batch [N F [repeats [task]]]\n");
        return 2;
    }
    const char *repeats = getenv("BENCH_REPEATS");
    if (repeats && !strcmp(repeats, "off"))
        persiste__classes_mode(-1);
    const char *isa = getenv("BENCH_KERNEL");
    if (isa && persiste__kernel_select(isa)) {
        fprintf(stderr, "bench: kernel %s not in this build or CPU\n", isa);
        return 2;
    }

    /* Random binary tree: join random pairs of lineages (coalescent-like). */
    int32_t n_nodes = 2 * n_tips - 1;
    int32_t *parent = malloc(sizeof *parent * n_nodes);
    double *len = malloc(sizeof *len * n_nodes);
    int32_t *live = malloc(sizeof *live * n_tips);
    char **names = malloc(sizeof *names * n_nodes);
    for (int32_t i = 0; i < n_tips; i++) {
        live[i] = i;
        names[i] = malloc(16);
        snprintf(names[i], 16, "g%d", i);
    }
    for (int32_t i = n_tips; i < n_nodes; i++)
        names[i] = NULL;
    int32_t n_live = n_tips, next = n_tips;
    while (n_live > 1) {
        int32_t a = (int32_t)(uniform() * n_live);
        int32_t x = live[a];
        live[a] = live[--n_live];
        int32_t b = (int32_t)(uniform() * n_live);
        int32_t y = live[b];
        parent[x] = parent[y] = next;
        len[x] = 0.002 + 0.1 * uniform();
        len[y] = 0.002 + 0.1 * uniform();
        live[b] = next++;
    }
    parent[n_nodes - 1] = -1;
    len[n_nodes - 1] = 0;

    /* Simulate states down the tree (parents have larger indices here). */
    uint8_t *node_state = malloc((size_t)n_nodes);
    uint8_t *states = malloc((size_t)n_fam * n_tips);
    double s = gain + loss;
    for (int64_t f = 0; f < n_fam; f++) {
        node_state[n_nodes - 1] = uniform() < gain / s;
        for (int32_t v = n_nodes - 2; v >= 0; v--) {
            double em = -expm1(-s * len[v]);
            double p1 = node_state[parent[v]] ? 1 - loss / s * em : gain / s * em;
            node_state[v] = uniform() < p1;
        }
        memcpy(states + f * n_tips, node_state, (size_t)n_tips);
    }

    persiste_tree *tree;
    persiste_data *data;
    persiste_model *model;
    int rc;
    if ((rc = persiste_tree_from_parents(&tree, n_nodes, parent, len,
                                         (const char *const *)names)))
        die("tree", rc);
    if ((rc = persiste_data_from_matrix(&data, tree, states, n_fam, n_tips,
                                        n_tips, 1, (const char *const *)names,
                                        NULL, 0)))
        die("data", rc);
    if ((rc = persiste_model_create(&model)))
        die("model", rc);
    const char *cond = getenv("BENCH_CONDITION");
    persiste_model_set_int(model, PERSISTE_MODEL_CONDITION,
                           !cond || !strcmp(cond, "none") ? PERSISTE_CONDITION_NONE
                           : !strcmp(cond, "present") ? PERSISTE_CONDITION_PRESENT
                                                      : PERSISTE_CONDITION_VARIABLE);

    size_t nb = (size_t)n_fam * sizeof(double);
    double *lg = malloc(nb), *ll = malloc(nb), *lgd = malloc(nb),
           *lld = malloc(nb), *out = malloc(nb), *dg = malloc(nb),
           *dl = malloc(nb), *db = malloc(sizeof(double) * n_nodes),
           *times = malloc(sizeof(double) * reps);
    for (int64_t f = 0; f < n_fam; f++) {
        lg[f] = log(gain);
        ll[f] = log(loss);
        lgd[f] = log(gain) + 0.2 * (uniform() - 0.5);
        lld[f] = log(loss) + 0.2 * (uniform() - 0.5);
    }

    /* BENCH_STAT=min: the fastest call, for A/B runs on a busy machine */
    const char *stat = getenv("BENCH_STAT");
    int use_min = stat && !strcmp(stat, "min");
    printf("persiste %s: %d genomes x %lld families, %s of %d, kernel %s\n",
           persiste_version_string(), n_tips, (long long)n_fam,
           use_min ? "fastest" : "median", reps, isa ? isa : "the fastest");
    printf("%-34s %12s %12s %8s\n", "task", "1 thread ms", "2 threads ms",
           "speed-up");
    const char *task[4] = {"lnL, global rates", "lnL, per-family rates",
                           "gradient (+branches), global", "gradient (+branches), per-family"};
    for (int k = 0; k < 4; k++) {
        if (only >= 0 && k != only)
            continue;
        const double *g = k % 2 ? lgd : lg, *u = k % 2 ? lld : ll;
        double med[2];
        for (int th = 1; th <= 2; th++) {
            persiste_ctx *ctx;
            if ((rc = persiste_ctx_create(&ctx)) ||
                (rc = persiste_ctx_set_param(ctx, PERSISTE_CTX_NTHREADS, th)))
                die("ctx", rc);
            for (int r = -1; r < reps; r++) {
                double t0 = now();
                rc = k < 2 ? persiste_loglik_batch(ctx, model, tree, data, n_fam,
                                                   g, u, out)
                           : persiste_gradient_batch(ctx, model, tree, data,
                                                     n_fam, g, u, NULL, out, dg,
                                                     dl, db);
                if (rc)
                    die("batch", rc);
                if (r >= 0) /* the first call warms up the workspace */
                    times[r] = now() - t0;
            }
            qsort(times, (size_t)reps, sizeof *times, cmp);
            med[th - 1] = 1e3 * times[use_min ? 0 : reps / 2];
            persiste_ctx_destroy(ctx);
        }
        printf("%-34s %12.2f %12.2f %7.2fx\n", task[k], med[0], med[1],
               med[0] / med[1]);
    }
    double total = 0;
    for (int64_t f = 0; f < n_fam; f++)
        total += out[f];
    printf("(total lnL at the per-family rates: %.6f)\n", total);
    return 0;
}
