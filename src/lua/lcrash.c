/*
** lcrash.c - tracebacks on crashes: on SIGSEGV, SIGBUS, SIGFPE and SIGABRT
** write the Lua traceback of the running coroutine and the C backtrace to
** stderr, then die by the same signal (so core dumps still happen).
**
** Everything the handler does is async-signal-safe, or as close as a
** crash allows: write(2) only, numbers formatted by hand, no malloc. The
** Lua stack is walked with lua_getstack and lua_getinfo("Sln"): for those
** options Lua only reads the CallInfo list and the function prototypes
** (short_src is a buffer inside lua_Debug, names point into existing
** strings); it allocates nothing, so a corrupted heap does not stop the
** report. The C backtrace comes from backtrace() and
** backtrace_symbols_fd(), which writes straight to the fd; backtrace() is
** called once at install time so that libgcc's unwinder is loaded then,
** not from the handler (dlopen is not safe there).
**
** The handler runs on an alternate stack, so a C stack overflow is
** reported too. It then puts back the action it replaced (the default
** one, or a sanitizer's: ASan reports after us) and lets the signal
** happen again: a fault returns to the faulting instruction, which
** faults again; a sent signal (kill, abort's raise) is raised again.
*/
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime.h"

static const int crash_signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGABRT };
#define CRASH_SIGNAL_COUNT (sizeof crash_signals / sizeof crash_signals[0])

/* The actions replaced, in the order of crash_signals. */
static struct sigaction previous_actions[CRASH_SIGNAL_COUNT];

/* The handler's stack: big enough for lua_getinfo and the unwinder. */
#define CRASH_STACK_SIZE (64 * 1024)
static char crash_stack[CRASH_STACK_SIZE];

#define MAX_C_FRAMES 64
#define MAX_LUA_FRAMES 40   /* then the innermost and outermost ten */

static volatile sig_atomic_t handling;   /* a second crash: no report */

/* Output, write(2) only ================================================ */

static void put(const char *s) {
  size_t len = strlen(s);
  while (len > 0) {
    ssize_t n = write(STDERR_FILENO, s, len);
    if (n <= 0) return;   /* nothing better to do in a crash */
    s += n;
    len -= (size_t)n;
  }
}

static void put_long(long v) {
  char digits[24];
  int i = (int)sizeof digits - 1;
  unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
  digits[i] = '\0';
  do {
    digits[--i] = (char)('0' + u % 10);
    u /= 10;
  } while (u > 0);
  if (v < 0) digits[--i] = '-';
  put(digits + i);
}

static const char *signal_title(int sig) {
  switch (sig) {
  case SIGSEGV: return "SIGSEGV (segmentation fault)";
  case SIGBUS: return "SIGBUS (bus error)";
  case SIGFPE: return "SIGFPE (arithmetic exception)";
  case SIGABRT: return "SIGABRT (aborted)";
  default: return "a fatal signal";
  }
}

/* The Lua traceback ==================================================== */

/* One line per frame, in the shape of Lua's own tracebacks:
** "\tfile:line: in function 'name'". */
static void put_lua_frame(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "Sln", ar)) {
    put("\t?\n");
    return;
  }
  put("\t");
  put(ar->short_src);
  if (ar->currentline > 0) {
    put(":");
    put_long(ar->currentline);
  }
  put(": in ");
  if (ar->name != NULL) {
    put(ar->namewhat[0] != '\0' ? ar->namewhat : "function");
    put(" '");
    put(ar->name);
    put("'\n");
  } else if (ar->what[0] == 'm') {
    put("main chunk\n");
  } else if (ar->what[0] == 'C') {
    put("a C function\n");
  } else {
    put("function <");
    put(ar->short_src);
    put(":");
    put_long(ar->linedefined);
    put(">\n");
  }
}

static int stack_depth(lua_State *L) {
  lua_Debug ar;
  int depth = 0;
  while (lua_getstack(L, depth, &ar)) depth++;
  return depth;
}

static void put_lua_traceback(lua_State *L) {
  lua_Debug ar;
  int depth = stack_depth(L);
  put("Lua traceback of the running coroutine:\n");
  for (int level = 0; lua_getstack(L, level, &ar); level++) {
    if (depth > MAX_LUA_FRAMES && level == MAX_LUA_FRAMES / 4) {
      put("\t...\t(skipping ");
      put_long(depth - MAX_LUA_FRAMES / 2);
      put(" levels)\n");
      level = depth - MAX_LUA_FRAMES / 4 - 1;
      continue;
    }
    put_lua_frame(L, &ar);
  }
}

