/* Which copy of the general path runs: lib/eval/general.c is compiled once
 * per instruction set (lib/meson.build), with the same arithmetic in each
 * (no FMA contraction), so the choice changes the speed, not the bits. */
#include "general.h"

#include <string.h>

/* For tests (through persiste__kernel_select): -1 the best the CPU runs,
 * else 0 generic, 1 avx2, 2 avx512. */
static int general_override = -1;

static int runs_avx512(void)
{
#if defined(PERSISTE_HAVE_AVX512)
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static int runs_avx2(void)
{
#if defined(PERSISTE_HAVE_AVX2)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int persiste__general_select(const char *isa)
{
    int i = !strcmp(isa, "generic") ? 0
            : !strcmp(isa, "avx2") && runs_avx2() ? 1
            : !strcmp(isa, "avx512") && runs_avx512() ? 2
                                                      : -1;
    if (i < 0)
        return -1;
    general_override = i;
    return 0;
}

int persiste__general_run(persiste_ctx *ctx, const struct persiste__call *c)
{
#if defined(PERSISTE_HAVE_AVX512)
    if (general_override == 2)
        return persiste__general_run_avx512(ctx, c);
#endif
#if defined(PERSISTE_HAVE_AVX2)
    if (general_override == 1)
        return persiste__general_run_avx2(ctx, c);
#endif
    if (general_override == 0)
        return persiste__general_run_generic(ctx, c);
#if defined(PERSISTE_HAVE_AVX512)
    if (__builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return persiste__general_run_avx512(ctx, c);
#endif
#if defined(PERSISTE_HAVE_AVX2)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return persiste__general_run_avx2(ctx, c);
#endif
    return persiste__general_run_generic(ctx, c);
}
