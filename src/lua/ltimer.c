/*
** ltimer.c - timers for Lua: one userdata embedding an ev_timer.
** On expiry the target (user value 1) gets the failure every wait gets
** at its deadline ("timeout"): a coroutine is resumed with it, a
** function is called as f(timer, arg, failure...) where arg is user
** value 2 (evlua_deliver).
*/
#include <lauxlib.h>

#include "clock.h"
#include "runtime.h"

#define EVLUA_TIMER "evlua.timer"

typedef struct ltimer {
  ev_timer w;
  int ref;     /* registry anchor while active */
} ltimer;

static const void *timer_meta;   /* for evlua_checkudata */

static ltimer *check_timer(lua_State *L, int idx) {
  return (ltimer *)evlua_checkudata(L, idx, timer_meta, EVLUA_TIMER);
}

static void timer_stop(lua_State *L, ltimer *t) {
  if (ev_is_active(&t->w)) {
    evlua_runtime *rt = evlua_runtime_get(L);
    ev_timer_stop(rt->loop, &t->w);
    rt->active_timers--;
  }
  evlua_unanchor(L, &t->ref);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  ltimer *t = container_of(w, ltimer, w);
  evlua_runtime *rt = ev_userdata(loop);
  lua_State *L = rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);  /* keeps it alive meanwhile */
  if (!ev_is_active(w)) {   /* a one-shot timer has stopped by itself */
    rt->active_timers--;
    evlua_unanchor(L, &t->ref);
  }
  evlua_fail(L, "timeout", "timeout");   /* the wait's nil, err, code */
  evlua_deliver(L, -4, 3);
  lua_pop(L, 1);
}

/* core.timer(target [, arg]) -> a stopped timer */
static int l_timer_new(lua_State *L) {
  ltimer *t = (ltimer *)lua_newuserdatauv(L, sizeof *t, 2);
  t->ref = LUA_NOREF;
  ev_init(&t->w, on_timer);
  luaL_setmetatable(L, EVLUA_TIMER);
  evlua_set_target(L, lua_gettop(L), 1);
  return 1;
}

/* timer:start(after [, repeat]) -> timer; restarts an active timer */
static int l_timer_start(lua_State *L) {
  ltimer *t = check_timer(L, 1);
  double after = evlua_check_seconds(L, 2);
  double repeat = luaL_opt(L, evlua_check_seconds, 3, 0.0);
  evlua_runtime *rt = evlua_runtime_get(L);
  if (ev_is_active(&t->w)) ev_timer_stop(rt->loop, &t->w);
  else rt->active_timers++;
  ev_timer_set(&t->w, after, repeat);
  evlua_clock_now(rt->loop);   /* libev counts `after` from its cached time: not stale */
  ev_timer_start(rt->loop, &t->w);
  evlua_anchor(L, 1, &t->ref);
  lua_settop(L, 1);
  return 1;
}

/* timer:cancel() / timer:stop(): idempotent */
static int l_timer_stop(lua_State *L) {
  timer_stop(L, check_timer(L, 1));
  return 0;
}

static int l_timer_active(lua_State *L) {
  lua_pushboolean(L, ev_is_active(&check_timer(L, 1)->w));
  return 1;
}

/* timer:remaining() -> seconds until it fires, or nil when stopped */
static int l_timer_remaining(lua_State *L) {
  ltimer *t = check_timer(L, 1);
  if (!ev_is_active(&t->w)) return 0;
  lua_pushnumber(L, ev_timer_remaining(evlua_runtime_get(L)->loop, &t->w));
  return 1;
}

static int l_timer_tostring(lua_State *L) {
  ltimer *t = check_timer(L, 1);
  lua_pushfstring(L, "evlua.timer (%p%s)", (void *)t,
                  ev_is_active(&t->w) ? ", active" : "");
  return 1;
}

void evlua_open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "start", l_timer_start },
    { "stop", l_timer_stop },
    { "cancel", l_timer_stop },
    { "active", l_timer_active },
    { "remaining", l_timer_remaining },
    { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", l_timer_stop },
    { "__close", l_timer_stop },
    { "__tostring", l_timer_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  timer_meta = evlua_new_class(L, EVLUA_TIMER, meta, methods);
  lua_pushcfunction(L, l_timer_new);
  lua_setfield(L, -2, "timer");   /* into the core table below */
}
