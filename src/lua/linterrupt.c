/*
** linterrupt.c - breaking out of a Lua dead loop with SIGUSR1, or with
** SIGINT (Ctrl-C) while the interactive prompt is active.
**
** The signal handler cannot touch the Lua state beyond lua_sethook, the
** one call Lua allows from a signal handler (lua.c's laction does the
** same for SIGINT). Hooks belong to one thread (lua_State), and the code
** that loops runs in a coroutine, not in the main thread; so the runtime
** records which thread runs Lua right now: evlua_pcall and every resume
** (the runtime's own, coroutine.resume and coroutine.wrap, which this
** file replaces) bracket their work with evlua_interrupt_enter/leave.
** When no Lua code runs (the loop sleeps in epoll) the signal is counted
** and otherwise ignored; a SIGINT then writes a byte to a pipe instead,
** which the prompt watches (a Ctrl-C at the prompt clears the line).
**
** The hook then decides, on the thread that was running:
**   - the innermost Lua frame is user code: raise "<where>: interrupted";
**   - it is evlua's library (the scheduler, channels...) called from user
**     code further down the stack: stay armed, raise once control is back
**     in user code (raising inside the scheduler would lose its state);
**   - no user code on the stack at all (the scheduler itself between two
**     tasks): nothing loops there; disarm and log that nothing was hit.
** A thread that yields or returns leaves the hook behind disarmed, so a
** late signal never hits unrelated code afterwards.
**
** One hook slot, several users. A thread has one hook. Persistent users
** keep theirs there: the debugger (evlua.debug_engine: debug_hook, below,
** with a mask of its choosing), the exact profiler (lprofiler.c's call
** hook), any code calling debug.sethook. One-shot users arm the running
** thread from a signal handler and want one look at it at its next
** instruction: the interrupt (SIGUSR1, SIGINT) and the sampling profiler
** (SIGPROF). They share one mechanism: a signal sets its bit in
** pending_bits and arms oneshot_hook on the running thread, saving the
** hook it replaces (saved_*, for the one thread armed); the hook serves
** every pending bit, then puts the saved hook back. The debugger setting
** its hook on an armed thread updates the saved copy. The armed thread is
** always the running one: a resume moves pending bits on to the resumed
** thread, and a thread that yields or returns drops them.
*/
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "linterrupt.h"
#include "log.h"
#include "runtime.h"

/* The thread running Lua code now, NULL while none does. */
static _Atomic(lua_State *) running_thread = NULL;
static volatile sig_atomic_t signals_received, signals_idle;
static volatile sig_atomic_t arming_signal;   /* the signal that armed the hook */
static long interrupts_raised, interrupts_ignored;

/* SIGINT's pipe while the prompt catches it: [0] read by the prompt. */
static int sigint_pipe[2] = { -1, -1 };

/* Chunk names starting with one of these prefixes are evlua's own
** library (normally one: the directory of event.lua). */
#define MAX_LIBRARY_PREFIXES 8
static char library_prefixes[MAX_LIBRARY_PREFIXES][1024];
static int library_count;

enum { USER_ON_TOP, USER_BELOW, NO_USER };

/* What the one-shot hook has to do on the armed thread. */
enum { WANT_INTERRUPT = 1, WANT_SAMPLE = 2 };
static atomic_int pending_bits;

/* The hook the signal replaced on armed_thread, put back on disarming. */
static lua_State *volatile armed_thread;
static volatile lua_Hook saved_hook;
static volatile int saved_mask, saved_count;

#define ONESHOT_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT)

static evlua_sampler sampler;         /* the profiler's, or NULL */
static lua_Hook call_hook;            /* the exact profiler's, or NULL */
static lua_Hook stale_call_hook;      /* the last one, left on idle threads */
static int call_mask;
static evlua_switch_fn on_switch;     /* the exact profiler's, or NULL */

static void oneshot_hook(lua_State *L, lua_Debug *event);

/* Put oneshot_hook on L, keeping the hook it replaces. Async-signal-safe,
** and idempotent should a signal arrive while normal code runs it. */
static void arm(lua_State *L) {
  lua_Hook h = lua_gethook(L);
  if (h != oneshot_hook) {
    saved_hook = h;
    saved_mask = lua_gethookmask(L);
    saved_count = lua_gethookcount(L);
    armed_thread = L;
  }
  lua_sethook(L, oneshot_hook, ONESHOT_MASK, 1);
}

