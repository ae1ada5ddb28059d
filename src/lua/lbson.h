/*
** lbson.h - Lua values to and from BSON (libbson), for the bindings that
** carry BSON documents (lmongo.c). The mapping is docs/bson.md's.
*/
#ifndef EVLUA_LBSON_H
#define EVLUA_LBSON_H

#include <bson/bson.h>
#include <lua.h>

/* Append the Lua document at idx (a table, a bson.doc{} ordered
** document, or an encoded document string) to the initialised bson_t out.
** Returns 1, or 0 with a message in err (errlen bytes) saying which key
** could not be encoded and why. Never raises. */
int evlua_bson_encode(lua_State *L, int idx, bson_t *out, char *err,
                      size_t errlen);

/* Push the document in data[0..len) as a Lua table (arrays as arrays).
** Returns 1, or pushes nothing and returns 0 with a message in err when
** the bytes are not a valid document. Never raises (except out of
** memory). */
int evlua_bson_decode(lua_State *L, const uint8_t *data, size_t len,
                      char *err, size_t errlen);

#endif
