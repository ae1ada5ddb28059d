/*
** echo.c - a plain C libev echo server and its clients: the baseline the
** evlua channel benchmarks (bench/echo.lua) are compared with.
**   echo server PORT               listen on 127.0.0.1:PORT (0: a free
**                                  port), print "port N", echo until killed
**   echo throughput PORT MIB       stream MIB MiB to the server while
**                                  reading the echo back; "throughput MiB/s"
**   echo pingpong PORT SECONDS     64-byte message, wait for its echo,
**                                  repeat; "pingpong round-trips/s"
**   echo idle PORT N               open N connections, print "ready N" once
**                                  all are connected, then stay idle until
**                                  killed
** Non-blocking sockets with TCP_NODELAY; the server reads into a buffer
** and writes it back, and stops reading while a write is pending.
*/
#define _GNU_SOURCE   /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_net.h"

#define BUF_SIZE (64 * 1024)
#define MSG_SIZE 64
#define MAX_CONNECTING 256   /* idle mode: connects in flight at once */

static struct ev_loop *loop;

/* server ============================================================== */

typedef struct conn {
  ev_io rw, ww;
  int fd;
  size_t len, off;          /* pending output: buf[off..len) */
  char buf[BUF_SIZE];
} conn;

static void conn_free(conn *c) {
  ev_io_stop(loop, &c->rw);
  ev_io_stop(loop, &c->ww);
  close(c->fd);
  free(c);
}

/* Write the pending output; returns 0 when it is all written, 1 when some
** is left (the write watcher takes over), -1 when the connection failed. */
static int flush_pending(conn *c) {
  while (c->off < c->len) {
    ssize_t r = write(c->fd, c->buf + c->off, c->len - c->off);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) return 1;
      return -1;
    }
    c->off += (size_t)r;
  }
  c->off = c->len = 0;
  return 0;
}

static void on_conn_writable(struct ev_loop *l, ev_io *w, int revents) {
  (void)revents;
  conn *c = (conn *)((char *)w - offsetof(conn, ww));
  int r = flush_pending(c);
  if (r < 0) {
    conn_free(c);
  } else if (r == 0) {               /* all sent: read again */
    ev_io_stop(l, &c->ww);
    ev_io_start(l, &c->rw);
  }
}

static void on_conn_readable(struct ev_loop *l, ev_io *w, int revents) {
  (void)revents;
  conn *c = (conn *)((char *)w - offsetof(conn, rw));
  ssize_t n = read(c->fd, c->buf, sizeof c->buf);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    conn_free(c);
    return;
  }
  if (n < 0) return;
  c->len = (size_t)n;
  c->off = 0;
  int r = flush_pending(c);
  if (r < 0) {
    conn_free(c);
  } else if (r > 0) {                /* socket full: stop reading meanwhile */
    ev_io_stop(l, &c->rw);
    ev_io_start(l, &c->ww);
  }
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents) {
  (void)revents;
  for (;;) {
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;              /* EAGAIN, or that connection's error */
    set_nodelay(fd);
    conn *c = malloc(sizeof *c);
    if (c == NULL) {
      close(fd);
      continue;
    }
    c->fd = fd;
    c->len = c->off = 0;
    ev_io_init(&c->rw, on_conn_readable, fd, EV_READ);
    ev_io_init(&c->ww, on_conn_writable, fd, EV_WRITE);
    ev_io_start(l, &c->rw);
  }
}

static int run_server(int port) {
  struct sockaddr_in sa = loopback(port);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("bind");
  if (listen(fd, 4096) != 0) die("listen");
  socklen_t len = sizeof sa;
  if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0) die("getsockname");
  printf("port %d\n", ntohs(sa.sin_port));
  fflush(stdout);
  ev_io accept_w;
  ev_io_init(&accept_w, on_accept, fd, EV_READ);
  ev_io_start(loop, &accept_w);
  ev_run(loop, 0);
  return 0;
}

/* throughput ========================================================== */

static char chunk[BUF_SIZE], sink[BUF_SIZE];
static size_t total, sent, received;

static void on_tp_writable(struct ev_loop *l, ev_io *w, int revents) {
  (void)revents;
  while (sent < total) {
    size_t want = total - sent < sizeof chunk ? total - sent : sizeof chunk;
    ssize_t r = write(w->fd, chunk, want);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      die("write");
    }
    sent += (size_t)r;
  }
  ev_io_stop(l, w);
}

static void on_tp_readable(struct ev_loop *l, ev_io *w, int revents) {
  (void)revents;
  ssize_t r = read(w->fd, sink, sizeof sink);
  if (r == 0) {
    fprintf(stderr, "echo: server closed after %zu bytes\n", received);
    exit(1);
  }
  if (r < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    die("read");
  }
  received += (size_t)r;
  if (received >= total) ev_break(l, EVBREAK_ALL);
}

