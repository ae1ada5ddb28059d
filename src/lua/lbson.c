/*
** lbson.c - Lua values to and from BSON, built and walked with libbson
** (docs/bson.md states the mapping). The typed values (ObjectId, date,
** binary, regex, decimal128, timestamp, int64/int32, minkey/maxkey) are
** small immutable userdata; ObjectIds are interned per state, so two with
** the same bytes are the same value (== and table keys work). bson.null
** is the NULL light userdata (the same value as msgpack.null).
**
** The codec functions use only Lua, libbson and three runtime helpers
** (evlua_new_class, evlua_checkudata, evlua_fail), so the fuzzer links
** this file alone.
*/
#include <lauxlib.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lbson.h"
#include "runtime.h"

/* Strict UTF-8, NUL bytes allowed: libbson's check with allow_null would
** also let the overlong C0 80 through, so each run between NULs is checked
** without it. */
static int valid_utf8(const char *s, size_t len) {
  const char *end = s + len;
  while (s < end) {
    const char *nul = memchr(s, 0, (size_t)(end - s));
    size_t n = (size_t)((nul ? nul : end) - s);
    if (!bson_utf8_validate(s, n, false)) return 0;
    s += n + (nul != NULL);
  }
  return 1;
}

/* Typed values ======================================================= */

enum {
  T_OID, T_DATE, T_BINARY, T_REGEX, T_DECIMAL, T_TIMESTAMP, T_INT64,
  T_INT32, T_MINKEY, T_MAXKEY, T_COUNT
};

static const char *const class_names[T_COUNT] = {
  "evlua.bson.objectid", "evlua.bson.date", "evlua.bson.binary",
  "evlua.bson.regex", "evlua.bson.decimal128", "evlua.bson.timestamp",
  "evlua.bson.int64", "evlua.bson.int32", "evlua.bson.minkey",
  "evlua.bson.maxkey"
};

/* MongoDB's $type aliases, what bson.type answers. */
static const char *const type_names[T_COUNT] = {
  "objectId", "date", "binData", "regex", "decimal", "timestamp", "long",
  "int", "minKey", "maxKey"
};

static const void *metas[T_COUNT];   /* for evlua_checkudata */
static const void *array_meta, *doc_meta;

typedef struct ldate { int64_t ms; } ldate;
typedef struct lbinary { bson_subtype_t subtype; } lbinary;  /* uv 1: data */
typedef struct lregex { int unused; } lregex;   /* uv 1: pattern, 2: options */
typedef struct ltimestamp { uint32_t t, i; } ltimestamp;
typedef struct lint { int64_t v; } lint;

/* The per-state table (in the registry under &state_key) holding what the
** codec pushes: the array and doc metatables, the ObjectId cache, the
** minkey/maxkey singletons and the class metatables. */
static const char state_key = 0;
enum { S_ARRAY = 1, S_DOC, S_OIDS, S_MINKEY, S_MAXKEY, S_META };

static int push_state(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key);
  return lua_gettop(L);
}

/* Which typed value the userdata at idx is, or -1. */
static int class_of(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return -1;
  const void *mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  for (int t = 0; t < T_COUNT; t++)
    if (metas[t] == mt) return t;
  return -1;
}

static void *check_class(lua_State *L, int idx, int t) {
  return evlua_checkudata(L, idx, metas[t], class_names[t]);
}

static const bson_oid_t *check_oid(lua_State *L, int idx) {
  return (const bson_oid_t *)check_class(L, idx, T_OID);
}

/* A new userdata of class t (size bytes, nuv user values) on the stack. */
static void *new_value(lua_State *L, int state, int t, size_t size,
                       int nuv) {
  void *p = lua_newuserdatauv(L, size, nuv);
  lua_rawgeti(L, state, S_META + t);
  lua_setmetatable(L, -2);
  return p;
}

/* Push the ObjectId with these bytes: the cached one if it exists. */
static void push_oid(lua_State *L, int state, const bson_oid_t *oid) {
  lua_rawgeti(L, state, S_OIDS);
  lua_pushlstring(L, (const char *)oid->bytes, sizeof oid->bytes);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) != LUA_TNIL) {   /* cache, key, oid */
    lua_replace(L, -3);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  bson_oid_t *u = (bson_oid_t *)new_value(L, state, T_OID, sizeof *u, 0);
  bson_oid_copy(oid, u);
  lua_pushvalue(L, -1);
  lua_insert(L, -4);                     /* oid, cache, key, oid */
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static void push_date(lua_State *L, int state, int64_t ms) {
  ldate *d = (ldate *)new_value(L, state, T_DATE, sizeof *d, 0);
  d->ms = ms;
}

/* Binary data: the string at the top of the stack becomes its data. */
static void push_binary(lua_State *L, int state, bson_subtype_t subtype) {
  lbinary *b = (lbinary *)new_value(L, state, T_BINARY, sizeof *b, 1);
  b->subtype = subtype;
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, 1);
}

static void push_regex(lua_State *L, int state, const char *pattern,
                       const char *options) {
  new_value(L, state, T_REGEX, sizeof(lregex), 2);
  lua_pushstring(L, pattern);
  lua_setiuservalue(L, -2, 1);
  lua_pushstring(L, options);
  lua_setiuservalue(L, -2, 2);
}

static void push_decimal(lua_State *L, int state,
                         const bson_decimal128_t *dec) {
  bson_decimal128_t *d = (bson_decimal128_t *)new_value(
    L, state, T_DECIMAL, sizeof *d, 0);
  *d = *dec;
}

static void push_timestamp(lua_State *L, int state, uint32_t t, uint32_t i) {
  ltimestamp *ts = (ltimestamp *)new_value(L, state, T_TIMESTAMP,
                                           sizeof *ts, 0);
  ts->t = t;
  ts->i = i;
}

/* Constructors ======================================================= */

/* core.bson_oid([hex]) -> a new ObjectId, or the one of these 24 digits */
static int l_oid(lua_State *L) {
  bson_oid_t oid;
  if (lua_isnoneornil(L, 1)) {
    bson_oid_init(&oid, NULL);
  } else {
    size_t len;
    const char *hex = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, bson_oid_is_valid(hex, len), 1,
                  "24 hexadecimal digits expected");
    bson_oid_init_from_string(&oid, hex);
  }
  push_oid(L, push_state(L), &oid);
  return 1;
}

/* core.bson_date([ms]) -> a date, ms milliseconds since the epoch (now) */
static int l_date(lua_State *L) {
  int64_t ms;
  if (lua_isnoneornil(L, 1)) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  } else {
    ms = (int64_t)luaL_checkinteger(L, 1);
  }
  push_date(L, push_state(L), ms);
  return 1;
}

/* core.bson_binary(data [, subtype]) -> binary data (subtype 0 to 255) */
static int l_binary(lua_State *L) {
  size_t len;
  luaL_checklstring(L, 1, &len);
  lua_Integer subtype = luaL_optinteger(L, 2, BSON_SUBTYPE_BINARY);
  luaL_argcheck(L, subtype >= 0 && subtype <= 255, 2,
                "subtype from 0 to 255 expected");
  luaL_argcheck(L, len <= INT32_MAX - 64, 1, "data too long");
  int state = push_state(L);
  lua_pushvalue(L, 1);
  push_binary(L, state, (bson_subtype_t)subtype);
  return 1;
}

