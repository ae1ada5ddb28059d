/*
** kcpnet.c - KCP sessions on UDP sockets, each a stream with a KCP
** transport. See kcpnet.h for the rules.
*/
#include "kcpnet.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "clock.h"
#include "util.h"

#define SOCKET_BUFFER (4 * 1024 * 1024)   /* asked for; the kernel caps it */
/* The engine's own limit on queued output is set past anything a stream
** queues: the stream's high/low water marks are the writers' limit. */
#define SEND_LIMIT ((size_t)1 << 40)

struct evlua_kcp_session {
  evlua_kcpnet *net;
  evlua_kcp_session *next;  /* in its hash bucket */
  evlua_addr peer;
  uint32_t conv;
  uint32_t hash;
  uint32_t due;             /* when the timer fires, ms */
  evlua_kcp *kcp;
  evlua_stream *stream;     /* NULL until attached, and once closed */
  ev_timer timer;
  int busy;                 /* inside a call that may close the stream */
  int closed;               /* the stream closed while busy: free after */
};

struct evlua_kcpnet {
  struct ev_loop *loop;
  evlua_udp udp;
  int connected;            /* a client: one session, one peer */
  int receiving;            /* inside the socket's on_datagram */
  ev_timer reaper;          /* frees it from the loop (see maybe_free_net) */
  int owned;                /* the owner has not let go yet */
  evlua_kcpnet_opts opts;
  evlua_kcp_session **buckets;
  size_t nbuckets, count;
  evlua_kcpnet_stats stats;
  uint64_t wakeups;
  uint32_t rate_start;      /* ms: the second accept_rate counts in */
  uint32_t rate_count;
  char *scratch;            /* a message-mode write's parts, joined */
  size_t scratch_cap;
  const evlua_kcpnet_handler *handler;
  void *data;
};

/* KCP counts milliseconds in a uint32 that wraps; only differences
** matter. The loop's time made current (clock.h): after a blocking step
** ev_now would be late. */
static uint32_t now_ms(struct ev_loop *loop) {
  return (uint32_t)(uint64_t)(evlua_clock_now(loop) * 1000.0);
}

/* Sessions by address and conv ======================================== */

