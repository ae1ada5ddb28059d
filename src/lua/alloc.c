/*
** alloc.c - the Lua state's allocator: malloc and free, with a list of
** freed blocks per exact size for small blocks.
**
** The collector frees objects in batches, so glibc's per-thread cache
** (seven blocks a size) overflows at once and most short-lived objects
** (a request's tables, its strings) go through malloc's slow paths. Lists
** of freed blocks give them back in LIFO order, still warm in the cache.
** Lists are per exact size rather than per size class because a block
** keeps the size it was allocated with, even the few blocks allocated
** before this allocator was installed. What the lists hold is bounded;
** past the bound blocks go back to free(). The lists are the runtime's
** (evlua_alloc_lists, the allocator's ud), freed once the state is closed.
*/
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

#define SMALL_MAX EVLUA_ALLOC_SMALL_MAX   /* larger blocks are not kept */
#define CACHED_MAX ((size_t)2 << 20)    /* bytes kept in the lists at most */

#define KEEP_BLOCKS (!EVLUA_ASAN)   /* see buffer.h */

static int keeps(size_t size) {
  return KEEP_BLOCKS && size >= sizeof(evlua_free_block) && size <= SMALL_MAX;
}

static void *take(evlua_alloc_lists *a, size_t size) {
  if (keeps(size) && a->lists[size] != NULL) {
    evlua_free_block *b = a->lists[size];
    a->lists[size] = b->next;
    a->cached -= size;
    return b;
  }
  return malloc(size);
}

static void give_back(evlua_alloc_lists *a, void *p, size_t size) {
  if (keeps(size) && a->cached + size <= CACHED_MAX) {
    evlua_free_block *b = p;
    b->next = a->lists[size];
    a->lists[size] = b;
    a->cached += size;
    return;
  }
  free(p);
}

/* A lua_Alloc (see the manual): when ptr is NULL, osize is not a size.
** ud is the runtime's lists. */
static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  evlua_alloc_lists *a = ud;
  if (nsize == 0) {
    if (ptr != NULL) give_back(a, ptr, osize);
    return NULL;
  }
  if (ptr == NULL) return take(a, nsize);
  if (nsize == osize) return ptr;
  if (!keeps(osize) && !keeps(nsize)) return realloc(ptr, nsize);
  void *p = take(a, nsize);
  if (p == NULL) return NULL;   /* Lua keeps the old block on failure */
  memcpy(p, ptr, osize < nsize ? osize : nsize);
  give_back(a, ptr, osize);
  return p;
}

void evlua_alloc_release(evlua_alloc_lists *a) {
  for (size_t size = 0; size <= SMALL_MAX; size++) {
    while (a->lists[size] != NULL) {
      evlua_free_block *b = a->lists[size];
      a->lists[size] = b->next;
      free(b);
    }
  }
  a->cached = 0;
}

/* The blocks allocated before (by luaL_newstate's malloc allocator) are
** plain malloc blocks, which this one frees alike. */
void evlua_alloc_install(lua_State *L, evlua_alloc_lists *a) {
  lua_setallocf(L, lua_alloc, a);
}
