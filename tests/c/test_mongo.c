/*
** test_mongo.c - unit tests for src/core/mongo.c
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mongo.h"

/* {"a": 1} and {"x": "yz"} as BSON */
static const uint8_t doc_a[] = { 12, 0, 0, 0, 0x10, 'a', 0, 1, 0, 0, 0, 0 };
static const uint8_t doc_x[] = { 15, 0, 0, 0, 0x02, 'x', 0, 3, 0, 0, 0,
                                 'y', 'z', 0, 0 };

static void le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

/* An OP_MSG with body doc_a and, if seqs, a sequence "documents" of
** doc_a, doc_x; its bytes stay in b. */
static size_t build(evlua_buffer *b, uint32_t flags, int seqs) {
  size_t start, seq;
  evlua_buffer_init(b);
  assert_int_equal(mongo_msg_begin(b, 7, 3, flags, &start), 0);
  assert_int_equal(start, 0);
  assert_int_equal(mongo_msg_body(b, doc_a, sizeof doc_a), 0);
  if (seqs) {
    assert_int_equal(mongo_msg_sequence_begin(b, "documents", 9, &seq), 0);
    assert_int_equal(mongo_msg_sequence_add(b, doc_a, sizeof doc_a), 0);
    assert_int_equal(mongo_msg_sequence_add(b, doc_x, sizeof doc_x), 0);
    assert_int_equal(mongo_msg_sequence_end(b, seq), 0);
  }
  assert_int_equal(mongo_msg_end(b, start), 0);
  return evlua_buffer_len(b);
}

static const uint8_t *bytes(evlua_buffer *b) {
  return (const uint8_t *)evlua_buffer_peek(b);
}

/* Decode p whole, then every shorter prefix: "need more" for each (or the
** same error once the header says it). */
static long decode_all(const uint8_t *p, size_t len, size_t max,
                       mongo_msg *m) {
  long n = mongo_decode(p, len, max, m);
  for (size_t have = 0; have < len; have++) {
    mongo_msg tmp;
    long r = mongo_decode(p, have, max, &tmp);
    if (n > 0) {
      if ((size_t)n > have) assert_int_equal(r, MONGO_NEED_MORE);
    } else {
      assert_true(r == MONGO_NEED_MORE || r == n);
    }
  }
  return n;
}

static void round_trip(void **state) {
  (void)state;
  evlua_buffer b;
  size_t len = build(&b, 0, 0);
  assert_int_equal(len, 16 + 4 + 1 + sizeof doc_a);
  const uint8_t *p = bytes(&b);
  assert_int_equal(p[0], len);
  assert_int_equal(p[12], 0xdd);   /* 2013 */
  assert_int_equal(p[13], 0x07);
  mongo_msg m;
  assert_int_equal(decode_all(p, len, 1024, &m), (long)len);
  assert_int_equal(m.request_id, 7);
  assert_int_equal(m.response_to, 3);
  assert_int_equal(m.opcode, MONGO_OP_MSG);
  assert_int_equal(m.flags, 0);
  assert_int_equal(m.body_len, sizeof doc_a);
  assert_memory_equal(m.body, doc_a, sizeof doc_a);
  assert_int_equal(m.sequences, 0);
  size_t pos = 0;
  mongo_seq q;
  assert_int_equal(mongo_next_sequence(&m, &pos, &q), 0);
  evlua_buffer_free(&b);
}

static void sequences(void **state) {
  (void)state;
  evlua_buffer b;
  size_t len = build(&b, 0, 1);
  mongo_msg m;
  assert_int_equal(decode_all(bytes(&b), len, 1024, &m), (long)len);
  assert_int_equal(m.sequences, 1);
  size_t pos = 0, dpos = 0, dlen;
  mongo_seq q;
  const uint8_t *d;
  assert_int_equal(mongo_next_sequence(&m, &pos, &q), 1);
  assert_string_equal(q.id, "documents");
  assert_int_equal(q.id_len, 9);
  assert_int_equal(q.docs_len, sizeof doc_a + sizeof doc_x);
  assert_int_equal(mongo_next_document(&q, &dpos, &d, &dlen), 1);
  assert_int_equal(dlen, sizeof doc_a);
  assert_memory_equal(d, doc_a, dlen);
  assert_int_equal(mongo_next_document(&q, &dpos, &d, &dlen), 1);
  assert_int_equal(dlen, sizeof doc_x);
  assert_memory_equal(d, doc_x, dlen);
  assert_int_equal(mongo_next_document(&q, &dpos, &d, &dlen), 0);
  assert_int_equal(mongo_next_sequence(&m, &pos, &q), 0);
  evlua_buffer_free(&b);
}

