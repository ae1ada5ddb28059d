/*
** test_net.c - unit tests for src/core/net.c: address parsing and formatting,
** listening and connecting on 127.0.0.1 and on unix sockets, errors.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "net.h"

static void parses_and_formats_addresses(void **state) {
  (void)state;
  evlua_addr a;
  char buf[128];
  assert_int_equal(evlua_addr_parse(&a, "127.0.0.1", 8080), 0);
  assert_int_equal(a.ss.ss_family, AF_INET);
  assert_int_equal(evlua_addr_format(&a, buf, sizeof buf), 8080);
  assert_string_equal(buf, "127.0.0.1");

  assert_int_equal(evlua_addr_parse(&a, "*", 1), 0);
  assert_int_equal(evlua_addr_format(&a, buf, sizeof buf), 1);
  assert_string_equal(buf, "0.0.0.0");

  assert_int_equal(evlua_addr_parse(&a, "::1", 443), 0);
  assert_int_equal(a.ss.ss_family, AF_INET6);
  assert_int_equal(evlua_addr_format(&a, buf, sizeof buf), 443);
  assert_string_equal(buf, "::1");

  assert_int_equal(evlua_addr_parse(&a, "[::1]", 80), 0);   /* URL style */
  assert_int_equal(evlua_addr_format(&a, buf, sizeof buf), 80);
  assert_string_equal(buf, "::1");

  assert_int_equal(evlua_addr_parse(&a, "unix:/tmp/x.sock", 99), 0);
  assert_int_equal(a.ss.ss_family, AF_UNIX);
  assert_int_equal(evlua_addr_format(&a, buf, sizeof buf), 0);
  assert_string_equal(buf, "unix:/tmp/x.sock");

  /* unknown family: empty text, port 0 */
  memset(&a, 0, sizeof a);
  buf[0] = 'x';
  assert_int_equal(evlua_addr_format(&a, buf, sizeof buf), 0);
  assert_string_equal(buf, "");
}

static void rejects_names_and_bad_paths(void **state) {
  (void)state;
  evlua_addr a;
  assert_int_equal(evlua_addr_parse(&a, "localhost", 80), -1);
  assert_int_equal(evlua_addr_parse(&a, "example.com", 80), -1);
  assert_int_equal(evlua_addr_parse(&a, "", 80), -1);
  assert_int_equal(evlua_addr_parse(&a, "[]", 80), -1);
  assert_int_equal(evlua_addr_parse(&a, "[127.0.0.1]", 80), -1);
  assert_int_equal(evlua_addr_parse(&a, "unix:", 0), -1);
  char longpath[200];
  memset(longpath, 'a', sizeof longpath - 1);
  longpath[sizeof longpath - 1] = '\0';
  memcpy(longpath, "unix:/", 6);
  assert_int_equal(evlua_addr_parse(&a, longpath, 0), -1);
}

/* Brackets are only taken around a whole IPv6 address that fits. */
static void rejects_bad_brackets(void **state) {
  (void)state;
  evlua_addr a;
  assert_int_equal(evlua_addr_parse(&a, "[::1", 80), -1);
  assert_int_equal(evlua_addr_parse(&a, "::1]", 80), -1);
  char wide[80];
  memset(wide, '0', sizeof wide);
  wide[0] = '[';
  wide[sizeof wide - 2] = ']';
  wide[sizeof wide - 1] = '\0';
  assert_int_equal(evlua_addr_parse(&a, wide, 80), -1);
}

/* A zero-size buffer is left alone (the port still comes back); an
** unnamed unix socket (a socketpair's) formats as "unix:". */
static void formats_into_no_buffer_and_unnamed_sockets(void **state) {
  (void)state;
  evlua_addr a;
  char buf[16] = "untouched";
  assert_int_equal(evlua_addr_parse(&a, "10.0.0.1", 7), 0);
  assert_int_equal(evlua_addr_format(&a, buf, 0), 7);
  assert_string_equal(buf, "untouched");
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  assert_int_equal(evlua_net_sockname(sv[0], &a), 0);
  assert_int_equal(evlua_addr_format(&a, buf, sizeof buf), 0);
  assert_string_equal(buf, "unix:");
  close(sv[0]);
  close(sv[1]);
}

