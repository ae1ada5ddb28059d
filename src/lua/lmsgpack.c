/*
** lmsgpack.c - MessagePack for Lua values, and MessagePack-RPC framing on
** streams: messages are encoded into the runtime's scratch buffer and
** decoded straight from a stream's input buffer once complete.
**
** Lua to MessagePack: nil, booleans, integers (smallest int form), floats
** (float 64), strings (str when valid UTF-8, else bin), tables: an array
** when its keys are exactly 1..n (n >= 1) or it is empty, a map
** otherwise; a metatable field __msgpack = "array" or "map" forces the
** kind. Other types, cycles and nesting beyond the depth limit raise
** errors.
** MessagePack to Lua: str and bin become strings, unsigned integers above
** 2^63-1 become floats, ext values become { ext = type, data = bytes },
** nil map values drop their key.
*/
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>

#include "lstream.h"
#include "msgpack.h"
#include "runtime.h"

#define DEFAULT_MAX_DEPTH 128
#define DEFAULT_MAX_SIZE (16 * 1024 * 1024)

/* Encoding ============================================================ */

typedef struct encoder {
  lua_State *L;
  evlua_buffer *b;
  int max_depth;
  int depth;
  const void *path[MP_MAX_DEPTH];   /* tables being encoded, for cycles */
} encoder;

static void encode_value(encoder *e, int idx);

static void check_mem(encoder *e, int r) {
  if (r != 0) luaL_error(e->L, "msgpack: out of memory");
}

/* "array", "map" or NULL from the table's metatable field __msgpack */
static const char *forced_kind(lua_State *L, int idx) {
  const char *kind = NULL;
  if (luaL_getmetafield(L, idx, "__msgpack") != LUA_TNIL) {
    kind = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  return kind;
}

/* Count the keys of the table at idx; *sequence tells whether they are
** exactly 1..n with n = rawlen. */
static lua_Integer count_keys(lua_State *L, int idx, int *sequence) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0, in_range = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
    if (lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k >= 1 && k <= n) in_range++;
    }
  }
  *sequence = (count == n && in_range == n);
  return count;
}

static void encode_table(encoder *e, int idx) {
  lua_State *L = e->L;
  const void *self = lua_topointer(L, idx);
  for (int i = 0; i < e->depth; i++)
    if (e->path[i] == self) luaL_error(L, "msgpack: cannot encode a table cycle");
  if (e->depth >= e->max_depth)
    luaL_error(L, "msgpack: nesting deeper than %d levels", e->max_depth);
  luaL_checkstack(L, 4, "msgpack nesting");
  e->path[e->depth++] = self;
  int sequence;
  lua_Integer count = count_keys(L, idx, &sequence);
  const char *kind = forced_kind(L, idx);
  int as_array = kind ? kind[0] == 'a' : (sequence || count == 0);
  if (count > (lua_Integer)UINT32_MAX) luaL_error(L, "msgpack: table too large");
  if (as_array) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    check_mem(e, mp_put_array(e->b, (uint32_t)n));
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i);
      encode_value(e, lua_gettop(L));
      lua_pop(L, 1);
    }
  } else {
    check_mem(e, mp_put_map(e->b, (uint32_t)count));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      encode_value(e, lua_gettop(L) - 1);
      encode_value(e, lua_gettop(L));
      lua_pop(L, 1);
    }
  }
  e->depth--;
}

static void encode_value(encoder *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    check_mem(e, mp_put_nil(e->b));
    break;
  case LUA_TBOOLEAN:
    check_mem(e, mp_put_bool(e->b, lua_toboolean(L, idx)));
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      check_mem(e, mp_put_int(e->b, (int64_t)lua_tointeger(L, idx)));
    else
      check_mem(e, mp_put_double(e->b, (double)lua_tonumber(L, idx)));
    break;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (mp_valid_utf8(s, len)) check_mem(e, mp_put_str(e->b, s, len));
    else check_mem(e, mp_put_bin(e->b, s, len));
    break;
  }
  case LUA_TTABLE:
    encode_table(e, idx);
    break;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {   /* msgpack.null */
      check_mem(e, mp_put_nil(e->b));
      break;
    }
    /* fall through */
  default:
    luaL_error(L, "msgpack: cannot encode a %s value", luaL_typename(L, idx));
  }
}


static void encoder_init(encoder *e, lua_State *L, evlua_buffer *b,
                         int max_depth) {
  e->L = L;
  e->b = b;
  e->depth = 0;
  e->max_depth = max_depth;
}

