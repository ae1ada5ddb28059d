/*
** kcp.c - the KCP protocol engine (see kcp.h). Behaves on the wire as
** ikcp and kcp-go do (same RTO, fast resend, congestion window, window
** probes), with bounded memory and per-datagram work:
**   - the send buffer (segments in flight) and the receive buffer
**     (segments out of order) are rings indexed by sn, so an ack, a una
**     or an arriving segment costs O(1) instead of a list scan;
**   - a datagram is checked whole before any of it is used, so a bad one
**     changes nothing;
**   - fragments are checked as they reach the receive queue, so a peer
**     cannot park a message that never completes.
*/
#include "kcp.h"

#include <stdlib.h>
#include <string.h>

#define RTO_NODELAY_MIN 30     /* minrto with nodelay */
#define RTO_MIN 100            /* minrto without */
#define RTO_DEFAULT 200
#define RTO_MAX 60000
#define INTERVAL_DEFAULT 100
#define INTERVAL_MIN 10
#define INTERVAL_MAX 5000
#define SNDWND_DEFAULT 32
#define RCVWND_DEFAULT 128
#define THRESH_INIT 2
#define THRESH_MIN 2
#define PROBE_INIT 7000        /* first window probe after 7 s at wnd 0 */
#define PROBE_LIMIT 120000     /* probes back off up to 120 s */
#define FASTACK_LIMIT 5        /* fast resends of one segment at most */
#define DEAD_LINK_DEFAULT 20
#define ASK_SEND 1             /* probe flags: send a window probe */
#define ASK_TELL 2             /* ... answer one with our window */
#define ACKS_MIN 128           /* the ack list may hold max(this, 2 rcvwnd) */
#define QUEUE_FRAGMENTS 256    /* a message of frg 255 has 256 segments */
/* ikcp's update resynchronises its flush clock past this drift. */
#define CLOCK_JUMP 10000

/* Segments ============================================================ */

typedef struct kcp_seg {
  struct kcp_seg *next;   /* in a queue */
  uint32_t sn, ts, resendts, rto, fastack, xmit;
  uint32_t len, cap;      /* data bytes used, allocated */
  uint8_t frg;
  char data[];
} kcp_seg;

/* A FIFO of segments (the send queue and the receive queue). */
typedef struct seg_fifo {
  kcp_seg *head, *tail;
} seg_fifo;

/* Segments keyed by sn: slot sn & mask. The live range of sns never
** spans more than the capacity, so slots never collide. */
typedef struct seg_ring {
  kcp_seg **slot;
  uint32_t mask;
} seg_ring;

typedef struct ack_entry {
  uint32_t sn, ts;
} ack_entry;

struct evlua_kcp {
  uint32_t conv, mtu, mss;
  uint32_t current;          /* the time of the last call that gave one */
  int updated;               /* update ran once: ts_flush is set */
  uint32_t interval, ts_flush;
  uint32_t nodelay, fastresend, nocwnd, stream, dead_link;
  int dead;
  /* send side */
  uint32_t snd_una, snd_nxt;
  uint32_t snd_wnd, rmt_wnd, cwnd, ssthresh, incr;
  uint32_t probe, ts_probe, probe_wait;
  seg_fifo snd_queue;        /* not yet given an sn */
  uint32_t nsnd_que;
  seg_ring snd_buf;          /* in flight: sn in [snd_una, snd_nxt) */
  uint32_t nsnd_buf;
  size_t snd_bytes;          /* data bytes queued or in flight */
  size_t send_limit;
  /* round-trip estimate */
  int32_t rx_srtt, rx_rttval;
  uint32_t rx_rto, rx_minrto;
  /* receive side */
  uint32_t rcv_nxt, rcv_wnd;
  seg_ring rcv_buf;          /* out of order: sn in [rcv_nxt, +rcv_wnd) */
  uint32_t nrcv_buf;
  seg_fifo rcv_queue;        /* in order, for recv */
  uint32_t nrcv_que;
  size_t rcv_bytes;          /* stream mode: bytes in rcv_queue */
  uint32_t rcv_head_off;     /* stream mode: bytes taken from the head */
  /* message mode: the receive queue is whole messages, then at most one
  ** partial message whose next fragment must carry expect_frg */
  uint32_t ncomplete;
  kcp_seg *last_complete;    /* the last segment of the last whole one */
  int expect_frg;            /* -1: the queue ends on a message boundary */
  /* acks to send */
  ack_entry *acks;
  uint32_t nacks, acks_cap;
  /* output */
  evlua_kcp_output output;
  void *user;
  uint32_t out_len;
  char out[EVLUA_KCP_MTU_MAX];
  evlua_kcp_stats stats;
};

/* Signed distance between two wrapping times or sequence numbers. */
static int32_t diff32(uint32_t later, uint32_t earlier) {
  return (int32_t)(later - earlier);
}

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }
static uint32_t max_u32(uint32_t a, uint32_t b) { return a > b ? a : b; }

