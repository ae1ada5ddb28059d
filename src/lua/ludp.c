/*
** ludp.c - UDP sockets for Lua (src/core/udp.c): one userdata embedding
** the socket. Each datagram goes to the target as
** f(sock, arg, data, ip, port, truncated). lua/evlua/udp.lua builds
** udp.bind and udp.connect on it: a plain callback, or a bounded queue
** read by sock:recvfrom() in a coroutine.
*/
#include <errno.h>
#include <lauxlib.h>
#include <string.h>

#include "net.h"
#include "runtime.h"
#include "udp.h"

#define EVLUA_UDP "evlua.udp"

/* User values: 1 target, 2 its argument, 3 the last sender's address as
** a string (most datagrams come from the peer the previous one came
** from: a game server's client, a KCP session). */
#define UV_LAST_IP 3

typedef struct ludp {
  evlua_udp u;
  int ref;              /* registry anchor while open */
  evlua_addr last_from; /* whose address UV_LAST_IP holds */
  int last_port;
  evlua_addr dest;      /* the last sendto address, parsed */
  char dest_ip[64];     /* as it was given ("" before the first) */
  int dest_port;
} ludp;

static const void *udp_meta;   /* for evlua_checkudata */

static ludp *check_udp(lua_State *L, int idx) {
  return (ludp *)evlua_checkudata(L, idx, udp_meta, EVLUA_UDP);
}

/* Push the sender's address as text, reusing the last one's string. */
static int push_sender(lua_State *L, ludp *s, int ud, const evlua_addr *from) {
  if (from->len == s->last_from.len &&
      memcmp(&from->ss, &s->last_from.ss, from->len) == 0) {
    lua_getiuservalue(L, ud, UV_LAST_IP);
    return s->last_port;
  }
  char ip[128];
  s->last_port = evlua_addr_format(from, ip, sizeof ip);
  s->last_from = *from;
  lua_pushstring(L, ip);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, ud, UV_LAST_IP);
  return s->last_port;
}

static void on_datagram(evlua_udp *u, const char *data, size_t len,
                        const evlua_addr *from, int truncated) {
  ludp *s = container_of(u, ludp, u);
  lua_State *L = evlua_runtime_of_loop(u->loop)->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
  int ud = lua_gettop(L);
  lua_pushlstring(L, data, len);
  int port = push_sender(L, s, ud, from);
  lua_pushinteger(L, port);
  lua_pushboolean(L, truncated);
  evlua_deliver(L, ud, 4);
  lua_pop(L, 1);
}

static const evlua_udp_handler udp_handler = { on_datagram };

static void check_addr(lua_State *L, evlua_addr *a, int ip_arg) {
  const char *ip = luaL_checkstring(L, ip_arg);
  lua_Integer port = luaL_checkinteger(L, ip_arg + 1);
  luaL_argcheck(L, port >= 0 && port <= 65535, ip_arg + 1,
                "port out of range");
  if (evlua_addr_parse(a, ip, (int)port) < 0 ||
      a->ss.ss_family == AF_UNIX)
    luaL_argerror(L, ip_arg, "numeric IPv4 or IPv6 address expected");
}

/* core.udp_open(ip, port, max_datagram, max_queue, target [, arg])
** -> sock | nil, err, code */
static int l_udp_open(lua_State *L) {
  evlua_addr local;
  check_addr(L, &local, 1);
  lua_Integer max_datagram = luaL_checkinteger(L, 3);
  lua_Integer max_queue = luaL_checkinteger(L, 4);
  luaL_argcheck(L, max_datagram >= 1 && max_datagram <= 65536, 3,
                "max_datagram out of range");
  luaL_argcheck(L, max_queue >= 1 && max_queue <= (1 << 24), 4,
                "max_queue out of range");
  ludp *s = (ludp *)lua_newuserdatauv(L, sizeof *s, 3);
  memset(s, 0, sizeof *s);
  s->ref = LUA_NOREF;
  s->u.fd = -1;
  s->dest_port = -1;
  luaL_setmetatable(L, EVLUA_UDP);
  evlua_set_target(L, lua_gettop(L), 5);
  char err[128];
  evlua_runtime *rt = evlua_runtime_get(L);
  if (evlua_udp_open(&s->u, rt->loop, &local, &udp_handler, s,
                     err, sizeof err) < 0)
    return evlua_fail(L, evlua_errno_name(errno), "%s", err);
  s->u.max_datagram = (size_t)max_datagram;
  s->u.max_queue = (size_t)max_queue;
  evlua_anchor(L, lua_gettop(L), &s->ref);
  return 1;
}