static int is_nonblocking_cloexec(int fd) {
  return (fcntl(fd, F_GETFL) & O_NONBLOCK) && (fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

/* Wait for a pending connect to finish; returns its SO_ERROR. */
static int finish_connect(int fd) {
  struct pollfd p = { .fd = fd, .events = POLLOUT };
  assert_int_equal(poll(&p, 1, 10000), 1);
  int err = 0;
  socklen_t len = sizeof err;
  assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
  return err;
}

/* Accept one connection on lfd (waiting for it) and exchange a byte. */
static void exchange_byte(int lfd, int cfd) {
  struct pollfd p = { .fd = lfd, .events = POLLIN };
  assert_int_equal(poll(&p, 1, 10000), 1);
  int sfd = accept(lfd, NULL, NULL);
  assert_true(sfd >= 0);
  assert_int_equal(write(cfd, "x", 1), 1);
  char c = 0;
  p.fd = sfd;
  assert_int_equal(poll(&p, 1, 10000), 1);
  assert_int_equal(read(sfd, &c, 1), 1);
  assert_int_equal(c, 'x');
  close(sfd);
}

static void listens_and_connects_on_loopback(void **state) {
  (void)state;
  evlua_addr a, bound, peer;
  char err[128], buf[64];
  assert_int_equal(evlua_addr_parse(&a, "127.0.0.1", 0), 0);
  int lfd = evlua_net_listen(&a, 16, 1, err, sizeof err);
  assert_true(lfd >= 0);
  assert_true(is_nonblocking_cloexec(lfd));
  assert_int_equal(evlua_net_sockname(lfd, &bound), 0);
  int port = evlua_addr_format(&bound, buf, sizeof buf);
  assert_true(port > 0);
  assert_string_equal(buf, "127.0.0.1");

  int pending = -1;
  int cfd = evlua_net_connect(&bound, &pending, err, sizeof err);
  assert_true(cfd >= 0);
  assert_true(pending == 0 || pending == 1);
  assert_true(is_nonblocking_cloexec(cfd));
  if (pending) assert_int_equal(finish_connect(cfd), 0);
  assert_int_equal(evlua_net_peername(cfd, &peer), 0);
  assert_int_equal(evlua_addr_format(&peer, buf, sizeof buf), port);
  exchange_byte(lfd, cfd);
  close(cfd);

  /* A second listener on the same port without SO_REUSEPORT fails. */
  int again = evlua_net_listen(&bound, 16, 0, err, sizeof err);
  assert_int_equal(again, -1);
  assert_int_equal(errno, EADDRINUSE);
  assert_non_null(strstr(err, "bind"));
  close(lfd);

  /* Nobody listens there now: the connection is refused, at once or
  ** once it completes. */
  cfd = evlua_net_connect(&bound, &pending, err, sizeof err);
  if (cfd >= 0) {
    assert_int_equal(pending, 1);
    assert_int_equal(finish_connect(cfd), ECONNREFUSED);
    close(cfd);
  } else {
    assert_int_equal(errno, ECONNREFUSED);
    assert_string_equal(err, evlua_net_strerror(ECONNREFUSED));
  }
}

static void listens_on_ipv6_when_available(void **state) {
  (void)state;
  evlua_addr a;
  char err[128];
  assert_int_equal(evlua_addr_parse(&a, "::1", 0), 0);
  int lfd = evlua_net_listen(&a, 4, 0, err, sizeof err);
  if (lfd < 0) skip();   /* no IPv6 loopback here */
  int one = 0;
  socklen_t len = sizeof one;
  assert_int_equal(getsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, &len), 0);
  assert_int_equal(one, 1);
  close(lfd);
}

static void listens_and_connects_on_unix_socket(void **state) {
  (void)state;
  char dir[] = "/tmp/evlua-test-net-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char host[128], buf[128], err[128];
  snprintf(host, sizeof host, "unix:%s/s.sock", dir);
  evlua_addr a, bound;
  assert_int_equal(evlua_addr_parse(&a, host, 0), 0);

  int lfd = evlua_net_listen(&a, 4, 0, err, sizeof err);
  assert_true(lfd >= 0);
  assert_int_equal(evlua_net_sockname(lfd, &bound), 0);
  assert_int_equal(evlua_addr_format(&bound, buf, sizeof buf), 0);
  assert_string_equal(buf, host);

  int pending = -1;
  int cfd = evlua_net_connect(&a, &pending, err, sizeof err);
  assert_true(cfd >= 0);
  if (pending) assert_int_equal(finish_connect(cfd), 0);
  exchange_byte(lfd, cfd);
  close(cfd);

  /* Someone listens: the file is not stale, a second listener fails
  ** (its probe connects, and is left in the backlog: checked last). */
  assert_int_equal(evlua_net_listen(&a, 4, 0, err, sizeof err), -1);
  assert_int_equal(errno, EADDRINUSE);
  close(lfd);

  /* The socket file is left behind by a listener that is gone: a new
  ** listener replaces it. */
  struct stat st;
  char path[128];
  snprintf(path, sizeof path, "%s/s.sock", dir);
  assert_int_equal(stat(path, &st), 0);
  lfd = evlua_net_listen(&a, 4, 0, err, sizeof err);
  assert_true(lfd >= 0);
  close(lfd);

  /* A plain file in the way is not replaced. */
  unlink(path);
  int f = open(path, O_CREAT | O_WRONLY, 0600);
  assert_true(f >= 0);
  close(f);
  assert_int_equal(evlua_net_listen(&a, 4, 0, err, sizeof err), -1);
  assert_int_equal(errno, EADDRINUSE);
  unlink(path);

  /* Connecting to a missing socket file fails at once. */
  assert_int_equal(evlua_net_connect(&a, &pending, err, sizeof err), -1);
  assert_int_equal(errno, ENOENT);
  assert_string_equal(err, evlua_net_strerror(ENOENT));
  rmdir(dir);
}

static void nonblock_fails_on_a_closed_fd(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  assert_int_equal(evlua_net_nonblock(fds[0]), 0);
  assert_true(is_nonblocking_cloexec(fds[0]));
  close(fds[0]);
  close(fds[1]);
  assert_int_equal(evlua_net_nonblock(fds[0]), -1);
}

static void strerror_is_short_and_lowercase(void **state) {
  (void)state;
  assert_string_equal(evlua_net_strerror(ECONNRESET), "reset");
  assert_string_equal(evlua_net_strerror(EPIPE), "reset");
  assert_string_equal(evlua_net_strerror(ECONNREFUSED),
                      "connection refused");
  assert_string_equal(evlua_net_strerror(EMFILE),
                      evlua_net_strerror(ENFILE));
  int codes[] = { ETIMEDOUT, EADDRINUSE, EADDRNOTAVAIL, ENETUNREACH,
                  EHOSTUNREACH, EACCES, ENOENT, EINVAL, ENOTSOCK };
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    const char *m = evlua_net_strerror(codes[i]);
    assert_true(m[0] >= 'a' && m[0] <= 'z');
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(parses_and_formats_addresses),
    cmocka_unit_test(rejects_names_and_bad_paths),
    cmocka_unit_test(rejects_bad_brackets),
    cmocka_unit_test(formats_into_no_buffer_and_unnamed_sockets),
    cmocka_unit_test(listens_and_connects_on_loopback),
    cmocka_unit_test(listens_on_ipv6_when_available),
    cmocka_unit_test(listens_and_connects_on_unix_socket),
    cmocka_unit_test(nonblock_fails_on_a_closed_fd),
    cmocka_unit_test(strerror_is_short_and_lowercase),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
