/* Lines of a text file (lib/parse/reader.h): its text in chunks, inflated by a
 * thread of its own.
 *
 * A producer fills a ring of RING chunks from the source while the caller
 * parses the lines of the oldest; a line cut by a chunk's end is carried
 * over in a buffer of its own. The first chunk is read by the caller, and
 * the producer thread starts only when there is more. Slots are handed
 * over with atomic counters (chunks produced and released): the mutex and
 * condition variables only put the sides to sleep, so the ordering is
 * visible to TSan. A failing side stops the other: the parser sets `stop`
 * and joins; the producer records its status and message and ends. */
#include <string.h>

#include "reader.h"

enum { CHUNK = PERSISTE__CHUNK, RING = PERSISTE__RING };

typedef persiste__lines lines;

static void wake(lines *r)
{
    mtx_lock(&r->lock);
    cnd_broadcast(&r->cv);
    mtx_unlock(&r->lock);
}

/* One chunk into the next free slot; 0 once the source has no more (it
 * gives less than a slot holds only at the end). */
static int produce(lines *r)
{
    size_t k = atomic_load_explicit(&r->produced, memory_order_relaxed);
    size_t got, cap = r->slot_cap[k % RING];
    int rc = persiste__source_read(&r->src, r->slot[k % RING], cap, &got);
    if (rc != PERSISTE_OK) {
        r->status = rc;
        snprintf(r->msg, sizeof r->msg, "%s", persiste_last_error());
    }
    r->slot_len[k % RING] = got;
    if (got > 0)
        atomic_store_explicit(&r->produced, k + 1, memory_order_release);
    if (rc != PERSISTE_OK || got < cap)
        atomic_store_explicit(&r->ended, 1, memory_order_release);
    return rc == PERSISTE_OK && got == cap;
}

static int has_room(lines *r)
{
    return atomic_load_explicit(&r->produced, memory_order_relaxed) -
               atomic_load_explicit(&r->released, memory_order_acquire) <
           RING;
}

static int producer_main(void *arg)
{
    lines *r = arg;
    for (;;) {
        if (!has_room(r)) {
            mtx_lock(&r->lock);
            while (!has_room(r) &&
                   !atomic_load_explicit(&r->stop, memory_order_acquire))
                cnd_wait(&r->cv, &r->lock);
            mtx_unlock(&r->lock);
        }
        if (atomic_load_explicit(&r->stop, memory_order_acquire))
            return 0;
        int more = produce(r);
        wake(r);
        if (!more)
            return 0;
    }
}

static int has_chunk(lines *r)
{
    return atomic_load_explicit(&r->produced, memory_order_acquire) >
               atomic_load_explicit(&r->released, memory_order_relaxed) ||
           atomic_load_explicit(&r->ended, memory_order_acquire);
}

/* NUL bytes make a file binary: the line of the first, as counted from the
 * lines returned so far (the carried part of a line has no newline). */
static int check_nul(const lines *r, const char *p, size_t n)
{
    const char *nul = memchr(p, '\0', n);
    if (!nul)
        return PERSISTE_OK;
    return persiste__error(PERSISTE_E_PARSE,
                           "%s: line %lld: NUL byte: not a text table",
                           r->src.path,
                           (long long)(r->lines + 1 +
                                       persiste__count_char(p, nul, '\n')));
}

/* The next chunk into r->chunk (1), the end (0), or an error. */
static int take_chunk(lines *r)
{
    size_t k = atomic_load_explicit(&r->released, memory_order_relaxed);
    if (r->holding) {
        atomic_store_explicit(&r->released, ++k, memory_order_release);
        r->holding = 0;
        if (r->threaded)
            wake(r);
    }
    if (!r->threaded) {
        if (!atomic_load_explicit(&r->ended, memory_order_relaxed))
            produce(r);
    } else if (!has_chunk(r)) {
        mtx_lock(&r->lock);
        while (!has_chunk(r))
            cnd_wait(&r->cv, &r->lock);
        mtx_unlock(&r->lock);
    }
    if (atomic_load_explicit(&r->produced, memory_order_acquire) == k) {
        if (r->status != PERSISTE_OK) /* ordered by `ended` */
            return persiste__error(r->status, "%s", r->msg);
        return 0;
    }
    r->holding = 1;
    r->chunk = r->slot[k % RING];
    r->len = r->slot_len[k % RING];
    r->pos = 0;
    return 1;
}

/* The rest of the text, unread, for the source's own verdict: corrupt
 * gzip data can inflate to lines that fail to parse before zlib finds the
 * damage, and then the damage is what to report. */
int persiste__lines_drain(lines *r)
{
    int rc;
    while ((rc = take_chunk(r)) > 0)
        continue;
    return rc;
}

