/*
** runtime.c - the evlua runtime: loop, Lua state, and the protected
** dispatcher every loop callback goes through.
*/
#include "runtime.h"

#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "net.h"
#include "stream.h"
#include "udp.h"

evlua_runtime *evlua_runtime_get(lua_State *L) {
  return *(evlua_runtime **)lua_getextraspace(L);
}

/* Error message handler: the message (or a description of a non-string
** error object) followed by a traceback of the failing thread. */
int evlua_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)",
                          luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static void log_lua_error(lua_State *L, int idx, const char *what) {
  size_t len;
  const char *msg = lua_tolstring(L, idx, &len);
  if (msg == NULL) msg = "(error object is not a string)";
  evlua_log(EVLUA_LOG_ERROR, "%s: %s", what, msg);
}

int evlua_pcall(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;   /* function index */
  lua_pushcfunction(L, evlua_traceback);
  lua_insert(L, base);
  lua_State *prev = evlua_interrupt_enter(L);
  int status = lua_pcall(L, nargs, nresults, base);
  evlua_interrupt_leave(L, prev);
  if (status != LUA_OK) {
    log_lua_error(L, -1, "callback failed");
    lua_pop(L, 1);
  }
  lua_remove(L, base);
  return status;
}

/* Resume co with the nargs values on top of L. A coroutine that is not
** suspended is left alone (its waker was stale). */
static void resume_thread(lua_State *L, lua_State *co, int nargs) {
  if (lua_status(co) != LUA_YIELD) {
    lua_pop(L, nargs);
    evlua_log(EVLUA_LOG_ERROR, "evlua: event for a coroutine that is not "
              "suspended was dropped");
    return;
  }
  lua_xmove(L, co, nargs);
  int nres = 0;
  lua_State *prev = evlua_interrupt_enter(co);
  int status = lua_resume(co, L, nargs, &nres);
  evlua_interrupt_leave(co, prev);
  if (status == LUA_OK || status == LUA_YIELD) {
    lua_pop(co, nres);
    return;
  }
  /* Tasks catch their own errors; reaching here means the scheduler or an
  ** error handler failed. The coroutine is dead; report where. */
  luaL_traceback(L, co, lua_tostring(co, -1), 0);
  log_lua_error(L, -1, "coroutine failed");
  lua_pop(L, 1);
}

void evlua_deliver(lua_State *L, int ud, int nargs) {
  ud = lua_absindex(L, ud);
  int type = lua_getiuservalue(L, ud, 1);
  if (type == LUA_TTHREAD) {
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);  /* still anchored by the userdata */
    resume_thread(L, co, nargs);
  } else if (type == LUA_TFUNCTION) {
    lua_pushvalue(L, ud);
    lua_getiuservalue(L, ud, 2);
    lua_rotate(L, -(nargs + 3), 3);   /* f ud arg values... */
    evlua_pcall(L, nargs + 2, 0);
  } else {
    lua_pop(L, nargs + 1);
  }
}

/* Before sleep ======================================================== */

/* Run the Lua ready queue: the tasks forked or woken since it last ran. */
static void run_ready_tasks(evlua_runtime *rt) {
  lua_State *L = rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->drain_ref);
  evlua_pcall(L, 0, 0);
}

/* The one step closing every loop iteration, once its events have been
** handled and just before the loop polls (or blocks) again, as Redis's
** beforesleep. In this order:
**   1. run the ready Lua tasks: what they write is only coalesced in
**      their streams' queues;
**   2. write each stream's coalesced output, so the messages of the whole
**      iteration (its callbacks' and its tasks') share one write(2), and
**      each UDP socket's queued datagrams, in one sendmmsg(2).
** It is the loop's only prepare watcher, of the lowest priority, always
** active but not counted as keeping the loop alive (spin_watcher does
** while tasks are ready). A debugger or a profiler hooks in here: before
** step 1 an iteration's events are handled and its tasks not yet run;
** after step 2 its output is out. */
static void before_sleep(struct ev_loop *loop, ev_prepare *w, int revents) {
  (void)loop; (void)revents;
  evlua_runtime *rt = container_of(w, evlua_runtime, before_sleep);
  if (rt->ready) run_ready_tasks(rt);
  evlua_stream_flush_corked(&rt->core);
  evlua_udp_flush_pending(rt->loop);
}

static void start_before_sleep(evlua_runtime *rt) {
  ev_prepare_init(&rt->before_sleep, before_sleep);
  ev_set_priority(&rt->before_sleep, EV_MINPRI);
  ev_prepare_start(rt->loop, &rt->before_sleep);
  ev_unref(rt->loop);
}

static void on_spin(struct ev_loop *loop, ev_idle *w, int revents) {
  (void)loop; (void)w; (void)revents;  /* its presence alone matters */
}

void evlua_runtime_set_ready(evlua_runtime *rt, int on) {
  rt->ready = on && rt->drain_ref != LUA_NOREF;
  if (rt->ready) ev_idle_start(rt->loop, &rt->spin_watcher);
  else ev_idle_stop(rt->loop, &rt->spin_watcher);
}

/* Life cycle ========================================================== */

/* Close the Lua state, then free what outlived it: the blocks kept for
** reuse by the allocator and by the buffers. */
static void close_state(evlua_runtime *rt) {
  lua_close(rt->L);   /* __gc stops every watcher still running */
  evlua_buffer_free(&rt->scratch);
  evlua_loop_state_release(&rt->core);
  evlua_alloc_release(&rt->alloc);
}

