/* persiste_data_read: presence/absence tables from files (Roary/Panaroo
 * gene_presence_absence.Rtab, generic CSV/TSV 0/1 matrices in either
 * orientation), plain or gzip-compressed.
 *
 * The whole (inflated) text sits in one buffer and is parsed in one pass;
 * names are unquoted and NUL-terminated in place and cells go straight into
 * a byte matrix, so no name or cell costs an allocation. The matrix is then
 * handed to persiste__data_build with strides for its orientation.
 *
 * Semantics:
 *  - the first non-blank line is the header: a corner cell (any text), then
 *    names; the delimiter is tab when the header holds one outside
 *    CSV quotes ("t<TAB>ab" names a genome of a CSV file), else comma;
 *  - after the header, lines whose first byte is '#' are comments (taxon
 *    names such as 19647_8#40 hold '#' inside, never first); blank lines are
 *    skipped;
 *  - cells: 0 and 1; unknown: empty, "?", "-", "NA"; anything else is an
 *    error, copy numbers included (convert them to presence first);
 *  - fields may be CSV-quoted ("a, b", "say ""x""") within one line;
 *    spaces around fields and CRLF line ends are ignored;
 *  - orientation: the side (header names or first column) holding the larger
 *    share of tree tip names holds the taxa (ties: header, as in Roary),
 *    unless PERSISTE_DATA_TAXA_IN_ROWS / _IN_COLUMNS says. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "internal.h"

enum { SHOWN = 48, CELL_SHOWN = 20 };

static int nomem(const char *path)
{
    return persiste__error(PERSISTE_E_NOMEM, "%s: out of memory", path);
}

static int io_error(const char *path, const char *what, int err)
{
    char msg[128] = "unknown error";
    strerror_r(err, msg, sizeof msg);
    return persiste__error(PERSISTE_E_IO, "%s: %s: %s", path, what, msg);
}

/* Grow *buf to hold at least need bytes (doubling). */
static int grow(char **buf, size_t *cap, size_t need, const char *path)
{
    if (need <= *cap)
        return PERSISTE_OK;
    size_t c = *cap;
    while (c < need) {
        if (c > SIZE_MAX / 2)
            return persiste__error(PERSISTE_E_OVERFLOW,
                                   "%s: text larger than memory", path);
        c *= 2;
    }
    char *p = persiste__realloc(*buf, c);
    if (!p)
        return nomem(path);
    *buf = p;
    *cap = c;
    return PERSISTE_OK;
}

/* The file's bytes in *out[*n + 1] (NUL-terminated). */
static int read_file(const char *path, char **out, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return io_error(path, "cannot open", errno);
    struct stat st;
    size_t cap = (size_t)1 << 16, len = 0;
    if (fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode) &&
        (uintmax_t)st.st_size < SIZE_MAX / 2)
        cap += (size_t)st.st_size;
    char *buf = persiste__malloc(cap);
    int rc = buf ? PERSISTE_OK : nomem(path);
    while (rc == PERSISTE_OK) {
        rc = grow(&buf, &cap, len + 2, path);
        if (rc != PERSISTE_OK)
            break;
        size_t want = cap - len - 1, got = fread(buf + len, 1, want, fp);
        len += got;
        if (got < want) {
            if (ferror(fp))
                rc = io_error(path, "read error", errno);
            break;
        }
    }
    fclose(fp);
    if (rc != PERSISTE_OK) {
        persiste__free(buf);
        return rc;
    }
    buf[len] = '\0';
    *out = buf;
    *n = len;
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

/* Inflate gzip data of one or more concatenated members (trailing zero
 * padding tolerated, as by gzip) into *out[*out_n + 1]. */
