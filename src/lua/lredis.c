/*
** lredis.c - the Redis protocol for Lua: one C call encodes a command
** from its Lua arguments and queues it on a stream (no Lua strings are
** built), and a reader userdata (one per connection) decodes replies
** straight from a stream's input buffer.
**
** Replies as Lua values: status and bulk strings are strings (binary
** safe), integers are integers, arrays are tables (1..n). A nil bulk or
** nil array is nil at the top and false inside an array (so arrays have
** no holes). An error reply is `false, message` at the top, and inside
** an array a table { err = message } with the reader's error metatable.
*/
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "lstream.h"
#include "resp.h"
#include "runtime.h"

#define EVLUA_RESP_READER "evlua.resp_reader"

#define DEFAULT_MAX_REPLY (64 * 1024 * 1024)
#define DEFAULT_MAX_ELEMENTS (8 * 1024 * 1024)
#define DEFAULT_MAX_DEPTH 32

/* Arguments at least this long are written from the Lua string itself
** instead of being copied with the command. */
#define BIG_ARGUMENT (64 * 1024)
#define MAX_IOV EVLUA_STREAM_MAX_IOV

typedef struct reader {
  resp_limits lim;
  size_t max_reply;        /* bytes of one whole reply */
  /* followed by the scanner, sized for lim.max_depth */
} reader;

static resp_scanner *scanner_of(reader *r) {
  return (resp_scanner *)(void *)(r + 1);
}

static const void *reader_meta;   /* for evlua_checkudata */

static reader *check_reader(lua_State *L, int idx) {
  return (reader *)evlua_checkudata(L, idx, reader_meta, EVLUA_RESP_READER);
}

/* Reader ============================================================== */

static lua_Integer opt_positive(lua_State *L, int idx, lua_Integer def,
                                lua_Integer max) {
  lua_Integer n = luaL_optinteger(L, idx, def);
  luaL_argcheck(L, n >= 1 && n <= max, idx, "limit out of range");
  return n;
}

/* core.resp_reader([max_reply [, max_elements [, max_depth [, error_mt]]]])
** -> a reader for one connection. max_reply bounds the bytes one reply
** takes on the wire, max_elements the elements of one array, max_depth
** the nesting of arrays; error_mt is given to error replies in arrays. */
static int l_reader_new(lua_State *L) {
  size_t max_reply = (size_t)opt_positive(L, 1, DEFAULT_MAX_REPLY,
                                          (lua_Integer)1 << 40);
  lua_Integer max_elements = opt_positive(L, 2, DEFAULT_MAX_ELEMENTS,
                                          INT64_MAX);
  int max_depth = (int)opt_positive(L, 3, DEFAULT_MAX_DEPTH, RESP_MAX_DEPTH);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
  reader *r = (reader *)lua_newuserdatauv(
      L, sizeof *r + resp_scanner_size(max_depth), 1);
  r->lim.max_string = max_reply;
  r->lim.max_elements = (int64_t)max_elements;
  r->lim.max_depth = max_depth;
  r->max_reply = max_reply;
  resp_scanner_reset(scanner_of(r));
  luaL_setmetatable(L, EVLUA_RESP_READER);
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* Push the reply at *p (complete and checked by the scanner), advancing
** *p past it. The reader is at index ridx (for the error metatable). */
static void push_reply(lua_State *L, reader *r, int ridx, const char **p,
                       const char *end) {
  resp_token t;
  long used = resp_read_token(*p, (size_t)(end - *p), &r->lim, &t);
  if (used <= 0) luaL_error(L, "redis: reply changed after its scan");
  *p += used;
  switch (t.type) {
  case RESP_STATUS: case RESP_BULK:
    lua_pushlstring(L, t.s, t.len);
    break;
  case RESP_INTEGER:
    lua_pushinteger(L, (lua_Integer)t.n);
    break;
  case RESP_NIL:
    lua_pushboolean(L, 0);   /* inside an array: no holes */
    break;
  case RESP_ERROR:
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, t.s, t.len);
    lua_setfield(L, -2, "err");
    if (lua_getiuservalue(L, ridx, 1) == LUA_TTABLE) lua_setmetatable(L, -2);
    else lua_pop(L, 1);
    break;
  case RESP_ARRAY:
    luaL_checkstack(L, 4, "redis reply nesting");
    lua_createtable(L, t.n < 4096 ? (int)t.n : 4096, 0);
    for (int64_t i = 1; i <= t.n; i++) {
      push_reply(L, r, ridx, p, end);
      lua_rawseti(L, -2, (lua_Integer)i);
    }
    break;
  }
}

