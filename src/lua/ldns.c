/*
** ldns.c - asynchronous DNS for Lua: a resolver userdata owning one
** dns.c resolver, and one request userdata per lookup. The friendly API
** is lua/evlua/dns.lua.
**
** A request's target (user value 1, a function) is called from the loop
** as f(request, arg, addresses) or f(request, arg, nil, err), once. While
** it is pending the request is anchored; its user value 3 keeps the
** resolver alive. request:cancel() drops the target: a late answer is then
** discarded inside dns.c.
*/
#include <lauxlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dns.h"
#include "runtime.h"

#define EVLUA_DNS_RESOLVER "evlua.dns.resolver"
#define EVLUA_DNS_REQUEST "evlua.dns.request"
#define MAX_SERVERS 32

typedef struct lresolver {
  evlua_dns *r;       /* NULL once closed */
  lua_State *L;       /* thread the callbacks use */
  int closing;        /* callbacks only unanchor, never call Lua */
} lresolver;

typedef struct lrequest {
  evlua_dns_req *req; /* NULL once answered or cancelled */
  lresolver *owner;
  int ref;            /* registry anchor while pending */
} lrequest;

/* What on_resolved hands to the protected part of a delivery. */
typedef struct result {
  lrequest *q;
  const char *err;
  const char *const *addrs;
  size_t n;
} result;

static const void *resolver_meta, *request_meta;   /* evlua_checkudata */

/* The resolver at idx, open or closed (o->r == NULL). */
static lresolver *check_resolver(lua_State *L, int idx) {
  return (lresolver *)evlua_checkudata(L, idx, resolver_meta,
                                       EVLUA_DNS_RESOLVER);
}

static lrequest *check_request(lua_State *L, int idx) {
  return (lrequest *)evlua_checkudata(L, idx, request_meta,
                                      EVLUA_DNS_REQUEST);
}

/* Requests ============================================================ */

/* dns.c's failures are short fixed words ("not found", "timeout"): the
** code is the word with '_' for ' ' ("not_found"). */
static int push_failure(lua_State *L, const char *err) {
  char code[64];
  size_t i;
  for (i = 0; err[i] != '\0' && i < sizeof code - 1; i++)
    code[i] = err[i] == ' ' ? '_' : err[i];
  code[i] = '\0';
  return evlua_fail(L, code, "%s", err);
}

/* Protected: push the request and its result, then deliver them. */
static int deliver_result(lua_State *L) {
  result *res = (result *)lua_touserdata(L, 1);
  int nargs = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, res->q->ref);
  evlua_unanchor(L, &res->q->ref);
  if (res->err != NULL) {
    nargs = push_failure(L, res->err);
  } else {
    lua_createtable(L, (int)res->n, 0);
    for (size_t i = 0; i < res->n; i++) {
      lua_pushstring(L, res->addrs[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
  }
  evlua_deliver(L, -(nargs + 1), nargs);
  return 0;
}

/* dns.c callback, from the loop (or from a resolver being closed). */
static void on_resolved(void *arg, const char *err, const char *const *addrs,
                        size_t n) {
  lrequest *q = (lrequest *)arg;
  lua_State *L = q->owner->L;
  q->req = NULL;
  if (!q->owner->closing) {
    result res = { q, err, addrs, n };
    lua_pushcfunction(L, deliver_result);
    lua_pushlightuserdata(L, &res);
    evlua_pcall(L, 1, 0);       /* an error there is logged */
  }
  evlua_unanchor(L, &q->ref);   /* already done unless that failed */
}

/* request:cancel(): idempotent; the target will not be called. */
static int l_request_cancel(lua_State *L) {
  lrequest *q = check_request(L, 1);
  if (q->req != NULL) {
    evlua_dns_cancel(q->req);
    q->req = NULL;
  }
  evlua_unanchor(L, &q->ref);
  return 0;
}

/* request:pending() -> true until answered or cancelled */
static int l_request_pending(lua_State *L) {
  lua_pushboolean(L, check_request(L, 1)->req != NULL);
  return 1;
}

static int l_request_tostring(lua_State *L) {
  lrequest *q = check_request(L, 1);
  lua_pushfstring(L, "evlua.dns.request (%p%s)", (void *)q,
                  q->req != NULL ? ", pending" : "");
  return 1;
}

/* Resolvers =========================================================== */

/* core.dns_resolver([{ servers = {...}, timeout = s, tries = n }])
** -> resolver | nil, err. Missing settings come from /etc/resolv.conf. */
static int l_resolver_new(lua_State *L) {
  const char *servers[MAX_SERVERS];
  evlua_dns_options opts = { servers, 0, 0.0, 0 };
  char err[256];
  evlua_dns_failure failure;
  lua_settop(L, 1);
  if (!lua_isnil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_getfield(L, 1, "servers") != LUA_TNIL) {   /* 2 */
      luaL_argcheck(L, lua_istable(L, 2), 1, "servers must be a list");
      lua_Integer n = luaL_len(L, 2);
      luaL_argcheck(L, n <= MAX_SERVERS, 1, "too many servers");
      luaL_checkstack(L, (int)n + 4, "too many servers");
      for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 2, i) != LUA_TSTRING)
          luaL_argerror(L, 1, "servers must be strings");
        servers[i - 1] = lua_tostring(L, -1);   /* kept on the stack */
      }
      opts.nservers = (size_t)n;
    }
    lua_getfield(L, 1, "timeout");
    opts.timeout = luaL_optnumber(L, -1, 0.0);
    lua_getfield(L, 1, "tries");
    opts.tries = (int)luaL_optinteger(L, -1, 0);
  }
  lresolver *o = (lresolver *)lua_newuserdatauv(L, sizeof *o, 0);
  o->r = NULL;
  o->L = evlua_runtime_get(L)->L;
  o->closing = 0;
  luaL_setmetatable(L, EVLUA_DNS_RESOLVER);
  o->r = evlua_dns_create(evlua_runtime_get(L)->loop, &opts, err, sizeof err,
                          &failure);
  if (o->r == NULL) {
    /* a server the caller gave is the one failure that is theirs */
    return evlua_fail(L, failure == EVLUA_DNS_FAIL_BAD_SERVER ? "bad_server"
                                                              : "resolver",
                      "%s", err);
  }
  return 1;
}

