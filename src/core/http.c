/*
** http.c - incremental HTTP/1.x parsing on http-parser with limits (see
** http.h). Limits are checked inside the parser callbacks, so a request
** is refused as soon as it crosses one: URL length (414), header block
** size and count (431), body size (413, from Content-Length before any
** body byte), anything malformed (400).
*/
#include "http.h"

#include <stdlib.h>
#include <string.h>

/* Buffers above this size are released after each message, so an idle
** keep-alive connection does not hold the memory of its largest request. */
#define KEEP_BUFFER 4096

const char *evlua_http_bytes(const evlua_buffer *b) {
  return b->data ? evlua_buffer_peek(b) : "";
}

/* Fail parsing with an HTTP status for the peer. */
static int fail(evlua_http *h, int status) {
  h->error_status = status;
  return -1;
}

static int fail_with(evlua_http *h, int status, const char *message) {
  h->error_message = message;
  return fail(h, status);
}

static int append(evlua_buffer *b, const char *at, size_t len) {
  return evlua_buffer_append(b, at, len);
}

/* Count header bytes; 431 past the limit. */
static int count_header(evlua_http *h, size_t len) {
  h->header_bytes += len;
  return h->header_bytes > h->max_header_size ? fail(h, 431) : 0;
}

/* Parser callbacks ==================================================== */

static int on_message_begin(http_parser *p) {
  evlua_http *h = (evlua_http *)p->data;
  h->in_message = 1;
  h->headers_done = 0;
  h->nfields = 0;
  h->header_bytes = 0;
  h->in_value = 0;
  h->want_continue = 0;
  h->error_status = 0;
  h->error_message = NULL;
  h->nheaders = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  evlua_http *h = (evlua_http *)p->data;
  if (evlua_buffer_len(&h->url) + len > h->max_url) return fail(h, 414);
  if (count_header(h, len)) return -1;
  return append(&h->url, at, len) ? fail(h, 500) : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  evlua_http *h = (evlua_http *)p->data;
  if (count_header(h, len)) return -1;
  /* A name must be a token. http-parser (not built strict) checks every
  ** other character against its token table but lets a space pass:
  ** "Transfer-Encoding : chunked" would be chunked to http-parser and
  ** another header to the application (and to a proxy in front). */
  if (memchr(at, ' ', len)) return fail_with(h, 400, "bad header name");
  if (h->in_value || h->nfields == 0) {   /* a new header starts */
    if (h->nfields >= h->max_headers) return fail(h, 431);
    if (h->nfields == h->cap_fields) {
      size_t cap = h->cap_fields ? h->cap_fields * 2 : 16;
      evlua_http_field *f = realloc(h->fields, cap * sizeof *f);
      if (!f) return fail(h, 500);
      h->fields = f;
      h->cap_fields = cap;
    }
    evlua_http_field *f = &h->fields[h->nfields++];
    f->off = evlua_buffer_len(&h->hbuf);
    f->name_len = f->value_len = 0;
    h->in_value = 0;
  }
  h->fields[h->nfields - 1].name_len += len;
  return append(&h->hbuf, at, len) ? fail(h, 500) : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  evlua_http *h = (evlua_http *)p->data;
  if (count_header(h, len)) return -1;
  if (h->nfields == 0) return fail(h, 400);
  h->in_value = 1;
  h->fields[h->nfields - 1].value_len += len;
  return append(&h->hbuf, at, len) ? fail(h, 500) : 0;
}

int evlua_http_ieq(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  if (alen != blen) return 0;
  for (size_t i = 0; i < alen; i++) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != b[i]) return 0;
  }
  return 1;
}

static int expects_continue(evlua_http *h) {
  const char *base = evlua_http_bytes(&h->hbuf);
  for (size_t i = 0; i < h->nfields; i++) {
    const evlua_http_field *f = &h->fields[i];
    const char *name = base + f->off;
    if (evlua_http_ieq(name, f->name_len, "expect") &&
        evlua_http_ieq(name + f->name_len, f->value_len, "100-continue"))
      return 1;
  }
  return 0;
}