/* Push the top-level reply of n bytes at p: true, value | false, error. */
static int push_top(lua_State *L, reader *r, int ridx, const char *p,
                    size_t n) {
  resp_token t;
  long used = resp_read_token(p, n, &r->lim, &t);
  if (used > 0 && t.type == RESP_ERROR) {
    lua_pushboolean(L, 0);
    lua_pushlstring(L, t.s, t.len);
    return 2;
  }
  lua_pushboolean(L, 1);
  if (used > 0 && t.type == RESP_NIL) {
    lua_pushnil(L);
    return 2;
  }
  push_reply(L, r, ridx, &p, p + n);
  return 2;
}

/* reader:read(stream) -> the next complete reply in the stream's input,
** taken from it: true, value | false, error message (a Redis error
** reply) | nil (incomplete) | nil, err (the bytes are not a valid reply,
** or more than max_reply: the connection is unusable). */
static int l_reader_read(lua_State *L) {
  reader *r = check_reader(L, 1);
  lstream *ls = evlua_check_stream(L, 2);
  evlua_buffer *in = &ls->s.in;
  size_t have = evlua_buffer_len(in);
  resp_scanner *sc = scanner_of(r);
  if (have == 0) {
    resp_scanner_reset(sc);
    luaL_pushfail(L);
    return 1;
  }
  const char *p = evlua_buffer_peek(in);
  long n = resp_scan(sc, p, have, &r->lim);
  if (n > 0 && (size_t)n > r->max_reply)
    return evlua_fail(L, "too_large", "reply larger than %I bytes",
                      (lua_Integer)r->max_reply);
  if (n > 0) {
    int nres = push_top(L, r, 1, p, (size_t)n);
    evlua_stream_take(&ls->s, (size_t)n);
    return nres;
  }
  if (n == RESP_NEED_MORE) {
    size_t cap = r->max_reply < ls->s.max_input ? r->max_reply
                                                : ls->s.max_input;
    if (have >= cap)
      return evlua_fail(L, "too_large", "reply larger than %I bytes",
                        (lua_Integer)cap);
    luaL_pushfail(L);   /* not complete yet */
    return 1;
  }
  return evlua_fail(L, "protocol", "protocol error: %s", resp_strerror(n));
}

/* reader:__tostring(): the type and the reply limit */
static int l_reader_tostring(lua_State *L) {
  reader *r = check_reader(L, 1);
  lua_pushfstring(L, "evlua.resp_reader (%p, max reply %I)", (void *)r,
                  (lua_Integer)r->max_reply);
  return 1;
}

/* Commands ============================================================ */


/* The bytes of argument idx: a string, or a number in decimal (a float
** in the shortest form that reads back the same: tostring's 14 digits
** would lose precision). */
static const char *arg_bytes(lua_State *L, int idx, size_t *len) {
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING) return lua_tolstring(L, idx, len);
  if (t == LUA_TNUMBER) {
    if (!lua_isinteger(L, idx)) {
      /* the shortest form that reads back as the same double */
      double d = (double)lua_tonumber(L, idx);
      char num[64];
      int n = 0;
      for (int digits = 15; digits <= 17; digits++) {
        n = snprintf(num, sizeof num, "%.*g", digits, d);
        if (strtod(num, NULL) == d) break;
      }
      lua_pushlstring(L, num, (size_t)n);
      lua_replace(L, idx);
    }
    return lua_tolstring(L, idx, len);
  }
  luaL_typeerror(L, idx, "string or number");
  return NULL;
}

