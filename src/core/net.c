/*
** net.c - socket addresses and sockets (pure C, no Lua).
*/
#include "net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int evlua_addr_parse(evlua_addr *addr, const char *host, int port) {
  memset(addr, 0, sizeof *addr);
  if (strncmp(host, "unix:", 5) == 0) {
    struct sockaddr_un *un = (struct sockaddr_un *)&addr->ss;
    size_t n = strlen(host + 5);
    if (n == 0 || n >= sizeof un->sun_path) return -1;
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, host + 5, n + 1);
    addr->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
  }
  if (strcmp(host, "*") == 0) host = "0.0.0.0";
  struct sockaddr_in *in4 = (struct sockaddr_in *)&addr->ss;
  if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons((unsigned short)port);
    addr->len = sizeof *in4;
    return 0;
  }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr->ss;
  const char *h = host;
  char bare[INET6_ADDRSTRLEN];
  size_t n = strlen(host);
  if (n > 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof bare) {
    memcpy(bare, host + 1, n - 2);   /* "[::1]" as in URLs */
    bare[n - 2] = '\0';
    h = bare;
  }
  if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((unsigned short)port);
    addr->len = sizeof *in6;
    return 0;
  }
  return -1;
}

int evlua_addr_format(const evlua_addr *addr, char *buf, size_t size) {
  const struct sockaddr *sa = (const struct sockaddr *)&addr->ss;
  if (size) buf[0] = '\0';
  switch (sa->sa_family) {
  case AF_INET: {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in4->sin_addr, buf, (socklen_t)size);
    return ntohs(in4->sin_port);
  }
  case AF_INET6: {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, (socklen_t)size);
    return ntohs(in6->sin6_port);
  }
  case AF_UNIX: {
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    size_t n = addr->len > offsetof(struct sockaddr_un, sun_path)
             ? strnlen(un->sun_path, addr->len - offsetof(struct sockaddr_un, sun_path))
             : 0;
    snprintf(buf, size, "unix:%.*s", (int)n, un->sun_path);
    return 0;
  }
  }
  return 0;
}

int evlua_net_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  int fdfl = fcntl(fd, F_GETFD);
  if (fdfl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) return -1;
  return 0;
}

const char *evlua_net_strerror(int e) {
  switch (e) {
  case ECONNREFUSED: return "connection refused";
  case ECONNRESET: return "reset";
  case EPIPE: return "reset";
  case ETIMEDOUT: return "timeout";
  case EADDRINUSE: return "address already in use";
  case EADDRNOTAVAIL: return "address not available";
  case ENETUNREACH: return "network unreachable";
  case EHOSTUNREACH: return "host unreachable";
  case EACCES: return "permission denied";
  case ENOENT: return "no such file";
  case EMFILE: case ENFILE: return "too many open files";
  default: break;
  }
  /* strerror's capitalised text, lowered to match the short style */
  static char buf[128];
  snprintf(buf, sizeof buf, "%s", strerror(e));
  buf[0] = (char)tolower((unsigned char)buf[0]);
  return buf;
}

static int fail(char *err, size_t errlen, const char *what, int fd) {
  int e = errno;
  snprintf(err, errlen, "%s: %s", what, evlua_net_strerror(e));
  if (fd >= 0) close(fd);
  errno = e;
  return -1;
}

/* A unix socket file left behind by a dead process: nobody accepts on it. */
static int stale_unix_socket(const evlua_addr *addr) {
  const struct sockaddr_un *un = (const struct sockaddr_un *)&addr->ss;
  struct stat st;
  if (stat(un->sun_path, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  int refused = connect(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0
                && errno == ECONNREFUSED;
  close(fd);
  return refused;
}

int evlua_net_listen(const evlua_addr *addr, int backlog, int reuseport,
                     char *err, size_t errlen) {
  int family = addr->ss.ss_family;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(err, errlen, "socket", -1);
  int one = 1;
  if (family == AF_UNIX) {
    if (stale_unix_socket(addr))
      unlink(((const struct sockaddr_un *)&addr->ss)->sun_path);
  } else {
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
      return fail(err, errlen, "setsockopt", fd);
    if (reuseport &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
      return fail(err, errlen, "setsockopt", fd);
    if (family == AF_INET6)   /* "::" means IPv6 only; listen on both if needed */
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0)
    return fail(err, errlen, "bind", fd);
  if (listen(fd, backlog) != 0)
    return fail(err, errlen, "listen", fd);
  return fd;
}

int evlua_net_connect(const evlua_addr *addr, int *pending,
                      char *err, size_t errlen) {
  int family = addr->ss.ss_family;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(err, errlen, "socket", -1);
  if (family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  *pending = 0;
  int r;
  do r = connect(fd, (const struct sockaddr *)&addr->ss, addr->len);
  while (r != 0 && errno == EINTR);
  if (r != 0) {
    if (errno != EINPROGRESS) {
      int e = errno;
      snprintf(err, errlen, "%s", evlua_net_strerror(e));
      close(fd);
      errno = e;
      return -1;
    }
    *pending = 1;
  }
  return fd;
}

int evlua_net_sockname(int fd, evlua_addr *addr) {
  addr->len = sizeof addr->ss;
  return getsockname(fd, (struct sockaddr *)&addr->ss, &addr->len);
}

int evlua_net_peername(int fd, evlua_addr *addr) {
  addr->len = sizeof addr->ss;
  return getpeername(fd, (struct sockaddr *)&addr->ss, &addr->len);
}