/* A regex's pattern or options: a C string (no NUL) of valid UTF-8. */
static const char *check_cstring(lua_State *L, int idx, const char *def) {
  size_t len;
  const char *s = def ? luaL_optlstring(L, idx, def, &len)
                      : luaL_checklstring(L, idx, &len);
  luaL_argcheck(L, memchr(s, 0, len) == NULL, idx, "string without NUL expected");
  luaL_argcheck(L, bson_utf8_validate(s, len, false), idx,
                "valid UTF-8 expected");
  return s;
}

/* core.bson_regex(pattern [, options]) -> a regular expression */
static int l_regex(lua_State *L) {
  const char *pattern = check_cstring(L, 1, NULL);
  const char *options = check_cstring(L, 2, "");
  /* libbson would drop other letters without a word */
  luaL_argcheck(L, strspn(options, "ilmsux") == strlen(options), 2,
                "options from \"ilmsux\" expected");
  push_regex(L, push_state(L), pattern, options);
  return 1;
}

/* core.bson_decimal128(s) -> the Decimal128 that libbson reads in s */
static int l_decimal(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  bson_decimal128_t dec;
  luaL_argcheck(L, len <= INT_MAX &&
                bson_decimal128_from_string_w_len(s, (int)len, &dec), 1,
                "decimal number expected");
  push_decimal(L, push_state(L), &dec);
  return 1;
}

static uint32_t check_u32(lua_State *L, int idx) {
  lua_Integer n = luaL_checkinteger(L, idx);
  luaL_argcheck(L, n >= 0 && n <= (lua_Integer)UINT32_MAX, idx,
                "integer from 0 to 2^32-1 expected");
  return (uint32_t)n;
}

/* core.bson_timestamp(t, i) -> a timestamp (seconds, increment) */
static int l_timestamp(lua_State *L) {
  uint32_t t = check_u32(L, 1), i = check_u32(L, 2);
  push_timestamp(L, push_state(L), t, i);
  return 1;
}

static int new_int(lua_State *L, int t, lua_Integer v) {
  lint *n = (lint *)new_value(L, push_state(L), t, sizeof *n, 0);
  n->v = (int64_t)v;
  return 1;
}

/* core.bson_int64(n) -> n, encoded as an int64 whatever its size */
static int l_int64(lua_State *L) {
  return new_int(L, T_INT64, luaL_checkinteger(L, 1));
}

/* core.bson_int32(n) -> n, encoded as an int32 (it must fit) */
static int l_int32(lua_State *L) {
  lua_Integer v = luaL_checkinteger(L, 1);
  luaL_argcheck(L, v >= INT32_MIN && v <= INT32_MAX, 1,
                "integer from -2^31 to 2^31-1 expected");
  return new_int(L, T_INT32, v);
}

/* Methods and metamethods ============================================= */

static int l_oid_hex(lua_State *L) {
  char hex[25];
  bson_oid_to_string(check_oid(L, 1), hex);
  lua_pushlstring(L, hex, 24);
  return 1;
}

static int l_oid_time(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)bson_oid_get_time_t(check_oid(L, 1)));
  return 1;
}

static int l_oid_bytes(lua_State *L) {
  lua_pushlstring(L, (const char *)check_oid(L, 1)->bytes, 12);
  return 1;
}

static int l_oid_tostring(lua_State *L) {
  char hex[25];
  bson_oid_to_string(check_oid(L, 1), hex);
  lua_pushfstring(L, "%s (%s)", class_names[T_OID], hex);
  return 1;
}

/* Compare two values of class t: -1, 0, 1, or 2 if either is another
** kind of value (== is then false; < raises, as for unlike types). */
static int compare(lua_State *L, int t) {
  if (class_of(L, 1) != t || class_of(L, 2) != t) return 2;
  const void *a = lua_touserdata(L, 1), *b = lua_touserdata(L, 2);
  int64_t x = 0, y = 0;
  switch (t) {
  case T_OID: {
    int c = bson_oid_compare((const bson_oid_t *)a, (const bson_oid_t *)b);
    return (c > 0) - (c < 0);
  }
  case T_DATE: x = ((const ldate *)a)->ms; y = ((const ldate *)b)->ms; break;
  case T_TIMESTAMP: {
    const ltimestamp *p = (const ltimestamp *)a, *q = (const ltimestamp *)b;
    x = ((int64_t)p->t << 32) | p->i;
    y = ((int64_t)q->t << 32) | q->i;
    break;
  }
  case T_INT64: case T_INT32:
    x = ((const lint *)a)->v;
    y = ((const lint *)b)->v;
    break;
  case T_DECIMAL:
    return memcmp(a, b, sizeof(bson_decimal128_t)) != 0;
  default:   /* binary, regex: compare the user values */
    for (int i = 1; i <= (t == T_REGEX ? 2 : 1); i++) {
      lua_getiuservalue(L, 1, i);
      lua_getiuservalue(L, 2, i);
      int same = lua_rawequal(L, -1, -2);
      lua_pop(L, 2);
      if (!same) return 1;
    }
    if (t == T_BINARY)
      return ((const lbinary *)a)->subtype != ((const lbinary *)b)->subtype;
    return 0;
  }
  return (x > y) - (x < y);
}

static int push_eq(lua_State *L, int t) {
  lua_pushboolean(L, compare(L, t) == 0);
  return 1;
}

static int push_lt(lua_State *L, int t, int or_equal) {
  int c = compare(L, t);
  if (c == 2) {
    return luaL_error(L, "attempt to compare %s with %s",
                      luaL_typename(L, 1), luaL_typename(L, 2));
  }
  lua_pushboolean(L, c < 0 || (or_equal && c == 0));
  return 1;
}

static int l_oid_eq(lua_State *L) { return push_eq(L, T_OID); }
static int l_oid_lt(lua_State *L) { return push_lt(L, T_OID, 0); }
static int l_oid_le(lua_State *L) { return push_lt(L, T_OID, 1); }
static int l_date_eq(lua_State *L) { return push_eq(L, T_DATE); }
static int l_date_lt(lua_State *L) { return push_lt(L, T_DATE, 0); }
static int l_date_le(lua_State *L) { return push_lt(L, T_DATE, 1); }
static int l_ts_eq(lua_State *L) { return push_eq(L, T_TIMESTAMP); }
static int l_ts_lt(lua_State *L) { return push_lt(L, T_TIMESTAMP, 0); }
static int l_ts_le(lua_State *L) { return push_lt(L, T_TIMESTAMP, 1); }
static int l_binary_eq(lua_State *L) { return push_eq(L, T_BINARY); }
static int l_regex_eq(lua_State *L) { return push_eq(L, T_REGEX); }
static int l_decimal_eq(lua_State *L) { return push_eq(L, T_DECIMAL); }
static int l_int64_eq(lua_State *L) { return push_eq(L, T_INT64); }
static int l_int32_eq(lua_State *L) { return push_eq(L, T_INT32); }