/* The sequence may come before the body, and a message may be followed
** by the next one in the buffer. */
static void sequence_first_and_trailing_bytes(void **state) {
  (void)state;
  evlua_buffer b;
  size_t start, seq;
  evlua_buffer_init(&b);
  assert_int_equal(mongo_msg_begin(&b, 1, 0, 0, &start), 0);
  assert_int_equal(mongo_msg_sequence_begin(&b, "u", 1, &seq), 0);
  assert_int_equal(mongo_msg_sequence_end(&b, seq), 0);   /* empty */
  assert_int_equal(mongo_msg_body(&b, doc_x, sizeof doc_x), 0);
  assert_int_equal(mongo_msg_end(&b, start), 0);
  size_t len = evlua_buffer_len(&b);
  assert_int_equal(evlua_buffer_append(&b, "\x10\0\0\0", 4), 0);
  mongo_msg m;
  assert_int_equal(mongo_decode(bytes(&b), len + 4, 1024, &m), (long)len);
  assert_memory_equal(m.body, doc_x, sizeof doc_x);
  size_t pos = 0, dpos = 0, dlen;
  mongo_seq q;
  const uint8_t *d;
  assert_int_equal(mongo_next_sequence(&m, &pos, &q), 1);
  assert_string_equal(q.id, "u");
  assert_int_equal(mongo_next_document(&q, &dpos, &d, &dlen), 0);
  evlua_buffer_free(&b);
}

static void checksum(void **state) {
  (void)state;
  /* the standard check value of CRC-32C */
  assert_int_equal(mongo_crc32c(0, (const uint8_t *)"123456789", 9),
                   0xE3069283u);
  assert_int_equal(mongo_crc32c(mongo_crc32c(0, (const uint8_t *)"1234", 4),
                                (const uint8_t *)"56789", 5), 0xE3069283u);
  evlua_buffer b;
  size_t len = build(&b, MONGO_FLAG_CHECKSUM, 1);
  mongo_msg m;
  assert_int_equal(decode_all(bytes(&b), len, 1024, &m), (long)len);
  assert_int_equal(m.flags, MONGO_FLAG_CHECKSUM);
  assert_int_equal(m.sequences, 1);
  uint8_t *p = (uint8_t *)b.data + b.start;
  p[len - 1] ^= 1;   /* the checksum itself */
  assert_int_equal(mongo_decode(p, len, 1024, &m), MONGO_BAD_CHECKSUM);
  p[len - 1] ^= 1;
  p[24] ^= 1;        /* a byte of the body */
  assert_int_equal(mongo_decode(p, len, 1024, &m), MONGO_BAD_CHECKSUM);
  evlua_buffer_free(&b);
}

static void flags(void **state) {
  (void)state;
  evlua_buffer b;
  size_t len = build(&b, MONGO_FLAG_MORE_TO_COME | MONGO_FLAG_EXHAUST_ALLOWED,
                     0);
  mongo_msg m;
  assert_int_equal(mongo_decode(bytes(&b), len, 1024, &m), (long)len);
  assert_int_equal(m.flags, MONGO_FLAG_MORE_TO_COME |
                   MONGO_FLAG_EXHAUST_ALLOWED);
  uint8_t *p = (uint8_t *)b.data + b.start;
  p[16] |= 0x4;   /* an unknown required bit */
  assert_int_equal(mongo_decode(p, len, 1024, &m), MONGO_BAD_FLAGS);
  p[16] &= (uint8_t)~0x4;
  p[19] |= 0x80;  /* an unknown optional bit: fine */
  assert_int_equal(mongo_decode(p, len, 1024, &m), (long)len);
  evlua_buffer_free(&b);
}

