/*
** test_msgpack.c - unit tests for src/core/msgpack.c
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "msgpack.h"

/* Encode v, compare with the expected bytes, read it back. */
static void int_round_trip(int64_t v, const char *bytes, size_t n) {
  evlua_buffer b;
  evlua_buffer_init(&b);
  assert_int_equal(mp_put_int(&b, v), 0);
  assert_int_equal(evlua_buffer_len(&b), n);
  assert_memory_equal(evlua_buffer_peek(&b), bytes, n);
  mp_token t;
  assert_int_equal(mp_read_token(evlua_buffer_peek(&b), n, &t), (long)n);
  assert_int_equal(t.type, MP_INT);
  assert_true(t.v.i == v);
  /* every shorter prefix asks for more bytes */
  for (size_t i = 0; i < n; i++)
    assert_int_equal(mp_read_token(evlua_buffer_peek(&b), i, &t), MP_NEED_MORE);
  evlua_buffer_free(&b);
}

static void integers_use_the_smallest_form(void **state) {
  (void)state;
  int_round_trip(0, "\x00", 1);
  int_round_trip(127, "\x7f", 1);
  int_round_trip(128, "\xcc\x80", 2);
  int_round_trip(255, "\xcc\xff", 2);
  int_round_trip(256, "\xcd\x01\x00", 3);
  int_round_trip(65535, "\xcd\xff\xff", 3);
  int_round_trip(65536, "\xce\x00\x01\x00\x00", 5);
  int_round_trip(4294967295LL, "\xce\xff\xff\xff\xff", 5);
  int_round_trip(4294967296LL, "\xcf\x00\x00\x00\x01\x00\x00\x00\x00", 9);
  int_round_trip(INT64_MAX, "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9);
  int_round_trip(-1, "\xff", 1);
  int_round_trip(-32, "\xe0", 1);
  int_round_trip(-33, "\xd0\xdf", 2);
  int_round_trip(-128, "\xd0\x80", 2);
  int_round_trip(-129, "\xd1\xff\x7f", 3);
  int_round_trip(-32768, "\xd1\x80\x00", 3);
  int_round_trip(-32769, "\xd2\xff\xff\x7f\xff", 5);
  int_round_trip(INT32_MIN, "\xd2\x80\x00\x00\x00", 5);
  int_round_trip((int64_t)INT32_MIN - 1, "\xd3\xff\xff\xff\xff\x7f\xff\xff\xff", 9);
  int_round_trip(INT64_MIN, "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9);
}

static void big_unsigned_is_reported_as_uint(void **state) {
  (void)state;
  mp_token t;
  assert_int_equal(mp_read_token("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, &t), 9);
  assert_int_equal(t.type, MP_UINT);
  assert_true(t.v.u == UINT64_MAX);
}

static void floats_keep_their_bits(void **state) {
  (void)state;
  double values[] = { 0.0, -0.0, 1.5, -2.25, 9007199254740993.0, INFINITY, NAN };
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    evlua_buffer b;
    evlua_buffer_init(&b);
    assert_int_equal(mp_put_double(&b, values[i]), 0);
    assert_int_equal(evlua_buffer_len(&b), 9);
    mp_token t;
    assert_int_equal(mp_read_token(evlua_buffer_peek(&b), 9, &t), 9);
    assert_int_equal(t.type, MP_FLOAT);
    assert_memory_equal(&t.v.f, &values[i], sizeof(double));
    evlua_buffer_free(&b);
  }
  mp_token t;   /* float 32: 1.5f */
  assert_int_equal(mp_read_token("\xca\x3f\xc0\x00\x00", 5, &t), 5);
  assert_true(t.type == MP_FLOAT && t.v.f == 1.5);
}

static void strings_pick_their_header_by_length(void **state) {
  (void)state;
  static char data[70000];
  memset(data, 'q', sizeof data);
  size_t lengths[] = { 0, 31, 32, 255, 256, 65535, 65536 };
  size_t headers[] = { 1, 1, 2, 2, 3, 3, 5 };
  for (size_t i = 0; i < 7; i++) {
    evlua_buffer b;
    evlua_buffer_init(&b);
    assert_int_equal(mp_put_str(&b, data, lengths[i]), 0);
    assert_int_equal(evlua_buffer_len(&b), headers[i] + lengths[i]);
    mp_token t;
    long n = mp_read_token(evlua_buffer_peek(&b), evlua_buffer_len(&b), &t);
    assert_int_equal(n, (long)(headers[i] + lengths[i]));
    assert_int_equal(t.type, MP_STR);
    assert_int_equal(t.v.s.len, lengths[i]);
    assert_int_equal(mp_read_token(evlua_buffer_peek(&b), evlua_buffer_len(&b) - 1, &t),
                     MP_NEED_MORE);
    evlua_buffer_free(&b);
  }
}

static void value_length_handles_nesting_and_truncation(void **state) {
  (void)state;
  evlua_buffer b;
  evlua_buffer_init(&b);
  /* [1, {"k": [nil, true]}, "s"] */
  mp_put_array(&b, 3);
  mp_put_int(&b, 1);
  mp_put_map(&b, 1);
  mp_put_str(&b, "k", 1);
  mp_put_array(&b, 2);
  mp_put_nil(&b);
  mp_put_bool(&b, 1);
  mp_put_str(&b, "s", 1);
  size_t n = evlua_buffer_len(&b);
  const char *p = evlua_buffer_peek(&b);
  assert_int_equal(mp_value_length(p, n, 8), (long)n);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(mp_value_length(p, i, 8), MP_NEED_MORE);
  assert_int_equal(mp_value_length(p, n, 3), (long)n);   /* 3 levels deep */
  assert_int_equal(mp_value_length(p, n, 2), MP_TOO_DEEP);
  evlua_buffer_free(&b);
}

static void invalid_and_empty_inputs(void **state) {
  (void)state;
  mp_token t;
  assert_int_equal(mp_read_token("\xc1", 1, &t), MP_INVALID);
  assert_int_equal(mp_value_length("\x92\xc1\x01", 3, 8), MP_INVALID);
  assert_int_equal(mp_value_length("", 0, 8), MP_NEED_MORE);
  assert_int_equal(mp_value_length("\x90", 1, 8), 1);            /* [] */
  assert_int_equal(mp_value_length("\x80", 1, 8), 1);            /* {} */
  /* a huge declared count cannot be complete in a few bytes */
  assert_int_equal(mp_value_length("\xdd\xff\xff\xff\xff\x01", 6, 8), MP_NEED_MORE);
  assert_int_equal(mp_read_token("\xd4\x05\x07", 3, &t), 3);     /* fixext 1 */
  assert_int_equal(t.type, MP_EXT);
  assert_int_equal(t.v.s.ext_type, 5);
  assert_int_equal(t.v.s.len, 1);
}

/* Fed a growing prefix of a value one byte at a time, the scanner never
** walks a byte twice (pos only grows and stays within what it was given)
** and ends with the value's length. */
static void scanner_resumes_where_it_stopped(void **state) {
  (void)state;
  evlua_buffer b;
  evlua_buffer_init(&b);
  /* [0, 1, "m", [1, "two", {"k": [nil]}, <bin of 300 bytes>]] */
  char blob[300];
  memset(blob, 7, sizeof blob);
  mp_put_array(&b, 4);
  mp_put_int(&b, 0);
  mp_put_int(&b, 1);
  mp_put_str(&b, "m", 1);
  mp_put_array(&b, 4);
  mp_put_int(&b, 1);
  mp_put_str(&b, "two", 3);
  mp_put_map(&b, 1);
  mp_put_str(&b, "k", 1);
  mp_put_array(&b, 1);
  mp_put_nil(&b);
  mp_put_bin(&b, blob, sizeof blob);
  size_t n = evlua_buffer_len(&b);
  const char *p = evlua_buffer_peek(&b);
  mp_scanner sc;
  mp_scan_start(&sc);
  size_t last = 0;
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(mp_scan(&sc, p, i, 8), MP_NEED_MORE);
    assert_true(sc.pos >= last && sc.pos <= i);
    assert_true(sc.need > i && sc.need <= n);   /* a true lower bound */
    last = sc.pos;
  }
  assert_int_equal(mp_scan(&sc, p, n, 8), (long)n);
  /* once the bin's header is in, the bound is the whole length */
  mp_scan_start(&sc);
  assert_int_equal(mp_scan(&sc, p, n - sizeof blob, 8), MP_NEED_MORE);
  assert_int_equal(sc.need, n);
  evlua_buffer_free(&b);
}

/* Headers announce sizes long before the bytes come. */
static void scanner_bounds_from_headers(void **state) {
  (void)state;
  mp_scanner sc;
  /* str 32 of 100,000,000 bytes */
  mp_scan_start(&sc);
  assert_int_equal(mp_scan(&sc, "\xdb\x05\xf5\xe1\x00", 5, 8), MP_NEED_MORE);
  assert_true(sc.need == 5 + 100000000ULL);
  /* an array of 2^32-1 items, each at least a byte */
  mp_scan_start(&sc);
  assert_int_equal(mp_scan(&sc, "\xdd\xff\xff\xff\xff", 5, 8), MP_NEED_MORE);
  assert_true(sc.need == 5 + 0xffffffffULL);
  /* a map of 2^32-1 pairs: twice as many values */
  mp_scan_start(&sc);
  assert_int_equal(mp_scan(&sc, "\xdf\xff\xff\xff\xff", 5, 8), MP_NEED_MORE);
  assert_true(sc.need == 5 + 2 * 0xffffffffULL);
  /* [bin 32 header cut short, x]: the header's 5 bytes plus x's one */
  mp_scan_start(&sc);
  assert_int_equal(mp_scan(&sc, "\x92\xc6\x00", 3, 8), MP_NEED_MORE);
  assert_true(sc.need == 1 + 5 + 1);
  /* ext 8 of 200 bytes, type byte still missing */
  mp_scan_start(&sc);
  assert_int_equal(mp_scan(&sc, "\xc7\xc8", 2, 8), MP_NEED_MORE);
  assert_true(sc.need == 3);
  assert_int_equal(mp_scan(&sc, "\xc7\xc8\x01", 3, 8), MP_NEED_MORE);
  assert_true(sc.need == 3 + 200);
  /* nothing yet: a byte */
  mp_scan_start(&sc);
  assert_int_equal(mp_scan(&sc, "", 0, 8), MP_NEED_MORE);
  assert_true(sc.need == 1);
  /* too deep is known as soon as the container header is */
  mp_scan_start(&sc);
  assert_int_equal(mp_scan(&sc, "\x91\x91\x91", 3, 2), MP_TOO_DEEP);
}

/* mp_valid_utf8 decides whether a Lua string encodes as str or bin: only
** well-formed UTF-8 is str. */
/* The check skips ASCII a word at a time: a bad byte, or a good
** sequence, at any offset and in the tail is still seen. */
static void utf8_check_sees_every_byte_of_long_strings(void **state) {
  (void)state;
  char s[40];
  for (size_t len = 1; len <= sizeof s; len++) {
    for (size_t at = 0; at < len; at++) {
      memset(s, 'a', len);
      s[at] = (char)0xff;   /* never valid */
      assert_int_equal(mp_valid_utf8(s, len), 0);
      s[at] = (char)0xc3;   /* a lone lead byte: valid only with a tail */
      assert_int_equal(mp_valid_utf8(s, len), 0);
      if (at + 1 < len) {
        s[at + 1] = (char)0xa9;   /* U+00E9 */
        assert_int_equal(mp_valid_utf8(s, len), 1);
      }
    }
    memset(s, 'a', len);
    assert_int_equal(mp_valid_utf8(s, len), 1);
  }
}

static void utf8_is_checked_strictly(void **state) {
  (void)state;
  static const struct { const char *s; int valid; } cases[] = {
    { "plain ascii", 1 },
    { "\xc3\xa9t\xc3\xa9", 1 },          /* 2 bytes: "ete" with accents */
    { "\xe2\x82\xac", 1 },                /* 3 bytes: euro sign */
    { "\xf0\x9f\x98\x80", 1 },            /* 4 bytes: U+1F600 */
    { "\xe2\x82", 0 },                    /* cut short */
    { "\xe2\x28\xa1", 0 },                /* not a continuation byte */
    { "\xc0\xaf", 0 },                    /* overlong "/" */
    { "\xed\xa0\x80", 0 },                /* surrogate U+D800 */
    { "\xf4\x90\x80\x80", 0 },            /* above U+10FFFF */
    { "\xf8\x88\x80\x80\x80", 0 },        /* 5-byte form */
    { "\x80", 0 },                        /* lone continuation byte */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    assert_int_equal(mp_valid_utf8(cases[i].s, strlen(cases[i].s)),
                     cases[i].valid);
}

/* A depth limit above MP_MAX_DEPTH is taken as MP_MAX_DEPTH. */
static void scan_depth_is_capped(void **state) {
  (void)state;
  static char deep[MP_MAX_DEPTH + 2];
  memset(deep, 0x91, sizeof deep - 1);   /* arrays of one element */
  deep[sizeof deep - 1] = 0x01;
  mp_scanner sc;
  mp_scan_start(&sc);
  assert_int_equal(mp_scan(&sc, deep, sizeof deep, 1 << 30), MP_TOO_DEEP);
  mp_scan_start(&sc);
  /* MP_MAX_DEPTH levels are fine */
  assert_int_equal(mp_scan(&sc, deep + 1, sizeof deep - 1, 1 << 30),
                   (long)(sizeof deep - 1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(integers_use_the_smallest_form),
    cmocka_unit_test(big_unsigned_is_reported_as_uint),
    cmocka_unit_test(floats_keep_their_bits),
    cmocka_unit_test(strings_pick_their_header_by_length),
    cmocka_unit_test(value_length_handles_nesting_and_truncation),
    cmocka_unit_test(invalid_and_empty_inputs),
    cmocka_unit_test(scanner_resumes_where_it_stopped),
    cmocka_unit_test(scanner_bounds_from_headers),
    cmocka_unit_test(utf8_is_checked_strictly),
    cmocka_unit_test(utf8_check_sees_every_byte_of_long_strings),
    cmocka_unit_test(scan_depth_is_capped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
