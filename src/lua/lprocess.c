/*
** lprocess.c - child processes for Lua: one userdata embedding an
** evlua_process. The policy (argument checks, shell or argv, results) is
** lua/evlua/process.lua; this file moves the bytes and the events. When
** the process is done, the target is resumed (coroutine) or called as
** f(process, arg).
*/
#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "process.h"
#include "runtime.h"

#define EVLUA_PROCESS "evlua.process"

extern char **environ;
#define MAX_ARGS 4096

typedef struct lprocess {
  evlua_process p;
  int ref;     /* registry anchor while the child runs */
  int closed;  /* process:close() ran: its output buffers are freed */
} lprocess;

static const void *process_meta;   /* for evlua_checkudata */

static lprocess *check_process(lua_State *L, int idx) {
  return (lprocess *)evlua_checkudata(L, idx, process_meta, EVLUA_PROCESS);
}

static void on_done(evlua_process *p) {
  lprocess *lp = container_of(p, lprocess, p);
  lua_State *L = ((evlua_runtime *)ev_userdata(p->loop))->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lp->ref);   /* kept on the stack */
  evlua_unanchor(L, &lp->ref);
  evlua_deliver(L, -1, 0);
  lua_pop(L, 1);
}

/* A NULL-terminated array of the strings in the list at table field
** `name` of spec (at idx), allocated as a userdata left on the stack
** (the strings stay alive in the spec table). NULL if the field is nil. */
static char **string_list(lua_State *L, int idx, const char *name) {
  if (lua_getfield(L, idx, name) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushnil(L);   /* placeholder, keeps the stack shape */
    return NULL;
  }
  luaL_argcheck(L, lua_istable(L, -1), 1, "string lists expected");
  lua_Integer n = luaL_len(L, -1);
  luaL_argcheck(L, n >= 0 && n < MAX_ARGS, 1, "too many strings");
  char **list = (char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    /* strings only: lua_tostring would turn a number into a new string
    ** that nothing keeps alive once popped */
    luaL_argcheck(L, lua_geti(L, -2, i) == LUA_TSTRING, 1,
                  "string lists expected");
    /* posix_spawn takes char *[] but never writes; the list table keeps
    ** the string alive */
    list[i - 1] = (char *)(uintptr_t)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  list[n] = NULL;
  lua_remove(L, -2);   /* the list table stays in the spec table */
  return list;
}

/* Raise for the spec field `name` (the value on top): bad argument #1,
** naming the field (luaL_check* on the field's stack slot would name
** argument #-1). */
static int field_error(lua_State *L, const char *name, const char *want) {
  return luaL_argerror(L, 1, lua_pushfstring(L, "%s: %s expected, got %s",
                                             name, want,
                                             luaL_typename(L, -1)));
}

static int io_mode(lua_State *L, int idx, const char *name, int dflt) {
  static const char *const modes[] = { "inherit", "capture", "null",
                                       "stdout", NULL };
  int mode = dflt;
  if (lua_getfield(L, idx, name) != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING) field_error(L, name, "mode");
    const char *s = lua_tostring(L, -1);
    for (mode = 0; modes[mode] && strcmp(modes[mode], s) != 0; mode++) {}
    if (modes[mode] == NULL)
      luaL_argerror(L, 1, lua_pushfstring(L, "%s: invalid mode '%s'",
                                          name, s));
  }
  lua_pop(L, 1);
  return mode;
}

static double number_field(lua_State *L, int idx, const char *name,
                           double dflt) {
  double v = dflt;
  if (lua_getfield(L, idx, name) != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TNUMBER) field_error(L, name, "number");
    v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* A string field, or NULL if nil. Strings only: a number converted here
** would be a new string that nothing keeps alive once popped. */
static const char *string_field(lua_State *L, int idx, const char *name,
                                size_t *len) {
  const char *s = NULL;
  if (lua_getfield(L, idx, name) != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING) field_error(L, name, "string");
    s = lua_tolstring(L, -1, len);
  }
  lua_pop(L, 1);   /* still referenced by the spec table */
  return s;
}

