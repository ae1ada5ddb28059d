/*
** test_dns.c - unit tests for src/core/dns.c on libev's default loop, without
** the network: the servers are this test's own UDP sockets on 127.0.0.1,
** one that answers A queries (NXDOMAIN for names starting "missing") and
** one that never answers.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dns.h"

static struct ev_loop *loop;

/*{== The test's DNS servers ==========================================*/

static int answering_fd = -1, silent_fd = -1;
static int answering_port, silent_port;
static int queries_seen;
static ev_io answering_w, silent_w;

/* Answer one query: A -> 10.1.2.3, other types -> no data, names
** starting with "missing" -> NXDOMAIN. */
static void on_query(struct ev_loop *l, ev_io *w, int revents) {
  (void)l; (void)revents;
  unsigned char q[512], a[600];
  struct sockaddr_storage from;
  socklen_t fromlen = sizeof from;
  ssize_t n = recvfrom(w->fd, q, sizeof q, 0, (struct sockaddr *)&from,
                       &fromlen);
  if (n < 12) return;
  queries_seen++;
  if (w->fd == silent_fd) return;
  size_t end = 12;
  while (end < (size_t)n && q[end] != 0) end += q[end] + 1u;
  end += 5;                                  /* root label, type, class */
  if (end > (size_t)n) return;
  int type = q[end - 4] << 8 | q[end - 3];
  /* the first label picks the answer */
  int rcode = 0, twice = 0;
  static const struct { const char *label; int rcode; } codes[] = {
    { "missing", 3 }, { "servfail", 2 }, { "refused", 5 }, { "formerr", 1 }
  };
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    size_t ln = strlen(codes[i].label);
    if (q[12] >= ln && memcmp(q + 13, codes[i].label, ln) == 0)
      rcode = codes[i].rcode;
  }
  if (q[12] >= 5 && memcmp(q + 13, "twice", 5) == 0) twice = 1;
  memcpy(a, q, end);
  a[2] = 0x81;                               /* response, recursion */
  a[3] = (unsigned char)(0x80 | rcode);
  a[6] = 0; a[7] = 0;                        /* answers */
  a[8] = a[9] = a[10] = a[11] = 0;
  size_t len = end;
  for (int k = 0; rcode == 0 && type == 1 && k < 1 + twice; k++) {
    static const unsigned char rr[] = {
      0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3
    };
    memcpy(a + len, rr, sizeof rr);
    len += sizeof rr;
    a[7]++;
  }
  sendto(w->fd, a, len, 0, (struct sockaddr *)&from, fromlen);
}

static int udp_server(int *port, ev_io *w) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in in;
  memset(&in, 0, sizeof in);
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
  socklen_t len = sizeof in;
  assert_int_equal(getsockname(fd, (struct sockaddr *)&in, &len), 0);
  *port = ntohs(in.sin_port);
  ev_io_init(w, on_query, fd, EV_READ);
  ev_io_start(loop, w);
  ev_unref(loop);              /* the servers do not keep the loop alive */
  return fd;
}

/*}====================================================================*/

/* What callbacks received. */
typedef struct result {
  int calls;
  char err[64];
  char addrs[4][EVLUA_DNS_ADDRLEN];
  size_t n;
} result;

static void on_result(void *arg, const char *err, const char *const *addrs,
                      size_t n) {
  result *res = arg;
  res->calls++;
  snprintf(res->err, sizeof res->err, "%s", err ? err : "");
  res->n = n;
  for (size_t i = 0; i < n && i < 4; i++)
    snprintf(res->addrs[i], EVLUA_DNS_ADDRLEN, "%s", addrs[i]);
}

static int guard_fired;
static void on_guard(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l; (void)w; (void)revents;
  guard_fired = 1;
}

