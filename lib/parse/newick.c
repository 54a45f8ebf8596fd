/* Newick reader: one rooted tree per text, as IQ-TREE, RAxML-NG, FastTree,
 * Count and pangenome pipelines write it.
 *
 * Accepted: 'quoted' labels with '' escapes; unquoted labels running up to
 * ( ) , : ; [ or a blank (kept verbatim: underscores stay underscores);
 * internal labels and support values; [comments] between tokens; blanks and
 * newlines between tokens; multifurcations and unary nodes; a UTF-8 BOM.
 * Every branch needs a length except the root's, which is optional (absent
 * means 0) and, being unused, may be negative. NaN, infinite or negative
 * lengths are PERSISTE_E_DOMAIN, syntax errors PERSISTE_E_PARSE with the
 * 1-based line and column (in bytes) of the offending character. Files
 * are read whole by persiste__read_text, so they may be gzip-compressed.
 *
 * An explicit stack replaces recursion (caterpillars nest 100,000 deep).
 * Nodes are numbered in order of appearance, so persiste__tree_build numbers
 * the tips left to right and keeps children in text order. */
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

typedef struct {
    const char *s; /* text, NUL-terminated at s[n] */
    size_t n, pos;
    const char *what; /* "newick" or "newick: <path>" */
    int32_t n_nodes, cap;
    int32_t *parent;
    double *length;
    char **label;
    int32_t *open; /* nodes whose '(' is not yet closed */
    int32_t depth, open_cap;
} parser;

__attribute__((format(printf, 4, 5))) static int
fail(const parser *p, size_t at, int code, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Locating the error costs a scan, paid only on failure. */
    long line = 1;
    size_t bol = 0;
    for (size_t i = 0; i < at && i < p->n; i++)
        if (p->s[i] == '\n') {
            line++;
            bol = i + 1;
        }
    return persiste__error(code, "%s: line %ld, column %zu: %s", p->what,
                           line, at - bol + 1, msg);
}

/* The character at `at` as a message shows it. */
static const char *found(const parser *p, size_t at, char buf[16])
{
    if (at >= p->n)
        return "end of input";
    unsigned char c = (unsigned char)p->s[at];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02x", c);
    return buf;
}

static const char *node_name(const parser *p, int32_t v, char buf[80])
{
    if (!p->label[v])
        return "an unlabelled internal node";
    snprintf(buf, 80, "node '%.64s'", p->label[v]);
    return buf;
}

static int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

/* Ends an unquoted label or a number. Control bytes end it too, so binary
 * garbage is reported where it stands instead of becoming part of a name. */
static int ends_word(unsigned char c)
{
    return c < 0x20 || c == 0x7f || c == ' ' || c == '(' || c == ')' ||
           c == ',' || c == ':' || c == ';' || c == '[';
}

static int peek(const parser *p)
{
    return p->pos < p->n ? (unsigned char)p->s[p->pos] : -1;
}

/* Skips blanks and [comments], which may stand between any two tokens. */
static int skip_blank(parser *p)
{
    for (;;) {
        while (p->pos < p->n && is_blank((unsigned char)p->s[p->pos]))
            p->pos++;
        if (peek(p) != '[')
            return PERSISTE_OK;
        const char *end = memchr(p->s + p->pos, ']', p->n - p->pos);
        if (!end)
            return fail(p, p->pos, PERSISTE_E_PARSE,
                        "unterminated comment: '[' without ']'");
        p->pos = (size_t)(end - p->s) + 1;
    }
}

/* Reads a quoted or unquoted label at pos; *out is NULL when it is empty. */
static int read_label(parser *p, char **out)
{
    size_t start = p->pos;
    *out = NULL;
    if (peek(p) != '\'') {
        while (p->pos < p->n && !ends_word((unsigned char)p->s[p->pos]))
            p->pos++;
        if (p->pos > start &&
            !(*out = persiste__strndup(p->s + start, p->pos - start)))
            return persiste__error(PERSISTE_E_NOMEM, "%s: label", p->what);
        return PERSISTE_OK;
    }
    /* Quoted: '' stands for one quote; the label ends at a lone quote. */
    size_t len = 0, i = start + 1;
    for (;; i++) {
        if (i >= p->n)
            return fail(p, start, PERSISTE_E_PARSE,
                        "unterminated quoted label: no closing quote");
        if (p->s[i] == '\0')
            return fail(p, i, PERSISTE_E_PARSE, "NUL byte in quoted label");
        if (p->s[i] == '\'') {
            if (i + 1 < p->n && p->s[i + 1] == '\'')
                i++;
            else
                break;
        }
        len++;
    }
    p->pos = i + 1;
    if (len == 0)
        return PERSISTE_OK;
    char *d = persiste__malloc(len + 1);
    if (!d)
        return persiste__error(PERSISTE_E_NOMEM, "%s: label", p->what);
    for (size_t j = start + 1, k = 0; k < len; j++) {
        d[k++] = p->s[j];
        if (p->s[j] == '\'')
            j++;
    }
    d[len] = '\0';
    *out = d;
    return PERSISTE_OK;
}