/* core.process_spawn(spec, target [, arg]) -> process | nil, err
** spec: { file =, argv = {...}, env = {"K=V"...} | nil, cwd =, stdout =,
** stderr = ("inherit"|"capture"|"null"|"stdout"), input =, max_output =,
** timeout =, kill_after = } */
static int l_process_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  evlua_process_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.file = string_field(L, 1, "file", NULL);
  luaL_argcheck(L, spec.file != NULL, 1, "file expected");
  spec.cwd = string_field(L, 1, "cwd", NULL);
  spec.input = string_field(L, 1, "input", &spec.input_len);
  spec.stdout_mode = io_mode(L, 1, "stdout", EVLUA_PROCESS_CAPTURE);
  spec.stderr_mode = io_mode(L, 1, "stderr", EVLUA_PROCESS_INHERIT);
  luaL_argcheck(L, spec.stdout_mode != EVLUA_PROCESS_TO_STDOUT, 1,
                "stdout cannot go to stdout");
  double max_output = number_field(L, 1, "max_output", 64.0 * 1024 * 1024);
  luaL_argcheck(L, max_output >= 0 && max_output < 1e15, 1,
                "max_output out of range");
  spec.max_output = (size_t)max_output;
  spec.timeout = number_field(L, 1, "timeout", 0);
  spec.kill_after = number_field(L, 1, "kill_after", 5);
  luaL_argcheck(L, spec.timeout >= 0 && spec.kill_after > 0, 1,
                "timeouts must be positive");
  spec.argv = string_list(L, 1, "argv");
  luaL_argcheck(L, spec.argv != NULL && spec.argv[0] != NULL, 1,
                "argv expected");
  spec.envp = string_list(L, 1, "env");   /* both stay on the stack */

  lprocess *lp = (lprocess *)lua_newuserdatauv(L, sizeof *lp, 2);
  lp->ref = LUA_NOREF;
  lp->closed = 0;
  evlua_process_init(&lp->p, evlua_runtime_get(L)->loop, on_done, NULL);
  luaL_setmetatable(L, EVLUA_PROCESS);
  evlua_set_target(L, lua_gettop(L), 2);
  char err[512];
  if (evlua_process_spawn(&lp->p, &spec, err, sizeof err) != 0)
    return evlua_fail(L, evlua_errno_name(errno), "%s", err);
  evlua_anchor(L, -1, &lp->ref);
  return 1;
}

/* process:pid() -> the child's pid (also its process group id) */
static int l_pid(lua_State *L) {
  lua_pushinteger(L, check_process(L, 1)->p.pid);
  return 1;
}

/* process:running() -> true until the process is done */
static int l_running(lua_State *L) {
  lua_pushboolean(L, check_process(L, 1)->p.running);
  return 1;
}

