/*
** test_buffer.c - unit tests for src/core/buffer.c
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "buffer.h"

static void append_peek_consume(void **state) {
  (void)state;
  evlua_buffer b;
  evlua_buffer_init(&b);
  assert_int_equal(evlua_buffer_len(&b), 0);
  assert_int_equal(evlua_buffer_append(&b, "hello world", 11), 0);
  assert_int_equal(evlua_buffer_len(&b), 11);
  assert_memory_equal(evlua_buffer_peek(&b), "hello world", 11);
  evlua_buffer_consume(&b, 6);
  assert_int_equal(evlua_buffer_len(&b), 5);
  assert_memory_equal(evlua_buffer_peek(&b), "world", 5);
  evlua_buffer_consume(&b, 5);
  assert_int_equal(evlua_buffer_len(&b), 0);
  assert_int_equal(b.start, 0);   /* offsets reset when emptied */
  evlua_buffer_free(&b);
}

static void grows_and_keeps_content(void **state) {
  (void)state;
  evlua_buffer b;
  evlua_buffer_init(&b);
  char chunk[1000];
  for (int i = 0; i < 1000; i++) {
    memset(chunk, 'a' + i % 26, sizeof chunk);
    assert_int_equal(evlua_buffer_append(&b, chunk, sizeof chunk), 0);
  }
  assert_int_equal(evlua_buffer_len(&b), 1000000);
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(evlua_buffer_peek(&b)[0], 'a' + i % 26);
    assert_int_equal(evlua_buffer_peek(&b)[999], 'a' + i % 26);
    evlua_buffer_consume(&b, 1000);
  }
  evlua_buffer_free(&b);
}

static void reserve_compacts_before_growing(void **state) {
  (void)state;
  evlua_buffer b;
  evlua_buffer_init(&b);
  assert_non_null(evlua_buffer_reserve(&b, 100));
  size_t cap = b.cap;
  char *data = b.data;
  memset(b.data, 'x', cap);
  evlua_buffer_commit(&b, cap);
  evlua_buffer_consume(&b, cap - 10);   /* 10 bytes left at the end */
  char *space = evlua_buffer_reserve(&b, cap - 20);
  assert_non_null(space);
  assert_ptr_equal(b.data, data);       /* no reallocation */
  assert_int_equal(b.cap, cap);
  assert_int_equal(b.start, 0);
  assert_memory_equal(evlua_buffer_peek(&b), "xxxxxxxxxx", 10);
  evlua_buffer_free(&b);
}

static void shrink_releases_only_when_empty(void **state) {
  (void)state;
  evlua_buffer b;
  evlua_buffer_init(&b);
  evlua_buffer_append(&b, "abc", 3);
  evlua_buffer_shrink(&b);
  assert_non_null(b.data);
  evlua_buffer_consume(&b, 3);
  evlua_buffer_shrink(&b);
  assert_null(b.data);
  assert_int_equal(b.cap, 0);
  assert_int_equal(evlua_buffer_append(&b, "again", 5), 0);   /* usable */
  assert_memory_equal(evlua_buffer_peek(&b), "again", 5);
  evlua_buffer_free(&b);
}

static void find_from_offsets(void **state) {
  (void)state;
  evlua_buffer b;
  evlua_buffer_init(&b);
  assert_int_equal(evlua_buffer_find(&b, '\n', 0), -1);
  evlua_buffer_append(&b, "xxline1\nline2\n", 14);
  evlua_buffer_consume(&b, 2);
  assert_int_equal(evlua_buffer_find(&b, '\n', 0), 5);
  assert_int_equal(evlua_buffer_find(&b, '\n', 5), 5);
  assert_int_equal(evlua_buffer_find(&b, '\n', 6), 11);
  assert_int_equal(evlua_buffer_find(&b, '\n', 12), -1);
  assert_int_equal(evlua_buffer_find(&b, '\n', 100), -1);
  assert_int_equal(evlua_buffer_find(&b, 'z', 0), -1);
  evlua_buffer_free(&b);
}

static void empty_append_is_a_no_op(void **state) {
  (void)state;
  evlua_buffer b;
  evlua_buffer_init(&b);
  assert_int_equal(evlua_buffer_append(&b, "", 0), 0);
  assert_null(b.data);
  assert_null(evlua_buffer_reserve(&b, (size_t)-1));   /* impossible size */
  evlua_buffer_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(append_peek_consume),
    cmocka_unit_test(grows_and_keeps_content),
    cmocka_unit_test(reserve_compacts_before_growing),
    cmocka_unit_test(shrink_releases_only_when_empty),
    cmocka_unit_test(find_from_offsets),
    cmocka_unit_test(empty_append_is_a_no_op),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
