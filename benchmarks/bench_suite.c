/* One data set of the benchmark suite (benchmarks/run.sh): reads a Newick
 * tree and a table with persiste, then times, side by side in this process,
 * persiste (lnL at global, two-class and per-family rates, full gradient;
 * 1 and 2 threads) and BEAGLE (CPU, 2 states, manual rescaling at every
 * node; 2 threads = two instances over halves of the families).
 *
 *   bench_suite [-b] [-t seconds] [-l label] TREE TABLE RATES
 *   bench_suite -r repeats TREE TABLE        (reading speed only)
 *
 * RATES: raw float64, six arrays of n_families: log gain and log loss of the
 * global, two-class and per-family rate sets (simulate.py). Conditioning
 * none, stationary root. -t: time budget of one measurement (median of the
 * timed calls that fit in it, at least 3, after one warm-up call). Prints
 * one JSON object a line. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <dirent.h>

#include <persiste/persiste.h>
#ifdef HAVE_BEAGLE
#include <libhmsbeagle/beagle.h>
#endif

#ifdef __GLIBC__
/* Allocation counter: these definitions take the place of the C library's
 * for the whole process, libpersiste included, so that the suite reports
 * allocations per call (the hot path should make none). */
#include <stdatomic.h>
extern void *__libc_malloc(size_t), *__libc_calloc(size_t, size_t),
    *__libc_realloc(void *, size_t), *__libc_memalign(size_t, size_t);
static atomic_long n_alloc;
void *malloc(size_t n)
{
    n_alloc++;
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t size)
{
    n_alloc++;
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t n)
{
    n_alloc++;
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t align, size_t n)
{
    n_alloc++;
    return __libc_memalign(align, n);
}
int posix_memalign(void **p, size_t align, size_t n)
{
    n_alloc++;
    return (*p = __libc_memalign(align, n)) ? 0 : 12; /* ENOMEM */
}
#else
static long n_alloc;
#endif

static const char *label = "";
static int32_t n_genomes;
static int64_t n_fam;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "bench_suite: %s: %s\n", what, detail);
    exit(2);
}

static void check(int rc, const char *what)
{
    if (rc)
        fail(what, persiste_last_error());
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* CPU seconds used so far by the threads other than the main one (worker
 * threads), from /proc/self/task/<tid>/stat (clock-tick resolution). */
static double workers_cpu(void)
{
    double ticks = 0;
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        char path[300], buf[1024];
        if (e->d_name[0] == '.' || atol(e->d_name) == (long)getpid())
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        size_t got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        buf[got] = 0;
        char *p = strrchr(buf, ')'); /* fields after the command name */
        unsigned long utime, stime;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                               "%lu %lu", &utime, &stime) == 2)
            ticks += (double)(utime + stime);
    }
    if (dir)
        closedir(dir);
    return ticks / (double)sysconf(_SC_CLK_TCK);
}

/* Median wall time of one call, process CPU time per call (mean), CPU time
 * over wall time (how many cores were really busy), the share of that CPU
 * time spent by threads other than the main one, allocations per call
 * (mean) and the number of timed calls. */
typedef struct {
    double median, cpu, cores, worker_share, allocs;
    int reps;
} timing;

/* One warm-up call, then timed calls of fn(arg) until budget seconds are
 * spent (at least 3, at most 10^5). */
static timing measure(void (*fn)(void *), void *arg, double budget)
{
    enum { MAX_REPS = 100000 };
    static double t[MAX_REPS];
    fn(arg);
    int n = 0;
    double spent = 0, cpu0 = cpu_now(), workers0 = workers_cpu();
    long alloc0 = n_alloc;
    for (; n < MAX_REPS && (n < 3 || spent < budget); n++) {
        double t0 = now();
        fn(arg);
        t[n] = now() - t0;
        spent += t[n];
    }
    /* counted before workers_cpu(), which allocates to read /proc */
    double allocs = (double)(n_alloc - alloc0) / n;
    double cpu = cpu_now() - cpu0, workers = workers_cpu() - workers0;
    qsort(t, (size_t)n, sizeof *t, cmp);
    return (timing){t[n / 2], cpu / n, cpu / spent, workers / cpu, allocs, n};
}