void persiste__lines_close(lines *r)
{
    if (r->threaded) {
        mtx_lock(&r->lock);
        atomic_store_explicit(&r->stop, 1, memory_order_release);
        cnd_broadcast(&r->cv);
        mtx_unlock(&r->lock);
        persiste__thread_join(&r->thread);
    }
    if (r->sync_ready) {
        cnd_destroy(&r->cv);
        mtx_destroy(&r->lock);
    }
    persiste__source_close(&r->src);
    for (int i = 0; i < RING; i++)
        persiste__free(r->slot[i]);
    persiste__free(r->carry);
}

/* Opens path and takes its first chunk; then, if more may follow, starts
 * the producer (or, failing that, reads on in the caller). */
int persiste__lines_open(lines *r, const char *path)
{
    memset(r, 0, sizeof *r);
    atomic_init(&r->produced, 0);
    atomic_init(&r->released, 0);
    atomic_init(&r->ended, 0);
    atomic_init(&r->stop, 0);
    int rc = persiste__source_open(&r->src, path);
    if (rc != PERSISTE_OK)
        return rc;
    /* The first slot as large as the text when that is known to be
     * smaller (gzip: 8 times the file, then more slots if it inflates
     * further), the others only if more follows: a small file should not
     * cost 4 MB of buffers. */
    size_t first = CHUNK;
    if (r->src.file_size) {
        size_t text = r->src.gz ? 8 * r->src.file_size + 4096
                                : r->src.file_size + 1;
        first = text < first ? text : first;
    }
    r->slot[0] = persiste__malloc(first);
    r->slot_cap[0] = first;
    rc = r->slot[0] ? PERSISTE_OK : persiste__nomem(path);
    if (rc == PERSISTE_OK) {
        rc = take_chunk(r);
        rc = rc > 0 ? check_nul(r, r->chunk, r->len) : rc;
    }
    int more = rc == PERSISTE_OK &&
               !atomic_load_explicit(&r->ended, memory_order_relaxed);
    for (int i = 1; i < RING && more && rc == PERSISTE_OK; i++) {
        r->slot[i] = persiste__malloc(CHUNK);
        r->slot_cap[i] = CHUNK;
        rc = r->slot[i] ? PERSISTE_OK : persiste__nomem(path);
    }
    if (rc == PERSISTE_OK && more) {
        int ok_lock = mtx_init(&r->lock, mtx_plain) == thrd_success;
        int ok_cv = cnd_init(&r->cv) == thrd_success;
        if (ok_lock && ok_cv) {
            r->sync_ready = 1;
            r->threaded = persiste__thread_start(&r->thread, producer_main, r);
        } else if (ok_lock) {
            mtx_destroy(&r->lock);
        } else if (ok_cv) {
            cnd_destroy(&r->cv);
        }
    }
    return rc;
}

/* Append n bytes at p to the carried line. */
static int carry(lines *r, const char *p, size_t n)
{
    int rc = persiste__grow_text(&r->carry, &r->carry_cap,
                                 r->carry_n + n + 1, r->src.path);
    if (rc != PERSISTE_OK)
        return rc;
    memcpy(r->carry + r->carry_n, p, n);
    r->carry_n += n;
    return PERSISTE_OK;
}

/* The next line as [*line, *eol) without its '\n' or CR (writable until
 * the next call): 1, or 0 at the end, or an error. */
int persiste__lines_next(lines *r, char **line, char **eol)
{
    r->carry_n = 0;
    if (r->holding) {
        char *p = r->chunk + r->pos, *end = r->chunk + r->len;
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl) {
            r->pos = (size_t)(nl + 1 - r->chunk);
            *line = p;
            *eol = nl;
            goto found;
        }
        int rc = carry(r, p, (size_t)(end - p));
        if (rc != PERSISTE_OK)
            return rc;
    }
    for (;;) {
        int rc = take_chunk(r);
        if (rc > 0 && check_nul(r, r->chunk, r->len) != PERSISTE_OK)
            return PERSISTE_E_PARSE;
        if (rc < 0)
            return rc;
        if (rc == 0) {
            if (r->carry_n == 0)
                return 0;
            *line = r->carry;
            *eol = r->carry + r->carry_n;
            goto found;
        }
        char *nl = memchr(r->chunk, '\n', r->len);
        size_t n = nl ? (size_t)(nl - r->chunk) : r->len;
        if (nl && r->carry_n == 0) {
            r->pos = n + 1;
            *line = r->chunk;
            *eol = nl;
            goto found;
        }
        rc = carry(r, r->chunk, n);
        if (rc != PERSISTE_OK)
            return rc;
        if (nl) {
            r->pos = n + 1;
            *line = r->carry;
            *eol = r->carry + r->carry_n;
            goto found;
        }
    }
found:
    if (*eol > *line && (*eol)[-1] == '\r')
        (*eol)--;
    r->lines++;
    return 1;
}
