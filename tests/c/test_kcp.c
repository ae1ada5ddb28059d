/*
** test_kcp.c - unit tests for src/core/kcp.c: the segment codec, two
** engines over a simulated lossy link (seeded: drop, duplicate, reorder)
** in message and stream mode, every limit at and past it, malformed
** datagrams, dead_link and the due times check() gives.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kcp.h"

/* A seeded PRNG (xorshift32): every run sees the same losses. */
static uint32_t rng_state;
static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}
static int chance(int percent) { return (int)(rng() % 100) < percent; }

/* The link =========================================================== */

#define LINK_MAX 20000

typedef struct packet {
  uint32_t at;            /* delivery time */
  int len;
  char data[EVLUA_KCP_MTU_MAX];
} packet;

/* One direction: what an engine outputs, delivered later (or never). */
typedef struct link {
  packet *q;
  int n;
  int drop, dup, reorder;  /* percent */
  uint32_t latency;
  uint32_t *now;
  int max_len;             /* the biggest datagram seen */
  int sent;
} link;

static void link_put(link *l, const char *buf, int len) {
  if (l->n == LINK_MAX) return;   /* a full link loses it */
  packet *p = &l->q[l->n++];
  p->at = *l->now + l->latency + (chance(l->reorder) ? rng() % 40 : 0);
  p->len = len;
  memcpy(p->data, buf, (size_t)len);
}

static int link_output(const char *buf, int len, void *user) {
  link *l = user;
  assert_true(len > 0 && len <= EVLUA_KCP_MTU_MAX);
  if (len > l->max_len) l->max_len = len;
  l->sent++;
  if (chance(l->drop)) return 0;
  link_put(l, buf, len);
  if (chance(l->dup)) link_put(l, buf, len);
  return 0;
}

/* Hand the due packets to k (in their order in the queue: a reordered one
** waits for its own time). */
static void link_deliver(link *l, evlua_kcp *k, uint32_t now) {
  int kept = 0;
  for (int i = 0; i < l->n; i++) {
    if ((int32_t)(now - l->q[i].at) >= 0)
      assert_int_equal(evlua_kcp_input(k, l->q[i].data, (size_t)l->q[i].len, now), 0);
    else
      l->q[kept++] = l->q[i];
  }
  l->n = kept;
}

typedef struct pair {
  uint32_t now;
  link ab, ba;
  evlua_kcp *a, *b;
} pair;

static pair *pair_new(uint32_t conv, int drop, int dup, int reorder) {
  pair *p = calloc(1, sizeof(*p));
  link *links[2] = { &p->ab, &p->ba };
  for (int i = 0; i < 2; i++) {
    links[i]->q = malloc(sizeof(packet) * LINK_MAX);
    links[i]->drop = drop;
    links[i]->dup = dup;
    links[i]->reorder = reorder;
    links[i]->latency = 20;
    links[i]->now = &p->now;
  }
  p->a = evlua_kcp_create(conv, &p->ab, link_output);
  p->b = evlua_kcp_create(conv, &p->ba, link_output);
  return p;
}

static void pair_free(pair *p) {
  evlua_kcp_free(p->a);
  evlua_kcp_free(p->b);
  free(p->ab.q);
  free(p->ba.q);
  free(p);
}

/* One millisecond of the world: deliver, then run the engines due. */
static void pair_tick(pair *p) {
  p->now++;
  link_deliver(&p->ab, p->b, p->now);
  link_deliver(&p->ba, p->a, p->now);
  if (evlua_kcp_check(p->a, p->now) == p->now) evlua_kcp_update(p->a, p->now);
  if (evlua_kcp_check(p->b, p->now) == p->now) evlua_kcp_update(p->b, p->now);
}

static void fill(char *buf, size_t len, uint32_t seed) {
  for (size_t i = 0; i < len; i++) buf[i] = (char)((seed * 31 + i * 7) & 0xff);
}

/* The codec =========================================================== */

static void header_codec(void **state) {
  (void)state;
  evlua_kcp_header h = { 0x11223344, 81, 7, 0xabcd, 0x01020304, 0xa0b0c0d0,
                         0xffffffff, 1376 }, d;
  char p[EVLUA_KCP_OVERHEAD];
  evlua_kcp_encode_header(p, &h);
  static const unsigned char want[24] = {
    0x44, 0x33, 0x22, 0x11, 81, 7, 0xcd, 0xab, 4, 3, 2, 1,
    0xd0, 0xc0, 0xb0, 0xa0, 0xff, 0xff, 0xff, 0xff, 0x60, 0x05, 0, 0 };
  assert_memory_equal(p, want, 24);
  evlua_kcp_decode_header(p, &d);
  assert_memory_equal(&h, &d, sizeof(h));
  uint32_t conv = 0;
  assert_int_equal(evlua_kcp_read_conv(p, 24, &conv), 0);
  assert_int_equal(conv, 0x11223344);
  assert_int_equal(evlua_kcp_read_conv(p, 23, &conv), EVLUA_KCP_EBADDATA);
}

