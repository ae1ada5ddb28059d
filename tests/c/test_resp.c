/*
** test_resp.c - unit tests for src/core/resp.c
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

static const resp_limits limits = { 100, 10, 3 };

static resp_scanner *scanner(void) {
  resp_scanner *sc = malloc(resp_scanner_size(limits.max_depth));
  resp_scanner_reset(sc);
  return sc;
}

/* Scan s whole; then byte by byte from a fresh scanner: same answer. */
static long scan(const char *s) {
  size_t len = strlen(s);
  resp_scanner *whole = scanner(), *bytes = scanner();
  long n = resp_scan(whole, s, len, &limits);
  long m = RESP_NEED_MORE;
  for (size_t have = 1; have <= len && m == RESP_NEED_MORE; have++)
    m = resp_scan(bytes, s, have, &limits);
  assert_int_equal(m, n);
  free(whole);
  free(bytes);
  return n;
}

static void scalars(void **state) {
  (void)state;
  resp_token t;
  assert_int_equal(resp_read_token("+OK\r\n", 5, &limits, &t), 5);
  assert_int_equal(t.type, RESP_STATUS);
  assert_int_equal(t.len, 2);
  assert_memory_equal(t.s, "OK", 2);
  assert_int_equal(resp_read_token("-ERR x\r\n", 8, &limits, &t), 8);
  assert_int_equal(t.type, RESP_ERROR);
  assert_int_equal(resp_read_token(":-42\r\n", 6, &limits, &t), 6);
  assert_int_equal(t.type, RESP_INTEGER);
  assert_true(t.n == -42);
  assert_int_equal(resp_read_token("$3\r\na\0b\r\n", 9, &limits, &t), 9);
  assert_int_equal(t.type, RESP_BULK);
  assert_memory_equal(t.s, "a\0b", 3);
  assert_int_equal(resp_read_token("$-1\r\n", 5, &limits, &t), 5);
  assert_int_equal(t.type, RESP_NIL);
  assert_int_equal(resp_read_token("*-1\r\n", 5, &limits, &t), 5);
  assert_int_equal(t.type, RESP_NIL);
  assert_int_equal(resp_read_token("$0\r\n\r\n", 6, &limits, &t), 6);
  assert_int_equal(t.len, 0);
}

static void integers(void **state) {
  (void)state;
  resp_token t;
  const char *max = ":9223372036854775807\r\n", *min = ":-9223372036854775808\r\n";
  assert_true(resp_read_token(max, strlen(max), &limits, &t) > 0);
  assert_true(t.n == INT64_MAX);
  assert_true(resp_read_token(min, strlen(min), &limits, &t) > 0);
  assert_true(t.n == INT64_MIN);
  const char *bad[] = { ":9223372036854775808\r\n", ":-9223372036854775809\r\n",
                        ":\r\n", ":-\r\n", ":1a\r\n", ": 1\r\n", ":+1\r\n",
                        ":99999999999999999999999999\r\n" };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(resp_read_token(bad[i], strlen(bad[i]), &limits, &t),
                     RESP_BAD_INTEGER);
}

static void malformed(void **state) {
  (void)state;
  assert_int_equal(scan("?x\r\n"), RESP_BAD_TYPE);
  assert_int_equal(scan("+OK\n"), RESP_BAD_LINE);
  assert_int_equal(scan("$-2\r\n"), RESP_BAD_LENGTH);
  assert_int_equal(scan("*-2\r\n"), RESP_BAD_LENGTH);
  assert_int_equal(scan("$3\r\nabcXY"), RESP_BAD_BULK_END);
  assert_int_equal(scan("$3x\r\nabc\r\n"), RESP_BAD_INTEGER);
  /* "\n" right after the type byte; "\r" then something else */
  assert_int_equal(scan("+\n"), RESP_BAD_LINE);
  assert_int_equal(scan("$3\r\nabc\rX"), RESP_BAD_BULK_END);
}