static kcp_seg *seg_new(uint32_t cap) {
  kcp_seg *s = malloc(sizeof(kcp_seg) + cap);
  if (s == NULL) return NULL;
  memset(s, 0, sizeof(kcp_seg));
  s->cap = cap;
  return s;
}

static void fifo_push(seg_fifo *q, kcp_seg *s) {
  s->next = NULL;
  if (q->tail != NULL) q->tail->next = s;
  else q->head = s;
  q->tail = s;
}

static kcp_seg *fifo_pop(seg_fifo *q) {
  kcp_seg *s = q->head;
  if (s == NULL) return NULL;
  q->head = s->next;
  if (q->head == NULL) q->tail = NULL;
  return s;
}

static void fifo_free(seg_fifo *q) {
  kcp_seg *s;
  while ((s = fifo_pop(q)) != NULL) free(s);
}

static uint32_t pow2_at_least(uint32_t n) {
  uint32_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

static kcp_seg **ring_at(const seg_ring *r, uint32_t sn) {
  return &r->slot[sn & r->mask];
}

/* Grow the ring to hold at least n sns, moving the live range
** [first, first + span) to its new slots. Never shrinks: the live range
** may still span the old capacity. */
static int ring_reserve(seg_ring *r, uint32_t n, uint32_t first, uint32_t span) {
  uint32_t cap = pow2_at_least(n);
  if (r->slot != NULL && cap <= r->mask + 1) return 0;
  kcp_seg **slot = calloc(cap, sizeof(kcp_seg *));
  if (slot == NULL) return EVLUA_KCP_ENOMEM;
  seg_ring grown = { slot, cap - 1 };
  for (uint32_t i = 0; r->slot != NULL && i < span; i++)
    *ring_at(&grown, first + i) = *ring_at(r, first + i);
  free(r->slot);
  *r = grown;
  return 0;
}

static void ring_free(seg_ring *r) {
  for (uint32_t i = 0; r->slot != NULL && i <= r->mask; i++) free(r->slot[i]);
  free(r->slot);
  r->slot = NULL;
}

/* The codec =========================================================== */

static void put_u16(char *p, uint16_t v) {
  p[0] = (char)(v & 0xff);
  p[1] = (char)(v >> 8);
}

static void put_u32(char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (char)((v >> (8 * i)) & 0xff);
}

static uint16_t get_u16(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint16_t)(u[0] | (u[1] << 8));
}

static uint32_t get_u32(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint32_t)u[0] | ((uint32_t)u[1] << 8) | ((uint32_t)u[2] << 16) |
         ((uint32_t)u[3] << 24);
}

void evlua_kcp_encode_header(char *p, const evlua_kcp_header *h) {
  put_u32(p, h->conv);
  p[4] = (char)h->cmd;
  p[5] = (char)h->frg;
  put_u16(p + 6, h->wnd);
  put_u32(p + 8, h->ts);
  put_u32(p + 12, h->sn);
  put_u32(p + 16, h->una);
  put_u32(p + 20, h->len);
}

void evlua_kcp_decode_header(const char *p, evlua_kcp_header *h) {
  h->conv = get_u32(p);
  h->cmd = (uint8_t)p[4];
  h->frg = (uint8_t)p[5];
  h->wnd = get_u16(p + 6);
  h->ts = get_u32(p + 8);
  h->sn = get_u32(p + 12);
  h->una = get_u32(p + 16);
  h->len = get_u32(p + 20);
}

int evlua_kcp_read_conv(const char *data, size_t len, uint32_t *conv) {
  if (data == NULL || len < EVLUA_KCP_OVERHEAD) return EVLUA_KCP_EBADDATA;
  *conv = get_u32(data);
  return 0;
}

/* Life ================================================================ */

static uint32_t acks_limit(const evlua_kcp *k) {
  return max_u32(ACKS_MIN, 2 * k->rcv_wnd);
}

evlua_kcp *evlua_kcp_create(uint32_t conv, void *user, evlua_kcp_output output) {
  evlua_kcp *k = calloc(1, sizeof(*k));
  if (k == NULL) return NULL;
  k->conv = conv;
  k->user = user;
  k->output = output;
  k->mtu = EVLUA_KCP_MTU_DEFAULT;
  k->mss = k->mtu - EVLUA_KCP_OVERHEAD;
  k->interval = INTERVAL_DEFAULT;
  k->ts_flush = INTERVAL_DEFAULT;
  k->dead_link = DEAD_LINK_DEFAULT;
  k->snd_wnd = SNDWND_DEFAULT;
  k->rcv_wnd = RCVWND_DEFAULT;
  k->rmt_wnd = RCVWND_DEFAULT;
  /* ikcp starts at cwnd 0, which only delays the first segment by one
  ** flush; 1 is what it becomes after that flush. */
  k->cwnd = 1;
  k->incr = k->mss;
  k->ssthresh = THRESH_INIT;
  k->rx_rto = RTO_DEFAULT;
  k->rx_minrto = RTO_MIN;
  k->send_limit = EVLUA_KCP_SEND_LIMIT_DEFAULT;
  k->expect_frg = -1;
  if (ring_reserve(&k->snd_buf, k->snd_wnd, 0, 0) < 0 ||
      ring_reserve(&k->rcv_buf, k->rcv_wnd, 0, 0) < 0) {
    evlua_kcp_free(k);
    return NULL;
  }
  return k;
}

