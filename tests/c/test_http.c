/*
** test_http.c - unit tests for src/core/http.c (HTTP/1.x parsing with limits)
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "http.h"

/* Feed s (whole) to h; returns the result, *used the bytes taken. */
static int feed(evlua_http *h, const char *s, size_t *used) {
  return evlua_http_parse(h, s, strlen(s), 0, used);
}

/* The value of header i of the message in h. */
static void assert_field(evlua_http *h, size_t i, const char *name,
                         const char *value) {
  const char *base = evlua_http_bytes(&h->hbuf);
  assert_true(i < h->nfields);
  evlua_http_field *f = &h->fields[i];
  assert_int_equal(f->name_len, strlen(name));
  assert_memory_equal(base + f->off, name, f->name_len);
  assert_int_equal(f->value_len, strlen(value));
  assert_memory_equal(base + f->off + f->name_len, value, f->value_len);
}

static void parses_a_request(void **state) {
  (void)state;
  evlua_http h;
  evlua_http_init(&h, 0);
  const char *req = "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
  size_t used;
  assert_int_equal(feed(&h, req, &used), EVLUA_HTTP_MESSAGE);
  assert_int_equal(used, strlen(req));
  assert_int_equal(h.p.method, HTTP_POST);
  assert_int_equal(evlua_buffer_len(&h.url), 6);
  assert_memory_equal(evlua_http_bytes(&h.url), "/a?b=1", 6);
  assert_int_equal(h.nfields, 2);
  assert_field(&h, 0, "Host", "x");
  assert_field(&h, 1, "Content-Length", "3");
  assert_int_equal(evlua_buffer_len(&h.body), 3);
  evlua_http_message_done(&h);
  evlua_http_release(&h);
}

static void stops_at_the_end_of_each_pipelined_message(void **state) {
  (void)state;
  evlua_http h;
  evlua_http_init(&h, 0);
  const char *two = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
                    "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
  size_t used, first = strlen("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n");
  assert_int_equal(feed(&h, two, &used), EVLUA_HTTP_MESSAGE);
  assert_int_equal(used, first);
  evlua_http_message_done(&h);
  assert_int_equal(feed(&h, two + first, &used), EVLUA_HTTP_MESSAGE);
  assert_int_equal(used, first);
  assert_memory_equal(evlua_http_bytes(&h.url), "/2", 2);
  evlua_http_message_done(&h);
  evlua_http_release(&h);
}

static void parses_byte_by_byte_with_a_chunked_body(void **state) {
  (void)state;
  evlua_http h;
  evlua_http_init(&h, 0);
  const char *req = "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                    "X-A: 1\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-T: 2\r\n\r\n";
  size_t n = strlen(req), used;
  for (size_t i = 0; i + 1 < n; i++) {
    assert_int_equal(evlua_http_parse(&h, req + i, 1, 0, &used), EVLUA_HTTP_MORE);
    assert_int_equal(used, 1);
  }
  assert_int_equal(evlua_http_parse(&h, req + n - 1, 1, 0, &used),
                   EVLUA_HTTP_MESSAGE);
  assert_int_equal(h.nfields, 4);
  assert_int_equal(h.nheaders, 3);   /* then the trailer */
  assert_field(&h, 2, "X-A", "1");
  assert_field(&h, 3, "X-T", "2");
  assert_int_equal(evlua_buffer_len(&h.body), 5);
  assert_memory_equal(evlua_http_bytes(&h.body), "abcde", 5);
  evlua_http_message_done(&h);
  evlua_http_release(&h);
}

