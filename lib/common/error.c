/* Status names, the thread-local error message, checked allocation, object
 * serial numbers. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* One table gives the code names; values are pinned in persiste.h. */
#define PERSISTE_STATUS_MAP(X)                                   \
    X(PERSISTE_OK, "ok")                                         \
    X(PERSISTE_E_NOMEM, "out of memory")                         \
    X(PERSISTE_E_INVALID, "invalid argument")                    \
    X(PERSISTE_E_PARSE, "malformed input")                       \
    X(PERSISTE_E_IO, "input/output error")                       \
    X(PERSISTE_E_NAMES, "taxon names do not match")              \
    X(PERSISTE_E_DOMAIN, "number out of domain")                 \
    X(PERSISTE_E_STATE, "object unusable in this process state") \
    X(PERSISTE_E_BUSY, "context in use by another thread")       \
    X(PERSISTE_E_OVERFLOW, "size overflow")

const char *persiste_strerror(int status)
{
    switch (status) {
#define X(code, text) \
    case code:        \
        return text;
        PERSISTE_STATUS_MAP(X)
#undef X
    }
    return "unknown status";
}

/* A fixed buffer needs no init or TLS destructor (safe under dlclose). */
static _Thread_local char last_error[512];

const char *persiste_last_error(void) { return last_error; }

int persiste__error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

unsigned persiste_version_number(void) { return PERSISTE_VERSION_NUMBER; }
const char *persiste_version_string(void) { return PERSISTE_VERSION_STRING; }

int persiste__mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return persiste__error(PERSISTE_E_OVERFLOW,
                               "size %zu x %zu overflows", a, b);
    *out = a * b;
    return PERSISTE_OK;
}

#ifdef PERSISTE_ALLOC_FAILURE
/* Test builds: the k-th allocation (1-based) fails when set to k > 0. */
long persiste__alloc_fail_at = 0;
long persiste__alloc_count = 0;
static int alloc_should_fail(void)
{
    long k = ++persiste__alloc_count;
    return persiste__alloc_fail_at > 0 && k == persiste__alloc_fail_at;
}
#else
static int alloc_should_fail(void) { return 0; }
#endif

void *persiste__malloc(size_t n)
{
    return alloc_should_fail() ? NULL : malloc(n ? n : 1);
}

void *persiste__calloc(size_t count, size_t size)
{
    return alloc_should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1);
}

void *persiste__malloc_aligned(size_t n)
{
    if (n > SIZE_MAX - 64)
        return NULL;
    n = n ? (n + 63) / 64 * 64 : 64; /* C11: a multiple of the alignment */
    return alloc_should_fail() ? NULL : aligned_alloc(64, n);
}

void *persiste__realloc(void *p, size_t n)
{
    return alloc_should_fail() ? NULL : realloc(p, n ? n : 1);
}

void persiste__free(void *p) { free(p); }

char *persiste__strndup(const char *s, size_t n)
{
    char *d = persiste__malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

uint64_t persiste__serial(void)
{
    static _Atomic uint64_t last;
    return atomic_fetch_add(&last, 1) + 1;
}
