/* Byte sources: a file's bytes as text, inflated when it is gzip (members
 * one after another; zero padding after the last is tolerated, as gzip
 * does), and persiste__read_text, the whole text at once. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "reader.h"

enum { RAW_CHUNK = PERSISTE__RAW_CHUNK };

typedef persiste__source source;

int persiste__nomem(const char *path)
{
    return persiste__error(PERSISTE_E_NOMEM, "%s: out of memory", path);
}

static int io_error(const char *path, const char *what, int err)
{
    char msg[128] = "unknown error";
    strerror_r(err, msg, sizeof msg);
    return persiste__error(PERSISTE_E_IO, "%s: %s: %s", path, what, msg);
}

int64_t persiste__count_char(const char *p, const char *end, char c)
{
    int64_t n = 0;
    while ((p = memchr(p, c, (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    return n;
}

/* Grow *buf to hold at least need bytes (doubling). */
int persiste__grow_text(char **buf, size_t *cap, size_t need,
                        const char *path)
{
    if (need <= *cap)
        return PERSISTE_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need) {
        if (c > SIZE_MAX / 2)
            return persiste__error(PERSISTE_E_OVERFLOW,
                                   "%s: text larger than memory", path);
        c *= 2;
    }
    char *p = persiste__realloc(*buf, c);
    if (!p)
        return persiste__nomem(path);
    *buf = p;
    *cap = c;
    return PERSISTE_OK;
}

static int all_zero(const unsigned char *p, size_t n)
{
    while (n > 0 && *p == 0) {
        p++;
        n--;
    }
    return n == 0;
}
/* The next in_cap bytes of the file into in[]. */
static int refill(source *s)
{
    s->in_pos = 0;
    s->in_len = fread(s->in, 1, s->in_cap, s->fp);
    if (s->in_len < s->in_cap) {
        if (ferror(s->fp))
            return io_error(s->path, "read error", errno);
        s->in_eof = 1;
    }
    return PERSISTE_OK;
}

void persiste__source_close(source *s)
{
    if (s->zs_ready)
        inflateEnd(&s->zs);
    if (s->fp)
        fclose(s->fp);
    persiste__free(s->in);
    memset(s, 0, sizeof *s);
}

int persiste__source_open(source *s, const char *path)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    s->fp = fopen(path, "rb");
    if (!s->fp)
        return io_error(path, "cannot open", errno);
    struct stat st;
    if (fstat(fileno(s->fp), &st) == 0 && S_ISREG(st.st_mode) &&
        (uintmax_t)st.st_size < SIZE_MAX / 8)
        s->file_size = (size_t)st.st_size;
    /* a small file gets a buffer of its size, not 1 MB */
    s->in_cap = s->file_size && s->file_size < RAW_CHUNK ? s->file_size + 1
                                                         : RAW_CHUNK;
    s->in = persiste__malloc(s->in_cap);
    int rc = s->in ? refill(s) : persiste__nomem(path);
    if (rc == PERSISTE_OK && s->in_len >= 2 && s->in[0] == 0x1f &&
        s->in[1] == 0x8b) {
        s->gz = 1;
        if (inflateInit2(&s->zs, 15 + 16) != Z_OK)
            rc = persiste__nomem(path);
        s->zs_ready = rc == PERSISTE_OK;
        s->zs.next_in = s->in;
        s->zs.avail_in = (uInt)s->in_len;
    }
    if (rc != PERSISTE_OK)
        persiste__source_close(s);
    return rc;
}

/* Plain files: the bytes read for the gzip check, then the rest. */
static int read_plain(source *s, char *buf, size_t cap, size_t *got)
{
    size_t n = s->in_len - s->in_pos < cap ? s->in_len - s->in_pos : cap;
    memcpy(buf, s->in + s->in_pos, n);
    s->in_pos += n;
    if (n < cap && !s->in_eof) {
        size_t want = cap - n, r = fread(buf + n, 1, want, s->fp);
        n += r;
        if (r < want) {
            if (ferror(s->fp))
                return io_error(s->path, "read error", errno);
            s->in_eof = 1;
        }
    }
    s->ended = n == 0;
    *got = n;
    return PERSISTE_OK;
}