static const ldate *check_date(lua_State *L, int idx) {
  return (const ldate *)check_class(L, idx, T_DATE);
}

static int l_date_ms(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_date(L, 1)->ms);
  return 1;
}

/* ISO-8601 UTC with milliseconds: 2024-05-01T12:00:00.250Z */
static void format_date(int64_t ms, char *buf, size_t size) {
  int64_t secs = ms / 1000, frac = ms % 1000;
  if (frac < 0) {   /* floor, for dates before 1970 */
    frac += 1000;
    secs--;
  }
  time_t t = (time_t)secs;
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL) {
    snprintf(buf, size, "%lld ms", (long long)ms);
    return;
  }
  snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
           tm.tm_min, tm.tm_sec, (int)frac);
}

static int l_date_iso(lua_State *L) {
  char buf[64];
  format_date(check_date(L, 1)->ms, buf, sizeof buf);
  lua_pushstring(L, buf);
  return 1;
}

static int l_date_tostring(lua_State *L) {
  char buf[64];
  format_date(check_date(L, 1)->ms, buf, sizeof buf);
  lua_pushfstring(L, "%s (%s)", class_names[T_DATE], buf);
  return 1;
}

/* __index of binary, regex and timestamp: their fields. */
static int l_binary_index(lua_State *L) {
  const lbinary *b = (const lbinary *)check_class(L, 1, T_BINARY);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "data") == 0) lua_getiuservalue(L, 1, 1);
  else if (k && strcmp(k, "subtype") == 0) lua_pushinteger(L, b->subtype);
  else lua_pushnil(L);
  return 1;
}

static int l_binary_tostring(lua_State *L) {
  const lbinary *b = (const lbinary *)check_class(L, 1, T_BINARY);
  lua_getiuservalue(L, 1, 1);
  lua_pushfstring(L, "%s (subtype %d, %I bytes)", class_names[T_BINARY],
                  (int)b->subtype, (lua_Integer)lua_rawlen(L, -1));
  return 1;
}

static int l_regex_index(lua_State *L) {
  check_class(L, 1, T_REGEX);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "pattern") == 0) lua_getiuservalue(L, 1, 1);
  else if (k && strcmp(k, "options") == 0) lua_getiuservalue(L, 1, 2);
  else lua_pushnil(L);
  return 1;
}

static int l_regex_tostring(lua_State *L) {
  check_class(L, 1, T_REGEX);
  lua_getiuservalue(L, 1, 1);
  lua_getiuservalue(L, 1, 2);
  lua_pushfstring(L, "%s (/%s/%s)", class_names[T_REGEX], lua_tostring(L, -2),
                  lua_tostring(L, -1));
  return 1;
}

static int l_ts_index(lua_State *L) {
  const ltimestamp *ts = (const ltimestamp *)check_class(L, 1, T_TIMESTAMP);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "t") == 0) lua_pushinteger(L, ts->t);
  else if (k && strcmp(k, "i") == 0) lua_pushinteger(L, ts->i);
  else lua_pushnil(L);
  return 1;
}

static int l_ts_tostring(lua_State *L) {
  const ltimestamp *ts = (const ltimestamp *)check_class(L, 1, T_TIMESTAMP);
  lua_pushfstring(L, "%s (%I, %I)", class_names[T_TIMESTAMP],
                  (lua_Integer)ts->t, (lua_Integer)ts->i);
  return 1;
}

static int l_decimal_string(lua_State *L) {
  char buf[BSON_DECIMAL128_STRING];
  bson_decimal128_to_string(
    (const bson_decimal128_t *)check_class(L, 1, T_DECIMAL), buf);
  lua_pushstring(L, buf);
  return 1;
}

static int l_decimal_tostring(lua_State *L) {
  char buf[BSON_DECIMAL128_STRING];
  bson_decimal128_to_string(
    (const bson_decimal128_t *)check_class(L, 1, T_DECIMAL), buf);
  lua_pushfstring(L, "%s (%s)", class_names[T_DECIMAL], buf);
  return 1;
}

/* int64 and int32 share their methods: the class is the width. */
static lint *check_int(lua_State *L, int idx, int *t) {
  *t = class_of(L, idx);
  if (*t != T_INT32) *t = T_INT64;
  return (lint *)check_class(L, idx, *t);
}

static int l_int_value(lua_State *L) {
  int t;
  lua_pushinteger(L, (lua_Integer)check_int(L, 1, &t)->v);
  return 1;
}

static int l_int_tostring(lua_State *L) {
  int t;
  const lint *n = check_int(L, 1, &t);
  lua_pushfstring(L, "%s (%I)", class_names[t], (lua_Integer)n->v);
  return 1;
}

static int l_key_tostring(lua_State *L) {
  int t = class_of(L, 1) == T_MAXKEY ? T_MAXKEY : T_MINKEY;
  lua_pushfstring(L, "%s (%p)", class_names[t], check_class(L, 1, t));
  return 1;
}

/* Encoding ============================================================ */

typedef struct path_item {
  const char *key;       /* the key in a document, or NULL: */
  size_t len;
  lua_Integer index;     /* the (1-based) position in an array */
} path_item;

typedef struct encoder {
  lua_State *L;
  int max_depth;
  int depth;                                 /* tables being encoded */
  const void *tables[EVLUA_BSON_DEPTH_CEILING];   /* for cycles */
  path_item path[EVLUA_BSON_DEPTH_CEILING + 1];
  int npath;
  char *err;
  size_t errlen;
} encoder;

/* Append sep and key (at most 64 bytes of it, control bytes escaped as
** \0 or \xHH) to buf; returns the bytes written (size > 0). */
static size_t append_key(char *buf, size_t size, const char *sep,
                         const char *key, size_t len) {
  size_t used = 0;
  int n = snprintf(buf, size, "%s", sep);
  if (n > 0) used = (size_t)n < size ? (size_t)n : size - 1;
  for (size_t i = 0; i < len && i < 64 && used < size - 1; i++) {
    unsigned char c = (unsigned char)key[i];
    if (c == 0) n = snprintf(buf + used, size - used, "\\0");
    else if (c < 0x20) n = snprintf(buf + used, size - used, "\\x%02x", c);
    else n = snprintf(buf + used, size - used, "%c", c);
    if (n < 0) break;
    used += (size_t)n < size - used ? (size_t)n : size - used - 1;
  }
  return used;
}

