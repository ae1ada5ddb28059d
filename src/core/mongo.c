/*
** mongo.c - MongoDB wire framing: the message header and OP_MSG (see
** mongo.h). All integers on the wire are little-endian.
*/
#include "mongo.h"

#include <string.h>

/* Little-endian integers ============================================== */

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static int32_t get_i32(const uint8_t *p) {
  uint32_t u = get_u32(p);
  return u <= INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
}

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

/* CRC-32C ============================================================= */

static uint32_t crc_table[256];
static int crc_ready;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[i] = c;
  }
  crc_ready = 1;
}

uint32_t mongo_crc32c(uint32_t crc, const uint8_t *p, size_t n) {
  if (!crc_ready) crc_init();
  crc = ~crc;
  for (size_t i = 0; i < n; i++)
    crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

/* Decoding ============================================================ */

/* A BSON document at p[0..avail): its length (>= 5, fitting, ending in a
** zero byte), or 0 if it is not one. */
static size_t document_at(const uint8_t *p, size_t avail) {
  if (avail < 5) return 0;
  int32_t n = get_i32(p);
  if (n < 5 || (size_t)n > avail || p[n - 1] != 0) return 0;
  return (size_t)n;
}

/* Check the kind-1 section whose size field is at p (avail bytes left in
** the sections): its length, or an error. */
static long check_sequence(const uint8_t *p, size_t avail) {
  if (avail < 4) return MONGO_BAD_SECTION;
  int32_t size = get_i32(p);
  if (size < 5 || (size_t)size > avail) return MONGO_BAD_SECTION;
  const uint8_t *id = p + 4, *end = p + size;
  const uint8_t *nul = memchr(id, 0, (size_t)(end - id));
  if (nul == NULL) return MONGO_BAD_SECTION;
  for (const uint8_t *d = nul + 1; d < end;) {
    size_t n = document_at(d, (size_t)(end - d));
    if (n == 0) return MONGO_BAD_DOCUMENT;
    d += n;
  }
  return size;
}

long mongo_decode(const uint8_t *p, size_t len, size_t max_message,
                  mongo_msg *m) {
  if (len < 4) return MONGO_NEED_MORE;
  int32_t length = get_i32(p);
  if (length < MONGO_HEADER_LEN) return MONGO_BAD_LENGTH;
  if (max_message > INT32_MAX) max_message = INT32_MAX;
  if ((size_t)length > max_message) return MONGO_TOO_LARGE;
  if (len < MONGO_HEADER_LEN) return MONGO_NEED_MORE;
  int32_t opcode = get_i32(p + 12);
  if (opcode != MONGO_OP_MSG) return MONGO_BAD_OPCODE;
  /* flags (4) and at least one section (a kind byte and a document) */
  if (length < MONGO_HEADER_LEN + 4 + 1 + 5) return MONGO_BAD_LENGTH;
  if (len < (size_t)length) return MONGO_NEED_MORE;

  memset(m, 0, sizeof *m);
  m->length = length;
  m->request_id = get_i32(p + 4);
  m->response_to = get_i32(p + 8);
  m->opcode = opcode;
  uint32_t flags = get_u32(p + 16);
  m->flags = flags;
  if (flags & 0xffffu & ~(MONGO_FLAG_CHECKSUM | MONGO_FLAG_MORE_TO_COME))
    return MONGO_BAD_FLAGS;
  const uint8_t *s = p + 20, *end = p + length;
  if (flags & MONGO_FLAG_CHECKSUM) {
    if (end - s < 4 + 6) return MONGO_BAD_LENGTH;
    end -= 4;
    if (mongo_crc32c(0, p, (size_t)(end - p)) != get_u32(end))
      return MONGO_BAD_CHECKSUM;
  }
  m->sections = s;
  m->sections_len = (size_t)(end - s);
  int bodies = 0;
  while (s < end) {
    uint8_t kind = *s++;
    size_t avail = (size_t)(end - s);
    if (kind == 0) {
      size_t n = document_at(s, avail);
      if (n == 0) return avail < 4 ? MONGO_BAD_SECTION : MONGO_BAD_DOCUMENT;
      if (++bodies > 1) return MONGO_BAD_BODY;
      m->body = s;
      m->body_len = n;
      s += n;
    } else if (kind == 1) {
      long n = check_sequence(s, avail);
      if (n < 0) return n;
      m->sequences++;
      s += n;
    } else {
      return MONGO_BAD_KIND;
    }
  }
  if (bodies == 0) return MONGO_BAD_BODY;
  return length;
}

int mongo_next_sequence(const mongo_msg *m, size_t *pos, mongo_seq *q) {
  const uint8_t *s = m->sections;
  size_t len = m->sections_len;
  while (*pos < len) {
    uint8_t kind = s[*pos];
    const uint8_t *at = s + *pos + 1;
    size_t n = (size_t)get_i32(at);
    *pos += 1 + n;
    if (kind == 1) {
      q->id = (const char *)(at + 4);
      q->id_len = strlen(q->id);
      q->docs = at + 4 + q->id_len + 1;
      q->docs_len = n - 4 - q->id_len - 1;
      return 1;
    }
  }
  return 0;
}

int mongo_next_document(const mongo_seq *q, size_t *pos, const uint8_t **doc,
                        size_t *doc_len) {
  if (*pos >= q->docs_len) return 0;
  *doc = q->docs + *pos;
  *doc_len = (size_t)get_i32(*doc);
  *pos += *doc_len;
  return 1;
}

const char *mongo_strerror(long code) {
  switch (code) {
  case MONGO_NEED_MORE: return "incomplete message";
  case MONGO_BAD_LENGTH: return "message length too small";
  case MONGO_TOO_LARGE: return "message larger than the limit";
  case MONGO_BAD_OPCODE: return "opcode is not OP_MSG";
  case MONGO_BAD_FLAGS: return "unknown required flag bits";
  case MONGO_BAD_KIND: return "unknown section kind";
  case MONGO_BAD_SECTION: return "sections do not add up to the message";
  case MONGO_BAD_DOCUMENT: return "document length overruns its section";
  case MONGO_BAD_CHECKSUM: return "checksum mismatch";
  case MONGO_BAD_BODY: return "not exactly one body section";
  default: return "unknown error";
  }
}

/* Encoding ============================================================ */

#define MAX_MESSAGE ((size_t)INT32_MAX)

static uint8_t *at(evlua_buffer *b, size_t off) {
  return (uint8_t *)b->data + b->start + off;
}

int mongo_msg_begin(evlua_buffer *b, int32_t request_id, int32_t response_to,
                    uint32_t flags, size_t *start) {
  uint8_t h[20];
  put_u32(h, 0);   /* filled in by mongo_msg_end */
  put_u32(h + 4, (uint32_t)request_id);
  put_u32(h + 8, (uint32_t)response_to);
  put_u32(h + 12, MONGO_OP_MSG);
  put_u32(h + 16, flags);
  *start = evlua_buffer_len(b);
  return evlua_buffer_append(b, h, sizeof h);
}

int mongo_msg_body(evlua_buffer *b, const uint8_t *doc, size_t len) {
  uint8_t kind = 0;
  if (len > MAX_MESSAGE) return -1;
  if (evlua_buffer_append(b, &kind, 1) != 0) return -1;
  if (evlua_buffer_append(b, doc, len) != 0) {
    b->end -= 1;
    return -1;
  }
  return 0;
}

int mongo_msg_sequence_begin(evlua_buffer *b, const char *id, size_t id_len,
                             size_t *seq_start) {
  uint8_t h[5] = { 1, 0, 0, 0, 0 };
  if (id_len > 1024 || memchr(id, 0, id_len) != NULL) return -1;
  size_t before = evlua_buffer_len(b);
  *seq_start = before + 1;
  if (evlua_buffer_append(b, h, sizeof h) != 0) return -1;
  if (evlua_buffer_append(b, id, id_len) != 0 ||
      evlua_buffer_append(b, "", 1) != 0) {
    b->end = b->start + before;
    return -1;
  }
  return 0;
}

int mongo_msg_sequence_add(evlua_buffer *b, const uint8_t *doc, size_t len) {
  if (len > MAX_MESSAGE) return -1;
  return evlua_buffer_append(b, doc, len);
}

int mongo_msg_sequence_end(evlua_buffer *b, size_t seq_start) {
  size_t n = evlua_buffer_len(b) - seq_start;
  if (n > MAX_MESSAGE) return -1;
  put_u32(at(b, seq_start), (uint32_t)n);
  return 0;
}

int mongo_msg_end(evlua_buffer *b, size_t start) {
  uint32_t flags = get_u32(at(b, start + 16));
  size_t n = evlua_buffer_len(b) - start;
  if (flags & MONGO_FLAG_CHECKSUM) n += 4;
  if (n > MAX_MESSAGE) return -1;
  put_u32(at(b, start), (uint32_t)n);
  if (flags & MONGO_FLAG_CHECKSUM) {
    uint8_t c[4];
    put_u32(c, mongo_crc32c(0, at(b, start), n - 4));
    if (evlua_buffer_append(b, c, 4) != 0) return -1;
  }
  return 0;
}
