/*
** msgpack.c - MessagePack encoding primitives and a token reader.
** Format: https://github.com/msgpack/msgpack/blob/master/spec.md
*/
#include "msgpack.h"

#include <string.h>

/* Big-endian helpers ------------------------------------------------- */

static void store16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)(v >> 8);
  p[1] = (unsigned char)v;
}

static void store32(unsigned char *p, uint32_t v) {
  for (int i = 3; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

static void store64(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

static uint64_t load(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

/* Append a type byte followed by an n-byte big-endian value. */
static int put_tagged(evlua_buffer *b, unsigned char tag, uint64_t v, int n) {
  unsigned char *p = (unsigned char *)evlua_buffer_reserve(b, 9);
  if (p == NULL) return -1;
  p[0] = tag;
  switch (n) {
  case 1: p[1] = (unsigned char)v; break;
  case 2: store16(p + 1, (uint16_t)v); break;
  case 4: store32(p + 1, (uint32_t)v); break;
  case 8: store64(p + 1, v); break;
  default: break;
  }
  evlua_buffer_commit(b, (size_t)n + 1);
  return 0;
}

/* Writers ------------------------------------------------------------- */

int mp_put_nil(evlua_buffer *b) {
  return put_tagged(b, 0xc0, 0, 0);
}

int mp_put_bool(evlua_buffer *b, int v) {
  return put_tagged(b, v ? 0xc3 : 0xc2, 0, 0);
}

int mp_put_int(evlua_buffer *b, int64_t v) {
  if (v >= 0) {
    if (v < 128) return put_tagged(b, (unsigned char)v, 0, 0);
    if (v <= UINT8_MAX) return put_tagged(b, 0xcc, (uint64_t)v, 1);
    if (v <= UINT16_MAX) return put_tagged(b, 0xcd, (uint64_t)v, 2);
    if (v <= UINT32_MAX) return put_tagged(b, 0xce, (uint64_t)v, 4);
    return put_tagged(b, 0xcf, (uint64_t)v, 8);
  }
  if (v >= -32) return put_tagged(b, (unsigned char)(0xe0 | (v + 32)), 0, 0);
  if (v >= INT8_MIN) return put_tagged(b, 0xd0, (uint64_t)v, 1);
  if (v >= INT16_MIN) return put_tagged(b, 0xd1, (uint64_t)v, 2);
  if (v >= INT32_MIN) return put_tagged(b, 0xd2, (uint64_t)v, 4);
  return put_tagged(b, 0xd3, (uint64_t)v, 8);
}

int mp_put_double(evlua_buffer *b, double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof bits);
  return put_tagged(b, 0xcb, bits, 8);
}

int mp_put_str(evlua_buffer *b, const char *s, size_t len) {
  int r;
  if (len > UINT32_MAX) return -1;
  if (len < 32) r = put_tagged(b, (unsigned char)(0xa0 | len), 0, 0);
  else if (len <= UINT8_MAX) r = put_tagged(b, 0xd9, len, 1);
  else if (len <= UINT16_MAX) r = put_tagged(b, 0xda, len, 2);
  else r = put_tagged(b, 0xdb, len, 4);
  if (r != 0) return r;
  return evlua_buffer_append(b, s, len);
}

int mp_put_bin(evlua_buffer *b, const char *s, size_t len) {
  int r;
  if (len > UINT32_MAX) return -1;
  if (len <= UINT8_MAX) r = put_tagged(b, 0xc4, len, 1);
  else if (len <= UINT16_MAX) r = put_tagged(b, 0xc5, len, 2);
  else r = put_tagged(b, 0xc6, len, 4);
  if (r != 0) return r;
  return evlua_buffer_append(b, s, len);
}

/* Most strings are ASCII: skip eight such bytes at a time. */
static const unsigned char *skip_ascii(const unsigned char *p,
                                       const unsigned char *end) {
  while (end - p >= 8) {
    uint64_t w;
    memcpy(&w, p, sizeof w);
    if (w & UINT64_C(0x8080808080808080)) break;
    p += 8;
  }
  return p;
}

int mp_valid_utf8(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while ((p = skip_ascii(p, end)) < end) {
    unsigned c = *p;
    if (c < 0x80) { p++; continue; }
    int n;
    unsigned min, cp;
    if ((c & 0xe0) == 0xc0) { n = 1; min = 0x80; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { n = 2; min = 0x800; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { n = 3; min = 0x10000; cp = c & 0x07; }
    else return 0;
    if (end - p <= n) return 0;
    for (int i = 1; i <= n; i++) {
      if ((p[i] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    p += n + 1;
  }
  return 1;
}

int mp_put_array(evlua_buffer *b, uint32_t n) {
  if (n < 16) return put_tagged(b, (unsigned char)(0x90 | n), 0, 0);
  if (n <= UINT16_MAX) return put_tagged(b, 0xdc, n, 2);
  return put_tagged(b, 0xdd, n, 4);
}

int mp_put_map(evlua_buffer *b, uint32_t n) {
  if (n < 16) return put_tagged(b, (unsigned char)(0x80 | n), 0, 0);
  if (n <= UINT16_MAX) return put_tagged(b, 0xde, n, 2);
  return put_tagged(b, 0xdf, n, 4);
}

/* Reader -------------------------------------------------------------- */

/* A token whose payload of plen bytes follows a header of hlen bytes. */
static long with_payload(size_t len, size_t hlen, uint64_t plen, mp_token *t,
                         const char *p, mp_type type) {
  if (len < hlen + plen) {
    t->need = hlen + plen;
    return MP_NEED_MORE;
  }
  t->type = type;
  t->v.s.p = p + hlen;
  t->v.s.len = (uint32_t)plen;
  return (long)(hlen + plen);
}

/* Not enough bytes for a header of hlen bytes. */
static long short_header(mp_token *t, size_t hlen) {
  t->need = hlen;
  return MP_NEED_MORE;
}

long mp_read_token(const char *p, size_t len, mp_token *t) {
  if (len == 0) return short_header(t, 1);
  const unsigned char *u = (const unsigned char *)p;
  unsigned char c = u[0];
  if (c <= 0x7f) { t->type = MP_INT; t->v.i = c; return 1; }
  if (c >= 0xe0) { t->type = MP_INT; t->v.i = (int8_t)c; return 1; }
  if ((c & 0xf0) == 0x80) { t->type = MP_MAP; t->v.n = c & 0x0f; return 1; }
  if ((c & 0xf0) == 0x90) { t->type = MP_ARRAY; t->v.n = c & 0x0f; return 1; }
  if ((c & 0xe0) == 0xa0) return with_payload(len, 1, c & 0x1f, t, p, MP_STR);
  /* Fixed-size forms: the header's size is known from the type byte. */
  static const signed char extra[32] = {
    /* c0 nil, c1 never, c2 false, c3 true, c4-c6 bin, c7-c9 ext */
    0, -1, 0, 0, 1, 2, 4, 1, 2, 4,
    /* ca float32, cb float64, cc-cf uint, d0-d3 int */
    4, 8, 1, 2, 4, 8, 1, 2, 4, 8,
    /* d4-d8 fixext (type byte only here), d9-db str, dc-dd array, de-df map */
    1, 1, 1, 1, 1, 1, 2, 4, 2, 4, 2, 4
  };
  int n = extra[c - 0xc0];
  if (n < 0) return MP_INVALID;
  if (len < (size_t)n + 1) return short_header(t, (size_t)n + 1);
  uint64_t v = load(u + 1, n);
  switch (c) {
  case 0xc0: t->type = MP_NIL; return 1;
  case 0xc2: case 0xc3: t->type = MP_BOOL; t->v.b = c == 0xc3; return 1;
  case 0xc4: case 0xc5: case 0xc6:
    return with_payload(len, (size_t)n + 1, v, t, p, MP_BIN);
  case 0xc7: case 0xc8: case 0xc9: {
    if (len < (size_t)n + 2) return short_header(t, (size_t)n + 2);
    long r = with_payload(len, (size_t)n + 2, v, t, p, MP_EXT);
    t->v.s.ext_type = (int8_t)u[n + 1];
    return r;
  }
  case 0xca: {
    uint32_t bits = (uint32_t)v;
    float f;
    memcpy(&f, &bits, sizeof f);
    t->type = MP_FLOAT;
    t->v.f = f;
    return 5;
  }
  case 0xcb:
    t->type = MP_FLOAT;
    memcpy(&t->v.f, &v, sizeof t->v.f);
    return 9;
  case 0xcc: case 0xcd: case 0xce: case 0xcf:
    if (v > INT64_MAX) { t->type = MP_UINT; t->v.u = v; }
    else { t->type = MP_INT; t->v.i = (int64_t)v; }
    return n + 1;
  case 0xd0: t->type = MP_INT; t->v.i = (int8_t)v; return 2;
  case 0xd1: t->type = MP_INT; t->v.i = (int16_t)v; return 3;
  case 0xd2: t->type = MP_INT; t->v.i = (int32_t)v; return 5;
  case 0xd3: t->type = MP_INT; t->v.i = (int64_t)v; return 9;
  case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: {
    long r = with_payload(len, 2, (uint64_t)1 << (c - 0xd4), t, p, MP_EXT);
    t->v.s.ext_type = (int8_t)u[1];
    return r;
  }
  case 0xd9: case 0xda: case 0xdb:
    return with_payload(len, (size_t)n + 1, v, t, p, MP_STR);
  case 0xdc: case 0xdd: t->type = MP_ARRAY; t->v.n = (uint32_t)v; return n + 1;
  default:  /* 0xde, 0xdf */
    t->type = MP_MAP; t->v.n = (uint32_t)v; return n + 1;
  }
}

void mp_scan_start(mp_scanner *sc) {
  sc->pos = 0;
  sc->need = 1;
  sc->depth = 0;
  sc->remaining[0] = 1;
}

/* Lower bound on the length of a value whose walk stopped at sc->pos on
** a token needing `token` bytes: that token, plus a byte for every other
** value still expected at any level. */
static uint64_t lower_bound(const mp_scanner *sc, uint64_t token) {
  uint64_t n = sc->pos + token - 1;
  for (int d = 0; d <= sc->depth; d++) n += sc->remaining[d];
  return n;
}

long mp_scan(mp_scanner *sc, const char *p, size_t len, int max_depth) {
  if (max_depth > MP_MAX_DEPTH) max_depth = MP_MAX_DEPTH;
  for (;;) {
    mp_token t;
    long used = mp_read_token(p + sc->pos, len - sc->pos, &t);
    if (used == MP_NEED_MORE) sc->need = lower_bound(sc, t.need);
    if (used <= 0) return used;
    sc->pos += (size_t)used;
    sc->remaining[sc->depth]--;
    uint64_t items = 0;
    if (t.type == MP_ARRAY) items = t.v.n;
    else if (t.type == MP_MAP) items = (uint64_t)t.v.n * 2;
    if (items > 0) {
      if (sc->depth == max_depth) return MP_TOO_DEEP;
      sc->remaining[++sc->depth] = items;
    }
    while (sc->remaining[sc->depth] == 0) {
      if (sc->depth == 0) return (long)sc->pos;
      sc->depth--;
    }
  }
}

long mp_value_length(const char *p, size_t len, int max_depth) {
  mp_scanner sc;
  mp_scan_start(&sc);
  return mp_scan(&sc, p, len, max_depth);
}
