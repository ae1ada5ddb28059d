/*
** lhttp.c - HTTP/1.x message parsing for Lua: one parser userdata per
** connection (an evlua_http, see http.h) reads requests (server) or
** responses (client) straight from a stream's input buffer, taking the
** bytes it parsed and leaving a pipelined next message in place.
*/
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "lstream.h"
#include "runtime.h"

#define EVLUA_HTTP_PARSER "evlua.http_parser"

static const void *parser_meta;

static evlua_http *check_parser(lua_State *L, int idx) {
  return (evlua_http *)evlua_checkudata(L, idx, parser_meta, EVLUA_HTTP_PARSER);
}

/* Results ============================================================= */

/* Header names compared in C, pairwise, up to this many headers; more
** are grouped through the table (a lookup per header), so a request
** with thousands of headers costs no quadratic time. */
#define PAIRWISE_HEADERS 32

static void lowercase(char *s, size_t len) {
  for (size_t k = 0; k < len; k++)
    if (s[k] >= 'A' && s[k] <= 'Z') s[k] = (char)(s[k] - 'A' + 'a');
}

static int same_name(const char *base, const evlua_http_field *a,
                     const evlua_http_field *b) {
  return a->name_len == b->name_len &&
         memcmp(base + a->off, base + b->off, a->name_len) == 0;
}

/* Headers, few of them: each name is looked for among the others in C,
** and a repeated one becomes its list at once. */
static void push_headers_pairwise(lua_State *L, const evlua_http_field *fields,
                                  size_t n, const char *base) {
  unsigned char grouped[PAIRWISE_HEADERS] = { 0 };
  for (size_t i = 0; i < n; i++) {
    if (grouped[i]) continue;
    const evlua_http_field *f = &fields[i];
    lua_pushlstring(L, base + f->off, f->name_len);
    size_t count = 1;
    for (size_t k = i + 1; k < n; k++) {
      if (!same_name(base, f, &fields[k])) continue;
      if (count == 1) {   /* a second value: make the list */
        lua_createtable(L, 2, 0);
        lua_pushlstring(L, base + f->off + f->name_len, f->value_len);
        lua_rawseti(L, -2, 1);
      }
      const evlua_http_field *g = &fields[k];
      lua_pushlstring(L, base + g->off + g->name_len, g->value_len);
      lua_rawseti(L, -2, (lua_Integer)++count);
      grouped[k] = 1;
    }
    if (count == 1)
      lua_pushlstring(L, base + f->off + f->name_len, f->value_len);
    lua_rawset(L, -3);
  }
}

/* Headers, many of them: a repeated name is found in the table. */
static void push_headers_grouped(lua_State *L, const evlua_http_field *fields,
                                 size_t n, const char *base) {
  for (size_t i = 0; i < n; i++) {
    const evlua_http_field *f = &fields[i];
    const char *name = base + f->off;
    lua_pushlstring(L, name, f->name_len);
    lua_pushvalue(L, -1);
    int t = lua_rawget(L, -3);
    lua_pushlstring(L, name + f->name_len, f->value_len);
    if (t == LUA_TNIL) {
      lua_remove(L, -2);
    } else if (t == LUA_TSTRING) {   /* second value: make a list */
      lua_createtable(L, 2, 0);
      lua_insert(L, -3);
      lua_rawseti(L, -3, 2);
      lua_rawseti(L, -2, 1);
    } else {
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    }
    lua_rawset(L, -3);
  }
}

/* Push fields [from, to) of h as a table: lowercase name -> value, or
** -> a list of the values in order when the name came several times.
** Lowercases the names in place (the message is done with afterwards). */
static void push_headers(lua_State *L, evlua_http *h, size_t from, size_t to) {
  size_t n = to - from;
  lua_createtable(L, 0, (int)n);
  if (n == 0) return;
  char *base = h->hbuf.data + h->hbuf.start;
  const evlua_http_field *fields = h->fields + from;
  for (size_t i = 0; i < n; i++)
    lowercase(base + fields[i].off, fields[i].name_len);
  if (n <= PAIRWISE_HEADERS) push_headers_pairwise(L, fields, n, base);
  else push_headers_grouped(L, fields, n, base);
}

