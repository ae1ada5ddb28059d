/*
** kcp_c_echo.c - src/core/kcp.c over a real UDP socket with poll(), to
** check that our engine talks to kcp-go (tests/peers/kcp_peer.go) both
** ways. Not part of the runtime.
**   kcp_c_echo server [opts]          prints its port, echoes one session
**                                     (the conv of its first datagram)
**   kcp_c_echo client HOST PORT messages N [opts]   sizes 1,100,1000,1376
**   kcp_c_echo client HOST PORT bulk BYTES [opts]   stream of BYTES, CRC
** opts: --stream, --fast (nodelay 1, interval 10, resend 2, nc 1),
**       --wnd N (both windows), --timeout SECONDS (default 60),
**       --quiet MS (server: exit after MS without input, default 10000)
** Build: cc -O2 -Isrc/core -o build/peers/kcp_c_echo \
**          tests/peers/kcp_c_echo.c src/core/kcp.c
*/
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kcp.h"

static int sock = -1;
static struct sockaddr_in peer;
static int have_peer;
static int opt_stream, opt_fast, opt_wnd = 0;
static double opt_timeout = 60;
static uint32_t quiet_ms = 10000;   /* the server's end: a quiet session */

static uint32_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint32_t)((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
}

static int udp_output(const char *buf, int len, void *user) {
  (void)user;
  if (!have_peer) return -1;
  return (int)sendto(sock, buf, (size_t)len, 0, (struct sockaddr *)&peer,
                     sizeof(peer));
}

static evlua_kcp *new_engine(uint32_t conv) {
  evlua_kcp *k = evlua_kcp_create(conv, NULL, udp_output);
  if (opt_stream) evlua_kcp_set_stream(k, 1);
  if (opt_fast) evlua_kcp_set_nodelay(k, 1, 10, 2, 1);
  if (opt_wnd > 0) evlua_kcp_set_wndsize(k, opt_wnd, opt_wnd);
  evlua_kcp_set_send_limit(k, 4 << 20);
  return k;
}

/* Wait for the socket until k is due (at most 100 ms when k is NULL),
** feed what arrived, then run the timers. */
static void pump(evlua_kcp **k) {
  uint32_t now = now_ms();
  int wait = 100;
  if (*k != NULL) wait = (int)(evlua_kcp_check(*k, now) - now);
  if (wait > 100) wait = 100;
  struct pollfd p = { sock, POLLIN, 0 };
  poll(&p, 1, wait);
  char buf[2048];
  int got = 0;
  for (;;) {
    struct sockaddr_in from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(sock, buf, sizeof(buf), MSG_DONTWAIT,
                         (struct sockaddr *)&from, &flen);
    if (n < 0) break;
    if (*k == NULL) {              /* server: the first datagram's conv */
      uint32_t conv;
      if (evlua_kcp_read_conv(buf, (size_t)n, &conv) < 0) continue;
      peer = from;
      have_peer = 1;
      *k = new_engine(conv);
    }
    evlua_kcp_input(*k, buf, (size_t)n, now_ms());
    got = 1;
  }
  if (*k == NULL) return;
  /* as kcp-go does: answer input at once rather than at the next tick */
  if (got) evlua_kcp_flush(*k, now_ms());
  evlua_kcp_update(*k, now_ms());
}

static void bind_any(void) {
  sock = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(sock, (struct sockaddr *)&a, sizeof(a)) < 0) {
    perror("bind");
    exit(1);
  }
  int big = 4 << 20;
  setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
}

static void print_stats(const evlua_kcp *k) {
  if (k == NULL) return;
  const evlua_kcp_stats *s = evlua_kcp_stats_of(k);
  fprintf(stderr, "stats: datagrams in %llu out %llu, segments in %llu out "
          "%llu, retransmits %llu fast %llu, dropped %llu (window %llu, "
          "duplicate %llu), acks early %llu, srtt %u rto %u\n",
          (unsigned long long)s->datagrams_in, (unsigned long long)s->datagrams_out,
          (unsigned long long)s->segments_in, (unsigned long long)s->segments_out,
          (unsigned long long)s->retransmits, (unsigned long long)s->fast_retransmits,
          (unsigned long long)s->dropped_datagrams, (unsigned long long)s->drop_window,
          (unsigned long long)s->drop_duplicate, (unsigned long long)s->acks_early,
          evlua_kcp_srtt(k), evlua_kcp_rto(k));
}

/* Echo one session until it has been quiet for 10 s (or dies). */
static int server(void) {
  bind_any();
  struct sockaddr_in a;
  socklen_t alen = sizeof(a);
  getsockname(sock, (struct sockaddr *)&a, &alen);
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  evlua_kcp *k = NULL;
  static char msg[EVLUA_KCP_MAX_FRAGMENTS * 1500];
  long pending = -1;               /* a message send refused, kept */
  uint32_t last = now_ms();
  uint64_t in = 0;
  while (now_ms() - last < quiet_ms) {
    pump(&k);
    if (k == NULL) { last = now_ms(); continue; }
    if (evlua_kcp_stats_of(k)->datagrams_in != in) {
      in = evlua_kcp_stats_of(k)->datagrams_in;
      last = now_ms();
    }
    if (evlua_kcp_dead(k)) {
      fprintf(stderr, "dead\n");
      print_stats(k);
      return 1;
    }
    for (;;) {
      if (pending < 0) pending = evlua_kcp_recv(k, msg, sizeof(msg));
      if (pending < 0) break;
      if (evlua_kcp_send(k, msg, (size_t)pending) != 0) break;
      pending = -1;
    }
    evlua_kcp_flush(k, now_ms());
  }
  print_stats(k);
  evlua_kcp_free(k);
  return 0;
}

