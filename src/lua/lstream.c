/*
** lstream.c - streams for Lua: one userdata embedding an evlua_stream.
** Events (connect, drain, close, and data unless the stream has a data
** handler) go to one Lua dispatcher, set with core.set_stream_dispatch,
** as dispatch(owner, event, arg, code) where owner is user value 1 (the
** channel object). A data handler (user value 2, set with
** stream:set_data_handler) is called as handler(owner) instead.
** Without a data handler, user value 2 holds the task parked in a waiting
** read (see Waiting reads), which the data event brings as its arg.
*/
#include <errno.h>
#include <lauxlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
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
** called as handler(owner), else dispatch(owner, "data", reader) with the
** task parked in a waiting read, if any (user value 2 then). */
static void on_data(evlua_stream *s) {
  evlua_runtime *rt = push_stream(container_of(s, lstream, s));
  lua_State *L = rt->L;
  if (lua_getiuservalue(L, -1, 2) == LUA_TFUNCTION) {
    lua_getiuservalue(L, -2, 1);
    evlua_pcall(L, 1, 0);
    lua_pop(L, 1);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->dispatch_ref);
  lua_getiuservalue(L, -3, 1);
  lua_pushliteral(L, "data");
  lua_pushvalue(L, -4);   /* the reader, or nil */
  evlua_pcall(L, 3, 0);
  lua_pop(L, 2);
}

static void on_drain(evlua_stream *s) {
  emit(s, "drain", NULL, NULL, 0);
}

static void on_close(evlua_stream *s, const char *reason) {
  emit(s, "close", reason, NULL, 1);
}

static void on_eof(evlua_stream *s) {
  emit(s, "eof", NULL, NULL, 0);
}

static const evlua_stream_handler lua_handler = {
  on_connect, on_data, on_drain, on_close, on_eof
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
  if (lua_getiuservalue(L, 1, 2) == LUA_TTABLE)   /* the slot is a reader's */
    return luaL_error(L, "set_data_handler: a coroutine is waiting in a "
                      "read on this stream");
  lua_pop(L, 1);
  lua_setiuservalue(L, 1, 2);
  return 0;
}

