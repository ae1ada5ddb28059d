/*
** lstream.h - the stream userdata, shared by the bindings that create
** streams (listeners) or decode straight from their buffers (protocols).
*/
#ifndef EVLUA_LSTREAM_H
#define EVLUA_LSTREAM_H

#include <lauxlib.h>
#include <lua.h>

#include "stream.h"

#define EVLUA_STREAM "evlua.stream"

typedef struct lstream {
  evlua_stream s;
  int ref;         /* registry anchor while the fd is open */
} lstream;

/* Push a new stream userdata on fd (connecting or reading). */
lstream *evlua_push_stream(lua_State *L, int fd, int connecting);

/* Push a new stream userdata on a transport (stream.h), anchored while
** open like the others. */
lstream *evlua_push_transport_stream(lua_State *L,
                                     const evlua_stream_transport *t,
                                     void *tdata, int message_mode);

/* Push what stream:write returns for evlua_stream_write's result r:
** true, false (queued above the high-water mark) or nil, "closed". */
int evlua_push_write_result(lua_State *L, lstream *ls, int r);

/* The stream userdata at idx, or raise an argument error. */
lstream *evlua_check_stream(lua_State *L, int idx);

/* Add methods to every stream (the protocol bindings' read_rpc,
** write_command...): the one way to extend the stream class. Call it
** from a binding opened after evlua_open_stream (lcore.c's list). */
void evlua_stream_add_methods(lua_State *L, const luaL_Reg *methods);

#endif
