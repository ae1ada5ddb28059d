/*
** test_stream.c - unit tests for src/core/stream.c on libev's default loop,
** with socketpairs and loopback TCP: corking, backpressure (high and low
** water), input limits, the close rules, write errors, linger, send and
** idle timeouts, connecting; and a fake transport: its flush per
** iteration, full/drain on its pending bytes, input pauses, close after
** acks, linger, send timeout, message boundaries.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"
#include "stream.h"

static struct ev_loop *loop;
static evlua_loop_state loop_state;
static ev_prepare flusher;
static int connects, connect_err, datas, drains, closes, eofs;
static char close_reason[64];
static evlua_stream st;

static void on_connect(evlua_stream *s, int err) {
  (void)s;
  connects++;
  connect_err = err;
}

static void on_data(evlua_stream *s) {
  (void)s;
  datas++;
}

static void on_drain(evlua_stream *s) {
  (void)s;
  drains++;
}

static void on_close(evlua_stream *s, const char *reason) {
  (void)s;
  closes++;
  strncpy(close_reason, reason, sizeof close_reason - 1);
}

static void on_eof(evlua_stream *s) {
  (void)s;
  eofs++;
}

static const evlua_stream_handler handler = {
  on_connect, on_data, on_drain, on_close, on_eof
};

/* What the runtime's before-sleep step does for streams: write the
** corked output once per iteration, before the loop polls. */
static void on_flush(struct ev_loop *l, ev_prepare *w, int revents) {
  (void)l; (void)w; (void)revents;
  evlua_stream_flush_corked(&loop_state);
}

static void start_flusher(void) {
  evlua_loop_state_init(&loop_state, loop);
  ev_prepare_init(&flusher, on_flush);
  ev_set_priority(&flusher, EV_MINPRI);
  ev_prepare_start(loop, &flusher);
  ev_unref(loop);   /* it must not keep ev_run from returning */
}

/* A safety net only: a test waits for events, and fails if none comes
** within 10 s instead of hanging. */
static int guard_fired;
static void on_guard(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l; (void)w; (void)revents;
  guard_fired = 1;
}

#define WAIT_FOR(cond) do { \
    ev_timer guard_; \
    guard_fired = 0; \
    ev_timer_init(&guard_, on_guard, 10., 0.); \
    ev_timer_start(loop, &guard_); \
    while (!(cond) && !guard_fired) ev_run(loop, EVRUN_ONCE); \
    ev_timer_stop(loop, &guard_); \
    assert_false(guard_fired); \
  } while (0)

/* A fresh stream on one end of a socketpair; the other end is returned
** (blocking). */
static int open_pair(void) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  connects = connect_err = datas = drains = closes = eofs = 0;
  close_reason[0] = '\0';
  evlua_stream_init(&st, loop, sv[0], 0, &handler);
  return sv[1];
}

/* Bytes waiting on fd now (0 when none). */
static size_t read_now(int fd, char *buf, size_t size) {
  ssize_t r = recv(fd, buf, size, MSG_DONTWAIT);
  return r > 0 ? (size_t)r : 0;
}

/* Read fd until EOF; returns the byte count (data not kept). */
static size_t drain_to_eof(int fd) {
  static char buf[65536];
  size_t total = 0;
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0) total += (size_t)r;
  return total;
}

/* What the stream's one io watcher watches now. */
static int reading(void) {
  return ev_is_active(&st.io) && (st.io.events & EV_READ);
}

static int writing(void) {
  return ev_is_active(&st.io) && (st.io.events & EV_WRITE);
}

static int write_str(const char *str) {
  struct iovec v = { (void *)(uintptr_t)str, strlen(str) };
  return evlua_stream_write(&st, &v, 1);
}

/* More than the socket takes: 4 MiB in one write. */
static char *big;
#define BIG (4 * 1024 * 1024)
static int write_big(void) {
  struct iovec v = { big, BIG };
  return evlua_stream_write(&st, &v, 1);
}

static void small_writes_share_one_write(void **state) {
  (void)state;
  int peer = open_pair();
  char buf[64];
  assert_int_equal(write_str("hello "), 0);
  assert_int_equal(write_str("world"), 0);
  /* corked: nothing written until the loop's flusher runs */
  assert_int_equal(read_now(peer, buf, sizeof buf), 0);
  assert_int_equal(st.bytes_out, 0);
  ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(st.bytes_out, 11);
  assert_int_equal(read_now(peer, buf, sizeof buf), 11);
  assert_memory_equal(buf, "hello world", 11);
  assert_int_equal(evlua_buffer_len(&st.out), 0);
  evlua_stream_release(&st);
  close(peer);
  assert_int_equal(closes, 0);
}