/* Captures what one engine sends, for tests that drive it by hand. */
typedef struct capture {
  int n;
  int len[64];
  char data[64][EVLUA_KCP_MTU_MAX];
} capture;

static int capture_output(const char *buf, int len, void *user) {
  capture *c = user;
  if (c->n < 64) {
    c->len[c->n] = len;
    memcpy(c->data[c->n], buf, (size_t)len);
  }
  c->n++;
  return 0;
}

/* Segments (headers) in one captured datagram, and their commands. */
static int segments_of(const char *d, int len, evlua_kcp_header *out, int max) {
  int n = 0;
  for (int off = 0; off < len && n < max; n++) {
    evlua_kcp_decode_header(d + off, &out[n]);
    off += EVLUA_KCP_OVERHEAD + (int)out[n].len;
  }
  return n;
}

static int push(char *d, uint32_t conv, uint32_t sn, uint8_t frg,
                const char *data, uint32_t len) {
  evlua_kcp_header h = { conv, EVLUA_KCP_CMD_PUSH, frg, 128, 0, sn, 0, len };
  evlua_kcp_encode_header(d, &h);
  if (len) memcpy(d + EVLUA_KCP_OVERHEAD, data, len);
  return EVLUA_KCP_OVERHEAD + (int)len;
}

/* Options and their limits ============================================ */

static void option_limits(void **state) {
  (void)state;
  evlua_kcp *k = evlua_kcp_create(1, NULL, NULL);
  assert_int_equal(evlua_kcp_set_mtu(k, 1500), 0);
  assert_int_equal(evlua_kcp_set_mtu(k, 1501), EVLUA_KCP_EINVAL);
  assert_int_equal(evlua_kcp_set_mtu(k, 25), 0);
  assert_int_equal(evlua_kcp_set_mtu(k, 24), EVLUA_KCP_EINVAL);
  assert_int_equal(evlua_kcp_set_mtu(k, -1), EVLUA_KCP_EINVAL);
  assert_int_equal(evlua_kcp_set_wndsize(k, EVLUA_KCP_WND_MAX, EVLUA_KCP_WND_MAX), 0);
  assert_int_equal(evlua_kcp_set_wndsize(k, EVLUA_KCP_WND_MAX + 1, 0), EVLUA_KCP_EINVAL);
  assert_int_equal(evlua_kcp_set_wndsize(k, 0, EVLUA_KCP_WND_MAX + 1), EVLUA_KCP_EINVAL);
  assert_int_equal(evlua_kcp_set_wndsize(k, 1, 1), 0);
  assert_int_equal(evlua_kcp_set_dead_link(k, 0), EVLUA_KCP_EINVAL);
  assert_int_equal(evlua_kcp_set_dead_link(k, 1), 0);
  assert_int_equal(evlua_kcp_set_send_limit(k, 0), EVLUA_KCP_EINVAL);
  assert_int_equal(evlua_kcp_rto(k), 200);
  assert_int_equal(evlua_kcp_conv(k), 1);
  assert_int_equal(evlua_kcp_send(k, NULL, 1), EVLUA_KCP_EINVAL);
  /* stream mode switches only while nothing is queued */
  assert_int_equal(evlua_kcp_send(k, "x", 1), 0);
  assert_int_equal(evlua_kcp_set_stream(k, 1), EVLUA_KCP_EINVAL);
  evlua_kcp_free(k);
  k = evlua_kcp_create(1, NULL, NULL);
  assert_int_equal(evlua_kcp_set_stream(k, 1), 0);
  evlua_kcp_free(k);
}

/* interval is clamped to 10..5000: the due time after a send shows it. */
static void interval_clamp(void **state) {
  (void)state;
  evlua_kcp *k = evlua_kcp_create(1, NULL, NULL);
  assert_int_equal(evlua_kcp_check(k, 0), 0);      /* never updated: now */
  evlua_kcp_update(k, 1000);
  assert_int_equal(evlua_kcp_check(k, 1000), 1000 + EVLUA_KCP_IDLE_MS);
  assert_int_equal(evlua_kcp_send(k, "a", 1), 0);
  assert_int_equal(evlua_kcp_check(k, 1000), 1100);   /* default 100 */
  evlua_kcp_set_nodelay(k, -1, 1, -1, -1);
  evlua_kcp_update(k, 1100);
  assert_int_equal(evlua_kcp_check(k, 1100), 1110);
  evlua_kcp_set_nodelay(k, -1, 99999, -1, -1);
  evlua_kcp_update(k, 1110);
  uint32_t due = evlua_kcp_check(k, 1110);
  /* bounded by the interval and by the segment's resend time */
  assert_true(due > 1110 && due <= 1110 + 5000);
  evlua_kcp_free(k);
}