/* Write "<path>: <message>" into e->err and return 0. */
static int fail(encoder *e, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
static int fail(encoder *e, const char *fmt, ...) {
  char path[256], msg[256];
  size_t used = 0;
  path[0] = '\0';
  for (int i = 0; i < e->npath && used < sizeof path - 1; i++) {
    const path_item *p = &e->path[i];
    int n;
    if (p->key)
      n = (int)append_key(path + used, sizeof path - used, i ? "." : "",
                          p->key, p->len);
    else
      n = snprintf(path + used, sizeof path - used, "[%lld]",
                   (long long)p->index);
    if (n < 0) break;
    used += (size_t)n;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (e->errlen > 0)
    snprintf(e->err, e->errlen, "%s: %s", path[0] ? path : "document", msg);
  return 0;
}

static int too_large(encoder *e) {
  return fail(e, "document too large");
}

static const void *meta_of(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return NULL;
  const void *mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  return mt;
}

enum { K_DOC, K_ARRAY, K_ORDERED };

/* The kind of the table at idx and, for arrays and ordered documents,
** its length; 0 with the error written if it cannot be encoded. */
static int table_kind(encoder *e, int idx, int *kind, lua_Integer *n) {
  lua_State *L = e->L;
  const void *mt = meta_of(L, idx);
  *n = (lua_Integer)lua_rawlen(L, idx);
  if (mt == doc_meta) {
    *kind = K_ORDERED;
    if (*n % 2 != 0) return fail(e, "bson.doc with an odd number of items");
    return 1;
  }
  lua_Integer count = 0, in_range = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
    if (lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k >= 1 && k <= *n) in_range++;
    }
  }
  int sequence = count == *n && in_range == *n;
  if (mt == array_meta) {
    if (!sequence)
      return fail(e, "bson.array with holes or keys other than 1..n");
    *kind = K_ARRAY;
  } else {
    *kind = sequence && count > 0 ? K_ARRAY : K_DOC;
  }
  return 1;
}

static int encode_value(encoder *e, bson_t *b, const char *key, int klen,
                        int idx);

/* The name of a key that is not a string, for an error. */
static const char *key_name(lua_State *L, int idx, char *buf, size_t size) {
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      snprintf(buf, size, "integer key %lld", (long long)lua_tointeger(L, idx));
    else
      snprintf(buf, size, "float key %.17g", (double)lua_tonumber(L, idx));
    break;
  case LUA_TBOOLEAN:
    snprintf(buf, size, "boolean key %s", lua_toboolean(L, idx) ? "true" : "false");
    break;
  default:
    snprintf(buf, size, "%s key", luaL_typename(L, idx));
  }
  return buf;
}

static int check_key(encoder *e, const char *key, size_t len) {
  if (memchr(key, 0, len) != NULL) return fail(e, "key with a NUL byte");
  if (!bson_utf8_validate(key, len, false))
    return fail(e, "key is not valid UTF-8");
  if (len > INT32_MAX - 64) return too_large(e);
  return 1;
}

/* Encode one element (the value at vidx) under a document key. */
static int encode_field(encoder *e, bson_t *b, const char *key, size_t len,
                        int vidx) {
  path_item *p = &e->path[e->npath++];
  p->key = key;
  p->len = len;
  int ok = check_key(e, key, len) && encode_value(e, b, key, (int)len, vidx);
  e->npath--;
  return ok;
}

/* Append the elements of the table at idx (of that kind, n items) to b. */
static int encode_fields(encoder *e, bson_t *b, int idx, int kind,
                         lua_Integer n) {
  lua_State *L = e->L;
  if (kind == K_ARRAY) {
    for (lua_Integer i = 1; i <= n; i++) {
      char buf[16];
      const char *key;
      size_t klen = bson_uint32_to_string((uint32_t)(i - 1), &key, buf,
                                          sizeof buf);
      path_item *p = &e->path[e->npath++];
      p->key = NULL;
      p->index = i;
      lua_rawgeti(L, idx, i);
      int ok = encode_value(e, b, key, (int)klen, lua_gettop(L));
      lua_pop(L, 1);
      e->npath--;
      if (!ok) return 0;
    }
  } else if (kind == K_ORDERED) {
    for (lua_Integer i = 1; i <= n; i += 2) {
      size_t klen;
      lua_rawgeti(L, idx, i);
      lua_rawgeti(L, idx, i + 1);
      int ok;
      if (lua_type(L, -2) != LUA_TSTRING) {
        ok = fail(e, "bson.doc item %lld is a %s, not a string key",
                  (long long)i, luaL_typename(L, -2));
      } else {
        const char *key = lua_tolstring(L, -2, &klen);
        ok = encode_field(e, b, key, klen, lua_gettop(L));
      }
      lua_pop(L, 2);
      if (!ok) return 0;
    }
  } else {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      int ok;
      if (lua_type(L, -2) != LUA_TSTRING) {
        char buf[64];
        ok = fail(e, "%s in a document (keys are strings, or exactly 1..n "
                  "for an array)", key_name(L, -2, buf, sizeof buf));
      } else {
        size_t klen;
        const char *key = lua_tolstring(L, -2, &klen);
        ok = encode_field(e, b, key, klen, lua_gettop(L));
      }
      if (!ok) {
        lua_pop(L, 2);
        return 0;
      }
      lua_pop(L, 1);
    }
  }
  return 1;
}

/* Enter the table at idx (depth and cycle checks); leave with depth--. */
static int enter_table(encoder *e, int idx) {
  const void *self = lua_topointer(e->L, idx);
  for (int i = 0; i < e->depth; i++)
    if (e->tables[i] == self) return fail(e, "table cycle");
  if (e->depth >= e->max_depth)
    return fail(e, "nesting deeper than %d levels", e->max_depth);
  if (!lua_checkstack(e->L, 6)) return fail(e, "nesting too deep");
  e->tables[e->depth++] = self;
  return 1;
}

static int encode_table(encoder *e, bson_t *b, const char *key, int klen,
                        int idx) {
  int kind;
  lua_Integer n;
  if (!enter_table(e, idx)) return 0;
  int ok = table_kind(e, idx, &kind, &n);
  if (ok) {
    bson_t child;
    if (kind == K_ARRAY) {
      if (!bson_append_array_begin(b, key, klen, &child)) ok = too_large(e);
      else {
        ok = encode_fields(e, &child, idx, kind, n);
        if (!bson_append_array_end(b, &child) && ok) ok = too_large(e);
      }
    } else {
      if (!bson_append_document_begin(b, key, klen, &child)) ok = too_large(e);
      else {
        ok = encode_fields(e, &child, idx, kind, n);
        if (!bson_append_document_end(b, &child) && ok) ok = too_large(e);
      }
    }
  }
  e->depth--;
  return ok;
}

static int encode_string(encoder *e, bson_t *b, const char *key, int klen,
                         int idx) {
  size_t len;
  const char *s = lua_tolstring(e->L, idx, &len);
  if (!valid_utf8(s, len))
    return fail(e, "string is not valid UTF-8 (bytes go in bson.binary)");
  if (len > INT32_MAX - 64) return too_large(e);
  return bson_append_utf8(b, key, klen, s, (int)len) || too_large(e);
}