/* Writes stay corked while the queue holds less than the cork limit; the
** write that reaches it sends everything at once. */
static void writes_go_out_once_the_cork_limit_is_reached(void **state) {
  (void)state;
  int peer = open_pair();
  enum { LIMIT = EVLUA_STREAM_CORK_MAX };
  static char chunk[LIMIT];
  memset(chunk, 'c', sizeof chunk);
  struct iovec v = { chunk, LIMIT - 2 };
  assert_int_equal(evlua_stream_write(&st, &v, 1), 0);
  assert_int_equal(write_str("a"), 0);   /* LIMIT - 1 bytes: corked */
  assert_int_equal(st.bytes_out, 0);
  assert_int_equal(write_str("b"), 0);   /* LIMIT: all of it, now */
  assert_int_equal(st.bytes_out, LIMIT);
  assert_int_equal(evlua_buffer_len(&st.out), 0);
  static char buf[LIMIT + 1];
  assert_int_equal(read_now(peer, buf, sizeof buf), LIMIT);
  assert_memory_equal(buf + LIMIT - 2, "ab", 2);
  evlua_stream_release(&st);
  close(peer);
}

static void large_write_goes_out_at_once_in_order(void **state) {
  (void)state;
  int peer = open_pair();
  assert_int_equal(write_str("head"), 0);
  char *chunk = malloc(32 * 1024);
  memset(chunk, 'x', 32 * 1024);
  struct iovec v = { chunk, 32 * 1024 };
  assert_int_equal(evlua_stream_write(&st, &v, 1), 0);
  /* written inside the call, the corked bytes first */
  assert_true(st.bytes_out > 4);
  char buf[8];
  assert_int_equal(read_now(peer, buf, 5), 5);
  assert_memory_equal(buf, "headx", 5);
  free(chunk);
  evlua_stream_release(&st);
  close(peer);
}

/* The peer's reader: reads what there is, when there is. */
static size_t peer_got;
static void on_peer(struct ev_loop *l, ev_io *w, int revents) {
  (void)l; (void)revents;
  static char buf[65536];
  ssize_t r = read(w->fd, buf, sizeof buf);
  if (r > 0) peer_got += (size_t)r;
}

static void full_above_high_water_drains_at_low_water(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_limits(&st, 1024 * 1024, 256 * 1024, 64 * 1024);
  assert_int_equal(write_big(), 0);
  assert_true(st.full);
  assert_true(evlua_buffer_len(&st.out) >= 256 * 1024);
  assert_int_equal(drains, 0);
  /* A write while full is queued after the rest. */
  assert_int_equal(write_str("tail"), 0);
  peer_got = 0;
  ev_io pw;
  ev_io_init(&pw, on_peer, peer, EV_READ);
  ev_io_start(loop, &pw);
  WAIT_FOR(drains > 0);
  assert_int_equal(drains, 1);
  assert_false(st.full);
  assert_true(evlua_buffer_len(&st.out) <= 64 * 1024);
  WAIT_FOR(peer_got == BIG + 4);
  assert_int_equal(evlua_buffer_len(&st.out), 0);
  assert_int_equal(st.bytes_out, BIG + 4);
  assert_int_equal(drains, 1);
  ev_io_stop(loop, &pw);
  evlua_stream_release(&st);
  close(peer);
  assert_int_equal(closes, 0);
}

/* One io watcher does both directions: input still comes in while output
** waits for the socket, and each direction stops on its own. */
static void reads_while_output_waits(void **state) {
  (void)state;
  int peer = open_pair();   /* reads only at the end */
  assert_int_equal(write_big(), 0);
  assert_true(writing());
  assert_true(reading());
  assert_int_equal(write(peer, "ping", 4), 4);
  WAIT_FOR(datas > 0);
  assert_int_equal(evlua_buffer_len(&st.in), 4);
  assert_memory_equal(evlua_buffer_peek(&st.in), "ping", 4);
  assert_true(writing());
  static char buf[65536];
  size_t got = 0;
  while (got < BIG) {   /* the peer reads it all: the queue empties */
    size_t r = read_now(peer, buf, sizeof buf);
    if (r > 0) got += r;
    else ev_run(loop, EVRUN_ONCE);
  }
  WAIT_FOR(!writing());
  assert_true(reading());
  assert_int_equal(closes, 0);
  evlua_stream_release(&st);
  assert_false(ev_is_active(&st.io));
  close(peer);
}

static void reading_stops_at_max_input(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_limits(&st, 10, 1024, 512);
  assert_int_equal(write(peer, "0123456789abcdefghij", 20), 20);
  WAIT_FOR(datas > 0);
  assert_int_equal(evlua_buffer_len(&st.in), 10);
  assert_false(reading());
  assert_memory_equal(evlua_buffer_peek(&st.in), "0123456789", 10);
  evlua_buffer_consume(&st.in, 10);
  evlua_stream_consumed(&st);
  assert_true(reading());
  WAIT_FOR(datas > 1);
  assert_memory_equal(evlua_buffer_peek(&st.in), "abcdefghij", 10);
  assert_int_equal(st.bytes_in, 20);
  /* Lowering the limit below what is buffered stops reading; raising
  ** it resumes. */
  evlua_stream_set_limits(&st, 5, 1024, 512);
  assert_false(reading());
  evlua_stream_set_limits(&st, 100, 1024, 512);
  assert_true(reading());
  evlua_stream_release(&st);
  close(peer);
}

