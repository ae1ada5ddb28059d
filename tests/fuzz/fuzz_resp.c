/*
** fuzz_resp.c - libFuzzer target for the RESP reader: any byte string
** must give a length, "need more" or an error, never a crash or a read
** outside the input; scanning it in pieces (as replies arrive from a
** socket) must give the same answer as scanning it whole; a complete
** reply must tokenize to exactly its length.
**   make fuzz FUZZ_SECONDS=60
*/
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "resp.h"

#define DEPTH 8

static const resp_limits limits = { 4096, 64, DEPTH };

/* Walk one complete reply token by token; returns the bytes it spans. */
static size_t walk(const char *p, size_t len) {
  size_t pos = 0;
  int64_t pending = 1;
  while (pending > 0) {
    resp_token t;
    long used = resp_read_token(p + pos, len - pos, &limits, &t);
    assert(used > 0);
    if (t.type == RESP_STATUS || t.type == RESP_ERROR || t.type == RESP_BULK)
      assert(t.s >= p + pos && t.s + t.len <= p + len);
    pos += (size_t)used;
    pending--;
    if (t.type == RESP_ARRAY) {
      assert(t.n >= 0 && t.n <= limits.max_elements);
      pending += t.n;
    }
  }
  return pos;
}

static resp_scanner *new_scanner(void) {
  resp_scanner *sc = malloc(resp_scanner_size(DEPTH));
  assert(sc != NULL);
  resp_scanner_reset(sc);
  return sc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data;
  resp_scanner *whole = new_scanner(), *pieces = new_scanner();
  long n = resp_scan(whole, p, size, &limits);
  /* the same bytes arriving in pieces of 1, 2, 3... bytes */
  long m = RESP_NEED_MORE;
  size_t have = 0, step = 1;
  while (have < size && m == RESP_NEED_MORE) {
    have = have + step < size ? have + step : size;
    step = step % 7 + 1;
    m = resp_scan(pieces, p, have, &limits);
  }
  assert(m == n);
  if (n > 0) {
    assert((size_t)n <= size);
    assert(walk(p, (size_t)n) == (size_t)n);
    resp_scanner_reset(whole);
    assert(resp_scan(whole, p, (size_t)n - 1, &limits) == RESP_NEED_MORE);
  }
  free(whole);
  free(pieces);
  return 0;
}
