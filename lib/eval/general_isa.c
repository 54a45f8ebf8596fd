/* Which copy of the general path runs: lib/eval/general.c is compiled once
 * per instruction set (lib/meson.build), with the same arithmetic in each
 * (no FMA contraction), so the choice changes the speed, not the bits. */
#include "general.h"

int persiste__general_run(persiste_ctx *ctx, const struct persiste__call *c)
{
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