/* Push the complete message: see l_parse. */
static int push_message(lua_State *L, evlua_http *h, const evlua_buffer *in) {
  http_parser *p = &h->p;
  int request = p->type == HTTP_REQUEST;
  lua_pushstring(L, request ? "request" : "response");
  if (request) lua_pushstring(L, http_method_str((enum http_method)p->method));
  else lua_pushinteger(L, p->status_code);
  lua_pushlstring(L, evlua_http_bytes(&h->url), evlua_buffer_len(&h->url));
  push_headers(L, h, 0, h->nheaders);
  lua_pushlstring(L, evlua_http_bytes(&h->body), evlua_buffer_len(&h->body));
  lua_pushboolean(L, http_should_keep_alive(p) && !p->upgrade);
  /* 1.2 and later minors are served as 1.1 (RFC 9110 2.5) */
  lua_pushinteger(L, p->http_minor >= 1 ? 11 : 10);
  lua_pushboolean(L, evlua_buffer_len(in) > 0);
  if (h->nfields > h->nheaders) push_headers(L, h, h->nheaders, h->nfields);
  else lua_pushnil(L);
  evlua_http_message_done(h);
  return 9;
}

static int push_error(lua_State *L, evlua_http *h) {
  const char *message;
  int status = evlua_http_error(h, &message);
  lua_pushliteral(L, "error");
  lua_pushinteger(L, status);
  lua_pushstring(L, message);
  return 3;
}

/* nil, the part of a begun message still incomplete: "headers" or
** "body" (the server's header or body timeout runs meanwhile), or false
** between messages */
static int need_more(lua_State *L, evlua_http *h, size_t used) {
  lua_pushnil(L);
  /* Empty lines before a request line (the parser skips them) belong to
  ** the head of the request to come, as in nginx: its timeout runs, and a
  ** client cannot hold a connection forever with a CRLF now and then. */
  if (!h->in_message) {
    if (used > 0) lua_pushliteral(L, "headers");
    else lua_pushboolean(L, 0);
  }
  else if (!h->headers_done) lua_pushliteral(L, "headers");
  else lua_pushliteral(L, "body");
  return 2;
}

/* Methods ============================================================= */

/* parser:parse(stream [, eof [, head]]) parses buffered bytes and returns
**   nil, partial             more bytes are needed; partial: "headers"
**                            or "body" of a begun message ("headers" too
**                            after empty lines alone), else false
**   "continue"               a request's headers asked for 100-continue
**   "request", method, url, headers, body, keep_alive, version, more,
**              trailers
**   "response", status, reason, headers, body, keep_alive, version, more,
**               trailers
**   "error", status, message  (the connection should end: the parser
**                             stays failed)
** version is 10 or 11; more: bytes of a next message are buffered;
** trailers: the trailer fields of a chunked body as a table like
** headers, or nil when there were none. eof:
** the peer has closed (ends a response whose body runs to the end of the
** stream). head: the response answers a HEAD request, so it has no body
** whatever its headers say. */
static int l_parse(lua_State *L) {
  evlua_http *h = check_parser(L, 1);
  lstream *ls = evlua_check_stream(L, 2);
  int eof = lua_toboolean(L, 3);
  if (!h->in_message) h->skip_body = lua_toboolean(L, 4);
  evlua_buffer *in = &ls->s.in;
  size_t used;
  int r = evlua_http_parse(h, evlua_http_bytes(in), evlua_buffer_len(in), eof,
                           &used);
  if (used > 0) {
    evlua_stream_take(&ls->s, used);
  }
  switch (r) {
  case EVLUA_HTTP_MESSAGE: return push_message(L, h, in);
  case EVLUA_HTTP_CONTINUE:
    lua_pushliteral(L, "continue");
    return 1;
  case EVLUA_HTTP_ERROR: return push_error(L, h);
  default: return need_more(L, h, used);
  }
}

/* Replies ============================================================= */

/* The flags of core.http_reply */
enum {
  REPLY_KEEP_ALIVE = 1,     /* the connection stays open after it */
  REPLY_HTTP11 = 2,         /* the request was HTTP/1.1 (else 1.0) */
  REPLY_HEAD = 4,           /* answers HEAD: the head only */
  REPLY_OWN_LENGTH = 8,     /* extra headers hold Content-Length */
  REPLY_OWN_CLOSE = 16,     /* extra headers hold Connection: close */
  REPLY_STREAM = 32         /* the head of a streamed reply: no length;
                            ** chunked for HTTP/1.1 unless OWN_LENGTH */
};

/* The standard reason phrase of code, or NULL. */
static const char *status_text(lua_Integer code) {
  switch (code) {
#define XX(num, name, string) case num: return #string;
  HTTP_STATUS_MAP(XX)
#undef XX
  }
  return NULL;
}

