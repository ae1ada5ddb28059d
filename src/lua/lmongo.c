/*
** lmongo.c - the MongoDB wire protocol for Lua (src/core/mongo.c): one C
** call encodes an OP_MSG from Lua documents and queues it on a stream,
** and one decodes the next reply straight from a stream's input buffer
** into a Lua table (src/lua/lbson.c's mapping).
**
** A document is a Lua table (or bson.doc{} ordered document), encoded by
** evlua_bson_encode, or a string already holding one encoded document.
*/
#include <lauxlib.h>
#include <stdint.h>
#include <string.h>

#include "lbson.h"
#include "lstream.h"
#include "mongo.h"
#include "runtime.h"

#define DEFAULT_MAX_MESSAGE (48 * 1000 * 1000)   /* mongod's default */

/* Encoding ============================================================ */

/* The documents of one message are encoded one at a time into the
** state's scratch document (lbson.h): owned by the state, it leaks nothing
** when an argument error raises half-way through a message. No Lua code
** runs while a message is built (the documents and the list of them are
** read raw), so nothing can use the scratch, or the scratch buffer the
** message goes into, twice. */
typedef struct encoder {
  bson_t *doc;        /* the scratch, once taken: the last table encoded */
  char err[256];
} encoder;

/* The bytes of the document at idx, or NULL with enc->err set. A string
** must be one whole encoded document. */
static const uint8_t *doc_bytes(lua_State *L, int idx, encoder *enc,
                                size_t *len) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *s = lua_tolstring(L, idx, len);
    int32_t n = 0;
    if (*len >= 5) {
      const uint8_t *u = (const uint8_t *)s;
      n = (int32_t)((uint32_t)u[0] | (uint32_t)u[1] << 8 |
                    (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24);
    }
    if (*len < 5 || n < 5 || (size_t)n != *len || s[*len - 1] != 0) {
      snprintf(enc->err, sizeof enc->err,
               "string is not one encoded BSON document");
      return NULL;
    }
    return (const uint8_t *)s;
  }
  if (lua_type(L, idx) != LUA_TTABLE) {
    snprintf(enc->err, sizeof enc->err, "document expected, got %s",
             luaL_typename(L, idx));
    return NULL;
  }
  if (enc->doc == NULL) enc->doc = evlua_bson_scratch(L);
  else bson_reinit(enc->doc);
  if (!evlua_bson_encode(L, idx, enc->doc, enc->err, sizeof enc->err))
    return NULL;
  *len = enc->doc->len;
  return bson_get_data(enc->doc);
}

static void encoder_done(lua_State *L, encoder *enc) {
  if (enc->doc != NULL) evlua_bson_scratch_done(L);
  enc->doc = NULL;
}

static lua_Integer opt_limit(lua_State *L, int idx, lua_Integer def) {
  lua_Integer n = luaL_optinteger(L, idx, def);
  luaL_argcheck(L, n >= 1 && n <= INT32_MAX, idx, "limit out of range");
  return n;
}

