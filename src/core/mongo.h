/*
** mongo.h - the MongoDB wire protocol's framing (pure C, no Lua): the
** 16-byte message header and OP_MSG, encoded into an evlua_buffer and
** decoded from any byte range, so a reply can be read straight from a
** stream's input buffer.
**
** A message is decoded only once it is whole (its length is in its first
** four bytes, checked against the caller's limit as soon as they are in).
** The decoder then checks every section in one pass: a kind-0 body (one
** BSON document), kind-1 document sequences (size, identifier, documents)
** and the CRC-32C checksum when the checksumPresent flag says one follows.
** The documents' own contents are not looked at here (libbson does that);
** only that each one's length field fits where it stands and that it ends
** with its zero byte. Nothing is read outside [p, p + len).
*/
#ifndef EVLUA_MONGO_H
#define EVLUA_MONGO_H

#include <stddef.h>
#include <stdint.h>

#include "buffer.h"

#define MONGO_HEADER_LEN 16

/* Opcodes */
#define MONGO_OP_REPLY 1          /* legacy, not decoded */
#define MONGO_OP_COMPRESSED 2012  /* not decoded: we never offer compressors */
#define MONGO_OP_MSG 2013

/* OP_MSG flag bits; bits 0-15 are "required": an unknown one is an error */
#define MONGO_FLAG_CHECKSUM 0x1u
#define MONGO_FLAG_MORE_TO_COME 0x2u
#define MONGO_FLAG_EXHAUST_ALLOWED 0x10000u

/* Results of mongo_decode besides a length */
#define MONGO_NEED_MORE 0
#define MONGO_BAD_LENGTH (-1)     /* messageLength below 16 (+ OP_MSG's 5) */
#define MONGO_TOO_LARGE (-2)      /* messageLength above the caller's limit */
#define MONGO_BAD_OPCODE (-3)     /* not OP_MSG */
#define MONGO_BAD_FLAGS (-4)      /* an unknown required flag bit */
#define MONGO_BAD_KIND (-5)       /* a section kind other than 0 and 1 */
#define MONGO_BAD_SECTION (-6)    /* sections that do not add up */
#define MONGO_BAD_DOCUMENT (-7)   /* a document's length overruns, or < 5 */
#define MONGO_BAD_CHECKSUM (-8)   /* CRC-32C mismatch */
#define MONGO_BAD_BODY (-9)       /* no kind-0 section, or more than one */

typedef struct mongo_msg {
  int32_t length;          /* messageLength */
  int32_t request_id;
  int32_t response_to;
  int32_t opcode;
  uint32_t flags;
  const uint8_t *body;     /* the kind-0 document */
  size_t body_len;
  int sequences;           /* number of kind-1 sections */
  const uint8_t *sections; /* all the sections, for mongo_next_sequence */
  size_t sections_len;
} mongo_msg;

/* Decode the message at p[0..len): returns its length (> 0) with m filled
** in, MONGO_NEED_MORE, or an error (< 0). max_message bounds
** messageLength (at most INT32_MAX). Linear in the message's size. */
long mongo_decode(const uint8_t *p, size_t len, size_t max_message,
                  mongo_msg *m);

/* A kind-1 section of a decoded message. */
typedef struct mongo_seq {
  const char *id;          /* NUL-terminated identifier */
  size_t id_len;
  const uint8_t *docs;     /* the documents, back to back */
  size_t docs_len;
} mongo_seq;

/* The next kind-1 section of m from *pos (start at 0): 1 and s filled, or
** 0 when there is none left. Only for messages mongo_decode accepted. */
int mongo_next_sequence(const mongo_msg *m, size_t *pos, mongo_seq *s);

/* The next document of a sequence from *pos (start at 0): 1 with *doc
** and *doc_len, or 0 at the end. */
int mongo_next_document(const mongo_seq *s, size_t *pos, const uint8_t **doc,
                        size_t *doc_len);

/* A short lowercase description of an error result. */
const char *mongo_strerror(long code);

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (0 to start). */
uint32_t mongo_crc32c(uint32_t crc, const uint8_t *p, size_t n);

/* Encoding an OP_MSG into b: begin (header and flags), then the body and
** any sequences, then end (fills in the lengths). start is where the
** message begins, counted from b's first unread byte. Every function
** returns 0, or -1 out of memory or past 2 GiB (b keeps what it had). */
int mongo_msg_begin(evlua_buffer *b, int32_t request_id, int32_t response_to,
                    uint32_t flags, size_t *start);
/* The kind-0 section: one encoded document. */
int mongo_msg_body(evlua_buffer *b, const uint8_t *doc, size_t len);
/* A kind-1 section: begin with its identifier, add each document, end. */
int mongo_msg_sequence_begin(evlua_buffer *b, const char *id, size_t id_len,
                             size_t *seq_start);
int mongo_msg_sequence_add(evlua_buffer *b, const uint8_t *doc, size_t len);
int mongo_msg_sequence_end(evlua_buffer *b, size_t seq_start);
/* Fill in messageLength (and append the checksum when the flags asked
** for one). */
int mongo_msg_end(evlua_buffer *b, size_t start);

#endif