void evlua_kcp_free(evlua_kcp *k) {
  if (k == NULL) return;
  fifo_free(&k->snd_queue);
  fifo_free(&k->rcv_queue);
  ring_free(&k->snd_buf);
  ring_free(&k->rcv_buf);
  free(k->acks);
  free(k);
}

uint32_t evlua_kcp_conv(const evlua_kcp *k) { return k->conv; }

/* Options ============================================================= */

int evlua_kcp_set_nodelay(evlua_kcp *k, int nodelay, int interval, int resend,
                          int nc) {
  if (nodelay >= 0) {
    k->nodelay = (uint32_t)nodelay;
    k->rx_minrto = nodelay ? RTO_NODELAY_MIN : RTO_MIN;
  }
  if (interval >= 0) {
    if (interval < INTERVAL_MIN) interval = INTERVAL_MIN;
    if (interval > INTERVAL_MAX) interval = INTERVAL_MAX;
    k->interval = (uint32_t)interval;
  }
  if (resend >= 0) k->fastresend = (uint32_t)resend;
  if (nc >= 0) k->nocwnd = (uint32_t)nc;
  return 0;
}

int evlua_kcp_set_wndsize(evlua_kcp *k, int sndwnd, int rcvwnd) {
  if (sndwnd > EVLUA_KCP_WND_MAX || rcvwnd > EVLUA_KCP_WND_MAX)
    return EVLUA_KCP_EINVAL;
  if (sndwnd > 0) {
    if (ring_reserve(&k->snd_buf, (uint32_t)sndwnd, k->snd_una,
                     k->snd_nxt - k->snd_una) < 0)
      return EVLUA_KCP_ENOMEM;
    k->snd_wnd = (uint32_t)sndwnd;
  }
  if (rcvwnd > 0) {
    /* Out-of-order segments sit anywhere in [rcv_nxt, rcv_nxt + the
    ** capacity]; moving them all covers any window the ring had. */
    if (ring_reserve(&k->rcv_buf, (uint32_t)rcvwnd, k->rcv_nxt,
                     k->rcv_buf.mask + 1) < 0)
      return EVLUA_KCP_ENOMEM;
    k->rcv_wnd = (uint32_t)rcvwnd;
  }
  return 0;
}

int evlua_kcp_set_mtu(evlua_kcp *k, int mtu) {
  if (mtu < EVLUA_KCP_MTU_MIN || mtu > EVLUA_KCP_MTU_MAX) return EVLUA_KCP_EINVAL;
  k->mtu = (uint32_t)mtu;
  k->mss = k->mtu - EVLUA_KCP_OVERHEAD;
  return 0;
}

int evlua_kcp_set_stream(evlua_kcp *k, int on) {
  if (k->snd_bytes > 0 || k->nsnd_que + k->nsnd_buf > 0 ||
      k->nrcv_que + k->nrcv_buf > 0)
    return EVLUA_KCP_EINVAL;
  k->stream = on ? 1 : 0;
  return 0;
}

int evlua_kcp_set_dead_link(evlua_kcp *k, int xmits) {
  if (xmits < 1) return EVLUA_KCP_EINVAL;
  k->dead_link = (uint32_t)xmits;
  return 0;
}

int evlua_kcp_set_send_limit(evlua_kcp *k, size_t bytes) {
  if (bytes < 1) return EVLUA_KCP_EINVAL;
  k->send_limit = bytes;
  return 0;
}

/* Sending ============================================================= */

static int send_admits(const evlua_kcp *k, size_t len) {
  return k->snd_bytes == 0 || k->snd_bytes + len <= k->send_limit;
}

/* Message mode: the fragments, built first and queued only when all
** exist, so a failure queues nothing. */
static int send_message(evlua_kcp *k, const char *data, size_t len) {
  size_t count = len == 0 ? 1 : (len + k->mss - 1) / k->mss;
  if (count > EVLUA_KCP_MAX_FRAGMENTS) return EVLUA_KCP_ETOOBIG;
  seg_fifo built = { NULL, NULL };
  for (size_t i = 0; i < count; i++) {
    size_t off = i * k->mss;
    uint32_t n = (uint32_t)(len - off < k->mss ? len - off : k->mss);
    kcp_seg *s = seg_new(n);
    if (s == NULL) {
      fifo_free(&built);
      return EVLUA_KCP_ENOMEM;
    }
    if (n > 0) memcpy(s->data, data + off, n);
    s->len = n;
    s->frg = (uint8_t)(count - i - 1);
    fifo_push(&built, s);
  }
  kcp_seg *s;
  while ((s = fifo_pop(&built)) != NULL) fifo_push(&k->snd_queue, s);
  k->nsnd_que += (uint32_t)count;
  k->snd_bytes += len;
  return 0;
}

