/*
** lcrash.c - tracebacks on crashes (to be written).
*/
#include "runtime.h"

void evlua_crash_install(lua_State *L) {
  (void)L;
}

void evlua_open_crash(lua_State *L) {
  (void)L;
}
