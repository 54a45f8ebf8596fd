/* Shared by the libFuzzer targets (fuzz_*.c): invariant checks that abort,
 * so that libFuzzer (or the replay driver) reports the input. */
#ifndef PERSISTE_FUZZ_H
#define PERSISTE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "persiste.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with the message and persiste_last_error() when cond is false. */
#define FUZZ_CHECK(cond, ...) \
    ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__))
_Noreturn void fuzz_fail(const char *file, int line, const char *cond,
                         const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A failing call: a known status, a message, nothing handed out. */
void fuzz_check_failure(int rc, const void *out, const void *sentinel);

/* Structure of a tree as persiste.h documents it (tips first, children
 * before parents, root last, unique non-empty tip names, lengths finite
 * and >= 0 below the root). */
void fuzz_check_tree(const persiste_tree *tree);
/* Data bound to tree: sizes, names and states readable and consistent. */
void fuzz_check_data(const persiste_data *data, const persiste_tree *tree);

#endif
