/*
** runtime.h - the evlua runtime: one libev loop, one Lua state, and the one
** protected way from loop callbacks into Lua.
*/
#ifndef EVLUA_RUNTIME_H
#define EVLUA_RUNTIME_H

#include <ev.h>
#include <lua.h>
#include <lauxlib.h>
#include <stddef.h>

#include "buffer.h"
#include "loop.h"
#include "util.h"

#define EVLUA_VERSION "0.1.0"

/* The Lua allocator's lists of freed small blocks, one per exact size
** (alloc.c). */
#define EVLUA_ALLOC_SMALL_MAX 1024

typedef struct evlua_free_block {
  struct evlua_free_block *next;
} evlua_free_block;

typedef struct evlua_alloc_lists {
  evlua_free_block *lists[EVLUA_ALLOC_SMALL_MAX + 1];
  size_t cached;             /* bytes held in the lists */
} evlua_alloc_lists;

struct evlua_reply_prefix;   /* lhttp.c's */

/* Everything the process keeps per loop lives here (no globals). */
typedef struct evlua_runtime {
  /* First member: ev_userdata(loop) points at it, and so at the runtime
  ** too (the bindings cast it; evlua_runtime_of_loop says so). */
  evlua_loop_state core;     /* the C core's: corked streams, block cache */
  struct ev_loop *loop;
  lua_State *L;              /* main thread; callbacks run Lua on it */
  ev_prepare before_sleep;   /* the step closing each iteration (runtime.c) */
  ev_idle spin_watcher;      /* keeps the poll from blocking while work waits */
  int ready;                 /* the Lua ready queue has tasks */
  int drain_ref;             /* registry ref of the Lua ready-queue drain */
  int dispatch_ref;          /* registry ref of the stream event dispatcher */
  int exit_code;             /* process exit status once the loop stops */
  long active_timers;        /* counters for stats and leak checks */
  long active_fdwatches;
  double started;            /* ev_time() at creation, for uptime */
  evlua_buffer scratch;      /* encoders build messages here */
  struct evlua_reply_prefix *reply_prefixes;   /* lhttp.c's, in the state */
  evlua_alloc_lists alloc;   /* the Lua state's allocator (alloc.c) */
} evlua_runtime;

/* The runtime owning loop. */
static inline evlua_runtime *evlua_runtime_of_loop(struct ev_loop *loop) {
  return container_of(evlua_loop_state_of(loop), evlua_runtime, core);
}

/* Create the runtime on libev's default loop and a new Lua state with the
** standard libraries and "evlua.core" preloaded. Returns NULL if either
** cannot be created. The caller owns it; release with evlua_runtime_free. */
evlua_runtime *evlua_runtime_new(void);

/* Give L the runtime's allocator (src/lua/alloc.c): malloc with lists of
** freed small blocks (in a), which the collector's batch frees would
** otherwise push through malloc's slow paths. evlua_alloc_release frees
** what the lists hold, once L is closed. */
void evlua_alloc_install(lua_State *L, evlua_alloc_lists *a);
void evlua_alloc_release(evlua_alloc_lists *a);

/* Close the Lua state (running every __gc) and destroy the loop. */
void evlua_runtime_free(evlua_runtime *rt);

/* Run the loop until no watcher is left or event.breakout() is called. */
void evlua_runtime_run(evlua_runtime *rt);

/* The runtime owning L (any thread of the state). */
evlua_runtime *evlua_runtime_get(lua_State *L);

/* Call the function below nargs arguments on L's stack in protected mode
** with a traceback handler; an error is logged, never propagated.
** Returns the lua_pcall status; on error nothing is left on the stack. */
int evlua_pcall(lua_State *L, int nargs, int nresults);

/* Deliver a watcher event to the target stored as user value 1 of the
** userdata at index ud: a coroutine is resumed with the nargs values on top
** of the stack; a function is called as f(ud, uservalue2, values...).
** The values are consumed; errors are logged. */
void evlua_deliver(lua_State *L, int ud, int nargs);

/* Ask the loop to run the ready-queue drain before its next poll (on) or
** stop doing so (off): step 1 of the before-sleep step (runtime.c). */
void evlua_runtime_set_ready(evlua_runtime *rt, int on);

/* Message handler adding a traceback to an error (as lua.c does). */
int evlua_traceback(lua_State *L);

