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

/* Candidates that cannot be the library are passed over: no exe dir, an
** event.lua that is a directory, a path longer than out or than PATH_MAX. */
static void lib_dir_skips_unusable_candidates(void **state) {
  (void)state;
  char root[] = "/tmp/evlua-test-paths-XXXXXX";
  assert_non_null(mkdtemp(root));
  char share[64], out[256], cmd[200];
  snprintf(share, sizeof share, "%s/share", root);
  snprintf(cmd, sizeof cmd, "%s/lua", share);
  make_lib(cmd);
  assert_int_equal(evlua_paths_lib_dir(NULL, share, out, sizeof out), 0);
  assert_string_equal(out, cmd);
  /* too long for out: the one candidate does not fit */
  char small[16];
  assert_int_equal(evlua_paths_lib_dir(NULL, share, small, sizeof small), -1);
  /* bin/lua/event.lua is a directory: not the library */
  snprintf(cmd, sizeof cmd, "mkdir -p %s/bin/lua/event.lua", root);
  assert_int_equal(system(cmd), 0);
  char bin[64];
  snprintf(bin, sizeof bin, "%s/bin", root);
  assert_int_equal(evlua_paths_lib_dir(bin, share, out, sizeof out), 0);
  assert_string_equal(out + strlen(out) - strlen("/share/lua"), "/share/lua");
  /* an exe dir longer than a path can be: skipped, not truncated */
  static char huge[5000], big_out[6000];
  memset(huge, 'd', sizeof huge - 1);
  huge[0] = '/';
  assert_int_equal(evlua_paths_lib_dir(huge, NULL, big_out, sizeof big_out), -1);
  snprintf(cmd, sizeof cmd, "rm -rf %s", root);
  assert_int_equal(system(cmd), 0);
}

static void search_path_edge_cases(void **state) {
  (void)state;
  char out[256];
  /* single semicolons are copied as they are */
  assert_int_equal(evlua_paths_search("a;b;", "/x", "S", out, sizeof out), 0);
  assert_string_equal(out, "a;b;");
  /* a library dir so long that the default path cannot be built */
  static char huge[5000];
  memset(huge, 'd', sizeof huge - 1);
  assert_int_equal(evlua_paths_search(NULL, huge, "S", out, sizeof out), -1);
  assert_int_equal(evlua_paths_search(";;", huge, "S", out, sizeof out), -1);
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
    cmocka_unit_test(lib_dir_skips_unusable_candidates),
    cmocka_unit_test(search_path_edge_cases),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