/* Run the loop until res has its result (10 s safety net). */
static void wait_result(result *res) {
  ev_timer guard;
  guard_fired = 0;
  ev_timer_init(&guard, on_guard, 10., 0.);
  ev_timer_start(loop, &guard);
  while (res->calls == 0 && !guard_fired) ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &guard);
  assert_false(guard_fired);
}

static evlua_dns *resolver_on(int port, double timeout) {
  char server[32], err[128];
  snprintf(server, sizeof server, "127.0.0.1:%d", port);
  const char *servers[] = { server };
  evlua_dns_options o = { servers, 1, timeout, 1 };
  evlua_dns *r = evlua_dns_create(loop, &o, err, sizeof err, NULL);
  assert_non_null(r);
  return r;
}

static void names_and_numeric_addresses(void **state) {
  (void)state;
  char out[EVLUA_DNS_ADDRLEN];
  assert_int_equal(evlua_dns_numeric("127.0.0.1", out), AF_INET);
  assert_string_equal(out, "127.0.0.1");
  assert_int_equal(evlua_dns_numeric("[0:0::1]", out), AF_INET6);
  assert_string_equal(out, "::1");
  assert_int_equal(evlua_dns_numeric("::ffff:1.2.3.4", out), AF_INET6);
  assert_int_equal(evlua_dns_numeric("example.com", out), 0);
  assert_int_equal(evlua_dns_numeric("[]", out), 0);

  assert_true(evlua_dns_valid_name("example.com"));
  assert_true(evlua_dns_valid_name("example.com."));
  assert_true(evlua_dns_valid_name("a_b-c.d"));
  assert_false(evlua_dns_valid_name(""));
  assert_false(evlua_dns_valid_name("."));
  assert_false(evlua_dns_valid_name("a..b"));
  assert_false(evlua_dns_valid_name(".a"));
  assert_false(evlua_dns_valid_name("a b"));
  assert_false(evlua_dns_valid_name("a/b"));
  char label[70];
  memset(label, 'a', 64);
  label[64] = '\0';
  assert_false(evlua_dns_valid_name(label));        /* label of 64 */
  label[63] = '\0';
  assert_true(evlua_dns_valid_name(label));
  char name[300];
  memset(name, 'a', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  for (size_t i = 50; i < sizeof name - 1; i += 50) name[i] = '.';
  assert_false(evlua_dns_valid_name(name));          /* over 253 */
}

static void bad_servers_fail_to_start(void **state) {
  (void)state;
  const char *bad[] = {
    "dns.example", "1.2.3.4:0", "1.2.3.4:", "1.2.3.4:70000", "1.2.3.4:5x",
    "[::1", "[::1]x", "[nonsense]:53", ""
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *servers[] = { "127.0.0.1", bad[i] };
    evlua_dns_options o = { servers, 2, 0, 0 };
    char err[128] = "";
    evlua_dns_failure failure = EVLUA_DNS_FAIL_RESOLVER;
    assert_null(evlua_dns_create(loop, &o, err, sizeof err, &failure));
    assert_non_null(strstr(err, bad[i]));     /* names the bad server */
    assert_int_equal(failure, EVLUA_DNS_FAIL_BAD_SERVER);
  }
}

static void servers_and_settings(void **state) {
  (void)state;
  const char *servers[] = { "127.0.0.1", "[::1]:5353", "::1", "10.0.0.1:54" };
  evlua_dns_options o = { servers, 4, 0.5, 3 };
  char err[128], buf[64];
  evlua_dns *r = evlua_dns_create(loop, &o, err, sizeof err, NULL);
  assert_non_null(r);
  evlua_dns_info info;
  evlua_dns_get_info(r, &info);
  assert_int_equal(info.nservers, 4);
  assert_true(info.timeout == 0.5);
  assert_int_equal(info.tries, 3);
  assert_int_equal(info.pending, 0);
  /* every server once per round, the per-try timeout doubling */
  assert_true(info.max_wait >= 0.5 * 4 * 7);
  assert_int_equal(evlua_dns_server(r, 0, buf, sizeof buf), 0);
  assert_string_equal(buf, "127.0.0.1:53");
  assert_int_equal(evlua_dns_server(r, 1, buf, sizeof buf), 0);
  assert_string_equal(buf, "[::1]:5353");
  assert_int_equal(evlua_dns_server(r, 2, buf, sizeof buf), 0);
  assert_string_equal(buf, "[::1]:53");
  assert_int_equal(evlua_dns_server(r, 3, buf, sizeof buf), 0);
  assert_string_equal(buf, "10.0.0.1:54");
  assert_int_equal(evlua_dns_server(r, 4, buf, sizeof buf), -1);
  assert_int_equal(evlua_dns_server(r, -1, buf, sizeof buf), -1);
  evlua_dns_destroy(r);
}

static void res_options_set_timeout_and_tries(void **state) {
  (void)state;
  char err[128];
  const char *servers[] = { "127.0.0.1" };
  evlua_dns_options o = { servers, 1, 0, 0 };
  evlua_dns_info info;
  setenv("RES_OPTIONS", "timeout:3 attempts:4", 1);
  evlua_dns *r = evlua_dns_create(loop, &o, err, sizeof err, NULL);
  assert_non_null(r);
  evlua_dns_get_info(r, &info);
  assert_true(info.timeout == 3);
  assert_int_equal(info.tries, 4);
  evlua_dns_destroy(r);
  setenv("RES_OPTIONS", "timeout:99 attempts:99", 1);   /* capped */
  r = evlua_dns_create(loop, &o, err, sizeof err, NULL);
  assert_non_null(r);
  evlua_dns_get_info(r, &info);
  assert_true(info.timeout == 30);
  assert_int_equal(info.tries, 5);
  evlua_dns_destroy(r);
  unsetenv("RES_OPTIONS");
}

static void answers_without_dns_come_through_the_loop(void **state) {
  (void)state;
  evlua_dns *r = resolver_on(silent_port, 5);
  int before = queries_seen;
  result num = { 0 }, six = { 0 }, mismatch = { 0 }, fam = { 0 },
         bad = { 0 }, local = { 0 }, local4 = { 0 };
  assert_non_null(evlua_dns_resolve(r, "10.0.0.7", AF_UNSPEC, on_result,
                                    &num));
  assert_non_null(evlua_dns_resolve(r, "[::1]", AF_INET6, on_result, &six));
  assert_non_null(evlua_dns_resolve(r, "10.0.0.7", AF_INET6, on_result,
                                    &mismatch));
  assert_non_null(evlua_dns_resolve(r, "example.com", AF_UNIX, on_result,
                                    &fam));
  assert_non_null(evlua_dns_resolve(r, "no such host!", AF_UNSPEC,
                                    on_result, &bad));
  assert_non_null(evlua_dns_resolve(r, "db.localhost.", AF_UNSPEC,
                                    on_result, &local));
  assert_non_null(evlua_dns_resolve(r, "LOCALHOST", AF_INET, on_result,
                                    &local4));
  assert_int_equal(num.calls, 0);              /* never inside resolve */
  evlua_dns_info info;
  evlua_dns_get_info(r, &info);
  assert_int_equal(info.pending, 7);
  wait_result(&local4);
  assert_int_equal(num.calls, 1);
  assert_string_equal(num.err, "");
  assert_int_equal(num.n, 1);
  assert_string_equal(num.addrs[0], "10.0.0.7");
  assert_string_equal(six.addrs[0], "::1");
  assert_string_equal(mismatch.err, "not found");
  assert_int_equal(mismatch.n, 0);
  assert_string_equal(fam.err, "bad family");
  assert_string_equal(bad.err, "bad name");
  assert_string_equal(local.err, "");
  assert_true(local.n >= 1);
  assert_string_equal(local4.err, "");
  assert_int_equal(local4.n, 1);
  assert_string_equal(local4.addrs[0], "127.0.0.1");
  evlua_dns_get_info(r, &info);
  assert_int_equal(info.pending, 0);
  assert_int_equal(queries_seen, before);      /* DNS was never asked */
  evlua_dns_destroy(r);
}

static void resolves_through_a_server(void **state) {
  (void)state;
  evlua_dns *r = resolver_on(answering_port, 2);
  result ok = { 0 }, missing = { 0 };
  assert_non_null(evlua_dns_resolve(r, "host.test", AF_INET, on_result,
                                    &ok));
  wait_result(&ok);
  assert_string_equal(ok.err, "");
  assert_int_equal(ok.n, 1);
  assert_string_equal(ok.addrs[0], "10.1.2.3");
  assert_non_null(evlua_dns_resolve(r, "missing.test", AF_INET, on_result,
                                    &missing));
  wait_result(&missing);
  assert_string_equal(missing.err, "not found");
  assert_int_equal(missing.n, 0);
  evlua_dns_destroy(r);
}

static void silent_server_times_out(void **state) {
  (void)state;
  evlua_dns *r = resolver_on(silent_port, 0.05);
  result res = { 0 };
  int before = queries_seen;
  assert_non_null(evlua_dns_resolve(r, "host.test", AF_INET, on_result,
                                    &res));
  wait_result(&res);
  assert_string_equal(res.err, "timeout");
  assert_true(queries_seen > before);
  evlua_dns_destroy(r);
}

static void destroy_cancels_pending_requests(void **state) {
  (void)state;
  evlua_dns *r = resolver_on(silent_port, 5);
  result asked = { 0 }, queued = { 0 };
  int before = queries_seen;
  assert_non_null(evlua_dns_resolve(r, "host.test", AF_INET, on_result,
                                    &asked));
  assert_non_null(evlua_dns_resolve(r, "10.0.0.1", AF_INET, on_result,
                                    &queued));
  /* let the query reach the server, not the answer (there is none) */
  ev_timer guard;
  guard_fired = 0;
  ev_timer_init(&guard, on_guard, 10., 0.);
  ev_timer_start(loop, &guard);
  while (queries_seen == before && !guard_fired) ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &guard);
  assert_false(guard_fired);
  assert_int_equal(asked.calls, 0);
  evlua_dns_destroy(r);           /* callbacks run inside, cancelled */
  assert_int_equal(asked.calls, 1);
  assert_string_equal(asked.err, "cancelled");
  assert_int_equal(queued.calls, 1);
  /* nothing of r is left on the loop: it would otherwise run again */
  ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(asked.calls, 1);
}

