/*
** resp.h - the Redis protocol (RESP2) reader and command encoder (pure C,
** no Lua). Replies are read from any byte range, so a reply can be decoded
** straight from a stream's input buffer: a scanner finds where the reply
** at the front ends (resuming where it stopped when more bytes arrive,
** so a large reply is scanned once, not once per read), then a token
** reader walks the complete reply to build values.
**
** Bounded: a bulk or simple string, the elements of one array and the
** nesting of arrays have limits, checked as soon as a header is read.
*/
#ifndef EVLUA_RESP_H
#define EVLUA_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "buffer.h"

typedef enum resp_type {
  RESP_STATUS,     /* +OK */
  RESP_ERROR,      /* -ERR message */
  RESP_INTEGER,    /* :42 */
  RESP_BULK,       /* $3 abc */
  RESP_NIL,        /* $-1 or *-1 */
  RESP_ARRAY       /* *n, followed by n replies */
} resp_type;

typedef struct resp_token {
  resp_type type;
  const char *s;   /* RESP_STATUS, RESP_ERROR, RESP_BULK: the bytes */
  size_t len;
  int64_t n;       /* RESP_INTEGER: the value; RESP_ARRAY: element count */
} resp_token;

typedef struct resp_limits {
  size_t max_string;      /* bytes of one bulk or simple string */
  int64_t max_elements;   /* elements of one array */
  int max_depth;          /* arrays nested in arrays, 1..RESP_MAX_DEPTH */
} resp_limits;

#define RESP_MAX_DEPTH 1000   /* ceiling for max_depth */

/* Results of the readers below besides a length. */
#define RESP_NEED_MORE 0
#define RESP_BAD_TYPE (-1)        /* a reply type byte RESP2 has not */
#define RESP_BAD_LINE (-2)        /* a line not ended by "\r\n" */
#define RESP_BAD_INTEGER (-3)     /* malformed or out-of-range number */
#define RESP_BAD_LENGTH (-4)      /* negative length other than -1 */
#define RESP_BAD_BULK_END (-5)    /* bulk string not followed by "\r\n" */
#define RESP_TOO_LONG (-6)        /* string above max_string */
#define RESP_TOO_MANY (-7)        /* array above max_elements */
#define RESP_TOO_DEEP (-8)        /* nesting above max_depth */

/* Read one token at p[0..len): a scalar reply or an array header. Returns
** the bytes it takes (> 0), RESP_NEED_MORE, or an error (< 0). */
long resp_read_token(const char *p, size_t len, const resp_limits *lim,
                     resp_token *t);

/* Where the scanner stopped in the reply at the front of a buffer: the
** bytes already checked and, for each open array, the elements still to
** come. left has room for lim->max_depth counts (the caller allocates
** the struct with resp_scanner_size). */
typedef struct resp_scanner {
  size_t pos;
  int depth;
  int64_t left[];
} resp_scanner;

static inline size_t resp_scanner_size(int max_depth) {
  return sizeof(resp_scanner) + (size_t)max_depth * sizeof(int64_t);
}

/* Forget a partial scan (when the buffer was emptied). */
void resp_scanner_reset(resp_scanner *sc);

/* Length of the complete reply at p[0..len), RESP_NEED_MORE, or an error.
** The bytes before sc->pos must be the ones scanned by the previous call;
** once it returns a length (or an error) the scanner starts afresh. */
long resp_scan(resp_scanner *sc, const char *p, size_t len,
               const resp_limits *lim);

/* A short lowercase description of an error result. */
const char *resp_strerror(long code);

/* Encoding: a command as an array of bulk strings. */
int resp_put_array_header(evlua_buffer *b, size_t n);
int resp_put_bulk_header(evlua_buffer *b, size_t len);
/* A whole bulk string: header, bytes, "\r\n". 0, or -1 out of memory. */
int resp_put_bulk(evlua_buffer *b, const char *s, size_t len);

#endif
