/*
** kcpnet.h - KCP sessions on UDP sockets, each session a stream (stream.h)
** with a KCP transport. Pure C on libev: the engine is kcp.c, the socket
** udp.c.
**
** A kcpnet is one UDP socket. A listener's sessions are keyed by the
** peer's address and the conv: a datagram of an unknown key that is a
** well-formed KCP datagram holding data (a push) opens a new session,
** which takes the datagram's conv (kcp-go clients pick a random one),
** up to max_sessions, and at most accept_rate new ones per second (a
** flood of fresh convs costs a datagram each, not a session). A client's kcpnet is connected to its server and
** has one session.
**
** Scheduling: each session has an ev_timer set to the time its engine is
** due next (evlua_kcp_check), re-armed after input and writes; an idle
** session is due only every EVLUA_KCP_IDLE_MS, so idle sessions leave the
** loop asleep. Acks owed after a batch of datagrams and data written in
** one loop iteration go out in the stream's once-per-iteration flush, and
** the datagrams of that iteration leave in one sendmmsg.
**
** Bad input costs only the datagram: one that is short, holds an unknown
** command, a length past its end or another conv is dropped whole and
** counted in the kcpnet's stats; the engine bounds what a session keeps.
**
** Lifetime: a session lives while its stream is open (the stream's close
** frees it); the kcpnet lives while its owner holds it (until
** evlua_kcpnet_close, which only stops new sessions) or any session does.
*/
#ifndef EVLUA_KCPNET_H
#define EVLUA_KCPNET_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "kcp.h"
#include "net.h"
#include "stream.h"
#include "udp.h"

#define EVLUA_KCPNET_MAX_SESSIONS 10000   /* default max_sessions */
#define EVLUA_KCPNET_SEND_QUEUE 8192      /* datagrams queued on the socket */

/* Engine options, KCP's names; -1 leaves KCP's default. */
typedef struct evlua_kcpnet_opts {
  int nodelay, interval, resend, nc;
  int sndwnd, rcvwnd, mtu, stream, dead_link;
  size_t max_sessions;      /* a listener's; 0: the default */
  uint32_t accept_rate;     /* a listener's new sessions per second at
                               most; 0: no limit */
} evlua_kcpnet_opts;

/* Datagrams the socket received, and the ones dropped whole, by reason. */
typedef struct evlua_kcpnet_stats {
  uint64_t datagrams;
  uint64_t dropped;         /* the sum of the reasons below */
  uint64_t drop_short;      /* shorter than a header, or cut at its end */
  uint64_t drop_cmd;        /* an unknown command */
  uint64_t drop_len;        /* a length past the datagram's end */
  uint64_t drop_conv;       /* segments of different convs, or not ours */
  uint64_t drop_no_session; /* no session, and nothing to open one with */
  uint64_t drop_limit;      /* would open a session past max_sessions */
  uint64_t drop_rate;       /* would open one past accept_rate this second */
  uint64_t drop_engine;     /* refused by the session's engine */
  uint64_t accepted;        /* sessions opened by a peer */
} evlua_kcpnet_stats;

typedef struct evlua_kcpnet evlua_kcpnet;
typedef struct evlua_kcp_session evlua_kcp_session;

typedef struct evlua_kcpnet_handler {
  /* A new session: set up its stream with evlua_stream_init_transport
  ** (transport evlua_kcp_transport, data ss, message mode as
  ** evlua_kcp_session_message_mode says), then evlua_kcp_session_attach.
  ** A session left unattached is dropped. */
  void (*on_session)(evlua_kcpnet *net, evlua_kcp_session *ss);
} evlua_kcpnet_handler;

extern const evlua_stream_transport evlua_kcp_transport;

/* Check options as a session would take them: 0, or -1 with the
** option's name in err. */
int evlua_kcpnet_check_opts(const evlua_kcpnet_opts *o, char *err,
                            size_t errlen);

/* A kcpnet on a new UDP socket bound to local; with peer, connected to it
** (a client). NULL with a message in err and errno set. */
evlua_kcpnet *evlua_kcpnet_open(struct ev_loop *loop, const evlua_addr *local,
                                const evlua_addr *peer,
                                const evlua_kcpnet_opts *o,
                                const evlua_kcpnet_handler *h, void *data,
                                char *err, size_t errlen);

/* A client's session with conv (on_session runs before this returns):
** the session, or NULL (errno ENOMEM, or EINVAL: not a client or it has
** one already). */
evlua_kcp_session *evlua_kcpnet_connect(evlua_kcpnet *net, uint32_t conv);

/* The owner lets go: no new sessions; the socket closes with the last
** session (at once if there is none). Idempotent per owner: call once. */
void evlua_kcpnet_close(evlua_kcpnet *net);

/* The owner's handler data, the socket's local port, counts. */
void *evlua_kcpnet_data(const evlua_kcpnet *net);
int evlua_kcpnet_port(const evlua_kcpnet *net);
size_t evlua_kcpnet_sessions(const evlua_kcpnet *net);
const evlua_kcpnet_stats *evlua_kcpnet_stats_of(const evlua_kcpnet *net);
const evlua_udp_stats *evlua_kcpnet_udp_stats(const evlua_kcpnet *net);
/* Engine flushes and timer wakeups of all its sessions so far (to show
** that idle sessions cost nothing). */
uint64_t evlua_kcpnet_wakeups(const evlua_kcpnet *net);

/* Session side. */
int evlua_kcp_session_message_mode(const evlua_kcp_session *ss);
void evlua_kcp_session_attach(evlua_kcp_session *ss, evlua_stream *s);
evlua_kcp *evlua_kcp_session_engine(evlua_kcp_session *ss);
/* The socket of a client's session (its own, from evlua_kcpnet_open with
** a peer), NULL for a listener's session (the socket is the listener's). */
const evlua_kcpnet *evlua_kcp_session_client_net(const evlua_kcp_session *ss);
/* The session of a KCP stream, NULL for any other stream or a closed
** one. */
evlua_kcp_session *evlua_kcp_session_of(evlua_stream *s);

#endif