/* A piece of the message: bytes of the scratch buffer (by offset, as the
** buffer may move while it grows) or a big argument's own bytes. */
typedef struct piece {
  const char *ext;    /* NULL: scratch bytes from off */
  size_t off, len;
} piece;

static void check_mem(lua_State *L, int r) {
  if (r != 0) luaL_error(L, "redis: out of memory");
}

/* Encode the command in args first..last into b; big arguments become
** pieces of their own. Returns the number of pieces. */
static int encode_command(lua_State *L, evlua_buffer *b, int first, int last,
                          piece *pieces) {
  int np = 0;
  size_t seg = evlua_buffer_len(b);   /* start of the current scratch piece */
  check_mem(L, resp_put_array_header(b, (size_t)(last - first + 1)));
  for (int i = first; i <= last; i++) {
    size_t len;
    const char *s = arg_bytes(L, i, &len);
    if (len >= BIG_ARGUMENT && np < MAX_IOV - 2) {
      check_mem(L, resp_put_bulk_header(b, len));
      pieces[np++] = (piece){ NULL, seg, evlua_buffer_len(b) - seg };
      pieces[np++] = (piece){ s, 0, len };
      seg = evlua_buffer_len(b);
      check_mem(L, evlua_buffer_append(b, "\r\n", 2));
    } else {
      check_mem(L, resp_put_bulk(b, s, len));
    }
  }
  pieces[np++] = (piece){ NULL, seg, evlua_buffer_len(b) - seg };
  return np;
}

/* stream:write_command(name, args...) -> as stream:write. Arguments are
** strings or numbers. */
static int l_write_command(lua_State *L) {
  lstream *ls = evlua_check_stream(L, 1);
  int top = lua_gettop(L);
  luaL_argcheck(L, top >= 2, 2, "command name expected");
  evlua_buffer *b = evlua_scratch(L);
  piece pieces[MAX_IOV];
  int np = encode_command(L, b, 2, top, pieces);
  struct iovec iov[MAX_IOV];
  int n = 0;
  for (int i = 0; i < np; i++) {
    if (pieces[i].len == 0) continue;
    iov[n].iov_base = pieces[i].ext
        ? (void *)(uintptr_t)pieces[i].ext
        : (void *)(b->data + b->start + pieces[i].off);
    iov[n++].iov_len = pieces[i].len;
  }
  int r = evlua_stream_write(&ls->s, iov, n);
  evlua_scratch_done(b);
  return evlua_push_write_result(L, ls, r);
}

/* core.resp_command(name, args...) -> the command encoded as a string
** (for tests and for building raw protocol by hand). */
static int l_encode_command(lua_State *L) {
  int top = lua_gettop(L);
  luaL_argcheck(L, top >= 1, 1, "command name expected");
  evlua_buffer *b = evlua_scratch(L);
  piece pieces[MAX_IOV];
  int np = encode_command(L, b, 1, top, pieces);
  luaL_Buffer out;
  luaL_buffinit(L, &out);
  for (int i = 0; i < np; i++) {
    if (pieces[i].ext) luaL_addlstring(&out, pieces[i].ext, pieces[i].len);
    else luaL_addlstring(&out, b->data + b->start + pieces[i].off,
                         pieces[i].len);
  }
  evlua_scratch_done(b);
  luaL_pushresult(&out);
  return 1;
}

void evlua_open_redis(lua_State *L) {
  static const luaL_Reg reader_methods[] = {
    { "read", l_reader_read },
    { NULL, NULL }
  };
  static const luaL_Reg reader_meta_funcs[] = {
    { "__tostring", l_reader_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg stream_methods[] = {
    { "write_command", l_write_command },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "resp_reader", l_reader_new },
    { "resp_command", l_encode_command },
    { NULL, NULL }
  };
  reader_meta = evlua_new_class(L, EVLUA_RESP_READER, reader_meta_funcs,
                                reader_methods);
  evlua_stream_add_methods(L, stream_methods);
  luaL_setfuncs(L, funcs, 0);
}
