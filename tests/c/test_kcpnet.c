/*
** test_kcpnet.c - unit tests for src/core/kcpnet.c on libev's default
** loop over loopback UDP: a client and a listener exchanging messages,
** sessions keyed by conv, bad datagrams counted by reason, max_sessions,
** idle sessions that leave the timers alone, a dead link, and the
** listener closing only once its last session has.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kcpnet.h"

static struct ev_loop *loop;
static evlua_loop_state loop_state;
static ev_prepare flusher;

/* What the runtime's before-sleep step does: the streams' flush (the KCP
** engines'), then the UDP queues. */
static void on_flush(struct ev_loop *l, ev_prepare *w, int revents) {
  (void)w; (void)revents;
  evlua_stream_flush_corked(&loop_state);
  evlua_udp_flush_pending(l);
}

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

/* Run the loop for about `seconds`. */
static void run_for(double seconds) {
  ev_timer t;
  guard_fired = 0;
  ev_timer_init(&t, on_guard, seconds, 0.);
  ev_timer_start(loop, &t);
  while (!guard_fired) ev_run(loop, EVRUN_ONCE);
}

/* Streams: the test's own, one per session (the binding's are Lua
** userdata). */
#define MAX_STREAMS 64
static evlua_stream streams[MAX_STREAMS];
static int nstreams, datas, closes;
static char close_reason[64];

static void on_connect(evlua_stream *s, int err) { (void)s; (void)err; }
static void on_data(evlua_stream *s) { (void)s; datas++; }
static void on_drain(evlua_stream *s) { (void)s; }
static void on_close(evlua_stream *s, const char *reason) {
  (void)s;
  closes++;
  strncpy(close_reason, reason, sizeof close_reason - 1);
}

static const evlua_stream_handler handler = {
  on_connect, on_data, on_drain, on_close, NULL
};

static void on_session(evlua_kcpnet *net, evlua_kcp_session *ss) {
  (void)net;
  if (nstreams == MAX_STREAMS) return;   /* left unattached: dropped */
  evlua_stream *s = &streams[nstreams++];
  evlua_stream_init_transport(s, loop, &evlua_kcp_transport, ss,
                              evlua_kcp_session_message_mode(ss), &handler);
  evlua_kcp_session_attach(ss, s);
}

static const evlua_kcpnet_handler net_handler = { on_session };

static evlua_kcpnet_opts fast_opts(void) {
  evlua_kcpnet_opts o = { 1, 10, 2, 1, -1, -1, -1, 0, -1, 0, 0 };
  return o;
}

static void reset(void) {
  nstreams = datas = closes = 0;
  close_reason[0] = '\0';
}

static evlua_kcpnet *listener(const evlua_kcpnet_opts *o) {
  evlua_addr local;
  assert_int_equal(evlua_addr_parse(&local, "127.0.0.1", 0), 0);
  char err[128];
  evlua_kcpnet *net = evlua_kcpnet_open(loop, &local, NULL, o, &net_handler,
                                        NULL, err, sizeof err);
  assert_non_null(net);
  return net;
}

/* A client session on stream slot nstreams, to port. */
static evlua_stream *client(int port, uint32_t conv) {
  evlua_addr local, peer;
  evlua_addr_parse(&local, "127.0.0.1", 0);
  evlua_addr_parse(&peer, "127.0.0.1", port);
  char err[128];
  evlua_kcpnet_opts o = fast_opts();
  evlua_kcpnet *net = evlua_kcpnet_open(loop, &local, &peer, &o,
                                        &net_handler, NULL, err, sizeof err);
  assert_non_null(net);
  int slot = nstreams;
  assert_non_null(evlua_kcpnet_connect(net, conv));
  evlua_kcpnet_close(net);   /* the session keeps it */
  return &streams[slot];
}

static int write_str(evlua_stream *s, const char *str) {
  struct iovec v = { (void *)(uintptr_t)str, strlen(str) };
  return evlua_stream_write(s, &v, 1);
}

/* A raw UDP socket for bad datagrams. */
static int raw_socket(void) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  assert_true(fd >= 0);
  return fd;
}