static evlua_dns *doomed;
static result first, second;
static void destroy_from_callback(void *arg, const char *err,
                                  const char *const *addrs, size_t n) {
  on_result(arg, err, addrs, n);
  evlua_dns_destroy(doomed);
}

static void destroy_inside_a_callback_is_deferred(void **state) {
  (void)state;
  doomed = resolver_on(silent_port, 5);
  memset(&first, 0, sizeof first);
  memset(&second, 0, sizeof second);
  assert_non_null(evlua_dns_resolve(doomed, "10.0.0.1", AF_INET,
                                    destroy_from_callback, &first));
  assert_non_null(evlua_dns_resolve(doomed, "10.0.0.2", AF_INET, on_result,
                                    &second));
  wait_result(&first);
  assert_int_equal(first.calls, 1);
  assert_string_equal(first.addrs[0], "10.0.0.1");
  /* the other request still gets exactly one callback */
  assert_int_equal(second.calls, 1);
  ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(first.calls, 1);
  assert_int_equal(second.calls, 1);
}

static void cancelled_request_never_calls_back(void **state) {
  (void)state;
  evlua_dns *r = resolver_on(answering_port, 2);
  result gone = { 0 }, kept = { 0 }, asked = { 0 };
  evlua_dns_req *q = evlua_dns_resolve(r, "10.0.0.1", AF_INET, on_result,
                                       &gone);
  assert_non_null(q);
  evlua_dns_cancel(q);
  evlua_dns_req *q2 = evlua_dns_resolve(r, "host.test", AF_INET, on_result,
                                        &asked);
  evlua_dns_cancel(q2);
  assert_non_null(evlua_dns_resolve(r, "10.0.0.2", AF_INET, on_result,
                                    &kept));
  wait_result(&kept);
  evlua_dns_info info;
  ev_timer guard;
  guard_fired = 0;
  ev_timer_init(&guard, on_guard, 10., 0.);
  ev_timer_start(loop, &guard);
  do {
    evlua_dns_get_info(r, &info);
    if (info.pending > 0) ev_run(loop, EVRUN_ONCE);
  } while (info.pending > 0 && !guard_fired);
  ev_timer_stop(loop, &guard);
  assert_int_equal(info.pending, 0);
  assert_int_equal(gone.calls, 0);
  assert_int_equal(asked.calls, 0);
  evlua_dns_destroy(r);
}