/* Decimal grammar: [+-] digits [. digits] [e [+-] digits], with at least
 * one mantissa digit. Checked before strtod, which would also take hex,
 * "nan(...)" and "infinity". */
static int is_decimal(const char *s, size_t n)
{
    size_t i = 0, digits = 0, exp = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        i++;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        digits++;
    if (i < n && s[i] == '.')
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
    if (digits == 0)
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            exp++;
        if (exp == 0)
            return 0;
    }
    return i == n;
}

static int is_nonfinite_word(const char *s, size_t n)
{
    if (n > 0 && (s[0] == '+' || s[0] == '-')) {
        s++;
        n--;
    }
    static const char *const words[] = {"nan", "inf", "infinity"};
    for (size_t w = 0; w < sizeof words / sizeof *words; w++)
        if (strlen(words[w]) == n && strncasecmp(s, words[w], n) == 0)
            return 1;
    return 0;
}

/* Reads the number after ':' into the length of node v. */
static int read_length(parser *p, int32_t v)
{
    char c[16], name[80];
    int rc = skip_blank(p);
    if (rc != PERSISTE_OK)
        return rc;
    size_t start = p->pos;
    while (p->pos < p->n && !ends_word((unsigned char)p->s[p->pos]))
        p->pos++;
    const char *tok = p->s + start;
    size_t len = p->pos - start;
    int shown = len > 40 ? 40 : (int)len;
    if (len == 0)
        return fail(p, start, PERSISTE_E_PARSE,
                    "expected a branch length after ':' but found %s",
                    found(p, start, c));
    if (!is_decimal(tok, len)) {
        if (is_nonfinite_word(tok, len))
            return fail(p, start, PERSISTE_E_DOMAIN,
                        "%s has a branch length that is not a finite "
                        "number: '%.*s'", node_name(p, v, name), shown, tok);
        return fail(p, start, PERSISTE_E_PARSE,
                    "bad branch length '%.*s' for %s", shown, tok,
                    node_name(p, v, name));
    }
    /* The token ends at a delimiter or the final NUL, where strtod stops;
     * stopping earlier would mean a locale without '.' slipped through. */
    char *end;
    double x = strtod(tok, &end);
    if (end != tok + len)
        return fail(p, start, PERSISTE_E_PARSE,
                    "branch length '%.*s' of %s unreadable in this locale",
                    shown, tok, node_name(p, v, name));
    if (!isfinite(x))
        return fail(p, start, PERSISTE_E_DOMAIN,
                    "%s has a branch length too large for a double: '%.*s'",
                    node_name(p, v, name), shown, tok);
    if (x < 0 && p->parent[v] >= 0)
        return fail(p, start, PERSISTE_E_DOMAIN,
                    "%s has a negative branch length: '%.*s'",
                    node_name(p, v, name), shown, tok);
    p->length[v] = x;
    return PERSISTE_OK;
}

static int grow(void **a, int32_t cap, size_t elem)
{
    void *b = persiste__realloc(*a, (size_t)cap * elem);
    if (!b)
        return PERSISTE_E_NOMEM;
    *a = b;
    return PERSISTE_OK;
}

/* Next capacity for a growing array of int32-indexed items. */
static int32_t next_cap(int32_t cap)
{
    return cap < 64 ? 64 : cap > INT32_MAX / 2 ? INT32_MAX : cap * 2;
}

/* A new node below the innermost open '(' (or the root when none is). */
static int new_node(parser *p, int32_t *v)
{
    if (p->n_nodes == p->cap) {
        if (p->cap == INT32_MAX)
            return fail(p, p->pos, PERSISTE_E_OVERFLOW, "too many nodes");
        int32_t cap = next_cap(p->cap);
        if (grow((void **)&p->parent, cap, sizeof *p->parent) ||
            grow((void **)&p->length, cap, sizeof *p->length) ||
            grow((void **)&p->label, cap, sizeof *p->label))
            return persiste__error(PERSISTE_E_NOMEM, "%s: %d nodes", p->what,
                                   cap);
        p->cap = cap;
    }
    *v = p->n_nodes++;
    p->parent[*v] = p->depth > 0 ? p->open[p->depth - 1] : -1;
    p->length[*v] = 0;
    p->label[*v] = NULL;
    return PERSISTE_OK;
}

static int open_node(parser *p)
{
    int32_t v;
    int rc = new_node(p, &v);
    if (rc != PERSISTE_OK)
        return rc;
    if (p->depth == p->open_cap) {
        int32_t cap = next_cap(p->open_cap);
        if (grow((void **)&p->open, cap, sizeof *p->open))
            return persiste__error(PERSISTE_E_NOMEM, "%s: nesting", p->what);
        p->open_cap = cap;
    }
    p->open[p->depth++] = v;
    p->pos++;
    return PERSISTE_OK;
}

/* After node v's label: its optional length, then what may follow it.
 * Returns the next character (consumed unless it is end of input). */
