/*
** paths.h - where evlua finds its Lua library and scripts (pure C, no Lua).
*/
#ifndef EVLUA_PATHS_H
#define EVLUA_PATHS_H

#include <stddef.h>

/* Directory holding the running executable (from /proc/self/exe).
** Returns 0, or -1 if it cannot be found or does not fit. */
int evlua_paths_exe_dir(char *out, size_t size);

/* The evlua Lua library directory: the first of
**   <exe_dir>/lua, <exe_dir>/../share/evlua/lua, <share_dir>/lua
** that holds event.lua. Returns 0, or -1 when none does. */
int evlua_paths_lib_dir(const char *exe_dir, const char *share_dir,
                        char *out, size_t size);

/* Build a package.path-style search string.
** Without an override: "<lib_dir>/?.lua;<lib_dir>/?/init.lua;<stock>".
** With one (the EVLUA_PATH convention, like LUA_PATH): the override, where a
** ";;" stands for the default above. Returns 0, or -1 if it does not fit. */
int evlua_paths_search(const char *override, const char *lib_dir,
                       const char *stock, char *out, size_t size);

#endif
