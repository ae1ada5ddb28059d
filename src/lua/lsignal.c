/*
** lsignal.c - Unix signals for Lua: one userdata embedding an ev_signal.
** libev turns the signal into a loop event, so the handler runs between
** callbacks like any other, never inside the signal handler. The target
** is resumed with, or called as f(watcher, arg, signum).
**
** SIGCHLD belongs to libev (child reaping) and SIGUSR1 to the runtime
** (breaking a dead loop); SIGKILL and SIGSTOP cannot be caught. Those are
** refused.
*/
#include <lauxlib.h>
#include <signal.h>

#include "runtime.h"

#define EVLUA_SIGNAL "evlua.signal"

typedef struct lsignal {
  ev_signal w;
  int ref;     /* registry anchor while active */
} lsignal;

static const void *signal_meta;   /* for evlua_checkudata */

static lsignal *check_signal(lua_State *L, int idx) {
  return (lsignal *)evlua_checkudata(L, idx, signal_meta, EVLUA_SIGNAL);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)revents;
  lsignal *s = container_of(w, lsignal, w);
  lua_State *L = ((evlua_runtime *)ev_userdata(loop))->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
  lua_pushinteger(L, w->signum);
  evlua_deliver(L, -2, 1);
  lua_pop(L, 1);
}

static int reserved(int sig) {
  return sig == SIGCHLD || sig == SIGUSR1 || sig == SIGKILL || sig == SIGSTOP;
}

/* core.signal(signum, target [, arg]) -> a stopped watcher */
static int l_signal_new(lua_State *L) {
  lua_Integer sig = luaL_checkinteger(L, 1);
  luaL_argcheck(L, sig > 0 && sig < NSIG, 1, "invalid signal number");
  luaL_argcheck(L, !reserved((int)sig), 1, "signal reserved by the runtime");
  lsignal *s = (lsignal *)lua_newuserdatauv(L, sizeof *s, 2);
  s->ref = LUA_NOREF;
  ev_signal_init(&s->w, on_signal, (int)sig);
  luaL_setmetatable(L, EVLUA_SIGNAL);
  evlua_set_target(L, lua_gettop(L), 2);
  return 1;
}

/* watcher:start() -> watcher. While a signal has a started watcher, it no
** longer has its default effect (SIGTERM no longer ends the process). */
static int l_signal_start(lua_State *L) {
  lsignal *s = check_signal(L, 1);
  if (!ev_is_active(&s->w)) {
    ev_signal_start(evlua_runtime_get(L)->loop, &s->w);
    /* a handler alone must not keep the process alive */
    ev_unref(evlua_runtime_get(L)->loop);
  }
  evlua_anchor(L, 1, &s->ref);
  lua_settop(L, 1);
  return 1;
}

/* watcher:stop() / cancel(): idempotent; once a signal has no started
** watcher left, libev restores its default action. */
static int l_signal_stop(lua_State *L) {
  lsignal *s = check_signal(L, 1);
  if (ev_is_active(&s->w)) {
    struct ev_loop *loop = evlua_runtime_get(L)->loop;
    ev_ref(loop);
    ev_signal_stop(loop, &s->w);
  }
  evlua_unanchor(L, &s->ref);
  return 0;
}

static int l_signal_active(lua_State *L) {
  lua_pushboolean(L, ev_is_active(&check_signal(L, 1)->w));
  return 1;
}

static int l_signal_tostring(lua_State *L) {
  lsignal *s = check_signal(L, 1);
  lua_pushfstring(L, "evlua.signal (%d%s)", s->w.signum,
                  ev_is_active(&s->w) ? ", active" : "");
  return 1;
}

void evlua_open_signal(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "start", l_signal_start },
    { "stop", l_signal_stop },
    { "cancel", l_signal_stop },
    { "active", l_signal_active },
    { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", l_signal_stop },
    { "__close", l_signal_stop },
    { "__tostring", l_signal_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  signal_meta = evlua_new_class(L, EVLUA_SIGNAL, meta, methods);
  lua_pushcfunction(L, l_signal_new);
  lua_setfield(L, -2, "signal");   /* into the core table below */
}