/* The handler ========================================================== */

static int signal_index(int sig) {
  for (size_t i = 0; i < CRASH_SIGNAL_COUNT; i++)
    if (crash_signals[i] == sig) return (int)i;
  return -1;
}

static void report(int sig) {
  put("\nevlua: fatal signal ");
  put(signal_title(sig));
  put(", pid ");
  put_long((long)getpid());
  put("\n");
  lua_State *L = evlua_running_thread();
  if (L != NULL) put_lua_traceback(L);
  else put("no Lua code was running (the loop was idle)\n");
  void *frames[MAX_C_FRAMES];
  int n = backtrace(frames, MAX_C_FRAMES);
  put("C backtrace:\n");
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
}

static void on_crash_signal(int sig, siginfo_t *info, void *context) {
  (void)context;
  int saved_errno = errno;
  if (!handling) {
    handling = 1;
    report(sig);
  }
  /* Put the replaced action back and let the signal happen again. */
  int i = signal_index(sig);
  if (i >= 0) sigaction(sig, &previous_actions[i], NULL);
  else signal(sig, SIG_DFL);
  errno = saved_errno;
  /* A fault (si_code > 0, from the kernel) repeats when we return; a
  ** sent signal does not, and stays pending until we return. */
  if (info == NULL || info->si_code <= 0) raise(sig);
}

void evlua_crash_install(lua_State *L) {
  (void)L;
  void *warm_up[2];
  (void)backtrace(warm_up, 2);   /* loads libgcc now, not in a crash */
  stack_t ss;
  memset(&ss, 0, sizeof ss);
  ss.ss_sp = crash_stack;
  ss.ss_size = sizeof crash_stack;
  if (sigaltstack(&ss, NULL) != 0) return;   /* no report, default death */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_crash_signal;
  /* SA_RESETHAND: a crash inside the handler kills at once */
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < CRASH_SIGNAL_COUNT; i++)
    sigaction(crash_signals[i], &sa, &previous_actions[i]);
}

/* The test-only hook =================================================== */

/* Each of these crashes for real (no raise()), as a bug in C would. */

static void fault_segv(void) {
  volatile int *volatile nowhere = NULL;
  *nowhere = 1;
}

/* Integer division by zero traps on x86 (SIGFPE); UBSan would report it
** first and abort instead, which is not what this test is about. */
__attribute__((no_sanitize("undefined")))
static void fault_fpe(void) {
  volatile int one = 1, zero = 0;   /* unknown values: a real idiv */
  volatile int result = one / zero;
  (void)result;
}

/* A page mapped past the end of an empty file: touching it is SIGBUS. */
static void fault_bus(void) {
  char path[] = "/tmp/evlua-crash-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return;
  unlink(path);
  volatile char *page = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (page == MAP_FAILED) return;
  (void)page[0];
}

/* Unbounded C recursion: the stack overflows (the handler runs on its
** alternate stack). The volatile depth keeps the compiler from seeing
** that it never ends. */
static volatile long recursion_limit = -1;

static long overflow(long depth) {
  volatile char frame[256];
  frame[0] = (char)depth;
  if (depth == recursion_limit) return frame[0];
  return overflow(depth + 1) + frame[0];
}

/* core.crash_for_test(kind): crash the process; kind is "segv", "fpe",
** "bus", "abort" or "stack" (a C stack overflow). Only there when
** EVLUA_TEST_CRASH=1 was set at startup. */
static int l_crash_for_test(lua_State *L) {
  static const char *const kinds[] = {
    "segv", "fpe", "bus", "abort", "stack", NULL
  };
  switch (luaL_checkoption(L, 1, NULL, kinds)) {
  case 0: fault_segv(); break;
  case 1: fault_fpe(); break;
  case 2: fault_bus(); break;
  case 3: abort();
  default: lua_pushinteger(L, overflow(0)); break;
  }
  return luaL_error(L, "crash_for_test: %s did not crash", lua_tostring(L, 1));
}

void evlua_open_crash(lua_State *L) {
  static const luaL_Reg test_funcs[] = {
    { "crash_for_test", l_crash_for_test },
    { NULL, NULL }
  };
  const char *on = getenv("EVLUA_TEST_CRASH");
  if (on != NULL && strcmp(on, "1") == 0)
    luaL_setfuncs(L, test_funcs, 0);   /* into the core table */
}