static void close_flushes_then_closes(void **state) {
  (void)state;
  int peer = open_pair();
  assert_int_equal(write_str("bye"), 0);
  assert_int_equal(write_big(), 0);
  evlua_stream_close(&st, "local close");
  evlua_stream_close(&st, "again");   /* idempotent */
  assert_int_equal(closes, 0);         /* never inside the call */
  assert_int_equal(st.state, EVLUA_STREAM_CLOSING);
  /* no more writes once closing */
  errno = 0;
  assert_int_equal(write_str("late"), -1);
  assert_int_equal(errno, EPIPE);
  ev_io pw;
  peer_got = 0;
  ev_io_init(&pw, on_peer, peer, EV_READ);
  ev_io_start(loop, &pw);
  WAIT_FOR(closes > 0);
  ev_io_stop(loop, &pw);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, "local close");
  assert_int_equal(st.fd, -1);
  /* everything queued arrived, then EOF */
  assert_int_equal(peer_got + drain_to_eof(peer), BIG + 3);
  evlua_stream_release(&st);
  close(peer);
}

static void close_with_nothing_queued_reports_from_the_loop(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_close(&st, "local close");
  assert_int_equal(closes, 0);
  WAIT_FOR(closes > 0);
  assert_string_equal(close_reason, "local close");
  assert_int_equal(drain_to_eof(peer), 0);
  evlua_stream_release(&st);
  close(peer);
}

static void close_silently_drops_queued_output(void **state) {
  (void)state;
  int peer = open_pair();
  assert_int_equal(write_str("dropped"), 0);
  assert_int_equal(write(peer, "in", 2), 2);
  WAIT_FOR(datas > 0);
  assert_int_equal(write_str("dropped too"), 0);
  evlua_stream_close_silently(&st);
  evlua_stream_close_silently(&st);   /* idempotent */
  assert_int_equal(st.state, EVLUA_STREAM_CLOSED);
  ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(closes, 0);
  /* unread input stays readable */
  assert_int_equal(evlua_buffer_len(&st.in), 2);
  /* the first write went out with the data event; the second did not */
  char buf[64];
  size_t n = read_now(peer, buf, sizeof buf);
  assert_int_equal(n, 7);
  assert_int_equal(drain_to_eof(peer), 0);
  evlua_stream_release(&st);
  assert_int_equal(evlua_buffer_len(&st.in), 0);
  close(peer);
}

static void peer_eof_closes_with_eof(void **state) {
  (void)state;
  int peer = open_pair();
  assert_int_equal(write(peer, "last", 4), 4);
  close(peer);
  WAIT_FOR(closes > 0);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, "eof");
  assert_int_equal(evlua_buffer_len(&st.in), 4);
  evlua_stream_release(&st);
}

static void large_write_to_a_closed_peer_is_epipe(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_limits(&st, 0, 1024 * 1024, 1024);   /* no reading */
  close(peer);
  assert_int_equal(write_big(), 0);   /* the error comes from the loop */
  assert_int_equal(st.write_error, EPIPE);
  assert_int_equal(closes, 0);
  WAIT_FOR(closes > 0);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, evlua_net_strerror(EPIPE));
  evlua_stream_release(&st);
}

static void corked_write_to_a_closed_peer_is_epipe(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_limits(&st, 0, 1024 * 1024, 1024);
  close(peer);
  assert_int_equal(write_str("nobody reads this"), 0);
  assert_int_equal(st.write_error, 0);   /* corked: not written yet */
  WAIT_FOR(closes > 0);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, evlua_net_strerror(EPIPE));
  evlua_stream_release(&st);
}

static void queued_write_to_a_closed_peer_fails_when_writable(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_limits(&st, 0, 8 * 1024 * 1024, 1024);
  assert_int_equal(write_big(), 0);
  assert_true(evlua_buffer_len(&st.out) > 0);   /* the rest is queued */
  close(peer);
  WAIT_FOR(closes > 0);
  assert_string_equal(close_reason, evlua_net_strerror(EPIPE));
  evlua_stream_release(&st);
}

/* A TCP connection on loopback: *client is a stream, the accepted end
** is returned. */
static int open_tcp(void) {
  evlua_addr a, bound;
  char err[128];
  assert_int_equal(evlua_addr_parse(&a, "127.0.0.1", 0), 0);
  int lfd = evlua_net_listen(&a, 4, 0, err, sizeof err);
  assert_true(lfd >= 0);
  assert_int_equal(evlua_net_sockname(lfd, &bound), 0);
  int pending;
  int cfd = evlua_net_connect(&bound, &pending, err, sizeof err);
  assert_true(cfd >= 0);
  connects = connect_err = datas = drains = closes = eofs = 0;
  close_reason[0] = '\0';
  evlua_stream_init(&st, loop, cfd, 1, &handler);
  assert_int_equal(st.state, EVLUA_STREAM_CONNECTING);
  assert_int_equal(write_str("early"), 0);   /* queued until connected */
  WAIT_FOR(connects > 0);
  assert_int_equal(connect_err, 0);
  assert_int_equal(st.state, EVLUA_STREAM_OPEN);
  int sfd = accept(lfd, NULL, NULL);
  assert_true(sfd >= 0);
  close(lfd);
  return sfd;
}

