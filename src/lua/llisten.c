/*
** llisten.c - TCP and unix listeners for Lua: one userdata embedding the
** accept watcher. Each accepted connection becomes a stream userdata
** handed to the target as f(listener, arg, stream).
*/
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lstream.h"
#include "net.h"
#include "runtime.h"

#define EVLUA_LISTENER "evlua.listener"
#define ACCEPTS_PER_EVENT 64
#define FD_RETRY_SECONDS 0.1

typedef struct llistener {
  ev_io w;
  ev_timer retry;      /* resumes accepting after running out of fds */
  int fd;
  int paused;          /* by the user */
  int tcp;             /* not a unix socket */
  int backlog;         /* as given to listen(2) */
  int ref;             /* registry anchor while open */
} llistener;

static const void *listener_meta;   /* for evlua_checkudata */

static llistener *check_listener(lua_State *L, int idx) {
  return (llistener *)evlua_checkudata(L, idx, listener_meta,
                                       EVLUA_LISTENER);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  llistener *l = container_of(w, llistener, retry);
  if (!l->paused && l->fd >= 0) ev_io_start(loop, &l->w);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  llistener *l = container_of(w, llistener, w);
  lua_State *L = evlua_runtime_of_loop(loop)->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->ref);   /* listener, kept meanwhile */
  int top = lua_gettop(L);
  for (int i = 0; i < ACCEPTS_PER_EVENT && l->fd >= 0 && !l->paused; i++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        /* Connections wait in the backlog until fds are free again. */
        ev_io_stop(loop, w);
        ev_timer_set(&l->retry, FD_RETRY_SECONDS, 0.);
        ev_timer_start(loop, &l->retry);
      }
      break;   /* EAGAIN, or an error of that one connection */
    }
    if (l->tcp) {   /* small replies must not wait for Nagle */
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    evlua_push_stream(L, fd, 0);
    evlua_deliver(L, top, 1);
  }
  lua_settop(L, top - 1);
}

/* The default backlog: the system's cap on accept queues (somaxconn), as
** Go does, so a burst of connections is not cut at an arbitrary 511 and
** left to SYN retries (a second each). Read once; 4096 (the kernel's
** default since 5.4) when it cannot be read. */
#define MAX_BACKLOG 65535
static int default_backlog(void) {
  static int cached;
  if (cached) return cached;
  int n = 0;
  FILE *f = fopen("/proc/sys/net/core/somaxconn", "r");
  if (f) {
    if (fscanf(f, "%d", &n) != 1) n = 0;
    fclose(f);
  }
  if (n <= 0) n = 4096;
  if (n > MAX_BACKLOG) n = MAX_BACKLOG;
  cached = n;
  return n;
}

/* core.listen(host, port, backlog, reuseport, fn [, arg]) -> listener |
** nil, err. host is numeric, "*" or "unix:/path"; backlog nil: the
** system's maximum. */
static int l_listen(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  lua_Integer backlog = luaL_optinteger(L, 3, default_backlog());
  int reuseport = lua_toboolean(L, 4);
  luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port out of range");
  luaL_argcheck(L, backlog >= 0 && backlog <= MAX_BACKLOG, 3, "backlog out of range");
  luaL_checktype(L, 5, LUA_TFUNCTION);
  evlua_addr addr;
  if (evlua_addr_parse(&addr, host, (int)port) != 0)
    return luaL_argerror(L, 1, "numeric address or unix:/path expected");
  llistener *l = (llistener *)lua_newuserdatauv(L, sizeof *l, 2);
  l->fd = -1;
  l->paused = 0;
  l->tcp = addr.ss.ss_family != AF_UNIX;
  l->backlog = (int)backlog;
  l->ref = LUA_NOREF;
  luaL_setmetatable(L, EVLUA_LISTENER);
  evlua_set_target(L, lua_gettop(L), 5);
  char err[256];
  l->fd = evlua_net_listen(&addr, (int)backlog, reuseport, err, sizeof err);
  if (l->fd < 0) return evlua_fail(L, evlua_errno_name(errno), "%s", err);
  ev_io_init(&l->w, on_accept, l->fd, EV_READ);
  ev_init(&l->retry, on_retry);
  ev_io_start(evlua_runtime_get(L)->loop, &l->w);
  evlua_anchor(L, -1, &l->ref);
  return 1;
}

/* listener:close(): stop accepting and release the port (idempotent) */
static int l_close(lua_State *L) {
  llistener *l = check_listener(L, 1);
  if (l->fd >= 0) {
    struct ev_loop *loop = evlua_runtime_get(L)->loop;
    ev_io_stop(loop, &l->w);
    ev_timer_stop(loop, &l->retry);
    close(l->fd);
    l->fd = -1;
  }
  evlua_unanchor(L, &l->ref);
  return 0;
}

/* listener:pause() / listener:resume(): stop or restart accepting; new
** connections wait in the kernel's backlog meanwhile */
static int l_pause(lua_State *L) {
  llistener *l = check_listener(L, 1);
  l->paused = 1;
  if (l->fd >= 0) ev_io_stop(evlua_runtime_get(L)->loop, &l->w);
  return 0;
}

static int l_resume(lua_State *L) {
  llistener *l = check_listener(L, 1);
  l->paused = 0;
  if (l->fd >= 0) ev_io_start(evlua_runtime_get(L)->loop, &l->w);
  return 0;
}

/* listener:addr() -> host, port (the bound port when 0 was asked) */
static int l_addr(lua_State *L) {
  llistener *l = check_listener(L, 1);
  evlua_addr addr;
  if (l->fd < 0 || evlua_net_sockname(l->fd, &addr) != 0) {
    return evlua_push_closed(L);
  }
  char host[128];
  int port = evlua_addr_format(&addr, host, sizeof host);
  lua_pushstring(L, host);
  lua_pushinteger(L, port);
  return 2;
}

/* listener:port() -> the bound port (0 for unix sockets) */
static int l_port(lua_State *L) {
  int n = l_addr(L);
  if (lua_isnil(L, -n)) return n;
  return 1;
}

/* listener:backlog() -> the length of its accept queue, as asked of
** listen(2) (the kernel caps it at somaxconn) */
static int l_backlog(lua_State *L) {
  lua_pushinteger(L, check_listener(L, 1)->backlog);
  return 1;
}

static int l_tostring(lua_State *L) {
  llistener *l = check_listener(L, 1);
  if (l->fd < 0) lua_pushliteral(L, "evlua.listener (closed)");
  else lua_pushfstring(L, "evlua.listener (fd %d)", l->fd);
  return 1;
}

void evlua_open_listener(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "close", l_close },
    { "pause", l_pause },
    { "resume", l_resume },
    { "addr", l_addr },
    { "port", l_port },
    { "backlog", l_backlog },
    { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", l_close },
    { "__close", l_close },
    { "__tostring", l_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  listener_meta = evlua_new_class(L, EVLUA_LISTENER, meta, methods);
  lua_pushcfunction(L, l_listen);
  lua_setfield(L, -2, "listen");
}
