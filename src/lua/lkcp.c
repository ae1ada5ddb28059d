/*
** lkcp.c - KCP sessions for Lua (src/core/kcpnet.c). Each session is an
** evlua.stream userdata on the KCP transport, so the channel class, the
** protocol decoders and rpc work on it as on TCP. A listener is one
** userdata holding its kcpnet; each new session goes to its target as
** f(listener, arg, stream). lua/evlua/kcp.lua builds kcp.listen and
** kcp.connect on them.
*/
#include <errno.h>
#include <lauxlib.h>
#include <string.h>

#include "kcpnet.h"
#include "lstream.h"
#include "runtime.h"

#define EVLUA_KCP_LISTENER "evlua.kcp.listener"

typedef struct lkcp_listener {
  evlua_kcpnet *net;   /* NULL once closed */
  int port;
  int ref;             /* registry anchor while open */
  lua_State *L;
} lkcp_listener;

static const void *listener_meta;   /* for evlua_checkudata */

static lkcp_listener *check_listener(lua_State *L, int idx) {
  return (lkcp_listener *)evlua_checkudata(L, idx, listener_meta,
                                           EVLUA_KCP_LISTENER);
}

/* Options ============================================================= */

static int opt_int(lua_State *L, int t, const char *k, int def) {
  int v = def;
  if (lua_getfield(L, t, k) != LUA_TNIL) {
    if (lua_isboolean(L, -1)) v = lua_toboolean(L, -1);
    else if (lua_isinteger(L, -1)) {
      lua_Integer i = lua_tointeger(L, -1);
      v = i < -1 ? -2 : i > 0x7fffffff ? 0x7fffffff : (int)i;
    } else {
      luaL_error(L, "option '%s': integer expected", k);
    }
  }
  lua_pop(L, 1);
  return v;
}

/* opts table at t (or none) into o; raise on an option out of range. */
static void check_opts(lua_State *L, int t, evlua_kcpnet_opts *o) {
  memset(o, 0, sizeof *o);
  o->nodelay = o->interval = o->resend = o->nc = -1;
  o->sndwnd = o->rcvwnd = o->mtu = o->dead_link = -1;
  if (lua_istable(L, t)) {
    o->nodelay = opt_int(L, t, "nodelay", -1);
    o->interval = opt_int(L, t, "interval", -1);
    o->resend = opt_int(L, t, "resend", -1);
    o->nc = opt_int(L, t, "nc", -1);
    o->sndwnd = opt_int(L, t, "sndwnd", -1);
    o->rcvwnd = opt_int(L, t, "rcvwnd", -1);
    o->mtu = opt_int(L, t, "mtu", -1);
    o->stream = opt_int(L, t, "stream", 0);
    o->dead_link = opt_int(L, t, "dead_link", -1);
    int max = opt_int(L, t, "max_sessions", 0);
    if (max < 0) luaL_error(L, "option 'max_sessions' out of range");
    o->max_sessions = (size_t)max;
    int rate = opt_int(L, t, "max_accept_rate", 0);
    if (rate < 0) luaL_error(L, "option 'max_accept_rate' out of range");
    o->accept_rate = (uint32_t)rate;
  }
  char err[64];
  if (evlua_kcpnet_check_opts(o, err, sizeof err) != 0)
    luaL_error(L, "option %s", err);
}

static void check_addr(lua_State *L, evlua_addr *a, int ip_arg) {
  const char *ip = luaL_checkstring(L, ip_arg);
  lua_Integer port = luaL_checkinteger(L, ip_arg + 1);
  luaL_argcheck(L, port >= 0 && port <= 65535, ip_arg + 1,
                "port out of range");
  if (evlua_addr_parse(a, ip, (int)port) < 0 || a->ss.ss_family == AF_UNIX)
    luaL_argerror(L, ip_arg, "numeric IPv4 or IPv6 address expected");
}

/* Sessions ============================================================ */

/* Push the session's stream userdata and tie the two together. */
static lstream *push_session(lua_State *L, evlua_kcp_session *ss) {
  lstream *ls = evlua_push_transport_stream(
      L, &evlua_kcp_transport, ss, evlua_kcp_session_message_mode(ss));
  evlua_kcp_session_attach(ss, &ls->s);
  return ls;
}