static void connect_sends_what_was_written_meanwhile(void **state) {
  (void)state;
  int peer = open_tcp();
  WAIT_FOR(evlua_buffer_len(&st.out) == 0);
  char buf[16];
  assert_int_equal(read(peer, buf, sizeof buf), 5);
  assert_memory_equal(buf, "early", 5);
  evlua_stream_release(&st);
  close(peer);
}

static void reset_by_peer_closes_with_reset(void **state) {
  (void)state;
  int peer = open_tcp();
  WAIT_FOR(evlua_buffer_len(&st.out) == 0);
  /* unread data plus linger 0: the peer's close sends RST */
  struct linger lg = { 1, 0 };
  assert_int_equal(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg),
                   0);
  close(peer);
  WAIT_FOR(closes > 0);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, evlua_net_strerror(ECONNRESET));
  evlua_stream_release(&st);
}

static void refused_connect_reports_without_close(void **state) {
  (void)state;
  evlua_addr a, bound;
  char err[128];
  assert_int_equal(evlua_addr_parse(&a, "127.0.0.1", 0), 0);
  int lfd = evlua_net_listen(&a, 4, 0, err, sizeof err);
  assert_true(lfd >= 0);
  assert_int_equal(evlua_net_sockname(lfd, &bound), 0);
  close(lfd);   /* nobody listens on that port now */
  int pending;
  int cfd = evlua_net_connect(&bound, &pending, err, sizeof err);
  if (cfd < 0) skip();   /* refused at once: nothing for the stream */
  connects = closes = 0;
  evlua_stream_init(&st, loop, cfd, 1, &handler);
  WAIT_FOR(connects > 0);
  assert_int_equal(connect_err, ECONNREFUSED);
  assert_int_equal(st.state, EVLUA_STREAM_CLOSED);
  assert_int_equal(closes, 0);
  evlua_stream_release(&st);
}

static void close_while_connecting_is_silent(void **state) {
  (void)state;
  evlua_addr a, bound;
  char err[128];
  assert_int_equal(evlua_addr_parse(&a, "127.0.0.1", 0), 0);
  int lfd = evlua_net_listen(&a, 4, 0, err, sizeof err);
  assert_true(lfd >= 0);
  assert_int_equal(evlua_net_sockname(lfd, &bound), 0);
  int pending;
  int cfd = evlua_net_connect(&bound, &pending, err, sizeof err);
  assert_true(cfd >= 0);
  connects = closes = 0;
  evlua_stream_init(&st, loop, cfd, 1, &handler);
  evlua_stream_close(&st, "local close");
  assert_int_equal(st.state, EVLUA_STREAM_CLOSED);
  ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(connects, 0);
  assert_int_equal(closes, 0);
  evlua_stream_release(&st);
  close(lfd);
}

static void linger_expiry_closes_unflushed(void **state) {
  (void)state;
  int peer = open_pair();   /* never reads */
  assert_int_equal(write_big(), 0);
  size_t queued = evlua_buffer_len(&st.out);
  assert_true(queued > 0);
  st.linger = 0.05;
  evlua_stream_close(&st, "local close");
  WAIT_FOR(closes > 0);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, "local close");
  assert_int_equal(st.state, EVLUA_STREAM_CLOSED);
  /* the peer gets less than was written, then EOF */
  assert_true(drain_to_eof(peer) < BIG);
  evlua_stream_release(&st);
  close(peer);
}

static void send_timeout_closes_a_stalled_stream(void **state) {
  (void)state;
  int peer = open_pair();   /* never reads */
  evlua_stream_set_send_timeout(&st, 0.05);
  assert_int_equal(write_big(), 0);
  assert_true(st.stalled);
  assert_true(ev_is_active(&st.timer));   /* no idle timeout: for the send */
  WAIT_FOR(closes > 0);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, "send timeout");
  evlua_stream_release(&st);
  close(peer);
}

static void send_timeout_set_during_a_stall_applies(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_send_timeout(&st, 0);   /* none */
  assert_int_equal(write_big(), 0);
  assert_false(ev_is_active(&st.timer));
  evlua_stream_set_send_timeout(&st, 0.05);
  assert_true(ev_is_active(&st.timer));
  WAIT_FOR(closes > 0);
  assert_string_equal(close_reason, "send timeout");
  evlua_stream_release(&st);
  close(peer);
}

static void writes_that_go_out_never_arm_the_send_timer(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_send_timeout(&st, 0.05);
  assert_int_equal(write_str("quick"), 0);
  ev_run(loop, EVRUN_NOWAIT);
  assert_false(st.stalled);
  assert_false(ev_is_active(&st.timer));
  char buf[8];
  assert_int_equal(read_now(peer, buf, sizeof buf), 5);
  evlua_stream_release(&st);
  close(peer);
}

