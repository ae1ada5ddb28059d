/*
** process.c - child processes driven by libev. See process.h for the
** lifetime rules.
*/
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

extern char **environ;

static void on_stdout(struct ev_loop *loop, ev_io *w, int revents);
static void on_stderr(struct ev_loop *loop, ev_io *w, int revents);
static void on_input(struct ev_loop *loop, ev_io *w, int revents);
static void on_child(struct ev_loop *loop, ev_child *w, int revents);
static void on_timer(struct ev_loop *loop, ev_timer *w, int revents);

void evlua_process_init(evlua_process *p, struct ev_loop *loop,
                        evlua_process_done_fn on_done, void *data) {
  memset(p, 0, sizeof *p);
  p->loop = loop;
  p->pid = -1;
  p->on_done = on_done;
  p->data = data;
  ev_io_init(&p->out_w, on_stdout, -1, EV_READ);
  ev_io_init(&p->err_w, on_stderr, -1, EV_READ);
  ev_child_init(&p->child, on_child, 0, 0);
  ev_io_init(&p->in_w, on_input, -1, EV_WRITE);
  ev_init(&p->timer, on_timer);
  evlua_buffer_init(&p->out);
  evlua_buffer_init(&p->err);
  evlua_buffer_init(&p->in);
}

/* Spawning ============================================================ */

/* A pipe whose ends are both close-on-exec; the parent's end (read end
** if parent_reads) is non-blocking. The child's end must stay blocking:
** the flag lives in the open file, which the child shares. */
static int make_pipe(int fds[2], int parent_reads) {
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  int mine = parent_reads ? fds[0] : fds[1];
  int flags = fcntl(mine, F_GETFL);
  if (flags < 0 || fcntl(mine, F_SETFL, flags | O_NONBLOCK) != 0) {
    int e = errno;
    close(fds[0]);
    close(fds[1]);
    errno = e;
    return -1;
  }
  return 0;
}

static void close_pair(int fds[2]) {
  if (fds[0] >= 0) close(fds[0]);
  if (fds[1] >= 0) close(fds[1]);
  fds[0] = fds[1] = -1;
}

/* Lowercase first letter: strerror's text as one of our short messages.
** errno is left at e: the binding names it as the failure's code. */
static void set_error(char *err, size_t errlen, const char *what, int e) {
  int n = snprintf(err, errlen, "%s: %s", what, strerror(e));
  size_t at = strlen(what) + 2;   /* past "what: " (what may hold ':') */
  if (n > 0 && at < (size_t)n && at < errlen && err[at] >= 'A' &&
      err[at] <= 'Z')
    err[at] = (char)(err[at] - 'A' + 'a');
  errno = e;
}

/* How the child's fd `target` is set up: a pipe end, /dev/null, or left
** alone. */
static int plan_output(posix_spawn_file_actions_t *fa, int mode, int target,
                       int pipe_fds[2]) {
  switch (mode) {
  case EVLUA_PROCESS_CAPTURE:
    if (make_pipe(pipe_fds, 1) != 0) return -1;
    return posix_spawn_file_actions_adddup2(fa, pipe_fds[1], target);
  case EVLUA_PROCESS_NULL:
    return posix_spawn_file_actions_addopen(fa, target, "/dev/null",
                                            O_WRONLY, 0);
  case EVLUA_PROCESS_TO_STDOUT:
    return posix_spawn_file_actions_adddup2(fa, STDOUT_FILENO, target);
  default:
    return 0;
  }
}

static int plan_attributes(posix_spawnattr_t *attr) {
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  /* Its own process group, so a timeout or a shutdown reaches a shell's
  ** children too; signals as if freshly started (the loop blocks some,
  ** SIGPIPE is ignored here). */
  if (posix_spawnattr_setflags(attr, POSIX_SPAWN_SETPGROUP |
                               POSIX_SPAWN_SETSIGMASK |
                               POSIX_SPAWN_SETSIGDEF) != 0 ||
      posix_spawnattr_setpgroup(attr, 0) != 0 ||
      posix_spawnattr_setsigmask(attr, &none) != 0 ||
      posix_spawnattr_setsigdefault(attr, &all) != 0)
    return -1;
  return 0;
}

/* Watch the parent's end of a pipe. */
static void watch(evlua_process *p, ev_io *w, int fd) {
  ev_io_set(w, fd, w == &p->in_w ? EV_WRITE : EV_READ);
  ev_io_start(p->loop, w);
}

/* The pipes to the child, [0] the read end and [1] the write end; -1
** where none was made. */
typedef struct pipes {
  int out[2], err[2], in[2];
} pipes;