/* Server errors end the request with an error and no address (which
** message is c-ares' choice: with one server, it may report SERVFAIL as
** a refusal). */
static void server_errors_end_the_request(void **state) {
  (void)state;
  evlua_dns *r = resolver_on(answering_port, 2);
  static const char *const names[] = {
    "servfail.test", "refused.test", "formerr.test"
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    result res = { 0 };
    assert_non_null(evlua_dns_resolve(r, names[i], AF_INET, on_result,
                                      &res));
    wait_result(&res);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.n, 0);
    assert_true(res.err[0] != '\0');
    assert_string_not_equal(res.err, "timeout");
  }
  evlua_dns_destroy(r);
}

static void duplicates_are_dropped_and_ipv4_comes_first(void **state) {
  (void)state;
  evlua_dns *r = resolver_on(answering_port, 2);
  result twice = { 0 }, any = { 0 }, six = { 0 };
  assert_non_null(evlua_dns_resolve(r, "twice.test", AF_INET, on_result,
                                    &twice));
  wait_result(&twice);
  assert_string_equal(twice.err, "");
  assert_int_equal(twice.n, 1);
  assert_string_equal(twice.addrs[0], "10.1.2.3");
  /* both families asked: the AAAA query has no data */
  assert_non_null(evlua_dns_resolve(r, "host.test.", AF_UNSPEC, on_result,
                                    &any));
  wait_result(&any);
  assert_string_equal(any.err, "");
  assert_int_equal(any.n, 1);
  assert_string_equal(any.addrs[0], "10.1.2.3");
  assert_non_null(evlua_dns_resolve(r, "host.test", AF_INET6, on_result,
                                    &six));
  wait_result(&six);
  assert_int_equal(six.n, 0);
  assert_string_equal(six.err, "not found");
  evlua_dns_destroy(r);
}

int main(void) {
  loop = ev_default_loop(0);
  answering_fd = udp_server(&answering_port, &answering_w);
  silent_fd = udp_server(&silent_port, &silent_w);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(names_and_numeric_addresses),
    cmocka_unit_test(bad_servers_fail_to_start),
    cmocka_unit_test(servers_and_settings),
    cmocka_unit_test(res_options_set_timeout_and_tries),
    cmocka_unit_test(answers_without_dns_come_through_the_loop),
    cmocka_unit_test(resolves_through_a_server),
    cmocka_unit_test(silent_server_times_out),
    cmocka_unit_test(destroy_cancels_pending_requests),
    cmocka_unit_test(destroy_inside_a_callback_is_deferred),
    cmocka_unit_test(cancelled_request_never_calls_back),
    cmocka_unit_test(server_errors_end_the_request),
    cmocka_unit_test(duplicates_are_dropped_and_ipv4_comes_first),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  close(answering_fd);
  close(silent_fd);
  return failed;
}