/* Lossy delivery ====================================================== */

#define MESSAGES 300

/* Both directions at once, every message whole and in order. */
static void run_messages(int drop, int dup, int reorder, uint32_t seed,
                         size_t max_size) {
  rng_state = seed;
  pair *p = pair_new(0x1234, drop, dup, reorder);
  evlua_kcp *side[2] = { p->a, p->b };
  int sent[2] = { 0, 0 }, got[2] = { 0, 0 };
  static char buf[300000], want[300000];
  size_t sizes[MESSAGES];
  for (int i = 0; i < MESSAGES; i++) sizes[i] = rng() % (max_size + 1);
  for (int i = 0; i < 2; i++) {
    evlua_kcp_set_nodelay(side[i], 1, 10, 2, 1);
    evlua_kcp_set_wndsize(side[i], 64, 128);
    evlua_kcp_set_dead_link(side[i], 1000);
  }
  while ((got[0] < MESSAGES || got[1] < MESSAGES) && p->now < 600000) {
    for (int i = 0; i < 2; i++) {
      while (sent[i] < MESSAGES) {
        fill(buf, sizes[sent[i]], (uint32_t)(sent[i] * 2 + i));
        if (evlua_kcp_send(side[i], buf, sizes[sent[i]]) != 0) break;
        sent[i]++;
      }
      long n;
      while ((n = evlua_kcp_recv(side[i], buf, sizeof(buf))) >= 0) {
        int from = 1 - i;
        assert_int_equal((size_t)n, sizes[got[i]]);
        fill(want, (size_t)n, (uint32_t)(got[i] * 2 + from));
        assert_memory_equal(buf, want, (size_t)n);
        got[i]++;
      }
    }
    pair_tick(p);
  }
  assert_int_equal(got[0], MESSAGES);
  assert_int_equal(got[1], MESSAGES);
  for (int i = 0; i < 3000; i++) pair_tick(p);   /* the last acks */
  assert_true(p->ab.max_len <= 1400 && p->ba.max_len <= 1400);
  if (drop > 0) assert_true(evlua_kcp_stats_of(p->a)->retransmits +
                            evlua_kcp_stats_of(p->a)->fast_retransmits > 0);
  if (dup > 0) assert_true(evlua_kcp_stats_of(p->b)->drop_duplicate > 0);
  assert_int_equal(evlua_kcp_waitsnd(p->a), 0);
  assert_false(evlua_kcp_dead(p->a));
  pair_free(p);
}

static void messages_clean_link(void **state) {
  (void)state;
  run_messages(0, 0, 0, 1, 3000);
}

static void messages_lossy_link(void **state) {
  (void)state;
  run_messages(10, 2, 10, 42, 5000);
}

static void messages_very_lossy_link(void **state) {
  (void)state;
  run_messages(30, 5, 30, 7, 2000);
}

/* Stream mode: bytes in order, in whatever pieces recv returns. */
static void stream_lossy_link(void **state) {
  (void)state;
  enum { TOTAL = 300000 };
  rng_state = 99;
  pair *p = pair_new(77, 10, 2, 10);
  evlua_kcp *side[2] = { p->a, p->b };
  size_t sent[2] = { 0, 0 }, got[2] = { 0, 0 };
  static char data[2][TOTAL], buf[5000];
  for (int i = 0; i < 2; i++) {
    for (size_t j = 0; j < TOTAL; j++) data[i][j] = (char)(rng() & 0xff);
    assert_int_equal(evlua_kcp_set_stream(side[i], 1), 0);
    evlua_kcp_set_nodelay(side[i], 1, 10, 2, 0);   /* congestion control on */
    evlua_kcp_set_dead_link(side[i], 1000);
    evlua_kcp_set_send_limit(side[i], 20000);
  }
  while ((got[0] < TOTAL || got[1] < TOTAL) && p->now < 600000) {
    for (int i = 0; i < 2; i++) {
      while (sent[i] < TOTAL) {
        size_t n = 1 + rng() % 3000;
        if (n > TOTAL - sent[i]) n = TOTAL - sent[i];
        if (evlua_kcp_send(side[i], data[i] + sent[i], n) != 0) break;
        sent[i] += n;
      }
      long n;
      while ((n = evlua_kcp_recv(side[i], buf, 1 + rng() % sizeof(buf))) > 0) {
        assert_memory_equal(buf, data[1 - i] + got[i], (size_t)n);
        got[i] += (size_t)n;
      }
      assert_true(evlua_kcp_waitsnd_bytes(side[i]) <= 20000 + 3000);
    }
    pair_tick(p);
  }
  assert_int_equal(got[0], TOTAL);
  assert_int_equal(got[1], TOTAL);
  /* stream segments fill the mtu */
  assert_true(p->ab.max_len == 1400);
  pair_free(p);
}

