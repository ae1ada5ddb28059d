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
** past the bound blocks go back to free().
*/
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

#define SMALL_MAX 1024                  /* bytes: larger blocks are not kept */
#define CACHED_MAX ((size_t)2 << 20)    /* bytes kept in the lists at most */

#define KEEP_BLOCKS (!EVLUA_ASAN)   /* see buffer.h */

typedef struct free_block {
  struct free_block *next;
} free_block;

static free_block *lists[SMALL_MAX + 1];
static size_t cached;

static int keeps(size_t size) {
  return KEEP_BLOCKS && size >= sizeof(free_block) && size <= SMALL_MAX;
}

static void *take(size_t size) {
  if (keeps(size) && lists[size] != NULL) {
    free_block *b = lists[size];
    lists[size] = b->next;
    cached -= size;
    return b;
  }
  return malloc(size);
}

static void give_back(void *p, size_t size) {
  if (keeps(size) && cached + size <= CACHED_MAX) {
    free_block *b = p;
    b->next = lists[size];
    lists[size] = b;
    cached += size;
    return;
  }
  free(p);
}

/* A lua_Alloc (see the manual): when ptr is NULL, osize is not a size. */
static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    if (ptr != NULL) give_back(ptr, osize);
    return NULL;
  }
  if (ptr == NULL) return take(nsize);
  if (nsize == osize) return ptr;
  if (!keeps(osize) && !keeps(nsize)) return realloc(ptr, nsize);
  void *p = take(nsize);
  if (p == NULL) return NULL;   /* Lua keeps the old block on failure */
  memcpy(p, ptr, osize < nsize ? osize : nsize);
  give_back(ptr, osize);
  return p;
}

static void release_lists(void) {
  for (size_t size = 0; size <= SMALL_MAX; size++) {
    while (lists[size] != NULL) {
      free_block *b = lists[size];
      lists[size] = b->next;
      free(b);
    }
  }
  cached = 0;
}

void evlua_alloc_install(lua_State *L) {
  static int registered;
  if (!registered) {
    /* After os.exit(code, true) closed the state, so that leak checkers
    ** see every block freed. */
    atexit(release_lists);
    registered = 1;
  }
  lua_setallocf(L, lua_alloc, NULL);
}
