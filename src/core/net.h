/*
** net.h - socket addresses and sockets for streams and listeners
** (pure C, no Lua). Every socket is non-blocking and close-on-exec.
*/
#ifndef EVLUA_NET_H
#define EVLUA_NET_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct evlua_addr {
  struct sockaddr_storage ss;
  socklen_t len;
} evlua_addr;

/* Fill addr from a numeric IPv4/IPv6 address ("*" means 0.0.0.0) and a
** port, or from "unix:/path" (port ignored). Returns 0, or -1 when host is
** not numeric (a name to resolve) or the unix path is too long. */
int evlua_addr_parse(evlua_addr *addr, const char *host, int port);

/* Write the address as text ("127.0.0.1", "::1", "unix:/path") into buf
** and return its port (0 for unix sockets). */
int evlua_addr_format(const evlua_addr *addr, char *buf, size_t size);

/* A listening socket on addr with SO_REUSEADDR (and SO_REUSEPORT when
** asked); for unix sockets, a stale socket file nobody listens on is
** replaced. Returns the fd, or -1 with a message in err and errno set. */
int evlua_net_listen(const evlua_addr *addr, int backlog, int reuseport,
                     char *err, size_t errlen);

/* Start a non-blocking connect; TCP sockets get TCP_NODELAY. Returns the
** fd (*pending is set while the connection is still in progress), or -1
** with a message in err and errno set. */
int evlua_net_connect(const evlua_addr *addr, int *pending,
                      char *err, size_t errlen);

/* The local or peer address of a socket; returns 0 or -1. */
int evlua_net_sockname(int fd, evlua_addr *addr);
int evlua_net_peername(int fd, evlua_addr *addr);

/* Make fd non-blocking and close-on-exec; returns 0 or -1. */
int evlua_net_nonblock(int fd);

/* A short lowercase message for errno e ("connection refused"...). */
const char *evlua_net_strerror(int e);

#endif