/* The idle, send and linger deadlines share one timer: whichever comes
** first closes the stream, with its own reason. */
static void send_timeout_before_idle_timeout(void **state) {
  (void)state;
  int peer = open_pair();   /* never reads */
  evlua_stream_set_idle_timeout(&st, 5);
  evlua_stream_set_send_timeout(&st, 0.05);
  assert_int_equal(write_big(), 0);
  WAIT_FOR(closes > 0);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, "send timeout");
  evlua_stream_release(&st);
  close(peer);
}

static void idle_timeout_before_send_timeout(void **state) {
  (void)state;
  int peer = open_pair();   /* never reads */
  evlua_stream_set_send_timeout(&st, 5);
  assert_int_equal(write_big(), 0);
  evlua_stream_set_idle_timeout(&st, 0.05);
  WAIT_FOR(closes > 0);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, "timeout");
  evlua_stream_release(&st);
  close(peer);
}

static void send_timeout_while_lingering(void **state) {
  (void)state;
  int peer = open_pair();   /* never reads */
  evlua_stream_set_send_timeout(&st, 0.05);
  assert_int_equal(write_big(), 0);
  evlua_stream_close(&st, "local close");   /* linger: 30 s */
  WAIT_FOR(closes > 0);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, "send timeout");
  evlua_stream_release(&st);
  close(peer);
}

/* A stall that ends leaves the idle deadline armed. */
static void idle_timeout_survives_a_stall(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_idle_timeout(&st, 1.0);
  evlua_stream_set_send_timeout(&st, 2.0);
  assert_int_equal(write_big(), 0);
  assert_true(st.stalled);
  static char buf[65536];
  size_t got = 0;
  while (got < BIG) {   /* read it all: the queue empties, the stall ends */
    size_t r = read_now(peer, buf, sizeof buf);
    if (r > 0) got += r;
    else ev_run(loop, EVRUN_ONCE);
  }
  WAIT_FOR(!st.stalled);
  assert_true(ev_is_active(&st.timer));
  WAIT_FOR(closes > 0);
  assert_string_equal(close_reason, "timeout");
  evlua_stream_release(&st);
  close(peer);
}

static void idle_timeout_closes_a_quiet_stream(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_idle_timeout(&st, 0.05);
  assert_true(ev_is_active(&st.timer));
  WAIT_FOR(closes > 0);
  assert_string_equal(close_reason, "timeout");
  evlua_stream_release(&st);
  close(peer);
}

static void idle_timeout_zero_is_none(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_idle_timeout(&st, 0.05);
  evlua_stream_set_idle_timeout(&st, 0);
  assert_false(ev_is_active(&st.timer));
  evlua_stream_release(&st);
  close(peer);
}

static void many_parts_go_out_in_order(void **state) {
  (void)state;
  int peer = open_pair();
  /* more parts than one writev takes: the rest is queued, in order */
  enum { PARTS = EVLUA_STREAM_MAX_IOV + 6, PART = 1024 };
  static char parts[PARTS][PART];
  struct iovec v[PARTS];
  for (int i = 0; i < PARTS; i++) {
    memset(parts[i], 'A' + i % 26, PART);
    v[i].iov_base = parts[i];
    v[i].iov_len = PART;
  }
  assert_int_equal(write_str("<"), 0);            /* corked first */
  assert_int_equal(evlua_stream_write(&st, v, PARTS), 0);
  assert_true(st.bytes_out > 0);                  /* written at once */
  ev_run(loop, EVRUN_NOWAIT);                      /* nothing left corked */
  static char got[1 + PARTS * PART];
  size_t have = 0;
  while (have < sizeof got) {
    ssize_t r = read(peer, got + have, sizeof got - have);
    assert_true(r > 0);
    have += (size_t)r;
    ev_run(loop, EVRUN_NOWAIT);
  }
  assert_int_equal(got[0], '<');
  for (int i = 0; i < PARTS; i++) {
    assert_int_equal(got[1 + i * PART], 'A' + i % 26);
    assert_int_equal(got[i * PART + PART], 'A' + i % 26);
  }
  evlua_stream_release(&st);
  close(peer);
}

static void write_above_high_water_is_not_corked(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_limits(&st, 1024, 100, 10);
  char buf[256];
  memset(buf, 'h', 200);
  struct iovec v = { buf, 200 };
  assert_int_equal(evlua_stream_write(&st, &v, 1), 0);
  assert_int_equal(st.bytes_out, 200);   /* not corked: over high_water */
  assert_false(st.full);
  assert_int_equal(read_now(peer, buf, sizeof buf), 200);
  evlua_stream_release(&st);
  close(peer);
}

static void close_right_after_a_small_write_sends_it(void **state) {
  (void)state;
  int peer = open_pair();
  assert_int_equal(write_str("last words"), 0);
  evlua_stream_close(&st, "local close");
  evlua_stream_set_idle_timeout(&st, 0.01);   /* closing: not armed again */
  WAIT_FOR(closes > 0);
  assert_string_equal(close_reason, "local close");
  char buf[32];
  ssize_t n = read(peer, buf, sizeof buf);
  assert_int_equal(n, 10);
  assert_memory_equal(buf, "last words", 10);
  assert_int_equal(drain_to_eof(peer), 0);
  evlua_stream_release(&st);
  close(peer);
}