/* The runtime's scratch buffer, emptied, ready for one message (encoders
** build outgoing messages there); evlua_scratch_done empties it again
** and releases it if a big message made it large. */
evlua_buffer *evlua_scratch(lua_State *L);
void evlua_scratch_done(evlua_buffer *b);

/* The one shape of a runtime failure (see CONTRIBUTING.md, "Errors"):
** push nil, message, code and return 3, for `return evlua_fail(...)`.
** code is what callers compare: an errno name ("ECONNREFUSED") for a
** system call's failure, else a lowercase evlua name ("timeout",
** "closed", "protocol"). message is short, lowercase, printf-formatted. */
int evlua_fail(lua_State *L, const char *code, const char *fmt, ...);

/* evlua_fail for errno value e: message "context: connection refused"
** (the errno text alone when context is NULL), code the errno name. */
int evlua_fail_errno(lua_State *L, int e, const char *context);

/* errno's stable name: "ENOENT" for ENOENT, "EUNKNOWN" if it has none. */
const char *evlua_errno_name(int e);

/* Register the metatable of userdata type name: the meta functions, and
** __index, a table of the methods. Returns the metatable's pointer (for
** evlua_checkudata); the stack is as it was. Every userdata type that
** reaches Lua is registered this way (CONTRIBUTING.md, "Userdata"). */
const void *evlua_new_class(lua_State *L, const char *name,
                            const luaL_Reg *meta, const luaL_Reg *methods);

/* The one type check of the bindings (hot paths included): compares the
** value's metatable with meta (the pointer of the registered metatable,
** which lives as long as the state) instead of looking tname up in the
** registry; falls back to luaL_checkudata for its error message. */
void *evlua_checkudata(lua_State *L, int idx, const void *meta,
                       const char *tname);

/* What a method that needs the resource returns on a closed handle
** (CONTRIBUTING.md, "Userdata"): nil, "closed", "closed", the error
** contract's message and code. Returns 3: `return evlua_push_closed(L);`
*/
int evlua_push_closed(lua_State *L);

/* Argument idx as a duration in seconds: a finite, non-negative number
** (NaN fails the comparison too), or raise an argument error. */
double evlua_check_seconds(lua_State *L, int idx);

/* Anchor the value at idx in the registry (no-op if *ref already holds
** one) so the GC keeps it while a watcher is active; unanchor drops it. */
void evlua_anchor(lua_State *L, int idx, int *ref);
void evlua_unanchor(lua_State *L, int *ref);

/* Store the watcher target (function or coroutine, checked at argument
** targ) and an optional argument as user values 1 and 2 of userdata ud. */
void evlua_set_target(lua_State *L, int ud, int targ);

/* SIGUSR1 breaks dead loops (linterrupt.c): install the handler and the
** tracking coroutine.resume/wrap. Every run of Lua code is bracketed by
** prev = evlua_interrupt_enter(thread) ... evlua_interrupt_leave(thread,
** prev) so the handler knows which thread to interrupt. */
void evlua_interrupt_install(lua_State *L);
lua_State *evlua_interrupt_enter(lua_State *L);
void evlua_interrupt_leave(lua_State *L, lua_State *prev);
/* The thread running Lua code now (NULL while none does): for the
** profiler's and the crash handler's signal handlers. */
lua_State *evlua_running_thread(void);

/* On SIGSEGV, SIGBUS, SIGFPE and SIGABRT write the running coroutine's
** Lua traceback and the C backtrace to stderr, then die by the same
** signal (lcrash.c). */
void evlua_crash_install(lua_State *L);

/* Module openers, one per binding file. */
int luaopen_evlua_core(lua_State *L);
void evlua_open_timer(lua_State *L);
void evlua_open_dns(lua_State *L);
void evlua_open_fdwatch(lua_State *L);
void evlua_open_stream(lua_State *L);
void evlua_open_listener(lua_State *L);
void evlua_open_msgpack(lua_State *L);
void evlua_open_http(lua_State *L);
void evlua_open_process(lua_State *L);
void evlua_open_signal(lua_State *L);
void evlua_open_interrupt(lua_State *L);
void evlua_open_profiler(lua_State *L);
void evlua_open_crash(lua_State *L);
void evlua_open_import(lua_State *L);
void evlua_open_redis(lua_State *L);
void evlua_open_udp(lua_State *L);
void evlua_open_kcp(lua_State *L);
void evlua_open_bson(lua_State *L);
void evlua_open_crypto(lua_State *L);
void evlua_open_mongo(lua_State *L);

#endif