static int check_depth(lua_State *L, int idx) {
  lua_Integer d = luaL_optinteger(L, idx, DEFAULT_MAX_DEPTH);
  luaL_argcheck(L, d >= 1 && d <= MP_MAX_DEPTH, idx, "depth out of range");
  return (int)d;
}

/* core.mp_encode(value [, max_depth]) -> string */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  encoder e;
  evlua_buffer *b = evlua_scratch(L);
  encoder_init(&e, L, b, check_depth(L, 2));
  lua_settop(L, 1);
  encode_value(&e, 1);
  lua_pushlstring(L, evlua_buffer_peek(b), evlua_buffer_len(b));
  evlua_scratch_done(b);
  return 1;
}

/* Decoding ============================================================ */

/* Lua 5.4 hashes integer and float keys without a seed (an integer k
** goes to bucket k % ((size-1)|1)), so a map whose keys an attacker
** picks to share a bucket costs O(n^2) to build: 80,000 such keys in an
** 800 KB message took 6.5 s. String keys are seeded, booleans are two,
** and integers k with |k| <= 2n in a map of n entries cannot crowd a
** bucket: the map's table is made with room for all n (no rehash while it
** fills), so the modulus is at least n-1 and at most 7 of them share a
** bucket. Every other key (an integer outside that range, a float that
** is not such an integer, a table) is "sparse": a map may have at most
** max_sparse of them and a message max_sparse_total in all, which bounds
** the collision work of a message to max_sparse * max_sparse_total
** steps and to max_sparse per byte (docs/rpc.md has the figures). */

#define DEFAULT_MAX_SPARSE 256
#define DEFAULT_MAX_SPARSE_TOTAL 4096
#define MAP_PREALLOC_MAX (1 << 26)   /* entries of room made up front */

typedef struct decoder {
  lua_State *L;
  const char *end;           /* of the message */
  lua_Integer max_sparse;    /* sparse keys one map may have */
  lua_Integer sparse_left;   /* sparse keys the rest of the message may have */
  lua_Integer max_total;     /* for the error message */
  int limits;                /* stack index of a table with the two limits
                             ** as fields, read at the first sparse key
                             ** (most messages have none); 0: set */
  int over;                  /* the limit passed: 1 per map, 2 in all */
} decoder;

static int decode_value(decoder *d, const char **p);

static void decoder_init(decoder *d, lua_State *L, const char *end,
                         lua_Integer max_sparse, lua_Integer max_total) {
  d->L = L;
  d->end = end;
  d->max_sparse = max_sparse;
  d->sparse_left = max_total;
  d->max_total = max_total;
  d->limits = 0;
  d->over = 0;
}

/* A field of the limits table: its default when nil, else a
** non-negative integer (anything else raises). */
static lua_Integer limit_field(lua_State *L, int t, const char *name,
                               lua_Integer def) {
  lua_getfield(L, t, name);
  int isnum;
  lua_Integer n = lua_tointegerx(L, -1, &isnum);
  int none = lua_isnil(L, -1);
  lua_pop(L, 1);
  if (none) return def;
  if (!isnum || n < 0)
    luaL_error(L, "msgpack: %s must be a non-negative integer", name);
  return n;
}

/* The limits from the table d->limits, at the first sparse key. */
static void load_limits(decoder *d) {
  lua_State *L = d->L;
  d->max_sparse = limit_field(L, d->limits, "max_sparse_keys",
                              DEFAULT_MAX_SPARSE);
  d->max_total = limit_field(L, d->limits, "max_sparse_total",
                             DEFAULT_MAX_SPARSE_TOTAL);
  d->sparse_left = d->max_total;
  d->limits = 0;
}

/* Whether the map key k (of a map of n entries) may share its bucket
** with many others: see above. */
static int sparse_key(const mp_token *k, uint32_t n) {
  lua_Integer range = 2 * (lua_Integer)n;
  switch (k->type) {
  case MP_STR: case MP_BIN: case MP_BOOL: case MP_NIL:
    return 0;
  case MP_INT:
    return k->v.i < -range || k->v.i > range;
  case MP_FLOAT:   /* an integral float is an integer key in a Lua table */
    return !(k->v.f >= (double)-range && k->v.f <= (double)range &&
             k->v.f == floor(k->v.f)) && !isnan(k->v.f);
  default:
    return 1;
  }
}