/* Growing both windows while segments are in flight and out of order
** moves them to the larger rings without losing one. */
static void windows_grow_mid_transfer(void **state) {
  (void)state;
  rng_state = 21;
  pair *p = pair_new(3, 20, 2, 20);
  evlua_kcp_set_nodelay(p->a, 1, 10, 2, 1);
  evlua_kcp_set_nodelay(p->b, 1, 10, 2, 1);
  evlua_kcp_set_wndsize(p->a, 16, 16);
  evlua_kcp_set_wndsize(p->b, 16, 16);
  evlua_kcp_set_dead_link(p->a, 1000);
  enum { N = 400 };
  char buf[64], want[64];
  int sent = 0, got = 0;
  while (got < N && p->now < 600000) {
    while (sent < N) {
      fill(buf, 40, (uint32_t)sent);
      if (evlua_kcp_send(p->a, buf, 40) != 0) break;
      sent++;
    }
    while (evlua_kcp_recv(p->b, buf, sizeof(buf)) == 40) {
      fill(want, 40, (uint32_t)got);
      assert_memory_equal(buf, want, 40);
      got++;
    }
    if (p->now == 300) {
      assert_int_equal(evlua_kcp_set_wndsize(p->a, 1024, 1024), 0);
      assert_int_equal(evlua_kcp_set_wndsize(p->b, 1024, 1024), 0);
    }
    pair_tick(p);
  }
  assert_int_equal(got, N);
  pair_free(p);
}

/* Fragmentation ======================================================= */

static void fragments_at_mtu(void **state) {
  (void)state;
  capture *c = calloc(1, sizeof(*c));
  evlua_kcp *k = evlua_kcp_create(5, c, capture_output);
  static char buf[EVLUA_KCP_MAX_FRAGMENTS * 1376 + 1];
  evlua_kcp_set_nodelay(k, 0, 10, 0, 1);
  /* mss bytes: one segment filling one mtu datagram */
  assert_int_equal(evlua_kcp_send(k, buf, 1376), 0);
  assert_int_equal(evlua_kcp_waitsnd(k), 1);
  evlua_kcp_update(k, 0);
  assert_int_equal(c->n, 1);
  assert_int_equal(c->len[0], 1400);
  evlua_kcp_header h[4];
  assert_int_equal(segments_of(c->data[0], c->len[0], h, 4), 1);
  assert_int_equal(h[0].frg, 0);
  evlua_kcp_free(k);
  /* mss + 1: two fragments, frg 1 then 0 */
  memset(c, 0, sizeof(*c));
  k = evlua_kcp_create(5, c, capture_output);
  evlua_kcp_set_nodelay(k, 0, 10, 0, 1);
  assert_int_equal(evlua_kcp_send(k, buf, 1377), 0);
  assert_int_equal(evlua_kcp_waitsnd(k), 2);
  evlua_kcp_update(k, 0);
  assert_int_equal(c->n, 2);
  segments_of(c->data[0], c->len[0], h, 4);
  segments_of(c->data[1], c->len[1], h + 1, 3);
  assert_int_equal(h[0].frg, 1);
  assert_int_equal(h[0].len, 1376);
  assert_int_equal(h[1].frg, 0);
  assert_int_equal(h[1].len, 1);
  /* the most fragments a message may have, and one byte more */
  evlua_kcp_set_send_limit(k, sizeof(buf) * 4);
  assert_int_equal(evlua_kcp_send(k, buf, 255 * 1376 + 1), EVLUA_KCP_ETOOBIG);
  assert_int_equal(evlua_kcp_send(k, buf, 255 * 1376), 0);
  assert_int_equal(evlua_kcp_waitsnd(k), 2 + 255);
  /* an empty message is one empty segment */
  assert_int_equal(evlua_kcp_send(k, buf, 0), 0);
  assert_int_equal(evlua_kcp_waitsnd(k), 2 + 255 + 1);
  evlua_kcp_free(k);
  free(c);
}

/* Small segments share a datagram up to mtu. */
static void segments_pack_to_mtu(void **state) {
  (void)state;
  capture *c = calloc(1, sizeof(*c));
  evlua_kcp *k = evlua_kcp_create(5, c, capture_output);
  evlua_kcp_set_nodelay(k, 0, 10, 0, 1);
  evlua_kcp_set_wndsize(k, 128, 128);
  char msg[76] = { 0 };       /* 100 bytes with the header */
  for (int i = 0; i < 30; i++) assert_int_equal(evlua_kcp_send(k, msg, 76), 0);
  evlua_kcp_update(k, 0);
  assert_int_equal(c->n, 3);  /* 14 + 14 + 2 segments */
  assert_int_equal(c->len[0], 1400);
  assert_int_equal(c->len[2], 200);
  evlua_kcp_free(k);
  free(c);
}