/* A request's Host headers: exactly one, or none for HTTP/1.0 (RFC 9112
** 3.2): two could route one request two ways. */
static int check_host(evlua_http *h) {
  const char *base = evlua_http_bytes(&h->hbuf);
  int hosts = 0;
  for (size_t i = 0; i < h->nfields; i++) {
    const evlua_http_field *f = &h->fields[i];
    if (f->name_len == 4 && evlua_http_ieq(base + f->off, 4, "host")) hosts++;
  }
  if (hosts > 1) return fail_with(h, 400, "duplicate host header");
  if (hosts == 0 && h->p.http_minor >= 1)
    return fail_with(h, 400, "missing host header");
  return 0;
}

/* Count the codings of a Transfer-Encoding value: chunked ones into
** *chunked, the others into *other. */
static void count_codings(const char *v, size_t len, int *chunked, int *other) {
  size_t i = 0;
  while (i < len) {
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t start = i;
    while (i < len && v[i] != ',') i++;
    size_t end = i;
    while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t')) end--;
    if (end == start) continue;
    if (evlua_http_ieq(v + start, end - start, "chunked")) (*chunked)++;
    else (*other)++;
  }
}

/* A request's Transfer-Encoding, over all its headers: chunked once, or
** nothing. Another coding is not implemented here (501, as nginx), and
** the body would reach the callback still encoded; chunked twice is
** malformed (RFC 9112 6.1). http-parser alone lets both through. */
static int check_transfer_encoding(evlua_http *h) {
  const char *base = evlua_http_bytes(&h->hbuf);
  int chunked = 0, other = 0;
  for (size_t i = 0; i < h->nfields; i++) {
    const evlua_http_field *f = &h->fields[i];
    if (evlua_http_ieq(base + f->off, f->name_len, "transfer-encoding"))
      count_codings(base + f->off + f->name_len, f->value_len, &chunked, &other);
  }
  if (other > 0) return fail_with(h, 501, "unsupported transfer coding");
  if (chunked > 1) return fail_with(h, 400, "chunked more than once");
  return 0;
}

/* Returning 1 tells http-parser the message has no body (HEAD). */
static int on_headers_complete(http_parser *p) {
  evlua_http *h = (evlua_http *)p->data;
  h->headers_done = 1;
  h->nheaders = h->nfields;
  h->in_value = 1;   /* a trailer field starts a new entry */
  if (p->http_major != 1)
    return fail_with(h, 505, "unsupported http version");
  if (p->type == HTTP_REQUEST) {
    if (check_host(h) || check_transfer_encoding(h)) return -1;
    int has_body = (p->flags & F_CHUNKED) ||
                   ((p->flags & F_CONTENTLENGTH) && p->content_length > 0);
    /* Refuse an announced body before reading a byte of it. */
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > h->max_body)
      return fail(h, 413);
    if (has_body && p->http_minor >= 1 && expects_continue(h)) {
      h->want_continue = 1;
      http_parser_pause(p, 1);   /* let Lua answer 100 Continue first */
    }
    return 0;
  }
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > h->max_body)
    return fail(h, 413);
  return h->skip_body ? 1 : 0;
}

/* Chunk data must end with CRLF. http-parser checks that only when built
** with HTTP_PARSER_STRICT, which Debian's is not: it takes any two bytes,
** and a front proxy that reads the same bytes differently can be made to
** pass a second, hidden request (smuggling). Check those bytes here. */
static int on_chunk_header(http_parser *p) {
  evlua_http *h = (evlua_http *)p->data;
  h->chunk_left = p->content_length;
  return 0;
}