/* The message of args (see l_write_mongo) into b; returns the index of
** the last sequence document included (first - 1 without a sequence),
** or pushes nil, err, code and returns -1 (b emptied). */
static lua_Integer encode_message(lua_State *L, evlua_buffer *b, int base,
                                  int32_t response_to, uint32_t flags) {
  lua_Integer request_id = luaL_checkinteger(L, base);
  luaL_argcheck(L, request_id >= INT32_MIN && request_id <= INT32_MAX, base,
                "request id out of range");
  int has_seq = !lua_isnoneornil(L, base + 2);
  size_t id_len = 0;
  const char *id = NULL;
  if (has_seq) {
    id = luaL_checklstring(L, base + 2, &id_len);
    luaL_checktype(L, base + 3, LUA_TTABLE);
  }
  lua_Integer first = luaL_optinteger(L, base + 4, 1);
  luaL_argcheck(L, first >= 1, base + 4, "index out of range");
  lua_Integer max_docs = opt_limit(L, base + 5, INT32_MAX);
  size_t max_message = (size_t)opt_limit(L, base + 6, DEFAULT_MAX_MESSAGE);
  size_t max_doc = (size_t)opt_limit(L, base + 7, INT32_MAX);
  encoder enc;
  enc.doc = NULL;
  size_t start, seq = 0, len;
  lua_Integer last = first - 1;
  const uint8_t *d = doc_bytes(L, base + 1, &enc, &len);
  if (d == NULL) goto bad_document;
  /* a command may exceed the documents' limit by 16 KiB (the spec's
  ** allowance for the command's own fields) */
  if (len > max_doc + 16 * 1024) {
    encoder_done(L, &enc);
    return evlua_fail(L, "too_large", "command of %I bytes above the "
                      "maximum document size (%I)", (lua_Integer)len,
                      (lua_Integer)max_doc), -1;
  }
  if (mongo_msg_begin(b, (int32_t)request_id, response_to, flags,
                      &start) != 0 ||
      mongo_msg_body(b, d, len) != 0)
    goto nomem;
  if (has_seq) {
    if (mongo_msg_sequence_begin(b, id, id_len, &seq) != 0)   /* see encoder */
      luaL_argerror(L, base + 2, "identifier with a zero byte or too long");
    lua_Integer n = (lua_Integer)lua_rawlen(L, base + 3);
    for (lua_Integer i = first; i <= n && i - first < max_docs; i++) {
      lua_rawgeti(L, base + 3, i);
      d = doc_bytes(L, -1, &enc, &len);
      if (d == NULL) {
        char where[64];
        snprintf(where, sizeof where, "document %lld: ", (long long)i);
        size_t wl = strlen(where), el = strlen(enc.err);
        if (wl + el < sizeof enc.err) {
          memmove(enc.err + wl, enc.err, el + 1);
          memcpy(enc.err, where, wl);
        }
        lua_pop(L, 1);
        goto bad_document;
      }
      if (len > max_doc) {
        encoder_done(L, &enc);
        return evlua_fail(L, "too_large", "document %I of %I bytes above "
                          "the maximum document size (%I)", i,
                          (lua_Integer)len, (lua_Integer)max_doc), -1;
      }
      /* the message so far plus this document */
      if (evlua_buffer_len(b) - start + len > max_message) {
        lua_pop(L, 1);
        if (i == first) {
          encoder_done(L, &enc);
          return evlua_fail(L, "too_large", "document %I does not fit in a "
                            "message of %I bytes", i,
                            (lua_Integer)max_message), -1;
        }
        break;
      }
      if (mongo_msg_sequence_add(b, d, len) != 0) {
        lua_pop(L, 1);
        goto nomem;
      }
      lua_pop(L, 1);
      last = i;
    }
    if (mongo_msg_sequence_end(b, seq) != 0) goto nomem;
  }
  encoder_done(L, &enc);
  if (evlua_buffer_len(b) - start > max_message) {
    return evlua_fail(L, "too_large", "message above %I bytes",
                      (lua_Integer)max_message), -1;
  }
  if (mongo_msg_end(b, start) != 0) goto nomem;
  return last;
bad_document:
  encoder_done(L, &enc);
  return evlua_fail(L, "bad_document", "%s", enc.err), -1;
nomem:
  return luaL_error(L, "mongo: out of memory or message above 2 GiB");
}

/* stream:write_mongo(request_id, body [, seq_id, docs [, first [, max_docs
** [, max_message [, max_doc]]]]]) -> ok, last | nil, err, code. Queues an
** OP_MSG: body a document (the command), and, with seq_id, a kind-1
** section named seq_id of docs[first], docs[first + 1]... as many as fit
** (at most max_docs, the message at most max_message bytes; docs is read
** raw, without its __len or __index). ok is as
** stream:write's (true, false above the high-water mark); last is the
** index of the last document sent. A document larger than max_doc, or
** the first one not fitting, fails with "too_large"; one that cannot be
** encoded with "bad_document"; nothing is queued then. */
static int l_write_mongo(lua_State *L) {
  lstream *ls = evlua_check_stream(L, 1);
  evlua_buffer *b = evlua_scratch(L);
  lua_Integer last = encode_message(L, b, 2, 0, 0);
  if (last < 0) {
    evlua_scratch_done(b);
    return 3;
  }
  struct iovec iov = { b->data + b->start, evlua_buffer_len(b) };
  int r = evlua_stream_write(&ls->s, &iov, 1);
  evlua_scratch_done(b);
  int n = evlua_push_write_result(L, ls, r);
  if (n != 1) return n;
  lua_pushinteger(L, last);
  return 2;
}

/* core.mongo_message(response_to, flags, request_id, body [, seq_id, docs
** [, first [, max_docs [, max_message [, max_doc]]]]]) -> the message as a
** string, last | nil, err, code (for tests, and peers built by hand). */
static int l_mongo_message(lua_State *L) {
  lua_Integer response_to = luaL_checkinteger(L, 1);
  lua_Integer flags = luaL_checkinteger(L, 2);
  luaL_argcheck(L, response_to >= INT32_MIN && response_to <= INT32_MAX, 1,
                "out of range");
  luaL_argcheck(L, flags >= 0 && flags <= UINT32_MAX, 2, "out of range");
  evlua_buffer *b = evlua_scratch(L);
  lua_Integer last = encode_message(L, b, 3, (int32_t)response_to,
                                    (uint32_t)flags);
  if (last < 0) {
    evlua_scratch_done(b);
    return 3;
  }
  lua_pushlstring(L, b->data + b->start, evlua_buffer_len(b));
  evlua_scratch_done(b);
  lua_pushinteger(L, last);
  return 2;
}