/* The budgets of sparse keys were passed: -1, the caller fails. */
static int sparse_failure(decoder *d, int per_map) {
  d->over = per_map ? 1 : 2;
  return -1;
}

static int decode_map(decoder *d, uint32_t n, const char **p) {
  lua_State *L = d->L;
  lua_createtable(L, 0, (int)(n < MAP_PREALLOC_MAX ? n : MAP_PREALLOC_MAX));
  lua_Integer sparse = 0;
  for (uint32_t i = 0; i < n; i++) {
    mp_token k;
    const char *at = *p;
    if (mp_read_token(at, (size_t)(d->end - at), &k) <= 0)
      luaL_error(L, "msgpack: invalid data");   /* not reached */
    if (sparse_key(&k, n)) {
      if (d->limits) load_limits(d);
      if (++sparse > d->max_sparse) return sparse_failure(d, 1);
      if (--d->sparse_left < 0) return sparse_failure(d, 0);
    }
    if (decode_value(d, p) < 0 || decode_value(d, p) < 0) return -1;
    if (k.type == MP_NIL || (k.type == MP_FLOAT && isnan(k.v.f))) {
      lua_pop(L, 2);   /* no Lua table can hold such a key */
      continue;
    }
    lua_rawset(L, -3);
  }
  return 0;
}

/* Push the value at *p (known to be complete and within the depth limit)
** and advance *p past it: 0, or -1 when a sparse key budget was passed
** (d->over says which; the stack holds what was pushed so far). */
static int decode_value(decoder *d, const char **p) {
  lua_State *L = d->L;
  mp_token t;
  long used = mp_read_token(*p, (size_t)(d->end - *p), &t);
  if (used <= 0) luaL_error(L, "msgpack: invalid data");   /* not reached */
  *p += used;
  luaL_checkstack(L, 3, "msgpack nesting");
  switch (t.type) {
  case MP_NIL: lua_pushnil(L); break;
  case MP_BOOL: lua_pushboolean(L, t.v.b); break;
  case MP_INT: lua_pushinteger(L, (lua_Integer)t.v.i); break;
  case MP_UINT: lua_pushnumber(L, (lua_Number)t.v.u); break;
  case MP_FLOAT: lua_pushnumber(L, (lua_Number)t.v.f); break;
  case MP_STR: case MP_BIN: lua_pushlstring(L, t.v.s.p, t.v.s.len); break;
  case MP_EXT:
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, t.v.s.ext_type);
    lua_setfield(L, -2, "ext");
    lua_pushlstring(L, t.v.s.p, t.v.s.len);
    lua_setfield(L, -2, "data");
    break;
  case MP_ARRAY:
    lua_createtable(L, (int)(t.v.n < 1024 ? t.v.n : 1024), 0);
    for (uint32_t i = 1; i <= t.v.n; i++) {
      if (decode_value(d, p) < 0) return -1;
      lua_rawseti(L, -2, (lua_Integer)i);
    }
    break;
  case MP_MAP:
    return decode_map(d, t.v.n, p);
  }
  return 0;
}

/* nil, message, code after decode_value failed; the stack is cut to
** base first. */
static int decode_failure(lua_State *L, int base, const decoder *d) {
  lua_settop(L, base);
  if (d->over == 1)
    return evlua_fail(L, "too_large", "a map has more than %I sparse keys "
                      "(max_sparse_keys)", d->max_sparse);
  return evlua_fail(L, "too_large", "more than %I sparse map keys in a "
                    "message (max_sparse_total)", d->max_total);
}

static lua_Integer check_limit(lua_State *L, int idx, lua_Integer def) {
  lua_Integer n = luaL_optinteger(L, idx, def);
  luaL_argcheck(L, n >= 0, idx, "non-negative limit expected");
  return n;
}

/* nil, message, code for a failed mp_value_length / mp_scan. */
static int length_error(lua_State *L, long r) {
  if (r == MP_NEED_MORE)
    return evlua_fail(L, "truncated", "truncated msgpack data");
  return evlua_fail(L, "protocol", "%s", r == MP_TOO_DEEP
                    ? "nesting too deep" : "invalid msgpack data");
}

