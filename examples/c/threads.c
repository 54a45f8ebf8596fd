/* Choosing the number of threads, and why it never changes the answer.
 *
 *   threads TREE.nwk TABLE.Rtab[.gz] GAIN LOSS [none|present|variable]
 *
 * A context owns a pool of worker threads, created when the count is set
 * and reused by every batch call. The library splits the families into
 * fixed-size blocks and adds them up in a fixed order, so every per-family
 * value and every total is bitwise the same for any thread count; this
 * program evaluates with 1 thread, 2 threads and one per core (0) and
 * compares the bytes. */
#include <math.h>
#include <time.h>

#include "common.h"

static double seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: threads TREE TABLE GAIN LOSS "
                        "[none|present|variable]\n");
        return 2;
    }
    const double lg = log(atof(argv[3])), ll = log(atof(argv[4]));
    example ex;
    int status = example_open(&ex, argv[1], argv[2], argc > 5 ? argv[5] : NULL);
    double *first = NULL; /* the 1-thread outputs: loglik, d_gain, d_loss */
    if (status || !(first = malloc(3 * (size_t)ex.n * sizeof *first))) {
        status = 2;
        goto done;
    }
    const int64_t requested[] = {1, 2, 0};
    for (int i = 0; i < 3; i++) {
        int64_t running;
        int rc = persiste_ctx_set_param(ex.ctx, PERSISTE_CTX_NTHREADS,
                                        requested[i]);
        if (!rc) /* 0 reads back as the number of threads it started */
            rc = persiste_ctx_get_param(ex.ctx, PERSISTE_CTX_NTHREADS,
                                        &running);
        if (rc) {
            status = example_fail("threads", rc);
            goto done;
        }
        double total[3] = {0}, t0 = seconds();
        if ((status = example_eval(&ex, lg, ll, total)))
            goto done;
        double ms = 1e3 * (seconds() - t0);
        /* loglik, d_log_gain and d_log_loss are adjacent in ex's buffer. */
        const size_t bytes = 3 * (size_t)ex.n * sizeof(double);
        if (i == 0)
            memcpy(first, ex.loglik, bytes);
        int same = memcmp(first, ex.loglik, bytes) == 0;
        printf("threads requested %lld, running %lld: log-likelihood %.10f "
               "(%.1f ms), %s\n",
               (long long)requested[i], (long long)running, total[0], ms,
               same ? "bitwise identical to 1 thread" : "DIFFERENT");
        if (!same)
            status = 1;
    }
done:
    free(first);
    example_close(&ex);
    return status;
}
