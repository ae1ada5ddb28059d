/*
** loop.h - what the C core keeps per libev loop: the streams and UDP
** sockets whose output waits for the end of the loop iteration, the
** cache of 64 KiB buffer blocks and the UDP receive area. Pure C, no Lua.
**
** It hangs off the loop as libev's user data (ev_set_userdata), so
** anything holding a struct ev_loop * reaches it. The Lua runtime embeds
** it as the first member of its own struct (src/lua/runtime.h), so that
** the same pointer is the runtime for the bindings; a C test installs one
** of its own. The owner of the loop writes the corked streams once per
** iteration, before the loop polls (evlua_stream_flush_corked, stream.h).
*/
#ifndef EVLUA_LOOP_H
#define EVLUA_LOOP_H

#include <ev.h>

#include "buffer.h"

struct evlua_stream;
struct evlua_udp;

typedef struct evlua_loop_state {
  struct ev_loop *loop;
  struct evlua_stream *corked;   /* streams with output to flush */
  evlua_block_cache blocks;      /* for the streams' buffers */
  struct evlua_udp *udp_pending; /* UDP sockets with datagrams to send */
  char *udp_area;                /* where recvmmsg puts datagrams (udp.c) */
} evlua_loop_state;

/* Set st up empty and install it as loop's user data. */
void evlua_loop_state_init(evlua_loop_state *st, struct ev_loop *loop);

/* Free the cached blocks (the streams are gone; the loop may stay). */
void evlua_loop_state_release(evlua_loop_state *st);

/* The state installed on loop. */
static inline evlua_loop_state *evlua_loop_state_of(struct ev_loop *loop) {
  return (evlua_loop_state *)ev_userdata(loop);
}

#endif
