/*
** bench_net.h - the socket helpers the C peers of the benchmarks share
** (echo.c, rpc.c): 127.0.0.1 addresses, a connected non-blocking client
** socket, and dying with errno's message.
*/
#ifndef EVLUA_BENCH_NET_H
#define EVLUA_BENCH_NET_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static inline void die(const char *what) {
  perror(what);
  exit(1);
}

static inline void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static inline void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

static inline struct sockaddr_in loopback(int port) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

/* A connected, non-blocking TCP socket to 127.0.0.1:port (blocking
** connect first: the benchmarks time what happens after it). */
static inline int connect_to(int port) {
  struct sockaddr_in sa = loopback(port);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("connect");
  set_nodelay(fd);
  set_nonblock(fd);
  return fd;
}

#endif
