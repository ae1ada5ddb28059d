/*
** test_udp.c - unit tests for src/core/udp.c on libev's default loop over
** loopback: batched receive with sender addresses, truncation, the send
** queue and its limit, refused datagrams, connected sockets, closing.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "loop.h"
#include "net.h"
#include "udp.h"

static struct ev_loop *loop;
static evlua_loop_state loop_state;

#define MAX_SEEN 256
static int seen;
static char seen_data[MAX_SEEN][16];
static size_t seen_len[MAX_SEEN];
static int seen_port[MAX_SEEN];
static int seen_truncated;
static int close_after;    /* the handler closes the socket at this count */

static void on_datagram(evlua_udp *u, const char *data, size_t len,
                        const evlua_addr *from, int truncated) {
  if (seen < MAX_SEEN) {
    char ip[64];
    size_t n = len < sizeof seen_data[0] ? len : sizeof seen_data[0] - 1;
    memcpy(seen_data[seen], data, n);
    seen_data[seen][n] = '\0';
    seen_len[seen] = len;
    seen_port[seen] = evlua_addr_format(from, ip, sizeof ip);
  }
  seen++;
  seen_truncated += truncated;
  if (close_after && seen == close_after) evlua_udp_close(u);
}

static const evlua_udp_handler handler = { on_datagram };

/* A safety net only: a test waits for events, and fails if none comes
** within 10 s instead of hanging. */
static int guard_fired;
static void on_guard(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l; (void)w; (void)revents;
  guard_fired = 1;
}

/* Run the loop as the runtime does (write the send queues, then poll)
** until cond holds. */
#define RUN_UNTIL(cond) do { \
    ev_timer guard_; \
    guard_fired = 0; \
    ev_timer_init(&guard_, on_guard, 10., 0.); \
    ev_timer_start(loop, &guard_); \
    while (!(cond) && !guard_fired) { \
      evlua_udp_flush_pending(loop); \
      ev_run(loop, EVRUN_ONCE); \
    } \
    ev_timer_stop(loop, &guard_); \
    assert_false(guard_fired); \
  } while (0)

static void open_socket(evlua_udp *u) {
  evlua_addr local;
  char err[128];
  assert_int_equal(evlua_addr_parse(&local, "127.0.0.1", 0), 0);
  assert_int_equal(evlua_udp_open(u, loop, &local, &handler, NULL,
                                  err, sizeof err), 0);
}

static int port_of(evlua_udp *u, evlua_addr *a) {
  char ip[64];
  assert_int_equal(evlua_net_sockname(u->fd, a), 0);
  return evlua_addr_format(a, ip, sizeof ip);
}

static void reset(void) {
  seen = seen_truncated = close_after = 0;
}

static void datagrams_arrive_in_order_with_their_sender(void **state) {
  (void)state;
  evlua_udp a, b;
  evlua_addr to, from;
  reset();
  open_socket(&a);
  open_socket(&b);
  port_of(&a, &to);
  int b_port = port_of(&b, &from);
  for (int i = 0; i < 100; i++) {
    char msg[16];
    int n = snprintf(msg, sizeof msg, "d%d", i);
    assert_int_equal(evlua_udp_send(&b, msg, (size_t)n, &to), 0);
  }
  assert_int_equal(b.queued, 100);   /* queued until the flush */
  RUN_UNTIL(seen == 100);
  for (int i = 0; i < 100; i++) {
    char msg[16];
    snprintf(msg, sizeof msg, "d%d", i);
    assert_string_equal(seen_data[i], msg);
    assert_int_equal(seen_port[i], b_port);
  }
  assert_int_equal(b.queued, 0);
  assert_int_equal(b.stats.sent, 100);
  assert_int_equal(a.stats.received, 100);
  evlua_udp_close(&a);
  evlua_udp_close(&b);
}

static void longer_than_max_datagram_is_cut_and_counted(void **state) {
  (void)state;
  evlua_udp a, b;
  evlua_addr to;
  reset();
  open_socket(&a);
  open_socket(&b);
  a.max_datagram = 4;
  port_of(&a, &to);
  assert_int_equal(evlua_udp_send(&b, "abcd", 4, &to), 0);
  assert_int_equal(evlua_udp_send(&b, "abcde", 5, &to), 0);
  RUN_UNTIL(seen == 2);
  assert_int_equal(seen_len[0], 4);
  assert_int_equal(seen_len[1], 4);
  assert_string_equal(seen_data[1], "abcd");
  assert_int_equal(seen_truncated, 1);
  assert_int_equal(a.stats.truncated, 1);
  evlua_udp_close(&a);
  evlua_udp_close(&b);
}