/* A peer opened a session: its stream goes to the listener's target. */
static void on_accept(evlua_kcpnet *net, evlua_kcp_session *ss) {
  lkcp_listener *l = evlua_kcpnet_data(net);
  lua_State *L = l->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->ref);   /* kept meanwhile */
  int top = lua_gettop(L);
  push_session(L, ss);
  evlua_deliver(L, top, 1);
  lua_settop(L, top - 1);
}

static const evlua_kcpnet_handler listen_handler = { on_accept };

/* connect's session: its stream stays on the stack for the caller. */
static void on_connect(evlua_kcpnet *net, evlua_kcp_session *ss) {
  push_session((lua_State *)evlua_kcpnet_data(net), ss);
}

static const evlua_kcpnet_handler connect_handler = { on_connect };

/* Functions =========================================================== */

/* core.kcp_listen(ip, port, opts, target [, arg]) -> listener | nil, err */
static int l_kcp_listen(lua_State *L) {
  evlua_addr local;
  check_addr(L, &local, 1);
  evlua_kcpnet_opts o;
  check_opts(L, 3, &o);
  lkcp_listener *l = (lkcp_listener *)lua_newuserdatauv(L, sizeof *l, 2);
  memset(l, 0, sizeof *l);
  l->ref = LUA_NOREF;
  l->L = evlua_runtime_get(L)->L;   /* the main state, not a coroutine */
  luaL_setmetatable(L, EVLUA_KCP_LISTENER);
  evlua_set_target(L, lua_gettop(L), 4);
  char err[128];
  l->net = evlua_kcpnet_open(evlua_runtime_get(L)->loop, &local, NULL, &o,
                             &listen_handler, l, err, sizeof err);
  if (!l->net) return evlua_fail(L, evlua_errno_name(errno), "%s", err);
  l->port = evlua_kcpnet_port(l->net);
  evlua_anchor(L, lua_gettop(L), &l->ref);
  return 1;
}

/* core.kcp_connect(ip, port, opts, conv) -> stream | nil, err */
static int l_kcp_connect(lua_State *L) {
  evlua_addr peer;
  check_addr(L, &peer, 1);
  evlua_kcpnet_opts o;
  check_opts(L, 3, &o);
  lua_Integer conv = luaL_checkinteger(L, 4);
  luaL_argcheck(L, conv >= 0 && conv <= 0xffffffff, 4, "conv out of range");
  evlua_addr local;
  evlua_addr_parse(&local, peer.ss.ss_family == AF_INET6 ? "::" : "0.0.0.0",
                   0);
  char err[128];
  int top = lua_gettop(L);
  evlua_kcpnet *net = evlua_kcpnet_open(evlua_runtime_get(L)->loop, &local,
                                        &peer, &o, &connect_handler, L,
                                        err, sizeof err);
  if (!net) return evlua_fail(L, evlua_errno_name(errno), "%s", err);
  evlua_kcp_session *ss = evlua_kcpnet_connect(net, (uint32_t)conv);
  int e = errno;
  evlua_kcpnet_close(net);   /* the session holds it from now on */
  if (!ss) return evlua_fail_errno(L, e, "kcp session");
  lua_settop(L, top + 1);    /* the stream on_connect pushed */
  return 1;
}

/* Listener methods ==================================================== */

static int l_listener_close(lua_State *L) {
  lkcp_listener *l = check_listener(L, 1);
  if (l->net) {
    evlua_kcpnet_close(l->net);   /* its sessions keep the socket */
    l->net = NULL;
  }
  evlua_unanchor(L, &l->ref);
  return 0;
}

static int l_listener_port(lua_State *L) {
  lkcp_listener *l = check_listener(L, 1);
  if (!l->net) return evlua_push_closed(L);
  lua_pushinteger(L, l->port);
  return 1;
}