/* Decoding ============================================================ */

/* Push the document d[0..len) as a table, or its bytes when raw; on a
** malformed document push nil, err, "protocol" and return 0. */
static int push_doc(lua_State *L, const uint8_t *d, size_t len, int raw) {
  if (raw) {
    lua_pushlstring(L, (const char *)d, len);
    return 1;
  }
  char err[256];
  if (evlua_bson_decode(L, d, len, err, sizeof err)) return 1;
  evlua_fail(L, "protocol", "malformed bson in reply: %s", err);
  return 0;
}

/* Push the message's sequences as { [identifier] = { docs... } }, or
** nil, err, code (returns 0). */
static int push_sequences(lua_State *L, const mongo_msg *m, int raw) {
  lua_createtable(L, 0, m->sequences);
  size_t pos = 0;
  mongo_seq q;
  while (mongo_next_sequence(m, &pos, &q)) {
    lua_newtable(L);
    size_t dpos = 0, dlen;
    const uint8_t *d;
    lua_Integer i = 0;
    while (mongo_next_document(&q, &dpos, &d, &dlen)) {
      if (!push_doc(L, d, dlen, raw)) return 0;
      lua_rawseti(L, -2, ++i);
    }
    lua_setfield(L, -2, q.id);
  }
  return 1;
}

/* The message at the front of the stream's input: its length (> 0) with
** m filled in, 0 if incomplete (nil pushed) or -1 (nil, err, code
** pushed). */
static long next_message(lua_State *L, lstream *ls, size_t max_message,
                         mongo_msg *m) {
  evlua_buffer *in = &ls->s.in;
  size_t have = evlua_buffer_len(in);
  if (have == 0) {   /* (an empty buffer may have no storage) */
    luaL_pushfail(L);
    return 0;
  }
  long n = mongo_decode((const uint8_t *)evlua_buffer_peek(in), have,
                        max_message, m);
  if (n > 0) return n;
  if (n == MONGO_NEED_MORE) {
    if (have >= ls->s.max_input) {
      evlua_fail(L, "too_large", "message larger than the input limit (%I "
                 "bytes)", (lua_Integer)ls->s.max_input);
      return -1;
    }
    luaL_pushfail(L);
    return 0;
  }
  if (n == MONGO_TOO_LARGE) {
    evlua_fail(L, "too_large", "message larger than %I bytes",
               (lua_Integer)max_message);
    return -1;
  }
  evlua_fail(L, "protocol", "protocol error: %s", mongo_strerror(n));
  return -1;
}

/* stream:read_mongo([max_message [, raw]]) -> response_to, flags, body,
** request_id, sequences | nil (incomplete) | nil, err, code. Takes the
** next OP_MSG from the stream's input: body is its kind-0 document as a
** table (its bytes when raw), sequences nil or { [identifier] = docs }.
** Errors leave the input as it was, the connection unusable:
** "too_large" (above max_message, default 48 MB, or above the stream's
** input limit), "protocol" (bad framing, or a document libbson rejects). */
static int l_read_mongo(lua_State *L) {
  lstream *ls = evlua_check_stream(L, 1);
  size_t max_message = (size_t)opt_limit(L, 2, DEFAULT_MAX_MESSAGE);
  int raw = lua_toboolean(L, 3);
  mongo_msg m;
  long n = next_message(L, ls, max_message, &m);
  if (n == 0) return 1;
  if (n < 0) return 3;
  lua_pushinteger(L, m.response_to);
  lua_pushinteger(L, (lua_Integer)m.flags);
  if (!push_doc(L, m.body, m.body_len, raw)) return 3;
  lua_pushinteger(L, m.request_id);
  if (m.sequences > 0) {
    if (!push_sequences(L, &m, raw)) return 3;
  } else {
    lua_pushnil(L);
  }
  evlua_stream_take(&ls->s, (size_t)n);
  return 5;
}

void evlua_open_mongo(lua_State *L) {
  static const luaL_Reg stream_methods[] = {
    { "write_mongo", l_write_mongo },
    { "read_mongo", l_read_mongo },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "mongo_message", l_mongo_message },
    { NULL, NULL }
  };
  evlua_stream_add_methods(L, stream_methods);
  luaL_setfuncs(L, funcs, 0);
}