/* Stream mode: top up the last queued segment, then full segments. A
** failure half way keeps what was queued and reports it by the count. */
static int send_stream(evlua_kcp *k, const char *data, size_t len) {
  kcp_seg *last = k->snd_queue.tail;
  size_t done = 0;
  if (last != NULL) {
    uint32_t room = min_u32(last->cap, k->mss);
    if (last->len < room) {
      size_t n = room - last->len;
      if (n > len) n = len;
      memcpy(last->data + last->len, data, n);
      last->len += (uint32_t)n;
      done = n;
    }
  }
  while (done < len) {
    kcp_seg *s = seg_new(k->mss);
    if (s == NULL) {
      k->snd_bytes += done;
      return EVLUA_KCP_ENOMEM;
    }
    size_t n = len - done < k->mss ? len - done : k->mss;
    memcpy(s->data, data + done, n);
    s->len = (uint32_t)n;
    fifo_push(&k->snd_queue, s);
    k->nsnd_que++;
    done += n;
  }
  k->snd_bytes += len;
  return 0;
}

int evlua_kcp_send(evlua_kcp *k, const char *data, size_t len) {
  if (k->dead) return EVLUA_KCP_EDEAD;
  if (data == NULL && len > 0) return EVLUA_KCP_EINVAL;
  if (!send_admits(k, len)) return EVLUA_KCP_EAGAIN;
  if (k->stream) return len == 0 ? 0 : send_stream(k, data, len);
  return send_message(k, data, len);
}

/* Receiving: the queue ================================================ */

/* Message mode: free the partial message at the end of the queue (its
** fragments did not count down). */
static void drop_partial(evlua_kcp *k) {
  kcp_seg *s = k->last_complete ? k->last_complete->next : k->rcv_queue.head;
  while (s != NULL) {
    kcp_seg *next = s->next;
    free(s);
    k->nrcv_que--;
    k->stats.drop_fragments++;
    s = next;
  }
  if (k->last_complete != NULL) k->last_complete->next = NULL;
  else k->rcv_queue.head = NULL;
  k->rcv_queue.tail = k->last_complete;
  k->expect_frg = -1;
}

/* Message mode: append s, keeping the count of whole messages. */
static void queue_fragment(evlua_kcp *k, kcp_seg *s) {
  if (k->expect_frg >= 0 && s->frg != (uint8_t)k->expect_frg) drop_partial(k);
  fifo_push(&k->rcv_queue, s);
  k->nrcv_que++;
  if (s->frg == 0) {
    k->ncomplete++;
    k->last_complete = s;
    k->expect_frg = -1;
  } else {
    k->expect_frg = s->frg - 1;
  }
}

static void queue_received(evlua_kcp *k, kcp_seg *s) {
  if (!k->stream) {
    queue_fragment(k, s);
    return;
  }
  fifo_push(&k->rcv_queue, s);
  k->nrcv_que++;
  k->rcv_bytes += s->len;
}

/* Whether the queue takes another segment: up to rcvwnd, and beyond
** while it holds no whole message (so one of up to 256 fragments can
** always complete). */
static int queue_has_room(const evlua_kcp *k) {
  return k->nrcv_que < k->rcv_wnd || (!k->stream && k->ncomplete == 0);
}

/* Move the in-order run at rcv_nxt from the buffer to the queue. */
static void move_ready(evlua_kcp *k) {
  while (k->nrcv_buf > 0 && queue_has_room(k)) {
    kcp_seg **slot = ring_at(&k->rcv_buf, k->rcv_nxt);
    if (*slot == NULL) break;
    kcp_seg *s = *slot;
    *slot = NULL;
    k->nrcv_buf--;
    k->rcv_nxt++;
    queue_received(k, s);
  }
}

static long message_size(const evlua_kcp *k) {
  if (k->ncomplete == 0) return EVLUA_KCP_EAGAIN;
  long size = 0;
  for (const kcp_seg *s = k->rcv_queue.head; s != NULL; s = s->next) {
    size += s->len;
    if (s->frg == 0) break;
  }
  return size;
}

long evlua_kcp_peeksize(const evlua_kcp *k) {
  if (!k->stream) return message_size(k);
  size_t ready = k->rcv_bytes - k->rcv_head_off;
  return ready == 0 ? EVLUA_KCP_EAGAIN : (long)ready;
}

static void take_head(evlua_kcp *k) {
  kcp_seg *s = fifo_pop(&k->rcv_queue);
  k->nrcv_que--;
  if (k->stream) k->rcv_bytes -= s->len;
  free(s);
}

static long recv_message(evlua_kcp *k, char *buf, size_t cap) {
  long size = message_size(k);
  if (size < 0) return size;
  if ((size_t)size > cap) return EVLUA_KCP_ETOOBIG;
  size_t off = 0;
  int last;
  do {
    kcp_seg *s = k->rcv_queue.head;
    last = s->frg == 0;
    if (s->len > 0) memcpy(buf + off, s->data, s->len);
    off += s->len;
    if (s == k->last_complete) k->last_complete = NULL;
    take_head(k);
  } while (!last);
  k->ncomplete--;
  return size;
}