static void set_count(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* A KCP socket's counters, as listener:stats() and a client's
** ch:stats().kcp.socket give them: { datagrams, dropped, drop_short,
** drop_cmd, drop_len, drop_conv, drop_no_session, drop_limit, drop_rate,
** drop_engine, accepted, sessions, wakeups, sent, send_errors } */
static void push_net_stats(lua_State *L, const evlua_kcpnet *net) {
  const evlua_kcpnet_stats *st = evlua_kcpnet_stats_of(net);
  lua_createtable(L, 0, 15);
  set_count(L, "datagrams", st->datagrams);
  set_count(L, "dropped", st->dropped);
  set_count(L, "drop_short", st->drop_short);
  set_count(L, "drop_cmd", st->drop_cmd);
  set_count(L, "drop_len", st->drop_len);
  set_count(L, "drop_conv", st->drop_conv);
  set_count(L, "drop_no_session", st->drop_no_session);
  set_count(L, "drop_limit", st->drop_limit);
  set_count(L, "drop_rate", st->drop_rate);
  set_count(L, "drop_engine", st->drop_engine);
  set_count(L, "accepted", st->accepted);
  set_count(L, "sessions", evlua_kcpnet_sessions(net));
  set_count(L, "wakeups", evlua_kcpnet_wakeups(net));
  set_count(L, "sent", evlua_kcpnet_udp_stats(net)->sent);
  set_count(L, "send_errors", evlua_kcpnet_udp_stats(net)->send_errors);
}

static int l_listener_stats(lua_State *L) {
  lkcp_listener *l = check_listener(L, 1);
  if (!l->net) return evlua_push_closed(L);
  push_net_stats(L, l->net);
  return 1;
}

static int l_listener_tostring(lua_State *L) {
  lkcp_listener *l = check_listener(L, 1);
  if (l->net) lua_pushfstring(L, "%s (port %d)", EVLUA_KCP_LISTENER, l->port);
  else lua_pushfstring(L, "%s (closed)", EVLUA_KCP_LISTENER);
  return 1;
}

/* Stream methods ====================================================== */

/* stream:kcp_stats() -> the session engine's counters and timings, and
** a client's socket counters as .socket | nil (not a KCP stream, or
** closed) */
static int l_kcp_stats(lua_State *L) {
  lstream *ls = evlua_check_stream(L, 1);
  evlua_kcp_session *ss = evlua_kcp_session_of(&ls->s);
  if (!ss) {
    luaL_pushfail(L);
    return 1;
  }
  evlua_kcp *k = evlua_kcp_session_engine(ss);
  const evlua_kcp_stats *st = evlua_kcp_stats_of(k);
  lua_createtable(L, 0, 24);
  set_count(L, "conv", evlua_kcp_conv(k));
  set_count(L, "datagrams_in", st->datagrams_in);
  set_count(L, "datagrams_out", st->datagrams_out);
  set_count(L, "segments_in", st->segments_in);
  set_count(L, "segments_out", st->segments_out);
  set_count(L, "retransmits", st->retransmits);
  set_count(L, "fast_retransmits", st->fast_retransmits);
  set_count(L, "dropped_datagrams", st->dropped_datagrams);
  set_count(L, "drop_short", st->drop_short);
  set_count(L, "drop_conv", st->drop_conv);
  set_count(L, "drop_cmd", st->drop_cmd);
  set_count(L, "drop_len", st->drop_len);
  set_count(L, "drop_window", st->drop_window);
  set_count(L, "drop_duplicate", st->drop_duplicate);
  set_count(L, "drop_fragments", st->drop_fragments);
  set_count(L, "output_errors", st->output_errors);
  set_count(L, "waitsnd", evlua_kcp_waitsnd(k));
  set_count(L, "srtt", evlua_kcp_srtt(k));
  set_count(L, "rto", evlua_kcp_rto(k));
  const evlua_kcpnet *own = evlua_kcp_session_client_net(ss);
  if (own) {   /* what a client's socket dropped before any engine saw it */
    push_net_stats(L, own);
    lua_setfield(L, -2, "socket");
  }
  return 1;
}

void evlua_open_kcp(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "close", l_listener_close },
    { "port", l_listener_port },
    { "stats", l_listener_stats },
    { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", l_listener_close },
    { "__close", l_listener_close },
    { "__tostring", l_listener_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "kcp_listen", l_kcp_listen },
    { "kcp_connect", l_kcp_connect },
    { NULL, NULL }
  };
  static const luaL_Reg stream_methods[] = {
    { "kcp_stats", l_kcp_stats },
    { NULL, NULL }
  };
  listener_meta = evlua_new_class(L, EVLUA_KCP_LISTENER, meta, methods);
  evlua_stream_add_methods(L, stream_methods);
  luaL_setfuncs(L, funcs, 0);
}