/* sock:connect(ip, port) -> true | nil, err, code */
static int l_udp_connect(lua_State *L) {
  ludp *s = check_udp(L, 1);
  evlua_addr peer;
  check_addr(L, &peer, 2);
  if (s->u.fd < 0) return evlua_push_closed(L);
  if (evlua_udp_connect(&s->u, &peer) < 0)
    return evlua_fail_errno(L, errno, "connect");
  lua_pushboolean(L, 1);
  return 1;
}

static int send_result(lua_State *L, int rc) {
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (errno == EBADF) return evlua_push_closed(L);
  if (errno == EAGAIN) return evlua_fail(L, "EAGAIN", "would block");
  return evlua_fail_errno(L, errno, NULL);
}

/* sock:sendto(data, ip, port) -> true | nil, err, code */
static int l_udp_sendto(lua_State *L) {
  ludp *s = check_udp(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *ip = luaL_checkstring(L, 3);
  lua_Integer port = luaL_checkinteger(L, 4);
  /* A server answers the same few peers: parse an address once. */
  if (port != s->dest_port || strcmp(ip, s->dest_ip) != 0) {
    check_addr(L, &s->dest, 3);
    size_t n = strlen(ip);
    if (n < sizeof s->dest_ip) memcpy(s->dest_ip, ip, n + 1);
    else s->dest_ip[0] = '\0';   /* too long to keep: parsed each time */
    s->dest_port = (int)port;
  }
  return send_result(L, evlua_udp_send(&s->u, data, len, &s->dest));
}

/* sock:send(data) -> true | nil, err, code (a connected socket) */
static int l_udp_send(lua_State *L) {
  ludp *s = check_udp(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  return send_result(L, evlua_udp_send(&s->u, data, len, NULL));
}

/* sock:addr() -> ip, port (the local address) | nil, "closed" */
static int push_address(lua_State *L, int peer) {
  ludp *s = check_udp(L, 1);
  if (s->u.fd < 0) return evlua_push_closed(L);
  evlua_addr a;
  int rc = peer ? evlua_net_peername(s->u.fd, &a)
                : evlua_net_sockname(s->u.fd, &a);
  if (rc < 0) return evlua_fail_errno(L, errno, NULL);
  char ip[128];
  int port = evlua_addr_format(&a, ip, sizeof ip);
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  return 2;
}

static int l_udp_addr(lua_State *L) { return push_address(L, 0); }
static int l_udp_peer(lua_State *L) { return push_address(L, 1); }

static int l_udp_fd(lua_State *L) {
  lua_pushinteger(L, check_udp(L, 1)->u.fd);
  return 1;
}

static void set_count(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* sock:stats() -> { sent, received, truncated, send_errors, queued } */
static int l_udp_stats(lua_State *L) {
  ludp *s = check_udp(L, 1);
  lua_createtable(L, 0, 6);
  set_count(L, "sent", s->u.stats.sent);
  set_count(L, "received", s->u.stats.received);
  set_count(L, "truncated", s->u.stats.truncated);
  set_count(L, "send_errors", s->u.stats.send_errors);
  set_count(L, "queued", s->u.queued);
  if (s->u.last_error) {
    lua_pushstring(L, evlua_errno_name(s->u.last_error));
    lua_setfield(L, -2, "last_error");
  }
  return 1;
}

static int l_udp_close(lua_State *L) {
  ludp *s = check_udp(L, 1);
  evlua_udp_close(&s->u);
  evlua_unanchor(L, &s->ref);
  return 0;
}

static int l_udp_tostring(lua_State *L) {
  ludp *s = check_udp(L, 1);
  if (s->u.fd < 0) lua_pushliteral(L, "evlua.udp (closed)");
  else lua_pushfstring(L, "evlua.udp (fd %d)", s->u.fd);
  return 1;
}

void evlua_open_udp(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "connect", l_udp_connect },
    { "sendto", l_udp_sendto },
    { "send", l_udp_send },
    { "addr", l_udp_addr },
    { "peer", l_udp_peer },
    { "fd", l_udp_fd },
    { "stats", l_udp_stats },
    { "close", l_udp_close },
    { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", l_udp_close },
    { "__close", l_udp_close },
    { "__tostring", l_udp_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "udp_open", l_udp_open },
    { NULL, NULL }
  };
  udp_meta = evlua_new_class(L, EVLUA_UDP, meta, methods);
  luaL_setfuncs(L, funcs, 0);
}
