/*
** process.h - child processes driven by libev (pure C, no Lua): spawn a
** program in its own process group with posix_spawn, capture its output
** through non-blocking pipes, feed its stdin, reap it with ev_child, and
** enforce a timeout (SIGTERM to the group, then SIGKILL).
**
** Lifetime: a process is "done" once the child has been reaped and its
** output pipes have reached end of file (or were given up on, see
** below); on_done runs exactly once then, from the loop, never from
** inside a call into this module. Every fd this module opens is
** close-on-exec, and the child starts with fds 0-2 only, default signal
** dispositions and an empty signal mask.
**
** The pitfall of pipes: a background grandchild that inherited stdout
** keeps the pipe open after the child exits. Reading goes on until end
** of file (so no output is lost), but once the kill sequence has sent
** SIGKILL and the child is gone, the pipes are given up on after
** kill_after more seconds.
*/
#ifndef EVLUA_PROCESS_H
#define EVLUA_PROCESS_H

#include <ev.h>
#include <stddef.h>
#include <sys/types.h>

#include "buffer.h"

/* What becomes of the child's stdout or stderr. */
enum evlua_process_io {
  EVLUA_PROCESS_INHERIT,    /* the parent's fd */
  EVLUA_PROCESS_CAPTURE,    /* a pipe read into a buffer */
  EVLUA_PROCESS_NULL,       /* /dev/null */
  EVLUA_PROCESS_TO_STDOUT   /* stderr only: the same as stdout */
};

typedef struct evlua_process_spec {
  const char *file;         /* program: a path, or a name looked up in PATH */
  char *const *argv;        /* NULL-terminated; argv[0] is shown by ps */
  char *const *envp;        /* NULL-terminated, or NULL: the parent's */
  const char *cwd;          /* NULL: the parent's */
  int stdout_mode, stderr_mode;
  const char *input;        /* bytes for stdin, then end of file; */
  size_t input_len;         /* NULL input: stdin is /dev/null */
  size_t max_output;        /* stdout + stderr bytes kept; past: killed */
  double timeout;           /* seconds; 0: none */
  double kill_after;        /* seconds from SIGTERM to SIGKILL */
} evlua_process_spec;

typedef struct evlua_process evlua_process;
typedef void (*evlua_process_done_fn)(evlua_process *p);

struct evlua_process {
  struct ev_loop *loop;
  pid_t pid;                /* also the process group id */
  int running;              /* spawned and not yet done */
  int exited;               /* reaped; wait_status is valid */
  int wait_status;          /* as waitpid reports it */
  int timed_out;            /* the timeout started the kill sequence */
  int too_large;            /* output passed max_output: killed */
  int kill_stage;           /* 0, then SIGTERM sent, then SIGKILL sent */
  int open_pipes;           /* output pipes not yet at end of file */
  size_t max_output;
  double kill_after;
  ev_child child;
  ev_io out_w, err_w, in_w; /* fd -1 (in ev_io's fd) when not in use */
  ev_timer timer;           /* timeout, then the kill steps */
  evlua_buffer out, err, in;
  evlua_process_done_fn on_done;
  void *data;               /* the owner's */
};

/* Set up p in a state that evlua_process_release accepts. */
void evlua_process_init(evlua_process *p, struct ev_loop *loop,
                        evlua_process_done_fn on_done, void *data);

/* Start the program. Returns 0, or -1 with a message in err (the program
** cannot be run, the directory does not exist, out of fds...) and errno
** set to the cause; nothing is left running on failure. */
int evlua_process_spawn(evlua_process *p, const evlua_process_spec *spec,
                        char *err, size_t errlen);

/* Send sig to the child's process group (its children too). Returns 0,
** or -1 with errno set (ESRCH once the child has been reaped). */
int evlua_process_signal(evlua_process *p, int sig);

/* Start the kill sequence now: SIGTERM to the group, SIGKILL kill_after
** seconds later if the child is still there. Idempotent. */
void evlua_process_terminate(evlua_process *p);

/* Exit code (>= 0) or -1; signal number (> 0) or 0. Valid once exited. */
int evlua_process_exit_code(const evlua_process *p);
int evlua_process_exit_signal(const evlua_process *p);

/* Stop every watcher, close every fd and free the buffers. A child still
** running gets SIGTERM (to its group) and is reaped by libev later, so it
** leaves no zombie. No callback runs. Idempotent. */
void evlua_process_release(evlua_process *p);

#endif