/* A message of more fragments than the receive window still arrives. */
static void message_bigger_than_rcvwnd(void **state) {
  (void)state;
  rng_state = 3;
  pair *p = pair_new(9, 0, 0, 0);
  evlua_kcp_set_wndsize(p->b, 32, 4);
  static char msg[20 * 1376], buf[20 * 1376];
  fill(msg, sizeof(msg), 5);
  assert_int_equal(evlua_kcp_send(p->a, msg, sizeof(msg)), 0);
  long n = EVLUA_KCP_EAGAIN;
  while (n < 0 && p->now < 60000) {
    pair_tick(p);
    n = evlua_kcp_recv(p->b, buf, sizeof(buf));
  }
  assert_int_equal(n, sizeof(msg));
  assert_memory_equal(buf, msg, sizeof(msg));
  pair_free(p);
}

static void recv_buffer_too_small(void **state) {
  (void)state;
  evlua_kcp *k = evlua_kcp_create(5, NULL, NULL);
  char d[100], buf[10];
  int len = push(d, 5, 0, 0, "hello world", 11);
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len, 0), 0);
  assert_int_equal(evlua_kcp_peeksize(k), 11);
  assert_int_equal(evlua_kcp_recv(k, buf, 10), EVLUA_KCP_ETOOBIG);
  assert_int_equal(evlua_kcp_peeksize(k), 11);   /* still there */
  evlua_kcp_free(k);
}

/* Limits ============================================================== */

static void send_queue_limit(void **state) {
  (void)state;
  evlua_kcp *k = evlua_kcp_create(5, NULL, NULL);
  static char buf[5000];
  assert_int_equal(evlua_kcp_set_send_limit(k, 1000), 0);
  /* with nothing waiting, one message over the limit is taken */
  assert_int_equal(evlua_kcp_send(k, buf, 5000), 0);
  assert_int_equal(evlua_kcp_send(k, buf, 1), EVLUA_KCP_EAGAIN);
  evlua_kcp_free(k);
  k = evlua_kcp_create(5, NULL, NULL);
  evlua_kcp_set_send_limit(k, 1000);
  assert_int_equal(evlua_kcp_send(k, buf, 600), 0);
  assert_int_equal(evlua_kcp_send(k, buf, 401), EVLUA_KCP_EAGAIN);
  assert_int_equal(evlua_kcp_send(k, buf, 400), 0);    /* exactly at it */
  assert_int_equal(evlua_kcp_waitsnd_bytes(k), 1000);
  assert_int_equal(evlua_kcp_send(k, buf, 1), EVLUA_KCP_EAGAIN);
  assert_int_equal(evlua_kcp_waitsnd(k), 2);
  evlua_kcp_free(k);
}

/* The sender never has more than sndwnd in flight, whatever the peer
** advertises; at a zero window it sends nothing new, then probes. */
static void send_window_limits(void **state) {
  (void)state;
  capture *c = calloc(1, sizeof(*c));
  evlua_kcp *k = evlua_kcp_create(5, c, capture_output);
  evlua_kcp_set_nodelay(k, 1, 10, 0, 1);
  evlua_kcp_set_wndsize(k, 8, 128);
  char d[100];
  evlua_kcp_header h = { 5, EVLUA_KCP_CMD_WINS, 0, 65535, 0, 0, 0, 0 };
  evlua_kcp_encode_header(d, &h);
  assert_int_equal(evlua_kcp_input(k, d, 24, 0), 0);
  for (int i = 0; i < 20; i++) assert_int_equal(evlua_kcp_send(k, "m", 1), 0);
  evlua_kcp_update(k, 0);
  evlua_kcp_header segs[64];
  assert_int_equal(c->n, 1);
  assert_int_equal(segments_of(c->data[0], c->len[0], segs, 64), 8);
  assert_int_equal(evlua_kcp_waitsnd(k), 20);
  /* the peer acks all 8 with a zero window */
  h.cmd = EVLUA_KCP_CMD_WINS;
  h.wnd = 0;
  h.una = 8;
  evlua_kcp_encode_header(d, &h);
  assert_int_equal(evlua_kcp_input(k, d, 24, 5), 0);
  assert_int_equal(evlua_kcp_waitsnd(k), 12);
  c->n = 0;
  for (uint32_t t = 10; t < 7000; t += 10) evlua_kcp_update(k, t);
  assert_int_equal(c->n, 0);                     /* nothing new sent */
  for (uint32_t t = 7000; t < 7100; t += 10) evlua_kcp_update(k, t);
  assert_int_equal(c->n, 1);                     /* the window probe */
  assert_int_equal(segments_of(c->data[0], c->len[0], segs, 64), 1);
  assert_int_equal(segs[0].cmd, EVLUA_KCP_CMD_WASK);
  evlua_kcp_free(k);
  free(c);
}

