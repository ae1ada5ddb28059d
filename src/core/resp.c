/*
** resp.c - the Redis protocol (RESP2) reader and command encoder.
** See resp.h for the rules.
*/
#include "resp.h"

#include <string.h>

/* Longest header line worth reading for a number: "-9223372036854775808"
** is 20 bytes. */
#define NUMBER_LINE_MAX 24

/* Reading ============================================================= */

/* Length of the line at p[0..len) before its "\r\n", searched within
** max + 2 bytes; RESP_NEED_MORE (as -10) when the end is not there yet,
** too_long when the line is longer than max, RESP_BAD_LINE for a "\n"
** without "\r" before it. */
#define LINE_NEED_MORE (-10)
static long line_length(const char *p, size_t len, size_t max, long too_long) {
  size_t window = len < max + 2 ? len : max + 2;
  const char *nl = memchr(p, '\n', window);
  if (nl == NULL) return len >= max + 2 ? too_long : LINE_NEED_MORE;
  size_t at = (size_t)(nl - p);
  if (at == 0 || p[at - 1] != '\r') return RESP_BAD_LINE;
  return (long)(at - 1);
}

/* Parse a decimal int64 ("-" allowed, nothing else around the digits). */
static int parse_int64(const char *s, size_t n, int64_t *out) {
  size_t i = 0;
  int negative = 0;
  if (n > 0 && s[0] == '-') {
    negative = 1;
    i = 1;
  }
  if (i == n) return -1;
  uint64_t v = 0;
  /* the magnitude of INT64_MIN is one above INT64_MAX */
  uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; i < n; i++) {
    unsigned d = (unsigned char)s[i] - '0';
    if (d > 9) return -1;
    if (v > (limit - d) / 10) return -1;
    v = v * 10 + d;
  }
  if (negative) *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
  else *out = (int64_t)v;
  return 0;
}

/* Read the number on the header line at p (after the type byte). Returns
** the bytes of the whole header, RESP_NEED_MORE or an error. */
static long read_number(const char *p, size_t len, int64_t *n) {
  long l = line_length(p + 1, len - 1, NUMBER_LINE_MAX, RESP_BAD_INTEGER);
  if (l == LINE_NEED_MORE) return RESP_NEED_MORE;
  if (l < 0) return l;
  if (parse_int64(p + 1, (size_t)l, n) != 0) return RESP_BAD_INTEGER;
  return 1 + l + 2;
}

long resp_read_token(const char *p, size_t len, const resp_limits *lim,
                     resp_token *t) {
  if (len == 0) return RESP_NEED_MORE;
  switch (p[0]) {
  case '+': case '-': {
    long l = line_length(p + 1, len - 1, lim->max_string, RESP_TOO_LONG);
    if (l == LINE_NEED_MORE) return RESP_NEED_MORE;
    if (l < 0) return l;
    t->type = p[0] == '+' ? RESP_STATUS : RESP_ERROR;
    t->s = p + 1;
    t->len = (size_t)l;
    return 1 + l + 2;
  }
  case ':': {
    long used = read_number(p, len, &t->n);
    if (used > 0) t->type = RESP_INTEGER;
    return used;
  }
  case '$': {
    int64_t n;
    long used = read_number(p, len, &n);
    if (used <= 0) return used;
    if (n == -1) {
      t->type = RESP_NIL;
      return used;
    }
    if (n < 0) return RESP_BAD_LENGTH;
    if ((uint64_t)n > lim->max_string) return RESP_TOO_LONG;
    size_t end = (size_t)used + (size_t)n;   /* where "\r\n" must be */
    if (len < end + 2) return RESP_NEED_MORE;
    if (p[end] != '\r' || p[end + 1] != '\n') return RESP_BAD_BULK_END;
    t->type = RESP_BULK;
    t->s = p + used;
    t->len = (size_t)n;
    return (long)(end + 2);
  }
  case '*': {
    long used = read_number(p, len, &t->n);
    if (used <= 0) return used;
    if (t->n == -1) {
      t->type = RESP_NIL;
      return used;
    }
    if (t->n < 0) return RESP_BAD_LENGTH;
    if (t->n > lim->max_elements) return RESP_TOO_MANY;
    t->type = RESP_ARRAY;
    return used;
  }
  default:
    return RESP_BAD_TYPE;
  }
}

void resp_scanner_reset(resp_scanner *sc) {
  sc->pos = 0;
  sc->depth = 0;
}

long resp_scan(resp_scanner *sc, const char *p, size_t len,
               const resp_limits *lim) {
  size_t pos = sc->pos;
  for (;;) {
    resp_token t;
    long used = resp_read_token(p + pos, len - pos, lim, &t);
    if (used == RESP_NEED_MORE) {
      sc->pos = pos;
      return RESP_NEED_MORE;
    }
    if (used < 0) {
      resp_scanner_reset(sc);
      return used;
    }
    pos += (size_t)used;
    if (t.type == RESP_ARRAY && t.n > 0) {
      if (sc->depth >= lim->max_depth) {
        resp_scanner_reset(sc);
        return RESP_TOO_DEEP;
      }
      sc->left[sc->depth++] = t.n;
      continue;
    }
    /* An element is complete: so is every array it was the last of. */
    while (sc->depth > 0 && --sc->left[sc->depth - 1] == 0) sc->depth--;
    if (sc->depth == 0) {
      resp_scanner_reset(sc);
      return (long)pos;
    }
  }
}

const char *resp_strerror(long code) {
  switch (code) {
  case RESP_BAD_TYPE: return "invalid reply type";
  case RESP_BAD_LINE: return "line not ended by CRLF";
  case RESP_BAD_INTEGER: return "invalid integer";
  case RESP_BAD_LENGTH: return "invalid length";
  case RESP_BAD_BULK_END: return "bulk string not ended by CRLF";
  case RESP_TOO_LONG: return "string too long";
  case RESP_TOO_MANY: return "too many elements";
  case RESP_TOO_DEEP: return "nesting too deep";
  default: return "invalid reply";
  }
}

/* Encoding ============================================================ */

/* Write "<c><n>\r\n" at p (room for 24 bytes); returns its length. */
static size_t write_header(char *p, char c, size_t n) {
  char digits[20];
  int nd = 0;
  do {
    digits[nd++] = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0);
  size_t k = 0;
  p[k++] = c;
  while (nd > 0) p[k++] = digits[--nd];
  p[k++] = '\r';
  p[k++] = '\n';
  return k;
}

static int put_header(evlua_buffer *b, char c, size_t n) {
  char *p = evlua_buffer_reserve(b, 24);
  if (p == NULL) return -1;
  evlua_buffer_commit(b, write_header(p, c, n));
  return 0;
}

int resp_put_bulk(evlua_buffer *b, const char *s, size_t len) {
  if (len > ((size_t)-1) / 2) return -1;
  char *p = evlua_buffer_reserve(b, len + 26);
  if (p == NULL) return -1;
  size_t k = write_header(p, '$', len);
  memcpy(p + k, s, len);
  p[k + len] = '\r';
  p[k + len + 1] = '\n';
  evlua_buffer_commit(b, k + len + 2);
  return 0;
}

int resp_put_array_header(evlua_buffer *b, size_t n) {
  return put_header(b, '*', n);
}

int resp_put_bulk_header(evlua_buffer *b, size_t len) {
  return put_header(b, '$', len);
}