static int run_throughput(int port, long mib) {
  int fd = connect_to(port);
  memset(chunk, 'x', sizeof chunk);
  total = (size_t)mib * 1024 * 1024;
  ev_io rw, ww;
  ev_io_init(&rw, on_tp_readable, fd, EV_READ);
  ev_io_init(&ww, on_tp_writable, fd, EV_WRITE);
  double t0 = ev_time();
  ev_io_start(loop, &rw);
  ev_io_start(loop, &ww);
  ev_run(loop, 0);
  double dt = ev_time() - t0;
  if (received != total) {
    fprintf(stderr, "echo: %zu bytes came back, %zu sent\n", received, total);
    return 1;
  }
  printf("throughput %.1f\n", (double)mib / dt);
  close(fd);
  return 0;
}

/* ping-pong =========================================================== */

static char msg[MSG_SIZE], reply[MSG_SIZE];
static size_t got;
static long round_trips;
static double deadline;

static void send_msg(int fd) {
  ssize_t r = write(fd, msg, sizeof msg);   /* empty socket: never short */
  if (r != (ssize_t)sizeof msg) die("write");
}

static void on_pp_readable(struct ev_loop *l, ev_io *w, int revents) {
  (void)revents;
  ssize_t r = read(w->fd, reply + got, sizeof reply - got);
  if (r == 0) {
    fprintf(stderr, "echo: server closed\n");
    exit(1);
  }
  if (r < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    die("read");
  }
  got += (size_t)r;
  if (got < sizeof reply) return;
  got = 0;
  round_trips++;
  if (ev_now(l) >= deadline) {
    ev_break(l, EVBREAK_ALL);
    return;
  }
  send_msg(w->fd);
}

static int run_pingpong(int port, double seconds) {
  int fd = connect_to(port);
  memset(msg, 'p', sizeof msg);
  ev_io rw;
  ev_io_init(&rw, on_pp_readable, fd, EV_READ);
  ev_io_start(loop, &rw);
  double t0 = ev_time();
  deadline = t0 + seconds;
  send_msg(fd);
  ev_run(loop, 0);
  double dt = ev_time() - t0;
  printf("pingpong %.0f\n", (double)round_trips / dt);
  close(fd);
  return 0;
}

/* idle connections ==================================================== */

static long idle_target, idle_started, idle_connected, idle_inflight;
static struct sockaddr_in idle_addr;

static void start_connects(void);

static void on_connected(struct ev_loop *l, ev_io *w, int revents) {
  (void)revents;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    fprintf(stderr, "echo: connect: %s\n", strerror(err));
    exit(1);
  }
  ev_io_stop(l, w);
  free(w);   /* the fd stays open, unwatched: the connection is idle */
  idle_inflight--;
  idle_connected++;
  if (idle_connected == idle_target) {
    printf("ready %ld\n", idle_connected);
    fflush(stdout);
  } else {
    start_connects();
  }
}

static void start_connects(void) {
  while (idle_started < idle_target && idle_inflight < MAX_CONNECTING) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    set_nodelay(fd);
    if (connect(fd, (struct sockaddr *)&idle_addr, sizeof idle_addr) != 0 &&
        errno != EINPROGRESS)
      die("connect");
    ev_io *w = malloc(sizeof *w);
    if (w == NULL) die("malloc");
    ev_io_init(w, on_connected, fd, EV_WRITE);
    ev_io_start(loop, w);
    idle_started++;
    idle_inflight++;
  }
}

static _Noreturn void run_idle(int port, long n) {
  idle_addr = loopback(port);
  idle_target = n;
  start_connects();
  ev_run(loop, 0);                   /* returns once all are connected */
  for (;;) pause();                  /* idle until killed */
}

/* main ================================================================ */

static void usage(void) {
  fprintf(stderr, "usage: echo server PORT | throughput PORT MIB | "
                  "pingpong PORT SECONDS | idle PORT N\n");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 3) usage();
  const char *mode = argv[1];
  int port = atoi(argv[2]);
  loop = ev_default_loop(0);
  signal(SIGPIPE, SIG_IGN);
  if (strcmp(mode, "server") == 0) return run_server(port);
  if (argc < 4) usage();
  if (strcmp(mode, "throughput") == 0) return run_throughput(port, atol(argv[3]));
  if (strcmp(mode, "pingpong") == 0) return run_pingpong(port, atof(argv[3]));
  if (strcmp(mode, "idle") == 0) run_idle(port, atol(argv[3]));
  usage();
  return 2;
}