/* Take the one-shot hook off L: the hook it replaced comes back. */
static void disarm(lua_State *L) {
  if (L == armed_thread) {
    armed_thread = NULL;
    if (saved_hook != NULL) {
      lua_sethook(L, saved_hook, saved_mask, saved_count);
      return;
    }
  }
  lua_sethook(L, NULL, 0, 0);   /* stale, inherited from its creator */
}

/* Done with L for now; a signal that came meanwhile arms it again. */
static void finish(lua_State *L) {
  disarm(L);
  if (atomic_load(&pending_bits) != 0) arm(L);
}

/* Async-signal-safe: ask for `want` at the running thread's next
** instruction; 0 when no Lua code runs. */
static int request(int want) {
  lua_State *L = atomic_load_explicit(&running_thread, memory_order_relaxed);
  if (L == NULL) return 0;
  atomic_fetch_or(&pending_bits, want);
  arm(L);
  return 1;
}

int evlua_request_sample(void) {
  return request(WANT_SAMPLE);
}

void evlua_set_sampler(evlua_sampler fn) {
  sampler = fn;
}

void evlua_set_call_hook(lua_State *L, lua_Hook hook, int mask,
                         evlua_switch_fn switch_fn) {
  lua_State *main_thread;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main_thread = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_Hook old = call_hook;
  if (hook == NULL) stale_call_hook = old;
  call_hook = hook;
  call_mask = mask;
  on_switch = switch_fn;
  /* the threads running now; every other one at its next resume */
  lua_State *threads[2] = { L, main_thread };
  for (int i = 0; i < 2; i++) {
    lua_Hook h = lua_gethook(threads[i]);
    if (hook != NULL && h == NULL)
      lua_sethook(threads[i], hook, mask, 0);
    else if (hook == NULL && old != NULL && h == old)
      lua_sethook(threads[i], NULL, 0, 0);
  }
}

static int is_library(const char *source) {
  for (int i = 0; i < library_count; i++) {
    const char *prefix = library_prefixes[i];
    if (strncmp(source, prefix, strlen(prefix)) == 0) return 1;
  }
  return 0;
}

/* Where does the thread stand? On USER_ON_TOP, *top describes the
** innermost Lua frame (for the error position). */
static int classify(lua_State *L, lua_Debug *top) {
  lua_Debug ar;
  int seen_lua = 0;
  for (int level = 0; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (ar.what[0] == 'C') continue;   /* look at its caller */
    if (!is_library(ar.source)) {
      if (seen_lua) return USER_BELOW;
      *top = ar;
      return USER_ON_TOP;
    }
    seen_lua = 1;
  }
  return NO_USER;
}

/* Tell the prompt a Ctrl-C found no user code to break (async-signal-
** safe: one write; a full pipe already holds a pending notice). */
static void notify_prompt(void) {
  int saved = errno;
  if (sigint_pipe[1] >= 0) {
    ssize_t n = write(sigint_pipe[1], "i", 1);
    (void)n;
  }
  errno = saved;
}

/* The interrupt's part of the one-shot hook. */
static void interrupt_step(lua_State *L) {
  lua_Debug top;
  /* lua.c says "interrupted!" on Ctrl-C: the prompt says the same */
  const char *what = arming_signal == SIGINT ? "interrupted!" : "interrupted";
  switch (classify(L, &top)) {
  case USER_BELOW:
    return;   /* stay armed until user code runs again */
  case NO_USER:
    atomic_fetch_and(&pending_bits, ~WANT_INTERRUPT);
    finish(L);
    interrupts_ignored++;
    if (arming_signal == SIGINT) {
      notify_prompt();   /* nothing loops: the prompt handles it */
      return;
    }
    evlua_log(EVLUA_LOG_WARN, "SIGUSR1: only evlua's scheduler was running; "
              "nothing interrupted");
    return;
  default:
    atomic_fetch_and(&pending_bits, ~WANT_INTERRUPT);
    finish(L);
    interrupts_raised++;
    if (top.currentline > 0)
      lua_pushfstring(L, "%s:%d: %s", top.short_src, top.currentline, what);
    else
      lua_pushstring(L, what);
    lua_error(L);
  }
}

static void oneshot_hook(lua_State *L, lua_Debug *event) {
  int pending = atomic_load(&pending_bits);
  if (pending & WANT_SAMPLE) {
    atomic_fetch_and(&pending_bits, ~WANT_SAMPLE);
    if (sampler != NULL) sampler(L, event);
  }
  if (pending & WANT_INTERRUPT)
    interrupt_step(L);   /* disarms, or stays armed for user code */
  else
    finish(L);
}