static int encode_typed(encoder *e, bson_t *b, const char *key, int klen,
                        int idx) {
  lua_State *L = e->L;
  const void *p = lua_touserdata(L, idx);
  bool ok;
  switch (class_of(L, idx)) {
  case T_OID: ok = bson_append_oid(b, key, klen, (const bson_oid_t *)p); break;
  case T_DATE:
    ok = bson_append_date_time(b, key, klen, ((const ldate *)p)->ms);
    break;
  case T_BINARY: {
    size_t len;
    lua_getiuservalue(L, idx, 1);
    const char *data = lua_tolstring(L, -1, &len);
    ok = bson_append_binary(b, key, klen, ((const lbinary *)p)->subtype,
                            (const uint8_t *)data, (uint32_t)len);
    lua_pop(L, 1);
    break;
  }
  case T_REGEX:
    lua_getiuservalue(L, idx, 1);
    lua_getiuservalue(L, idx, 2);
    ok = bson_append_regex(b, key, klen, lua_tostring(L, -2),
                           lua_tostring(L, -1));
    lua_pop(L, 2);
    break;
  case T_DECIMAL:
    ok = bson_append_decimal128(b, key, klen, (const bson_decimal128_t *)p);
    break;
  case T_TIMESTAMP: {
    const ltimestamp *ts = (const ltimestamp *)p;
    ok = bson_append_timestamp(b, key, klen, ts->t, ts->i);
    break;
  }
  case T_INT64: ok = bson_append_int64(b, key, klen, ((const lint *)p)->v); break;
  case T_INT32:
    ok = bson_append_int32(b, key, klen, (int32_t)((const lint *)p)->v);
    break;
  case T_MINKEY: ok = bson_append_minkey(b, key, klen); break;
  case T_MAXKEY: ok = bson_append_maxkey(b, key, klen); break;
  default:
    if (luaL_getmetafield(L, idx, "__name") != LUA_TNIL) {
      const char *name = lua_tostring(L, -1);
      ok = fail(e, "cannot encode a userdata value (%s)", name ? name : "?");
      lua_pop(L, 1);
      return ok;
    }
    return fail(e, "cannot encode a userdata value");
  }
  return ok || too_large(e);
}

static int encode_value(encoder *e, bson_t *b, const char *key, int klen,
                        int idx) {
  lua_State *L = e->L;
  bool ok;
  switch (lua_type(L, idx)) {
  case LUA_TBOOLEAN:
    ok = bson_append_bool(b, key, klen, lua_toboolean(L, idx));
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      lua_Integer v = lua_tointeger(L, idx);
      if (v >= INT32_MIN && v <= INT32_MAX)
        ok = bson_append_int32(b, key, klen, (int32_t)v);
      else
        ok = bson_append_int64(b, key, klen, (int64_t)v);
    } else {
      ok = bson_append_double(b, key, klen, (double)lua_tonumber(L, idx));
    }
    break;
  case LUA_TSTRING:
    return encode_string(e, b, key, klen, idx);
  case LUA_TTABLE:
    return encode_table(e, b, key, klen, idx);
  case LUA_TUSERDATA:
    return encode_typed(e, b, key, klen, idx);
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {   /* bson.null */
      ok = bson_append_null(b, key, klen);
      break;
    }
    return fail(e, "cannot encode a light userdata value");
  case LUA_TNIL:
    return fail(e, "nil value (bson.null stands for null)");
  default:
    return fail(e, "cannot encode a %s value", luaL_typename(L, idx));
  }
  return ok || too_large(e);
}

/* Decoding checks ===================================================== */

