/*
** buffer.c - a growable byte buffer with a read offset (pure C, no Lua).
*/
#include "buffer.h"

#include <stdlib.h>
#include <string.h>

#define MIN_CAPACITY 256

/* The blocks a cache keeps (buffer.h): the size of one read. */
#define CACHED_CAPACITY (64 * 1024)
#define BLOCK_CACHE (!EVLUA_ASAN)

static char *alloc_block(evlua_block_cache *c, size_t cap) {
  if (BLOCK_CACHE && c != NULL && cap == CACHED_CAPACITY && c->n > 0)
    return c->blocks[--c->n];
  return malloc(cap);
}

static void free_block(evlua_block_cache *c, char *data, size_t cap) {
  if (BLOCK_CACHE && c != NULL && cap == CACHED_CAPACITY &&
      c->n < EVLUA_BLOCK_CACHE_SLOTS) {
    c->blocks[c->n++] = data;
    return;
  }
  free(data);
}

void evlua_block_cache_release(evlua_block_cache *c) {
  while (c->n > 0) free(c->blocks[--c->n]);
}

/* Empty, keeping the cache. */
static void reset(evlua_buffer *b) {
  b->data = NULL;
  b->start = b->end = b->cap = 0;
}

void evlua_buffer_init(evlua_buffer *b) {
  evlua_buffer_init_cached(b, NULL);
}

void evlua_buffer_init_cached(evlua_buffer *b, evlua_block_cache *cache) {
  reset(b);
  b->cache = cache;
}

void evlua_buffer_free(evlua_buffer *b) {
  if (b->data != NULL) free_block(b->cache, b->data, b->cap);
  reset(b);
}

char *evlua_buffer_reserve(evlua_buffer *b, size_t n) {
  if (b->cap - b->end >= n) return b->data + b->end;
  size_t len = evlua_buffer_len(b);
  if (b->cap - len >= n && len <= b->cap / 2) {
    /* Enough room once the consumed front is reclaimed; the copy is cheap
    ** since at most half the storage is in use. */
    memmove(b->data, b->data + b->start, len);
  } else {
    size_t cap = b->cap ? b->cap : MIN_CAPACITY;
    while (cap - len < n) {
      if (cap > ((size_t)-1) / 2) return NULL;
      cap *= 2;
    }
    char *data = alloc_block(b->cache, cap);
    if (data == NULL) return NULL;
    if (len) memcpy(data, b->data + b->start, len);
    if (b->data != NULL) free_block(b->cache, b->data, b->cap);
    b->data = data;
    b->cap = cap;
  }
  b->start = 0;
  b->end = len;
  return b->data + b->end;
}

void evlua_buffer_commit(evlua_buffer *b, size_t n) {
  b->end += n;
}

int evlua_buffer_append(evlua_buffer *b, const void *p, size_t n) {
  if (n == 0) return 0;
  char *dst = evlua_buffer_reserve(b, n);
  if (dst == NULL) return -1;
  memcpy(dst, p, n);
  b->end += n;
  return 0;
}

void evlua_buffer_consume(evlua_buffer *b, size_t n) {
  b->start += n;
  if (b->start == b->end) b->start = b->end = 0;
}

void evlua_buffer_shrink(evlua_buffer *b) {
  if (b->start == b->end && b->data != NULL) evlua_buffer_free(b);
}

long evlua_buffer_find(const evlua_buffer *b, char c, size_t from) {
  size_t len = evlua_buffer_len(b);
  if (from >= len) return -1;
  const char *base = b->data + b->start;
  const char *hit = memchr(base + from, c, len - from);
  return hit ? (long)(hit - base) : -1;
}