static void header_errors(void **state) {
  (void)state;
  uint8_t h[64] = { 0 };
  mongo_msg m;
  le32(h, 15);
  assert_int_equal(mongo_decode(h, 4, 1024, &m), MONGO_BAD_LENGTH);
  le32(h, 0x80000000u);   /* negative */
  assert_int_equal(mongo_decode(h, 4, 1024, &m), MONGO_BAD_LENGTH);
  le32(h, 2000);
  assert_int_equal(mongo_decode(h, 4, 1024, &m), MONGO_TOO_LARGE);
  assert_int_equal(mongo_decode(h, 4, 2000, &m), MONGO_NEED_MORE);
  le32(h + 12, MONGO_OP_REPLY);
  assert_int_equal(mongo_decode(h, 16, 2000, &m), MONGO_BAD_OPCODE);
  le32(h + 12, MONGO_OP_COMPRESSED);
  assert_int_equal(mongo_decode(h, 16, 2000, &m), MONGO_BAD_OPCODE);
  le32(h + 12, MONGO_OP_MSG);
  le32(h, 16);   /* an OP_MSG with no flags or section */
  assert_int_equal(mongo_decode(h, 16, 2000, &m), MONGO_BAD_LENGTH);
  assert_int_equal(mongo_decode(h, 3, 2000, &m), MONGO_NEED_MORE);
  assert_int_equal(mongo_decode(h, 0, 2000, &m), MONGO_NEED_MORE);
}

/* A message of the given sections (after the flags), in buf. */
static size_t raw(uint8_t *buf, const uint8_t *sections, size_t n) {
  memset(buf, 0, 20);
  le32(buf, (uint32_t)(20 + n));
  le32(buf + 12, MONGO_OP_MSG);
  memcpy(buf + 20, sections, n);
  return 20 + n;
}