/* Async-signal-safe: an atomic load and lua_sethook (or a write) only. */
static void on_interrupt_signal(int sig) {
  signals_received++;
  arming_signal = sig;
  if (!request(WANT_INTERRUPT)) {
    signals_idle++;
    if (sig == SIGINT) notify_prompt();
  }
}

static int debug_armed;   /* the debugger wants its hook on every thread */
static void debug_hook(lua_State *L, lua_Debug *ar);

/* A persistent user's hook on a thread with an empty slot (or with the
** exact profiler's, left behind since it stopped). */
static void install_persistent(lua_State *L) {
  lua_Hook h = lua_gethook(L);
  if (h != NULL && h == stale_call_hook && h != call_hook) h = NULL;
  if (h != NULL) return;
  if (call_hook != NULL)
    lua_sethook(L, call_hook, call_mask, 0);
  else if (debug_armed)
    lua_sethook(L, debug_hook, LUA_MASKCALL, 0);
  else if (lua_gethook(L) != NULL)
    lua_sethook(L, NULL, 0, 0);   /* the stale call hook */
}

lua_State *evlua_interrupt_enter(lua_State *L) {
  lua_State *running = atomic_load_explicit(&running_thread,
                                            memory_order_relaxed);
  if (L != running) {
    /* No signal arms L before it runs: its slot is ours to fix. A thread
    ** inherits its creator's hook: drop a stale one-shot first. */
    if (lua_gethook(L) == oneshot_hook) disarm(L);
    install_persistent(L);
    if (on_switch != NULL) on_switch(L, 1);
  }
  lua_State *prev = atomic_exchange_explicit(&running_thread, L,
                                             memory_order_relaxed);
  /* Signals arm L from now on: a request that came for prev moves on. */
  if (prev != L && prev != NULL && prev == armed_thread) {
    disarm(prev);
    if (atomic_load(&pending_bits) != 0) arm(L);
  }
  return prev;
}

lua_State *evlua_running_thread(void) {
  return atomic_load_explicit(&running_thread, memory_order_relaxed);
}

void evlua_interrupt_leave(lua_State *L, lua_State *prev) {
  atomic_store_explicit(&running_thread, prev, memory_order_relaxed);
  if (L == prev) return;
  /* After the store a signal arms prev, not L: clearing L is final, and a
  ** request L had not served yet is dropped (a late signal never hits
  ** unrelated code afterwards). */
  if (lua_gethook(L) == oneshot_hook) {
    int bits = atomic_load(&pending_bits);
    disarm(L);
    if (armed_thread != prev) atomic_fetch_and(&pending_bits, ~bits);
  }
  if (on_switch != NULL) on_switch(L, 0);
}

/* The debugger's hook ================================================= */

/* evlua.debug_engine's handler(event, source, line, yieldable) -> action
** runs for the hook's events: "skip" (a call into a file without
** breakpoints: later calls into it never reach Lua while the thread's
** mask is calls only), "yield" (on a line event: park this coroutine at
** this line; the loop resumes it later) or nothing. A Lua hook cannot
** yield, a C one can (line events only), hence this one. */
static const char handler_key = 'h';   /* registry: the handler */
static const char skip_key = 's';      /* registry: source pointer -> a function of it */

/* The skipped files' source pointers, in front of the skip table: most
** calls of a server hit here, without a table lookup or a string. A
** pointer stays unique while the skip table holds a function of its
** file (which holds the source string), so no string compare is needed. */
#define SKIP_CACHE_SIZE 256
static const char *skip_cache[SKIP_CACHE_SIZE];

static const char **skip_slot(const char *source) {
  return &skip_cache[((uintptr_t)source >> 4) & (SKIP_CACHE_SIZE - 1)];
}

/* Whether calls into source are known to be skipped. */
static int is_skipped(lua_State *L, const char *source) {
  const char **slot = skip_slot(source);
  if (*slot == source) return 1;
  int skipped = lua_rawgetp(L, LUA_REGISTRYINDEX, &skip_key) == LUA_TTABLE
                && lua_rawgetp(L, -1, source) != LUA_TNIL;
  if (skipped) *slot = source;
  return skipped;
}

