/*
** buffer.c - a growable byte buffer with a read offset (pure C, no Lua).
*/
#include "buffer.h"

#include <stdlib.h>
#include <string.h>

#define MIN_CAPACITY 256

/* Streams read in 64 KiB chunks and free their input buffer whenever it
** empties, so busy connections would malloc and free a 64 KiB block per
** read: a few blocks of that size are kept for reuse instead. */
#define CACHED_CAPACITY (64 * 1024)
#define CACHE_SLOTS 16
#define BLOCK_CACHE (!EVLUA_ASAN)

static char *block_cache[CACHE_SLOTS];
static int cached_blocks;

static char *alloc_block(size_t cap) {
  if (BLOCK_CACHE && cap == CACHED_CAPACITY && cached_blocks > 0)
    return block_cache[--cached_blocks];
  return malloc(cap);
}

static void free_block(char *data, size_t cap) {
  if (BLOCK_CACHE && cap == CACHED_CAPACITY && cached_blocks < CACHE_SLOTS) {
    block_cache[cached_blocks++] = data;
    return;
  }
  free(data);
}

void evlua_buffer_release_cache(void) {
  while (cached_blocks > 0) free(block_cache[--cached_blocks]);
}

void evlua_buffer_init(evlua_buffer *b) {
  b->data = NULL;
  b->start = b->end = b->cap = 0;
}

void evlua_buffer_free(evlua_buffer *b) {
  if (b->data != NULL) free_block(b->data, b->cap);
  evlua_buffer_init(b);
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
    char *data = alloc_block(cap);
    if (data == NULL) return NULL;
    if (len) memcpy(data, b->data + b->start, len);
    if (b->data != NULL) free_block(b->data, b->cap);
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
