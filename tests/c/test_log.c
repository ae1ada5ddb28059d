/*
** test_log.c - unit tests for src/core/log.c
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static void level_names_round_trip(void **state) {
  (void)state;
  assert_int_equal(evlua_log_level_parse("error"), EVLUA_LOG_ERROR);
  assert_int_equal(evlua_log_level_parse("warn"), EVLUA_LOG_WARN);
  assert_int_equal(evlua_log_level_parse("info"), EVLUA_LOG_INFO);
  assert_int_equal(evlua_log_level_parse("debug"), EVLUA_LOG_DEBUG);
  assert_int_equal(evlua_log_level_parse("ERROR"), -1);
  assert_int_equal(evlua_log_level_parse(""), -1);
  assert_string_equal(evlua_log_level_name(EVLUA_LOG_WARN), "WARN");
  assert_string_equal(evlua_log_level_name(42), "?");
  assert_string_equal(evlua_log_level_name(-1), "?");
}

static void prefix_has_date_millis_and_level(void **state) {
  (void)state;
  char buf[64];
  /* 2026-11-29 04:05:06.789 UTC */
  size_t n = evlua_log_prefix(buf, sizeof buf, 1795925106.789, EVLUA_LOG_INFO);
  assert_string_equal(buf, "2026-11-29 04:05:06.789 INFO ");
  assert_int_equal(n, strlen(buf));
}

/* Before the epoch the fraction is negative: the millis clamp at 0. */
static void prefix_clamps_negative_millis(void **state) {
  (void)state;
  char buf[64];
  evlua_log_prefix(buf, sizeof buf, -0.5, EVLUA_LOG_ERROR);
  assert_string_equal(buf, "1970-01-01 00:00:00.000 ERROR ");
}

static void prefix_reports_a_short_buffer(void **state) {
  (void)state;
  char buf[10];
  assert_int_equal(evlua_log_prefix(buf, sizeof buf, 0, EVLUA_LOG_INFO), 0);
}

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char data[4096];
  size_t n = fread(data, 1, sizeof data - 1, f);
  data[n] = '\0';
  fclose(f);
  return data;
}

static void file_gets_lines_above_the_threshold_only(void **state) {
  (void)state;
  char path[] = "/tmp/evlua-test-log-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  char err[256];
  assert_int_equal(evlua_log_open(path, err, sizeof err), 0);
  int old = evlua_log_set_level(EVLUA_LOG_WARN);
  evlua_log_write(EVLUA_LOG_ERROR, 1795925106.0, "first", 5);
  evlua_log_write(EVLUA_LOG_INFO, 1795925106.0, "dropped", 7);
  evlua_log(EVLUA_LOG_WARN, "second %d", 2);
  evlua_log_set_level(old);
  assert_int_equal(evlua_log_open(NULL, err, sizeof err), 0);
  char *data = read_all(path);
  assert_non_null(strstr(data, "2026-11-29 04:05:06.000 ERROR first\n"));
  assert_null(strstr(data, "dropped"));
  assert_non_null(strstr(data, " WARN second 2\n"));
  unlink(path);
}

static char *temp_file(char *path) {
  strcpy(path, "/tmp/evlua-test-log-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  return path;
}

/* A second file replaces the first (whose fd is closed); NULL goes back
** to stderr. */
static void reopening_moves_the_lines_to_the_new_file(void **state) {
  (void)state;
  char a[32], b[32], err[256];
  assert_int_equal(evlua_log_open(temp_file(a), err, sizeof err), 0);
  evlua_log(EVLUA_LOG_ERROR, "to a");
  assert_int_equal(evlua_log_open(temp_file(b), err, sizeof err), 0);
  evlua_log(EVLUA_LOG_ERROR, "to b");
  assert_int_equal(evlua_log_open(NULL, err, sizeof err), 0);
  char *data = read_all(a);
  assert_non_null(strstr(data, " ERROR to a\n"));
  assert_null(strstr(data, "to b"));
  data = read_all(b);
  assert_non_null(strstr(data, " ERROR to b\n"));
  assert_null(strstr(data, "to a"));
  unlink(a);
  unlink(b);
}

/* evlua_log formats into 1024 bytes: a longer message is cut to 1023,
** still one whole line. */
static void long_messages_are_cut_to_one_line(void **state) {
  (void)state;
  char path[32], err[256];
  static char big[3000];
  memset(big, 'x', sizeof big - 1);
  assert_int_equal(evlua_log_open(temp_file(path), err, sizeof err), 0);
  evlua_log(EVLUA_LOG_ERROR, "%s", big);
  assert_int_equal(evlua_log_open(NULL, err, sizeof err), 0);
  char *data = read_all(path);
  char *msg = strstr(data, " ERROR ");
  assert_non_null(msg);
  msg += strlen(" ERROR ");
  assert_int_equal(strspn(msg, "x"), 1023);
  assert_string_equal(msg + 1023, "\n");
  unlink(path);
}

static void open_failure_is_reported(void **state) {
  (void)state;
  char err[256];
  assert_int_equal(evlua_log_open("/nonexistent/dir/log", err, sizeof err), -1);
  assert_non_null(strstr(err, "/nonexistent/dir/log: "));
}

int main(void) {
  setenv("TZ", "UTC", 1);
  tzset();
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(level_names_round_trip),
    cmocka_unit_test(prefix_has_date_millis_and_level),
    cmocka_unit_test(prefix_clamps_negative_millis),
    cmocka_unit_test(prefix_reports_a_short_buffer),
    cmocka_unit_test(file_gets_lines_above_the_threshold_only),
    cmocka_unit_test(reopening_moves_the_lines_to_the_new_file),
    cmocka_unit_test(long_messages_are_cut_to_one_line),
    cmocka_unit_test(open_failure_is_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
