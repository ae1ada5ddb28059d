/*
** kcp.h - the KCP protocol (reliable, ordered delivery over datagrams),
** our own implementation of the segment format kcp-go and ikcp speak.
** Plain C: no sockets, no clock, no libev. The caller passes the time in
** (milliseconds, a uint32 that may wrap, as KCP counts it), feeds received
** datagrams to evlua_kcp_input and sends what the output callback hands
** it. One engine is one session (one conv with one peer).
**
** Wire format, per segment (several per datagram, packed up to mtu):
**   conv u32 | cmd u8 | frg u8 | wnd u16 | ts u32 | sn u32 | una u32 |
**   len u32 | len bytes of data          (all little-endian, 24 + len)
** cmd: 81 push (data), 82 ack, 83 window probe (ask), 84 window size (tell).
**
** Scheduling: evlua_kcp_check(k, now) says when evlua_kcp_update must run
** next; call check again after every input, send or recv, which can make
** the session due sooner. An idle session (nothing queued, in flight or
** to acknowledge) is due only every EVLUA_KCP_IDLE_MS.
**
** Memory is bounded by the options: the out-of-order receive buffer holds
** at most rcvwnd segments, the queue of received segments the reader has
** not taken at most max(rcvwnd, 256) (a message of up to 256 fragments
** always completes), and the send side what the send limit admits.
** Work per datagram is linear in its size plus, at most, the send window.
*/
#ifndef EVLUA_KCP_H
#define EVLUA_KCP_H

#include <stddef.h>
#include <stdint.h>

#define EVLUA_KCP_OVERHEAD 24          /* header bytes of one segment */
#define EVLUA_KCP_MTU_DEFAULT 1400
#define EVLUA_KCP_MTU_MAX 1500         /* kcp-go reads 1500-byte datagrams */
#define EVLUA_KCP_MTU_MIN (EVLUA_KCP_OVERHEAD + 1)
#define EVLUA_KCP_WND_MAX 32768        /* sndwnd and rcvwnd */
#define EVLUA_KCP_MAX_FRAGMENTS 255    /* per message, as kcp-go allows */
#define EVLUA_KCP_SEND_LIMIT_DEFAULT (1024 * 1024)
#define EVLUA_KCP_IDLE_MS 10000

enum {
  EVLUA_KCP_CMD_PUSH = 81,
  EVLUA_KCP_CMD_ACK = 82,
  EVLUA_KCP_CMD_WASK = 83,
  EVLUA_KCP_CMD_WINS = 84
};

/* Results: 0 (or a byte count) on success, one of these on failure. */
enum {
  EVLUA_KCP_EAGAIN = -1,    /* recv: no whole message yet; send: the send
                               queue is at its limit (try after acks) */
  EVLUA_KCP_EINVAL = -2,    /* an option or argument out of range */
  EVLUA_KCP_ETOOBIG = -3,   /* send: more than EVLUA_KCP_MAX_FRAGMENTS;
                               recv: the message does not fit in cap */
  EVLUA_KCP_EBADDATA = -4,  /* input: malformed datagram, dropped */
  EVLUA_KCP_ECONV = -5,     /* input: a segment for another conv, dropped */
  EVLUA_KCP_ENOMEM = -6,
  EVLUA_KCP_EDEAD = -7      /* send: the session is dead (dead_link) */
};

/* Sends one datagram (at most mtu bytes, never more than
** EVLUA_KCP_MTU_MAX). The return value is counted when negative, and
** otherwise ignored: KCP retransmits what is lost. */
typedef int (*evlua_kcp_output)(const char *buf, int len, void *user);

typedef struct evlua_kcp evlua_kcp;

/* Counters since creation. A dropped datagram counts once in
** dropped_datagrams and once under its reason (the first bad segment);
** a segment dropped from a good datagram counts under its reason. */
typedef struct evlua_kcp_stats {
  uint64_t datagrams_in, datagrams_out;
  uint64_t segments_in, segments_out;   /* every command */
  uint64_t retransmits;                 /* by timeout */
  uint64_t fast_retransmits;            /* by acks skipping the segment */
  uint64_t dropped_datagrams;
  uint64_t drop_short;      /* under 24 bytes, or trailing bytes */
  uint64_t drop_conv;       /* another conv */
  uint64_t drop_cmd;        /* an unknown command */
  uint64_t drop_len;        /* len beyond the datagram */
  uint64_t drop_window;     /* push beyond the receive window */
  uint64_t drop_duplicate;  /* push already received */
  uint64_t drop_fragments;  /* segments of a message whose fragments were
                               inconsistent (frg not counting down) */
  uint64_t acks_early;      /* the ack list filled up and went out at once */
  uint64_t output_errors;   /* the output callback returned < 0 */
} evlua_kcp_stats;