/* process:signal(signum) -> true | nil, err (to the whole group) */
static int l_signal(lua_State *L) {
  lprocess *lp = check_process(L, 1);
  if (lp->closed) return evlua_push_closed(L);
  int sig = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, sig >= 0 && sig < NSIG, 2, "invalid signal");
  if (evlua_process_signal(&lp->p, sig) != 0) {
    if (errno == ESRCH) return evlua_fail(L, "exited", "exited");
    return evlua_fail_errno(L, errno, NULL);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* process:terminate(): SIGTERM now, SIGKILL after kill_after seconds */
static int l_terminate(lua_State *L) {
  evlua_process_terminate(&check_process(L, 1)->p);
  return 0;
}

static void push_buffer(lua_State *L, const evlua_buffer *b) {
  lua_pushlstring(L, evlua_buffer_len(b) ? evlua_buffer_peek(b) : "",
                  evlua_buffer_len(b));
}

/* process:result() -> stdout, stderr, code, signal, why
** code: exit code or nil; signal: number or nil; why: nil, "timeout" or
** "output too large". Only once done (raises before). */
static int l_result(lua_State *L) {
  lprocess *lp = check_process(L, 1);
  evlua_process *p = &lp->p;
  if (lp->closed) return evlua_push_closed(L);
  if (p->running || !p->exited)
    return luaL_error(L, "process is still running");
  push_buffer(L, &p->out);
  push_buffer(L, &p->err);
  int code = evlua_process_exit_code(p), sig = evlua_process_exit_signal(p);
  if (code >= 0) lua_pushinteger(L, code); else lua_pushnil(L);
  if (sig > 0) lua_pushinteger(L, sig); else lua_pushnil(L);
  if (p->too_large) lua_pushliteral(L, "output too large");
  else if (p->timed_out) lua_pushliteral(L, "timeout");
  else lua_pushnil(L);
  return 5;
}

/* process:close(): release everything; a running child gets SIGTERM.
** Idempotent; also __gc and __close. */
static int l_close(lua_State *L) {
  lprocess *lp = check_process(L, 1);
  evlua_process_release(&lp->p);
  lp->closed = 1;
  evlua_unanchor(L, &lp->ref);
  return 0;
}

static int l_tostring(lua_State *L) {
  lprocess *lp = check_process(L, 1);
  lua_pushfstring(L, "evlua.process (pid %d%s)", (int)lp->p.pid,
                  lp->closed ? ", closed" :
                  lp->p.running ? ", running" : "");
  return 1;
}

/* core.signal_number(name) -> number | nil ("TERM", "SIGTERM", "9") */
static const struct { const char *name; int num; } signal_names[] = {
  { "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT },
  { "ILL", SIGILL }, { "ABRT", SIGABRT }, { "FPE", SIGFPE },
  { "KILL", SIGKILL }, { "SEGV", SIGSEGV }, { "PIPE", SIGPIPE },
  { "ALRM", SIGALRM }, { "TERM", SIGTERM }, { "USR1", SIGUSR1 },
  { "USR2", SIGUSR2 }, { "CHLD", SIGCHLD }, { "CONT", SIGCONT },
  { "STOP", SIGSTOP }, { "TSTP", SIGTSTP }, { "TTIN", SIGTTIN },
  { "TTOU", SIGTTOU }, { "WINCH", SIGWINCH }, { "BUS", SIGBUS },
  { "XCPU", SIGXCPU }, { "XFSZ", SIGXFSZ }, { "PROF", SIGPROF },
  { "VTALRM", SIGVTALRM }, { "SYS", SIGSYS }, { "TRAP", SIGTRAP },
  { "URG", SIGURG }, { "IO", SIGIO }, { "PWR", SIGPWR },
};
#define NSIGNAL_NAMES (sizeof signal_names / sizeof signal_names[0])

static int l_signal_number(lua_State *L) {
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n > 0 && n < NSIG) {
      lua_pushinteger(L, n);
      return 1;
    }
    return 0;
  }
  const char *name = luaL_checkstring(L, 1);
  if (strncmp(name, "SIG", 3) == 0) name += 3;
  for (size_t i = 0; i < NSIGNAL_NAMES; i++)
    if (strcmp(name, signal_names[i].name) == 0) {
      lua_pushinteger(L, signal_names[i].num);
      return 1;
    }
  return 0;
}

/* core.signal_name(number) -> "TERM" | nil */
static int l_signal_name(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  for (size_t i = 0; i < NSIGNAL_NAMES; i++)
    if (signal_names[i].num == n) {
      lua_pushstring(L, signal_names[i].name);
      return 1;
    }
  return 0;
}

/* core.getpid() -> this process's pid */
static int l_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* core.environ() -> { name = value } of this process's environment */
static int l_environ(lua_State *L) {
  lua_newtable(L);
  for (char **e = environ; *e; e++) {
    const char *eq = strchr(*e, '=');
    if (eq == NULL) continue;
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    lua_pushstring(L, eq + 1);
    lua_rawset(L, -3);
  }
  return 1;
}

void evlua_open_process(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "pid", l_pid },
    { "running", l_running },
    { "signal", l_signal },
    { "terminate", l_terminate },
    { "result", l_result },
    { "close", l_close },
    { NULL, NULL }
  };
  static const luaL_Reg meta[] = {
    { "__gc", l_close },
    { "__close", l_close },
    { "__tostring", l_tostring },
    { "__index", NULL },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "process_spawn", l_process_spawn },
    { "signal_number", l_signal_number },
    { "signal_name", l_signal_name },
    { "environ", l_environ },
    { "getpid", l_getpid },
    { NULL, NULL }
  };
  process_meta = evlua_new_class(L, EVLUA_PROCESS, meta, methods);
  luaL_setfuncs(L, funcs, 0);   /* into the core table below */
}