static void message(char *b, int i, size_t n) {
  for (size_t j = 0; j < n; j++) b[j] = (char)(i * 31 + (int)j * 7);
}

static int client_messages(evlua_kcp *k, int count) {
  static const size_t sizes[] = { 1, 100, 1000, 1376 };
  static char buf[4096], want[4096];
  int sent = 0, got = 0;
  uint32_t start = now_ms();
  while (got < count) {
    if (now_ms() - start > opt_timeout * 1000) {
      fprintf(stderr, "timeout after %d messages\n", got);
      return 1;
    }
    while (sent < count) {
      message(buf, sent, sizes[sent % 4]);
      if (evlua_kcp_send(k, buf, sizes[sent % 4]) != 0) break;
      sent++;
    }
    evlua_kcp_flush(k, now_ms());
    pump(&k);
    long n;
    while ((n = evlua_kcp_recv(k, buf, sizeof(buf))) >= 0) {
      size_t sz = sizes[got % 4];
      message(want, got, sz);
      if ((size_t)n != sz || memcmp(buf, want, sz) != 0) {
        fprintf(stderr, "message %d: %ld bytes, want %zu\n", got, n, sz);
        return 1;
      }
      got++;
    }
  }
  printf("ok messages %d\n", count);
  print_stats(k);
  return 0;
}

static uint32_t crc32_update(uint32_t crc, const char *p, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; i++) {
    crc ^= (unsigned char)p[i];
    for (int b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
  }
  return ~crc;
}

static int client_bulk(evlua_kcp *k, size_t total) {
  char *data = malloc(total), *buf = malloc(65536);
  uint32_t x = 7;
  for (size_t i = 0; i < total; i++) {
    x = x * 1103515245u + 12345u;
    data[i] = (char)(x >> 16);
  }
  uint32_t want = crc32_update(0, data, total), crc = 0;
  size_t sent = 0, got = 0;
  uint32_t start = now_ms();
  while (got < total) {
    if (now_ms() - start > opt_timeout * 1000) {
      fprintf(stderr, "timeout after %zu bytes\n", got);
      return 1;
    }
    while (sent < total) {
      size_t n = total - sent < 65536 ? total - sent : 65536;
      if (evlua_kcp_send(k, data + sent, n) != 0) break;
      sent += n;
    }
    evlua_kcp_flush(k, now_ms());
    pump(&k);
    long n;
    while ((n = evlua_kcp_recv(k, buf, 65536)) > 0) {
      crc = crc32_update(crc, buf, (size_t)n);
      got += (size_t)n;
    }
  }
  double secs = (now_ms() - start) / 1000.0;
  if (crc != want) {
    fprintf(stderr, "bulk: crc %08x, want %08x\n", crc, want);
    return 1;
  }
  printf("ok bulk %zu bytes crc %08x %.1f MB/s\n", total, crc, total / secs / 1e6);
  print_stats(k);
  free(data);
  free(buf);
  return 0;
}

static int client(const char *host, int port, const char *test, long arg) {
  bind_any();
  memset(&peer, 0, sizeof(peer));
  peer.sin_family = AF_INET;
  peer.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, host, &peer.sin_addr);
  have_peer = 1;
  srand((unsigned)now_ms() ^ (unsigned)getpid());
  evlua_kcp *k = new_engine((uint32_t)rand());
  int rc = strcmp(test, "bulk") == 0 ? client_bulk(k, (size_t)arg)
                                     : client_messages(k, (int)arg);
  /* let the last acks reach the peer */
  for (uint32_t end = now_ms() + 300; now_ms() < end;) pump(&k);
  evlua_kcp_free(k);
  return rc;
}

int main(int argc, char **argv) {
  int pos = 0;
  char *args[8];
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--stream") == 0) opt_stream = 1;
    else if (strcmp(argv[i], "--fast") == 0) opt_fast = 1;
    else if (strcmp(argv[i], "--wnd") == 0 && i + 1 < argc) opt_wnd = atoi(argv[++i]);
    else if (strcmp(argv[i], "--quiet") == 0 && i + 1 < argc) quiet_ms = (uint32_t)atoi(argv[++i]);
    else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) opt_timeout = atof(argv[++i]);
    else if (pos < 8) args[pos++] = argv[i];
  }
  if (pos >= 1 && strcmp(args[0], "server") == 0) return server();
  if (pos == 5 && strcmp(args[0], "client") == 0)
    return client(args[1], atoi(args[2]), args[3], atol(args[4]));
  fprintf(stderr, "usage: kcp_c_echo server | client HOST PORT messages N|bulk BYTES [--stream] [--fast] [--wnd N]\n");
  return 2;
}
