/*
** udp.c - a non-blocking UDP socket driven by libev: batched receive
** (recvmmsg) into the loop's shared area, queued sends written once per
** iteration (sendmmsg). See udp.h for the rules.
*/
#include "udp.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop.h"
#include "util.h"

/* Each slot of the receive area holds one datagram of any size a socket
** may ask for; the area is allocated on the first socket and its pages
** are only touched as far as datagrams fill them. */
#define SLOT_SIZE 65536

static char *receive_area(struct ev_loop *loop) {
  evlua_loop_state *st = evlua_loop_state_of(loop);
  if (!st->udp_area)
    st->udp_area = malloc((size_t)EVLUA_UDP_BATCH * SLOT_SIZE);
  return st->udp_area;
}

/* Receiving =========================================================== */

/* One recvmmsg; returns how many datagrams it delivered, or -1 when the
** socket has nothing more (or was closed by the handler). */
static int receive_batch(evlua_udp *u, char *area) {
  struct mmsghdr msgs[EVLUA_UDP_BATCH];
  struct iovec iov[EVLUA_UDP_BATCH];
  evlua_addr from[EVLUA_UDP_BATCH];
  for (int i = 0; i < EVLUA_UDP_BATCH; i++) {
    iov[i].iov_base = area + (size_t)i * SLOT_SIZE;
    iov[i].iov_len = u->max_datagram;
    memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
    msgs[i].msg_hdr.msg_name = &from[i].ss;
    msgs[i].msg_hdr.msg_namelen = sizeof from[i].ss;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int n;
  do n = recvmmsg(u->fd, msgs, EVLUA_UDP_BATCH, MSG_DONTWAIT, NULL);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return -1;   /* EAGAIN, or an ICMP error of a sent datagram */
  for (int i = 0; i < n && u->fd >= 0; i++) {
    int truncated = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
    size_t len = msgs[i].msg_len;
    if (len > u->max_datagram) len = u->max_datagram;
    from[i].len = msgs[i].msg_hdr.msg_namelen;
    u->stats.received++;
    if (truncated) u->stats.truncated++;
    u->handler->on_datagram(u, iov[i].iov_base, len, &from[i], truncated);
  }
  return u->fd >= 0 ? n : -1;
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  evlua_udp *u = container_of(w, evlua_udp, rw);
  char *area = receive_area(loop);
  if (!area) return;   /* out of memory: the datagrams wait in the kernel */
  for (int i = 0; i < EVLUA_UDP_BATCHES_PER_EVENT; i++)
    if (receive_batch(u, area) < EVLUA_UDP_BATCH) break;
}

/* Sending ============================================================= */

static void mark_pending(evlua_udp *u) {
  if (u->pending || ev_is_active(&u->ww)) return;
  evlua_loop_state *st = evlua_loop_state_of(u->loop);
  u->pending = 1;
  u->next_pending = st->udp_pending;
  st->udp_pending = u;
}

static void drop_head(evlua_udp *u) {
  evlua_udp_out *o = u->head;
  u->head = o->next;
  if (!u->head) u->tail = NULL;
  u->queued--;
  free(o);
}

/* Write the queue with sendmmsg until it is empty or the socket is full
** (then wait until it is writable). A datagram the kernel refuses is
** dropped and counted: UDP promises no delivery, and one bad address
** must not hold up the rest. */
static void flush_queue(evlua_udp *u) {
  while (u->head && u->fd >= 0) {
    struct mmsghdr msgs[EVLUA_UDP_BATCH];
    struct iovec iov[EVLUA_UDP_BATCH];
    int n = 0;
    evlua_udp_out *o = u->head;
    for (; o && n < EVLUA_UDP_BATCH; o = o->next, n++) {
      iov[n].iov_base = o->data;
      iov[n].iov_len = o->len;
      memset(&msgs[n].msg_hdr, 0, sizeof msgs[n].msg_hdr);
      if (o->to.len) {
        msgs[n].msg_hdr.msg_name = &o->to.ss;
        msgs[n].msg_hdr.msg_namelen = o->to.len;
      }
      msgs[n].msg_hdr.msg_iov = &iov[n];
      msgs[n].msg_hdr.msg_iovlen = 1;
    }
    int sent;
    do sent = sendmmsg(u->fd, msgs, (unsigned)n, MSG_DONTWAIT);
    while (sent < 0 && errno == EINTR);
    if (sent < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
      ev_io_start(u->loop, &u->ww);
      return;
    }
    if (sent < 0) {           /* the first datagram was refused */
      u->last_error = errno;
      u->stats.send_errors++;
      drop_head(u);
      continue;
    }
    u->stats.sent += (uint64_t)sent;
    for (int i = 0; i < sent; i++) drop_head(u);
  }
  ev_io_stop(u->loop, &u->ww);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  (void)revents;
  flush_queue(container_of(w, evlua_udp, ww));
}

void evlua_udp_flush_pending(struct ev_loop *loop) {
  evlua_loop_state *st = evlua_loop_state_of(loop);
  while (st->udp_pending) {
    evlua_udp *u = st->udp_pending;
    st->udp_pending = u->next_pending;
    u->next_pending = NULL;
    u->pending = 0;
    flush_queue(u);
  }
}

int evlua_udp_send(evlua_udp *u, const void *data, size_t len,
                   const evlua_addr *to) {
  if (u->fd < 0) return errno = EBADF, -1;
  if (len > EVLUA_UDP_MAX_DATAGRAM) return errno = EMSGSIZE, -1;
  if (!to && !u->connected) return errno = EDESTADDRREQ, -1;
  if (u->queued >= u->max_queue) return errno = EAGAIN, -1;
  evlua_udp_out *o = malloc(sizeof *o + len);
  if (!o) return errno = ENOMEM, -1;
  o->next = NULL;
  o->len = len;
  if (to) o->to = *to;
  else o->to.len = 0;
  memcpy(o->data, data, len);
  if (u->tail) u->tail->next = o;
  else u->head = o;
  u->tail = o;
  u->queued++;
  mark_pending(u);
  return 0;
}

/* Opening and closing ================================================= */

int evlua_udp_open(evlua_udp *u, struct ev_loop *loop,
                   const evlua_addr *local,
                   const evlua_udp_handler *h, void *data,
                   char *err, size_t errlen) {
  memset(u, 0, sizeof *u);
  u->fd = -1;
  int fd = socket(local->ss.ss_family,
                  SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "socket: %s", evlua_net_strerror(errno));
    return -1;
  }
  if (local->ss.ss_family == AF_INET6) {   /* "::" takes IPv6 only, as TCP */
    int one = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (bind(fd, (const struct sockaddr *)&local->ss, local->len) < 0) {
    int e = errno;
    snprintf(err, errlen, "bind: %s", evlua_net_strerror(e));
    close(fd);
    errno = e;
    return -1;
  }
  u->loop = loop;
  u->fd = fd;
  u->max_datagram = EVLUA_UDP_MAX_DATAGRAM;
  u->max_queue = EVLUA_UDP_SEND_QUEUE;
  u->handler = h;
  u->data = data;
  ev_io_init(&u->rw, on_readable, fd, EV_READ);
  ev_io_init(&u->ww, on_writable, fd, EV_WRITE);
  ev_io_start(loop, &u->rw);
  return 0;
}

int evlua_udp_connect(evlua_udp *u, const evlua_addr *peer) {
  if (u->fd < 0) return errno = EBADF, -1;
  if (connect(u->fd, (const struct sockaddr *)&peer->ss, peer->len) < 0)
    return -1;
  u->connected = 1;
  return 0;
}

static void unlink_pending(evlua_udp *u) {
  if (!u->pending) return;
  evlua_loop_state *st = evlua_loop_state_of(u->loop);
  for (evlua_udp **p = &st->udp_pending; *p; p = &(*p)->next_pending)
    if (*p == u) {
      *p = u->next_pending;
      break;
    }
  u->pending = 0;
}

void evlua_udp_close(evlua_udp *u) {
  if (u->fd < 0) return;
  ev_io_stop(u->loop, &u->rw);
  ev_io_stop(u->loop, &u->ww);
  unlink_pending(u);
  while (u->head) drop_head(u);
  close(u->fd);
  u->fd = -1;
}
