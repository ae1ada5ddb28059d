/*
** rpc.c - a plain C libev MessagePack-RPC peer: the other side of the
** evlua rpc benchmarks (bench/rpc.lua), so that each evlua side can be
** measured against a peer that is never the bottleneck.
**   rpc server PORT                 listen on 127.0.0.1:PORT (0: a free
**                                   port), print "port N pid P", answer
**                                   every request [0, id, method, params]
**                                   with [1, id, nil, params[1]]
**   rpc sequential PORT SECONDS [SERVER_PID]
**                                   one call of "echo" with a 64-byte
**                                   string at a time
**   rpc pipelined PORT SECONDS D [SERVER_PID]
**                                   D calls in flight at all times
** After a 0.2 s warm-up and a timed run of SECONDS a client prints
** "<mode> <calls/s> cpu <F> [server_cpu <F>]", F being CPU time over wall
** time for itself and (given its pid) the server, as bench/rpc.lua does.
** Both sides handle every complete message in what one read() returned
** and answer them with one write(): the batching a C service would do.
** Only the MessagePack this benchmark sends is understood (any value as a
** parameter; msgids up to 2^32-1); anything else ends the process.
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_net.h"

#define IN_SIZE (256 * 1024)
#define OUT_SIZE (512 * 1024)
#define PAYLOAD_SIZE 64
#define WARMUP 0.2
#define REQUEST_SIZE (15 + PAYLOAD_SIZE)   /* see queue_request */

static struct ev_loop *loop;

static void fail(const char *what) {
  fprintf(stderr, "rpc: %s\n", what);
  exit(1);
}

/* MessagePack ========================================================= */

static uint64_t load_be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

/* Length of the value at p[0..len), nested values included; 0 when it is
** not complete yet; exits on bytes it does not understand. */
static size_t value_length(const unsigned char *p, size_t len) {
  size_t pos = 0;
  uint64_t pending = 1;              /* values still to skip */
  while (pending > 0) {
    if (pos >= len) return 0;
    unsigned c = p[pos];
    uint64_t head = 1, body = 0, items = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
      /* fixint, nil, booleans */
    } else if ((c & 0xf0) == 0x80) {
      items = (uint64_t)(c & 0x0f) * 2;
    } else if ((c & 0xf0) == 0x90) {
      items = c & 0x0f;
    } else if ((c & 0xe0) == 0xa0) {
      body = c & 0x1f;
    } else {
      int n;
      switch (c) {
      case 0xcc: case 0xd0: head = 2; break;
      case 0xcd: case 0xd1: head = 3; break;
      case 0xca: case 0xce: case 0xd2: head = 5; break;
      case 0xcb: case 0xcf: case 0xd3: head = 9; break;
      case 0xc4: case 0xd9: n = 1; goto sized;
      case 0xc5: case 0xda: n = 2; goto sized;
      case 0xc6: case 0xdb: n = 4;
      sized:
        if (pos + 1 + (size_t)n > len) return 0;
        head = 1 + (uint64_t)n;
        body = load_be(p + pos + 1, n);
        break;
      case 0xdc: case 0xdd: case 0xde: case 0xdf:
        n = (c == 0xdc || c == 0xde) ? 2 : 4;
        if (pos + 1 + (size_t)n > len) return 0;
        head = 1 + (uint64_t)n;
        items = load_be(p + pos + 1, n) * (c >= 0xde ? 2 : 1);
        break;
      default:
        fail("unsupported msgpack type");
      }
    }
    if (len - pos < head + body) return 0;
    pos += head + body;
    pending = pending - 1 + items;
  }
  return pos;
}

/* An unsigned integer (msgid, message kind) at *p; advances *p. */
static uint32_t read_uint(const unsigned char **p) {
  unsigned c = **p;
  if (c <= 0x7f) { *p += 1; return c; }
  if (c == 0xcc) { *p += 2; return (uint32_t)load_be(*p - 1, 1); }
  if (c == 0xcd) { *p += 3; return (uint32_t)load_be(*p - 2, 2); }
  if (c == 0xce) { *p += 5; return (uint32_t)load_be(*p - 4, 4); }
  fail("unsupported msgid");
  return 0;
}

/* Connection buffers ================================================== */

typedef struct conn {
  ev_io rw, ww;
  int fd;
  size_t in_len;
  size_t out_off, out_len;
  unsigned char in[IN_SIZE];
  unsigned char out[OUT_SIZE];
} conn;