/* Check the terminator's bytes from h->crlf_at up to end; -1 if one is
** wrong. */
static int check_crlf(evlua_http *h, const char *end) {
  while (h->crlf_left > 0 && h->crlf_at < end) {
    char want = h->crlf_left == 2 ? '\r' : '\n';
    if (*h->crlf_at++ != want)
      return fail_with(h, 400, "chunk data not followed by CRLF");
    h->crlf_left--;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  evlua_http *h = (evlua_http *)p->data;
  if (evlua_buffer_len(&h->body) + len > h->max_body) return fail(h, 413);
  if (append(&h->body, at, len)) return fail(h, 500);
  if (!(p->flags & F_CHUNKED)) return 0;
  h->chunk_left -= len;
  if (h->chunk_left > 0) return 0;
  h->crlf_left = 2;
  h->crlf_at = at + len;
  return check_crlf(h, h->data_end);
}

static int on_message_complete(http_parser *p) {
  evlua_http *h = (evlua_http *)p->data;
  h->in_message = 0;
  h->complete = 1;
  http_parser_pause(p, 1);   /* pipelined messages wait in the stream */
  return 0;
}

static const http_parser_settings settings = {
  .on_message_begin = on_message_begin,
  .on_url = on_url,
  .on_status = on_url,   /* the reason phrase of a response */
  .on_header_field = on_header_field,
  .on_header_value = on_header_value,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_chunk_header = on_chunk_header,
  .on_message_complete = on_message_complete,
};

/* Entry points ======================================================== */

void evlua_http_init(evlua_http *h, int response) {
  memset(h, 0, sizeof *h);
  h->max_url = EVLUA_HTTP_MAX_URL;
  h->max_header_size = EVLUA_HTTP_MAX_HEADER_SIZE;
  h->max_headers = EVLUA_HTTP_MAX_HEADERS;
  h->max_body = EVLUA_HTTP_MAX_BODY;
  http_parser_init(&h->p, response ? HTTP_RESPONSE : HTTP_REQUEST);
  h->p.data = h;
}

void evlua_http_release(evlua_http *h) {
  evlua_buffer_free(&h->url);
  evlua_buffer_free(&h->hbuf);
  evlua_buffer_free(&h->body);
  free(h->fields);
  h->fields = NULL;
  h->cap_fields = h->nfields = 0;
}

static void reset_buffer(evlua_buffer *b) {
  evlua_buffer_consume(b, evlua_buffer_len(b));
  if (b->cap > KEEP_BUFFER) evlua_buffer_free(b);
}

void evlua_http_message_done(evlua_http *h) {
  reset_buffer(&h->url);
  reset_buffer(&h->hbuf);
  reset_buffer(&h->body);
  h->nfields = h->nheaders = 0;
  if (h->cap_fields > 64) {
    free(h->fields);
    h->fields = NULL;
    h->cap_fields = 0;
  }
}

int evlua_http_parse(evlua_http *h, const char *data, size_t len, int eof,
                     size_t *used) {
  http_parser *p = &h->p;
  enum http_errno e = HTTP_PARSER_ERRNO(p);
  *used = 0;
  if (e != HPE_OK && e != HPE_PAUSED) return EVLUA_HTTP_ERROR;
  if (e == HPE_PAUSED) http_parser_pause(p, 0);
  h->complete = 0;
  if (len == 0 && !(eof && h->in_message)) return EVLUA_HTTP_MORE;
  if (len == 0) data = NULL;   /* the end of the stream: no bytes to check */
  if (h->crlf_left > 0 && data != NULL) {   /* a chunk's CRLF, cut off before */
    h->crlf_at = data;
    if (check_crlf(h, data + len) < 0) {
      p->http_errno = HPE_CB_body;   /* failed as if in on_body */
      return EVLUA_HTTP_ERROR;
    }
  }
  h->data_end = data != NULL ? data + len : NULL;
  /* len 0 tells http-parser the stream ended */
  *used = http_parser_execute(p, &settings, data, len);
  e = HTTP_PARSER_ERRNO(p);
  if (h->complete) return EVLUA_HTTP_MESSAGE;
  if (e == HPE_PAUSED && h->want_continue) {
    h->want_continue = 0;
    return EVLUA_HTTP_CONTINUE;
  }
  if (e != HPE_OK) return EVLUA_HTTP_ERROR;
  return EVLUA_HTTP_MORE;
}

int evlua_http_error(const evlua_http *h, const char **message) {
  enum http_errno e = HTTP_PARSER_ERRNO(&h->p);
  int status = h->error_status;
  if (status == 0) status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
  if (e == HPE_CB_url || e == HPE_CB_header_field || e == HPE_CB_header_value ||
      e == HPE_CB_headers_complete || e == HPE_CB_body) {
    if (h->error_message) {
      *message = h->error_message;
      return status;
    }
    switch (status) {
    case 413: *message = "body too large"; break;
    case 414: *message = "url too long"; break;
    case 431: *message = "header block too large"; break;
    case 500: *message = "out of memory"; break;
    default: *message = "malformed message"; break;
    }
  } else {
    *message = http_errno_description(e);
  }
  return status;
}