/* Every reply starts with a status line, Date and Server: that prefix is
** kept per status (one slot each of a few) for the current second, in the
** runtime's reply_prefixes (PREFIX_SLOTS of them, made by the opener). */
#define PREFIX_SLOTS 8
#define PREFIX_MAX 256

typedef struct evlua_reply_prefix {
  lua_Integer status;
  time_t second;
  size_t server_len, len;
  char server[PREFIX_MAX], text[PREFIX_MAX];
} reply_prefix;

/* The prefix of a reply with the standard reason phrase, or NULL when
** server is too long to keep. */
static const reply_prefix *standard_prefix(lua_State *L, lua_Integer status,
                                           const char *server,
                                           size_t server_len) {
  evlua_runtime *rt = evlua_runtime_get(L);
  time_t now = (time_t)ev_now(rt->loop);
  reply_prefix *p = &rt->reply_prefixes[status % PREFIX_SLOTS];
  if (p->status == status && p->second == now &&
      p->server_len == server_len && memcmp(p->server, server, server_len) == 0)
    return p;
  const char *reason = status_text(status);
  if (server_len + 100 > PREFIX_MAX) return NULL;
  struct tm tm;
  char date[40];
  gmtime_r(&now, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  int n = snprintf(p->text, sizeof p->text, "HTTP/1.1 %d %s\r\nDate: %s\r\n%s",
                   (int)status, reason ? reason : "Unknown", date, server);
  if (n < 0 || (size_t)n >= sizeof p->text) return NULL;
  p->len = (size_t)n;
  memcpy(p->server, server, server_len);
  p->server_len = server_len;
  p->status = status;
  p->second = now;
  return p;
}

static char *put(char *at, const char *s, size_t len) {
  memcpy(at, s, len);
  return at + len;
}
#define PUT_LITERAL(at, lit) put((at), (lit), sizeof(lit) - 1)

/* Write the decimal digits of n (sprintf costs more than the reply). */
static char *put_number(char *at, size_t n) {
  char digits[24];
  char *d = digits + sizeof digits;
  do {
    *--d = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0);
  return put(at, d, (size_t)(digits + sizeof digits - d));
}

/* Write the status line, Date and Server of a reply at `at`. */
static char *put_prefix(lua_State *L, char *at, lua_Integer status,
                        const char *reason, size_t reason_len,
                        const char *server, size_t server_len) {
  const char *standard = status_text(status);
  if (!reason || (standard && strcmp(reason, standard) == 0)) {
    const reply_prefix *p = standard_prefix(L, status, server, server_len);
    if (p) return put(at, p->text, p->len);
    if (!reason) reason = standard ? standard : "Unknown";
    reason_len = strlen(reason);
  } else if (memchr(reason, '\r', reason_len) ||
             memchr(reason, '\n', reason_len) ||
             memchr(reason, '\0', reason_len)) {
    luaL_error(L, "bad reason phrase (CR, LF or NUL)");   /* header injection */
  }
  time_t now = (time_t)ev_now(evlua_runtime_get(L)->loop);
  struct tm tm;
  gmtime_r(&now, &tm);
  at = PUT_LITERAL(at, "HTTP/1.1 ");
  at = put_number(at, (size_t)status);
  at = PUT_LITERAL(at, " ");
  at = put(at, reason, reason_len);
  at = PUT_LITERAL(at, "\r\nDate: ");
  at += strftime(at, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  at = PUT_LITERAL(at, "\r\n");
  return put(at, server, server_len);
}

/* Reply headers ======================================================= */

/* Characters of a token (RFC 9110): header names. */
static int is_token(const char *s, size_t len) {
  if (len == 0) return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
      continue;
    if (!c || !strchr("!#$%&'*+-.^_`|~", c)) return 0;
  }
  return 1;
}

/* Raise "bad argument #arg to 'method' (what)" where the user called
** the request method that called this function (two levels up). */
static int caller_error(lua_State *L, const char *method, int arg,
                        const char *what) {
  luaL_where(L, 3);
  lua_pushfstring(L, "bad argument #%d to '%s' (%s)", arg, method, what);
  lua_concat(L, 2);
  return lua_error(L);
}

static int header_error(lua_State *L, int arg, const char *what) {
  return caller_error(L, "reply_header", arg, what);
}

/* Append "name: value\r\n" to out for the value at idx (a string or a
** number). */
static void add_header_line(lua_State *L, evlua_buffer *out, const char *name,
                            size_t name_len, int idx) {
  int t = lua_type(L, idx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER)
    header_error(L, 2, "string, number or list of them expected");
  size_t len;
  const char *value = lua_tolstring(L, idx, &len);
  if (memchr(value, '\r', len) || memchr(value, '\n', len) ||
      memchr(value, '\0', len))
    header_error(L, 2, "header value without CR, LF or NUL expected");
  if (evlua_buffer_append(out, name, name_len) ||
      evlua_buffer_append(out, ": ", 2) ||
      evlua_buffer_append(out, value, len) ||
      evlua_buffer_append(out, "\r\n", 2))
    luaL_error(L, "out of memory");
}

/* core.http_reply_header(name, value) -> lines, kind: checks a reply
** header (name a token; value a string, a number, or a list of them,
** without CR, LF or NUL) and formats its lines. kind: 1 for Connection:
** close, 2 for Content-Length (the reply must not add its own), else 0. */
static int l_reply_header(lua_State *L) {
  size_t name_len;
  if (lua_type(L, 1) != LUA_TSTRING) header_error(L, 1, "header name expected");
  const char *name = lua_tolstring(L, 1, &name_len);
  if (!is_token(name, name_len)) header_error(L, 1, "header name expected");
  evlua_buffer *out = evlua_scratch(L);
  int kind = 0;
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, 2, i);
      add_header_line(L, out, name, name_len, -1);
      lua_pop(L, 1);
    }
  } else {
    add_header_line(L, out, name, name_len, 2);
    size_t len;
    const char *value = lua_tolstring(L, 2, &len);
    if (evlua_http_ieq(name, name_len, "connection") &&
        evlua_http_ieq(value, len, "close"))
      kind = 1;
  }
  if (evlua_http_ieq(name, name_len, "content-length")) kind = 2;
  lua_pushlstring(L, evlua_http_bytes(out), evlua_buffer_len(out));
  evlua_scratch_done(out);
  lua_pushinteger(L, kind);
  return 2;
}