/* One segment header, decoded. */
typedef struct evlua_kcp_header {
  uint32_t conv;
  uint8_t cmd, frg;
  uint16_t wnd;
  uint32_t ts, sn, una, len;
} evlua_kcp_header;

/* The codec: write/read the 24 header bytes at p. */
void evlua_kcp_encode_header(char *p, const evlua_kcp_header *h);
void evlua_kcp_decode_header(const char *p, evlua_kcp_header *h);

/* The conv of a datagram (its first segment's), for a listener keying
** sessions by address and conv: 0, or EVLUA_KCP_EBADDATA if shorter than
** a header. */
int evlua_kcp_read_conv(const char *data, size_t len, uint32_t *conv);

/* A session with KCP's defaults (message mode, nodelay 0, interval 100,
** resend 0, nc 0, sndwnd 32, rcvwnd 128, mtu 1400, dead_link 20); NULL
** when out of memory. user is passed to output. */
evlua_kcp *evlua_kcp_create(uint32_t conv, void *user, evlua_kcp_output output);
void evlua_kcp_free(evlua_kcp *k);
uint32_t evlua_kcp_conv(const evlua_kcp *k);

/* Options, KCP's names. Each returns 0 or EVLUA_KCP_EINVAL (and then
** changes nothing). A negative argument to set_nodelay leaves that one
** value as it is, as ikcp_nodelay does. */
int evlua_kcp_set_nodelay(evlua_kcp *k, int nodelay, int interval,
                          int resend, int nc);   /* interval clamped 10..5000 */
int evlua_kcp_set_wndsize(evlua_kcp *k, int sndwnd, int rcvwnd); /* 1..WND_MAX,
                                                  <= 0 leaves it */
int evlua_kcp_set_mtu(evlua_kcp *k, int mtu);    /* MTU_MIN..MTU_MAX */
int evlua_kcp_set_stream(evlua_kcp *k, int on);  /* only while nothing is
                                                    queued either way */
int evlua_kcp_set_dead_link(evlua_kcp *k, int xmits);   /* >= 1 */
int evlua_kcp_set_send_limit(evlua_kcp *k, size_t bytes);   /* >= 1 */

/* Queue data. Message mode: one message (0 to MAX_FRAGMENTS * mss bytes)
** the peer receives whole; stream mode: bytes that may coalesce with the
** previous send. All or nothing: 0, or EVLUA_KCP_EAGAIN when bytes are
** already waiting (queued or unacknowledged) and len more would pass the
** send limit, EVLUA_KCP_ETOOBIG, EVLUA_KCP_EDEAD, EVLUA_KCP_ENOMEM. */
int evlua_kcp_send(evlua_kcp *k, const char *data, size_t len);

/* Message mode: the size of the next whole message; stream mode: the
** bytes ready. EVLUA_KCP_EAGAIN when none. */
long evlua_kcp_peeksize(const evlua_kcp *k);

/* Message mode: copy the next whole message into buf, return its size
** (EVLUA_KCP_ETOOBIG, taking nothing, if it exceeds cap). Stream mode: up
** to cap bytes. EVLUA_KCP_EAGAIN when nothing is ready. */
long evlua_kcp_recv(evlua_kcp *k, char *buf, size_t cap);

/* A received datagram: 0, or EVLUA_KCP_EBADDATA / EVLUA_KCP_ECONV when
** it was dropped whole (counted in the stats). May call output (when the
** list of acks to send is full). */
int evlua_kcp_input(evlua_kcp *k, const char *data, size_t len, uint32_t now);

/* Run the timers: flushes when the interval has passed (ikcp_update). */
void evlua_kcp_update(evlua_kcp *k, uint32_t now);
/* Flush now: acks, window probes, new data the windows allow, due
** retransmissions. */
void evlua_kcp_flush(evlua_kcp *k, uint32_t now);
/* When update must run next (now, if due already). */
uint32_t evlua_kcp_check(const evlua_kcp *k, uint32_t now);

/* Segments queued or unacknowledged (ikcp_waitsnd), and their bytes. */
uint32_t evlua_kcp_waitsnd(const evlua_kcp *k);
size_t evlua_kcp_waitsnd_bytes(const evlua_kcp *k);
/* Nonzero once a segment went dead_link times without an ack: the
** session is over (the binding disconnects with "timeout"). */
int evlua_kcp_dead(const evlua_kcp *k);
/* The smoothed round-trip time and current retransmission timeout, ms. */
uint32_t evlua_kcp_srtt(const evlua_kcp *k);
uint32_t evlua_kcp_rto(const evlua_kcp *k);
const evlua_kcp_stats *evlua_kcp_stats_of(const evlua_kcp *k);

#endif