/* Between gzip members: another member follows, or only zero padding (as
 * gzip tolerates) up to the end of the file. */
static int next_member(source *s)
{
    z_stream *zs = &s->zs;
    while (zs->avail_in == 0 || all_zero(zs->next_in, zs->avail_in)) {
        s->padded |= zs->avail_in > 0;
        if (s->in_eof) {
            s->ended = 1;
            return PERSISTE_OK;
        }
        int rc = refill(s);
        if (rc != PERSISTE_OK)
            return rc;
        zs->next_in = s->in;
        zs->avail_in = (uInt)s->in_len;
    }
    inflateReset(zs);
    s->between = 0;
    if (s->padded) {
        /* Zeros then more data: inflate the zeros as the member they start
         * (the padding of a whole file read at once was such input), so
         * that zlib names the error. */
        static const unsigned char zeros[2];
        zs->next_in = (unsigned char *)zeros;
        zs->avail_in = sizeof zeros;
    }
    return PERSISTE_OK;
}

/* Up to cap inflated bytes into buf (fewer only at the end). */
static int read_gzip(source *s, char *buf, size_t cap, size_t *got)
{
    z_stream *zs = &s->zs;
    size_t n = 0;
    int rc = PERSISTE_OK;
    while (rc == PERSISTE_OK && n < cap && !s->ended) {
        if (s->between) {
            rc = next_member(s);
            continue;
        }
        if (zs->avail_in == 0 && !s->in_eof) {
            rc = refill(s);
            zs->next_in = s->in;
            zs->avail_in = (uInt)s->in_len;
            if (rc != PERSISTE_OK)
                break;
        }
        size_t room = cap - n < UINT_MAX ? cap - n : UINT_MAX;
        zs->next_out = (unsigned char *)buf + n;
        zs->avail_out = (uInt)room;
        int z = inflate(zs, Z_NO_FLUSH);
        n += room - zs->avail_out;
        if (z == Z_STREAM_END)
            s->between = 1;
        else if (z == Z_BUF_ERROR && zs->avail_in == 0 && s->in_eof)
            rc = persiste__error(PERSISTE_E_IO,
                                 "%s: truncated gzip data (after %zu "
                                 "inflated bytes)",
                                 s->path, s->out_total + n);
        else if (z == Z_MEM_ERROR)
            rc = persiste__nomem(s->path);
        else if (z != Z_OK && z != Z_BUF_ERROR)
            rc = persiste__error(PERSISTE_E_IO, "%s: corrupt gzip data: %s",
                                 s->path, zs->msg ? zs->msg : "bad stream");
    }
    *got = n;
    return rc;
}

/* Up to cap bytes of text into buf: fewer only at the end, 0 past it. */
int persiste__source_read(source *s, char *buf, size_t cap, size_t *got)
{
    *got = 0;
    if (s->ended)
        return PERSISTE_OK;
    int rc = s->gz ? read_gzip(s, buf, cap, got)
                   : read_plain(s, buf, cap, got);
    s->out_total += *got;
    return rc;
}

int persiste__read_text(const char *path, char **text, size_t *len)
{
    source s;
    int rc = persiste__source_open(&s, path);
    if (rc != PERSISTE_OK)
        return rc;
    enum { ROOM = 1 << 16 };
    size_t cap = 0, n = 0, got = 1;
    char *buf = NULL;
    rc = persiste__grow_text(&buf, &cap,
                             (s.gz ? 4 : 1) * s.file_size + ROOM + 1, path);
    while (rc == PERSISTE_OK && got > 0) {
        rc = persiste__grow_text(&buf, &cap, n + ROOM + 1, path);
        if (rc == PERSISTE_OK)
            rc = persiste__source_read(&s, buf + n, cap - n - 1, &got);
        n += got;
    }
    persiste__source_close(&s);
    if (rc != PERSISTE_OK) {
        persiste__free(buf);
        return rc;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return PERSISTE_OK;
}
