/*
** limport.c - C helpers for hot reload (evlua.import): canonical paths,
** modification times with nanoseconds (lfs has none), and running a
** chunk while capturing its top-level locals.
*/
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime.h"

static int push_errno(lua_State *L, const char *path) {
  return evlua_fail_errno(L, errno, path);
}

/* core.realpath(path) -> absolute path without symlinks | nil, err */
static int l_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char *resolved = realpath(path, NULL);
  if (resolved == NULL) return push_errno(L, path);
  lua_pushstring(L, resolved);
  free(resolved);
  return 1;
}

/* core.file_stat(path) -> mtime (seconds, with nanoseconds), size |
** nil, err */
static int l_file_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) return push_errno(L, path);
  lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec +
                    (lua_Number)st.st_mtim.tv_nsec / 1e9);
  lua_pushinteger(L, (lua_Integer)st.st_size);
  return 2;
}

/* Capturing locals ==================================================== */

/* Running a chunk while capturing its top-level locals. A reload pairs
** the old and new versions of a file by these names too: a local
** function handed to a timer is reachable from nowhere else. The locals
** are read at each line the chunk itself runs and when it returns; the
** line events matter when the chunk ends with a tail call
** (`return setmetatable(M, mt)`), which drops its frame before returning.
*/

static const char capture_key = 'c';   /* registry: thread -> capture */

typedef struct saved_hook {
  lua_Hook hook;
  int mask, count;
} saved_hook;

/* Push the capture table { fn =, locals =, prev = } of thread L, or nil */
static int push_capture(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &capture_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return LUA_TNIL;
  }
  lua_pushthread(L);
  int type = lua_rawget(L, -2);
  lua_remove(L, -2);
  return type;
}

static void capture_hook(lua_State *L, lua_Debug *ar) {
  if (!lua_checkstack(L, 6)) return;
  if (push_capture(L) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "fn");
  lua_getinfo(L, "f", ar);
  int is_chunk = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (is_chunk) {
    lua_getfield(L, -1, "locals");
    const char *name;
    for (int i = 1; (name = lua_getlocal(L, ar, i)) != NULL; i++) {
      if (name[0] == '(') lua_pop(L, 1);   /* a temporary, not a local */
      else lua_setfield(L, -2, name);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Set thread L's capture to the table on top (popped), or nil. */
static void set_capture(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &capture_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &capture_key);
  }
  lua_pushthread(L);
  lua_rotate(L, -3, -1);   /* captures thread value */
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Stack: saved-hook capture-table results... */
static int finish_capture(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  saved_hook *saved = (saved_hook *)lua_touserdata(L, 1);
  lua_getfield(L, 2, "prev");
  set_capture(L);
  lua_sethook(L, saved->hook, saved->mask, saved->count);
  lua_getfield(L, 2, "locals");
  lua_replace(L, 2);
  if (status == LUA_OK || status == LUA_YIELD) {
    lua_pushboolean(L, 1);
    lua_replace(L, 1);
    return lua_gettop(L);          /* true, locals, results... */
  }
  lua_pushboolean(L, 0);           /* false, locals, err */
  lua_replace(L, 1);
  return 3;
}

/* core.run_capture(fn, ...) -> true, locals, results... |
** false, locals, err. Calls fn(...) in protected mode (it may yield);
** locals maps the names of fn's own local variables to their values as
** fn ended (or as of the last line it ran). */
static int l_run_capture(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int nargs = lua_gettop(L) - 1;
  saved_hook *saved = (saved_hook *)lua_newuserdatauv(L, sizeof *saved, 0);
  saved->hook = lua_gethook(L);
  saved->mask = lua_gethookmask(L);
  saved->count = lua_gethookcount(L);
  lua_insert(L, 1);
  lua_createtable(L, 0, 3);        /* the capture */
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "fn");
  lua_newtable(L);
  lua_setfield(L, -2, "locals");
  push_capture(L);
  lua_setfield(L, -2, "prev");
  lua_pushvalue(L, -1);
  set_capture(L);
  lua_insert(L, 2);                /* saved capture fn args... */
  lua_sethook(L, capture_hook, LUA_MASKLINE | LUA_MASKRET, 0);
  int status = lua_pcallk(L, nargs, LUA_MULTRET, 0, 0, finish_capture);
  return finish_capture(L, status, 0);
}

void evlua_open_import(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "run_capture", l_run_capture },
    { "realpath", l_realpath },
    { "file_stat", l_file_stat },
    { NULL, NULL }
  };
  luaL_setfuncs(L, funcs, 0);   /* into the core table below */
}
