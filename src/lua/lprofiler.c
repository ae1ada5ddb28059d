/*
** lprofiler.c - the sampling and exact profiler behind evlua.profiler
** (to be written).
*/
#include "runtime.h"

void evlua_open_profiler(lua_State *L) {
  (void)L;
}