/* core.mp_decode(s [, pos [, max_depth [, max_sparse_keys
**                [, max_sparse_total]]]]) -> value, next_pos | nil, err */
static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Integer pos = luaL_optinteger(L, 2, 1);
  int max_depth = check_depth(L, 3);
  lua_Integer max_sparse = check_limit(L, 4, DEFAULT_MAX_SPARSE);
  lua_Integer max_total = check_limit(L, 5, DEFAULT_MAX_SPARSE_TOTAL);
  luaL_argcheck(L, pos >= 1 && (size_t)pos <= len + 1, 2, "out of range");
  const char *p = s + pos - 1;
  long n = mp_value_length(p, len - (size_t)(pos - 1), max_depth);
  if (n <= 0) return length_error(L, n);
  const char *end = p + n;
  decoder d;
  decoder_init(&d, L, end, max_sparse, max_total);
  int base = lua_gettop(L);
  if (decode_value(&d, &p) < 0) return decode_failure(L, base, &d);
  lua_pushinteger(L, (lua_Integer)(end - s) + 1);
  return 2;
}

/* MessagePack-RPC on streams ========================================== */

#define EVLUA_SCANNER "evlua.mp_scanner"
#define DEFAULT_MAX_PARAMS 4096
#define MAX_PARAMS_CEILING 100000   /* each param is a Lua stack slot, in
                                    ** several frames on its way */

static const void *scanner_meta;

/* Where a stream's next message stands, between reads: the scan goes on
** from there instead of walking the whole buffer again on every read,
** which for a big message of small items would cost O(n^2). */
typedef struct lscanner {
  mp_scanner sc;
  uint64_t origin;   /* stream offset of the scan's first byte */
} lscanner;

/* core.mp_scanner() -> a scanner for stream:read_rpc */
static int l_scanner_new(lua_State *L) {
  lscanner *s = (lscanner *)lua_newuserdatauv(L, sizeof *s, 0);
  mp_scan_start(&s->sc);
  s->origin = 0;
  luaL_setmetatable(L, EVLUA_SCANNER);
  return 1;
}

static int l_scanner_tostring(lua_State *L) {
  lscanner *s = (lscanner *)evlua_checkudata(L, 1, scanner_meta,
                                              EVLUA_SCANNER);
  lua_pushfstring(L, "evlua.mp_scanner (%p)", (void *)s);
  return 1;
}

static size_t check_max_size(lua_State *L, int idx) {
  lua_Integer n = luaL_optinteger(L, idx, DEFAULT_MAX_SIZE);
  luaL_argcheck(L, n > 0, idx, "positive size expected");
  return (size_t)n;
}

/* Offset in the stream of the first byte of its input buffer. */
static uint64_t input_origin(lstream *ls) {
  return ls->s.bytes_in - evlua_buffer_len(&ls->s.in);
}

/* The scanner at idx set for the stream's next message, or NULL (none
** given: the caller scans from the start with one of its own). */
static mp_scanner *stream_scanner(lua_State *L, int idx, lstream *ls) {
  if (lua_isnoneornil(L, idx)) return NULL;
  lscanner *s = (lscanner *)evlua_checkudata(L, idx, scanner_meta,
                                              EVLUA_SCANNER);
  uint64_t origin = input_origin(ls);
  if (s->origin != origin) {   /* a message was taken since: start over */
    mp_scan_start(&s->sc);
    s->origin = origin;
  }
  return &s->sc;
}

static int too_large(lua_State *L, size_t max_size) {
  evlua_fail(L, "too_large", "message larger than %I bytes",
             (lua_Integer)max_size);
  return -1;
}

/* Length of the complete message at the front of the stream's input,
** 0 if more bytes are needed, or -1 with nil, message, code pushed. A
** message whose headers already announce more than max_size bytes fails
** at once, before the bytes arrive. sc (may be NULL) holds the scan. */
static long message_length(lua_State *L, lstream *ls, size_t max_size,
                           int max_depth, mp_scanner *sc) {
  size_t have = evlua_buffer_len(&ls->s.in);
  if (have == 0) return 0;
  mp_scanner local;
  if (sc == NULL) {
    sc = &local;
    mp_scan_start(sc);
  }
  long n = mp_scan(sc, evlua_buffer_peek(&ls->s.in), have, max_depth);
  if (n != MP_NEED_MORE) mp_scan_start(sc);   /* the next scan is anew */
  if (n == MP_NEED_MORE) return sc->need > max_size ? too_large(L, max_size) : 0;
  if (n < 0) {
    length_error(L, n);
    return -1;
  }
  if ((size_t)n > max_size) return too_large(L, max_size);
  return n;
}

