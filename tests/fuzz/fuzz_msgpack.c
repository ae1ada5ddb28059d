/*
** fuzz_msgpack.c - libFuzzer target for the MessagePack reader: any byte
** string must give a length, "need more", "invalid" or "too deep", never
** a crash or a read outside the input; a complete value must tokenize to
** exactly its length, and the incremental scanner must agree with it.
**   make fuzz FUZZ_SECONDS=60
*/
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "msgpack.h"

/* Walk one complete value token by token; returns the bytes it spans. */
static size_t walk(const char *p, size_t len) {
  size_t pos = 0;
  uint64_t pending = 1;
  while (pending > 0) {
    mp_token t;
    long used = mp_read_token(p + pos, len - pos, &t);
    assert(used > 0);
    pos += (size_t)used;
    pending--;
    if (t.type == MP_ARRAY) pending += t.v.n;
    if (t.type == MP_MAP) pending += (uint64_t)t.v.n * 2;
    if (t.type == MP_STR || t.type == MP_BIN || t.type == MP_EXT)
      assert(t.v.s.p + t.v.s.len <= p + len);
  }
  return pos;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data;
  long n = mp_value_length(p, size, 64);
  if (n > 0) {
    assert((size_t)n <= size);
    assert(walk(p, (size_t)n) == (size_t)n);
    /* any shorter prefix of a complete value is incomplete */
    assert(mp_value_length(p, (size_t)n - 1, 64) == MP_NEED_MORE);
  }
  /* Scanned in two pieces, the input gives what it gives whole; while
  ** incomplete, the bound on its length is above what is there. */
  size_t cut = size / 2;
  mp_scanner sc;
  mp_scan_start(&sc);
  long first = mp_scan(&sc, p, cut, 64);
  if (first == MP_NEED_MORE) {
    assert(sc.need > cut);
    long whole = mp_scan(&sc, p, size, 64);
    assert(whole == n);
    if (whole == MP_NEED_MORE) assert(sc.need > size);
    if (whole > 0) assert(sc.need <= (uint64_t)whole);
  }
  (void)mp_valid_utf8(p, size);
  return 0;
}
