/*
** util.h - the few macros every layer shares (C core and bindings), so
** each is defined once.
*/
#ifndef EVLUA_UTIL_H
#define EVLUA_UTIL_H

#include <stddef.h>

/* The struct embedding member, from a pointer to that member: libev
** hands callbacks the watcher, and the watcher lives inside its owner. */
#define container_of(ptr, type, member) \
  ((type *)((char *)(ptr) - offsetof(type, member)))

/* Bytes one read(2) asks for (streams, child process pipes): big enough
** that a fast peer costs few system calls, small enough for the stack of
** buffers a busy server keeps. */
#define EVLUA_READ_CHUNK (64 * 1024)

#endif