typedef void (*message_fn)(conn *c, const unsigned char *msg, size_t len);

static conn *conn_new(int fd, void (*on_read)(struct ev_loop *, ev_io *, int),
                      void (*on_write)(struct ev_loop *, ev_io *, int)) {
  conn *c = malloc(sizeof *c);
  if (c == NULL) die("malloc");
  c->fd = fd;
  c->in_len = c->out_off = c->out_len = 0;
  ev_io_init(&c->rw, on_read, fd, EV_READ);
  ev_io_init(&c->ww, on_write, fd, EV_WRITE);
  ev_io_start(loop, &c->rw);
  return c;
}

static void conn_free(conn *c) {
  ev_io_stop(loop, &c->rw);
  ev_io_stop(loop, &c->ww);
  close(c->fd);
  free(c);
}

/* Room for n more output bytes; exits when a peer floods us. */
static unsigned char *out_reserve(conn *c, size_t n) {
  if (c->out_off > 0 && c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (OUT_SIZE - c->out_len < n) fail("output buffer full");
  return c->out + c->out_len;
}

/* Write what is queued; -1 when the connection failed. While bytes are
** left, reading stops and the write watcher takes over. */
static int flush_out(conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t r = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return -1;
      ev_io_stop(loop, &c->rw);
      ev_io_start(loop, &c->ww);
      return 0;
    }
    c->out_off += (size_t)r;
  }
  c->out_off = c->out_len = 0;
  ev_io_stop(loop, &c->ww);
  ev_io_start(loop, &c->rw);
  return 0;
}