/* Without half_close a peer's EOF closes ("eof"); with it, on_eof comes,
** reading stops, writes still reach the peer, and the owner's close is
** reported as the peer's "eof". */
static void half_close_keeps_writing_after_the_peers_eof(void **state) {
  (void)state;
  int peer = open_pair();
  shutdown(peer, SHUT_WR);
  WAIT_FOR(closes > 0);
  assert_string_equal(close_reason, "eof");
  assert_int_equal(eofs, 0);
  evlua_stream_release(&st);
  close(peer);

  peer = open_pair();
  st.half_close = 1;
  assert_int_equal(write(peer, "ask", 3), 3);
  shutdown(peer, SHUT_WR);
  WAIT_FOR(eofs > 0);
  assert_int_equal(closes, 0);
  assert_false(reading());
  assert_int_equal(evlua_buffer_len(&st.in), 3);
  assert_int_equal(write_str("answer"), 0);
  evlua_stream_close(&st, "local close");
  WAIT_FOR(closes > 0);
  assert_string_equal(close_reason, "eof");
  char buf[16];
  assert_int_equal(read(peer, buf, sizeof buf), 6);
  assert_memory_equal(buf, "answer", 6);
  assert_int_equal(drain_to_eof(peer), 0);
  evlua_stream_release(&st);
  close(peer);
}

static void writes_after_a_write_error_wait_for_its_report(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_limits(&st, 0, 1024 * 1024, 1024);
  close(peer);
  assert_int_equal(write_big(), 0);
  assert_int_equal(st.write_error, EPIPE);
  assert_int_equal(write_str("more"), 0);    /* queued, not written */
  assert_int_equal(write_big(), 0);
  WAIT_FOR(closes > 0);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, evlua_net_strerror(EPIPE));
  assert_int_equal(write_str("after"), -1);
  evlua_stream_release(&st);
}

static void reading_resumes_only_below_max_input(void **state) {
  (void)state;
  int peer = open_pair();
  evlua_stream_set_limits(&st, 8, 1024, 512);
  assert_int_equal(write(peer, "0123456789", 10), 10);
  WAIT_FOR(datas > 0);
  assert_int_equal(evlua_buffer_len(&st.in), 8);
  evlua_stream_consumed(&st);                /* nothing taken */
  assert_false(reading());
  evlua_buffer_consume(&st.in, 1);
  evlua_stream_consumed(&st);
  assert_true(reading());
  WAIT_FOR(datas > 1);
  assert_int_equal(evlua_buffer_len(&st.in), 8);
  assert_memory_equal(evlua_buffer_peek(&st.in), "12345678", 8);
  evlua_stream_release(&st);
  close(peer);
}

/* Transports =========================================================== */

/* A fake transport: it keeps what is written as "pending" until the
** test acknowledges bytes, counts flushes and resumes. */
static struct {
  size_t pending;
  int flushes, resumes, closed, writes;
  char last[256];
  size_t last_len;
} fake;

static int fake_write(evlua_stream *s, const struct iovec *iov, int n) {
  (void)s;
  size_t len = 0;
  for (int i = 0; i < n; i++) {
    if (len + iov[i].iov_len <= sizeof fake.last)
      memcpy(fake.last + len, iov[i].iov_base, iov[i].iov_len);
    len += iov[i].iov_len;
  }
  if (len > 100000) return errno = EMSGSIZE, -1;
  fake.last_len = len;
  fake.pending += len;
  fake.writes++;
  return 0;
}

static size_t fake_pending(const evlua_stream *s) {
  (void)s;
  return fake.pending;
}

static void fake_flush(evlua_stream *s) { (void)s; fake.flushes++; }
static void fake_resume(evlua_stream *s) { (void)s; fake.resumes++; }
static void fake_close(evlua_stream *s) { (void)s; fake.closed++; }

static int fake_addr(evlua_stream *s, int peer, evlua_addr *a) {
  (void)s;
  return evlua_addr_parse(a, "127.0.0.1", peer ? 9 : 8);
}

static const evlua_stream_transport fake_transport = {
  "fake", fake_write, fake_pending, fake_flush, fake_resume, fake_addr,
  fake_close
};

static void open_fake(int message_mode) {
  memset(&fake, 0, sizeof fake);
  connects = connect_err = datas = drains = closes = eofs = 0;
  close_reason[0] = '\0';
  evlua_stream_init_transport(&st, loop, &fake_transport, &fake,
                              message_mode, &handler);
}

/* The peer acknowledged n bytes. */
static void ack(size_t n) {
  fake.pending -= n;
  evlua_stream_progress(&st);
}

static void transport_writes_are_flushed_once_per_iteration(void **state) {
  (void)state;
  open_fake(0);
  assert_int_equal(st.fd, -1);
  assert_int_equal(st.state, EVLUA_STREAM_OPEN);
  assert_int_equal(write_str("a"), 0);
  assert_int_equal(write_str("b"), 0);
  assert_int_equal(fake.writes, 2);
  assert_int_equal(fake.flushes, 0);
  ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(fake.flushes, 1);
  assert_int_equal(evlua_stream_pending(&st), 2);
  assert_int_equal(st.bytes_out, 2);
  evlua_addr a;
  assert_int_equal(evlua_stream_addr(&st, 1, &a), 0);
  char host[64];
  assert_int_equal(evlua_addr_format(&a, host, sizeof host), 9);
  evlua_stream_release(&st);
  assert_int_equal(fake.closed, 1);
  assert_int_equal(evlua_stream_addr(&st, 1, &a), -1);
}