/* stream:reader() -> the task parked in a waiting read on the stream (one
** without a data handler), or nil */
static int l_reader(lua_State *L) {
  check_stream(L, 1);
  if (lua_getiuservalue(L, 1, 2) != LUA_TTABLE) lua_pushnil(L);
  return 1;
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
/* Push the first n bytes (all == 1: everything buffered) and take them,
** or push nil when there are not enough (none, for all). */
static int push_bytes(lua_State *L, lstream *ls, int all, size_t n) {
  size_t have = evlua_buffer_len(&ls->s.in);
  if (all) n = have;
  if (n > have || (all && have == 0)) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushlstring(L, evlua_buffer_peek(&ls->s.in), n);
  evlua_stream_take(&ls->s, n);
  return 1;
}

static int l_read(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  if (lua_isnoneornil(L, 2)) return push_bytes(L, ls, 1, 0);
  lua_Integer want = luaL_checkinteger(L, 2);
  luaL_argcheck(L, want >= 0, 2, "non-negative count expected");
  return push_bytes(L, ls, 0, (size_t)want);
}

/* stream:read_line([max]) -> line without "\n" or "\r\n" | nil when no
** full line is buffered | nil, "line too long" when the line (without its
** newline) is longer than max bytes. */
static int push_line(lua_State *L, lstream *ls, lua_Integer max) {
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

static int l_read_line(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  return push_line(L, ls, luaL_optinteger(L, 2, 0));
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

/* stream:set_half_close(on): a peer's EOF then stops the reading only,
** with an "eof" event; the owner closes once it has written what it owes
** (the "close" event's reason is "eof"). Not for transport streams. */
static int l_set_half_close(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  ls->s.half_close = !ls->s.is_transport && lua_toboolean(L, 2);
  return 0;
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
static int push_message(lua_State *L, lstream *ls) {
  long n = evlua_stream_next_message(&ls->s);
  if (n < 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushlstring(L, evlua_buffer_peek(&ls->s.in), (size_t)n);
  evlua_stream_take_message(&ls->s, (size_t)n);
  return 1;
}

static int l_read_message(lua_State *L) {
  lstream *ls = check_stream(L, 1);
  if (!ls->s.message_mode)
    return luaL_error(L, "read_message: not a message-mode stream");
  return push_message(L, ls);
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

/* Waiting reads =========================================================
** evlua.channel's wait_read, wait_line and wait_message, in C so that a
** coroutine parked in one holds a single frame of it (issue 16: memory
** per idle connection). The function yields itself (lua_yieldk) instead of
** calling coroutine.yield from a Lua frame: one CallInfo less under every
** parked coroutine. And it calls no function while it parks, Lua or C: a
** call one level deeper than the yield leaves a spare CallInfo behind for
** good (Lua keeps one free). Only a timed wait calls, the deadline
** starter. Upvalues: */
#define W_KIND lua_upvalueindex(1)      /* WAIT_BYTES, WAIT_LINE... */
#define W_LIVE lua_upvalueindex(2)      /* coroutine -> its task */
#define W_DEADLINE lua_upvalueindex(3)  /* start_deadline(task, seconds) */
/* 4..7: the task record's slots STATE, CANCEL, WHAT, ON (see slot) */

enum { WAIT_BYTES, WAIT_LINE, WAIT_MESSAGE };
enum { SLOT_STATE, SLOT_CANCEL, SLOT_WHAT, SLOT_ON };

static const char *const wait_names[] = {
  "wait_read", "wait_line", "wait_message"
};

/* The wait's stack, the same from the first call to every resume. */
enum { A_SELF = 1, A_ARG, A_TIMEOUT, A_STREAM, A_TASK, A_DEADLINE,
       A_VALUE, A_ERR, A_CODE };

static lua_Integer slot(lua_State *L, int which) {
  return lua_tointeger(L, lua_upvalueindex(4 + which));
}

static int kind_of(lua_State *L) {
  return (int)lua_tointeger(L, W_KIND);
}

/* Take what the wait is for from the stream: 1 (the value on top) or 3
** (nil, err, code on top) to return, or 0 (nothing yet; stack as it
** was). */
static int try_take(lua_State *L) {
  int top = lua_gettop(L);
  lstream *ls = (lstream *)lua_touserdata(L, A_STREAM);
  int n;
  switch (kind_of(L)) {
  case WAIT_BYTES:
    n = lua_isnil(L, A_ARG) ? push_bytes(L, ls, 1, 0)
                            : push_bytes(L, ls, 0,
                                         (size_t)lua_tointeger(L, A_ARG));
    break;
  case WAIT_LINE: n = push_line(L, ls, lua_tointeger(L, A_ARG)); break;
  default: n = push_message(L, ls); break;
  }
  if (lua_toboolean(L, top + 1)) {
    lua_settop(L, top + 1);
    return 1;
  }
  if (n == 3 && lua_toboolean(L, top + 2)) return 3;
  lua_settop(L, top);
  return 0;
}

static int wait_fail(lua_State *L, const char *code) {
  lua_pushnil(L);
  lua_pushstring(L, code);
  lua_pushstring(L, code);
  return 3;
}

/* task[CANCEL]: cleared, 1 if it was set. */
static int take_cancel(lua_State *L) {
  lua_Integer cancel = slot(L, SLOT_CANCEL);
  int set = lua_rawgeti(L, A_TASK, cancel) != LUA_TNIL && lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (set) {
    lua_pushboolean(L, 0);
    lua_rawseti(L, A_TASK, cancel);
  }
  return set;
}

static int wait_resumed(lua_State *L, int status, lua_KContext ctx);

/* Make the value on top (popped) the channel's reader: the stream's user
** value 2, unless that holds a data handler (the data event then never
** comes to the dispatcher; only a close wakes the reader): then the
** channel's _reader field. */
static void set_reader(lua_State *L) {
  int handler = lua_getiuservalue(L, A_STREAM, 2) == LUA_TFUNCTION;
  lua_pop(L, 1);
  if (handler) lua_setfield(L, A_SELF, "_reader");
  else lua_setiuservalue(L, A_STREAM, 2);
}

/* The channel's reader, pushed (nil if none). */
static void push_reader(lua_State *L) {
  if (lua_getiuservalue(L, A_STREAM, 2) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_getfield(L, A_SELF, "_reader");
}

/* Park the task until data, a close, the deadline or a cancel resumes it
** (what channel.lua's dispatch and event.lua do): ch._reader is the task,
** parked "read" on the channel, as its reader (set_reader). */
static int wait_park(lua_State *L) {
  lua_settop(L, A_DEADLINE);
  if (lua_getfield(L, A_SELF, "_closed") != LUA_TNIL && lua_toboolean(L, -1))
    return wait_fail(L, "closed");
  lua_pop(L, 1);
  if (take_cancel(L)) return wait_fail(L, "cancelled");
  if (!lua_isnil(L, A_DEADLINE)) {
    double left = lua_tonumber(L, A_DEADLINE) -
                  evlua_clock_now(evlua_runtime_get(L)->loop);
    if (left <= 0) return wait_fail(L, "timeout");
    lua_pushvalue(L, W_DEADLINE);
    lua_pushvalue(L, A_TASK);
    lua_pushnumber(L, left);
    lua_call(L, 2, 0);
  }
  lua_pushliteral(L, "waiting");
  lua_rawseti(L, A_TASK, slot(L, SLOT_STATE));
  lua_pushliteral(L, "read");
  lua_rawseti(L, A_TASK, slot(L, SLOT_WHAT));
  lua_pushvalue(L, A_SELF);
  lua_rawseti(L, A_TASK, slot(L, SLOT_ON));
  lua_pushvalue(L, A_TASK);
  set_reader(L);
  return lua_yieldk(L, 0, 0, wait_resumed);
}

/* The continuation: resumed with value, err, code (true for data or a
** close; nil, "timeout" or nil, "cancelled"). Unless the bytes are in, a
** failure is returned, and a wakeup that brought too little parks again. */
static int wait_resumed(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  lua_settop(L, A_CODE);
  lua_pushnil(L);
  set_reader(L);
  lua_pushliteral(L, "running");
  lua_rawseti(L, A_TASK, slot(L, SLOT_STATE));
  if (take_cancel(L)) {
    lua_pushnil(L);
    lua_replace(L, A_VALUE);
    lua_pushliteral(L, "cancelled");
    lua_replace(L, A_ERR);
    lua_pushliteral(L, "cancelled");
    lua_replace(L, A_CODE);
  }
  int n = try_take(L);
  if (n) return n;
  if (!lua_toboolean(L, A_VALUE)) {   /* timeout or cancelled */
    lua_pushnil(L);
    lua_replace(L, A_VALUE);
    return 3;
  }
  return wait_park(L);
}

/* ch:wait_read([n [, timeout]]), ch:wait_line([timeout]),
** ch:wait_message([timeout]) (docs/channel.md): the channel's method
** itself, a closure of core.stream_waiter. */
static int l_wait(lua_State *L) {
  int kind = kind_of(L);
  const char *fname = wait_names[kind];
  luaL_checktype(L, A_SELF, LUA_TTABLE);
  if (kind == WAIT_BYTES) {
    lua_settop(L, A_TIMEOUT);
  } else {   /* (self, timeout): the arg slot goes in between */
    lua_settop(L, 2);
    if (kind == WAIT_LINE) lua_getfield(L, A_SELF, "max_line");
    else lua_pushnil(L);
    lua_insert(L, A_ARG);
  }
  lua_getfield(L, A_SELF, "_stream");
  lstream *ls = check_stream(L, A_STREAM);
  if (kind == WAIT_BYTES && !lua_isnil(L, A_ARG)) {
    lua_Integer n = lua_tointeger(L, A_ARG);
    if (!lua_isinteger(L, A_ARG) || n < 0 || (size_t)n > ls->s.max_input)
      return luaL_error(L, "bad argument #1 to '%s' (count between 0 and "
                        "max_input (%I) expected)", fname,
                        (lua_Integer)ls->s.max_input);
  }
  if (kind == WAIT_MESSAGE && !ls->s.message_mode)
    return luaL_error(L, "%s: not a message-mode channel (KCP without "
                      "stream = true)", fname);
  int n = try_take(L);
  if (n) return n;
  push_reader(L);
  if (lua_toboolean(L, -1))
    return luaL_error(L, "%s: another coroutine is already reading this "
                      "channel", fname);
  lua_pop(L, 1);
  lua_pushthread(L);
  if (lua_rawget(L, W_LIVE) == LUA_TNIL)   /* A_TASK */
    return luaL_error(L, "%s must run in a coroutine", fname);
  if (lua_isnil(L, A_TIMEOUT)) {
    lua_getfield(L, A_SELF, "read_timeout");
    lua_replace(L, A_TIMEOUT);
  }
  if (lua_toboolean(L, A_TIMEOUT)) {   /* A_DEADLINE */
    int isnum;
    double timeout = lua_tonumberx(L, A_TIMEOUT, &isnum);
    if (!isnum)
      return luaL_error(L, "bad argument #%d to '%s' (number expected, got "
                        "%s)", kind == WAIT_BYTES ? 2 : 1, fname,
                        luaL_typename(L, A_TIMEOUT));
    lua_pushnumber(L, evlua_clock_now(evlua_runtime_get(L)->loop) + timeout);
  } else {
    lua_pushnil(L);
  }
  return wait_park(L);
}

/* core.stream_waiter(kind, live, start_deadline, STATE, CANCEL, WHAT, ON)
** -> the waiting read of kind ("read", "line" or "message") for
** evlua.channel: live maps a coroutine to its task, whose record has
** those slots; start_deadline(task, seconds) arms a timed wait. */
static int l_stream_waiter(lua_State *L) {
  static const char *const kinds[] = { "read", "line", "message", NULL };
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  for (int i = 4; i <= 7; i++) luaL_checkinteger(L, i);
  lua_settop(L, 7);
  lua_pushinteger(L, kind);
  lua_replace(L, 1);
  lua_pushcclosure(L, l_wait, 7);
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
    { "reader", l_reader },
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
    { "set_half_close", l_set_half_close },
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
    { "stream_waiter", l_stream_waiter },
    { "numeric_host", l_numeric_host },
    { NULL, NULL }
  };
  stream_meta = evlua_new_class(L, EVLUA_STREAM, meta, methods);
  luaL_setfuncs(L, funcs, 0);
}
