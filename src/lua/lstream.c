/*
** lstream.c - streams for Lua: one userdata embedding an evlua_stream.
** Events (connect, drain, close, and data unless the stream has a data
** handler) go to one Lua dispatcher, set with core.set_stream_dispatch,
** as dispatch(owner, event, arg, code) where owner is user value 1 (the
** channel object). A data handler (user value 2, set with
** stream:set_data_handler) is called as handler(owner) instead.
*/
#include <errno.h>
#include <lauxlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "lstream.h"
#include "net.h"
#include "runtime.h"

#define MAX_WRITE_PARTS EVLUA_STREAM_MAX_IOV

static const void *stream_meta;

static lstream *check_stream(lua_State *L, int idx) {
  return (lstream *)evlua_checkudata(L, idx, stream_meta, EVLUA_STREAM);
}

lstream *evlua_check_stream(lua_State *L, int idx) {
  return check_stream(L, idx);
}

void evlua_stream_add_methods(lua_State *L, const luaL_Reg *methods) {
  if (luaL_getmetatable(L, EVLUA_STREAM) != LUA_TTABLE)
    luaL_error(L, "stream methods added before streams were opened");
  lua_getfield(L, -1, "__index");
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 2);
}

/* Call dispatch(owner, event, arg, code) for the stream userdata on top
** of the stack, and pop it (it stays on the stack meanwhile, so dropping
** its anchor first is safe). code names a failure (errno name), or NULL. */
static void dispatch(evlua_runtime *rt, const char *event, const char *arg,
                     const char *code) {
  lua_State *L = rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->dispatch_ref);
  lua_getiuservalue(L, -2, 1);
  lua_pushstring(L, event);
  if (arg) lua_pushstring(L, arg);
  else lua_pushnil(L);
  if (code) lua_pushstring(L, code);
  else lua_pushnil(L);
  evlua_pcall(L, 4, 0);
  lua_pop(L, 1);
}

/* The runtime of the stream's loop, with the stream's userdata pushed on
** its Lua state. */
static evlua_runtime *push_stream(lstream *ls) {
  evlua_runtime *rt = evlua_runtime_of_loop(evlua_stream_loop(&ls->s));
  lua_rawgeti(rt->L, LUA_REGISTRYINDEX, ls->ref);
  return rt;
}

static void emit(evlua_stream *s, const char *event, const char *arg,
                 const char *code, int unanchor) {
  lstream *ls = container_of(s, lstream, s);
  evlua_runtime *rt = push_stream(ls);
  if (unanchor) evlua_unanchor(rt->L, &ls->ref);
  dispatch(rt, event, arg, code);
}

static void on_connect(evlua_stream *s, int err) {
  if (err) emit(s, "connect", evlua_net_strerror(err),
                evlua_errno_name(err), 1);
  else emit(s, "connect", NULL, NULL, 0);
}