static void section_errors(void **state) {
  (void)state;
  uint8_t buf[128], s[64];
  mongo_msg m;
  size_t len;
  /* kind 2 */
  s[0] = 2;
  memcpy(s + 1, doc_a, sizeof doc_a);
  len = raw(buf, s, 1 + sizeof doc_a);
  assert_int_equal(decode_all(buf, len, 1024, &m), MONGO_BAD_KIND);
  /* a body whose length runs past the message */
  s[0] = 0;
  memcpy(s + 1, doc_a, sizeof doc_a);
  s[1] = 13;
  len = raw(buf, s, 1 + sizeof doc_a);
  assert_int_equal(decode_all(buf, len, 1024, &m), MONGO_BAD_DOCUMENT);
  /* a body of length 4, and one not ending with its zero byte */
  s[1] = 4;
  assert_int_equal(mongo_decode(buf, len, 1024, &m), MONGO_BAD_DOCUMENT);
  s[1] = 12;
  s[12] = 1;
  len = raw(buf, s, 1 + sizeof doc_a);
  assert_int_equal(mongo_decode(buf, len, 1024, &m), MONGO_BAD_DOCUMENT);
  /* two bodies */
  memcpy(s + 1, doc_a, sizeof doc_a);
  s[13] = 0;
  memcpy(s + 14, doc_a, sizeof doc_a);
  len = raw(buf, s, 2 + 2 * sizeof doc_a);
  assert_int_equal(mongo_decode(buf, len, 1024, &m), MONGO_BAD_BODY);
  /* a body followed by a stray byte: a kind-0 section too short */
  s[13] = 0;
  len = raw(buf, s, 2 + sizeof doc_a);
  assert_int_equal(mongo_decode(buf, len, 1024, &m), MONGO_BAD_SECTION);
  /* only a sequence */
  uint8_t q[] = { 1, 7, 0, 0, 0, 'i', 'd', 0 };
  len = raw(buf, q, sizeof q);
  assert_int_equal(mongo_decode(buf, len, 1024, &m), MONGO_BAD_BODY);
  /* a sequence whose size runs past the message */
  q[1] = 8;
  s[0] = 0;
  memcpy(s + 1, doc_a, sizeof doc_a);
  memcpy(s + 1 + sizeof doc_a, q, sizeof q);
  len = raw(buf, s, 1 + sizeof doc_a + sizeof q);
  assert_int_equal(mongo_decode(buf, len, 1024, &m), MONGO_BAD_SECTION);
  /* a sequence without the identifier's NUL */
  uint8_t q2[] = { 1, 6, 0, 0, 0, 'i', 'd' };
  memcpy(s + 1 + sizeof doc_a, q2, sizeof q2);
  len = raw(buf, s, 1 + sizeof doc_a + sizeof q2);
  assert_int_equal(mongo_decode(buf, len, 1024, &m), MONGO_BAD_SECTION);
  /* a sequence whose document overruns the sequence (not the message) */
  uint8_t q3[] = { 1, 12, 0, 0, 0, 'i', 'd', 0, 6, 0, 0, 0, 0 };
  memcpy(s + 1 + sizeof doc_a, q3, sizeof q3);
  len = raw(buf, s, 1 + sizeof doc_a + sizeof q3);
  assert_int_equal(mongo_decode(buf, len, 1024, &m), MONGO_BAD_DOCUMENT);
  q3[8] = 5;    /* now it fits, but is not terminated */
  q3[12] = 1;
  memcpy(s + 1 + sizeof doc_a, q3, sizeof q3);
  len = raw(buf, s, 1 + sizeof doc_a + sizeof q3);
  assert_int_equal(mongo_decode(buf, len, 1024, &m), MONGO_BAD_DOCUMENT);
  q3[12] = 0;
  memcpy(s + 1 + sizeof doc_a, q3, sizeof q3);
  len = raw(buf, s, 1 + sizeof doc_a + sizeof q3);
  assert_int_equal(mongo_decode(buf, len, 1024, &m), (long)len);
  /* checksum flag on a message too short to hold one */
  uint8_t empty[] = { 0, 5, 0, 0, 0, 0 };
  len = raw(buf, empty, sizeof empty);
  assert_int_equal(mongo_decode(buf, len, 1024, &m), (long)len);
  buf[16] = 1;
  assert_int_equal(mongo_decode(buf, len, 1024, &m), MONGO_BAD_LENGTH);
}

static void encoder_limits(void **state) {
  (void)state;
  evlua_buffer b;
  size_t start, seq;
  evlua_buffer_init(&b);
  assert_int_equal(evlua_buffer_append(&b, "xyz", 3), 0);
  evlua_buffer_consume(&b, 1);   /* start offset counted from the front */
  assert_int_equal(mongo_msg_begin(&b, -1, 0, 0, &start), 0);
  assert_int_equal(start, 2);
  assert_int_equal(mongo_msg_sequence_begin(&b, "a\0b", 3, &seq), -1);
  assert_int_equal(mongo_msg_body(&b, doc_a, sizeof doc_a), 0);
  assert_int_equal(mongo_msg_end(&b, start), 0);
  mongo_msg m;
  const uint8_t *p = bytes(&b) + 2;
  assert_int_equal(mongo_decode(p, evlua_buffer_len(&b) - 2, 1024, &m),
                   16 + 4 + 1 + (long)sizeof doc_a);
  assert_int_equal(m.request_id, -1);
  for (long e = MONGO_NEED_MORE; e >= MONGO_BAD_BODY; e--)
    assert_true(strlen(mongo_strerror(e)) > 0);
  evlua_buffer_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(round_trip),
    cmocka_unit_test(sequences),
    cmocka_unit_test(sequence_first_and_trailing_bytes),
    cmocka_unit_test(checksum),
    cmocka_unit_test(flags),
    cmocka_unit_test(header_errors),
    cmocka_unit_test(section_errors),
    cmocka_unit_test(encoder_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