/* Skip calls into the file of the function ar describes from now on. */
static void skip_file(lua_State *L, lua_Debug *ar) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &skip_key) != LUA_TTABLE) return;
  lua_getinfo(L, "f", ar);   /* pins the source string */
  lua_rawsetp(L, -2, ar->source);
  *skip_slot(ar->source) = ar->source;
}

/* The called function's source, read without lua_getinfo (which formats
** short_src on every call, most of the hook's cost on a server that makes
** a few calls per request): from Lua 5.4's private layout on 64-bit, as
** tools/evlua-gdb.py reads it. A CallInfo starts with its function's
** stack slot; a TValue is 8 bytes of value, then its type tag; a Lua
** closure holds its Proto at byte 24, a Proto its source TString at byte
** 112, a TString its characters from byte 24. Used only once
** check_layout found it right for the liblua we run on, and checked
** again on every call that asks lua_getinfo anyway. */
#if LUA_VERSION_NUM == 504 && UINTPTR_MAX == UINT64_MAX
#define PEEK_LAYOUT 1
#endif
#define TAG_LUA_CLOSURE 0x46   /* LUA_VLCL, collectable */
#define TAG_LIGHT_C 0x16       /* LUA_VLCF */
#define TAG_C_CLOSURE 0x66     /* LUA_VCCL, collectable */
#define CLOSURE_PROTO 24
#define PROTO_SOURCE 112
#define TSTRING_CHARS 24

static int layout_known;        /* peek is right here */
static int peek_allowed = 1;    /* core.debug_peek(false) turns it off */
static const char *c_source;    /* lua_getinfo's source of a C function */

static const char *read_pointer(const char *at) {
  const char *p;
  memcpy(&p, at, sizeof p);
  return p;
}

/* The function's tag, and through *source its source (NULL if none). */
static unsigned char peek(const lua_Debug *ar, const char **source) {
  const char *slot = read_pointer((const char *)(const void *)ar->i_ci);
  unsigned char tag = (unsigned char)slot[8];
  *source = NULL;
  if (tag == TAG_LUA_CLOSURE) {
    const char *closure = read_pointer(slot);
    const char *ts = read_pointer(read_pointer(closure + CLOSURE_PROTO) + PROTO_SOURCE);
    if (ts != NULL) *source = ts + TSTRING_CHARS;
  } else if (tag == TAG_LIGHT_C || tag == TAG_C_CLOSURE) {
    *source = c_source;
  }
  return tag;
}

/* Check the layout on the caller of core.debug_handler (L runs it): its
** own frame is a C function's, the one below a Lua function's. */
static void check_layout(lua_State *L) {
  layout_known = 0;
  if (!peek_allowed) return;
#ifdef PEEK_LAYOUT
  lua_Debug c_ar, lua_ar;
  const char *source;
  if (!lua_getstack(L, 0, &c_ar) || !lua_getinfo(L, "S", &c_ar)
      || !lua_getstack(L, 1, &lua_ar) || !lua_getinfo(L, "S", &lua_ar)
      || strcmp(lua_ar.what, "C") == 0)
    return;
  c_source = c_ar.source;
  unsigned char tag = peek(&c_ar, &source);
  if (tag != TAG_LIGHT_C && tag != TAG_C_CLOSURE) return;
  layout_known = peek(&lua_ar, &source) == TAG_LUA_CLOSURE
                 && source == lua_ar.source;
#else
  (void)L;
#endif
}

static void debug_hook(lua_State *L, lua_Debug *ar) {
  static const char *const names[] = {
    "call", "return", "line", "count", "tail call"
  };
  int event = ar->event;
  if (event == LUA_HOOKCOUNT) return;
  int calls_only = event != LUA_HOOKRET && event != LUA_HOOKLINE
                   && lua_gethookmask(L) == LUA_MASKCALL;
  const char *source = NULL;
  if (layout_known) {
    peek(ar, &source);
    /* the fast path: most calls of a server, into skipped files */
    if (calls_only && source != NULL && *skip_slot(source) == source) return;
  }
  int top = lua_gettop(L);
  if (!lua_getinfo(L, "S", ar)) return;
  if (source != NULL && source != ar->source) {   /* cannot happen */
    layout_known = 0;
    evlua_log(EVLUA_LOG_WARN, "debugger: unknown Lua layout, hook slowed");
  }
  if (calls_only && is_skipped(L, ar->source)) {
    lua_settop(L, top);
    return;
  }
  lua_settop(L, top);
  lua_getinfo(L, "l", ar);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &handler_key) != LUA_TFUNCTION) {
    lua_settop(L, top);
    lua_sethook(L, NULL, 0, 0);   /* the debugger is gone */
    return;
  }
  lua_pushstring(L, names[event]);
  lua_pushstring(L, ar->source);
  lua_pushinteger(L, ar->currentline);
  lua_pushboolean(L, lua_isyieldable(L));
  if (lua_pcall(L, 4, 1, 0) != LUA_OK) {
    evlua_log(EVLUA_LOG_ERROR, "debugger: %s", lua_tostring(L, -1));
    lua_settop(L, top);
    return;
  }
  const char *action = lua_tostring(L, -1);
  if (action != NULL && strcmp(action, "skip") == 0) {
    skip_file(L, ar);
  } else if (action != NULL && strcmp(action, "yield") == 0
             && event == LUA_HOOKLINE && lua_isyieldable(L)) {
    lua_settop(L, top);
    lua_yield(L, 0);
    return;
  }
  lua_settop(L, top);
}