static void send_refuses_past_its_limits(void **state) {
  (void)state;
  evlua_udp a;
  evlua_addr to;
  static char big[EVLUA_UDP_MAX_DATAGRAM + 1];
  open_socket(&a);
  port_of(&a, &to);
  a.max_queue = 2;
  assert_int_equal(evlua_udp_send(&a, big, EVLUA_UDP_MAX_DATAGRAM, &to), 0);
  assert_int_equal(evlua_udp_send(&a, big, EVLUA_UDP_MAX_DATAGRAM + 1, &to),
                   -1);
  assert_int_equal(errno, EMSGSIZE);
  assert_int_equal(evlua_udp_send(&a, "x", 1, &to), 0);    /* the 2nd */
  assert_int_equal(evlua_udp_send(&a, "x", 1, &to), -1);   /* the 3rd */
  assert_int_equal(errno, EAGAIN);
  assert_int_equal(evlua_udp_send(&a, "x", 1, NULL), -1);
  assert_int_equal(errno, EDESTADDRREQ);
  evlua_udp_close(&a);
  assert_int_equal(a.queued, 0);      /* the queue is freed */
  assert_int_equal(evlua_udp_send(&a, "x", 1, &to), -1);
  assert_int_equal(errno, EBADF);
  evlua_udp_close(&a);                /* idempotent */
}

static void a_refused_datagram_is_dropped_and_counted(void **state) {
  (void)state;
  evlua_udp a;
  evlua_addr v6;
  open_socket(&a);
  /* an IPv6 destination for an IPv4 socket: the kernel refuses it */
  assert_int_equal(evlua_addr_parse(&v6, "::1", 9), 0);
  evlua_addr self;
  port_of(&a, &self);
  reset();
  assert_int_equal(evlua_udp_send(&a, "bad", 3, &v6), 0);
  assert_int_equal(evlua_udp_send(&a, "good", 4, &self), 0);
  RUN_UNTIL(seen == 1);
  assert_string_equal(seen_data[0], "good");   /* the next still went */
  assert_int_equal(a.stats.send_errors, 1);
  assert_int_not_equal(a.last_error, 0);
  evlua_udp_close(&a);
}

static void a_connected_socket_sends_without_an_address(void **state) {
  (void)state;
  evlua_udp a, b;
  evlua_addr to;
  reset();
  open_socket(&a);
  open_socket(&b);
  port_of(&a, &to);
  assert_int_equal(evlua_udp_connect(&b, &to), 0);
  assert_int_equal(evlua_udp_send(&b, "hi", 2, NULL), 0);
  RUN_UNTIL(seen == 1);
  assert_string_equal(seen_data[0], "hi");
  evlua_udp_close(&a);
  evlua_udp_close(&b);
}

static void closing_in_the_handler_stops_the_batch(void **state) {
  (void)state;
  evlua_udp a, b;
  evlua_addr to;
  reset();
  open_socket(&a);
  open_socket(&b);
  port_of(&a, &to);
  for (int i = 0; i < 10; i++)
    assert_int_equal(evlua_udp_send(&b, "x", 1, &to), 0);
  close_after = 3;
  RUN_UNTIL(a.fd < 0);
  for (int i = 0; i < 5; i++) ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(seen, 3);
  evlua_udp_close(&b);
}

static void closing_with_a_queue_unlinks_the_socket(void **state) {
  (void)state;
  evlua_udp a;
  evlua_addr to;
  open_socket(&a);
  port_of(&a, &to);
  assert_int_equal(evlua_udp_send(&a, "x", 1, &to), 0);
  assert_ptr_equal(loop_state.udp_pending, &a);
  evlua_udp_close(&a);
  assert_null(loop_state.udp_pending);
  evlua_udp_flush_pending(loop);   /* nothing left to touch */
}

int main(void) {
  loop = ev_default_loop(0);
  evlua_loop_state_init(&loop_state, loop);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(datagrams_arrive_in_order_with_their_sender),
    cmocka_unit_test(longer_than_max_datagram_is_cut_and_counted),
    cmocka_unit_test(send_refuses_past_its_limits),
    cmocka_unit_test(a_refused_datagram_is_dropped_and_counted),
    cmocka_unit_test(a_connected_socket_sends_without_an_address),
    cmocka_unit_test(closing_in_the_handler_stops_the_batch),
    cmocka_unit_test(closing_with_a_queue_unlinks_the_socket),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  evlua_loop_state_release(&loop_state);
  return failed;
}
