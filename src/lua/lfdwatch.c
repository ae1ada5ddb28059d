/*
** lfdwatch.c - readiness of a raw file descriptor, for Lua: one userdata
** embedding an ev_io. Used where no stream is wanted (the interactive
** prompt's stdin). The target is resumed with, or called as f(w, arg, ev)
** with, ev = "r" or "w".
*/
#include <errno.h>
#include <lauxlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

#define EVLUA_FDWATCH "evlua.fdwatch"

typedef struct lfdwatch {
  ev_io w;
  int ref;     /* registry anchor while active */
} lfdwatch;

static const void *fdwatch_meta;   /* for evlua_checkudata */

static lfdwatch *check_fdwatch(lua_State *L, int idx) {
  return (lfdwatch *)evlua_checkudata(L, idx, fdwatch_meta, EVLUA_FDWATCH);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents) {
  lfdwatch *f = container_of(w, lfdwatch, w);
  lua_State *L = ((evlua_runtime *)ev_userdata(loop))->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, f->ref);
  lua_pushstring(L, (revents & EV_READ) ? "r" : "w");
  evlua_deliver(L, -2, 1);
  lua_pop(L, 1);
}

/* core.fdwatch(fd, "r"|"w", target [, arg]) -> a stopped watcher */
static int l_fdwatch_new(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  const char *mode = luaL_checkstring(L, 2);
  int events = (strchr(mode, 'r') ? EV_READ : 0) |
               (strchr(mode, 'w') ? EV_WRITE : 0);
  luaL_argcheck(L, fd >= 0, 1, "invalid file descriptor");
  luaL_argcheck(L, events != 0, 2, "\"r\" or \"w\" expected");
  lfdwatch *f = (lfdwatch *)lua_newuserdatauv(L, sizeof *f, 2);
  f->ref = LUA_NOREF;
  ev_io_init(&f->w, on_io, fd, events);
  luaL_setmetatable(L, EVLUA_FDWATCH);
  evlua_set_target(L, lua_gettop(L), 3);
  return 1;
}

static int l_fdwatch_start(lua_State *L) {
  lfdwatch *f = check_fdwatch(L, 1);
  evlua_runtime *rt = evlua_runtime_get(L);
  if (!ev_is_active(&f->w)) {
    ev_io_start(rt->loop, &f->w);
    rt->active_fdwatches++;
  }
  evlua_anchor(L, 1, &f->ref);
  lua_settop(L, 1);
  return 1;
}

static int l_fdwatch_stop(lua_State *L) {
  lfdwatch *f = check_fdwatch(L, 1);
  evlua_runtime *rt = evlua_runtime_get(L);
  if (ev_is_active(&f->w)) {
    ev_io_stop(rt->loop, &f->w);
    rt->active_fdwatches--;
  }
  evlua_unanchor(L, &f->ref);
  return 0;
}

static int l_fdwatch_tostring(lua_State *L) {
  lfdwatch *f = check_fdwatch(L, 1);
  lua_pushfstring(L, "evlua.fdwatch (fd %d%s)", f->w.fd,
                  ev_is_active(&f->w) ? ", active" : "");
  return 1;
}

/* core.read(fd, max) -> bytes ("" at end of file) | nil, err */
static int l_read(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 4096);
  luaL_argcheck(L, max > 0 && max <= (1 << 24), 2, "out of range");
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, (size_t)max);
  ssize_t n;
  do n = read(fd, p, (size_t)max); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return evlua_fail(L, "EAGAIN", "again");
    return evlua_fail_errno(L, errno, NULL);
  }
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* core.isatty(fd) -> boolean */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

void evlua_open_fdwatch(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "start", l_fdwatch_start },
    { "stop", l_fdwatch_stop },
    { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", l_fdwatch_stop },
    { "__close", l_fdwatch_stop },
    { "__tostring", l_fdwatch_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "fdwatch", l_fdwatch_new },
    { "read", l_read },
    { "isatty", l_isatty },
    { NULL, NULL }
  };
  fdwatch_meta = evlua_new_class(L, EVLUA_FDWATCH, meta, methods);
  luaL_setfuncs(L, funcs, 0);   /* into the core table below */
}
