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

/* A block of the read size goes back to its buffer's cache when freed,
** and the next buffer of that cache takes it instead of malloc's. */
static void read_sized_blocks_are_reused_through_the_cache(void **state) {
  (void)state;
  evlua_block_cache cache = { .n = 0 };
  evlua_buffer a, b;
  evlua_buffer_init_cached(&a, &cache);
  assert_non_null(evlua_buffer_reserve(&a, 64 * 1024));
  assert_int_equal(a.cap, 64 * 1024);
  char *block = a.data;
  evlua_buffer_free(&a);
  assert_ptr_equal(a.cache, &cache);     /* free keeps the cache */
  if (EVLUA_ASAN) {                      /* the cache is off there */
    assert_int_equal(cache.n, 0);
    return;
  }
  assert_int_equal(cache.n, 1);
  evlua_buffer_init_cached(&b, &cache);
  assert_non_null(evlua_buffer_reserve(&b, 64 * 1024));
  assert_ptr_equal(b.data, block);
  assert_int_equal(cache.n, 0);
  evlua_buffer_free(&b);
  evlua_block_cache_release(&cache);
  assert_int_equal(cache.n, 0);
}

/* Other sizes, and buffers without a cache, never fill one. */
static void only_read_sized_blocks_of_cached_buffers_are_kept(void **state) {
  (void)state;
  evlua_block_cache cache = { .n = 0 };
  evlua_buffer a, b;
  evlua_buffer_init_cached(&a, &cache);
  assert_non_null(evlua_buffer_reserve(&a, 1000));
  evlua_buffer_free(&a);
  evlua_buffer_init(&b);
  assert_null(b.cache);
  assert_non_null(evlua_buffer_reserve(&b, 64 * 1024));
  evlua_buffer_free(&b);
  assert_int_equal(cache.n, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(append_peek_consume),
    cmocka_unit_test(grows_and_keeps_content),
    cmocka_unit_test(reserve_compacts_before_growing),
    cmocka_unit_test(shrink_releases_only_when_empty),
    cmocka_unit_test(find_from_offsets),
    cmocka_unit_test(empty_append_is_a_no_op),
    cmocka_unit_test(read_sized_blocks_are_reused_through_the_cache),
    cmocka_unit_test(only_read_sized_blocks_of_cached_buffers_are_kept),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
