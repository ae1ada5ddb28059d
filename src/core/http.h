/*
** http.h - incremental HTTP/1.x message parsing on http-parser, with
** limits (pure C, no Lua). One evlua_http per connection: feed it bytes,
** it stops at the end of each message (so pipelined messages stay with
** the caller) and keeps the URL (or reason phrase), the headers, the
** trailers and the body of the message being parsed until the caller is
** done with it.
**
** Stricter than http-parser alone (RFC 9112, as nginx; each of these is
** a request smuggling vector between a proxy and a lenient server): a
** header name must be a token (http-parser lets a space through, so
** "Transfer-Encoding : chunked" was read as chunked under another name);
** a request must have one Host header, or none with HTTP/1.0; the
** version must be 1.x (505 otherwise; 1.2 and up are read as 1.1); the
** trailer fields of a chunked body are kept apart from the headers.
*/
#ifndef EVLUA_HTTP_H
#define EVLUA_HTTP_H

#include <http_parser.h>
#include <stddef.h>

#include "buffer.h"

/* Defaults of the limits (docs/http.md). http-parser stops at
** HTTP_MAX_HEADER_SIZE (80 KiB) of headers on its own, answered 431 too. */
#define EVLUA_HTTP_MAX_URL (8 * 1024)
#define EVLUA_HTTP_MAX_HEADER_SIZE (32 * 1024)
#define EVLUA_HTTP_MAX_HEADERS 100
#define EVLUA_HTTP_MAX_BODY (8 * 1024 * 1024)

typedef struct evlua_http_field {
  size_t off;              /* of the name in hbuf; the value follows it */
  size_t name_len, value_len;
} evlua_http_field;

typedef struct evlua_http {
  http_parser p;
  size_t max_url, max_header_size, max_headers, max_body;
  evlua_buffer url;        /* request URL, or response reason phrase */
  evlua_buffer hbuf;       /* header names and values, back to back */
  evlua_buffer body;
  evlua_http_field *fields;   /* owned: the headers, then the trailers */
  size_t nfields, cap_fields;
  size_t nheaders;         /* fields before the trailers */
  size_t header_bytes;     /* URL + names + values of this message */
  int in_value;            /* the last header callback was a value */
  int in_message;          /* a message has begun and is not complete */
  int headers_done;
  int complete;            /* stopped at a message's end */
  int want_continue;       /* Expect: 100-continue seen, not yet reported */
  int skip_body;           /* response to a HEAD request */
  uint64_t chunk_left;     /* bytes of the current chunk not yet seen */
  int crlf_left;           /* bytes of the CRLF after a chunk still unchecked */
  const char *crlf_at;     /* where they are, if before data_end */
  const char *data_end;    /* of the bytes evlua_http_parse was given */
  int error_status;        /* the status a failure maps to, 0 if none */
  const char *error_message;  /* why, when error_status is ours */
} evlua_http;

enum {
  EVLUA_HTTP_MORE,         /* every byte taken, the message goes on */
  EVLUA_HTTP_MESSAGE,      /* a complete message: see the fields */
  EVLUA_HTTP_CONTINUE,     /* a request's headers asked for 100-continue */
  EVLUA_HTTP_ERROR         /* see evlua_http_error; the parser stays failed */
};

/* Set up a parser for requests (response = 0) or responses, with the
** default limits (change the max_* fields before the first byte). */
void evlua_http_init(evlua_http *h, int response);

/* Release the memory of h (it may be initialised again). */
void evlua_http_release(evlua_http *h);

/* Parse up to len bytes of data; *used tells how many were taken (the
** rest belongs to the next message). eof: the peer has closed (ends a
** response whose body runs to the end; data may be NULL then). Returns one
** of the EVLUA_HTTP_* results. After EVLUA_HTTP_MESSAGE, read the message
** from h, then call evlua_http_message_done. */
int evlua_http_parse(evlua_http *h, const char *data, size_t len, int eof,
                     size_t *used);

/* Forget the message just returned (releasing big buffers). */
void evlua_http_message_done(evlua_http *h);

/* After EVLUA_HTTP_ERROR: the status to answer (400, 413, 414, 431, 500,
** 505) and a short message. */
int evlua_http_error(const evlua_http *h, const char **message);

/* Whether the len bytes at a equal the lowercase string b, in any case. */
int evlua_http_ieq(const char *a, size_t len, const char *b);

/* The bytes of b, never NULL (an empty buffer may have no storage). */
const char *evlua_http_bytes(const evlua_buffer *b);

#endif
