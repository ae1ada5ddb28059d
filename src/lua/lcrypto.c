/*
** lcrypto.c - placeholder: filled in by the evlua.mongo work.
*/
#include "runtime.h"

void evlua_open_crypto(lua_State *L) {
  (void)L;
}
