/*
** fuzz_mongo.c - libFuzzer target for the OP_MSG reply path: any byte
** string must give a length, "need more" or an error, never a crash or a
** read outside the input; every prefix of an accepted message must be
** "need more"; the body and every sequence and document found must lie
** inside the message, and the documents of a sequence must fill it. Each
** document is then read by libbson as the client reads replies (validated,
** then walked element by element, nested documents and arrays included).
**   make fuzz FUZZ_SECONDS=60
*/
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* libbson's bson-atomic.h casts a const away */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-qual"
#include <bson/bson.h>
#pragma GCC diagnostic pop

#include "mongo.h"

#define MAX_MESSAGE 4096

/* Walk every element of a document libbson accepted, to depth 100. */
static void walk(bson_iter_t *it, int depth) {
  while (bson_iter_next(it)) {
    bson_iter_t child;
    if ((BSON_ITER_HOLDS_DOCUMENT(it) || BSON_ITER_HOLDS_ARRAY(it)) &&
        depth < 100 && bson_iter_recurse(it, &child))
      walk(&child, depth + 1);
    else if (BSON_ITER_HOLDS_UTF8(it))
      (void)bson_iter_utf8(it, NULL);
  }
}

static void read_document(const uint8_t *d, size_t len) {
  bson_t b;
  size_t offset;
  if (!bson_init_static(&b, d, len)) return;
  if (!bson_validate(&b, BSON_VALIDATE_UTF8, &offset)) return;
  bson_iter_t it;
  if (bson_iter_init(&it, &b)) walk(&it, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mongo_msg m;
  long n = mongo_decode(data, size, MAX_MESSAGE, &m);
  assert(n <= (long)size && n >= MONGO_BAD_BODY);
  if (n <= 0) return 0;
  assert(n >= MONGO_HEADER_LEN + 10 && n <= MAX_MESSAGE);
  const uint8_t *end = data + n;
  assert(m.body >= data + 21 && m.body + m.body_len <= end);
  assert(m.body_len >= 5 && m.body[m.body_len - 1] == 0);
  read_document(m.body, m.body_len);
  size_t pos = 0;
  mongo_seq q;
  int seqs = 0;
  while (mongo_next_sequence(&m, &pos, &q)) {
    seqs++;
    assert((const uint8_t *)q.id > data && q.docs + q.docs_len <= end);
    assert(strlen(q.id) == q.id_len);
    size_t dpos = 0, dlen, total = 0;
    const uint8_t *d;
    while (mongo_next_document(&q, &dpos, &d, &dlen)) {
      assert(dlen >= 5 && d + dlen <= q.docs + q.docs_len);
      total += dlen;
      read_document(d, dlen);
    }
    assert(total == q.docs_len);
  }
  assert(seqs == m.sequences);
  /* the same bytes arriving in pieces: not complete before the end */
  for (size_t have = 0; have < (size_t)n; have += 1 + have / 3) {
    mongo_msg part;
    assert(mongo_decode(data, have, MAX_MESSAGE, &part) == MONGO_NEED_MORE);
  }
  return 0;
}