/* A probe is answered with the window (84) at the next flush. */
static void probe_answered(void **state) {
  (void)state;
  capture *c = calloc(1, sizeof(*c));
  evlua_kcp *k = evlua_kcp_create(5, c, capture_output);
  char d[24];
  evlua_kcp_header h = { 5, EVLUA_KCP_CMD_WASK, 0, 32, 0, 0, 0, 0 }, segs[4];
  evlua_kcp_encode_header(d, &h);
  assert_int_equal(evlua_kcp_input(k, d, 24, 0), 0);
  assert_int_not_equal(evlua_kcp_check(k, 0) , EVLUA_KCP_IDLE_MS);
  evlua_kcp_flush(k, 0);
  assert_int_equal(c->n, 1);
  assert_int_equal(segments_of(c->data[0], c->len[0], segs, 4), 1);
  assert_int_equal(segs[0].cmd, EVLUA_KCP_CMD_WINS);
  assert_int_equal(segs[0].wnd, 128);
  evlua_kcp_free(k);
  free(c);
}

/* The receiver takes pushes only inside [rcv_nxt, rcv_nxt + rcvwnd),
** acks duplicates again, and stores each sn once. */
static void receive_window_limits(void **state) {
  (void)state;
  capture *c = calloc(1, sizeof(*c));
  evlua_kcp *k = evlua_kcp_create(5, c, capture_output);
  evlua_kcp_set_wndsize(k, 32, 16);
  char d[100];
  int len = push(d, 5, 16, 0, "x", 1);              /* first sn past it */
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len, 0), 0);
  assert_int_equal(evlua_kcp_stats_of(k)->drop_window, 1);
  len = push(d, 5, 15, 0, "x", 1);                  /* the last inside */
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len, 0), 0);
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len, 0), 0);
  assert_int_equal(evlua_kcp_stats_of(k)->drop_duplicate, 1);
  assert_int_equal(evlua_kcp_peeksize(k), EVLUA_KCP_EAGAIN);   /* sn 0 missing */
  len = push(d, 5, 0xfffffff0u, 0, "x", 1);         /* long ago */
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len, 0), 0);
  assert_int_equal(evlua_kcp_stats_of(k)->drop_duplicate, 2);
  /* acks for the 3 in the window, none for the one past it */
  evlua_kcp_flush(k, 1);
  evlua_kcp_header segs[8];
  assert_int_equal(segments_of(c->data[0], c->len[0], segs, 8), 3);
  assert_int_equal(segs[0].cmd, EVLUA_KCP_CMD_ACK);
  assert_int_equal(segs[0].sn, 15);
  assert_int_equal(segs[0].wnd, 16);
  evlua_kcp_free(k);
  free(c);
}

/* A full receive queue advertises 0; reading it says so (84) at once. */
static void zero_window_reopens(void **state) {
  (void)state;
  rng_state = 11;
  pair *p = pair_new(9, 0, 0, 0);
  evlua_kcp_set_wndsize(p->b, 32, 4);
  evlua_kcp_set_nodelay(p->a, 1, 10, 0, 1);
  evlua_kcp_set_nodelay(p->b, 1, 10, 0, 1);
  for (int i = 0; i < 12; i++) assert_int_equal(evlua_kcp_send(p->a, "abc", 3), 0);
  for (int i = 0; i < 500; i++) pair_tick(p);
  /* 4 in the queue, 4 more in the receive buffer: 4 wait */
  assert_int_equal(evlua_kcp_waitsnd(p->a), 4);
  char buf[8];
  int got = 0;
  while (got < 12 && p->now < 5000) {
    if (evlua_kcp_recv(p->b, buf, sizeof(buf)) == 3) got++;
    pair_tick(p);
  }
  assert_int_equal(got, 12);
  assert_true(p->now < 2000);   /* well before the 7 s probe */
  pair_free(p);
}

/* Malformed input ===================================================== */