/* What can be checked before spawning, for a clear message: the working
** directory (posix_spawn would only report a failed chdir); and the
** input, copied into p->in for the stdin pipe. */
static int check_spec(evlua_process *p, const evlua_process_spec *spec,
                      char *err, size_t errlen) {
  struct stat st;
  if (spec->cwd && stat(spec->cwd, &st) != 0) {
    set_error(err, errlen, spec->cwd, errno);
    return -1;
  }
  if (spec->cwd && !S_ISDIR(st.st_mode)) {
    set_error(err, errlen, spec->cwd, ENOTDIR);
    return -1;
  }
  if (spec->input && evlua_buffer_append(&p->in, spec->input,
                                         spec->input_len) != 0) {
    set_error(err, errlen, "spawn", ENOMEM);
    return -1;
  }
  return 0;
}

/* The child's fds 0-2, its other fds and its directory, as file actions.
** Returns 0, a positive error number, or -1 with errno set. */
static int plan_files(posix_spawn_file_actions_t *fa,
                      const evlua_process_spec *spec, pipes *pp) {
  int rc;
  if (spec->input) {
    rc = make_pipe(pp->in, 0) != 0 ? -1 :
         posix_spawn_file_actions_adddup2(fa, pp->in[0], STDIN_FILENO);
  } else {
    rc = posix_spawn_file_actions_addopen(fa, STDIN_FILENO, "/dev/null",
                                          O_RDONLY, 0);
  }
  if (rc == 0)
    rc = plan_output(fa, spec->stdout_mode, STDOUT_FILENO, pp->out);
  if (rc == 0)
    rc = plan_output(fa, spec->stderr_mode, STDERR_FILENO, pp->err);
  /* Belt and braces over O_CLOEXEC: fds other libraries opened without
  ** it must not leak into the child either. */
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(fa, 3);
  if (rc == 0 && spec->cwd)
    rc = posix_spawn_file_actions_addchdir_np(fa, spec->cwd);
  return rc;
}

/* The child runs: reap it, close its ends of the pipes, watch ours. */
static void start_watching(evlua_process *p, const evlua_process_spec *spec,
                           pid_t pid, pipes *pp) {
  p->pid = pid;
  p->running = 1;
  p->max_output = spec->max_output;
  p->kill_after = spec->kill_after;
  ev_child_set(&p->child, pid, 0);
  ev_child_start(p->loop, &p->child);
  if (pp->out[0] >= 0) {
    close(pp->out[1]);
    watch(p, &p->out_w, pp->out[0]);
    p->open_pipes++;
  }
  if (pp->err[0] >= 0) {
    close(pp->err[1]);
    watch(p, &p->err_w, pp->err[0]);
    p->open_pipes++;
  }
  if (pp->in[1] >= 0) {
    close(pp->in[0]);
    if (evlua_buffer_len(&p->in) > 0) watch(p, &p->in_w, pp->in[1]);
    else close(pp->in[1]);   /* empty input: end of file at once */
  }
  if (spec->timeout > 0) {
    ev_timer_set(&p->timer, spec->timeout, 0.);
    ev_timer_start(p->loop, &p->timer);
  }
}

int evlua_process_spawn(evlua_process *p, const evlua_process_spec *spec,
                        char *err, size_t errlen) {
  pipes pp = { { -1, -1 }, { -1, -1 }, { -1, -1 } };
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  pid_t pid;

  if (check_spec(p, spec, err, errlen) != 0) return -1;
  if (posix_spawn_file_actions_init(&fa) != 0) {
    set_error(err, errlen, "spawn", ENOMEM);
    return -1;
  }
  if (posix_spawnattr_init(&attr) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    set_error(err, errlen, "spawn", ENOMEM);
    return -1;
  }
  int rc = plan_files(&fa, spec, &pp);
  if (rc == 0) rc = plan_attributes(&attr);
  if (rc != 0) {
    set_error(err, errlen, "spawn", rc > 0 ? rc : errno);
  } else {
    rc = posix_spawnp(&pid, spec->file, &fa, &attr, spec->argv,
                      spec->envp ? spec->envp : environ);
    if (rc != 0) set_error(err, errlen, spec->file, rc);
  }
  int e = errno;   /* set_error's, through the cleanup */
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc == 0) {
    start_watching(p, spec, pid, &pp);
    return 0;
  }
  close_pair(pp.out);
  close_pair(pp.err);
  close_pair(pp.in);
  evlua_buffer_free(&p->in);
  errno = e;
  return -1;
}

/* Events ============================================================== */

static void stop_io(evlua_process *p, ev_io *w) {
  if (w->fd < 0) return;
  ev_io_stop(p->loop, w);
  close(w->fd);
  ev_io_set(w, -1, w->events & (EV_READ | EV_WRITE));
}

/* Finish once the child is reaped and its output is complete. */
static void check_done(evlua_process *p) {
  if (!p->running || !p->exited || p->open_pipes > 0) return;
  p->running = 0;
  stop_io(p, &p->in_w);
  ev_timer_stop(p->loop, &p->timer);
  p->on_done(p);
}

