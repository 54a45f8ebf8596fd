/* Peak double-precision FMA rate of this machine, for the arithmetic floor
 * of benchmarks/run.sh: each thread runs 24 independent chains of vector
 * FMAs (AVX-512 if the CPU has it, else AVX2+FMA, else scalar), enough
 * independent chains to cover the FMA latency on every port. Prints one JSON line: FMAs per second
 * (one FMA = one multiply-add of one double) on 1 and on N threads.
 *
 *   fma_rate [threads]        (default 2) */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* 24 chains fill 24 of the 32 zmm registers; 12 of the 16 ymm ones. */
enum { CHAINS = 24, CHAINS2 = 12, ITERS = 20000000 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static volatile double sink;

/* Each function returns the number of FMAs it did. */
__attribute__((target("avx512f"))) static double run_avx512(void)
{
    __m512d acc[CHAINS], a = _mm512_set1_pd(0.999999), b = _mm512_set1_pd(1e-7);
    for (int c = 0; c < CHAINS; c++)
        acc[c] = _mm512_set1_pd(c);
    for (long i = 0; i < ITERS; i++)
#pragma GCC unroll 24
        for (int c = 0; c < CHAINS; c++)
            acc[c] = _mm512_fmadd_pd(acc[c], a, b);
    for (int c = 1; c < CHAINS; c++)
        acc[0] = _mm512_add_pd(acc[0], acc[c]);
    sink = _mm512_reduce_add_pd(acc[0]);
    return 8.0 * CHAINS * ITERS;
}

__attribute__((target("avx2,fma"))) static double run_avx2(void)
{
    __m256d acc[CHAINS2], a = _mm256_set1_pd(0.999999), b = _mm256_set1_pd(1e-7);
    for (int c = 0; c < CHAINS2; c++)
        acc[c] = _mm256_set1_pd(c);
    for (long i = 0; i < ITERS; i++)
#pragma GCC unroll 24
        for (int c = 0; c < CHAINS2; c++)
            acc[c] = _mm256_fmadd_pd(acc[c], a, b);
    double out[4];
    for (int c = 1; c < CHAINS2; c++)
        acc[0] = _mm256_add_pd(acc[0], acc[c]);
    _mm256_storeu_pd(out, acc[0]);
    sink = out[0] + out[1] + out[2] + out[3];
    return 4.0 * CHAINS2 * ITERS;
}

static double run_scalar(void)
{
    double acc[CHAINS2];
    for (int c = 0; c < CHAINS2; c++)
        acc[c] = c;
    for (long i = 0; i < ITERS / 8; i++)
#pragma GCC unroll 24
        for (int c = 0; c < CHAINS2; c++)
            acc[c] = acc[c] * 0.999999 + 1e-7;
    for (int c = 1; c < CHAINS2; c++)
        acc[0] += acc[c];
    sink = acc[0];
    return (double)CHAINS2 * (ITERS / 8);
}

static double (*kernel)(void);

static void *worker(void *arg)
{
    *(double *)arg = kernel();
    return NULL;
}

/* FMAs per second with n threads running the kernel at once. */
static double rate(int n)
{
    pthread_t tid[64];
    double fmas[64], sum = 0;
    double t0 = now();
    for (int i = 0; i < n; i++)
        if (pthread_create(&tid[i], NULL, worker, &fmas[i]))
            exit(2);
    for (int i = 0; i < n; i++) {
        pthread_join(tid[i], NULL);
        sum += fmas[i];
    }
    return sum / (now() - t0);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2;
    if (n < 1 || n > 64)
        return 2;
    __builtin_cpu_init();
    const char *isa = __builtin_cpu_supports("avx512f") ? "avx512f"
                      : __builtin_cpu_supports("avx2") &&
                              __builtin_cpu_supports("fma")
                          ? "avx2+fma"
                          : "scalar";
    kernel = isa[0] == 'a' ? (isa[3] == '5' ? run_avx512 : run_avx2)
                           : run_scalar;
    double best1 = 0, bestn = 0;
    for (int r = 0; r < 3; r++) { /* best of 3: the machine is shared */
        double x = rate(1), y = rate(n);
        best1 = x > best1 ? x : best1;
        bestn = y > bestn ? y : bestn;
    }
    printf("{\"impl\": \"fma\", \"isa\": \"%s\", \"threads\": %d, "
           "\"fma_per_s_1\": %.4g, \"fma_per_s\": %.4g}\n",
           isa, n, best1, bestn);
    return 0;
}
