/* persiste_data_read: presence/absence tables from files (Roary/Panaroo
 * gene_presence_absence.Rtab, generic CSV/TSV 0/1 matrices in either
 * orientation), plain or gzip-compressed.
 *
 * The text comes line by line (lib/parse/lines.c, inflated by a thread of its
 * own) and is parsed in one pass; names are copied into one buffer, and
 * each row's cells are packed into bits as soon as it is parsed (while the
 * next chunk inflates), so no name or cell costs an allocation and no byte
 * matrix is kept. When the header likely names the taxa (the usual Roary
 * layout: a family per row), each row is also checked for presence in the
 * tree's taxa and hashed to find repeated families, and every 64 kept rows
 * and every 64 distinct ones are transposed as they come into the data's
 * own layout (words of 64 families per tip; persiste__repeats), so that
 * nearly nothing is left to do once the text ends; otherwise, or if the
 * guess was wrong, persiste__data_build transposes the bits for the
 * orientation found and searches the repeats.
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
#include <string.h>

#if defined(__SSE2__) && !defined(PERSISTE_PORTABLE)
#include <emmintrin.h>
#endif

#include "reader.h"

enum { SHOWN = 48, CELL_SHOWN = 20 };

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

#if defined(__SSE2__) && !defined(PERSISTE_PORTABLE)
/* Sixteen cells "c?c?...c?" at q (32 bytes), each c a bare 0 or 1 and each
 * ? the delimiter, into out[0..15]; 0 if the bytes are anything else. */
static int sixteen_cells(const char *q, char delim, uint8_t *out)
{
    const __m128i pattern = _mm_set1_epi16((short)((unsigned char)delim << 8 | '0'));
    const __m128i allowed = _mm_set1_epi16(0x0001); /* '0' ^ '1' */
    __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)q), pattern);
    __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(q + 16)),
                              pattern);
    __m128i bad = _mm_or_si128(_mm_andnot_si128(allowed, a),
                               _mm_andnot_si128(allowed, b));
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(bad, _mm_setzero_si128())) !=
        0xFFFF)
        return 0;
    _mm_storeu_si128((__m128i *)out, _mm_packus_epi16(a, b));
    return 1;
}
#define CELL_RUN 16
#define cell_run sixteen_cells
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
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
#define CELL_RUN 4
#define cell_run four_cells
#endif

/* One data line: its name as (*name, *name_n), its n_cells cells into
 * row[]. */