/* Parse req with one limit set; returns the status of the error, or 0
** when the request was accepted. */
static int status_with(const char *req, size_t url, size_t header_size,
                       size_t headers, size_t body) {
  evlua_http h;
  evlua_http_init(&h, 0);
  if (url) h.max_url = url;
  if (header_size) h.max_header_size = header_size;
  if (headers) h.max_headers = headers;
  if (body) h.max_body = body;
  size_t used;
  int r = feed(&h, req, &used);
  int status = 0;
  if (r == EVLUA_HTTP_ERROR) {
    const char *msg;
    status = evlua_http_error(&h, &msg);
  } else {
    assert_int_equal(r, EVLUA_HTTP_MESSAGE);
  }
  evlua_http_release(&h);
  return status;
}

static void enforces_each_limit_at_and_past_it(void **state) {
  (void)state;
  /* HTTP/1.0: no Host header to count */
  assert_int_equal(status_with("GET /234 HTTP/1.0\r\n\r\n", 4, 0, 0, 0), 0);
  assert_int_equal(status_with("GET /2345 HTTP/1.0\r\n\r\n", 4, 0, 0, 0), 414);
  /* header block: URL + names + values */
  assert_int_equal(status_with("GET / HTTP/1.0\r\nAb: cd\r\n\r\n", 0, 5, 0, 0), 0);
  assert_int_equal(status_with("GET / HTTP/1.0\r\nAb: cde\r\n\r\n", 0, 5, 0, 0), 431);
  assert_int_equal(status_with("GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\n\r\n", 0, 0, 2, 0), 0);
  assert_int_equal(status_with("GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
                               0, 0, 2, 0), 431);
  assert_int_equal(status_with("POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nab",
                               0, 0, 0, 2), 0);
  /* refused from the header, before any body byte */
  assert_int_equal(status_with("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
                               0, 0, 0, 2), 413);
  assert_int_equal(status_with("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "3\r\nabc\r\n0\r\n\r\n", 0, 0, 0, 2), 413);
  assert_int_equal(status_with("NOT HTTP\r\n\r\n", 0, 0, 0, 0), 400);
}

static void reports_expect_continue_before_the_body(void **state) {
  (void)state;
  evlua_http h;
  evlua_http_init(&h, 0);
  const char *head = "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                     "Content-Length: 2\r\n\r\n";
  size_t used;
  assert_int_equal(feed(&h, head, &used), EVLUA_HTTP_CONTINUE);
  /* http-parser may stop just before the header block's last byte */
  assert_true(used <= strlen(head));
  assert_int_equal(feed(&h, head + used, &used), EVLUA_HTTP_MORE);
  assert_int_equal(feed(&h, "hi", &used), EVLUA_HTTP_MESSAGE);
  assert_int_equal(evlua_buffer_len(&h.body), 2);
  evlua_http_message_done(&h);
  evlua_http_release(&h);
}

/* The status and message req fails with (0 and NULL when accepted). */
static int refusal(const char *req, const char **message) {
  evlua_http h;
  evlua_http_init(&h, 0);
  size_t used;
  int r = feed(&h, req, &used), status = 0;
  *message = NULL;
  if (r == EVLUA_HTTP_ERROR) status = evlua_http_error(&h, message);
  else assert_int_equal(r, EVLUA_HTTP_MESSAGE);
  evlua_http_release(&h);
  return status;
}

static void refuses_what_rfc_9112_refuses(void **state) {
  (void)state;
  const char *msg;
  assert_int_equal(refusal("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked"
                           "\r\n\r\n0\r\n\r\n", &msg), 400);
  assert_string_equal(msg, "bad header name");
  assert_int_equal(refusal("GET / HTTP/1.1\r\nHost: h\r\nA B: 1\r\n\r\n", &msg), 400);
  assert_int_equal(refusal("GET / HTTP/1.1\r\n\r\n", &msg), 400);
  assert_string_equal(msg, "missing host header");
  assert_int_equal(refusal("GET / HTTP/1.0\r\n\r\n", &msg), 0);
  assert_int_equal(refusal("GET / HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n", &msg), 400);
  assert_string_equal(msg, "duplicate host header");
  assert_int_equal(refusal("GET / HTTP/9.9\r\nHost: h\r\n\r\n", &msg), 505);
  assert_string_equal(msg, "unsupported http version");
  assert_int_equal(refusal("GET / HTTP/1.2\r\nHost: h\r\n\r\n", &msg), 0);
  /* one transfer coding, chunked, at most once; nothing else (nginx: 501) */
  assert_int_equal(refusal("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked"
                           "\r\n\r\n0\r\n\r\n", &msg), 501);
  assert_string_equal(msg, "unsupported transfer coding");
  assert_int_equal(refusal("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &msg), 400);
  assert_string_equal(msg, "chunked more than once");
  assert_int_equal(refusal("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  Chunked "
                           "\r\n\r\n0\r\n\r\n", &msg), 0);
  /* a Host trailer is a trailer, not a second Host */
  assert_int_equal(refusal("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked"
                           "\r\n\r\n0\r\nHost: evil\r\n\r\n", &msg), 0);
}

/* Feed req one byte per call: the first result other than MORE. */
static int feed_bytewise(evlua_http *h, const char *req) {
  size_t used;
  int r = EVLUA_HTTP_MORE;
  for (size_t i = 0; req[i] != '\0' && r == EVLUA_HTTP_MORE; i++)
    r = evlua_http_parse(h, req + i, 1, 0, &used);
  return r;
}

static void refuses_chunk_data_without_its_crlf(void **state) {
  (void)state;
  const char *head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  /* the bytes after "abc" must be CRLF: anything else would let a hidden
  ** request through ("abcXX0..." read as a 3-byte chunk then more) */
  const char *bad[] = { "3\r\nabcXX0\r\n\r\n", "3\r\nabc\rX0\r\n\r\n",
                        "3\r\nabc\n\r0\r\n\r\n", "2\r\nab\r\n1\r\ncZ\n0\r\n\r\n" };
  char req[256];
  const char *msg;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    snprintf(req, sizeof req, "%s%s", head, bad[i]);
    assert_int_equal(refusal(req, &msg), 400);
    assert_string_equal(msg, "chunk data not followed by CRLF");
    evlua_http h;
    evlua_http_init(&h, 0);
    assert_int_equal(feed_bytewise(&h, req), EVLUA_HTTP_ERROR);
    assert_int_equal(evlua_http_error(&h, &msg), 400);
    assert_string_equal(msg, "chunk data not followed by CRLF");
    evlua_http_release(&h);
  }
  snprintf(req, sizeof req, "%s%s", head, "3\r\nabc\r\n0\r\n\r\n");
  assert_int_equal(refusal(req, &msg), 0);
}

static void ends_a_response_body_at_eof(void **state) {
  (void)state;
  evlua_http h;
  evlua_http_init(&h, 1);
  const char *resp = "HTTP/1.0 200 OK\r\nServer: s\r\n\r\nto the end";
  size_t used;
  assert_int_equal(feed(&h, resp, &used), EVLUA_HTTP_MORE);
  assert_int_equal(evlua_http_parse(&h, NULL, 0, 1, &used), EVLUA_HTTP_MESSAGE);
  assert_int_equal(h.p.status_code, 200);
  assert_memory_equal(evlua_http_bytes(&h.url), "OK", 2);
  assert_int_equal(evlua_buffer_len(&h.body), 10);
  evlua_http_message_done(&h);
  evlua_http_release(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(parses_a_request),
    cmocka_unit_test(stops_at_the_end_of_each_pipelined_message),
    cmocka_unit_test(parses_byte_by_byte_with_a_chunked_body),
    cmocka_unit_test(enforces_each_limit_at_and_past_it),
    cmocka_unit_test(reports_expect_continue_before_the_body),
    cmocka_unit_test(refuses_what_rfc_9112_refuses),
    cmocka_unit_test(refuses_chunk_data_without_its_crlf),
    cmocka_unit_test(ends_a_response_body_at_eof),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