/* core.http_reply(stream | nil, status, reason | nil, body, flags
**                 [, extra_headers [, server_header]])
** formats a whole reply with Content-Length, or the head of a streamed
** one (see the REPLY_* flags). status must be an integer from 100 to
** 999; body may be nil ("") or any value (tostring'd);
** with a stream, writes it and returns what stream:write returns; with
** nil, returns the head and the body, to be written later (a reply that
** waits behind earlier ones). extra_headers and server_header are
** complete "Name: value\r\n" lines. */
static int l_reply(lua_State *L) {
  lstream *ls = lua_isnil(L, 1) ? NULL : evlua_check_stream(L, 1);
  lua_Integer status = lua_tointeger(L, 2);
  if (!lua_isinteger(L, 2) || status < 100 || status > 999)
    caller_error(L, "reply", 1, "status code expected");
  size_t reason_len = 0, body_len, extra_len, server_len;
  const char *reason = luaL_optlstring(L, 3, NULL, &reason_len);
  const char *body = "";
  body_len = 0;
  if (!lua_isnil(L, 4)) body = luaL_tolstring(L, 4, &body_len);   /* any */
  lua_Integer flags = luaL_checkinteger(L, 5);
  const char *extra = luaL_optlstring(L, 6, "", &extra_len);
  const char *server = luaL_optlstring(L, 7, "", &server_len);
  /* room for the fixed text (about 120 bytes), a standard reason phrase
  ** (at most 31), the numbers and the date */
  size_t room = 256 + reason_len + server_len + extra_len;
  evlua_buffer *scratch = evlua_scratch(L);
  char *head = evlua_buffer_reserve(scratch, room);
  if (!head) return luaL_error(L, "out of memory");
  char *at = put_prefix(L, head, status, reason, reason_len, server,
                        server_len);
  at = put(at, extra, extra_len);
  if (flags & REPLY_STREAM) {
    if (!(flags & REPLY_OWN_LENGTH) && (flags & REPLY_HTTP11))
      at = PUT_LITERAL(at, "Transfer-Encoding: chunked\r\n");
  } else if (!(flags & REPLY_OWN_LENGTH) && status >= 200 && status != 204 &&
             status != 304) {
    at = PUT_LITERAL(at, "Content-Length: ");
    at = put_number(at, body_len);
    at = PUT_LITERAL(at, "\r\n");
  }
  if (!(flags & REPLY_KEEP_ALIVE)) {
    if (!(flags & REPLY_OWN_CLOSE))
      at = PUT_LITERAL(at, "Connection: close\r\n");
  } else if (!(flags & REPLY_HTTP11)) {
    at = PUT_LITERAL(at, "Connection: keep-alive\r\n");
  }
  at = PUT_LITERAL(at, "\r\n");
  if (flags & REPLY_HEAD) body_len = 0;
  int results;
  if (!ls) {
    lua_pushlstring(L, head, (size_t)(at - head));
    lua_pushlstring(L, body, body_len);
    results = 2;
  } else {
    struct iovec iov[2] = {
      { head, (size_t)(at - head) },
      { (void *)(uintptr_t)body, body_len }
    };
    results = evlua_push_write_result(L, ls,
                                      evlua_stream_write(&ls->s, iov, 2));
  }
  evlua_scratch_done(scratch);
  return results;
}

