/*
** main.c - the evlua command: set up the runtime and the module search
** path, hand the command line to the Lua launcher (lua/evlua/main.lua),
** run the loop, exit with the status the script asked for.
*/
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

#include "paths.h"
#include "runtime.h"

#ifndef EVLUA_SHARE_DIR
#define EVLUA_SHARE_DIR "/usr/local/share/evlua"
#endif

/* Point package.path at evlua's library, then the stock paths; set
** info.lib_dir for the launcher (table on top of the stack). Returns 0,
** or -1 with a message on top of the stack (a start-up failure, which
** deserves one plain line, not a traceback). */
static int set_search_path(lua_State *L) {
  char exe_dir[4096], lib_dir[4096], path[16384];
  if (evlua_paths_exe_dir(exe_dir, sizeof exe_dir) != 0 ||
      evlua_paths_lib_dir(exe_dir, EVLUA_SHARE_DIR, lib_dir,
                          sizeof lib_dir) != 0) {
    lua_pushliteral(L, "cannot find the evlua Lua library (event.lua) in "
                    "lua/ next to the binary, in ../share/evlua/lua or in "
                    EVLUA_SHARE_DIR "/lua");
    return -1;
  }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  if (evlua_paths_search(getenv("EVLUA_PATH"), lib_dir, lua_tostring(L, -1),
                         path, sizeof path) != 0) {
    lua_pushliteral(L, "module search path too long (EVLUA_PATH)");
    return -1;
  }
  lua_pushstring(L, path);
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
  lua_pushstring(L, lib_dir);
  lua_setfield(L, -2, "lib_dir");
  lua_pushstring(L, exe_dir);
  lua_setfield(L, -2, "exe_dir");
  return 0;
}

/* Protected part of start-up: launcher(argv, info) -> exit code or nil;
** a string is a start-up failure to print as it is. */
static int launch(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  lua_settop(L, 0);
  lua_createtable(L, 0, 2);                 /* info */
  if (set_search_path(L) != 0) return 1;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "evlua.main");
  /* not finding the launcher is a plain message too (EVLUA_PATH without
  ** ";;"): require's own, which lists where it looked */
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return 1;
  lua_createtable(L, argc, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_pushvalue(L, 1);
  lua_call(L, 2, 1);                        /* launcher(argv, info) */
  return 1;
}

int main(int argc, char **argv) {
  evlua_runtime *rt = evlua_runtime_new();
  if (rt == NULL) {
    fprintf(stderr, "evlua: cannot create the runtime (out of memory?)\n");
    return EXIT_FAILURE;
  }
  lua_State *L = rt->L;
  lua_pushcfunction(L, evlua_traceback);
  lua_pushcfunction(L, launch);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  if (lua_pcall(L, 2, 1, 1) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
    evlua_runtime_free(rt);
    return EXIT_FAILURE;
  }
  if (lua_type(L, -1) == LUA_TSTRING) {     /* could not start */
    fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
    evlua_runtime_free(rt);
    return EXIT_FAILURE;
  }
  if (lua_isinteger(L, -1)) {               /* done without the loop */
    rt->exit_code = (int)lua_tointeger(L, -1);
  } else {
    lua_settop(L, 0);
    evlua_runtime_run(rt);
  }
  fflush(stdout);
  int code = rt->exit_code;
  evlua_runtime_free(rt);
  return code;
}