static long recv_stream(evlua_kcp *k, char *buf, size_t cap) {
  size_t off = 0;
  while (off < cap && k->rcv_queue.head != NULL) {
    kcp_seg *s = k->rcv_queue.head;
    size_t n = s->len - k->rcv_head_off;
    if (n > cap - off) n = cap - off;
    if (n > 0) memcpy(buf + off, s->data + k->rcv_head_off, n);
    off += n;
    k->rcv_head_off += (uint32_t)n;
    if (k->rcv_head_off == s->len) {
      k->rcv_head_off = 0;
      take_head(k);
    }
  }
  return off == 0 && cap > 0 ? EVLUA_KCP_EAGAIN : (long)off;
}

long evlua_kcp_recv(evlua_kcp *k, char *buf, size_t cap) {
  int was_full = k->nrcv_que >= k->rcv_wnd;
  long n = k->stream ? recv_stream(k, buf, cap) : recv_message(k, buf, cap);
  if (n < 0) return n;
  move_ready(k);
  /* The sender stopped at our zero window: tell it at once that there
  ** is room again instead of waiting for its probe. */
  if (was_full && k->nrcv_que < k->rcv_wnd) k->probe |= ASK_TELL;
  return n;
}

/* Receiving: input ==================================================== */

static int known_cmd(uint8_t cmd) {
  return cmd >= EVLUA_KCP_CMD_PUSH && cmd <= EVLUA_KCP_CMD_WINS;
}

/* Walk the headers of a datagram: 0 if every segment is well formed. */
static int check_datagram(evlua_kcp *k, const char *data, size_t len) {
  if (data == NULL || len == 0) {
    k->stats.drop_short++;
    return EVLUA_KCP_EBADDATA;
  }
  size_t off = 0;
  while (off < len) {
    if (len - off < EVLUA_KCP_OVERHEAD) {
      k->stats.drop_short++;
      return EVLUA_KCP_EBADDATA;
    }
    evlua_kcp_header h;
    evlua_kcp_decode_header(data + off, &h);
    if (h.conv != k->conv) {
      k->stats.drop_conv++;
      return EVLUA_KCP_ECONV;
    }
    if (!known_cmd(h.cmd)) {
      k->stats.drop_cmd++;
      return EVLUA_KCP_EBADDATA;
    }
    if (h.len > len - off - EVLUA_KCP_OVERHEAD) {
      k->stats.drop_len++;
      return EVLUA_KCP_EBADDATA;
    }
    off += EVLUA_KCP_OVERHEAD + h.len;
  }
  return 0;
}

/* RFC 6298 style smoothing, as ikcp_update_ack. */
static void update_rtt(evlua_kcp *k, int32_t rtt) {
  /* An echoed ts from long ago (or forged) must not overflow 7 * srtt. */
  if (rtt > RTO_MAX) rtt = RTO_MAX;
  if (k->rx_srtt == 0) {
    k->rx_srtt = rtt;
    k->rx_rttval = rtt / 2;
  } else {
    int32_t delta = rtt > k->rx_srtt ? rtt - k->rx_srtt : k->rx_srtt - rtt;
    k->rx_rttval = (3 * k->rx_rttval + delta) / 4;
    k->rx_srtt = (7 * k->rx_srtt + rtt) / 8;
    if (k->rx_srtt < 1) k->rx_srtt = 1;
  }
  uint32_t rto = (uint32_t)k->rx_srtt +
                 max_u32(k->interval, 4 * (uint32_t)k->rx_rttval);
  k->rx_rto = min_u32(max_u32(rto, k->rx_minrto), RTO_MAX);
}

static void forget_sent(evlua_kcp *k, kcp_seg **slot) {
  k->snd_bytes -= (*slot)->len;
  free(*slot);
  *slot = NULL;
  k->nsnd_buf--;
}

/* snd_una: the oldest unacknowledged sn (snd_nxt when none). */
static void advance_una(evlua_kcp *k) {
  while (k->snd_una != k->snd_nxt && *ring_at(&k->snd_buf, k->snd_una) == NULL)
    k->snd_una++;
}

/* The peer has everything before una. */
static void acked_before(evlua_kcp *k, uint32_t una) {
  if (diff32(una, k->snd_nxt) > 0) una = k->snd_nxt;   /* claims too much */
  while (diff32(una, k->snd_una) > 0) {
    kcp_seg **slot = ring_at(&k->snd_buf, k->snd_una);
    if (*slot != NULL) forget_sent(k, slot);
    k->snd_una++;
  }
  advance_una(k);
}

static void acked_one(evlua_kcp *k, uint32_t sn) {
  if (diff32(sn, k->snd_una) < 0 || diff32(sn, k->snd_nxt) >= 0) return;
  kcp_seg **slot = ring_at(&k->snd_buf, sn);
  if (*slot != NULL && (*slot)->sn == sn) forget_sent(k, slot);
  advance_una(k);
}