static int parse_row(const parser *ps, char *p, char *eol, int64_t n_cells,
                     uint8_t *row, int64_t row_index, const char **name,
                     size_t *name_n, bad_cell *bad)
{
    field f;
    int rc = next_field(ps, p, eol, 1, &f);
    if (rc != PERSISTE_OK)
        return rc;
    *name = f.s;
    *name_n = f.n;
    for (int64_t c = 0; c < n_cells; c++) {
        if (f.last)
            return ragged(ps, c + 1, n_cells + 1);
        char *q = f.next;
#ifdef CELL_RUN
        /* Fastest path: runs of bare cells, each followed by a delimiter. */
        if (n_cells - c >= CELL_RUN && eol - q >= 2 * CELL_RUN &&
            cell_run(q, ps->delim, row + c)) {
            while (n_cells - c >= 2 * CELL_RUN &&
                   eol - q >= 4 * CELL_RUN &&
                   cell_run(q + 2 * CELL_RUN, ps->delim, row + c + CELL_RUN)) {
                q += 2 * CELL_RUN;
                c += CELL_RUN;
            }
            f.next = q + 2 * CELL_RUN;
            c += CELL_RUN - 1;
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
        return ragged(ps,
                      n_cells + 1 +
                          persiste__count_char(f.next - 1, eol, ps->delim),
                      n_cells + 1);
    return PERSISTE_OK;
}

/* The parsed table. Names are copied into one buffer as they come (the
 * text they were in is reused): offsets while parsing, then pointers. */
typedef struct {
    char *names;       /* NUL-terminated names, back to back */
    size_t names_n, names_cap;
    size_t *col_at;    /* [n_cols]: header names after the corner */
    size_t *row_at;    /* [rows_cap] */
    char **col_name;   /* [n_cols], set once the names stop moving */
    char **row_name;   /* [n_rows] */
    uint8_t *row;      /* [n_cols]: the row being parsed */
    /* The cells as bits (persiste__cells), packed as each row is parsed:
     * row r's words at bits[r * 2 * row_words] (present, then unknown). */
    uint64_t *bits;
    int64_t n_cols, row_words, n_rows, rows_cap;
    /* When the header likely names the taxa (the rows are families), the
     * data's bits and patterns, made as the rows come. */
    int families_in_rows;
    persiste__repeats repeats;
    bad_cell bad;
} table;

static void table_free(table *t)
{
    persiste__free(t->names);
    persiste__free(t->col_at);
    persiste__free(t->row_at);
    persiste__free(t->col_name);
    persiste__free(t->row_name);
    persiste__free(t->row);
    persiste__free(t->bits);
    persiste__repeats_free(&t->repeats);
}

/* Copy a name to the table's buffer; its offset in *at. */
static int add_name(table *t, const char *s, size_t n, size_t *at,
                    const char *path)
{
    int rc = persiste__grow_text(&t->names, &t->names_cap,
                                 t->names_n + n + 1, path);
    if (rc != PERSISTE_OK)
        return rc;
    memcpy(t->names + t->names_n, s, n);
    t->names[t->names_n + n] = '\0';
    *at = t->names_n;
    t->names_n += n + 1;
    return PERSISTE_OK;
}

/* Pointers to the names once they are all in, and an empty one after
 * them (messages show the first name, and a header may have none). */
static int name_pointers(char ***out, const char *names, const size_t *at,
                         int64_t n, const char *path)
{
    static char empty[1];
    char **p = persiste__malloc(((size_t)n + 1) * sizeof *p);
    if (!p)
        return persiste__nomem(path);
    for (int64_t i = 0; i < n; i++)
        p[i] = (char *)names + at[i];
    p[n] = empty;
    *out = p;
    return PERSISTE_OK;
}

/* Room for one more row (capacity doubling; a plain file's size gives the
 * first guess). */
static int room_for_row(table *t, size_t hint, const char *path)
{
    if (t->n_rows < t->rows_cap)
        return PERSISTE_OK;
    int64_t cap = t->rows_cap ? t->rows_cap * 2 : (int64_t)hint + 16;
    size_t words, cells, offsets;
    if (persiste__mul_size((size_t)cap, 2 * (size_t)t->row_words, &words) ||
        persiste__mul_size(words, sizeof *t->bits, &cells) ||
        persiste__mul_size((size_t)cap, sizeof *t->row_at, &offsets))
        return persiste__error(PERSISTE_E_OVERFLOW,
                               "%s: table larger than memory", path);
    uint64_t *c = persiste__realloc(t->bits, cells);
    if (c)
        t->bits = c;
    size_t *r = c ? persiste__realloc(t->row_at, offsets) : NULL;
    if (r)
        t->row_at = r;
    if (!c || !r)
        return persiste__nomem(path);
    t->rows_cap = cap;
    return t->families_in_rows
               ? persiste__repeats_reserve(&t->repeats, cap, path)
               : PERSISTE_OK;
}

/* The parsed row's cells into bits; families in rows, into the data's
 * too. */
static int pack_row(table *t, const char *path)
{
    uint64_t *bits = t->bits + t->n_rows * 2 * t->row_words;
    persiste__pack_row(t->row, t->n_cols, bits, bits + t->row_words);
    t->n_rows++;
    return t->families_in_rows
               ? persiste__repeats_add(&t->repeats, t->bits, path)
               : PERSISTE_OK;
}

/* Whether the header likely names the taxa: as flagged, or when at least
 * half its names are tips; the tip of each column in tip[n_cols] (-1 if
 * none). Only a guess (taxa_in_rows decides once the rows' names are in):
 * the rows of bits serve either orientation. */
static int header_names_taxa(const table *t, const persiste_tree *tree,
                             uint32_t flags, int32_t *tip)
{
    int64_t tips = 0;
    for (int64_t c = 0; c < t->n_cols; c++) {
        const char *name = t->names + t->col_at[c];
        tip[c] = persiste__tree_find_tip(tree, name, strlen(name));
        tips += tip[c] >= 0;
    }
    if (flags & (PERSISTE_DATA_TAXA_IN_ROWS | PERSISTE_DATA_TAXA_IN_COLUMNS))
        return (flags & PERSISTE_DATA_TAXA_IN_COLUMNS) != 0;
    return 2 * tips >= t->n_cols;
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
    int64_t max_cols = persiste__count_char(p, eol, ps->delim);
    if (max_cols == 0)
        return persiste__error(PERSISTE_E_PARSE,
                               "%s: line %lld: the header has no names after "
                               "its first cell (expected tab- or "
                               "comma-separated names)",
                               ps->path, (long long)ps->line);
    t->col_at = persiste__calloc((size_t)max_cols, sizeof *t->col_at);
    t->row = persiste__malloc((size_t)max_cols);
    if (!t->col_at || !t->row)
        return persiste__nomem(ps->path);
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
        if (rc == PERSISTE_OK)
            rc = add_name(t, f.s, f.n, &t->col_at[c], ps->path);
        if (rc == PERSISTE_OK)
            t->n_cols = c + 1;
    }
    return rc;
}

static int parse_table(table *t, parser *ps, persiste__lines *r,
                       const persiste_tree *tree, uint32_t flags)
{
    char *p, *eol;
    int rc;
    ps->delim = '\t';
    for (ps->line = 1;; ps->line++) {
        rc = persiste__lines_next(r, &p, &eol);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return persiste__error(PERSISTE_E_PARSE, "%s: empty file",
                                   ps->path);
        if (!is_blank_line(ps, p, eol))
            break;
    }
    rc = parse_header(t, ps, p, eol);
    if (rc != PERSISTE_OK)
        return rc;
    t->row_words = (t->n_cols + 63) / 64;
    int32_t *tip = persiste__malloc((size_t)t->n_cols * sizeof *tip);
    if (!tip)
        return persiste__nomem(ps->path);
    t->families_in_rows = header_names_taxa(t, tree, flags, tip);
    if (t->families_in_rows)
        rc = persiste__repeats_init(
            &t->repeats, t->n_cols, tip, tree->n_tips,
            (flags & PERSISTE_DATA_DROP_ABSENT_FAMILIES) != 0, ps->path);
    persiste__free(tip);
    if (rc != PERSISTE_OK)
        return rc;
    /* Rows of a plain file are about as long as its header (a guess kept
     * below twice the file's size in cells and offsets). */
    size_t hint = r->src.gz ? 0 : r->src.file_size / (size_t)(eol - p + 1);
    size_t most = r->src.file_size / ((size_t)t->n_cols + 8) * 2;
    hint = hint < most ? hint : most;
    while ((rc = persiste__lines_next(r, &p, &eol)) > 0) {
        ps->line++;
        if ((p < eol && *p == '#') || is_blank_line(ps, p, eol))
            continue;
        rc = room_for_row(t, hint, ps->path);
        const char *name;
        size_t name_n;
        if (rc == PERSISTE_OK)
            rc = parse_row(ps, p, eol, t->n_cols, t->row, t->n_rows, &name,
                           &name_n, &t->bad);
        if (rc == PERSISTE_OK)
            rc = add_name(t, name, name_n, &t->row_at[t->n_rows], ps->path);
        if (rc == PERSISTE_OK)
            rc = pack_row(t, ps->path);
        if (rc != PERSISTE_OK)
            return rc;
    }
    if (rc < 0)
        return rc;
    if (t->n_rows == 0)
        return persiste__error(PERSISTE_E_PARSE,
                               "%s: no data rows after the header", ps->path);
    if (t->families_in_rows)
        persiste__repeats_end(&t->repeats, t->bits);
    rc = name_pointers(&t->col_name, t->names, t->col_at, t->n_cols,
                       ps->path);
    if (rc == PERSISTE_OK)
        rc = name_pointers(&t->row_name, t->names, t->row_at, t->n_rows,
                           ps->path);
    return rc;
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
    persiste__lines r;
    int rc = persiste__lines_open(&r, path);
    parser ps = {path, '\t', 0};
    table t;
    memset(&t, 0, sizeof t);
    if (rc == PERSISTE_OK)
        rc = parse_table(&t, &ps, &r, tree, flags);
    if (rc == PERSISTE_E_PARSE && r.src.gz) {
        int z = persiste__lines_drain(&r);
        rc = z < 0 ? z : rc;
    }
    persiste__lines_close(&r);
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
        /* the data made as the rows came, unless the guess was wrong */
        const int64_t nw = t.row_words;
        const persiste__cells cells = {
            .bits = t.bits, .rows_are_taxa = rows, .row_stride = 2 * nw,
            .word_stride = 1, .unknown_at = nw,
            .repeats = t.families_in_rows && !rows ? &t.repeats : NULL};
        rc = rows ? persiste__data_build(out, tree, &cells, nc, nr, rn, cn,
                                         flags, path)
                  : persiste__data_build(out, tree, &cells, nr, nc, cn, rn,
                                         flags, path);
    }
    table_free(&t);
    return rc;
}