static uint32_t key_hash(const evlua_addr *a, uint32_t conv) {
  uint32_t h = 2166136261u ^ conv;
  const unsigned char *p = (const unsigned char *)&a->ss;
  for (socklen_t i = 0; i < a->len; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static int same_addr(const evlua_addr *a, const evlua_addr *b) {
  return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static evlua_kcp_session *lookup(evlua_kcpnet *net, const evlua_addr *from,
                                 uint32_t conv) {
  if (net->count == 0) return NULL;
  if (net->connected) {   /* the socket only hears its peer */
    for (size_t i = 0; i < net->nbuckets; i++)
      for (evlua_kcp_session *ss = net->buckets[i]; ss; ss = ss->next)
        if (ss->conv == conv) return ss;
    return NULL;
  }
  uint32_t h = key_hash(from, conv);
  for (evlua_kcp_session *ss = net->buckets[h & (net->nbuckets - 1)]; ss;
       ss = ss->next)
    if (ss->hash == h && ss->conv == conv && same_addr(&ss->peer, from))
      return ss;
  return NULL;
}

/* Keep at most one session per bucket on average. */
static int grow(evlua_kcpnet *net) {
  if (net->count < net->nbuckets) return 0;
  size_t n = net->nbuckets ? net->nbuckets * 2 : 16;
  evlua_kcp_session **b = calloc(n, sizeof *b);
  if (!b) return -1;
  for (size_t i = 0; i < net->nbuckets; i++) {
    evlua_kcp_session *ss = net->buckets[i], *next;
    for (; ss; ss = next) {
      next = ss->next;
      ss->next = b[ss->hash & (n - 1)];
      b[ss->hash & (n - 1)] = ss;
    }
  }
  free(net->buckets);
  net->buckets = b;
  net->nbuckets = n;
  return 0;
}

static void unlink_session(evlua_kcpnet *net, evlua_kcp_session *ss) {
  evlua_kcp_session **p = &net->buckets[ss->hash & (net->nbuckets - 1)];
  for (; *p; p = &(*p)->next)
    if (*p == ss) {
      *p = ss->next;
      net->count--;
      return;
    }
}

static void free_net(evlua_kcpnet *net) {
  ev_timer_stop(net->loop, &net->reaper);
  evlua_udp_close(&net->udp);
  free(net->buckets);
  free(net->scratch);
  free(net);
}

static void on_reaper(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop; (void)revents;
  free_net(container_of(w, evlua_kcpnet, reaper));
}

/* The kcpnet goes once neither its owner nor a session holds it. From
** inside the socket's own datagram callback only the socket closes (udp.c
** still reads it on return); the memory goes from the loop right after. */
static void maybe_free_net(evlua_kcpnet *net) {
  if (net->owned || net->count > 0) return;
  if (net->receiving) {
    evlua_udp_close(&net->udp);
    ev_timer_set(&net->reaper, 0., 0.);
    ev_timer_start(net->loop, &net->reaper);
    return;
  }
  free_net(net);
}

static void free_session(evlua_kcp_session *ss) {
  evlua_kcpnet *net = ss->net;
  ev_timer_stop(net->loop, &ss->timer);
  /* acks still owed for the peer's last data */
  evlua_kcp_flush(ss->kcp, now_ms(net->loop));
  evlua_kcp_free(ss->kcp);
  unlink_session(net, ss);
  free(ss);
  maybe_free_net(net);
}

/* A call that may close the stream (and so free the session) holds it. */
static void hold(evlua_kcp_session *ss) { ss->busy++; }

/* Let go; 0 if the session is gone. */
static int release(evlua_kcp_session *ss) {
  if (--ss->busy > 0 || !ss->closed) return 1;
  free_session(ss);
  return 0;
}

/* Scheduling ========================================================== */

/* Set the timer to the engine's next due time, unless it already fires
** sooner (it re-checks then): one heap update per change, not per
** event. */
static void arm(evlua_kcp_session *ss, uint32_t now) {
  uint32_t due = evlua_kcp_check(ss->kcp, now);
  if (ev_is_active(&ss->timer) && (int32_t)(due - ss->due) >= 0) return;
  int32_t wait = (int32_t)(due - now);
  if (wait < 0) wait = 0;
  ss->due = due;
  ev_timer_stop(ss->net->loop, &ss->timer);
  ev_timer_set(&ss->timer, wait / 1000.0, 0.);
  ev_timer_start(ss->net->loop, &ss->timer);
}

/* Run soon, from the loop (a resume asked for from inside a read). */
static void arm_now(evlua_kcp_session *ss) {
  ss->due = now_ms(ss->net->loop);
  ev_timer_stop(ss->net->loop, &ss->timer);
  ev_timer_set(&ss->timer, 0., 0.);
  ev_timer_start(ss->net->loop, &ss->timer);
}

/* Input =============================================================== */

/* Move what the engine has ready into the stream while it has room (the
** engine's window closes when we stop: real backpressure), then one
** on_data. Stream mode takes no more than fits under max_input; message
** mode takes whole messages. */
static void pull(evlua_kcp_session *ss) {
  evlua_stream *s = ss->stream;
  int got = 0;
  while (s && evlua_stream_wants_input(s)) {
    long n = evlua_kcp_peeksize(ss->kcp);
    if (n < 0) break;
    if (!s->message_mode) {
      size_t room = s->max_input - evlua_buffer_len(&s->in);
      if ((size_t)n > room) n = (long)room;
    }
    char *p = evlua_buffer_reserve(&s->in, n > 0 ? (size_t)n : 1);
    if (!p) {
      evlua_stream_end(s, "out of memory");
      return;
    }
    long r = evlua_kcp_recv(ss->kcp, p, (size_t)n);
    if (r < 0) break;
    evlua_buffer_commit(&s->in, (size_t)r);
    if (evlua_stream_received(s, (size_t)r) != 0) return;
    got = 1;
  }
  if (got && ss->stream) evlua_stream_notify(ss->stream);
}

/* The first bad segment of a datagram, as a stats field, or NULL when
** every segment is whole, known and of one conv. *pushes: data
** segments seen. */
static uint64_t *bad_datagram(evlua_kcpnet *net, const char *data,
                              size_t len, uint32_t conv, int *pushes) {
  *pushes = 0;
  if (len < EVLUA_KCP_OVERHEAD) return &net->stats.drop_short;
  while (len > 0) {
    if (len < EVLUA_KCP_OVERHEAD) return &net->stats.drop_short;
    evlua_kcp_header h;
    evlua_kcp_decode_header(data, &h);
    if (h.conv != conv) return &net->stats.drop_conv;
    if (h.cmd < EVLUA_KCP_CMD_PUSH || h.cmd > EVLUA_KCP_CMD_WINS)
      return &net->stats.drop_cmd;
    if (h.len > len - EVLUA_KCP_OVERHEAD) return &net->stats.drop_len;
    if (h.cmd == EVLUA_KCP_CMD_PUSH) (*pushes)++;
    data += EVLUA_KCP_OVERHEAD + h.len;
    len -= EVLUA_KCP_OVERHEAD + h.len;
  }
  return NULL;
}

static void drop(evlua_kcpnet *net, uint64_t *reason) {
  (*reason)++;
  net->stats.dropped++;
}

static int output(const char *buf, int len, void *user);
static void on_timer(struct ev_loop *loop, ev_timer *w, int revents);

static int apply_opts(evlua_kcp *k, const evlua_kcpnet_opts *o,
                      const char **bad) {
  const evlua_kcpnet_opts *d = o;
  if (evlua_kcp_set_nodelay(k, d->nodelay, d->interval, d->resend,
                            d->nc) != 0)
    return *bad = "nodelay", -1;
  if (evlua_kcp_set_wndsize(k, d->sndwnd, d->rcvwnd) != 0)
    return *bad = "sndwnd or rcvwnd", -1;
  if (d->mtu >= 0 && evlua_kcp_set_mtu(k, d->mtu) != 0)
    return *bad = "mtu", -1;
  if (d->stream > 0 && evlua_kcp_set_stream(k, 1) != 0)
    return *bad = "stream", -1;
  if (d->dead_link >= 0 && evlua_kcp_set_dead_link(k, d->dead_link) != 0)
    return *bad = "dead_link", -1;
  if (evlua_kcp_set_send_limit(k, SEND_LIMIT) != 0)
    return *bad = "send limit", -1;
  return 0;
}

/* A new session in the table, its stream set up by the handler; NULL
** when out of memory or left unattached. */
static evlua_kcp_session *new_session(evlua_kcpnet *net,
                                      const evlua_addr *peer, uint32_t conv) {
  if (grow(net) != 0) return NULL;
  evlua_kcp_session *ss = calloc(1, sizeof *ss);
  if (!ss) return NULL;
  ss->kcp = evlua_kcp_create(conv, ss, output);
  const char *bad;
  if (!ss->kcp || apply_opts(ss->kcp, &net->opts, &bad) != 0) {
    if (ss->kcp) evlua_kcp_free(ss->kcp);
    free(ss);
    return NULL;
  }
  ss->net = net;
  ss->peer = *peer;
  ss->conv = conv;
  ss->hash = key_hash(peer, conv);
  ev_init(&ss->timer, on_timer);
  ss->next = net->buckets[ss->hash & (net->nbuckets - 1)];
  net->buckets[ss->hash & (net->nbuckets - 1)] = ss;
  net->count++;
  hold(ss);
  net->handler->on_session(net, ss);
  if (!ss->stream && !ss->closed) ss->closed = 1;   /* not taken */
  if (!release(ss)) return NULL;
  return ss;
}

/* A datagram for the session: into the engine, then what it completed
** into the stream; acks go out with the iteration's flush. */
static void session_input(evlua_kcp_session *ss, const char *data,
                          size_t len) {
  evlua_kcpnet *net = ss->net;
  uint32_t now = now_ms(net->loop);
  size_t before = evlua_kcp_waitsnd_bytes(ss->kcp);
  if (evlua_kcp_input(ss->kcp, data, len, now) != 0)
    drop(net, &net->stats.drop_engine);
  hold(ss);
  pull(ss);
  if (ss->stream && evlua_kcp_waitsnd_bytes(ss->kcp) < before)
    evlua_stream_progress(ss->stream);
  if (ss->stream) evlua_stream_want_flush(ss->stream);
  if (release(ss)) arm(ss, now);
}

static void route(evlua_kcpnet *net, const char *data, size_t len,
                  const evlua_addr *from, int truncated);

/* Sessions may end (and so the kcpnet) while a datagram is handled. */
static void on_datagram(evlua_udp *u, const char *data, size_t len,
                        const evlua_addr *from, int truncated) {
  evlua_kcpnet *net = container_of(u, evlua_kcpnet, udp);
  net->receiving = 1;
  route(net, data, len, from, truncated);
  if (u->fd >= 0) net->receiving = 0;   /* else the reaper frees it */
}

/* One more new session this second, if accept_rate allows it. */
static int accept_allowed(evlua_kcpnet *net) {
  if (net->opts.accept_rate == 0) return 1;
  uint32_t now = now_ms(net->loop);
  if (now - net->rate_start >= 1000) {
    net->rate_start = now;
    net->rate_count = 0;
  }
  if (net->rate_count >= net->opts.accept_rate) return 0;
  net->rate_count++;
  return 1;
}

/* A datagram to its session, or to a new one, or dropped. */
static void route(evlua_kcpnet *net, const char *data, size_t len,
                  const evlua_addr *from, int truncated) {
  net->stats.datagrams++;
  uint32_t conv;
  if (truncated || evlua_kcp_read_conv(data, len, &conv) != 0) {
    drop(net, &net->stats.drop_short);
    return;
  }
  int pushes;
  uint64_t *bad = bad_datagram(net, data, len, conv, &pushes);
  if (bad) {
    drop(net, bad);
    return;
  }
  evlua_kcp_session *ss = lookup(net, from, conv);
  if (!ss) {
    if (net->connected) return drop(net, &net->stats.drop_conv);
    if (!net->owned || pushes == 0)
      return drop(net, &net->stats.drop_no_session);
    if (net->count >= net->opts.max_sessions)
      return drop(net, &net->stats.drop_limit);
    if (!accept_allowed(net)) return drop(net, &net->stats.drop_rate);
    net->stats.accepted++;
    ss = new_session(net, from, conv);
    if (!ss) return;
  }
  session_input(ss, data, len);
}

static const evlua_udp_handler udp_handler = { on_datagram };

/* Output and timers =================================================== */

/* The engine's datagrams join the socket's queue, written once per loop
** iteration with sendmmsg; a full queue loses the datagram (KCP resends
** it). */
static int output(const char *buf, int len, void *user) {
  evlua_kcp_session *ss = user;
  evlua_kcpnet *net = ss->net;
  return evlua_udp_send(&net->udp, buf, (size_t)len,
                        net->connected ? NULL : &ss->peer);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  evlua_kcp_session *ss = container_of(w, evlua_kcp_session, timer);
  uint32_t now = now_ms(loop);
  ss->net->wakeups++;
  size_t before = evlua_kcp_waitsnd_bytes(ss->kcp);
  evlua_kcp_update(ss->kcp, now);
  hold(ss);
  if (ss->stream && evlua_kcp_dead(ss->kcp)) {
    evlua_stream_end(ss->stream, "timeout");   /* the peer is gone */
  } else {
    pull(ss);   /* a resume after a pause lands here */
    if (ss->stream && evlua_kcp_waitsnd_bytes(ss->kcp) < before)
      evlua_stream_progress(ss->stream);
  }
  if (release(ss) && ss->stream) arm(ss, now);
}

/* The transport ======================================================= */

static evlua_kcp_session *session_of(const evlua_stream *s) {
  return (evlua_kcp_session *)s->transport_data;
}

static int kcp_errno(int r) {
  switch (r) {
  case EVLUA_KCP_ETOOBIG: return EMSGSIZE;
  case EVLUA_KCP_EDEAD: return EPIPE;
  case EVLUA_KCP_ENOMEM: return ENOMEM;
  default: return ENOBUFS;
  }
}

/* Message mode: the parts of one write are one message, joined. */
static const char *join(evlua_kcpnet *net, const struct iovec *iov, int n,
                        size_t total) {
  if (total > net->scratch_cap) {
    char *p = realloc(net->scratch, total);
    if (!p) return NULL;
    net->scratch = p;
    net->scratch_cap = total;
  }
  size_t at = 0;
  for (int i = 0; i < n; i++) {
    memcpy(net->scratch + at, iov[i].iov_base, iov[i].iov_len);
    at += iov[i].iov_len;
  }
  return net->scratch;
}

static int t_write(evlua_stream *s, const struct iovec *iov, int n) {
  evlua_kcp_session *ss = session_of(s);
  int r = 0;
  if (s->message_mode && n != 1) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += iov[i].iov_len;
    const char *p = join(ss->net, iov, n, total);
    if (!p) return errno = ENOMEM, -1;
    r = evlua_kcp_send(ss->kcp, p, total);
  } else {
    for (int i = 0; i < n && r == 0; i++)
      if (iov[i].iov_len > 0 || s->message_mode)
        r = evlua_kcp_send(ss->kcp, iov[i].iov_base, iov[i].iov_len);
  }
  if (r != 0) return errno = kcp_errno(r), -1;
  return 0;
}

static size_t t_pending(const evlua_stream *s) {
  return evlua_kcp_waitsnd_bytes(session_of(s)->kcp);
}

/* Once per loop iteration after writes or input: acks and new data out
** now (their datagrams leave together right after), then the timer. */
static void t_flush(evlua_stream *s) {
  evlua_kcp_session *ss = session_of(s);
  uint32_t now = now_ms(ss->net->loop);
  ss->net->wakeups++;
  evlua_kcp_flush(ss->kcp, now);
  if (evlua_kcp_dead(ss->kcp)) arm_now(ss);   /* ends it from the loop */
  else arm(ss, now);
}

static void t_resume(evlua_stream *s) {
  arm_now(session_of(s));
}

static int t_addr(evlua_stream *s, int peer, evlua_addr *a) {
  evlua_kcp_session *ss = session_of(s);
  if (peer) {
    *a = ss->peer;
    return 0;
  }
  return evlua_net_sockname(ss->net->udp.fd, a);
}

static void t_close(evlua_stream *s) {
  evlua_kcp_session *ss = session_of(s);
  ss->stream = NULL;
  ss->closed = 1;
  if (ss->busy == 0) free_session(ss);
}

const evlua_stream_transport evlua_kcp_transport = {
  "kcp", t_write, t_pending, t_flush, t_resume, t_addr, t_close
};

/* Opening and closing ================================================= */

int evlua_kcpnet_check_opts(const evlua_kcpnet_opts *o, char *err,
                            size_t errlen) {
  evlua_kcp *k = evlua_kcp_create(1, NULL, output);
  if (!k) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  const char *bad = NULL;
  int r = apply_opts(k, o, &bad);
  evlua_kcp_free(k);
  if (r != 0) snprintf(err, errlen, "%s out of range", bad);
  return r;
}

static void grow_socket_buffers(int fd) {
  int size = SOCKET_BUFFER;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

evlua_kcpnet *evlua_kcpnet_open(struct ev_loop *loop, const evlua_addr *local,
                                const evlua_addr *peer,
                                const evlua_kcpnet_opts *o,
                                const evlua_kcpnet_handler *h, void *data,
                                char *err, size_t errlen) {
  if (evlua_kcpnet_check_opts(o, err, errlen) != 0) return errno = EINVAL,
                                                           NULL;
  evlua_kcpnet *net = calloc(1, sizeof *net);
  if (!net) {
    snprintf(err, errlen, "out of memory");
    return errno = ENOMEM, NULL;
  }
  if (evlua_udp_open(&net->udp, loop, local, &udp_handler, net, err,
                     errlen) != 0) {
    int e = errno;
    free(net);
    errno = e;
    return NULL;
  }
  if (peer && evlua_udp_connect(&net->udp, peer) != 0) {
    int e = errno;
    snprintf(err, errlen, "connect: %s", evlua_net_strerror(e));
    evlua_udp_close(&net->udp);
    free(net);
    errno = e;
    return NULL;
  }
  grow_socket_buffers(net->udp.fd);
  net->udp.max_datagram = EVLUA_KCP_MTU_MAX;   /* longer: not KCP */
  net->udp.max_queue = EVLUA_KCPNET_SEND_QUEUE;
  net->loop = loop;
  ev_init(&net->reaper, on_reaper);
  net->connected = peer != NULL;
  net->owned = 1;
  net->opts = *o;
  if (net->opts.max_sessions == 0)
    net->opts.max_sessions = EVLUA_KCPNET_MAX_SESSIONS;
  if (peer) net->opts.max_sessions = 1;
  net->handler = h;
  net->data = data;
  return net;
}

evlua_kcp_session *evlua_kcpnet_connect(evlua_kcpnet *net, uint32_t conv) {
  if (!net->connected || net->count > 0 || !net->owned)
    return errno = EINVAL, NULL;
  evlua_addr peer;
  if (evlua_net_peername(net->udp.fd, &peer) != 0) return NULL;
  evlua_kcp_session *ss = new_session(net, &peer, conv);
  if (!ss) return errno = ENOMEM, NULL;
  return ss;
}

void evlua_kcpnet_close(evlua_kcpnet *net) {
  net->owned = 0;
  maybe_free_net(net);
}

void *evlua_kcpnet_data(const evlua_kcpnet *net) { return net->data; }

int evlua_kcpnet_port(const evlua_kcpnet *net) {
  evlua_addr a;
  if (evlua_net_sockname(net->udp.fd, &a) != 0) return -1;
  char host[64];
  return evlua_addr_format(&a, host, sizeof host);
}

size_t evlua_kcpnet_sessions(const evlua_kcpnet *net) { return net->count; }

const evlua_kcpnet_stats *evlua_kcpnet_stats_of(const evlua_kcpnet *net) {
  return &net->stats;
}

const evlua_udp_stats *evlua_kcpnet_udp_stats(const evlua_kcpnet *net) {
  return &net->udp.stats;
}

uint64_t evlua_kcpnet_wakeups(const evlua_kcpnet *net) {
  return net->wakeups;
}

int evlua_kcp_session_message_mode(const evlua_kcp_session *ss) {
  return ss->net->opts.stream <= 0;
}

void evlua_kcp_session_attach(evlua_kcp_session *ss, evlua_stream *s) {
  ss->stream = s;
}

evlua_kcp *evlua_kcp_session_engine(evlua_kcp_session *ss) {
  return ss->kcp;
}

const evlua_kcpnet *evlua_kcp_session_client_net(const evlua_kcp_session *ss) {
  return ss->net->connected ? ss->net : NULL;
}

evlua_kcp_session *evlua_kcp_session_of(evlua_stream *s) {
  if (evlua_stream_transport_of(s) != &evlua_kcp_transport ||
      s->state == EVLUA_STREAM_CLOSED)
    return NULL;
  return session_of(s);
}