/* An ack for sn skips the older segments still in flight that were sent
** no later than the acked one: each gets a vote for fast resend. */
static void count_skips(evlua_kcp *k, uint32_t sn, uint32_t ts) {
  if (diff32(sn, k->snd_una) < 0 || diff32(sn, k->snd_nxt) >= 0) return;
  for (uint32_t i = k->snd_una; diff32(sn, i) > 0; i++) {
    kcp_seg *s = *ring_at(&k->snd_buf, i);
    if (s != NULL && diff32(ts, s->ts) >= 0) s->fastack++;
  }
}

/* Congestion window growth on new acks: slow start below ssthresh,
** then about one segment per window. */
static void grow_cwnd(evlua_kcp *k) {
  uint32_t rmt = min_u32(k->rmt_wnd, k->snd_wnd);
  if (k->cwnd >= rmt) return;
  uint32_t mss = k->mss;
  if (k->cwnd < k->ssthresh) {
    k->cwnd++;
    k->incr += mss;
  } else {
    if (k->incr < mss) k->incr = mss;
    k->incr += (mss * mss) / k->incr + mss / 16;
    if ((k->cwnd + 1) * mss <= k->incr) k->cwnd = (k->incr + mss - 1) / mss;
  }
  if (k->cwnd > rmt) {
    k->cwnd = rmt;
    k->incr = rmt * mss;
  }
}

static void put_segment(evlua_kcp *k, const evlua_kcp_header *h,
                        const char *data);

static void flush_out(evlua_kcp *k) {
  if (k->out_len == 0) return;
  k->stats.datagrams_out++;
  if (k->output != NULL && k->output(k->out, (int)k->out_len, k->user) < 0)
    k->stats.output_errors++;
  k->out_len = 0;
}

/* The free receive window we advertise. A queue holding only the start
** of a message advertises all of it: the reader cannot make room before
** the rest arrives, and a zero window would stop the sender for good. */
static uint16_t wnd_unused(const evlua_kcp *k) {
  uint32_t used = !k->stream && k->ncomplete == 0 ? 0 : k->nrcv_que;
  uint32_t free_wnd = used < k->rcv_wnd ? k->rcv_wnd - used : 0;
  return (uint16_t)min_u32(free_wnd, 0xffff);
}

static void send_acks(evlua_kcp *k) {
  evlua_kcp_header h = { k->conv, EVLUA_KCP_CMD_ACK, 0, wnd_unused(k), 0, 0,
                         k->rcv_nxt, 0 };
  for (uint32_t i = 0; i < k->nacks; i++) {
    h.sn = k->acks[i].sn;
    h.ts = k->acks[i].ts;
    put_segment(k, &h, NULL);
  }
  k->nacks = 0;
}

/* Remember to ack sn; when the list is full, the acks go out now (in one
** or a few datagrams) rather than growing without bound. */
static void queue_ack(evlua_kcp *k, uint32_t sn, uint32_t ts) {
  if (k->nacks == k->acks_cap) {
    uint32_t limit = acks_limit(k);
    if (k->acks_cap < limit) {
      uint32_t cap = k->acks_cap ? min_u32(2 * k->acks_cap, limit) : 16;
      ack_entry *grown = realloc(k->acks, cap * sizeof(ack_entry));
      if (grown != NULL) {
        k->acks = grown;
        k->acks_cap = cap;
      }
    }
    if (k->nacks == k->acks_cap) {
      k->stats.acks_early++;
      send_acks(k);
      flush_out(k);
      if (k->acks_cap == 0) return;   /* out of memory: the peer resends */
    }
  }
  k->acks[k->nacks].sn = sn;
  k->acks[k->nacks].ts = ts;
  k->nacks++;
}

static void receive_push(evlua_kcp *k, const evlua_kcp_header *h,
                         const char *payload) {
  if (diff32(h->sn, k->rcv_nxt + k->rcv_wnd) >= 0) {
    k->stats.drop_window++;
    return;
  }
  queue_ack(k, h->sn, h->ts);
  kcp_seg **slot = ring_at(&k->rcv_buf, h->sn);
  if (diff32(h->sn, k->rcv_nxt) < 0 || *slot != NULL) {
    k->stats.drop_duplicate++;
    return;
  }
  kcp_seg *s = seg_new(h->len);
  if (s == NULL) return;   /* not stored: the peer resends it */
  s->sn = h->sn;
  s->frg = h->frg;
  s->len = h->len;
  if (h->len > 0) memcpy(s->data, payload, h->len);
  *slot = s;
  k->nrcv_buf++;
  move_ready(k);
}