static void malformed_datagrams(void **state) {
  (void)state;
  capture *c = calloc(1, sizeof(*c));
  evlua_kcp *k = evlua_kcp_create(5, c, capture_output);
  char d[200];
  const evlua_kcp_stats *st = evlua_kcp_stats_of(k);
  int len = push(d, 5, 0, 0, "hello", 5);
  /* short: under a header, and a good segment with trailing bytes */
  assert_int_equal(evlua_kcp_input(k, d, 23, 0), EVLUA_KCP_EBADDATA);
  assert_int_equal(evlua_kcp_input(k, d, 0, 0), EVLUA_KCP_EBADDATA);
  assert_int_equal(evlua_kcp_input(k, NULL, 50, 0), EVLUA_KCP_EBADDATA);
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len + 3, 0), EVLUA_KCP_EBADDATA);
  assert_int_equal(st->drop_short, 4);
  /* len beyond the datagram */
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len - 1, 0), EVLUA_KCP_EBADDATA);
  assert_int_equal(st->drop_len, 1);
  /* another conv, in the second segment: the first is not used either */
  int len2 = push(d + len, 6, 1, 0, "x", 1);
  assert_int_equal(evlua_kcp_input(k, d, (size_t)(len + len2), 0), EVLUA_KCP_ECONV);
  assert_int_equal(st->drop_conv, 1);
  /* unknown commands */
  for (int cmd = 0; cmd < 256; cmd++) {
    if (cmd >= 81 && cmd <= 84) continue;
    char bad[24];
    evlua_kcp_header h = { 5, (uint8_t)cmd, 0, 32, 0, 0, 0, 0 };
    evlua_kcp_encode_header(bad, &h);
    assert_int_equal(evlua_kcp_input(k, bad, 24, 0), EVLUA_KCP_EBADDATA);
  }
  assert_int_equal(st->drop_cmd, 252);
  assert_int_equal(st->dropped_datagrams, 4 + 1 + 1 + 252);
  /* none of them changed anything: no data, nothing to ack */
  assert_int_equal(evlua_kcp_peeksize(k), EVLUA_KCP_EAGAIN);
  evlua_kcp_flush(k, 1);
  assert_int_equal(c->n, 0);
  assert_int_equal(st->segments_in, 0);
  /* the good one still works */
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len, 0), 0);
  assert_int_equal(evlua_kcp_peeksize(k), 5);
  evlua_kcp_free(k);
  free(c);
}

/* Fragments that do not count down are dropped; what follows arrives. */
static void inconsistent_fragments(void **state) {
  (void)state;
  evlua_kcp *k = evlua_kcp_create(5, NULL, NULL);
  char d[200], buf[100];
  int len = push(d, 5, 0, 2, "ab", 2);              /* frg 2: expects 1, 0 */
  len += push(d + len, 5, 1, 0, "cd", 2);           /* but 0 comes */
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len, 0), 0);
  assert_int_equal(evlua_kcp_stats_of(k)->drop_fragments, 1);
  assert_int_equal(evlua_kcp_recv(k, buf, sizeof(buf)), 2);
  assert_memory_equal(buf, "cd", 2);
  /* a fragment that never completes holds nothing back but itself */
  len = push(d, 5, 2, 1, "ef", 2);
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len, 0), 0);
  assert_int_equal(evlua_kcp_recv(k, buf, sizeof(buf)), EVLUA_KCP_EAGAIN);
  len = push(d, 5, 3, 0, "gh", 2);
  assert_int_equal(evlua_kcp_input(k, d, (size_t)len, 0), 0);
  assert_int_equal(evlua_kcp_recv(k, buf, sizeof(buf)), 4);
  assert_memory_equal(buf, "efgh", 4);
  evlua_kcp_free(k);
}

/* A flood of pushes between flushes: the ack list stays bounded and the
** acks leave early instead. */
static void ack_list_bounded(void **state) {
  (void)state;
  capture *c = calloc(1, sizeof(*c));
  evlua_kcp *k = evlua_kcp_create(5, c, capture_output);
  char d[1400];
  int len = 0;
  for (int i = 0; i < 50; i++) len += push(d + len, 5, 0, 0, NULL, 0);
  for (int i = 0; i < 20; i++)
    assert_int_equal(evlua_kcp_input(k, d, (size_t)len, 0), 0);
  /* 1000 acks asked for, at most 256 kept */
  assert_true(evlua_kcp_stats_of(k)->acks_early >= 3);
  assert_true(c->n >= 3);
  evlua_kcp_free(k);
  free(c);
}

/* Dead link and due times ============================================= */

static void dead_link_reached(void **state) {
  (void)state;
  capture *c = calloc(1, sizeof(*c));
  evlua_kcp *k = evlua_kcp_create(5, c, capture_output);
  evlua_kcp_set_dead_link(k, 5);
  assert_int_equal(evlua_kcp_send(k, "hello", 5), 0);
  uint32_t now = 0;
  evlua_kcp_update(k, now);
  for (int i = 0; !evlua_kcp_dead(k) && i < 100000; i++) {
    now = evlua_kcp_check(k, now);
    evlua_kcp_update(k, now);
  }
  assert_true(evlua_kcp_dead(k));
  assert_int_equal(evlua_kcp_stats_of(k)->retransmits, 4);  /* 5 sends */
  assert_int_equal(evlua_kcp_send(k, "x", 1), EVLUA_KCP_EDEAD);
  /* the timeouts backed off: 200 ms doubling, not 5 x 100 */
  assert_true(now > 3000);
  evlua_kcp_free(k);
  free(c);
}