static int end_node(parser *p, int32_t v, int *next)
{
    char c[16], name[80];
    int has_length = 0, rc = skip_blank(p);
    if (rc == PERSISTE_OK && peek(p) == ':') {
        p->pos++;
        has_length = 1;
        if ((rc = read_length(p, v)) == PERSISTE_OK)
            rc = skip_blank(p);
    }
    if (rc != PERSISTE_OK)
        return rc;
    int ch = peek(p);
    if (p->depth == 0) { /* v is the root */
        if (ch != ';')
            return fail(p, p->pos, PERSISTE_E_PARSE,
                        "expected %s after the tree but found %s%s",
                        has_length ? "';'" : "':' or ';'", found(p, p->pos, c),
                        ch == ')' ? " (unbalanced parentheses: too many ')')"
                                  : "");
    } else if (ch != ',' && ch != ')') {
        return fail(p, p->pos, PERSISTE_E_PARSE, "expected %s but found %s%s",
                    has_length ? "',' or ')'" : "':' or ',' or ')'",
                    found(p, p->pos, c),
                    ch == ';' || ch < 0
                        ? " (unbalanced parentheses: too few ')')" : "");
    } else if (!has_length) {
        return fail(p, p->pos, PERSISTE_E_PARSE, "%s has no branch length",
                    node_name(p, v, name));
    }
    p->pos++;
    *next = ch;
    return PERSISTE_OK;
}

static int parse(parser *p)
{
    char c[16];
    int rc, ch;
    if (p->n >= 3 && memcmp(p->s, "\xEF\xBB\xBF", 3) == 0)
        p->pos = 3; /* UTF-8 byte-order mark from Windows editors */
    if ((rc = skip_blank(p)) != PERSISTE_OK)
        return rc;
    if (p->pos >= p->n)
        return fail(p, p->pos, PERSISTE_E_PARSE, "empty input: no tree");
    do {
        /* A subtree: open nodes down to its first tip. */
        int32_t v;
        while ((rc = skip_blank(p)) == PERSISTE_OK && peek(p) == '(')
            if ((rc = open_node(p)) != PERSISTE_OK)
                return rc;
        size_t at = p->pos;
        if (rc != PERSISTE_OK || (rc = new_node(p, &v)) != PERSISTE_OK ||
            (rc = read_label(p, &p->label[v])) != PERSISTE_OK)
            return rc;
        if (!p->label[v])
            return fail(p, at, PERSISTE_E_PARSE,
                        "expected a tip name or '(' but found %s%s",
                        found(p, at, c),
                        p->s[at] == '\'' ? " (empty tip name)" : "");
        /* Close nodes while ')' follows; ',' starts a sibling. */
        while ((rc = end_node(p, v, &ch)) == PERSISTE_OK && ch == ')') {
            v = p->open[--p->depth];
            if ((rc = skip_blank(p)) != PERSISTE_OK ||
                (rc = read_label(p, &p->label[v])) != PERSISTE_OK)
                return rc;
        }
        if (rc != PERSISTE_OK)
            return rc;
    } while (ch == ',');
    if ((rc = skip_blank(p)) != PERSISTE_OK)
        return rc;
    if (p->pos < p->n)
        return fail(p, p->pos, PERSISTE_E_PARSE,
                    "found %s after the tree's ';' (one tree per input)",
                    found(p, p->pos, c));
    return PERSISTE_OK;
}

/* Parses s[0..n) (with s[n] == '\0') into *out. */
static int parse_text(persiste_tree **out, const char *s, size_t n,
                      const char *what)
{
    parser p = {.s = s, .n = n, .what = what};
    /* Numbers use '.' whatever locale the host program set. */
    locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    locale_t old = c_locale ? uselocale(c_locale) : (locale_t)0;
    int rc = parse(&p);
    if (c_locale) {
        uselocale(old);
        freelocale(c_locale);
    }
    if (rc == PERSISTE_OK) {
        rc = persiste__tree_build(out, p.n_nodes, p.parent, p.length,
                                  p.label, what);
        p.label = NULL; /* owned by the builder */
    }
    if (p.label) {
        for (int32_t i = 0; i < p.n_nodes; i++)
            persiste__free(p.label[i]);
        persiste__free(p.label);
    }
    persiste__free(p.parent);
    persiste__free(p.length);
    persiste__free(p.open);
    return rc;
}

int persiste_tree_from_newick(persiste_tree **out, const char *text)
{
    if (!out || !text)
        return persiste__error(PERSISTE_E_INVALID, "newick: %s is NULL",
                               !out ? "out" : "text");
    return parse_text(out, text, strlen(text), "newick");
}

int persiste_tree_from_newick_file(persiste_tree **out, const char *path)
{
    if (!out || !path)
        return persiste__error(PERSISTE_E_INVALID, "newick: %s is NULL",
                               !out ? "out" : "path");
    char *text = NULL, what[320];
    size_t len = 0;
    int rc = persiste__read_text(path, &text, &len);
    if (rc != PERSISTE_OK) {
        char msg[400]; /* the reader names the path; say what was read */
        snprintf(msg, sizeof msg, "%s", persiste_last_error());
        return persiste__error(rc, "newick: %s", msg);
    }
    snprintf(what, sizeof what, "newick: %.300s", path);
    rc = parse_text(out, text, len, what);
    persiste__free(text);
    return rc;
}