static int l_gc(lua_State *L) {
  evlua_http_release(check_parser(L, 1));
  return 0;
}

static int l_tostring(lua_State *L) {
  evlua_http *h = check_parser(L, 1);
  lua_pushfstring(L, "evlua.http_parser (%p, %s)", (void *)h,
                  h->p.type == HTTP_REQUEST ? "requests" : "responses");
  return 1;
}

static size_t opt_limit(lua_State *L, int idx, const char *name, size_t def,
                        size_t max) {
  lua_getfield(L, idx, name);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return def;
  }
  lua_Integer v = lua_tointeger(L, -1);
  if (!lua_isinteger(L, -1) || v < 1 || (lua_Unsigned)v > max)
    luaL_error(L, "bad limit '%s' (integer between 1 and %I expected)", name,
               (lua_Integer)max);
  lua_pop(L, 1);
  return (size_t)v;
}

/* core.http_parser("request" | "response" [, limits]) -> parser.
** limits: max_url, max_header_size, max_headers, max_body (bytes). */
static int l_new(lua_State *L) {
  static const char *const kinds[] = { "request", "response", NULL };
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  else {
    lua_settop(L, 1);
    lua_newtable(L);
  }
  evlua_http *h = (evlua_http *)lua_newuserdatauv(L, sizeof *h, 0);
  evlua_http_init(h, kind == 1);   /* empty buffers: safe for __gc */
  /* a body of 32 to 64 KiB takes a block of the loop's cache, as stream
  ** input does */
  evlua_block_cache *blocks = &evlua_runtime_get(L)->core.blocks;
  evlua_buffer_init_cached(&h->url, blocks);
  evlua_buffer_init_cached(&h->hbuf, blocks);
  evlua_buffer_init_cached(&h->body, blocks);
  luaL_setmetatable(L, EVLUA_HTTP_PARSER);
  /* http-parser stops at HTTP_MAX_HEADER_SIZE on its own: limits above
  ** it would never be reached. */
  h->max_url = opt_limit(L, 2, "max_url", EVLUA_HTTP_MAX_URL,
                         HTTP_MAX_HEADER_SIZE);
  h->max_header_size = opt_limit(L, 2, "max_header_size",
                                 EVLUA_HTTP_MAX_HEADER_SIZE,
                                 HTTP_MAX_HEADER_SIZE);
  h->max_headers = opt_limit(L, 2, "max_headers", EVLUA_HTTP_MAX_HEADERS,
                             10000);
  h->max_body = opt_limit(L, 2, "max_body", EVLUA_HTTP_MAX_BODY,
                          (size_t)1 << 40);
  return 1;
}
/* core.http_status_text(code) -> the standard reason phrase or nil */
static int l_status_text(lua_State *L) {
  const char *text = status_text(luaL_checkinteger(L, 1));
  if (!text) return 0;
  lua_pushstring(L, text);
  return 1;
}

void evlua_open_http(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "parse", l_parse },
    { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", l_gc },
    { "__tostring", l_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "http_parser", l_new },
    { "http_status_text", l_status_text },
    { "http_reply", l_reply },
    { "http_reply_header", l_reply_header },
    { NULL, NULL }
  };
  parser_meta = evlua_new_class(L, EVLUA_HTTP_PARSER, meta, methods);
  luaL_setfuncs(L, funcs, 0);
  /* The reply prefixes: a userdata the registry keeps as long as the
  ** state, zeroed (status 0 matches no reply). */
  size_t size = PREFIX_SLOTS * sizeof(reply_prefix);
  reply_prefix *prefixes = lua_newuserdatauv(L, size, 0);
  memset(prefixes, 0, size);
  luaL_ref(L, LUA_REGISTRYINDEX);
  evlua_runtime_get(L)->reply_prefixes = prefixes;
}