/* New bytes: the stream's own data handler if it has one (user value 2),
** called as handler(owner), else the dispatcher. */
static void on_data(evlua_stream *s) {
  evlua_runtime *rt = push_stream(container_of(s, lstream, s));
  lua_State *L = rt->L;
  if (lua_getiuservalue(L, -1, 2) == LUA_TFUNCTION) {
    lua_getiuservalue(L, -2, 1);
    evlua_pcall(L, 1, 0);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  dispatch(rt, "data", NULL, NULL);
}

static void on_drain(evlua_stream *s) {
  emit(s, "drain", NULL, NULL, 0);
}

static void on_close(evlua_stream *s, const char *reason) {
  emit(s, "close", reason, NULL, 1);
}

static const evlua_stream_handler lua_handler = {
  on_connect, on_data, on_drain, on_close
};

static lstream *new_stream(lua_State *L) {
  lstream *ls = (lstream *)lua_newuserdatauv(L, sizeof *ls, 2);
  memset(ls, 0, sizeof *ls);
  ls->ref = LUA_NOREF;
  ls->s.state = EVLUA_STREAM_CLOSED;   /* safe for __gc until set up */
  luaL_setmetatable(L, EVLUA_STREAM);
  return ls;
}

lstream *evlua_push_transport_stream(lua_State *L,
                                     const evlua_stream_transport *t,
                                     void *tdata, int message_mode) {
  lstream *ls = new_stream(L);
  evlua_stream_init_transport(&ls->s, evlua_runtime_get(L)->loop, t, tdata,
                              message_mode, &lua_handler);
  evlua_anchor(L, -1, &ls->ref);
  return ls;
}

lstream *evlua_push_stream(lua_State *L, int fd, int connecting) {
  lstream *ls = new_stream(L);
  evlua_stream_init(&ls->s, evlua_runtime_get(L)->loop, fd, connecting,
                    &lua_handler);
  evlua_anchor(L, -1, &ls->ref);
  return ls;
}

/* Close without callbacks and drop the anchor (also __gc and __close). */
static int l_close_silently(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  evlua_stream_close_silently(&ls->s);
  evlua_unanchor(L, &ls->ref);
  return 0;
}

static int l_gc(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  evlua_stream_release(&ls->s);
  evlua_unanchor(L, &ls->ref);
  return 0;
}

/* core.stream_bind(fd) -> stream reading fd */
static int l_stream_bind(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "invalid file descriptor");
  evlua_push_stream(L, (int)fd, 0);
  return 1;
}

/* core.stream_connect(numeric_host | "unix:/path", port) -> stream
** (connecting; a "connect" event follows) | nil, err */
static int l_stream_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port out of range");
  evlua_addr addr;
  if (evlua_addr_parse(&addr, host, (int)port) != 0)
    return luaL_argerror(L, 1, "numeric address or unix:/path expected");
  char err[256];
  int pending;
  int fd = evlua_net_connect(&addr, &pending, err, sizeof err);
  if (fd < 0) return evlua_fail(L, evlua_errno_name(errno), "%s", err);
  evlua_push_stream(L, fd, 1);   /* completes from the loop either way */
  return 1;
}

/* stream:set_data_handler(fn | nil): fn(owner) runs on new bytes instead
** of the dispatcher (for owners that never wait in a read: one call less
** per event) */
static int l_set_data_handler(lua_State *L) {
  check_stream(L, 1);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 2);
  return 0;
}