static void close_output(evlua_process *p, ev_io *w) {
  if (w->fd < 0) return;
  stop_io(p, w);
  p->open_pipes--;
}

/* Read what the pipe holds into b; at end of file close it. */
static void read_output(evlua_process *p, ev_io *w, evlua_buffer *b) {
  for (;;) {
    char *dst = evlua_buffer_reserve(b, EVLUA_READ_CHUNK);
    if (dst == NULL) {   /* out of memory: treat as too much output */
      p->too_large = 1;
      break;
    }
    ssize_t n = read(w->fd, dst, EVLUA_READ_CHUNK);
    if (n > 0) {
      evlua_buffer_commit(b, (size_t)n);
      if (evlua_buffer_len(&p->out) + evlua_buffer_len(&p->err) >
          p->max_output) {
        p->too_large = 1;
        break;
      }
      if (n < EVLUA_READ_CHUNK) return;   /* drained: wait for more */
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    close_output(p, w);   /* end of file, or a read error */
    check_done(p);
    return;
  }
  /* Too much output: stop reading (the child gets EPIPE) and end it. */
  close_output(p, &p->out_w);
  close_output(p, &p->err_w);
  evlua_process_terminate(p);
  check_done(p);
}

static void on_stdout(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop; (void)revents;
  evlua_process *p = container_of(w, evlua_process, out_w);
  read_output(p, w, &p->out);
}

static void on_stderr(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop; (void)revents;
  evlua_process *p = container_of(w, evlua_process, err_w);
  read_output(p, w, &p->err);
}

static void on_input(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop; (void)revents;
  evlua_process *p = container_of(w, evlua_process, in_w);
  while (evlua_buffer_len(&p->in) > 0) {
    ssize_t n = write(w->fd, evlua_buffer_peek(&p->in), evlua_buffer_len(&p->in));
    if (n > 0) {
      evlua_buffer_consume(&p->in, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    break;   /* EPIPE: the child stopped reading; the rest is dropped */
  }
  stop_io(p, w);   /* all written: the child sees end of file */
  evlua_buffer_free(&p->in);
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents) {
  (void)revents;
  evlua_process *p = container_of(w, evlua_process, child);
  ev_child_stop(loop, w);
  p->exited = 1;
  p->wait_status = w->rstatus;
  if (p->kill_stage >= 2 && p->open_pipes > 0) {
    /* SIGKILL was needed: whoever still holds the pipes gets kill_after
    ** seconds more, then the output is given up on. */
    ev_timer_stop(loop, &p->timer);
    ev_timer_set(&p->timer, p->kill_after, 0.);
    ev_timer_start(loop, &p->timer);
  }
  check_done(p);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop; (void)revents;
  evlua_process *p = container_of(w, evlua_process, timer);
  if (p->exited && p->kill_stage >= 2) {   /* pipes held past the kill */
    close_output(p, &p->out_w);
    close_output(p, &p->err_w);
    check_done(p);
    return;
  }
  if (p->kill_stage == 0) {
    p->timed_out = 1;
    evlua_process_terminate(p);
    return;
  }
  p->kill_stage = 2;
  evlua_process_signal(p, SIGKILL);
  if (p->exited) {   /* the child is gone; its group held the pipes */
    ev_timer_set(w, p->kill_after, 0.);
    ev_timer_start(p->loop, w);
  }
}

int evlua_process_signal(evlua_process *p, int sig) {
  /* Once reaped, the pid may belong to someone else; but while our pipes
  ** are open, members of the group are alive and hold its id. */
  if (p->pid <= 0 || (p->exited && p->open_pipes == 0) || !p->running) {
    errno = ESRCH;
    return -1;
  }
  return kill(-p->pid, sig);
}

void evlua_process_terminate(evlua_process *p) {
  if (!p->running || p->kill_stage > 0) return;
  p->kill_stage = 1;
  evlua_process_signal(p, SIGTERM);
  ev_timer_stop(p->loop, &p->timer);
  ev_timer_set(&p->timer, p->kill_after, 0.);
  ev_timer_start(p->loop, &p->timer);
}

int evlua_process_exit_code(const evlua_process *p) {
  return p->exited && WIFEXITED(p->wait_status) ?
         WEXITSTATUS(p->wait_status) : -1;
}

int evlua_process_exit_signal(const evlua_process *p) {
  return p->exited && WIFSIGNALED(p->wait_status) ?
         WTERMSIG(p->wait_status) : 0;
}

void evlua_process_release(evlua_process *p) {
  if (p->running && !p->exited) evlua_process_signal(p, SIGTERM);
  p->running = 0;
  ev_child_stop(p->loop, &p->child);
  ev_timer_stop(p->loop, &p->timer);
  close_output(p, &p->out_w);
  close_output(p, &p->err_w);
  stop_io(p, &p->in_w);
  evlua_buffer_free(&p->out);
  evlua_buffer_free(&p->err);
  evlua_buffer_free(&p->in);
}