static int gunzip(const char *path, unsigned char *in, size_t n_in,
                  char **out, size_t *out_n)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 15 + 16) != Z_OK)
        return nomem(path);
    size_t cap = n_in < SIZE_MAX / 8 ? n_in * 4 + 64 : n_in, len = 0;
    size_t in_pos = 0;
    char *buf = persiste__malloc(cap);
    int rc = buf ? PERSISTE_OK : nomem(path);
    while (rc == PERSISTE_OK) {
        if (zs.avail_in == 0 && in_pos < n_in) {
            size_t chunk = n_in - in_pos < UINT_MAX ? n_in - in_pos
                                                    : UINT_MAX;
            zs.next_in = in + in_pos;
            zs.avail_in = (uInt)chunk;
            in_pos += chunk;
        }
        rc = grow(&buf, &cap, len + 2, path);
        if (rc != PERSISTE_OK)
            break;
        size_t room = cap - len - 1 < UINT_MAX ? cap - len - 1 : UINT_MAX;
        zs.next_out = (unsigned char *)buf + len;
        zs.avail_out = (uInt)room;
        int z = inflate(&zs, Z_NO_FLUSH);
        len += room - zs.avail_out;
        int input_done = zs.avail_in == 0 && in_pos == n_in;
        if (z == Z_STREAM_END) {
            if (all_zero(zs.next_in, zs.avail_in) &&
                all_zero(in + in_pos, n_in - in_pos))
                break;
            inflateReset(&zs); /* the next member */
        } else if (z == Z_BUF_ERROR && input_done) {
            rc = persiste__error(PERSISTE_E_IO,
                                 "%s: truncated gzip data (after %zu "
                                 "inflated bytes)",
                                 path, len);
        } else if (z == Z_MEM_ERROR) {
            rc = nomem(path);
        } else if (z != Z_OK && z != Z_BUF_ERROR) {
            rc = persiste__error(PERSISTE_E_IO, "%s: corrupt gzip data: %s",
                                 path, zs.msg ? zs.msg : "bad stream");
        }
    }
    inflateEnd(&zs);
    if (rc != PERSISTE_OK) {
        persiste__free(buf);
        return rc;
    }
    buf[len] = '\0';
    *out = buf;
    *out_n = len;
    return PERSISTE_OK;
}

int persiste__read_text(const char *path, char **text, size_t *len)
{
    char *raw = NULL;
    size_t n = 0;
    int rc = read_file(path, &raw, &n);
    if (rc != PERSISTE_OK)
        return rc;
    if (n >= 2 && (unsigned char)raw[0] == 0x1f &&
        (unsigned char)raw[1] == 0x8b) {
        rc = gunzip(path, (unsigned char *)raw, n, text, len);
        persiste__free(raw);
        return rc;
    }
    *text = raw;
    *len = n;
    return PERSISTE_OK;
}

/* ---- Parsing ----------------------------------------------------------- */

typedef struct {
    const char *path;
    char delim;
    int64_t line; /* 1-based number of the line being parsed */
} parser;

typedef struct {
    char *s;    /* content, trimmed and unquoted; not NUL-terminated */
    size_t n;
    char *next; /* just after the field's delimiter, or eol */
    int last;   /* the field ends the line */
} field;

/* The first bad cell, reported once the orientation names it. */
typedef struct {
    int64_t line, column, row, cell;
    char text[CELL_SHOWN + 1];
    int is_count;
} bad_cell;

static int is_space(const parser *ps, char c)
{
    return c == ' ' || c == '\r' || (c == '\t' && ps->delim != '\t');
}

/* Parse the field starting at p on the line [p, eol); col is its 1-based
 * number for messages. Quoted content is unescaped in place. */
static int next_field(const parser *ps, char *p, char *eol, int64_t col,
                      field *f)
{
    while (p < eol && is_space(ps, *p))
        p++;
    if (p < eol && *p == '"') {
        char *w = ++p;
        f->s = p;
        for (;;) {
            if (p == eol)
                return persiste__error(PERSISTE_E_PARSE,
                                       "%s: line %lld, column %lld: "
                                       "unterminated quote",
                                       ps->path, (long long)ps->line,
                                       (long long)col);
            if (*p == '"' && !(p + 1 < eol && p[1] == '"'))
                break;
            p += *p == '"'; /* "" stands for one quote */
            *w++ = *p++;
        }
        f->n = (size_t)(w - f->s);
        for (p++; p < eol && is_space(ps, *p);)
            p++;
        if (p < eol && *p != ps->delim)
            return persiste__error(PERSISTE_E_PARSE,
                                   "%s: line %lld, column %lld: text after "
                                   "a closing quote",
                                   ps->path, (long long)ps->line,
                                   (long long)col);
    } else {
        f->s = p;
        /* p <= eol always; said so for gcc's -Wstringop-overread (TSan) */
        char *d = p < eol ? memchr(p, ps->delim, (size_t)(eol - p)) : NULL;
        p = d ? d : eol;
        char *e = p;
        while (e > f->s && is_space(ps, e[-1]))
            e--;
        f->n = (size_t)(e - f->s);
    }
    f->last = p == eol;
    f->next = f->last ? eol : p + 1;
    return PERSISTE_OK;
}