/* stream:read_msgpack([max_size [, max_depth [, max_sparse_keys
**                     [, max_sparse_total]]]]) -> value | nil (not
** complete yet) | nil, err (the stream holds bad or oversized data; a
** value past the sparse key limits is taken from the stream) */
static int l_read_msgpack(lua_State *L) {
  lstream *ls = evlua_check_stream(L, 1);
  size_t max_size = check_max_size(L, 2);
  int max_depth = check_depth(L, 3);
  lua_Integer max_sparse = check_limit(L, 4, DEFAULT_MAX_SPARSE);
  lua_Integer max_total = check_limit(L, 5, DEFAULT_MAX_SPARSE_TOTAL);
  lua_settop(L, 1);
  long n = message_length(L, ls, max_size, max_depth, NULL);
  if (n < 0) return 3;   /* message_length's nil, message, code */
  if (n == 0) {
    luaL_pushfail(L);
    return 1;
  }
  const char *p = evlua_buffer_peek(&ls->s.in);
  decoder d;
  decoder_init(&d, L, p + n, max_sparse, max_total);
  int r = decode_value(&d, &p);
  evlua_stream_take(&ls->s, (size_t)n);
  if (r < 0) return decode_failure(L, 1, &d);
  return 1;
}

/* Read a token of the wanted type for the fixed RPC fields. A method
** name may come as bin as well as str (pynvim sends bin). */
static int rpc_field(const char **p, const char *end, mp_type want,
                     mp_token *t) {
  long used = mp_read_token(*p, (size_t)(end - *p), t);
  if (used <= 0) return 0;
  if (t->type != want && !(want == MP_STR && t->type == MP_BIN)) return 0;
  *p += used;
  return 1;
}

/* Push the count of the params array at *p, then its elements as
** separate values; past max_params, the count alone (the caller answers
** with an error: the elements would only be dropped). */
static int push_params(decoder *d, const char **p, lua_Integer max_params) {
  lua_State *L = d->L;
  mp_token t;
  if (!rpc_field(p, d->end, MP_ARRAY, &t)) return -1;
  lua_pushinteger(L, t.v.n);
  if ((lua_Integer)t.v.n > max_params) return (int)t.v.n;
  luaL_checkstack(L, (int)t.v.n + 4, "too many rpc parameters");
  for (uint32_t i = 0; i < t.v.n; i++)
    if (decode_value(d, p) < 0) return -2;
  return (int)t.v.n;
}

static lua_Integer check_max_params(lua_State *L, int idx) {
  lua_Integer n = luaL_optinteger(L, idx, DEFAULT_MAX_PARAMS);
  luaL_argcheck(L, n >= 0 && n <= MAX_PARAMS_CEILING, idx,
                "max_params out of range");
  return n;
}

/* A request stored as queue[tail+1..]: the value at index owner, msgid,
** method, nparams, params... (evlua.rpc's request queue), then 0 and the
** new tail pushed: 2. The values go straight into the table, not through
** the Lua stack and the caller's varargs. 0: more params than max_params
** (not stored), -1: no params array, -2: past a sparse key limit (the
** slots filled are emptied again). */
static int queue_request(decoder *d, int queue, int owner,
                         lua_Integer tail, const char **p,
                         const mp_token *id, const mp_token *method,
                         lua_Integer max_params) {
  lua_State *L = d->L;
  mp_token t;
  const char *at = *p;
  if (!rpc_field(&at, d->end, MP_ARRAY, &t)) return -1;
  if ((lua_Integer)t.v.n > max_params) return 0;   /* the caller refuses it */
  *p = at;
  lua_pushvalue(L, owner);
  lua_rawseti(L, queue, tail + 1);
  lua_pushinteger(L, (lua_Integer)id->v.i);
  lua_rawseti(L, queue, tail + 2);
  lua_pushlstring(L, method->v.s.p, method->v.s.len);
  lua_rawseti(L, queue, tail + 3);
  lua_pushinteger(L, t.v.n);
  lua_rawseti(L, queue, tail + 4);
  lua_Integer first = tail + 1;
  tail += 4;
  for (uint32_t i = 0; i < t.v.n; i++) {
    if (decode_value(d, p) < 0) {
      lua_pushnil(L);   /* the slots hold no stale references then */
      for (lua_Integer j = first; j <= tail; j++) {
        lua_pushnil(L);
        lua_rawseti(L, queue, j);
      }
      lua_pop(L, 1);
      return -2;
    }
    lua_rawseti(L, queue, ++tail);
  }
  lua_pushinteger(L, 0);
  lua_pushinteger(L, tail);
  return 2;
}