static void raw_send(int fd, int port, const void *data, size_t len) {
  evlua_addr to;
  evlua_addr_parse(&to, "127.0.0.1", port);
  assert_int_equal(sendto(fd, data, len, 0, (struct sockaddr *)&to.ss,
                          to.len), (ssize_t)len);
}

static size_t push(char *buf, uint32_t conv, uint8_t cmd, const char *data,
                   uint32_t len) {
  evlua_kcp_header h = { conv, cmd, 0, 128, 0, 0, 0, len };
  evlua_kcp_encode_header(buf, &h);
  if (data) memcpy(buf + EVLUA_KCP_OVERHEAD, data, len);
  return EVLUA_KCP_OVERHEAD + (data ? len : 0);
}

static void messages_keep_their_boundaries(void **state) {
  (void)state;
  reset();
  evlua_kcpnet_opts o = fast_opts();
  evlua_kcpnet *l = listener(&o);
  evlua_stream *c = client(evlua_kcpnet_port(l), 42);
  assert_int_equal(write_str(c, "one"), 0);
  assert_int_equal(write_str(c, "two\n"), 0);
  struct iovec v[2] = { { "th", 2 }, { "ree", 3 } };   /* one message */
  assert_int_equal(evlua_stream_write(c, v, 2), 0);
  WAIT_FOR(nstreams == 2 && evlua_buffer_len(&streams[1].in) == 12);
  evlua_stream *srv = &streams[1];
  assert_int_equal(evlua_kcpnet_sessions(l), 1);
  assert_int_equal(evlua_kcpnet_stats_of(l)->accepted, 1);
  assert_int_equal(evlua_kcp_conv(evlua_kcp_session_engine(
                       evlua_kcp_session_of(srv))), 42);
  assert_int_equal(evlua_stream_next_message(srv), 3);
  evlua_stream_take_message(srv, 3);
  assert_int_equal(evlua_stream_next_message(srv), 4);
  evlua_stream_take_message(srv, 4);
  assert_int_equal(evlua_stream_next_message(srv), 5);
  assert_memory_equal(evlua_buffer_peek(&srv->in), "three", 5);
  WAIT_FOR(evlua_stream_pending(c) == 0);   /* acknowledged */
  /* the client's flushing close ends once nothing is pending */
  evlua_stream_close(c, "local close");
  WAIT_FOR(closes == 1);
  assert_string_equal(close_reason, "local close");
  assert_null(evlua_kcp_session_of(c));
  evlua_stream_close_silently(srv);
  assert_int_equal(evlua_kcpnet_sessions(l), 0);
  evlua_kcpnet_close(l);
  evlua_stream_release(c);
  evlua_stream_release(srv);
}

static void bad_datagrams_are_counted_and_cost_nothing(void **state) {
  (void)state;
  reset();
  evlua_kcpnet_opts o = fast_opts();
  evlua_kcpnet *l = listener(&o);
  int port = evlua_kcpnet_port(l), fd = raw_socket();
  char buf[256];
  raw_send(fd, port, "short", 5);
  size_t n = push(buf, 5, 99, "x", 1);               /* unknown command */
  raw_send(fd, port, buf, n);
  n = push(buf, 5, EVLUA_KCP_CMD_PUSH, NULL, 1000);   /* len past the end */
  raw_send(fd, port, buf, n);
  n = push(buf, 5, EVLUA_KCP_CMD_PUSH, "ab", 2);
  n += push(buf + n, 6, EVLUA_KCP_CMD_PUSH, "cd", 2); /* two convs */
  raw_send(fd, port, buf, n);
  n = push(buf, 5, EVLUA_KCP_CMD_ACK, NULL, 0);       /* no session to ack */
  raw_send(fd, port, buf, n);
  const evlua_kcpnet_stats *st = evlua_kcpnet_stats_of(l);
  WAIT_FOR(st->datagrams == 5);
  assert_int_equal(st->dropped, 5);
  assert_int_equal(st->drop_short, 1);
  assert_int_equal(st->drop_cmd, 1);
  assert_int_equal(st->drop_len, 1);
  assert_int_equal(st->drop_conv, 1);
  assert_int_equal(st->drop_no_session, 1);
  assert_int_equal(evlua_kcpnet_sessions(l), 0);
  assert_int_equal(nstreams, 0);
  close(fd);
  evlua_kcpnet_close(l);
}