static void due_times(void **state) {
  (void)state;
  capture *c = calloc(1, sizeof(*c));
  evlua_kcp *k = evlua_kcp_create(5, c, capture_output);
  evlua_kcp_update(k, 50);
  assert_int_equal(evlua_kcp_check(k, 50), 50 + EVLUA_KCP_IDLE_MS);
  assert_int_equal(evlua_kcp_send(k, "a", 1), 0);
  assert_int_equal(evlua_kcp_check(k, 60), 150);      /* next flush */
  assert_int_equal(evlua_kcp_check(k, 150), 150);     /* due */
  evlua_kcp_update(k, 150);
  assert_int_equal(c->n, 1);
  /* in flight: the resend time (200 + 200/8 after sending) or the next
  ** flush, whichever first, never later than one interval */
  uint32_t due = evlua_kcp_check(k, 151);
  assert_true(due > 151 && due <= 250);
  /* a clock far ahead: due now */
  assert_int_equal(evlua_kcp_check(k, 150 + 20000), 150 + 20000);
  /* once acked, idle again */
  char d[24];
  evlua_kcp_header h = { 5, EVLUA_KCP_CMD_ACK, 0, 128, 150, 0, 1, 0 };
  evlua_kcp_encode_header(d, &h);
  assert_int_equal(evlua_kcp_input(k, d, 24, 170), 0);
  assert_int_equal(evlua_kcp_waitsnd(k), 0);
  assert_int_equal(evlua_kcp_srtt(k), 20);
  assert_int_equal(evlua_kcp_check(k, 170), 170 + EVLUA_KCP_IDLE_MS);
  /* the wrapping clock: a session whose time crosses 2^32 */
  evlua_kcp_update(k, 0xfffffff0u);
  assert_int_equal(evlua_kcp_send(k, "b", 1), 0);
  assert_int_equal(evlua_kcp_check(k, 0xfffffff0u), 0xfffffff0u + 100);
  evlua_kcp_free(k);
  free(c);
}

/* minrto: 100 without nodelay, 30 with: a 1 ms RTT gives these RTOs. */
static void rto_floor(void **state) {
  (void)state;
  for (int nodelay = 0; nodelay <= 1; nodelay++) {
    evlua_kcp *k = evlua_kcp_create(5, NULL, NULL);
    evlua_kcp_set_nodelay(k, nodelay, 10, 0, 0);
    char d[24];
    evlua_kcp_header h = { 5, EVLUA_KCP_CMD_ACK, 0, 128, 100, 0, 0, 0 };
    evlua_kcp_encode_header(d, &h);
    for (int i = 0; i < 20; i++) evlua_kcp_input(k, d, 24, 101);
    assert_int_equal(evlua_kcp_rto(k), nodelay ? 30 : 100);
    /* an echoed ts from ages ago: capped, no overflow */
    h.ts = 101 - 0x7fffffff;
    evlua_kcp_encode_header(d, &h);
    evlua_kcp_input(k, d, 24, 101);
    assert_true(evlua_kcp_rto(k) <= 60000);
    evlua_kcp_free(k);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(header_codec),
    cmocka_unit_test(option_limits),
    cmocka_unit_test(interval_clamp),
    cmocka_unit_test(messages_clean_link),
    cmocka_unit_test(messages_lossy_link),
    cmocka_unit_test(messages_very_lossy_link),
    cmocka_unit_test(stream_lossy_link),
    cmocka_unit_test(windows_grow_mid_transfer),
    cmocka_unit_test(fragments_at_mtu),
    cmocka_unit_test(segments_pack_to_mtu),
    cmocka_unit_test(message_bigger_than_rcvwnd),
    cmocka_unit_test(recv_buffer_too_small),
    cmocka_unit_test(send_queue_limit),
    cmocka_unit_test(send_window_limits),
    cmocka_unit_test(probe_answered),
    cmocka_unit_test(receive_window_limits),
    cmocka_unit_test(zero_window_reopens),
    cmocka_unit_test(malformed_datagrams),
    cmocka_unit_test(inconsistent_fragments),
    cmocka_unit_test(ack_list_bounded),
    cmocka_unit_test(dead_link_reached),
    cmocka_unit_test(due_times),
    cmocka_unit_test(rto_floor),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
