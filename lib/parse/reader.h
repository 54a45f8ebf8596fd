/* Private to lib/parse/source.c, lib/parse/lines.c and lib/parse/table.c: text files read as
 * a stream of bytes (plain or gzip) and as lines. */
#ifndef PERSISTE_READER_H
#define PERSISTE_READER_H

#include <stdatomic.h>
#include <stdio.h>
#include <zlib.h>

#include "internal.h"

/* PERSISTE_E_NOMEM with "path: out of memory". */
int persiste__nomem(const char *path);
/* How many bytes c lie in [p, end). */
int64_t persiste__count_char(const char *p, const char *end, char c);
/* Grows *buf (doubling) to hold at least need bytes. */
int persiste__grow_text(char **buf, size_t *cap, size_t need,
                        const char *path);

/* ---- Sources (lib/parse/source.c): a file's bytes, inflated when it is gzip -- */

/* 1 MB reads of the file (of its compressed bytes for gzip). */
enum { PERSISTE__RAW_CHUNK = 1 << 20 };

typedef struct {
    const char *path;
    FILE *fp;
    size_t file_size;   /* 0 if unknown */
    unsigned char *in;  /* [in_cap]: bytes read, not yet passed on */
    size_t in_cap;      /* RAW_CHUNK, or less for a smaller file */
    size_t in_pos, in_len;
    int in_eof;         /* the file has no more bytes */
    int gz;             /* inflating (the file starts with 1f 8b) */
    int zs_ready;       /* zs initialised */
    z_stream zs;
    int between;        /* gz: a member ended, the next one not started */
    int padded;         /* gz: zero bytes after a member were skipped */
    int ended;          /* no more output */
    size_t out_total;   /* bytes passed on so far */
} persiste__source;

int persiste__source_open(persiste__source *s, const char *path);
/* Up to cap bytes of text into buf: fewer only at the end, 0 past it. */
int persiste__source_read(persiste__source *s, char *buf, size_t cap,
                          size_t *got);
void persiste__source_close(persiste__source *s);

/* ---- Lines (lib/parse/lines.c): the text in chunks, inflated by a thread ----- */

/* Chunks of 1 MB: each hand-over wakes the parser, and gzip input, whose
 * inflating sets the pace, was read 3.5% faster than with 256 kB. */
enum { PERSISTE__CHUNK = 1 << 20, PERSISTE__RING = 4 };

typedef struct {
    persiste__source src;
    char *slot[PERSISTE__RING];
    size_t slot_cap[PERSISTE__RING], slot_len[PERSISTE__RING];
    atomic_size_t produced, released; /* chunks, counted from 0 */
    atomic_int ended, stop;           /* producer done / asked to stop */
    int status;                       /* producer's error, written before */
    char msg[512];                    /*   `ended` is set */
    mtx_t lock;
    cnd_t cv;                         /* either counter moved, or a flag */
    int sync_ready, threaded;
    persiste__thread thread;
    /* The caller's side. */
    int holding;                      /* slot released % RING is in use */
    char *chunk;
    size_t pos, len;
    char *carry;                      /* a line cut by chunks' ends */
    size_t carry_n, carry_cap;
    int64_t lines;                    /* lines returned so far */
} persiste__lines;

/* Opens path and takes its first chunk; then, if more may follow, starts
 * the producer (or, failing that, reads on in the caller). Close r even
 * when this fails. */
int persiste__lines_open(persiste__lines *r, const char *path);
/* The next line as [*line, *eol) without its '\n' or CR (writable until
 * the next call): 1, or 0 at the end, or an error. */
int persiste__lines_next(persiste__lines *r, char **line, char **eol);
/* Reads the rest of the text, unused: its error, if any. */
int persiste__lines_drain(persiste__lines *r);
void persiste__lines_close(persiste__lines *r);

#endif