static void max_sessions_refuses_the_next(void **state) {
  (void)state;
  reset();
  evlua_kcpnet_opts o = fast_opts();
  o.max_sessions = 2;
  evlua_kcpnet *l = listener(&o);
  int port = evlua_kcpnet_port(l), fd = raw_socket();
  char buf[64];
  for (uint32_t conv = 1; conv <= 3; conv++) {
    size_t n = push(buf, conv, EVLUA_KCP_CMD_PUSH, "hi", 2);
    raw_send(fd, port, buf, n);
  }
  const evlua_kcpnet_stats *st = evlua_kcpnet_stats_of(l);
  WAIT_FOR(st->datagrams == 3);
  assert_int_equal(evlua_kcpnet_sessions(l), 2);
  assert_int_equal(st->drop_limit, 1);
  assert_int_equal(nstreams, 2);
  /* the owner lets go: sessions go on, and no new one opens */
  evlua_kcpnet_close(l);
  size_t n = push(buf, 9, EVLUA_KCP_CMD_PUSH, "hi", 2);
  raw_send(fd, port, buf, n);
  WAIT_FOR(st->datagrams == 4);
  assert_int_equal(st->drop_no_session, 1);
  evlua_stream_release(&streams[0]);
  evlua_stream_release(&streams[1]);   /* the last: the socket goes */
  close(fd);
}

static void idle_sessions_leave_the_loop_asleep(void **state) {
  (void)state;
  reset();
  evlua_kcpnet_opts o = fast_opts();
  evlua_kcpnet *l = listener(&o);
  int port = evlua_kcpnet_port(l), fd = raw_socket();
  char buf[64];
  for (uint32_t conv = 1; conv <= 50; conv++) {
    size_t n = push(buf, conv, EVLUA_KCP_CMD_PUSH, "x", 1);
    raw_send(fd, port, buf, n);
  }
  WAIT_FOR(evlua_kcpnet_sessions(l) == 50);
  run_for(0.1);   /* acks out */
  uint64_t before = evlua_kcpnet_wakeups(l);
  run_for(0.5);
  assert_true(evlua_kcpnet_wakeups(l) - before < 5);
  for (int i = 0; i < nstreams; i++) evlua_stream_release(&streams[i]);
  evlua_kcpnet_close(l);
  close(fd);
}

static void a_dead_link_ends_with_timeout(void **state) {
  (void)state;
  reset();
  int fd = raw_socket();   /* bound, silent: never acks */
  evlua_addr a;
  evlua_addr_parse(&a, "127.0.0.1", 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&a.ss, a.len), 0);
  assert_int_equal(evlua_net_sockname(fd, &a), 0);
  char host[64];
  evlua_stream *c = client(evlua_addr_format(&a, host, sizeof host), 7);
  evlua_kcp_set_dead_link(evlua_kcp_session_engine(evlua_kcp_session_of(c)),
                          2);
  assert_int_equal(write_str(c, "hello?"), 0);
  WAIT_FOR(closes == 1);
  assert_string_equal(close_reason, "timeout");
  assert_int_equal(write_str(c, "x"), -1);
  evlua_stream_release(c);
  close(fd);
}

int main(void) {
  loop = ev_default_loop(0);
  evlua_loop_state_init(&loop_state, loop);
  ev_prepare_init(&flusher, on_flush);
  ev_set_priority(&flusher, EV_MINPRI);
  ev_prepare_start(loop, &flusher);
  ev_unref(loop);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(messages_keep_their_boundaries),
    cmocka_unit_test(bad_datagrams_are_counted_and_cost_nothing),
    cmocka_unit_test(max_sessions_refuses_the_next),
    cmocka_unit_test(idle_sessions_leave_the_loop_asleep),
    cmocka_unit_test(a_dead_link_ends_with_timeout),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  evlua_loop_state_release(&loop_state);
  return failed;
}