/* stream:set_owner(obj): the value passed to the dispatcher */
static int l_set_owner(lua_State *L) {
  check_stream(L, 1);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

/* stream:read([n]) -> n bytes | nil when fewer are buffered.
** Without n: everything buffered, or nil when nothing is. */
static int l_read(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  size_t have = evlua_buffer_len(&ls->s.in);
  size_t n = have;
  if (!lua_isnoneornil(L, 2)) {
    lua_Integer want = luaL_checkinteger(L, 2);
    luaL_argcheck(L, want >= 0, 2, "non-negative count expected");
    n = (size_t)want;
    if (n > have) {
      luaL_pushfail(L);
      return 1;
    }
  } else if (have == 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushlstring(L, evlua_buffer_peek(&ls->s.in), n);
  evlua_stream_take(&ls->s, n);
  return 1;
}

/* stream:read_line([max]) -> line without "\n" or "\r\n" | nil when no
** full line is buffered | nil, "line too long" when the line (without its
** newline) is longer than max bytes. */
static int l_read_line(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  long at = evlua_buffer_find(&ls->s.in, '\n', 0);
  size_t have = evlua_buffer_len(&ls->s.in);
  if (at >= 0 && (max <= 0 || at <= max)) {
    const char *p = evlua_buffer_peek(&ls->s.in);
    size_t len = (size_t)at;
    if (len > 0 && p[len - 1] == '\r') len--;
    lua_pushlstring(L, p, len);
    evlua_stream_take(&ls->s, (size_t)at + 1);
    return 1;
  }
  if (max > 0 && (at > max || (at < 0 && have > (size_t)max)))
    return evlua_fail(L, "too_large", "line too long");
  luaL_pushfail(L);   /* no whole line yet */
  return 1;
}

/* stream:write(s1, ...) -> true | false when the queue is above the high
** water mark (the bytes are queued all the same) | nil, "closed" */
static int l_write(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  int n = lua_gettop(L) - 1;
  luaL_argcheck(L, n <= MAX_WRITE_PARTS, MAX_WRITE_PARTS + 2,
                "too many parts");
  struct iovec iov[MAX_WRITE_PARTS];
  for (int i = 0; i < n; i++) {
    size_t len;
    iov[i].iov_base = (void *)(uintptr_t)luaL_checklstring(L, i + 2, &len);
    iov[i].iov_len = len;
  }
  return evlua_push_write_result(L, ls, evlua_stream_write(&ls->s, iov, n));
}

int evlua_push_write_result(lua_State *L, lstream *ls, int r) {
  if (r != 0 && errno == EMSGSIZE)   /* one message past the transport's */
    return evlua_fail(L, "too_large", "message too large");
  if (r != 0) return evlua_push_closed(L);
  lua_pushboolean(L, !ls->s.full);
  return 1;
}

/* stream:close(): flush, then close; a "close" event with the reason
** "local close" follows (reasons are the stream's, not the caller's) */
static int l_close(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  evlua_stream_close(&ls->s, "local close");
  return 0;
}

static const char *const state_names[] = {
  "connecting", "open", "closing", "closed"
};

static int l_state(lua_State *L) {
  lua_pushstring(L, state_names[check_stream(L, 1)->s.state]);
  return 1;
}

/* stream:buffered() -> unread input bytes, queued output bytes */
static int l_buffered(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  lua_pushinteger(L, (lua_Integer)evlua_buffer_len(&ls->s.in));
  lua_pushinteger(L, (lua_Integer)evlua_stream_pending(&ls->s));
  return 2;
}

/* stream:counters() -> bytes read, bytes written (to the socket) */
static int l_counters(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  lua_pushinteger(L, (lua_Integer)ls->s.bytes_in);
  lua_pushinteger(L, (lua_Integer)ls->s.bytes_out);
  return 2;
}

static int push_addr(lua_State *L, int ok, const evlua_addr *addr) {
  if (!ok) return evlua_fail_errno(L, errno, NULL);
  char host[128];
  int port = evlua_addr_format(addr, host, sizeof host);
  lua_pushstring(L, host);
  lua_pushinteger(L, port);
  return 2;
}

/* stream:peer() / stream:local_addr() -> host, port | nil, err */
static int push_stream_addr(lua_State *L, int peer) {
  lstream *ls = check_stream(L, 1);
  evlua_addr addr;
  if (ls->s.state == EVLUA_STREAM_CLOSED) return evlua_push_closed(L);
  return push_addr(L, evlua_stream_addr(&ls->s, peer, &addr) == 0, &addr);
}

static int l_peer(lua_State *L) { return push_stream_addr(L, 1); }
static int l_local_addr(lua_State *L) { return push_stream_addr(L, 0); }

/* stream:read_message() -> the next whole message | nil when none is
** buffered (a message-mode transport's stream; raises on others) */
static int l_read_message(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  if (!ls->s.message_mode)
    return luaL_error(L, "read_message: not a message-mode stream");
  long n = evlua_stream_next_message(&ls->s);
  if (n < 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushlstring(L, evlua_buffer_peek(&ls->s.in), (size_t)n);
  evlua_stream_take_message(&ls->s, (size_t)n);
  return 1;
}

/* stream:message_mode() -> true when input comes as whole messages */
static int l_message_mode(lua_State *L) {
  lua_pushboolean(L, check_stream(L, 1)->s.message_mode);
  return 1;
}

/* stream:set_idle_timeout(sec): close with "timeout" after sec seconds
** without reading or writing a byte (0: never) */
static int l_set_idle_timeout(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  evlua_stream_set_idle_timeout(&ls->s, evlua_check_seconds(L, 2));
  return 0;
}

/* stream:set_send_timeout(sec): close with "send timeout" when queued
** output makes no progress for sec seconds (0: never) */
static int l_set_send_timeout(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  evlua_stream_set_send_timeout(&ls->s, evlua_check_seconds(L, 2));
  return 0;
}

/* stream:timeouts() -> idle, send, linger (seconds, 0: none) */
static int l_timeouts(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  lua_pushnumber(L, ls->s.idle_timeout);
  lua_pushnumber(L, ls->s.send_timeout);
  lua_pushnumber(L, ls->s.linger);
  return 3;
}

/* stream:set_linger(sec): how long close() may spend flushing */
static int l_set_linger(lua_State *L) {
  check_stream(L, 1)->s.linger = evlua_check_seconds(L, 2);
  return 0;
}

static size_t check_size(lua_State *L, int idx) {
  lua_Integer n = luaL_checkinteger(L, idx);
  luaL_argcheck(L, n > 0, idx, "positive size expected");
  return (size_t)n;
}

/* stream:set_limits(max_input, high_water, low_water) */
static int l_set_limits(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  size_t max_input = check_size(L, 2);
  size_t high = check_size(L, 3);
  size_t low = (size_t)luaL_checkinteger(L, 4);
  luaL_argcheck(L, low <= high, 4, "low water mark above the high one");
  evlua_stream_set_limits(&ls->s, max_input, high, low);
  return 0;
}

/* stream:limits() -> max_input, high_water, low_water */
static int l_limits(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  lua_pushinteger(L, (lua_Integer)ls->s.max_input);
  lua_pushinteger(L, (lua_Integer)ls->s.high_water);
  lua_pushinteger(L, (lua_Integer)ls->s.low_water);
  return 3;
}

static int l_full(lua_State *L) {
  lua_pushboolean(L, check_stream(L, 1)->s.full);
  return 1;
}

static int l_fd(lua_State *L) {
  lua_pushinteger(L, check_stream(L, 1)->s.fd);
  return 1;
}

static int l_tostring(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  const evlua_stream_transport *t = evlua_stream_transport_of(&ls->s);
  if (t)
    lua_pushfstring(L, "evlua.stream (%s, %s)", t->name,
                    state_names[ls->s.state]);
  else
    lua_pushfstring(L, "evlua.stream (fd %d, %s)", ls->s.fd,
                    state_names[ls->s.state]);
  return 1;
}

/* core.numeric_host(host) -> true when host needs no resolver (numeric
** IPv4/IPv6, "*" or "unix:/path") */
static int l_numeric_host(lua_State *L) {
  evlua_addr addr;
  lua_pushboolean(L, evlua_addr_parse(&addr, luaL_checkstring(L, 1), 0) == 0);
  return 1;
}

/* core.set_stream_dispatch(fn) */
static int l_set_dispatch(lua_State *L) {
  evlua_runtime *rt = evlua_runtime_get(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  evlua_unanchor(L, &rt->dispatch_ref);
  evlua_anchor(L, 1, &rt->dispatch_ref);
  return 0;
}

void evlua_open_stream(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "set_owner", l_set_owner },
    { "set_data_handler", l_set_data_handler },
    { "read", l_read },
    { "read_line", l_read_line },
    { "read_message", l_read_message },
    { "message_mode", l_message_mode },
    { "write", l_write },
    { "close", l_close },
    { "close_silently", l_close_silently },
    { "state", l_state },
    { "buffered", l_buffered },
    { "counters", l_counters },
    { "peer", l_peer },
    { "local_addr", l_local_addr },
    { "set_idle_timeout", l_set_idle_timeout },
    { "set_linger", l_set_linger },
    { "set_send_timeout", l_set_send_timeout },
    { "timeouts", l_timeouts },
    { "set_limits", l_set_limits },
    { "limits", l_limits },
    { "full", l_full },
    { "fd", l_fd },
    { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", l_gc },
    { "__close", l_close_silently },
    { "__tostring", l_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "stream_bind", l_stream_bind },
    { "stream_connect", l_stream_connect },
    { "set_stream_dispatch", l_set_dispatch },
    { "numeric_host", l_numeric_host },
    { NULL, NULL }
  };
  stream_meta = evlua_new_class(L, EVLUA_STREAM, meta, methods);
  luaL_setfuncs(L, funcs, 0);
}