static int errf(char *err, size_t errlen, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...) {
  if (errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return 0;
}

/* Walk the document at it (at nesting depth): every length, terminator,
** type byte and string checked by bson_iter, every key and string
** UTF-8, no nesting past max_depth. Each byte is looked at a bounded
** number of times: linear. */
static int check_doc(bson_iter_t *it, int depth, int max_depth, char *err,
                     size_t errlen) {
  if (depth > max_depth)
    return errf(err, errlen, "invalid bson: nesting deeper than %d levels",
                max_depth);
  while (bson_iter_next(it)) {
    const char *key = bson_iter_key(it);
    if (!bson_utf8_validate(key, bson_iter_key_len(it), false))
      return errf(err, errlen, "invalid bson: key is not valid UTF-8");
    const char *s = NULL, *s2 = NULL;
    uint32_t len = 0;
    bson_iter_t child;
    bson_type_t type = bson_iter_type(it);
    /* these decode to a table one level down, the scope two levels */
    if ((type == BSON_TYPE_DBPOINTER || type == BSON_TYPE_CODE ||
         type == BSON_TYPE_CODEWSCOPE) && depth + 1 > max_depth)
      return errf(err, errlen, "invalid bson: nesting deeper than %d levels",
                  max_depth);
    switch (type) {
    case BSON_TYPE_UTF8: s = bson_iter_utf8(it, &len); break;
    case BSON_TYPE_CODE: s = bson_iter_code(it, &len); break;
    case BSON_TYPE_SYMBOL: s = bson_iter_symbol(it, &len); break;
    case BSON_TYPE_DBPOINTER: {
      const bson_oid_t *oid;
      bson_iter_dbpointer(it, &len, &s, &oid);
      break;
    }
    case BSON_TYPE_REGEX:
      s = bson_iter_regex(it, &s2);
      len = (uint32_t)strlen(s);
      break;
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY: {
      /* bson_iter_recurse leaves the terminator unchecked: this does not */
      const uint8_t *data;
      if (type == BSON_TYPE_DOCUMENT)
        bson_iter_document(it, &len, &data);
      else
        bson_iter_array(it, &len, &data);
      if (!bson_iter_init_from_data(&child, data, len))
        return errf(err, errlen, "invalid bson: bad embedded document '%s'",
                    key);
      if (!check_doc(&child, depth + 1, max_depth, err, errlen)) return 0;
      len = 0;
      break;
    }
    case BSON_TYPE_CODEWSCOPE: {
      uint32_t scope_len;
      const uint8_t *scope;
      s = bson_iter_codewscope(it, &len, &scope_len, &scope);
      if (!bson_iter_init_from_data(&child, scope, scope_len))
        return errf(err, errlen, "invalid bson: bad code scope '%s'", key);
      if (!check_doc(&child, depth + 2, max_depth, err, errlen)) return 0;
      break;
    }
    default:
      break;
    }
    if ((s && !valid_utf8(s, len)) ||
        (s2 && !bson_utf8_validate(s2, strlen(s2), false)))
      return errf(err, errlen, "invalid bson: string '%s' is not valid UTF-8",
                  key);
  }
  if (it->err_off)
    return errf(err, errlen, "invalid bson: corrupt element at byte %u",
                (unsigned)it->err_off);
  return 1;
}

/* Check the whole document data[0..len): 1, or 0 with the error. */
static int check_data(const uint8_t *data, size_t len, int max_depth,
                      char *err, size_t errlen) {
  bson_iter_t it;
  if (!bson_iter_init_from_data(&it, data, len))
    return errf(err, errlen, "invalid bson: bad document length or terminator");
  return check_doc(&it, 1, max_depth, err, errlen);
}

/* Decoding ============================================================ */

typedef struct decoder {
  lua_State *L;
  int state;      /* stack index of the state table */
  int ordered;    /* documents as bson.doc lists */
} decoder;

static void push_doc(decoder *d, bson_iter_t *it, int as_array);

/* t[key] = value (at the top) in the document at idx, n items so far. */
static void doc_set(decoder *d, int idx, lua_Integer *n, const char *key,
                    size_t klen) {
  lua_State *L = d->L;
  if (d->ordered) {
    lua_pushlstring(L, key, klen);
    lua_rawseti(L, idx, ++*n);
    lua_rawseti(L, idx, ++*n);
  } else {
    lua_pushlstring(L, key, klen);
    lua_insert(L, -2);
    lua_rawset(L, idx);
  }
}

static void new_doc(decoder *d) {
  lua_newtable(d->L);
  if (d->ordered) {
    lua_rawgeti(d->L, d->state, S_DOC);
    lua_setmetatable(d->L, -2);
  }
}

/* The value of the element at it (checked already by check_doc). */
static void push_value(decoder *d, const bson_iter_t *it) {
  lua_State *L = d->L;
  uint32_t len;
  switch (bson_iter_type(it)) {
  case BSON_TYPE_DOUBLE: lua_pushnumber(L, bson_iter_double(it)); break;
  case BSON_TYPE_UTF8: {
    const char *s = bson_iter_utf8(it, &len);
    lua_pushlstring(L, s, len);
    break;
  }
  case BSON_TYPE_SYMBOL: {
    const char *s = bson_iter_symbol(it, &len);
    lua_pushlstring(L, s, len);
    break;
  }
  case BSON_TYPE_DOCUMENT:
  case BSON_TYPE_ARRAY: {
    bson_iter_t child;
    if (bson_iter_recurse(it, &child))
      push_doc(d, &child, bson_iter_type(it) == BSON_TYPE_ARRAY);
    else
      lua_newtable(L);   /* not reached: check_doc recursed already */
    break;
  }
  case BSON_TYPE_BINARY: {
    bson_subtype_t subtype;
    const uint8_t *data;
    bson_iter_binary(it, &subtype, &len, &data);
    lua_pushlstring(L, (const char *)data, len);
    push_binary(L, d->state, subtype);
    break;
  }
  case BSON_TYPE_UNDEFINED:
  case BSON_TYPE_NULL:
    lua_pushlightuserdata(L, NULL);
    break;
  case BSON_TYPE_OID: push_oid(L, d->state, bson_iter_oid(it)); break;
  case BSON_TYPE_BOOL: lua_pushboolean(L, bson_iter_bool(it)); break;
  case BSON_TYPE_DATE_TIME: push_date(L, d->state, bson_iter_date_time(it)); break;
  case BSON_TYPE_REGEX: {
    const char *options;
    const char *pattern = bson_iter_regex(it, &options);
    push_regex(L, d->state, pattern, options);
    break;
  }
  case BSON_TYPE_DBPOINTER: {   /* as a DBRef: { $ref = coll, $id = oid } */
    const char *coll;
    const bson_oid_t *oid;
    lua_Integer n = 0;
    bson_iter_dbpointer(it, &len, &coll, &oid);
    new_doc(d);
    lua_pushlstring(L, coll, len);
    doc_set(d, lua_gettop(L) - 1, &n, "$ref", 4);
    push_oid(L, d->state, oid);
    doc_set(d, lua_gettop(L) - 1, &n, "$id", 3);
    break;
  }
  case BSON_TYPE_CODE: {   /* { $code = js } */
    lua_Integer n = 0;
    const char *code = bson_iter_code(it, &len);
    new_doc(d);
    lua_pushlstring(L, code, len);
    doc_set(d, lua_gettop(L) - 1, &n, "$code", 5);
    break;
  }
  case BSON_TYPE_CODEWSCOPE: {   /* { $code = js, $scope = doc } */
    lua_Integer n = 0;
    uint32_t scope_len;
    const uint8_t *scope;
    bson_iter_t child;
    const char *code = bson_iter_codewscope(it, &len, &scope_len, &scope);
    new_doc(d);
    lua_pushlstring(L, code, len);
    doc_set(d, lua_gettop(L) - 1, &n, "$code", 5);
    if (bson_iter_init_from_data(&child, scope, scope_len)) push_doc(d, &child, 0);
    else lua_newtable(L);   /* not reached */
    doc_set(d, lua_gettop(L) - 1, &n, "$scope", 6);
    break;
  }
  case BSON_TYPE_INT32: lua_pushinteger(L, bson_iter_int32(it)); break;
  case BSON_TYPE_INT64: lua_pushinteger(L, (lua_Integer)bson_iter_int64(it)); break;
  case BSON_TYPE_TIMESTAMP: {
    uint32_t t, i;
    bson_iter_timestamp(it, &t, &i);
    push_timestamp(L, d->state, t, i);
    break;
  }
  case BSON_TYPE_DECIMAL128: {
    bson_decimal128_t dec;
    bson_iter_decimal128(it, &dec);
    push_decimal(L, d->state, &dec);
    break;
  }
  case BSON_TYPE_MAXKEY: lua_rawgeti(L, d->state, S_MAXKEY); break;
  case BSON_TYPE_MINKEY: lua_rawgeti(L, d->state, S_MINKEY); break;
  default: lua_pushlightuserdata(L, NULL); break;   /* not reached */
  }
}

/* Push the document (or array) at it as a table. */
static void push_doc(decoder *d, bson_iter_t *it, int as_array) {
  lua_State *L = d->L;
  luaL_checkstack(L, 8, "bson nesting");
  if (as_array) {
    lua_newtable(L);
    lua_rawgeti(L, d->state, S_ARRAY);
    lua_setmetatable(L, -2);
  } else {
    new_doc(d);
  }
  int t = lua_gettop(L);
  lua_Integer n = 0;
  while (bson_iter_next(it)) {
    push_value(d, it);
    if (as_array) lua_rawseti(L, t, ++n);
    else doc_set(d, t, &n, bson_iter_key(it), bson_iter_key_len(it));
  }
}

/* The state's encoding scratch ======================================== */

/* What encoding needs besides the caller's output, owned by one userdata
** per state (in the registry under &scratch_key, created by
** evlua_open_bson, freed by its __gc when the state closes): the encoder
** (32 KiB of path and cycle stacks, too much for the C stack) and a
** document to encode into (evlua_bson_scratch). Owned by
** the state rather than by a C frame, they cannot leak when something
** raises while they are in use: the encoder itself never raises, but its
** callers do (an argument error, out of memory), and a raise longjmps
** past any cleanup in C. Reused, they also save a malloc and a free per
** document. */
typedef struct scratch {
  encoder enc;
  bson_t doc;
  int busy;          /* doc handed out and not given back */
} scratch;

static const char scratch_key = 0;

#define SCRATCH_KEEP (1024 * 1024)   /* a larger doc buffer is freed */

/* The userdata holds a pointer to the scratch: libbson declares bson_t
** 128-byte aligned, more than a userdata's memory is. */
static scratch *get_scratch(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &scratch_key);
  scratch *s = *(scratch **)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return s;
}