/* resolver:resolve(host, "any"|"inet"|"inet6", fn [, arg]) -> request
** | nil, "closed"; fn(request, arg, addresses | nil, err) runs later
** from the loop. */
static int l_resolver_resolve(lua_State *L) {
  static const char *const families[] = { "any", "inet", "inet6", NULL };
  static const int af[] = { AF_UNSPEC, AF_INET, AF_INET6 };
  lresolver *o = check_resolver(L, 1);
  if (o->r == NULL) return evlua_push_closed(L);
  size_t len;
  const char *host = luaL_checklstring(L, 2, &len);
  int family = af[luaL_checkoption(L, 3, "any", families)];
  lua_settop(L, 5);
  if (strlen(host) != len) host = "";   /* embedded zero: a bad name */
  lrequest *q = (lrequest *)lua_newuserdatauv(L, sizeof *q, 3);
  q->req = NULL;
  q->owner = o;
  q->ref = LUA_NOREF;
  luaL_setmetatable(L, EVLUA_DNS_REQUEST);
  evlua_set_target(L, 6, 4);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 6, 3);
  evlua_anchor(L, 6, &q->ref);
  q->req = evlua_dns_resolve(o->r, host, family, on_resolved, q);
  if (q->req == NULL) {
    evlua_unanchor(L, &q->ref);
    return luaL_error(L, "not enough memory");
  }
  return 1;
}

/* resolver:info() -> { timeout, tries, servers, ndomains, max_wait,
** pending } | nil, "closed" */
static int l_resolver_info(lua_State *L) {
  lresolver *o = check_resolver(L, 1);
  if (o->r == NULL) return evlua_push_closed(L);
  evlua_dns_info info;
  char server[80];
  evlua_dns_get_info(o->r, &info);
  lua_createtable(L, 0, 6);
  lua_pushnumber(L, info.timeout);
  lua_setfield(L, -2, "timeout");
  lua_pushinteger(L, info.tries);
  lua_setfield(L, -2, "tries");
  lua_pushinteger(L, info.ndomains);
  lua_setfield(L, -2, "ndomains");
  lua_pushnumber(L, info.max_wait);
  lua_setfield(L, -2, "max_wait");
  lua_pushinteger(L, info.pending);
  lua_setfield(L, -2, "pending");
  lua_createtable(L, info.nservers, 0);
  for (int i = 0; evlua_dns_server(o->r, i, server, sizeof server) == 0; i++) {
    lua_pushstring(L, server);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "servers");
  return 1;
}

/* resolver:close(): idempotent; pending requests are dropped silently
** (their targets are not called), so callers wake their own waiters. */
static int l_resolver_close(lua_State *L) {
  lresolver *o = check_resolver(L, 1);
  if (o->r != NULL) {
    evlua_dns *r = o->r;
    o->r = NULL;
    o->closing = 1;
    o->L = L;
    evlua_dns_destroy(r);
  }
  return 0;
}

static int l_resolver_tostring(lua_State *L) {
  lresolver *o = check_resolver(L, 1);
  lua_pushfstring(L, "evlua.dns.resolver (%p%s)", (void *)o,
                  o->r == NULL ? ", closed" : "");
  return 1;
}

/* core.dns_numeric(host) -> canonical address, "inet"|"inet6" | nil */
static int l_numeric(lua_State *L) {
  char addr[EVLUA_DNS_ADDRLEN];
  size_t len;
  const char *host = luaL_checklstring(L, 1, &len);
  int family = strlen(host) == len ? evlua_dns_numeric(host, addr) : 0;
  if (family == 0) return 0;
  lua_pushstring(L, addr);
  lua_pushstring(L, family == AF_INET ? "inet" : "inet6");
  return 2;
}

void evlua_open_dns(lua_State *L) {
  static const luaL_Reg resolver_methods[] = {
    { "resolve", l_resolver_resolve },
    { "info", l_resolver_info },
    { "close", l_resolver_close },
    { NULL, NULL }
  };
  static const luaL_Reg resolver_mt[] = {
    { "__gc", l_resolver_close },
    { "__close", l_resolver_close },
    { "__tostring", l_resolver_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg request_methods[] = {
    { "cancel", l_request_cancel },
    { "pending", l_request_pending },
    { NULL, NULL }
  };
  static const luaL_Reg request_mt[] = {
    { "__gc", l_request_cancel },
    { "__close", l_request_cancel },
    { "__tostring", l_request_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "dns_resolver", l_resolver_new },
    { "dns_numeric", l_numeric },
    { NULL, NULL }
  };
  resolver_meta = evlua_new_class(L, EVLUA_DNS_RESOLVER, resolver_mt,
                                  resolver_methods);
  request_meta = evlua_new_class(L, EVLUA_DNS_REQUEST, request_mt,
                                 request_methods);
  luaL_setfuncs(L, funcs, 0);   /* into the core table below */
}