/* stream:read_rpc([max_size [, max_depth [, max_params [, scanner
**                 [, queue, tail [, owner [, responses_only]]]]]]])
** -> one message, as values:
**   request:      0, msgid, method, nparams, params...
**   response:     1, msgid, error, result
**   notification: 2, method, nparams, params...
** (with nparams > max_params, the params are left out)
** | nil (not complete yet) | nil, err (bad message: the caller closes).
** With a queue table, a request with at most max_params params is stored
** in it instead (see queue_request) and the values are 0, the new tail.
** A scanner (core.mp_scanner()) keeps the walk of a message that comes
** in pieces from one call to the next. While the stream's output is
** above its high-water mark, or with responses_only, a complete request
** or notification is left in the stream and the result is false (the
** caller pauses serving, and reads its responses on). A table owner (the
** rpc channel) has the sparse key limits as fields max_sparse_keys and
** max_sparse_total (nil: the defaults). */
static int l_read_rpc(lua_State *L) {
  lstream *ls = evlua_check_stream(L, 1);
  size_t max_size = check_max_size(L, 2);
  int max_depth = check_depth(L, 3);
  lua_Integer max_params = check_max_params(L, 4);
  mp_scanner *sc = stream_scanner(L, 5, ls);
  int queue = lua_istable(L, 6) ? 6 : 0, owner = queue ? 7 : 2;
  lua_Integer tail = queue ? luaL_checkinteger(L, 7) : 0;
  int responses_only = !queue && lua_toboolean(L, 9);
  lua_settop(L, 8);
  lua_replace(L, owner);   /* the owner (arg 8) where tail (or max_size) was */
  if (!queue) lua_settop(L, owner);
  long n = message_length(L, ls, max_size, max_depth, sc);
  if (n < 0) return 3;   /* message_length's nil, message, code */
  if (n == 0) {
    luaL_pushfail(L);
    return 1;
  }
  const char *p = evlua_buffer_peek(&ls->s.in), *end = p + n;
  decoder d;
  decoder_init(&d, L, end, DEFAULT_MAX_SPARSE, DEFAULT_MAX_SPARSE_TOTAL);
  if (lua_istable(L, owner)) d.limits = owner;
  mp_token t, kind, id, method;
  int ok = rpc_field(&p, end, MP_ARRAY, &t) && rpc_field(&p, end, MP_INT, &kind);
  if (ok && (responses_only || ls->s.full) &&
      (kind.v.i == 0 || kind.v.i == 2)) {
    lua_pushboolean(L, 0);   /* left for when serving resumes */
    return 1;
  }
  int base = lua_gettop(L);
  int r = 0;   /* < 0: a limit of the values was passed */
  if (ok && kind.v.i == 0 && t.v.n == 4 && rpc_field(&p, end, MP_INT, &id) &&
      rpc_field(&p, end, MP_STR, &method)) {
    int queued = 0;
    if (queue)
      queued = queue_request(&d, queue, owner, tail, &p, &id, &method,
                             max_params);
    if (queued == -1) {
      ok = 0;
    } else if (queued < 0) {
      r = -1;
    } else if (queued == 0) {
      lua_pushinteger(L, 0);
      lua_pushinteger(L, (lua_Integer)id.v.i);
      lua_pushlstring(L, method.v.s.p, method.v.s.len);
      r = push_params(&d, &p, max_params);
      ok = r != -1;
    }
  } else if (ok && kind.v.i == 1 && t.v.n == 4 &&
             rpc_field(&p, end, MP_INT, &id)) {
    lua_pushinteger(L, 1);
    lua_pushinteger(L, (lua_Integer)id.v.i);
    r = decode_value(&d, &p) < 0 || decode_value(&d, &p) < 0 ? -2 : 0;
  } else if (ok && kind.v.i == 2 && t.v.n == 3 &&
             rpc_field(&p, end, MP_STR, &method)) {
    lua_pushinteger(L, 2);
    lua_pushlstring(L, method.v.s.p, method.v.s.len);
    r = push_params(&d, &p, max_params);
    ok = r != -1;
  } else {
    ok = 0;
  }
  evlua_stream_take(&ls->s, (size_t)n);
  if (!ok) {
    lua_settop(L, base);
    return evlua_fail(L, "protocol", "invalid rpc message");
  }
  if (r < 0 && d.over) return decode_failure(L, base, &d);
  return lua_gettop(L) - base;
}