static int mask_of(const char *s) {
  int mask = 0;
  if (strchr(s, 'c')) mask |= LUA_MASKCALL;
  if (strchr(s, 'r')) mask |= LUA_MASKRET;
  if (strchr(s, 'l')) mask |= LUA_MASKLINE;
  return mask;
}

/* Set (mask != 0) or clear the debugger's hook on L1, sharing the slot:
** on the thread the interrupt armed, the saved copy changes. Another
** hook (debug.sethook's) is left alone; returns whether it was set. */
static int set_debug_hook(lua_State *L1, int mask) {
  lua_Hook h = lua_gethook(L1);
  if (h == oneshot_hook && L1 == armed_thread) {
    if (saved_hook != NULL && saved_hook != debug_hook) return 0;
    saved_hook = mask ? debug_hook : NULL;
    saved_mask = mask;
    saved_count = 0;
    return 1;
  }
  if (h != NULL && h == stale_call_hook && h != call_hook) h = NULL;
  if (h != NULL && h != debug_hook && h != oneshot_hook) return 0;
  if (h == oneshot_hook) return 1;   /* stale: enter() replaces it */
  lua_sethook(L1, mask ? debug_hook : NULL, mask, 0);
  return 1;
}

static lua_State *thread_arg(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return L;
  lua_State *L1 = lua_tothread(L, idx);
  luaL_argexpected(L, L1 != NULL, idx, "thread");
  return L1;
}

/* core.debug_handler(fn | nil): fn gets the hook's events (see
** debug_hook); with fn every thread that runs gets the hook (calls
** only); nil takes it off this thread and the main one (others drop it
** at their next event). Either way the skipped files are forgotten. */
static int l_debug_handler(lua_State *L) {
  int on = !lua_isnoneornil(L, 1);
  if (on) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &handler_key);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &skip_key);
  memset(skip_cache, 0, sizeof skip_cache);
  debug_armed = on;
  if (on) check_layout(L);
  if (!on) {
    set_debug_hook(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    set_debug_hook(lua_tothread(L, -1), 0);
    lua_pop(L, 1);
  }
  return 0;
}

/* core.debug_peek([on]) -> whether the debugger's hook reads the called
** function from Lua's layout (see peek) rather than through lua_getinfo;
** false turns that off (the tests' way into the other path), true checks
** the layout again. */
static int l_debug_peek(lua_State *L) {
  if (!lua_isnone(L, 1)) {
    peek_allowed = lua_toboolean(L, 1);
    check_layout(L);
  }
  lua_pushboolean(L, layout_known);
  return 1;
}

/* core.debug_sethook([thread,] mask): the debugger's hook on thread
** with mask ("c", "cr", "crl"; "" takes it off) -> true, or false when
** another hook holds the slot. */
static int l_debug_sethook(lua_State *L) {
  lua_State *L1 = thread_arg(L, 1);
  int mask = mask_of(luaL_checkstring(L, 2));
  lua_pushboolean(L, set_debug_hook(L1, mask));
  return 1;
}

/* core.debug_gethook([thread]) -> the debugger's mask on thread ("c",
** "cr", "crl"...) | nil when its hook is not there. */
static int l_debug_gethook(lua_State *L) {
  lua_State *L1 = thread_arg(L, 1);
  lua_Hook h = lua_gethook(L1);
  int mask = lua_gethookmask(L1);
  if (h == oneshot_hook && L1 == armed_thread) {
    h = saved_hook;
    mask = saved_mask;
  }
  if (h != debug_hook) return 0;
  char s[4];
  int n = 0;
  if (mask & LUA_MASKCALL) s[n++] = 'c';
  if (mask & LUA_MASKRET) s[n++] = 'r';
  if (mask & LUA_MASKLINE) s[n++] = 'l';
  lua_pushlstring(L, s, n);
  return 1;
}

