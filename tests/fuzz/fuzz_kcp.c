/*
** fuzz_kcp.c - libFuzzer target for the KCP input path: arbitrary
** datagrams fed to an engine, interleaved with time passing, sends and
** receives, must never crash, read outside a datagram, leak, or let the
** engine's queues pass their bounds.
**   make fuzz FUZZ_SECONDS=60
**
** Input: one setup byte (bit 0 stream mode, bit 1 a small receive window,
** bit 2 nodelay), then records: op byte, 2-byte little-endian length,
** that many bytes. op % 4: 0 a datagram, 1 time passes (update), 2 recv,
** 3 send. The conv is 0x01020304: datagrams start with 04 03 02 01.
*/
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kcp.h"

#define CONV 0x01020304u

static int sink(const char *buf, int len, void *user) {
  (void)user;
  assert(len > 0 && len <= EVLUA_KCP_MTU_MAX);
  /* touch every byte: ASan checks the engine built it in bounds */
  volatile char x = 0;
  for (int i = 0; i < len; i++) x ^= buf[i];
  return 0;
}

static void setup(evlua_kcp *k, uint8_t flags) {
  if (flags & 1) evlua_kcp_set_stream(k, 1);
  if (flags & 2) evlua_kcp_set_wndsize(k, 4, 4);
  if (flags & 4) evlua_kcp_set_nodelay(k, 1, 10, 2, 1);
  evlua_kcp_set_send_limit(k, 64 * 1024);
}

static void receive_all(evlua_kcp *k, size_t cap) {
  static char buf[EVLUA_KCP_MAX_FRAGMENTS * EVLUA_KCP_MTU_MAX];
  if (cap > sizeof(buf)) cap = sizeof(buf);
  long want = evlua_kcp_peeksize(k);
  long n = evlua_kcp_recv(k, buf, cap);
  assert(n == EVLUA_KCP_EAGAIN || n == EVLUA_KCP_ETOOBIG || n >= 0);
  if (want < 0) assert(n == EVLUA_KCP_EAGAIN || (cap == 0 && n == 0));
  if (n >= 0) assert((size_t)n <= cap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  evlua_kcp *k = evlua_kcp_create(CONV, NULL, sink);
  if (k == NULL) return 0;
  setup(k, data[0]);
  uint32_t now = 0;
  evlua_kcp_update(k, now);
  size_t off = 1;
  while (off + 3 <= size) {
    uint8_t op = data[off];
    size_t len = (size_t)data[off + 1] | ((size_t)data[off + 2] << 8);
    off += 3;
    if (len > size - off) len = size - off;
    const char *p = (const char *)data + off;
    off += len;
    switch (op % 4) {
    case 0:
      /* a copy of exactly len bytes: any read past it is caught */
      {
        char *copy = malloc(len ? len : 1);
        memcpy(copy, p, len);
        evlua_kcp_input(k, copy, len, now);
        free(copy);
      }
      break;
    case 1:
      now += (uint32_t)(len ? (uint8_t)p[0] * 40u : 10u);
      evlua_kcp_update(k, now);
      assert((int32_t)(evlua_kcp_check(k, now) - now) >= 0);
      break;
    case 2:
      receive_all(k, len ? (size_t)(uint8_t)p[0] * 64 : 1 << 20);
      break;
    default:
      evlua_kcp_send(k, p, len);
      break;
    }
    assert(evlua_kcp_waitsnd_bytes(k) <= 64 * 1024 + 65535);
  }
  evlua_kcp_free(k);
  return 0;
}
