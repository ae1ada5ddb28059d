/*
** msgpack.h - MessagePack encoding primitives and a token reader (pure C,
** no Lua). Values are written into an evlua_buffer; reading works on any
** byte range, so a message can be decoded straight from a stream's input
** buffer once mp_value_length says it is complete.
*/
#ifndef EVLUA_MSGPACK_H
#define EVLUA_MSGPACK_H

#include <stddef.h>
#include <stdint.h>

#include "buffer.h"

/* Writers: append one value or header. Return 0, or -1 out of memory. */
int mp_put_nil(evlua_buffer *b);
int mp_put_bool(evlua_buffer *b, int v);
int mp_put_int(evlua_buffer *b, int64_t v);       /* smallest int form */
int mp_put_double(evlua_buffer *b, double v);     /* always float 64 */
int mp_put_str(evlua_buffer *b, const char *s, size_t len);
int mp_put_bin(evlua_buffer *b, const char *s, size_t len);

/* Whether s[0..len) is well-formed UTF-8 (no overlong forms, surrogates
** or code points above U+10FFFF). */
int mp_valid_utf8(const char *s, size_t len);
int mp_put_array(evlua_buffer *b, uint32_t n);
int mp_put_map(evlua_buffer *b, uint32_t n);

typedef enum mp_type {
  MP_NIL, MP_BOOL, MP_INT, MP_UINT, MP_FLOAT, MP_STR, MP_BIN,
  MP_ARRAY, MP_MAP, MP_EXT
} mp_type;

typedef struct mp_token {
  mp_type type;
  union {
    int b;                  /* MP_BOOL */
    int64_t i;              /* MP_INT (negative or fitting int64) */
    uint64_t u;             /* MP_UINT (above INT64_MAX) */
    double f;               /* MP_FLOAT */
    uint32_t n;             /* MP_ARRAY items, MP_MAP pairs */
    struct {                /* MP_STR, MP_BIN, MP_EXT (ext_type) */
      const char *p;
      uint32_t len;
      int8_t ext_type;
    } s;
  } v;
  uint64_t need;            /* after MP_NEED_MORE: the bytes the token
                            ** takes, as far as its header tells */
} mp_token;

#define MP_MAX_DEPTH 512     /* ceiling for any depth limit */

#define MP_NEED_MORE 0      /* not enough bytes yet */
#define MP_INVALID (-1)     /* bytes that are not MessagePack */
#define MP_TOO_DEEP (-2)    /* nesting beyond the depth limit */

/* Read one token (a scalar, or the header of an array/map) at p[0..len).
** Returns the bytes it takes (> 0), MP_NEED_MORE or MP_INVALID. */
long mp_read_token(const char *p, size_t len, mp_token *t);

/* Length in bytes of the complete value at p[0..len) (nested values
** included), or MP_NEED_MORE, MP_INVALID, MP_TOO_DEEP (containers nested
** deeper than max_depth, at most MP_MAX_DEPTH). */
long mp_value_length(const char *p, size_t len, int max_depth);

/* An incremental mp_value_length, for a value that arrives in pieces:
** each call walks only the bytes the previous calls have not, so a value
** of n bytes costs O(n) however it is split. p must be the same value's
** bytes each time (grown, never moved in content); start again with
** mp_scan_start after a result other than MP_NEED_MORE. */
typedef struct mp_scanner {
  size_t pos;               /* bytes walked so far */
  uint64_t need;            /* after MP_NEED_MORE: a lower bound on the
                            ** value's length (every item takes a byte,
                            ** every str/bin/ext its announced length) */
  int depth;
  uint64_t remaining[MP_MAX_DEPTH + 1];   /* values expected per level */
} mp_scanner;

void mp_scan_start(mp_scanner *sc);
long mp_scan(mp_scanner *sc, const char *p, size_t len, int max_depth);

#endif