/* os.exit, wrapped (same arguments): the coalesced writes get their one
** try at the socket first, so that bytes written just before os.exit
** reach the peer; with close, what the runtime kept is freed after the
** state, so that leak checkers see every block freed. */
static int l_os_exit(lua_State *L) {
  evlua_runtime *rt = evlua_runtime_get(L);
  int status;
  if (lua_isboolean(L, 1))
    status = lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE;
  else
    status = (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
  evlua_stream_flush_corked(&rt->core);
  evlua_udp_flush_pending(rt->loop);
  if (lua_toboolean(L, 2)) close_state(rt);
  exit(status);
}

static void wrap_os_exit(lua_State *L) {
  lua_getglobal(L, "os");
  lua_pushcfunction(L, l_os_exit);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
}

/* ev_userdata(loop) is the core's state and the runtime at once. */
_Static_assert(offsetof(evlua_runtime, core) == 0,
               "the loop state is the runtime's first member");

evlua_runtime *evlua_runtime_new(void) {
  evlua_runtime *rt = calloc(1, sizeof *rt);
  if (rt == NULL) return NULL;
  rt->loop = ev_default_loop(EVFLAG_AUTO);
  rt->L = luaL_newstate();
  if (rt->loop == NULL || rt->L == NULL) {
    if (rt->L) lua_close(rt->L);
    free(rt);
    return NULL;
  }
  evlua_alloc_install(rt->L, &rt->alloc);
  /* A peer that goes away must cost an EPIPE on that socket, not the
  ** process. */
  signal(SIGPIPE, SIG_IGN);
  rt->drain_ref = rt->dispatch_ref = LUA_NOREF;
  evlua_loop_state_init(&rt->core, rt->loop);
  evlua_buffer_init_cached(&rt->scratch, &rt->core.blocks);
  rt->started = ev_time();
  start_before_sleep(rt);
  ev_idle_init(&rt->spin_watcher, on_spin);
  *(evlua_runtime **)lua_getextraspace(rt->L) = rt;
  luaL_openlibs(rt->L);
  wrap_os_exit(rt->L);
  evlua_interrupt_install(rt->L);
  evlua_crash_install(rt->L);
  luaL_getsubtable(rt->L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(rt->L, luaopen_evlua_core);
  lua_setfield(rt->L, -2, "evlua.core");
  lua_pop(rt->L, 1);
  return rt;
}

void evlua_runtime_run(evlua_runtime *rt) {
  ev_run(rt->loop, 0);
}

void evlua_runtime_free(evlua_runtime *rt) {
  evlua_runtime_set_ready(rt, 0);
  close_state(rt);
  ev_ref(rt->loop);   /* as before_sleep took it */
  ev_prepare_stop(rt->loop, &rt->before_sleep);
  ev_loop_destroy(rt->loop);
  free(rt);
}

evlua_buffer *evlua_scratch(lua_State *L) {
  evlua_buffer *b = &evlua_runtime_get(L)->scratch;
  evlua_buffer_consume(b, evlua_buffer_len(b));
  return b;
}

void evlua_scratch_done(evlua_buffer *b) {
  evlua_buffer_consume(b, evlua_buffer_len(b));
  if (b->cap > 1024 * 1024) evlua_buffer_free(b);
}

int evlua_fail(lua_State *L, const char *code, const char *fmt, ...) {
  va_list ap;
  luaL_pushfail(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, code);
  return 3;
}

const char *evlua_errno_name(int e) {
  const char *name = strerrorname_np(e);   /* glibc >= 2.32 */
  return name ? name : "EUNKNOWN";
}

int evlua_fail_errno(lua_State *L, int e, const char *context) {
  /* the lowercase text streams and listeners already use */
  const char *text = evlua_net_strerror(e);
  if (context == NULL) return evlua_fail(L, evlua_errno_name(e), "%s", text);
  return evlua_fail(L, evlua_errno_name(e), "%s: %s", context, text);
}

const void *evlua_new_class(lua_State *L, const char *name,
                            const luaL_Reg *meta, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  const void *mt = lua_topointer(L, -1);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  return mt;
}

void *evlua_checkudata(lua_State *L, int idx, const void *meta,
                       const char *tname) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt == meta) return p;
  }
  return luaL_checkudata(L, idx, tname);
}

int evlua_push_closed(lua_State *L) {
  return evlua_fail(L, "closed", "closed");
}

double evlua_check_seconds(lua_State *L, int idx) {
  double d = luaL_checknumber(L, idx);
  luaL_argcheck(L, d >= 0 && d < HUGE_VAL, idx,
                "non-negative number expected");
  return d;
}

void evlua_anchor(lua_State *L, int idx, int *ref) {
  if (*ref != LUA_NOREF) return;
  lua_pushvalue(L, idx);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void evlua_unanchor(lua_State *L, int *ref) {
  if (*ref == LUA_NOREF) return;
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

void evlua_set_target(lua_State *L, int ud, int targ) {
  int t = lua_type(L, targ);
  luaL_argexpected(L, t == LUA_TFUNCTION || t == LUA_TTHREAD, targ,
                   "function or coroutine");
  lua_pushvalue(L, targ);
  lua_setiuservalue(L, ud, 1);
  lua_pushvalue(L, targ + 1);
  lua_setiuservalue(L, ud, 2);
}
