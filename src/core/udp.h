/*
** udp.h - a non-blocking UDP socket driven by libev. Pure C: datagrams go
** to a handler, the Lua binding (ludp.c) and the KCP sessions are two.
**
** Receiving: on each readable event, recvmmsg(2) takes up to
** EVLUA_UDP_BATCH datagrams per call, into one area the loop shares
** (evlua_loop_state), and hands each to on_datagram; a datagram longer
** than max_datagram arrives cut to that length, flagged truncated.
** A busy socket gets at most EVLUA_UDP_BATCHES_PER_EVENT calls per event,
** so one flood cannot starve the rest of the loop.
** Sending: evlua_udp_send queues the datagram (copied) and the queues of
** every socket are written once per loop iteration, before the loop polls
** (evlua_udp_flush_pending), with sendmmsg(2): the datagrams of one
** iteration share a system call. A full queue (max_queue datagrams,
** waiting for a full socket buffer to drain) refuses more with EAGAIN.
*/
#ifndef EVLUA_UDP_H
#define EVLUA_UDP_H

#include <ev.h>
#include <stdint.h>

#include "net.h"

#define EVLUA_UDP_BATCH 32
#define EVLUA_UDP_BATCHES_PER_EVENT 8
/* The largest payload of an IPv4 datagram: 65535 minus the IP and UDP
** headers. */
#define EVLUA_UDP_MAX_DATAGRAM 65507
#define EVLUA_UDP_SEND_QUEUE 1024      /* default max_queue */

typedef struct evlua_udp evlua_udp;

typedef struct evlua_udp_handler {
  /* One datagram: from is the sender. data is valid during the call
  ** only. The handler may close the socket; no further datagram of the
  ** batch is delivered then. */
  void (*on_datagram)(evlua_udp *u, const char *data, size_t len,
                      const evlua_addr *from, int truncated);
} evlua_udp_handler;

typedef struct evlua_udp_stats {
  uint64_t sent, received;
  uint64_t truncated;       /* received longer than max_datagram */
  uint64_t send_errors;     /* refused by the kernel (not EAGAIN) */
} evlua_udp_stats;

/* One queued datagram: its bytes follow the header. */
typedef struct evlua_udp_out {
  struct evlua_udp_out *next;
  evlua_addr to;            /* len 0 on a connected socket */
  size_t len;
  char data[];
} evlua_udp_out;

struct evlua_udp {
  struct ev_loop *loop;
  int fd;
  int connected;
  int pending;              /* in the loop's list of sockets to flush */
  int last_error;           /* errno of the last refused datagram */
  ev_io rw, ww;
  size_t max_datagram;
  size_t max_queue, queued;
  evlua_udp_out *head, *tail;
  evlua_udp *next_pending;
  evlua_udp_stats stats;
  const evlua_udp_handler *handler;
  void *data;               /* the handler's */
};

/* Open a socket bound to local (port 0: a free one) and start receiving.
** Returns 0, or -1 with a message in err and errno set. */
int evlua_udp_open(evlua_udp *u, struct ev_loop *loop,
                   const evlua_addr *local,
                   const evlua_udp_handler *h, void *data,
                   char *err, size_t errlen);

/* Connect an open socket to peer: only its datagrams arrive, and
** evlua_udp_send takes no address. Returns 0 or -1 (errno set). */
int evlua_udp_connect(evlua_udp *u, const evlua_addr *peer);

/* Queue one datagram to `to` (NULL on a connected socket). Returns 0,
** or -1 with errno: EAGAIN (the queue is full), EMSGSIZE (over
** EVLUA_UDP_MAX_DATAGRAM), EDESTADDRREQ (no address, not connected),
** EBADF (closed), ENOMEM. */
int evlua_udp_send(evlua_udp *u, const void *data, size_t len,
                   const evlua_addr *to);

/* Write every socket's queue now: the loop's owner calls this once per
** iteration, before it polls. */
void evlua_udp_flush_pending(struct ev_loop *loop);

/* Stop, drop the queue and close the fd. Idempotent. */
void evlua_udp_close(evlua_udp *u);

#endif
