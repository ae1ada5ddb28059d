/*
** test_paths.c - unit tests for src/core/paths.c
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "paths.h"

static void search_path_without_override(void **state) {
  (void)state;
  char out[256];
  assert_int_equal(evlua_paths_search(NULL, "/x/lua", "STOCK", out, sizeof out), 0);
  assert_string_equal(out, "/x/lua/?.lua;/x/lua/?/init.lua;STOCK");
}

static void override_expands_double_semicolon(void **state) {
  (void)state;
  char out[256];
  assert_int_equal(evlua_paths_search("/mine/?.lua;;", "/x", "S", out, sizeof out), 0);
  assert_string_equal(out, "/mine/?.lua;/x/?.lua;/x/?/init.lua;S;");
  assert_int_equal(evlua_paths_search(";;/last/?.lua", "/x", "S", out, sizeof out), 0);
  assert_string_equal(out, ";/x/?.lua;/x/?/init.lua;S;/last/?.lua");
}

static void override_without_default_is_taken_as_is(void **state) {
  (void)state;
  char out[64];
  assert_int_equal(evlua_paths_search("/only/?.lua", "/x", "S", out, sizeof out), 0);
  assert_string_equal(out, "/only/?.lua");
}

static void too_small_buffers_fail(void **state) {
  (void)state;
  char out[16];
  assert_int_equal(evlua_paths_search(NULL, "/a/long/dir", "S", out, sizeof out), -1);
  assert_int_equal(evlua_paths_search("a;;", "/a/long/dir", "S", out, sizeof out), -1);
  char exact[sizeof "/only/?.lua"];
  assert_int_equal(evlua_paths_search("/only/?.lua", "/x", "S", exact, sizeof exact), 0);
  assert_int_equal(evlua_paths_search("/only/?.lua!", "/x", "S", exact, sizeof exact), -1);
}

static const char *test_binary;   /* argv[0] */

static void exe_dir_is_this_test_binary_dir(void **state) {
  (void)state;
  char dir[4096];
  assert_int_equal(evlua_paths_exe_dir(dir, sizeof dir), 0);
  /* make test runs build/tests/test_paths, make asan-test
  ** build/asan/tests/test_paths: the directory is where this binary is */
  char expected[4096];
  assert_non_null(realpath(test_binary, expected));
  *strrchr(expected, '/') = '\0';
  assert_string_equal(dir, expected);
  char tiny[4];
  assert_int_equal(evlua_paths_exe_dir(tiny, sizeof tiny), -1);
}

static void make_lib(const char *dir) {
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "mkdir -p %s && touch %s/event.lua", dir, dir);
  assert_int_equal(system(cmd), 0);
}

static void lib_dir_prefers_the_one_next_to_the_binary(void **state) {
  (void)state;
  char root[] = "/tmp/evlua-test-paths-XXXXXX";
  assert_non_null(mkdtemp(root));
  char bin[64], share[64], out[256], cmd[200];
  snprintf(bin, sizeof bin, "%s/bin", root);
  snprintf(share, sizeof share, "%s/elsewhere", root);
  mkdir(bin, 0755);

  assert_int_equal(evlua_paths_lib_dir(bin, share, out, sizeof out), -1);

  snprintf(cmd, sizeof cmd, "%s/lua", share);
  make_lib(cmd);               /* compiled-in share dir */
  assert_int_equal(evlua_paths_lib_dir(bin, share, out, sizeof out), 0);
  assert_string_equal(out, cmd);

  snprintf(cmd, sizeof cmd, "%s/share/evlua/lua", root);
  make_lib(cmd);               /* installed beside bin/ */
  assert_int_equal(evlua_paths_lib_dir(bin, share, out, sizeof out), 0);
  assert_non_null(strstr(out, "/bin/../share/evlua/lua"));

  snprintf(cmd, sizeof cmd, "%s/lua", bin);
  make_lib(cmd);               /* source tree: lua/ next to the binary */
  assert_int_equal(evlua_paths_lib_dir(bin, share, out, sizeof out), 0);
  assert_string_equal(out, cmd);

  snprintf(cmd, sizeof cmd, "rm -rf %s", root);
  assert_int_equal(system(cmd), 0);
}

int main(int argc, char **argv) {
  (void)argc;
  test_binary = argv[0];
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(search_path_without_override),
    cmocka_unit_test(override_expands_double_semicolon),
    cmocka_unit_test(override_without_default_is_taken_as_is),
    cmocka_unit_test(too_small_buffers_fail),
    cmocka_unit_test(exe_dir_is_this_test_binary_dir),
    cmocka_unit_test(lib_dir_prefers_the_one_next_to_the_binary),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
