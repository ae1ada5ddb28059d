/*
** lbson.h - Lua values to and from BSON (libbson), for the bindings that
** carry BSON documents (lmongo.c). The mapping is docs/bson.md's.
*/
#ifndef EVLUA_LBSON_H
#define EVLUA_LBSON_H

/* libbson's bson-atomic.h casts a const away: not our warning to fix
** (CI builds with -Werror). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-qual"
#include <bson/bson.h>
#pragma GCC diagnostic pop
#include <lua.h>

/* Nesting limits, counting the top document as level 1: what encoding
** refuses past (MongoDB stores documents up to 100 levels), what decoding
** refuses past by default (room for a stored document inside a reply's
** cursor.firstBatch), and the highest limit either accepts. */
#define EVLUA_BSON_MAX_DEPTH 100
#define EVLUA_BSON_DECODE_MAX_DEPTH 200
#define EVLUA_BSON_DEPTH_CEILING 1000

/* Append the Lua document at idx (a table, a bson.doc{} ordered
** document, or an encoded document string) to the initialised bson_t out.
** Returns 1, or 0 with a message in err (errlen bytes) saying which key
** could not be encoded and why. Never raises, and never runs Lua code
** (tables are read raw: no metamethod of a user value is called). */
int evlua_bson_encode(lua_State *L, int idx, bson_t *out, char *err,
                      size_t errlen);

/* evlua_bson_encode with another nesting limit (1 to the ceiling). */
int evlua_bson_encode_depth(lua_State *L, int idx, bson_t *out,
                            int max_depth, char *err, size_t errlen);

/* The state's scratch document for encoding into, empty: a bson_t owned
** by the Lua state (evlua_open_bson's), so a raise while it is in use
** leaks nothing; the next call starts it over. One per state: give it
** back with evlua_bson_scratch_done before calling anything that could
** use it too (Lua code). Copy the bytes out before giving it back. */
bson_t *evlua_bson_scratch(lua_State *L);
void evlua_bson_scratch_done(lua_State *L);

/* Push the document in data[0..len) as a Lua table (arrays as arrays).
** Returns 1, or pushes nothing and returns 0 with a message in err when
** the bytes are not a valid document. Never raises (except out of
** memory). */
int evlua_bson_decode(lua_State *L, const uint8_t *data, size_t len,
                      char *err, size_t errlen);

/* flags for evlua_bson_decode_opts: documents as bson.doc ordered lists */
#define EVLUA_BSON_ORDERED 1

/* evlua_bson_decode with flags and another nesting limit. */
int evlua_bson_decode_opts(lua_State *L, const uint8_t *data, size_t len,
                           int flags, int max_depth, char *err,
                           size_t errlen);

#endif