/* Encode the values at first..last as consecutive array items. */
static void encode_range(encoder *e, int first, int last) {
  for (int i = first; i <= last; i++) encode_value(e, i);
}

/* Send the scratch buffer on the stream; results as stream:write. */
static int send_scratch(lua_State *L, lstream *ls, evlua_buffer *b) {
  struct iovec iov = { b->data + b->start, evlua_buffer_len(b) };
  int r = evlua_stream_write(&ls->s, &iov, 1);
  evlua_scratch_done(b);
  return evlua_push_write_result(L, ls, r);
}

/* Start an RPC message in the scratch buffer: [kind, ...] of n items. */
static evlua_buffer *begin_message(lua_State *L, encoder *e, uint32_t n,
                                   int kind) {
  evlua_buffer *b = evlua_scratch(L);
  encoder_init(e, L, b, DEFAULT_MAX_DEPTH);
  check_mem(e, mp_put_array(b, n));
  check_mem(e, mp_put_int(b, kind));
  return b;
}

/* stream:write_rpc_request(msgid, method, ...) -> as stream:write */
static int l_write_request(lua_State *L) {
  lstream *ls = evlua_check_stream(L, 1);
  lua_Integer msgid = luaL_checkinteger(L, 2);
  size_t len;
  const char *method = luaL_checklstring(L, 3, &len);
  int top = lua_gettop(L);
  encoder e;
  evlua_buffer *b = begin_message(L, &e, 4, 0);
  check_mem(&e, mp_put_int(b, (int64_t)msgid));
  check_mem(&e, mp_put_str(b, method, len));
  check_mem(&e, mp_put_array(b, (uint32_t)(top - 3)));
  encode_range(&e, 4, top);
  return send_scratch(L, ls, b);
}

/* stream:write_rpc_response(msgid, error, results...) -> as stream:write
** The result is nil without results, the value with one, else an array of
** all of them (nils included). */
static int l_write_response(lua_State *L) {
  lstream *ls = evlua_check_stream(L, 1);
  lua_Integer msgid = luaL_checkinteger(L, 2);
  if (lua_gettop(L) < 3) lua_settop(L, 3);
  int nresults = lua_gettop(L) - 3;
  encoder e;
  evlua_buffer *b = begin_message(L, &e, 4, 1);
  check_mem(&e, mp_put_int(b, (int64_t)msgid));
  encode_value(&e, 3);
  if (nresults == 0) check_mem(&e, mp_put_nil(b));
  else if (nresults == 1) encode_value(&e, 4);
  else {
    check_mem(&e, mp_put_array(b, (uint32_t)nresults));
    encode_range(&e, 4, lua_gettop(L));
  }
  return send_scratch(L, ls, b);
}

/* stream:write_rpc_notify(method, ...) -> as stream:write */
static int l_write_notify(lua_State *L) {
  lstream *ls = evlua_check_stream(L, 1);
  size_t len;
  const char *method = luaL_checklstring(L, 2, &len);
  int top = lua_gettop(L);
  encoder e;
  evlua_buffer *b = begin_message(L, &e, 3, 2);
  check_mem(&e, mp_put_str(b, method, len));
  check_mem(&e, mp_put_array(b, (uint32_t)(top - 2)));
  encode_range(&e, 3, top);
  return send_scratch(L, ls, b);
}

void evlua_open_msgpack(lua_State *L) {
  static const luaL_Reg stream_methods[] = {
    { "read_msgpack", l_read_msgpack },
    { "read_rpc", l_read_rpc },
    { "write_rpc_request", l_write_request },
    { "write_rpc_response", l_write_response },
    { "write_rpc_notify", l_write_notify },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "mp_scanner", l_scanner_new },
    { "mp_encode", l_encode },
    { "mp_decode", l_decode },
    { NULL, NULL }
  };
  static const luaL_Reg scanner_mt[] = {
    { "__tostring", l_scanner_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg no_methods[] = { { NULL, NULL } };
  scanner_meta = evlua_new_class(L, EVLUA_SCANNER, scanner_mt, no_methods);
  evlua_stream_add_methods(L, stream_methods);
  luaL_setfuncs(L, funcs, 0);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "mp_null");
}