/* Tracked coroutines ================================================== */

/* coroutine.resume and coroutine.wrap, recording the running thread.
** Same behaviour as lcorolib.c's; only the bracketing is new. */

/* Resume co with narg values from L's top; returns the number of results
** moved to L, or -1 with an error message on top of L. */
static int resume_tracked(lua_State *L, lua_State *co, int narg) {
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  int nres;
  lua_State *prev = evlua_interrupt_enter(co);
  int status = lua_resume(co, L, narg, &nres);
  evlua_interrupt_leave(co, prev);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

static lua_State *check_co(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  return co;
}

static int l_resume(lua_State *L) {
  lua_State *co = check_co(L);
  int r = resume_tracked(L, co, lua_gettop(L) - 1);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int close_errored(lua_State *co, lua_State *L) {
#if LUA_VERSION_RELEASE_NUM >= 50406
  return lua_closethread(co, L);
#else
  (void)L;
  return lua_resetthread(co);
#endif
}

static int l_auxwrap(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int r = resume_tracked(L, co, lua_gettop(L));
  if (r >= 0) return r;
  int status = lua_status(co);
  if (status != LUA_OK && status != LUA_YIELD) {   /* error in co */
    status = close_errored(co, L);                 /* its tbc variables */
    lua_xmove(co, L, 1);
  }
  if (status != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

static int l_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, l_auxwrap, 1);
  return 1;
}

/* core.interrupt_library(prefix): chunk names starting with prefix are
** library code, never interrupted (a handful, set at start-up). */
static int l_interrupt_library(lua_State *L) {
  size_t len;
  const char *prefix = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len < sizeof library_prefixes[0], 1, "prefix too long");
  if (library_count == MAX_LIBRARY_PREFIXES)
    return luaL_error(L, "too many library prefixes");
  memcpy(library_prefixes[library_count++], prefix, len + 1);
  return 0;
}

/* core.catch_sigint(on) -> fd | nil, err. On: SIGINT breaks the user code
** running (as SIGUSR1 does) and, when none runs, makes fd readable (one
** byte per signal; read them with core.read). Off: SIGINT kills again.
** For the interactive prompt; the pipe stays open for the next use. */
static int l_catch_sigint(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGPROF);   /* one handler arms at a time */
  if (!lua_toboolean(L, 1)) {
    sa.sa_handler = SIG_DFL;
    sigaction(SIGINT, &sa, NULL);
    return 0;
  }
  if (sigint_pipe[0] < 0 && pipe2(sigint_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
    return evlua_fail_errno(L, errno, NULL);
  }
  sa.sa_handler = on_interrupt_signal;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, NULL);
  lua_pushinteger(L, sigint_pipe[0]);
  return 1;
}

/* core.interrupt_stats() -> { received =, idle =, raised =, ignored = } */
static int l_interrupt_stats(lua_State *L) {
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, signals_received);
  lua_setfield(L, -2, "received");
  lua_pushinteger(L, signals_idle);
  lua_setfield(L, -2, "idle");
  lua_pushinteger(L, interrupts_raised);
  lua_setfield(L, -2, "raised");
  lua_pushinteger(L, interrupts_ignored);
  lua_setfield(L, -2, "ignored");
  return 1;
}

void evlua_interrupt_install(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGPROF);   /* one handler arms at a time */
  sigaction(SIGUSR1, &sa, NULL);
  lua_getglobal(L, LUA_COLIBNAME);
  lua_pushcfunction(L, l_resume);
  lua_setfield(L, -2, "resume");
  lua_pushcfunction(L, l_wrap);
  lua_setfield(L, -2, "wrap");
  lua_pop(L, 1);
}

void evlua_open_interrupt(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "interrupt_library", l_interrupt_library },
    { "interrupt_stats", l_interrupt_stats },
    { "catch_sigint", l_catch_sigint },
    { "debug_handler", l_debug_handler },
    { "debug_peek", l_debug_peek },
    { "debug_sethook", l_debug_sethook },
    { "debug_gethook", l_debug_gethook },
    { NULL, NULL }
  };
  luaL_setfuncs(L, funcs, 0);   /* into the core table below */
}