int evlua_kcp_input(evlua_kcp *k, const char *data, size_t len, uint32_t now) {
  k->stats.datagrams_in++;
  int rc = check_datagram(k, data, len);
  if (rc < 0) {
    k->stats.dropped_datagrams++;
    return rc;
  }
  k->current = now;
  uint32_t old_una = k->snd_una;
  int have_maxack = 0;
  uint32_t maxack = 0, maxack_ts = 0;
  for (size_t off = 0; off < len;) {
    evlua_kcp_header h;
    evlua_kcp_decode_header(data + off, &h);
    const char *payload = data + off + EVLUA_KCP_OVERHEAD;
    off += EVLUA_KCP_OVERHEAD + h.len;
    k->stats.segments_in++;
    k->rmt_wnd = h.wnd;
    acked_before(k, h.una);
    switch (h.cmd) {
    case EVLUA_KCP_CMD_ACK:
      if (diff32(now, h.ts) >= 0) update_rtt(k, diff32(now, h.ts));
      acked_one(k, h.sn);
      if (!have_maxack || diff32(h.sn, maxack) > 0) {
        have_maxack = 1;
        maxack = h.sn;
        maxack_ts = h.ts;
      }
      break;
    case EVLUA_KCP_CMD_PUSH:
      receive_push(k, &h, payload);
      break;
    case EVLUA_KCP_CMD_WASK:
      k->probe |= ASK_TELL;
      break;
    default:   /* WINS: the window was taken from the header above */
      break;
    }
  }
  if (have_maxack) count_skips(k, maxack, maxack_ts);
  if (diff32(k->snd_una, old_una) > 0) grow_cwnd(k);
  return 0;
}

/* Flushing ============================================================ */

/* Append one segment to the datagram being built, sending that first
** when the segment would take it past mtu. */
static void put_segment(evlua_kcp *k, const evlua_kcp_header *h,
                        const char *data) {
  uint32_t need = EVLUA_KCP_OVERHEAD + h->len;
  if (k->out_len + need > k->mtu) flush_out(k);
  /* A segment queued under a larger mtu still fits the buffer alone. */
  if (k->out_len + need > sizeof(k->out)) return;
  evlua_kcp_encode_header(k->out + k->out_len, h);
  if (h->len > 0 && data != NULL)
    memcpy(k->out + k->out_len + EVLUA_KCP_OVERHEAD, data, h->len);
  k->out_len += need;
  k->stats.segments_out++;
}

/* While the peer advertises a zero window, probe it with backoff. */
static void schedule_probe(evlua_kcp *k) {
  if (k->rmt_wnd != 0) {
    k->ts_probe = 0;
    k->probe_wait = 0;
    return;
  }
  if (k->probe_wait == 0) {
    k->probe_wait = PROBE_INIT;
    k->ts_probe = k->current + k->probe_wait;
  } else if (diff32(k->current, k->ts_probe) >= 0) {
    if (k->probe_wait < PROBE_INIT) k->probe_wait = PROBE_INIT;
    k->probe_wait += k->probe_wait / 2;
    if (k->probe_wait > PROBE_LIMIT) k->probe_wait = PROBE_LIMIT;
    k->ts_probe = k->current + k->probe_wait;
    k->probe |= ASK_SEND;
  }
}

static void send_probes(evlua_kcp *k) {
  evlua_kcp_header h = { k->conv, 0, 0, wnd_unused(k), 0, 0, k->rcv_nxt, 0 };
  if (k->probe & ASK_SEND) {
    h.cmd = EVLUA_KCP_CMD_WASK;
    put_segment(k, &h, NULL);
  }
  if (k->probe & ASK_TELL) {
    h.cmd = EVLUA_KCP_CMD_WINS;
    put_segment(k, &h, NULL);
  }
  k->probe = 0;
}

/* Give queued segments their sn as far as the windows allow. */
static void admit_queued(evlua_kcp *k) {
  uint32_t wnd = min_u32(k->snd_wnd, k->rmt_wnd);
  if (!k->nocwnd) wnd = min_u32(k->cwnd, wnd);
  while (k->snd_queue.head != NULL && diff32(k->snd_nxt, k->snd_una + wnd) < 0) {
    kcp_seg *s = fifo_pop(&k->snd_queue);
    k->nsnd_que--;
    s->sn = k->snd_nxt++;
    s->xmit = 0;
    s->fastack = 0;
    s->rto = k->rx_rto;
    s->resendts = k->current;
    *ring_at(&k->snd_buf, s->sn) = s;
    k->nsnd_buf++;
  }
}

/* What flush_data saw, for the congestion window. */
typedef struct flush_result {
  int fast;   /* a segment went out by fast resend */
  int lost;   /* a segment went out by timeout */
} flush_result;

/* Whether s goes out in this flush, updating its timers. */
static int due_for_send(evlua_kcp *k, kcp_seg *s, uint32_t resent,
                        flush_result *r) {
  uint32_t now = k->current;
  if (s->xmit == 0) {
    s->xmit = 1;
    s->rto = k->rx_rto;
    s->resendts = now + s->rto + (k->nodelay ? 0 : k->rx_rto >> 3);
    return 1;
  }
  if (diff32(now, s->resendts) >= 0) {
    s->xmit++;
    k->stats.retransmits++;
    if (!k->nodelay) s->rto += max_u32(s->rto, k->rx_rto);
    else s->rto += (k->nodelay < 2 ? s->rto : k->rx_rto) / 2;
    s->resendts = now + s->rto;
    r->lost = 1;
    return 1;
  }
  if (s->fastack >= resent && s->xmit <= FASTACK_LIMIT) {
    s->xmit++;
    s->fastack = 0;
    s->resendts = now + s->rto;
    k->stats.fast_retransmits++;
    r->fast = 1;
    return 1;
  }
  return 0;
}