/* 0, 1, PERSISTE_UNKNOWN, or -1 for anything else. */
static int cell_value(const char *s, size_t n)
{
    if (n == 0)
        return PERSISTE_UNKNOWN;
    if (n == 1 && (*s == '0' || *s == '1'))
        return *s - '0';
    if ((n == 1 && (*s == '?' || *s == '-')) ||
        (n == 2 && s[0] == 'N' && s[1] == 'A'))
        return PERSISTE_UNKNOWN;
    return -1;
}

static int ragged(const parser *ps, int64_t fields, int64_t expected)
{
    return persiste__error(PERSISTE_E_PARSE,
                           "%s: line %lld: %lld fields, expected %lld",
                           ps->path, (long long)ps->line, (long long)fields,
                           (long long)expected);
}

static int64_t count_char(const char *p, const char *end, char c)
{
    int64_t n = 0;
    while ((p = memchr(p, c, (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    return n;
}

static void note_bad_cell(bad_cell *bad, const parser *ps, const field *f,
                          int64_t row, int64_t cell)
{
    if (bad->line)
        return;
    bad->line = ps->line;
    bad->column = cell + 2;
    bad->row = row;
    bad->cell = cell;
    size_t n = f->n < CELL_SHOWN ? f->n : CELL_SHOWN;
    memcpy(bad->text, f->s, n);
    bad->text[n] = '\0';
    bad->is_count = 1;
    for (size_t i = 0; i < f->n; i++)
        bad->is_count &= f->s[i] >= '0' && f->s[i] <= '9';
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* Four cells "c?c?c?c?" at q, each c a bare 0 or 1 and each ? the delimiter,
 * into out[0..3], eight bytes at once; 0 if the bytes are anything else. */
static int four_cells(const char *q, char delim, uint8_t *out)
{
    uint64_t w;
    memcpy(&w, q, sizeof w);
    const uint64_t odd = 0xFF00FF00FF00FF00ull, even = 0x00FF00FF00FF00FFull;
    if ((w & odd) != ((0x0101010101010101ull * (uint8_t)delim) & odd))
        return 0;
    uint64_t x = (w & even) ^ 0x0030003000300030ull; /* '0' 0, '1' 1 */
    if (x & 0x00FE00FE00FE00FEull)
        return 0;
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(x >> (16 * i));
    return 1;
}
#define HAVE_FOUR_CELLS 1
#endif

/* One data line: its name into *name (NUL-terminated), its n_cells cells
 * into row[]. */
static int parse_row(const parser *ps, char *p, char *eol, int64_t n_cells,
                     uint8_t *row, int64_t row_index, char **name,
                     bad_cell *bad)
{
    field f;
    int rc = next_field(ps, p, eol, 1, &f);
    if (rc != PERSISTE_OK)
        return rc;
    char *name_end = f.s + f.n;
    *name = f.s;
    for (int64_t c = 0; c < n_cells; c++) {
        if (f.last)
            return ragged(ps, c + 1, n_cells + 1);
        char *q = f.next;
#ifdef HAVE_FOUR_CELLS
        /* Fastest path: four bare cells, each followed by a delimiter. */
        if (n_cells - c >= 4 && eol - q >= 8 &&
            four_cells(q, ps->delim, row + c)) {
            f.next = q + 8;
            c += 3;
            continue;
        }
#endif
        /* Fast path: a bare 0 or 1 ends at the delimiter or line end. */
        if (q < eol && (*q == '0' || *q == '1') &&
            (q + 1 == eol || q[1] == ps->delim)) {
            row[c] = (uint8_t)(*q - '0');
            f.last = q + 1 == eol;
            f.next = f.last ? eol : q + 2;
            continue;
        }
        rc = next_field(ps, q, eol, c + 2, &f);
        if (rc != PERSISTE_OK)
            return rc;
        int v = cell_value(f.s, f.n);
        if (v < 0)
            note_bad_cell(bad, ps, &f, row_index, c);
        row[c] = (uint8_t)(v < 0 ? PERSISTE_UNKNOWN : v);
    }
    if (!f.last)
        return ragged(ps, n_cells + 1 + count_char(f.next - 1, eol, ps->delim),
                      n_cells + 1);
    *name_end = '\0'; /* every byte up to eol has been read */
    return PERSISTE_OK;
}

/* The parsed table: names point into the text buffer. */
typedef struct {
    char **col_name;  /* [n_cols]: header names after the corner */
    char **row_name;  /* [n_rows] */
    uint8_t *cells;   /* [n_rows * n_cols] */
    int64_t n_cols, n_rows;
    bad_cell bad;
} table;

static void table_free(table *t)
{
    persiste__free(t->col_name);
    persiste__free(t->row_name);
    persiste__free(t->cells);
}

/* End of the line starting at p (its '\n' or end), CR excluded. */
static char *line_end(char *p, char *end, char **next_line)
{
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *eol = nl ? nl : end;
    *next_line = nl ? nl + 1 : end;
    if (eol > p && eol[-1] == '\r')
        eol--;
    return eol;
}

static int is_blank_line(const parser *ps, const char *p, const char *eol)
{
    while (p < eol && is_space(ps, *p))
        p++;
    return p == eol;
}

/* Tab if the header line holds one outside quoted fields, else comma. */
static char header_delim(const char *p, const char *eol)
{
    int quoted = 0;
    for (const char *q = p; q < eol; q++) {
        if (quoted) {
            if (*q == '"' && q + 1 < eol && q[1] == '"')
                q++; /* an escaped quote */
            else if (*q == '"')
                quoted = 0;
        } else if (*q == '\t') {
            return '\t';
        } else if (*q == '"' && (q == p || q[-1] == ',' || q[-1] == ' ')) {
            quoted = 1; /* a quote opens a field only at its start */
        }
    }
    return ',';
}

static int parse_header(table *t, parser *ps, char *p, char *eol)
{
    ps->delim = header_delim(p, eol);
    int64_t max_cols = count_char(p, eol, ps->delim);
    if (max_cols == 0)
        return persiste__error(PERSISTE_E_PARSE,
                               "%s: line %lld: the header has no names after "
                               "its first cell (expected tab- or "
                               "comma-separated names)",
                               ps->path, (long long)ps->line);
    t->col_name = persiste__calloc((size_t)max_cols, sizeof(char *));
    if (!t->col_name)
        return nomem(ps->path);
    field f;
    int rc = next_field(ps, p, eol, 1, &f); /* the corner label */
    for (int64_t c = 0; rc == PERSISTE_OK && !f.last; c++) {
        rc = next_field(ps, f.next, eol, c + 2, &f);
        if (rc == PERSISTE_OK && f.n == 0)
            rc = persiste__error(PERSISTE_E_PARSE,
                                 "%s: line %lld, column %lld: empty name "
                                 "in the header",
                                 ps->path, (long long)ps->line,
                                 (long long)c + 2);
        if (rc == PERSISTE_OK) {
            t->col_name[c] = f.s;
            f.s[f.n] = '\0'; /* at or before the delimiter just passed */
            t->n_cols = c + 1;
        }
    }
    return rc;
}

static int parse_table(table *t, parser *ps, char *text, size_t n)
{
    char *p = text, *end = text + n, *next, *eol;
    const char *nul = memchr(text, '\0', n);
    if (nul)
        return persiste__error(PERSISTE_E_PARSE,
                               "%s: line %lld: NUL byte: not a text table",
                               ps->path,
                               (long long)count_char(text, nul, '\n') + 1);
    ps->delim = '\t';
    for (ps->line = 1;; ps->line++, p = next) {
        if (p == end)
            return persiste__error(PERSISTE_E_PARSE, "%s: empty file",
                                   ps->path);
        eol = line_end(p, end, &next);
        if (!is_blank_line(ps, p, eol))
            break;
    }
    int rc = parse_header(t, ps, p, eol);
    if (rc != PERSISTE_OK)
        return rc;

    int64_t max_rows = count_char(next, end, '\n') + 1;
    size_t n_cells;
    rc = persiste__mul_size((size_t)max_rows, (size_t)t->n_cols, &n_cells);
    if (rc != PERSISTE_OK)
        return rc;
    t->row_name = persiste__calloc((size_t)max_rows, sizeof(char *));
    t->cells = persiste__malloc(n_cells);
    if (!t->row_name || !t->cells)
        return nomem(ps->path);
    for (p = next; p < end; p = next) {
        ps->line++;
        eol = line_end(p, end, &next);
        if (*p == '#' || is_blank_line(ps, p, eol))
            continue;
        rc = parse_row(ps, p, eol, t->n_cols, t->cells + t->n_rows * t->n_cols,
                       t->n_rows, &t->row_name[t->n_rows], &t->bad);
        if (rc != PERSISTE_OK)
            return rc;
        t->n_rows++;
    }
    if (t->n_rows == 0)
        return persiste__error(PERSISTE_E_PARSE,
                               "%s: no data rows after the header", ps->path);
    return PERSISTE_OK;
}

static int64_t count_tips(const persiste_tree *tree, char *const *names,
                          int64_t n)
{
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        k += persiste__tree_find_tip(tree, names[i], strlen(names[i])) >= 0;
    return k;
}

/* Whether the rows (1) or the header (0) name the taxa, or an error. */
static int taxa_in_rows(const table *t, const persiste_tree *tree,
                        uint32_t flags, const char *path)
{
    if (flags & PERSISTE_DATA_TAXA_IN_ROWS)
        return 1;
    if (flags & PERSISTE_DATA_TAXA_IN_COLUMNS)
        return 0;
    int64_t in_header = count_tips(tree, t->col_name, t->n_cols);
    int64_t in_rows = count_tips(tree, t->row_name, t->n_rows);
    if (in_header == 0 && in_rows == 0)
        return persiste__error(PERSISTE_E_NAMES,
                               "%s: neither the header (%.*s, ...) nor the "
                               "first column (%.*s, ...) names tips of the "
                               "tree (%.*s, ...): are they for the same "
                               "genomes?",
                               path, SHOWN, t->col_name[0], SHOWN,
                               t->row_name[0], SHOWN, tree->label[0]);
    /* Compare the shares in_rows / n_rows and in_header / n_cols. */
    return (double)in_rows * (double)t->n_cols >
           (double)in_header * (double)t->n_rows;
}

static int report_bad_cell(const table *t, int rows_are_taxa,
                           const char *path)
{
    const bad_cell *b = &t->bad;
    const char *row = t->row_name[b->row], *col = t->col_name[b->cell];
    return persiste__error(
        PERSISTE_E_PARSE,
        "%s: line %lld, column %lld (genome %.*s, family %.*s): '%s' is not "
        "0/1 or unknown (?, -, NA, empty)%s",
        path, (long long)b->line, (long long)b->column, SHOWN,
        rows_are_taxa ? row : col, SHOWN, rows_are_taxa ? col : row, b->text,
        b->is_count ? "; copy numbers are not read: convert them to "
                      "presence (1 where the count is above 0)"
                    : "");
}

int persiste_data_read(persiste_data **out, const persiste_tree *tree,
                       const char *path, uint32_t flags)
{
    const char *null = !out ? "out" : !tree ? "tree" : !path ? "path" : NULL;
    if (null)
        return persiste__error(PERSISTE_E_INVALID, "data read: %s is NULL",
                               null);
    if ((flags & PERSISTE_DATA_TAXA_IN_ROWS) &&
        (flags & PERSISTE_DATA_TAXA_IN_COLUMNS))
        return persiste__error(PERSISTE_E_INVALID,
                               "%s: PERSISTE_DATA_TAXA_IN_ROWS and "
                               "_IN_COLUMNS are exclusive",
                               path);
    char *text = NULL;
    size_t n = 0;
    int rc = persiste__read_text(path, &text, &n);
    if (rc != PERSISTE_OK)
        return rc;

    parser ps = {path, '\t', 0};
    table t;
    memset(&t, 0, sizeof t);
    rc = parse_table(&t, &ps, text, n);
    int rows = 0;
    if (rc == PERSISTE_OK) {
        rows = taxa_in_rows(&t, tree, flags, path);
        rc = rows < 0 ? rows : PERSISTE_OK;
    }
    if (rc == PERSISTE_OK && t.bad.line)
        rc = report_bad_cell(&t, rows, path);
    if (rc == PERSISTE_OK) {
        const int64_t nr = t.n_rows, nc = t.n_cols;
        const char *const *rn = (const char *const *)t.row_name;
        const char *const *cn = (const char *const *)t.col_name;
        rc = rows ? persiste__data_build(out, tree, t.cells, nc, nr, 1, nc,
                                         rn, cn, flags, path)
                  : persiste__data_build(out, tree, t.cells, nr, nc, nc, 1,
                                         cn, rn, flags, path);
    }
    table_free(&t);
    persiste__free(text);
    return rc;
}
