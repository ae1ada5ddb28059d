/*
** fuzz_bson.c - libFuzzer target for the BSON decoder (src/lua/lbson.c on
** libbson): any byte string must decode to a Lua table or fail with a
** message, never crash or read outside the input. What decodes must
** encode again (every decoded value is encodable) to bytes that decode
** again, and the check of an encoded document string (evlua_bson_encode
** given a string) must agree with the decoder about the input.
**   make fuzz FUZZ_SECONDS=60
*/
#include <assert.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "lbson.h"
#include "runtime.h"

/* lbson.c needs three helpers of src/lua/runtime.c, which brings the
** whole runtime with it; these do the same for this one binding. */
const void *evlua_new_class(lua_State *L, const char *name,
                            const luaL_Reg *meta, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  const void *mt = lua_topointer(L, -1);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  return mt;
}

void *evlua_checkudata(lua_State *L, int idx, const void *meta,
                       const char *tname) {
  (void)meta;
  return luaL_checkudata(L, idx, tname);
}

int evlua_fail(lua_State *L, const char *code, const char *fmt, ...) {
  (void)fmt;
  luaL_pushfail(L);
  lua_pushstring(L, code);
  lua_pushstring(L, code);
  return 3;
}

static lua_State *state(void) {
  static lua_State *L;
  if (L == NULL) {
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);   /* stands for the evlua.core table */
    evlua_open_bson(L);
    lua_pop(L, 1);
  }
  return L;
}

/* Encode the table at the top and decode the result again (with flags);
** both must succeed. */
static void round_trip(lua_State *L, int flags) {
  char err[512];
  bson_t b;
  bson_init(&b);
  int ok = evlua_bson_encode_depth(L, -1, &b, EVLUA_BSON_DECODE_MAX_DEPTH,
                                   err, sizeof err);
  assert(ok);
  ok = evlua_bson_decode_opts(L, bson_get_data(&b), b.len, flags,
                              EVLUA_BSON_DECODE_MAX_DEPTH, err, sizeof err);
  assert(ok);
  lua_pop(L, 1);
  bson_destroy(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = state();
  int top = lua_gettop(L);
  char err[256];
  /* a copy of exactly size bytes: ASan sees any read past the input */
  uint8_t *copy = (uint8_t *)malloc(size ? size : 1);
  assert(copy != NULL);
  for (size_t i = 0; i < size; i++) copy[i] = data[i];

  int decoded = evlua_bson_decode(L, copy, size, err, sizeof err);
  assert(lua_gettop(L) == top + decoded);
  if (decoded) {
    assert(lua_istable(L, -1));
    round_trip(L, 0);
    lua_pop(L, 1);
    assert(evlua_bson_decode_opts(L, copy, size, EVLUA_BSON_ORDERED,
                                  EVLUA_BSON_DECODE_MAX_DEPTH, err,
                                  sizeof err));
    round_trip(L, EVLUA_BSON_ORDERED);   /* bson.doc lists encode too */
    lua_pop(L, 1);
  }

  /* the string form is checked the way the decoder checks */
  lua_pushlstring(L, (const char *)copy, size);
  bson_t out;
  bson_init(&out);
  int checked = evlua_bson_encode_depth(L, -1, &out,
                                        EVLUA_BSON_DECODE_MAX_DEPTH, err,
                                        sizeof err);
  assert(checked == decoded);
  if (checked) assert(out.len == size);
  bson_destroy(&out);
  lua_settop(L, top);
  free(copy);
  if (size % 64 == 0) lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