static void flush_data(evlua_kcp *k, flush_result *r) {
  uint32_t resent = k->fastresend > 0 ? k->fastresend : 0xffffffffu;
  evlua_kcp_header h = { k->conv, EVLUA_KCP_CMD_PUSH, 0, wnd_unused(k), 0, 0,
                         k->rcv_nxt, 0 };
  for (uint32_t sn = k->snd_una; sn != k->snd_nxt; sn++) {
    kcp_seg *s = *ring_at(&k->snd_buf, sn);
    if (s == NULL || !due_for_send(k, s, resent, r)) continue;
    s->ts = k->current;
    h.frg = s->frg;
    h.ts = s->ts;
    h.sn = s->sn;
    h.len = s->len;
    put_segment(k, &h, s->data);
    if (s->xmit >= k->dead_link) k->dead = 1;
  }
}

/* Fast resend halves the window to what is in flight; a timeout starts
** over from one segment. */
static void adjust_cwnd(evlua_kcp *k, const flush_result *r) {
  if (k->nocwnd) return;
  if (r->fast) {
    uint32_t inflight = k->snd_nxt - k->snd_una;
    k->ssthresh = max_u32(inflight / 2, THRESH_MIN);
    k->cwnd = k->ssthresh + k->fastresend;
    k->incr = k->cwnd * k->mss;
  }
  if (r->lost) {
    k->ssthresh = max_u32(k->cwnd / 2, THRESH_MIN);
    k->cwnd = 1;
    k->incr = k->mss;
  }
  if (k->cwnd < 1) {
    k->cwnd = 1;
    k->incr = k->mss;
  }
}

void evlua_kcp_flush(evlua_kcp *k, uint32_t now) {
  k->current = now;
  send_acks(k);
  schedule_probe(k);
  send_probes(k);
  admit_queued(k);
  flush_result r = { 0, 0 };
  flush_data(k, &r);
  flush_out(k);
  adjust_cwnd(k, &r);
}

/* Scheduling ========================================================== */

/* Milliseconds until the first resend is due (0: due now), or -1 when
** nothing is in flight. */
static int32_t until_resend(const evlua_kcp *k, uint32_t now) {
  int32_t first = -1;
  for (uint32_t sn = k->snd_una; sn != k->snd_nxt; sn++) {
    const kcp_seg *s = *ring_at(&k->snd_buf, sn);
    if (s == NULL) continue;
    int32_t until = diff32(s->resendts, now);
    if (until <= 0) return 0;
    if (first < 0 || until < first) first = until;
  }
  return first;
}

void evlua_kcp_update(evlua_kcp *k, uint32_t now) {
  k->current = now;
  if (!k->updated) {
    k->updated = 1;
    k->ts_flush = now;
  }
  int32_t late = diff32(now, k->ts_flush);
  if (late >= CLOCK_JUMP || late < -CLOCK_JUMP) {
    k->ts_flush = now;
    late = 0;
  }
  if (late < 0) {
    /* ikcp waits for the flush clock even when check() reported a resend
    ** due, which makes a caller trusting check() spin until then. */
    if (until_resend(k, now) == 0) evlua_kcp_flush(k, now);
    return;
  }
  k->ts_flush += k->interval;
  if (diff32(now, k->ts_flush) >= 0) k->ts_flush = now + k->interval;
  evlua_kcp_flush(k, now);
}

/* Nothing to send, resend, acknowledge or probe. */
static int idle(const evlua_kcp *k) {
  return k->nacks == 0 && k->probe == 0 && k->snd_queue.head == NULL &&
         k->nsnd_buf == 0 && k->rmt_wnd != 0;
}

uint32_t evlua_kcp_check(const evlua_kcp *k, uint32_t now) {
  if (!k->updated) return now;
  uint32_t ts_flush = k->ts_flush;
  int32_t late = diff32(now, ts_flush);
  if (late >= CLOCK_JUMP || late <= -CLOCK_JUMP) ts_flush = now;
  if (diff32(now, ts_flush) >= 0) return idle(k) ? now + EVLUA_KCP_IDLE_MS : now;
  if (idle(k)) return now + EVLUA_KCP_IDLE_MS;
  uint32_t wait = (uint32_t)diff32(ts_flush, now);
  int32_t resend = until_resend(k, now);
  if (resend >= 0) wait = min_u32(wait, (uint32_t)resend);
  return now + min_u32(wait, k->interval);
}

/* State =============================================================== */

uint32_t evlua_kcp_waitsnd(const evlua_kcp *k) { return k->nsnd_buf + k->nsnd_que; }
size_t evlua_kcp_waitsnd_bytes(const evlua_kcp *k) { return k->snd_bytes; }
int evlua_kcp_dead(const evlua_kcp *k) { return k->dead; }
uint32_t evlua_kcp_srtt(const evlua_kcp *k) { return (uint32_t)k->rx_srtt; }
uint32_t evlua_kcp_rto(const evlua_kcp *k) { return k->rx_rto; }
const evlua_kcp_stats *evlua_kcp_stats_of(const evlua_kcp *k) { return &k->stats; }