static void transport_full_at_high_water_drains_at_low(void **state) {
  (void)state;
  open_fake(0);
  evlua_stream_set_limits(&st, 1000, 100, 40);
  struct iovec v = { big, 150 };
  assert_int_equal(evlua_stream_write(&st, &v, 1), 0);
  assert_true(st.full);
  ack(100);              /* 50 left: above low water */
  assert_true(st.full);
  assert_int_equal(drains, 0);
  ack(10);               /* 40: at it */
  assert_false(st.full);
  assert_int_equal(drains, 1);
  evlua_stream_release(&st);
}

static void transport_input_pauses_at_max_input(void **state) {
  (void)state;
  open_fake(0);
  evlua_stream_set_limits(&st, 10, 100, 40);
  assert_true(evlua_stream_wants_input(&st));
  assert_int_equal(evlua_stream_deliver(&st, "0123456789", 10), 0);
  assert_int_equal(datas, 1);
  assert_false(evlua_stream_wants_input(&st));
  assert_true(st.input_paused);
  assert_int_equal(st.bytes_in, 10);
  evlua_stream_take(&st, 5);
  assert_int_equal(fake.resumes, 1);
  assert_true(evlua_stream_wants_input(&st));
  evlua_stream_take(&st, 1);            /* not paused: no second resume */
  assert_int_equal(fake.resumes, 1);
  evlua_stream_release(&st);
}

static void transport_close_waits_for_acks(void **state) {
  (void)state;
  open_fake(0);
  assert_int_equal(write_str("hello"), 0);
  evlua_stream_close(&st, "local close");
  assert_int_equal(st.state, EVLUA_STREAM_CLOSING);
  assert_int_equal(write_str("x"), -1);     /* closing: no more writes */
  ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(closes, 0);
  assert_true(fake.flushes >= 1);
  ack(5);
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, "local close");
  assert_int_equal(fake.closed, 1);
  evlua_stream_release(&st);
  assert_int_equal(fake.closed, 1);         /* once */
}

static void transport_close_with_nothing_pending_reports_from_the_loop(
    void **state) {
  (void)state;
  open_fake(0);
  evlua_stream_close(&st, "local close");
  assert_int_equal(closes, 0);
  WAIT_FOR(closes == 1);
  assert_string_equal(close_reason, "local close");
  evlua_stream_release(&st);
}

static void transport_linger_bounds_the_flush(void **state) {
  (void)state;
  open_fake(0);
  st.linger = 0.05;
  assert_int_equal(write_str("never acked"), 0);
  evlua_stream_close(&st, "local close");
  WAIT_FOR(closes == 1);
  assert_string_equal(close_reason, "local close");
  assert_int_equal(fake.closed, 1);
  evlua_stream_release(&st);
}

static void transport_send_timeout_without_acks(void **state) {
  (void)state;
  open_fake(0);
  evlua_stream_set_send_timeout(&st, 0.05);
  assert_int_equal(write_str("stuck"), 0);
  WAIT_FOR(closes == 1);
  assert_string_equal(close_reason, "send timeout");
  evlua_stream_release(&st);
}

static void transport_acks_stop_the_send_timer(void **state) {
  (void)state;
  open_fake(0);
  evlua_stream_set_send_timeout(&st, 0.05);
  assert_int_equal(write_str("ok"), 0);
  assert_true(ev_is_active(&st.timer));
  ack(2);
  assert_false(st.stalled);
  assert_false(ev_is_active(&st.timer));   /* no other deadline */
  evlua_stream_release(&st);
  assert_int_equal(closes, 0);
}

static void transport_end_reports_its_reason(void **state) {
  (void)state;
  open_fake(0);
  evlua_stream_end(&st, "timeout");
  assert_int_equal(closes, 1);
  assert_string_equal(close_reason, "timeout");
  assert_int_equal(st.state, EVLUA_STREAM_CLOSED);
  assert_int_equal(evlua_stream_deliver(&st, "x", 1), -1);
  evlua_stream_release(&st);
}

static void transport_write_error_passes_on(void **state) {
  (void)state;
  open_fake(1);
  struct iovec v = { big, 200000 };
  errno = 0;
  assert_int_equal(evlua_stream_write(&st, &v, 1), -1);
  assert_int_equal(errno, EMSGSIZE);
  assert_int_equal(st.bytes_out, 0);
  evlua_stream_release(&st);
}

/* Message ends: read_message takes exactly the next message, after reads
** of other kinds took all or part of the ones before. */
static void take_next(const char *want) {
  long n = evlua_stream_next_message(&st);
  assert_int_equal(n, (long)strlen(want));
  assert_memory_equal(evlua_buffer_peek(&st.in), want, (size_t)n);
  evlua_stream_take_message(&st, (size_t)n);
}