static int l_scratch_gc(lua_State *L) {
  scratch **box = (scratch **)lua_touserdata(L, 1);
  if (*box != NULL) {
    bson_destroy(&(*box)->doc);
    free(*box);
    *box = NULL;
  }
  return 0;
}

static void new_scratch(lua_State *L) {
  scratch **box = (scratch **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_scratch_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  /* aligned_alloc wants a multiple of the alignment */
  size_t size = (sizeof(scratch) + 127) / 128 * 128;
  scratch *s = (scratch *)aligned_alloc(128, size);
  if (s == NULL) luaL_error(L, "bson: out of memory");   /* at startup */
  bson_init(&s->doc);
  s->busy = 0;
  *box = s;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &scratch_key);
}

bson_t *evlua_bson_scratch(lua_State *L) {
  scratch *s = get_scratch(L);
  if (s->busy) {
    /* the last user raised before giving it back, perhaps with a child
    ** document open: start over rather than trust its state */
    bson_destroy(&s->doc);
    bson_init(&s->doc);
  } else {
    bson_reinit(&s->doc);
  }
  s->busy = 1;
  return &s->doc;
}

void evlua_bson_scratch_done(lua_State *L) {
  scratch *s = get_scratch(L);
  s->busy = 0;
  if (s->doc.len > SCRATCH_KEEP) {   /* one huge document keeps no memory */
    bson_destroy(&s->doc);
    bson_init(&s->doc);
  }
}

/* The C interface (lbson.h) ========================================== */

/* Nothing in here runs Lua code: tables are read raw (lua_next,
** lua_rawgeti, lua_rawlen; no __pairs, __index or __len of a user value
** is called) and no value is converted (no __tostring), so encoding
** cannot raise, a user's value cannot reenter it and the state's encoder
** is never in use twice. */
int evlua_bson_encode_depth(lua_State *L, int idx, bson_t *out,
                            int max_depth, char *err, size_t errlen) {
  idx = lua_absindex(L, idx);
  if (max_depth < 1 || max_depth > EVLUA_BSON_DEPTH_CEILING)
    max_depth = EVLUA_BSON_DEPTH_CEILING;
  if (lua_type(L, idx) == LUA_TSTRING) {   /* already encoded */
    size_t len;
    const uint8_t *data = (const uint8_t *)lua_tolstring(L, idx, &len);
    bson_t src;
    if (!check_data(data, len, max_depth, err, errlen)) return 0;
    if (!bson_init_static(&src, data, len))   /* checked: not reached */
      return errf(err, errlen, "invalid bson");
    if (!bson_concat(out, &src)) return errf(err, errlen, "document too large");
    return 1;
  }
  if (lua_type(L, idx) != LUA_TTABLE)
    return errf(err, errlen, "document: a table expected, got %s",
                luaL_typename(L, idx));
  encoder *e = &get_scratch(L)->enc;
  e->L = L;
  e->max_depth = max_depth;
  e->depth = 0;
  e->npath = 0;
  e->err = err;
  e->errlen = errlen;
  int kind;
  lua_Integer n;
  int ok = enter_table(e, idx) && table_kind(e, idx, &kind, &n);
  if (ok && kind == K_ARRAY)
    ok = fail(e, "an array cannot be a document (wrap it: { key = array })");
  if (ok) ok = encode_fields(e, out, idx, kind, n);
  return ok;
}

int evlua_bson_encode(lua_State *L, int idx, bson_t *out, char *err,
                      size_t errlen) {
  return evlua_bson_encode_depth(L, idx, out, EVLUA_BSON_MAX_DEPTH, err,
                                 errlen);
}

int evlua_bson_decode_opts(lua_State *L, const uint8_t *data, size_t len,
                           int flags, int max_depth, char *err,
                           size_t errlen) {
  if (max_depth < 1 || max_depth > EVLUA_BSON_DEPTH_CEILING)
    max_depth = EVLUA_BSON_DEPTH_CEILING;
  if (!check_data(data, len, max_depth, err, errlen)) return 0;
  bson_iter_t it;
  if (!bson_iter_init_from_data(&it, data, len))   /* checked: not reached */
    return errf(err, errlen, "invalid bson");
  decoder d;
  d.L = L;
  d.state = push_state(L);
  d.ordered = (flags & EVLUA_BSON_ORDERED) != 0;
  push_doc(&d, &it, 0);
  lua_remove(L, d.state);
  return 1;
}

int evlua_bson_decode(lua_State *L, const uint8_t *data, size_t len,
                      char *err, size_t errlen) {
  return evlua_bson_decode_opts(L, data, len, 0,
                                EVLUA_BSON_DECODE_MAX_DEPTH, err, errlen);
}

/* Lua functions ======================================================= */

static int check_max_depth(lua_State *L, int idx, int def) {
  lua_Integer d = luaL_optinteger(L, idx, def);
  luaL_argcheck(L, d >= 1 && d <= EVLUA_BSON_DEPTH_CEILING, idx,
                "max_depth from 1 to 1000 expected");
  return (int)d;
}

/* core.bson_encode(doc [, max_depth]) -> string | nil, err, "bad_value" */
static int l_encode(lua_State *L) {
  int t = lua_type(L, 1);
  luaL_argexpected(L, t == LUA_TTABLE || t == LUA_TSTRING, 1, "table");
  int max_depth = check_max_depth(L, 2, EVLUA_BSON_MAX_DEPTH);
  lua_settop(L, 1);
  if (t == LUA_TSTRING) {   /* an encoded document: checked, kept */
    char err[256];
    size_t len;
    const uint8_t *data = (const uint8_t *)lua_tolstring(L, 1, &len);
    if (!check_data(data, len, max_depth, err, sizeof err))
      return evlua_fail(L, "bad_value", "%s", err);
    return 1;
  }
  char err[512];
  bson_t *b = evlua_bson_scratch(L);   /* lua_pushlstring may raise */
  int ok = evlua_bson_encode_depth(L, 1, b, max_depth, err, sizeof err);
  if (ok) lua_pushlstring(L, (const char *)bson_get_data(b), b->len);
  evlua_bson_scratch_done(L);
  return ok ? 1 : evlua_fail(L, "bad_value", "%s", err);
}

/* core.bson_decode(s [, ordered [, max_depth]]) -> table
** | nil, err, "protocol" */
static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int flags = lua_toboolean(L, 2) ? EVLUA_BSON_ORDERED : 0;
  int max_depth = check_max_depth(L, 3, EVLUA_BSON_DECODE_MAX_DEPTH);
  char err[256];
  if (!evlua_bson_decode_opts(L, (const uint8_t *)s, len, flags, max_depth,
                              err, sizeof err))
    return evlua_fail(L, "protocol", "%s", err);
  return 1;
}

