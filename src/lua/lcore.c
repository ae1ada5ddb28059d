/*
** lcore.c - the "evlua.core" module: loop control, the ready-queue hook,
** time, logging and runtime statistics. The friendly API is lua/event.lua.
*/
#include <errno.h>
#include <lauxlib.h>
#include <malloc.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "lreadline.h"
#include "runtime.h"

/* core.now() -> the loop time (seconds since the epoch): cached, but
** refreshed when stale, so deadlines computed from it are real */
static int l_now(lua_State *L) {
  lua_pushnumber(L, evlua_clock_now(evlua_runtime_get(L)->loop));
  return 1;
}

/* core.iteration() -> the number of the loop iteration running now */
static int l_iteration(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ev_iteration(evlua_runtime_get(L)->loop));
  return 1;
}

/* core.update_now(): refresh the cached loop time after long work */
static int l_update_now(lua_State *L) {
  ev_now_update(evlua_runtime_get(L)->loop);
  return 0;
}

/* core.time() -> the current wall-clock time, not cached */
static int l_time(lua_State *L) {
  lua_pushnumber(L, ev_time());
  return 1;
}

/* core.breakout(): stop the loop once the current callback returns */
static int l_breakout(lua_State *L) {
  ev_break(evlua_runtime_get(L)->loop, EVBREAK_ALL);
  return 0;
}

/* core.exit(code): set the process exit status and stop the loop */
static int l_exit(lua_State *L) {
  evlua_runtime *rt = evlua_runtime_get(L);
  rt->exit_code = (int)luaL_checkinteger(L, 1);
  ev_break(rt->loop, EVBREAK_ALL);
  return 0;
}

/* core.set_drain(fn): the function that runs the ready queue */
static int l_set_drain(lua_State *L) {
  evlua_runtime *rt = evlua_runtime_get(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  evlua_unanchor(L, &rt->drain_ref);
  evlua_anchor(L, 1, &rt->drain_ref);
  return 0;
}

/* core.set_ready(bool): whether the ready queue has work */
static int l_set_ready(lua_State *L) {
  evlua_runtime_set_ready(evlua_runtime_get(L), lua_toboolean(L, 1));
  return 0;
}

static int check_level(lua_State *L, int idx) {
  const char *name = luaL_checkstring(L, idx);
  int level = evlua_log_level_parse(name);
  if (level < 0)
    return luaL_argerror(L, idx, lua_pushfstring(L, "unknown log level '%s'",
                                                 name));
  return level;
}

/* core.log(level, message): one timestamped line */
static int l_log(lua_State *L) {
  int level = check_level(L, 1);
  size_t len;
  const char *msg = luaL_checklstring(L, 2, &len);
  evlua_log_write(level, ev_time(), msg, len);
  return 0;
}

/* core.log_open(path | nil) -> true | nil, err */
static int l_log_open(lua_State *L) {
  char err[512];
  const char *path = luaL_optstring(L, 1, NULL);
  if (evlua_log_open(path, err, sizeof err) != 0)   /* err: strerror's case */
    return evlua_fail_errno(L, errno, path);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.log_level([name]) -> previous level name ("error"...) */
static int l_log_level(lua_State *L) {
  char name[8];
  int old = evlua_log_get_level();
  if (!lua_isnoneornil(L, 1)) evlua_log_set_level(check_level(L, 1));
  strncpy(name, evlua_log_level_name(old), sizeof name - 1);
  name[sizeof name - 1] = '\0';
  for (char *p = name; *p; p++) *p = (char)(*p - 'A' + 'a');
  lua_pushstring(L, name);
  return 1;
}

/* core.stats() -> { timers =, fdwatches =, uptime = } */
static int l_stats(lua_State *L) {
  evlua_runtime *rt = evlua_runtime_get(L);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, rt->active_timers);
  lua_setfield(L, -2, "timers");
  lua_pushinteger(L, rt->active_fdwatches);
  lua_setfield(L, -2, "fdwatches");
  lua_pushnumber(L, ev_time() - rt->started);
  lua_setfield(L, -2, "uptime");
  lua_pushinteger(L, (lua_Integer)ev_iteration(rt->loop));
  lua_setfield(L, -2, "iterations");
  return 1;
}

/* core.c_heap() -> bytes malloc has handed out and not freed (glibc
** mallinfo2: arena chunks in use plus mmapped blocks). The Lua heap is
** allocated with malloc too, so this includes it. */
static int l_c_heap(lua_State *L) {
  struct mallinfo2 mi = mallinfo2();
  lua_pushinteger(L, (lua_Integer)(mi.uordblks + mi.hblkhd));
  return 1;
}

/* The bindings, opened in this order into the core table (as Lua's
** linit.c lists its libraries): each opener registers its userdata
** classes and sets its functions in the table on top of the stack.
** A new binding is one new row. Streams come before the bindings that
** add stream methods (evlua_stream_add_methods). */
typedef struct binding {
  const char *name;   /* for the balance check's message */
  void (*open)(lua_State *L);
} binding;

static const binding bindings[] = {
  { "timer", evlua_open_timer },
  { "dns", evlua_open_dns },
  { "fdwatch", evlua_open_fdwatch },
  { "stream", evlua_open_stream },
  { "listener", evlua_open_listener },
  { "msgpack", evlua_open_msgpack },   /* adds stream methods */
  { "http", evlua_open_http },
  { "process", evlua_open_process },
  { "signal", evlua_open_signal },
  { "interrupt", evlua_open_interrupt },
  { "readline", evlua_open_readline },
  { "import", evlua_open_import },
  { "redis", evlua_open_redis },       /* adds stream methods */
  { "udp", evlua_open_udp },
  { "kcp", evlua_open_kcp },           /* adds stream methods */
  { "bson", evlua_open_bson },
  { "crypto", evlua_open_crypto },
  { "mongo", evlua_open_mongo },       /* adds stream methods */
  { "profiler", evlua_open_profiler },
  { "crash", evlua_open_crash },
  { NULL, NULL }
};

/* Open every binding into the core table on top of the stack. An opener
** that leaves the stack unbalanced would fill the wrong table: fail at
** startup, naming it, rather than later and obscurely. */
static void open_bindings(lua_State *L) {
  int top = lua_gettop(L);
  for (const binding *b = bindings; b->name != NULL; b++) {
    b->open(L);
    if (lua_gettop(L) != top)
      luaL_error(L, "binding '%s' left the stack unbalanced", b->name);
  }
}

int luaopen_evlua_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "now", l_now },
    { "update_now", l_update_now },
    { "iteration", l_iteration },
    { "time", l_time },
    { "breakout", l_breakout },
    { "exit", l_exit },
    { "set_drain", l_set_drain },
    { "set_ready", l_set_ready },
    { "log", l_log },
    { "log_open", l_log_open },
    { "log_level", l_log_level },
    { "stats", l_stats },
    { "c_heap", l_c_heap },
    { NULL, NULL }
  };
  luaL_newlib(L, funcs);
  open_bindings(L);
  lua_pushliteral(L, EVLUA_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushfstring(L, "evlua %s (%s, libev %d.%d)", EVLUA_VERSION,
                  LUA_RELEASE, ev_version_major(), ev_version_minor());
  lua_setfield(L, -2, "version_string");
  return 1;
}