/* Every error code has its own message (lredis.c passes it on as the
** "protocol" failure's text); anything else is "invalid reply". */
static void error_messages(void **state) {
  (void)state;
  static const struct { long code; const char *text; } known[] = {
    { RESP_BAD_TYPE, "invalid reply type" },
    { RESP_BAD_LINE, "line not ended by CRLF" },
    { RESP_BAD_INTEGER, "invalid integer" },
    { RESP_BAD_LENGTH, "invalid length" },
    { RESP_BAD_BULK_END, "bulk string not ended by CRLF" },
    { RESP_TOO_LONG, "string too long" },
    { RESP_TOO_MANY, "too many elements" },
    { RESP_TOO_DEEP, "nesting too deep" },
  };
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    assert_string_equal(resp_strerror(known[i].code), known[i].text);
  assert_string_equal(resp_strerror(-9), "invalid reply");
  assert_string_equal(resp_strerror(1), "invalid reply");
}

static void limits_at_and_past(void **state) {
  (void)state;
  char s[300];
  /* strings: 100 bytes fit, 101 do not (bulk and simple) */
  memset(s, 0, sizeof s);
  strcpy(s, "$100\r\n");
  memset(s + 6, 'x', 100);
  strcpy(s + 106, "\r\n");
  assert_int_equal(scan(s), 108);
  assert_int_equal(scan("$101\r\n"), RESP_TOO_LONG);
  memset(s, 0, sizeof s);
  s[0] = '+';
  memset(s + 1, 'x', 100);
  strcpy(s + 101, "\r\n");
  assert_int_equal(scan(s), 103);
  s[0] = '+';
  memset(s + 1, 'x', 101);
  strcpy(s + 102, "\r\n");
  assert_int_equal(scan(s), RESP_TOO_LONG);
  /* elements: 10 fit, 11 do not */
  assert_int_equal(scan("*10\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n"),
                   5 + 10 * 4);
  assert_int_equal(scan("*11\r\n"), RESP_TOO_MANY);
  /* nesting: 3 levels fit, 4 do not */
  assert_int_equal(scan("*1\r\n*1\r\n*1\r\n:1\r\n"), 16);
  assert_int_equal(scan("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"), RESP_TOO_DEEP);
}

static void arrays_and_resuming(void **state) {
  (void)state;
  const char *r = "*3\r\n$1\r\na\r\n*0\r\n*2\r\n$-1\r\n-ERR e\r\n+next\r\n";
  long n = scan(r);
  assert_int_equal(n, (long)strlen(r) - 7);   /* the next reply stays */
  /* a scan resumed after a partial one ends at the same place */
  resp_scanner *sc = scanner();
  assert_int_equal(resp_scan(sc, r, 10, &limits), RESP_NEED_MORE);
  assert_true(sc->pos > 0);
  assert_int_equal(resp_scan(sc, r, strlen(r), &limits), n);
  assert_int_equal(sc->pos, 0);   /* ready for the next reply */
  assert_int_equal(resp_scan(sc, r + n, 7, &limits), 7);
  free(sc);
}

static void encoding(void **state) {
  (void)state;
  evlua_buffer b;
  evlua_buffer_init(&b);
  assert_int_equal(resp_put_array_header(&b, 2), 0);
  assert_int_equal(resp_put_bulk_header(&b, 0), 0);
  assert_int_equal(resp_put_bulk_header(&b, 1234567890123), 0);
  assert_int_equal(resp_put_bulk(&b, "a\0\r\n", 4), 0);
  const char *want = "*2\r\n$0\r\n$1234567890123\r\n$4\r\na\0\r\n\r\n";
  size_t want_len = 2 + 2 + 2 + 2 + 14 + 2 + 2 + 2 + 4 + 2;
  assert_int_equal(evlua_buffer_len(&b), want_len);
  assert_memory_equal(evlua_buffer_peek(&b), want, want_len);
  evlua_buffer_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(scalars),
    cmocka_unit_test(integers),
    cmocka_unit_test(malformed),
    cmocka_unit_test(error_messages),
    cmocka_unit_test(limits_at_and_past),
    cmocka_unit_test(arrays_and_resuming),
    cmocka_unit_test(encoding),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