/* Read, hand every complete message to fn, then write the answers with
** one write(). Returns -1 when the connection ended. */
static int read_messages(conn *c, message_fn fn) {
  ssize_t r = read(c->fd, c->in + c->in_len, IN_SIZE - c->in_len);
  if (r == 0) return -1;
  if (r < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
  c->in_len += (size_t)r;
  size_t pos = 0;
  for (;;) {
    size_t n = value_length(c->in + pos, c->in_len - pos);
    if (n == 0) break;
    fn(c, c->in + pos, n);
    pos += n;
  }
  if (pos == 0 && c->in_len == IN_SIZE) fail("message too large");
  memmove(c->in, c->in + pos, c->in_len - pos);
  c->in_len -= pos;
  return flush_out(c);
}

static void on_writable(struct ev_loop *l, ev_io *w, int revents) {
  (void)l; (void)revents;
  conn *c = (conn *)((char *)w - offsetof(conn, ww));
  if (flush_out(c) < 0) conn_free(c);
}

/* server ============================================================== */

/* A request [0, id, method, params]: answer [1, id, nil, params[1]]. */
static void serve(conn *c, const unsigned char *msg, size_t len) {
  const unsigned char *p = msg, *end = msg + len;
  if (*p++ != 0x94) fail("not a request");
  if (read_uint(&p) != 0) fail("not a request");
  const unsigned char *id = p;
  read_uint(&p);
  size_t id_len = (size_t)(p - id);
  p += value_length(p, (size_t)(end - p));           /* method */
  unsigned params = *p++;
  if ((params & 0xf0) != 0x90) fail("unsupported params");
  const unsigned char *value = p;
  size_t value_len = (params & 0x0f) ? value_length(p, (size_t)(end - p)) : 0;
  unsigned char *o = out_reserve(c, 3 + id_len + (value_len ? value_len : 1));
  *o++ = 0x94;
  *o++ = 0x01;
  memcpy(o, id, id_len);
  o += id_len;
  *o++ = 0xc0;
  if (value_len) memcpy(o, value, value_len);
  else *o = 0xc0;
  c->out_len += 3 + id_len + (value_len ? value_len : 1);
}

static void on_server_readable(struct ev_loop *l, ev_io *w, int revents) {
  (void)l; (void)revents;
  conn *c = (conn *)((char *)w - offsetof(conn, rw));
  if (read_messages(c, serve) < 0) conn_free(c);
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents) {
  (void)l; (void)revents;
  for (;;) {
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    set_nodelay(fd);
    conn_new(fd, on_server_readable, on_writable);
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
  printf("port %d pid %ld\n", ntohs(sa.sin_port), (long)getpid());
  fflush(stdout);
  ev_io accept_w;
  ev_io_init(&accept_w, on_accept, fd, EV_READ);
  ev_io_start(loop, &accept_w);
  ev_run(loop, 0);
  return 0;
}

/* clients ============================================================= */

static uint32_t next_id;
static long completed, in_flight;
static double deadline;

/* Queue [0, id, "echo", [64-byte string]]. */
static void queue_request(conn *c) {
  unsigned char *o = out_reserve(c, REQUEST_SIZE);
  uint32_t id = next_id++;
  *o++ = 0x94;
  *o++ = 0x00;
  *o++ = 0xce;
  for (int i = 3; i >= 0; i--) *o++ = (unsigned char)(id >> (8 * i));
  memcpy(o, "\xa4" "echo" "\x91" "\xd9\x40", 8);
  o += 8;
  memset(o, 'p', PAYLOAD_SIZE);
  c->out_len += REQUEST_SIZE;
  in_flight++;
}

/* A response [1, id, nil, result]: count it, send the next call. */
static void on_response(conn *c, const unsigned char *msg, size_t len) {
  const unsigned char *p = msg;
  if (*p++ != 0x94 || read_uint(&p) != 1) fail("not a response");
  read_uint(&p);
  if (*p++ != 0xc0) fail("error response");
  if (msg + len - p != 2 + PAYLOAD_SIZE || p[0] != 0xd9 || p[1] != PAYLOAD_SIZE)
    fail("wrong result");
  in_flight--;
  completed++;
  if (ev_now(loop) < deadline) queue_request(c);
  else if (in_flight == 0) ev_break(loop, EVBREAK_ALL);
}

static void on_client_readable(struct ev_loop *l, ev_io *w, int revents) {
  (void)l; (void)revents;
  conn *c = (conn *)((char *)w - offsetof(conn, rw));
  if (read_messages(c, on_response) < 0) fail("server closed");
}

/* CPU seconds (user + system) process pid ("self") has used so far, from
** /proc/PID/stat as bench/rpc.lua reads it. */
static double cpu_seconds(const char *pid) {
  char path[64], stat[1024];
  snprintf(path, sizeof path, "/proc/%s/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) die(path);
  size_t n = fread(stat, 1, sizeof stat - 1, f);
  fclose(f);
  stat[n] = '\0';
  const char *p = strrchr(stat, ')');
  unsigned long utime, stime;
  if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
                          "%*u %lu %lu", &utime, &stime) != 2)
    fail("cannot parse /proc/PID/stat");
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Keep depth calls in flight until the deadline; returns calls/s. */
static double run_calls(conn *c, long depth, double seconds) {
  completed = 0;
  double t0 = ev_time();
  deadline = t0 + seconds;
  for (long i = 0; i < depth; i++) queue_request(c);
  if (flush_out(c) < 0) die("write");
  ev_run(loop, 0);
  return (double)completed / (ev_time() - t0);
}

static int run_client(const char *mode, int port, double seconds, long depth,
                      const char *server_pid) {
  int fd = connect_to(port);
  conn *c = conn_new(fd, on_client_readable, on_writable);
  run_calls(c, depth, WARMUP);
  ev_now_update(loop);
  double cpu0 = cpu_seconds("self");
  double server0 = server_pid ? cpu_seconds(server_pid) : 0;
  double t0 = ev_time();
  double rate = run_calls(c, depth, seconds);
  double dt = ev_time() - t0;
  printf("%s %.0f cpu %.2f", mode, rate, (cpu_seconds("self") - cpu0) / dt);
  if (server_pid)
    printf(" server_cpu %.2f", (cpu_seconds(server_pid) - server0) / dt);
  printf("\n");
  conn_free(c);
  return 0;
}

/* main ================================================================ */

static void usage(void) {
  fprintf(stderr, "usage: rpc server PORT | sequential PORT SECONDS "
                  "[SERVER_PID] | pipelined PORT SECONDS DEPTH [SERVER_PID]\n");
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
  if (strcmp(mode, "sequential") == 0)
    return run_client(mode, port, atof(argv[3]), 1, argc > 4 ? argv[4] : NULL);
  if (strcmp(mode, "pipelined") == 0 && argc >= 5 && atol(argv[4]) > 0)
    return run_client(mode, port, atof(argv[3]), atol(argv[4]),
                      argc > 5 ? argv[5] : NULL);
  usage();
  return 2;
}