static void emit(const char *impl, const char *task, int threads, timing t,
                 double lnl, const char *extra)
{
    char value[32] = "null";
    if (!isnan(lnl))
        snprintf(value, sizeof value, "%.17g", lnl);
    printf("{\"label\": \"%s\", \"genomes\": %d, \"families\": %lld, "
           "\"impl\": \"%s\", \"task\": \"%s\", \"threads\": %d, "
           "\"median_s\": %.9g, \"reps\": %d, \"cpu_s\": %.9g, "
           "\"cores\": %.2f, \"worker_share\": %.2f, \"allocs\": %.1f, "
           "\"lnL\": %s%s}\n",
           label, n_genomes, (long long)n_fam, impl, task, threads, t.median,
           t.reps, t.cpu, t.cores, t.worker_share, t.allocs, value,
           extra ? extra : "");
    fflush(stdout);
}

static double rss_mb(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

/* ---- persiste ---------------------------------------------------------- */

typedef struct {
    persiste_ctx *ctx;
    const persiste_model *model;
    const persiste_tree *tree;
    const persiste_data *data;
    const double *lg, *ll;
    double *out, *dg, *dl, *db;
    int gradient;
} batch;

static void run_batch(void *arg)
{
    batch *b = arg;
    int rc = b->gradient
                 ? persiste_gradient_batch(b->ctx, b->model, b->tree, b->data,
                                           n_fam, b->lg, b->ll, NULL, b->out,
                                           b->dg, b->dl, b->db)
                 : persiste_loglik_batch(b->ctx, b->model, b->tree, b->data,
                                         n_fam, b->lg, b->ll, b->out);
    check(rc, "batch");
}

static double total(const double *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    return s;
}

/* Returns the largest resident-memory growth seen while a context held its
 * workspace (MB). */
static double bench_persiste(const persiste_tree *tree,
                             const persiste_data *data, const double *rates,
                             double budget)
{
    static const char *task[5] = {"lnL global", "lnL two-class",
                                  "lnL per-family", "gradient global",
                                  "gradient per-family"};
    static const int set[5] = {0, 1, 2, 0, 2};
    persiste_model *model;
    check(persiste_model_create(&model), "model");
    check(persiste_model_set_int(model, PERSISTE_MODEL_CONDITION,
                                 PERSISTE_CONDITION_NONE), "model");
    int32_t n_nodes = persiste_tree_n_nodes(tree);
    double *buf = calloc((size_t)(3 * n_fam + n_nodes), sizeof(double));
    if (!buf)
        fail("memory", "output arrays");
    batch b = {.model = model, .tree = tree, .data = data, .out = buf,
               .dg = buf + n_fam, .dl = buf + 2 * n_fam,
               .db = buf + 3 * n_fam};
    double growth = 0;
    for (int k = 0; k < 5; k++) {
        b.lg = rates + 2 * set[k] * n_fam;
        b.ll = b.lg + n_fam;
        b.gradient = k >= 3;
        for (int th = 1; th <= 2; th++) {
            double base = rss_mb();
            check(persiste_ctx_create(&b.ctx), "ctx");
            check(persiste_ctx_set_param(b.ctx, PERSISTE_CTX_NTHREADS, th),
                  "ctx");
            /* lnL at global rates or two classes: a fit's first calls run
             * in blocks, and one finds the site repeats (lib/eval/classes.c);
             * their times, then the steady state that measure() times */
            enum { FIRST = 20 };
            double first[FIRST], first_max = 0;
            for (int c = 0; k < 2 && c < FIRST; c++) {
                double t0 = now();
                run_batch(&b);
                first[c] = now() - t0;
                first_max = fmax(first_max, first[c]);
            }
            if (k < 2) /* the calls in blocks: the first 15, less the first */
                qsort(first + 1, 14, sizeof *first, cmp);
            timing t = measure(run_batch, &b, budget);
            char extra[160];
            int at = snprintf(extra, sizeof extra, ", \"rss_growth_mb\": %.1f",
                              rss_mb() - base);
            if (k < 2)
                snprintf(extra + at, sizeof extra - (size_t)at,
                         ", \"blocks_s\": %.9g, \"first_calls_max_s\": %.9g",
                         first[1 + 7], first_max);
            growth = fmax(growth, rss_mb() - base);
            emit("persiste", task[k], th, t, total(b.out, n_fam), extra);
            persiste_ctx_destroy(b.ctx);
        }
    }
    free(buf);
    persiste_model_destroy(model);
    return growth;
}

/* ---- BEAGLE ------------------------------------------------------------ */
#ifdef HAVE_BEAGLE
typedef struct {
    int id, n_ops, n_internal, n_edges;
    int *scale_idx, *edge_node;
    double *edge_len, gain, loss, lnl;
    BeagleOperation *ops;
} beagle_run;

static void beagle_check(int rc, const char *what)
{
    if (rc < 0) {
        char msg[32];
        snprintf(msg, sizeof msg, "BEAGLE error %d", rc);
        fail(what, msg);
    }
}

/* One instance over families [f0, f0 + n) of the data. */
static void beagle_create(beagle_run *r, const persiste_tree *tree,
                          const persiste_data *data, int64_t f0, int64_t n,
                          double gain, double loss, char *impl, size_t impl_len)
{
    int32_t n_nodes = persiste_tree_n_nodes(tree), n_tips = n_genomes;
    int32_t *parent = malloc(sizeof *parent * n_nodes);
    int *child = malloc(sizeof *child * 2 * n_nodes);
    int *states = malloc(sizeof *states * n * n_tips);
    uint8_t *col = malloc((size_t)n_tips);
    double *ones = malloc(sizeof *ones * n);
    r->edge_len = malloc(sizeof *r->edge_len * n_nodes);
    r->edge_node = malloc(sizeof *r->edge_node * n_nodes);
    r->scale_idx = malloc(sizeof *r->scale_idx * n_nodes);
    r->ops = malloc(sizeof *r->ops * n_nodes);
    int *n_child = calloc((size_t)n_nodes, sizeof *n_child);
    if (!parent || !child || !states || !col || !ones || !r->edge_len ||
        !r->edge_node || !r->scale_idx || !r->ops || !n_child)
        fail("memory", "BEAGLE set-up");
    check(persiste_tree_parents(tree, parent), "tree");
    check(persiste_tree_branch_lengths(tree, r->edge_len), "tree");
    r->n_internal = n_nodes - n_tips;
    r->n_edges = n_nodes - 1;
    r->gain = gain;
    r->loss = loss;
    for (int32_t v = 0; v < n_nodes - 1; v++) {
        if (n_child[parent[v]] == 2)
            fail("BEAGLE", "the tree is not binary");
        child[2 * parent[v] + n_child[parent[v]]++] = v;
        r->edge_node[v] = v;
    }
    /* Buffers: tip v = compact buffer v; internal node v = partials v and
     * scale buffer v - n_tips; the last scale buffer is the cumulative one.
     * Internal nodes are numbered in post-order, so the operations are in
     * order. */
    for (int32_t v = n_tips; v < n_nodes; v++) {
        int i = v - n_tips;
        r->scale_idx[i] = i;
        r->ops[i] = (BeagleOperation){v, i, BEAGLE_OP_NONE, child[2 * v],
                                      child[2 * v], child[2 * v + 1],
                                      child[2 * v + 1]};
    }
    r->n_ops = r->n_internal;
    BeagleInstanceDetails det;
    r->id = beagleCreateInstance(
        n_tips, r->n_internal, n_tips, 2, (int)n, 1, n_nodes, 1,
        r->n_internal + 1, NULL, 0,
        BEAGLE_FLAG_VECTOR_SSE | BEAGLE_FLAG_THREADING_NONE,
        BEAGLE_FLAG_PROCESSOR_CPU | BEAGLE_FLAG_PRECISION_DOUBLE |
            BEAGLE_FLAG_SCALING_MANUAL,
        &det);
    beagle_check(r->id, "beagleCreateInstance");
    snprintf(impl, impl_len, "%s", det.implName);
    for (int64_t f = 0; f < n; f++) {
        check(persiste_data_states(data, f0 + f, col), "states");
        for (int32_t t = 0; t < n_tips; t++)
            states[t * n + f] = col[t] > 1 ? 2 : col[t]; /* 2: missing */
        ones[f] = 1;
    }
    for (int32_t t = 0; t < n_tips; t++)
        beagle_check(beagleSetTipStates(r->id, t, states + t * n), "tips");
    beagle_check(beagleSetPatternWeights(r->id, ones), "weights");
    double one = 1;
    beagle_check(beagleSetCategoryRates(r->id, &one), "rates");
    beagle_check(beagleSetCategoryWeights(r->id, 0, &one), "weights");
    free(parent), free(child), free(states), free(col), free(ones);
    free(n_child);
}

/* One evaluation as a BEAGLE user does it: model, matrices, partials with
 * rescaling, scale factors, root. */
static void beagle_eval(beagle_run *r)
{
    double g = r->gain, l = r->loss, s = g + l;
    double evec[4] = {1, g, 1, -l}, ivec[4] = {l / s, g / s, 1 / s, -1 / s};
    double eval[2] = {0, -s}, freq[2] = {l / s, g / s};
    int zero = 0, root = r->ops[r->n_ops - 1].destinationPartials;
    int cumulative = r->n_internal;
    beagle_check(beagleSetEigenDecomposition(r->id, 0, evec, ivec, eval),
                 "eigen");
    beagle_check(beagleSetStateFrequencies(r->id, 0, freq), "frequencies");
    beagle_check(beagleUpdateTransitionMatrices(r->id, 0, r->edge_node, NULL,
                                                NULL, r->edge_len, r->n_edges),
                 "matrices");
    beagle_check(beagleUpdatePartials(r->id, r->ops, r->n_ops, BEAGLE_OP_NONE),
                 "partials");
    beagle_check(beagleResetScaleFactors(r->id, cumulative), "scale");
    beagle_check(beagleAccumulateScaleFactors(r->id, r->scale_idx,
                                              r->n_internal, cumulative),
                 "scale");
    beagle_check(beagleCalculateRootLogLikelihoods(r->id, &root, &zero, &zero,
                                                   &cumulative, 1, &r->lnl),
                 "root");
}

static void beagle_destroy(beagle_run *r)
{
    beagleFinalizeInstance(r->id);
    free(r->edge_len), free(r->edge_node), free(r->scale_idx), free(r->ops);
}

/* Two instances: the calling thread evaluates the first, a helper thread
 * (kept between calls, woken by a barrier) the second. */
typedef struct {
    beagle_run run[2];
    int count, stop;
    pthread_t helper;
    pthread_barrier_t go, done;
} beagle_set;

static void *beagle_helper(void *arg)
{
    beagle_set *b = arg;
    for (;;) {
        pthread_barrier_wait(&b->go);
        if (b->stop)
            return NULL;
        beagle_eval(&b->run[1]);
        pthread_barrier_wait(&b->done);
    }
}

static void beagle_set_eval(void *arg)
{
    beagle_set *b = arg;
    if (b->count == 2)
        pthread_barrier_wait(&b->go);
    beagle_eval(&b->run[0]);
    if (b->count == 2)
        pthread_barrier_wait(&b->done);
}

static void bench_beagle(const persiste_tree *tree, const persiste_data *data,
                         const double *rates, double budget)
{
    double gain = exp(rates[0]), loss = exp(rates[n_fam]);
    for (int count = 1; count <= 2; count++) {
        beagle_set b = {.count = count};
        char impl[64], extra[128];
        int64_t half = count == 2 ? n_fam / 2 : n_fam;
        beagle_create(&b.run[0], tree, data, 0, half, gain, loss, impl,
                      sizeof impl);
        if (count == 2) {
            beagle_create(&b.run[1], tree, data, half, n_fam - half, gain,
                          loss, impl, sizeof impl);
            pthread_barrier_init(&b.go, NULL, 2);
            pthread_barrier_init(&b.done, NULL, 2);
            if (pthread_create(&b.helper, NULL, beagle_helper, &b))
                fail("BEAGLE", "pthread_create");
        }
        timing t = measure(beagle_set_eval, &b, budget);
        double lnl = b.run[0].lnl + (count == 2 ? b.run[1].lnl : 0);
        snprintf(extra, sizeof extra, ", \"beagle_impl\": \"%s\"", impl);
        emit("beagle", "lnL global", count, t, lnl, extra);
        if (count == 2) {
            b.stop = 1;
            pthread_barrier_wait(&b.go);
            pthread_join(b.helper, NULL);
            pthread_barrier_destroy(&b.go);
            pthread_barrier_destroy(&b.done);
            beagle_destroy(&b.run[1]);
        }
        beagle_destroy(&b.run[0]);
    }
}
#endif

/* ---- reading ----------------------------------------------------------- */

/* Median time of persiste_data_read, and of the reference: plain read() of
 * the file, or zlib inflating it (gzread), into a buffer. Reports MB/s of
 * uncompressed text. */
static void bench_read(const persiste_tree *tree, const char *path, int reps)
{
    enum { MAX_REPS = 31 };
    double t_lib[MAX_REPS], t_ref[MAX_REPS], bytes = 0, file_bytes = 0;
    size_t cap = 1 << 22;
    char *buf = malloc(cap);
    if (!buf || reps < 1 || reps > MAX_REPS)
        fail("read", "bad repeat count or no memory");
    for (int r = 0; r < reps; r++) {
        persiste_data *data;
        double t0 = now();
        check(persiste_data_read(&data, tree, path,
                                 PERSISTE_DATA_DROP_EXTRA_TAXA), "read");
        t_lib[r] = now() - t0;
        n_fam = persiste_data_n_families(data);
        persiste_data_destroy(data);
        gzFile gz = gzopen(path, "rb"); /* inflates gzip, else reads */
        if (!gz)
            fail("read", path);
        gzbuffer(gz, 1 << 20);
        t0 = now();
        int got;
        for (bytes = 0; (got = gzread(gz, buf, (unsigned)cap)) > 0;)
            bytes += got;
        t_ref[r] = now() - t0;
        gzclose(gz);
    }
    FILE *f = fopen(path, "rb");
    if (f && fseek(f, 0, SEEK_END) == 0)
        file_bytes = (double)ftell(f);
    if (f)
        fclose(f);
    qsort(t_lib, (size_t)reps, sizeof(double), cmp);
    qsort(t_ref, (size_t)reps, sizeof(double), cmp);
    double lib = t_lib[reps / 2], ref = t_ref[reps / 2];
    printf("{\"label\": \"%s\", \"genomes\": %d, \"families\": %lld, "
           "\"impl\": \"persiste\", \"task\": \"read\", \"file\": \"%s\", "
           "\"file_mb\": %.3f, \"text_mb\": %.3f, \"median_s\": %.6g, "
           "\"reps\": %d, \"mb_per_s\": %.1f, \"zlib_read_s\": %.6g, "
           "\"zlib_read_mb_per_s\": %.1f, \"peak_rss_mb\": %.1f}\n",
           label, n_genomes, (long long)n_fam, path, file_bytes / 1e6,
           bytes / 1e6, lib, reps, bytes / 1e6 / lib, ref, bytes / 1e6 / ref,
           peak_rss_mb());
    free(buf);
}

int main(int argc, char **argv)
{
    int opt, use_beagle = 0, read_reps = 0;
    double budget = 0.5;
    while ((opt = getopt(argc, argv, "bt:l:r:")) != -1) {
        if (opt == 'b')
            use_beagle = 1;
        else if (opt == 't')
            budget = atof(optarg);
        else if (opt == 'l')
            label = optarg;
        else if (opt == 'r')
            read_reps = atoi(optarg);
        else
            return 2;
    }
    if (argc - optind != (read_reps ? 2 : 3)) {
        fprintf(stderr, "usage: bench_suite [-b] [-t seconds] [-l label] "
                        "TREE TABLE RATES\n       bench_suite -r repeats "
                        "TREE TABLE\n");
        return 2;
    }
    persiste_tree *tree;
    check(persiste_tree_from_newick_file(&tree, argv[optind]), "tree");
    n_genomes = persiste_tree_n_tips(tree);
    if (read_reps) {
        bench_read(tree, argv[optind + 1], read_reps);
        persiste_tree_destroy(tree);
        return 0;
    }
    persiste_data *data;
    double t0 = now();
    check(persiste_data_read(&data, tree, argv[optind + 1],
                             PERSISTE_DATA_DROP_EXTRA_TAXA), "read");
    double t_read = now() - t0, rss_data = rss_mb();
    n_fam = persiste_data_n_families(data);
    double *rates = malloc(sizeof *rates * 6 * n_fam);
    FILE *f = fopen(argv[optind + 2], "rb");
    if (!rates || !f || fread(rates, sizeof *rates, 6 * n_fam, f) !=
                            (size_t)(6 * n_fam))
        fail("rates", argv[optind + 2]);
    fclose(f);
    double growth = bench_persiste(tree, data, rates, budget);
    char extra[160];
    snprintf(extra, sizeof extra,
             ", \"rss_after_read_mb\": %.1f, \"workspace_mb\": %.1f, "
             "\"peak_rss_mb\": %.1f, \"bits_mb\": %.1f",
             rss_data, growth, peak_rss_mb(),
             (double)n_genomes * n_fam / 8 / 1048576.0);
    emit("persiste", "read+memory", 1, (timing){t_read, t_read, 1, 0, 0, 1}, NAN,
         extra);
    if (use_beagle) {
#ifdef HAVE_BEAGLE
        bench_beagle(tree, data, rates, budget);
#else
        fprintf(stderr, "bench_suite: built without BEAGLE\n");
#endif
    }
    free(rates);
    persiste_data_destroy(data);
    persiste_tree_destroy(tree);
    return 0;
}
