/*
** test_process.c - unit tests for src/core/process.c on libev's default loop,
** with real programs (/bin/sh).
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdint.h>
#include <string.h>

#include "process.h"

static int done_calls;

static void on_done(evlua_process *p) {
  (void)p;
  done_calls++;
}

/* Run `script` with sh -c until done; returns the spawn result. */
static int run_sh(evlua_process *p, const char *script, const char *input,
                  double timeout) {
  char *argv[] = { "sh", "-c", (char *)(uintptr_t)script, NULL };
  evlua_process_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.file = "/bin/sh";
  spec.argv = argv;
  spec.stdout_mode = EVLUA_PROCESS_CAPTURE;
  spec.stderr_mode = EVLUA_PROCESS_CAPTURE;
  spec.input = input;
  spec.input_len = input ? strlen(input) : 0;
  spec.max_output = 1 << 20;
  spec.timeout = timeout;
  spec.kill_after = 0.2;
  char err[256];
  struct ev_loop *loop = ev_default_loop(0);
  done_calls = 0;
  evlua_process_init(p, loop, on_done, NULL);
  if (evlua_process_spawn(p, &spec, err, sizeof err) != 0) return -1;
  while (p->running) ev_run(loop, EVRUN_ONCE);
  return 0;
}

static void captures_output_and_exit_code(void **state) {
  (void)state;
  evlua_process p;
  assert_int_equal(run_sh(&p, "cat; echo oops >&2; exit 7", "in", 0), 0);
  assert_int_equal(done_calls, 1);
  assert_int_equal(evlua_process_exit_code(&p), 7);
  assert_int_equal(evlua_process_exit_signal(&p), 0);
  assert_int_equal(evlua_buffer_len(&p.out), 2);
  assert_memory_equal(evlua_buffer_peek(&p.out), "in", 2);
  assert_int_equal(evlua_buffer_len(&p.err), 5);
  assert_memory_equal(evlua_buffer_peek(&p.err), "oops\n", 5);
  evlua_process_release(&p);
  evlua_process_release(&p);   /* idempotent */
}

static void reports_the_signal(void **state) {
  (void)state;
  evlua_process p;
  assert_int_equal(run_sh(&p, "kill -HUP $$", NULL, 0), 0);
  assert_int_equal(evlua_process_exit_code(&p), -1);
  assert_int_equal(evlua_process_exit_signal(&p), SIGHUP);
  evlua_process_release(&p);
}

static void timeout_terminates_the_group(void **state) {
  (void)state;
  evlua_process p;
  double t0 = ev_time();
  assert_int_equal(run_sh(&p, "sleep 30; echo never", NULL, 0.1), 0);
  assert_true(ev_time() - t0 < 10);
  assert_true(p.timed_out);
  assert_int_equal(evlua_process_exit_signal(&p), SIGTERM);
  assert_int_equal(evlua_buffer_len(&p.out), 0);
  evlua_process_release(&p);
}

static void too_much_output_kills(void **state) {
  (void)state;
  evlua_process p;
  assert_int_equal(run_sh(&p, "exec yes", NULL, 0), 0);
  assert_true(p.too_large);
  assert_false(p.timed_out);
  evlua_process_release(&p);
}

static void unknown_program_fails_to_spawn(void **state) {
  (void)state;
  char *argv[] = { "no-such-program-evlua", NULL };
  evlua_process_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.file = argv[0];
  spec.argv = argv;
  spec.kill_after = 1;
  evlua_process p;
  char err[256];
  evlua_process_init(&p, ev_default_loop(0), on_done, NULL);
  assert_int_equal(evlua_process_spawn(&p, &spec, err, sizeof err), -1);
  assert_string_equal(err, "no-such-program-evlua: no such file or directory");
  assert_false(p.running);
  evlua_process_release(&p);
}

/* The message names the file even when its name holds ':' (the text after
** it is still lowercased). */
static void spawn_error_names_a_file_with_a_colon(void **state) {
  (void)state;
  char *argv[] = { "no:such-program-evlua", NULL };
  evlua_process_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.file = argv[0];
  spec.argv = argv;
  spec.kill_after = 1;
  evlua_process p;
  char err[256];
  evlua_process_init(&p, ev_default_loop(0), on_done, NULL);
  assert_int_equal(evlua_process_spawn(&p, &spec, err, sizeof err), -1);
  assert_string_equal(err, "no:such-program-evlua: no such file or directory");
  assert_int_equal(errno, ENOENT);
  /* a buffer too small for the text: cut, never overrun */
  char tiny[8];
  assert_int_equal(evlua_process_spawn(&p, &spec, tiny, sizeof tiny), -1);
  assert_string_equal(tiny, "no:such");
  evlua_process_release(&p);
}

/* Before the child has exited there is no exit code or signal; release
** of a running child sends it SIGTERM. */
static void release_terminates_a_running_child(void **state) {
  (void)state;
  char *argv[] = { "sleep", "30", NULL };
  evlua_process_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.file = "sleep";
  spec.argv = argv;
  spec.stdout_mode = EVLUA_PROCESS_NULL;
  spec.stderr_mode = EVLUA_PROCESS_INHERIT;
  spec.kill_after = 1;
  evlua_process p;
  char err[256];
  evlua_process_init(&p, ev_default_loop(0), on_done, NULL);
  assert_int_equal(evlua_process_spawn(&p, &spec, err, sizeof err), 0);
  pid_t pid = p.pid;
  assert_int_equal(evlua_process_exit_code(&p), -1);
  assert_int_equal(evlua_process_exit_signal(&p), 0);
  evlua_process_release(&p);
  /* the loop did not run since: the child is ours to reap */
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGTERM);
}

/* Once done, signals fail with ESRCH (the pid may be reused) and
** terminate does nothing. */
static void signals_after_the_end_fail(void **state) {
  (void)state;
  evlua_process p;
  assert_int_equal(run_sh(&p, "exit 0", NULL, 0), 0);
  errno = 0;
  assert_int_equal(evlua_process_signal(&p, SIGTERM), -1);
  assert_int_equal(errno, ESRCH);
  evlua_process_terminate(&p);
  assert_int_equal(p.kill_stage, 0);
  assert_int_equal(evlua_process_exit_code(&p), 0);
  evlua_process_release(&p);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);   /* as the runtime does */
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(captures_output_and_exit_code),
    cmocka_unit_test(reports_the_signal),
    cmocka_unit_test(timeout_terminates_the_group),
    cmocka_unit_test(too_much_output_kills),
    cmocka_unit_test(unknown_program_fails_to_spawn),
    cmocka_unit_test(spawn_error_names_a_file_with_a_colon),
    cmocka_unit_test(release_terminates_a_running_child),
    cmocka_unit_test(signals_after_the_end_fail),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