/* core.bson_type(v) -> the BSON type v encodes as ($type alias) | nil */
static int l_type(lua_State *L) {
  const char *name = NULL;
  switch (lua_type(L, 1)) {
  case LUA_TBOOLEAN: name = "bool"; break;
  case LUA_TNUMBER:
    if (!lua_isinteger(L, 1)) name = "double";
    else {
      lua_Integer v = lua_tointeger(L, 1);
      name = v >= INT32_MIN && v <= INT32_MAX ? "int" : "long";
    }
    break;
  case LUA_TSTRING: name = "string"; break;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, 1) == NULL) name = "null";
    break;
  case LUA_TUSERDATA: {
    int t = class_of(L, 1);
    if (t >= 0) name = type_names[t];
    break;
  }
  case LUA_TTABLE: {
    const void *mt = meta_of(L, 1);
    if (mt == array_meta) name = "array";
    else if (mt == doc_meta) name = "object";
    else {
      lua_Integer n = (lua_Integer)lua_rawlen(L, 1), count = 0;
      lua_pushnil(L);
      while (lua_next(L, 1)) {
        lua_pop(L, 1);
        count++;
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
            lua_tointeger(L, -1) > n) {
          count = -1;
          lua_pop(L, 1);
          break;
        }
      }
      name = n > 0 && count == n ? "array" : "object";
    }
    break;
  }
  default: break;
  }
  if (name) lua_pushstring(L, name);
  else lua_pushnil(L);
  return 1;
}

/* Opener ============================================================== */

static const void *new_class(lua_State *L, int t, const luaL_Reg *meta,
                             const luaL_Reg *methods, lua_CFunction index) {
  static const luaL_Reg none[] = { { NULL, NULL } };
  const void *mt = evlua_new_class(L, class_names[t], meta,
                                   methods ? methods : none);
  if (index) {   /* fields instead of methods: binary.data, ts.t */
    luaL_getmetatable(L, class_names[t]);
    lua_pushcfunction(L, index);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
  }
  return mt;
}

static void register_classes(lua_State *L) {
  static const luaL_Reg oid_methods[] = {
    { "hex", l_oid_hex }, { "time", l_oid_time }, { "bytes", l_oid_bytes },
    { NULL, NULL }
  };
  static const luaL_Reg oid_mt[] = {
    { "__tostring", l_oid_tostring }, { "__eq", l_oid_eq },
    { "__lt", l_oid_lt }, { "__le", l_oid_le }, { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg date_methods[] = {
    { "ms", l_date_ms }, { "iso", l_date_iso }, { NULL, NULL }
  };
  static const luaL_Reg date_mt[] = {
    { "__tostring", l_date_tostring }, { "__eq", l_date_eq },
    { "__lt", l_date_lt }, { "__le", l_date_le }, { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg binary_mt[] = {
    { "__tostring", l_binary_tostring }, { "__eq", l_binary_eq },
    { "__index", NULL }, { NULL, NULL }
  };
  static const luaL_Reg regex_mt[] = {
    { "__tostring", l_regex_tostring }, { "__eq", l_regex_eq },
    { "__index", NULL }, { NULL, NULL }
  };
  static const luaL_Reg decimal_methods[] = {
    { "string", l_decimal_string }, { NULL, NULL }
  };
  static const luaL_Reg decimal_mt[] = {
    { "__tostring", l_decimal_tostring }, { "__eq", l_decimal_eq },
    { "__index", NULL }, { NULL, NULL }
  };
  static const luaL_Reg ts_mt[] = {
    { "__tostring", l_ts_tostring }, { "__eq", l_ts_eq },
    { "__lt", l_ts_lt }, { "__le", l_ts_le }, { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg int_methods[] = {
    { "value", l_int_value }, { NULL, NULL }
  };
  static const luaL_Reg int64_mt[] = {
    { "__tostring", l_int_tostring }, { "__eq", l_int64_eq },
    { "__index", NULL }, { NULL, NULL }
  };
  static const luaL_Reg int32_mt[] = {
    { "__tostring", l_int_tostring }, { "__eq", l_int32_eq },
    { "__index", NULL }, { NULL, NULL }
  };
  static const luaL_Reg key_mt[] = {
    { "__tostring", l_key_tostring }, { "__index", NULL }, { NULL, NULL }
  };
  metas[T_OID] = new_class(L, T_OID, oid_mt, oid_methods, NULL);
  metas[T_DATE] = new_class(L, T_DATE, date_mt, date_methods, NULL);
  metas[T_BINARY] = new_class(L, T_BINARY, binary_mt, NULL, l_binary_index);
  metas[T_REGEX] = new_class(L, T_REGEX, regex_mt, NULL, l_regex_index);
  metas[T_DECIMAL] = new_class(L, T_DECIMAL, decimal_mt, decimal_methods,
                               NULL);
  metas[T_TIMESTAMP] = new_class(L, T_TIMESTAMP, ts_mt, NULL, l_ts_index);
  metas[T_INT64] = new_class(L, T_INT64, int64_mt, int_methods, NULL);
  metas[T_INT32] = new_class(L, T_INT32, int32_mt, int_methods, NULL);
  metas[T_MINKEY] = new_class(L, T_MINKEY, key_mt, NULL, NULL);
  metas[T_MAXKEY] = new_class(L, T_MAXKEY, key_mt, NULL, NULL);
}

/* A plain metatable (bson.array's, bson.doc's) named name, into the state
** table at slot and the core table as field. */
static const void *marker_meta(lua_State *L, int state, int slot,
                               const char *name, const char *field) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  const void *mt = lua_topointer(L, -1);
  lua_pushvalue(L, -1);
  lua_rawseti(L, state, slot);
  lua_setfield(L, -3, field);   /* the core table is below the state */
  return mt;
}

void evlua_open_bson(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "bson_encode", l_encode },
    { "bson_decode", l_decode },
    { "bson_type", l_type },
    { "bson_oid", l_oid },
    { "bson_date", l_date },
    { "bson_binary", l_binary },
    { "bson_regex", l_regex },
    { "bson_decimal128", l_decimal },
    { "bson_timestamp", l_timestamp },
    { "bson_int64", l_int64 },
    { "bson_int32", l_int32 },
    { NULL, NULL }
  };
  register_classes(L);
  new_scratch(L);
  luaL_setfuncs(L, funcs, 0);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "bson_null");

  lua_createtable(L, S_META + T_COUNT, 0);
  int state = lua_gettop(L);
  array_meta = marker_meta(L, state, S_ARRAY, "evlua.bson.array",
                           "bson_array_mt");
  doc_meta = marker_meta(L, state, S_DOC, "evlua.bson.doc", "bson_doc_mt");
  lua_newtable(L);   /* the ObjectId cache, weak-valued */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawseti(L, state, S_OIDS);
  for (int t = 0; t < T_COUNT; t++) {
    luaL_getmetatable(L, class_names[t]);
    lua_rawseti(L, state, S_META + t);
  }
  new_value(L, state, T_MINKEY, 0, 0);
  lua_pushvalue(L, -1);
  lua_rawseti(L, state, S_MINKEY);
  lua_setfield(L, state - 1, "bson_minkey");
  new_value(L, state, T_MAXKEY, 0, 0);
  lua_pushvalue(L, -1);
  lua_rawseti(L, state, S_MAXKEY);
  lua_setfield(L, state - 1, "bson_maxkey");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
}
