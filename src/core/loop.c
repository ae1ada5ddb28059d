/*
** loop.c - the C core's per-loop state (see loop.h).
*/
#include "loop.h"

#include <stdlib.h>
#include <string.h>

void evlua_loop_state_init(evlua_loop_state *st, struct ev_loop *loop) {
  memset(st, 0, sizeof *st);
  st->loop = loop;
  ev_set_userdata(loop, st);
}

void evlua_loop_state_release(evlua_loop_state *st) {
  evlua_block_cache_release(&st->blocks);
  free(st->udp_area);
  st->udp_area = NULL;
}