static void transport_messages_keep_their_boundaries(void **state) {
  (void)state;
  open_fake(1);
  assert_int_equal(evlua_stream_next_message(&st), -1);
  evlua_stream_deliver(&st, "one", 3);
  evlua_stream_deliver(&st, "", 0);
  evlua_stream_deliver(&st, "two\n", 4);
  evlua_stream_deliver(&st, "three", 5);
  evlua_stream_deliver(&st, "four", 4);
  assert_int_equal(st.msg_count, 5);
  take_next("one");
  take_next("");
  evlua_stream_take(&st, 4);           /* a line read took "two\n" */
  take_next("three");
  evlua_stream_take(&st, 2);           /* half of "four" */
  take_next("ur");
  assert_int_equal(evlua_stream_next_message(&st), -1);
  assert_int_equal(st.msg_count, 0);
  evlua_stream_release(&st);
}

static void transport_message_list_grows_and_bounds_input(void **state) {
  (void)state;
  open_fake(1);
  for (int i = 0; i < EVLUA_STREAM_MAX_MESSAGES; i++) {
    assert_true(evlua_stream_wants_input(&st));
    char c = (char)('a' + i % 26);
    evlua_stream_deliver(&st, &c, 1);
  }
  assert_false(evlua_stream_wants_input(&st));   /* at the message bound */
  assert_true(st.input_paused);
  for (int i = 0; i < 100; i++) {
    char c = (char)('a' + i % 26);
    char want[2] = { c, 0 };
    take_next(want);
  }
  assert_int_equal(fake.resumes, 1);
  evlua_stream_release(&st);
  assert_null(st.msg_end);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  loop = ev_default_loop(0);
  start_flusher();
  big = malloc(BIG);
  memset(big, 'b', BIG);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(small_writes_share_one_write),
    cmocka_unit_test(writes_go_out_once_the_cork_limit_is_reached),
    cmocka_unit_test(large_write_goes_out_at_once_in_order),
    cmocka_unit_test(full_above_high_water_drains_at_low_water),
    cmocka_unit_test(reads_while_output_waits),
    cmocka_unit_test(reading_stops_at_max_input),
    cmocka_unit_test(close_flushes_then_closes),
    cmocka_unit_test(close_with_nothing_queued_reports_from_the_loop),
    cmocka_unit_test(close_silently_drops_queued_output),
    cmocka_unit_test(peer_eof_closes_with_eof),
    cmocka_unit_test(large_write_to_a_closed_peer_is_epipe),
    cmocka_unit_test(corked_write_to_a_closed_peer_is_epipe),
    cmocka_unit_test(queued_write_to_a_closed_peer_fails_when_writable),
    cmocka_unit_test(connect_sends_what_was_written_meanwhile),
    cmocka_unit_test(reset_by_peer_closes_with_reset),
    cmocka_unit_test(refused_connect_reports_without_close),
    cmocka_unit_test(close_while_connecting_is_silent),
    cmocka_unit_test(linger_expiry_closes_unflushed),
    cmocka_unit_test(send_timeout_closes_a_stalled_stream),
    cmocka_unit_test(send_timeout_set_during_a_stall_applies),
    cmocka_unit_test(writes_that_go_out_never_arm_the_send_timer),
    cmocka_unit_test(send_timeout_before_idle_timeout),
    cmocka_unit_test(idle_timeout_before_send_timeout),
    cmocka_unit_test(send_timeout_while_lingering),
    cmocka_unit_test(idle_timeout_survives_a_stall),
    cmocka_unit_test(idle_timeout_closes_a_quiet_stream),
    cmocka_unit_test(idle_timeout_zero_is_none),
    cmocka_unit_test(many_parts_go_out_in_order),
    cmocka_unit_test(write_above_high_water_is_not_corked),
    cmocka_unit_test(close_right_after_a_small_write_sends_it),
    cmocka_unit_test(writes_after_a_write_error_wait_for_its_report),
    cmocka_unit_test(reading_resumes_only_below_max_input),
    cmocka_unit_test(transport_writes_are_flushed_once_per_iteration),
    cmocka_unit_test(transport_full_at_high_water_drains_at_low),
    cmocka_unit_test(transport_input_pauses_at_max_input),
    cmocka_unit_test(transport_close_waits_for_acks),
    cmocka_unit_test(
        transport_close_with_nothing_pending_reports_from_the_loop),
    cmocka_unit_test(transport_linger_bounds_the_flush),
    cmocka_unit_test(transport_send_timeout_without_acks),
    cmocka_unit_test(transport_acks_stop_the_send_timer),
    cmocka_unit_test(transport_end_reports_its_reason),
    cmocka_unit_test(transport_write_error_passes_on),
    cmocka_unit_test(transport_messages_keep_their_boundaries),
    cmocka_unit_test(transport_message_list_grows_and_bounds_input),
    cmocka_unit_test(half_close_keeps_writing_after_the_peers_eof),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  evlua_loop_state_release(&loop_state);
  free(big);
  return failed;
}
