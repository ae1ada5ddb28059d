/*
** buffer.h - a growable byte buffer with a read offset (pure C, no Lua).
** Bytes are appended at the end and consumed from the front; the storage
** is compacted or grown on demand and can be released when empty, so an
** idle connection holds no buffer memory.
*/
#ifndef EVLUA_BUFFER_H
#define EVLUA_BUFFER_H

#include <stddef.h>

/* 1 in an AddressSanitizer build: the caches of freed blocks (here and
** in src/lua/alloc.c) stay off there, so that it sees every block's lifetime. */
#if defined(__SANITIZE_ADDRESS__)
#define EVLUA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EVLUA_ASAN 1
#endif
#endif
#ifndef EVLUA_ASAN
#define EVLUA_ASAN 0
#endif

/* Freed blocks of the read size (64 KiB), kept for reuse: streams read
** in such blocks and free their input buffer whenever it empties, so a
** busy connection would otherwise malloc and free 64 KiB per read. One
** cache per loop (src/core/loop.h), shared by the buffers given it. */
#define EVLUA_BLOCK_CACHE_SLOTS 16

typedef struct evlua_block_cache {
  char *blocks[EVLUA_BLOCK_CACHE_SLOTS];
  int n;
} evlua_block_cache;

/* Free the blocks kept (when the loop goes, so leak checkers see none). */
void evlua_block_cache_release(evlua_block_cache *c);

typedef struct evlua_buffer {
  char *data;      /* storage, owned; NULL when released */
  size_t start;    /* offset of the first unread byte */
  size_t end;      /* offset just past the last byte */
  size_t cap;      /* size of storage */
  evlua_block_cache *cache;   /* where 64 KiB blocks come from, or NULL */
} evlua_buffer;

/* An empty buffer allocating with malloc alone. */
void evlua_buffer_init(evlua_buffer *b);

/* An empty buffer taking and giving back its 64 KiB blocks in cache. */
void evlua_buffer_init_cached(evlua_buffer *b, evlua_block_cache *cache);

/* Release the storage; the buffer is empty and usable afterwards (with
** the same cache). */
void evlua_buffer_free(evlua_buffer *b);

static inline size_t evlua_buffer_len(const evlua_buffer *b) {
  return b->end - b->start;
}

/* The unread bytes (valid until the next call that changes b). */
static inline const char *evlua_buffer_peek(const evlua_buffer *b) {
  return b->data + b->start;
}

/* Writable space of at least n bytes at the end, or NULL if out of memory.
** Bytes written there count once committed. */
char *evlua_buffer_reserve(evlua_buffer *b, size_t n);
void evlua_buffer_commit(evlua_buffer *b, size_t n);

/* Append n bytes; returns 0, or -1 if out of memory (b unchanged). */
int evlua_buffer_append(evlua_buffer *b, const void *p, size_t n);

/* Drop the first n unread bytes (n <= length). */
void evlua_buffer_consume(evlua_buffer *b, size_t n);

/* Release the storage if the buffer is empty. */
void evlua_buffer_shrink(evlua_buffer *b);

/* Offset (from the first unread byte) of the first byte c at or after
** `from`, or -1 if there is none. */
long evlua_buffer_find(const evlua_buffer *b, char c, size_t from);

#endif
