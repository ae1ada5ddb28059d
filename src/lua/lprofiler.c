/*
** lprofiler.c - the sampling and exact profiler behind evlua.profiler
** (docs/profiler.md).
**
** Sampled mode: setitimer(ITIMER_PROF) sends SIGPROF every 1/hz s of
** process CPU time. The handler only asks linterrupt.c's one-shot hook
** for a sample (evlua_request_sample: an atomic and lua_sethook) or, when
** no Lua code runs, counts a sample "in C" (the loop, system calls). At
** the thread's next instruction, or at the return of the C function it
** was in, sample() walks the stack and adds one to its path in a trie.
**
** Exact mode: a call/return hook on every thread (linterrupt.c puts it on
** each thread as it is resumed) keeps a shadow stack per thread; time is
** each thread's own clock, which stops while the thread is suspended, so
** a parked coroutine's frames do not count the time it waited. A return
** adds the frame's exclusive time to its node in the same trie.
**
** Memory is bounded: frames and trie nodes are interned once (hash
** tables), a stack deeper than max_depth keeps max_depth frames, and
** past max_nodes new paths go to the node of their deepest known prefix.
** core.profiler_stop() hands the trie to Lua (evlua/profiler.lua builds
** the report) and frees it all; stopped, there is no timer and no hook.
*/
#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <zlib.h>

#include "linterrupt.h"
#include "runtime.h"

/* Frames ============================================================== */

/* A function seen on a stack: a Lua function by (source, linedefined), a
** C function by its address. */
typedef struct frame {
  const void *key;      /* source pointer or C function */
  int line;             /* linedefined; -1 for C */
  char *source;         /* the chunk name, for identity */
  char *short_src;      /* for display */
  char *name;           /* first name seen, or NULL */
  long long calls;      /* exact mode */
} frame;

/* Trie nodes: the root is node 0; node i > 0 is frame[i] under parent[i]. */
typedef struct profile {
  int active, mode_calls, max_depth, max_nodes, hz;
  frame *frames;
  int nframes, frames_cap;
  int *frame_slots, frame_slots_cap;        /* hash: slot -> frame + 1 */
  int *parent, *node_frame;
  long long *weight;
  int nnodes, nodes_cap;
  int *edge_slots, edge_slots_cap;          /* hash: slot -> node */
  long long truncated;                      /* samples past max_depth */
  long long overflowed;                     /* samples past max_nodes */
  int tag_ref;                              /* Lua: called per sample */
  int tick_ref;                             /* Lua: called wait_hz times/s */
  ev_timer tick;                            /* unreferenced: exit goes on */
  lua_State *L;                             /* the main thread */
  double started;                           /* ev_time() */
  int64_t cpu_started;                      /* process CPU time, ns */
  double idle, idle_since;                  /* seconds polling, in the loop */
  struct ev_loop *loop;
} profile;

static profile P;
static volatile sig_atomic_t c_samples, lua_requests, samples_taken;

#define FRAME_TRUNCATED (-1)   /* the marker frame, interned first */

static uint64_t hash_ptr(const void *p, int n) {
  uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15u;
  return h ^ ((uint64_t)(unsigned)n * 0xC2B2AE3D27D4EB4Fu) ^ (h >> 29);
}

static char *copy_string(const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s) + 1;
  char *c = malloc(n);
  if (c != NULL) memcpy(c, s, n);
  return c;
}

static int grow_array(void **array, int *cap, int need, size_t size) {
  if (need <= *cap) return 1;
  int n = *cap ? *cap * 2 : 256;
  while (n < need) n *= 2;
  void *p = realloc(*array, (size_t)n * size);
  if (p == NULL) return 0;
  *array = p;
  *cap = n;
  return 1;
}

/* An empty open-addressing table of n slots (a power of two), all -1. */
static int *new_slots(int n) {
  int *slots = malloc((size_t)n * sizeof *slots);
  if (slots != NULL) memset(slots, 0xff, (size_t)n * sizeof *slots);
  return slots;
}

static int frame_matches(const frame *f, const void *key, int line,
                         const char *source) {
  if (f->key != key || f->line != line) return 0;
  return source == NULL || f->source == NULL || strcmp(f->source, source) == 0;
}

static int rehash_frames(void) {
  int n = P.frame_slots_cap ? P.frame_slots_cap * 2 : 1024;
  int *slots = new_slots(n);
  if (slots == NULL) return 0;
  for (int i = 0; i < P.nframes; i++) {
    uint64_t h = hash_ptr(P.frames[i].key, P.frames[i].line);
    int s = (int)(h & (uint64_t)(n - 1));
    while (slots[s] >= 0) s = (s + 1) & (n - 1);
    slots[s] = i;
  }
  free(P.frame_slots);
  P.frame_slots = slots;
  P.frame_slots_cap = n;
  return 1;
}

/* The index of the frame (key, line), made on first sight; -1 when out of
** memory. */
static int intern_frame(const void *key, int line, const char *source,
                        const char *short_src, const char *name) {
  if (P.nframes * 2 >= P.frame_slots_cap && !rehash_frames()) return -1;
  int mask = P.frame_slots_cap - 1;
  int s = (int)(hash_ptr(key, line) & (uint64_t)mask);
  for (; P.frame_slots[s] >= 0; s = (s + 1) & mask) {
    frame *f = &P.frames[P.frame_slots[s]];
    if (frame_matches(f, key, line, source)) {
      if (f->name == NULL && name != NULL) f->name = copy_string(name);
      return P.frame_slots[s];
    }
  }
  if (!grow_array((void **)&P.frames, &P.frames_cap, P.nframes + 1,
                  sizeof *P.frames))
    return -1;
  frame *f = &P.frames[P.nframes];
  memset(f, 0, sizeof *f);
  f->key = key;
  f->line = line;
  f->source = copy_string(source);
  f->short_src = copy_string(short_src);
  f->name = copy_string(name);
  P.frame_slots[s] = P.nframes;
  return P.nframes++;
}

/* The frame of the function at ar (getinfo "Sn" done); for a C function
** its value is on top of L's stack ("f"). */
static int frame_of(lua_State *L, lua_Debug *ar) {
  if (ar->what[0] == 'C') {
    const void *fn = (const void *)lua_tocfunction(L, -1);
    if (fn == NULL) fn = lua_topointer(L, -1);
    return intern_frame(fn, -1, NULL, "[C]", ar->name);
  }
  return intern_frame(ar->source, ar->linedefined, ar->source, ar->short_src,
                      ar->name);
}

/* Trie ================================================================ */

static int rehash_edges(void) {
  int n = P.edge_slots_cap ? P.edge_slots_cap * 2 : 4096;
  int *slots = new_slots(n);
  if (slots == NULL) return 0;
  for (int i = 1; i < P.nnodes; i++) {
    uint64_t h = hash_ptr((void *)(uintptr_t)P.parent[i], P.node_frame[i]);
    int s = (int)(h & (uint64_t)(n - 1));
    while (slots[s] >= 0) s = (s + 1) & (n - 1);
    slots[s] = i;
  }
  free(P.edge_slots);
  P.edge_slots = slots;
  P.edge_slots_cap = n;
  return 1;
}

static int add_node(int parent, int frame_index) {
  int n = P.nnodes;
  int cap = P.nodes_cap;
  if (!grow_array((void **)&P.parent, &cap, n + 1, sizeof *P.parent))
    return -1;
  cap = P.nodes_cap;
  if (!grow_array((void **)&P.node_frame, &cap, n + 1, sizeof *P.node_frame))
    return -1;
  cap = P.nodes_cap;
  if (!grow_array((void **)&P.weight, &cap, n + 1, sizeof *P.weight))
    return -1;
  P.nodes_cap = cap;
  P.parent[n] = parent;
  P.node_frame[n] = frame_index;
  P.weight[n] = 0;
  return P.nnodes++;
}

/* The child of node parent for frame_index, made if new; past max_nodes
** (or out of memory) -1, and the caller keeps parent. */
static int child(int parent, int frame_index) {
  if (P.nnodes * 2 >= P.edge_slots_cap && !rehash_edges()) return -1;
  int mask = P.edge_slots_cap - 1;
  uint64_t h = hash_ptr((void *)(uintptr_t)parent, frame_index);
  int s = (int)(h & (uint64_t)mask);
  for (; P.edge_slots[s] >= 0; s = (s + 1) & mask) {
    int c = P.edge_slots[s];
    if (P.parent[c] == parent && P.node_frame[c] == frame_index) return c;
  }
  if (P.nnodes > P.max_nodes) return -1;   /* node 0 is not counted */
  int c = add_node(parent, frame_index);
  if (c >= 0) P.edge_slots[s] = c;
  return c;
}

/* Sampled mode ======================================================== */

#define MAX_DEPTH_LIMIT 1000

static void call_tag(lua_State *L) {
  if (P.tag_ref == LUA_NOREF) return;
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 3)) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, P.tag_ref);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) lua_settop(L, top);
}

/* Add one sample of L's stack (see linterrupt.h). */
static void sample(lua_State *L, lua_Debug *hook_ar) {
  (void)hook_ar;
  if (!P.active || P.mode_calls) return;
  samples_taken++;
  int frames[MAX_DEPTH_LIMIT];
  int depth = 0;
  lua_Debug ar;
  if (!lua_checkstack(L, 2)) return;
  for (int level = 0; depth < P.max_depth && lua_getstack(L, level, &ar);
       level++) {
    if (!lua_getinfo(L, "Snf", &ar)) break;
    int f = frame_of(L, &ar);
    lua_pop(L, 1);
    if (f < 0) return;
    frames[depth++] = f;
  }
  int node = 0;
  if (depth == P.max_depth && lua_getstack(L, depth, &ar)) {
    P.truncated++;   /* deeper than max_depth: the innermost frames stay */
    int c = child(0, 0);
    if (c >= 0) node = c;
  }
  for (int i = depth - 1; i >= 0; i--) {
    int c = child(node, frames[i]);
    if (c < 0) {
      P.overflowed++;
      break;
    }
    node = c;
  }
  P.weight[node]++;
  call_tag(L);
}

static void on_sigprof(int sig) {
  (void)sig;
  int saved = errno;
  if (evlua_request_sample())
    lua_requests++;
  else
    c_samples++;
  errno = saved;
}

static int set_timer(int hz) {
  struct itimerval it;
  memset(&it, 0, sizeof it);
  if (hz > 0) {
    it.it_interval.tv_sec = 0;
    it.it_interval.tv_usec = 1000000 / hz;
    it.it_value = it.it_interval;
  }
  return setitimer(ITIMER_PROF, &it, NULL);
}

static void install_sigprof(int on) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGUSR1);   /* one handler arms at a time */
  sigaddset(&sa.sa_mask, SIGINT);
  sa.sa_handler = on ? on_sigprof : SIG_IGN;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGPROF, &sa, NULL);
}

/* Exact mode ========================================================== */

/* One entry of a thread's shadow stack: its node, and the thread's clock
** when it was called and the time spent in its callees. */
typedef struct entry {
  int node, frame;
  int64_t start, in_callees;
} entry;

/* A thread's shadow stack and its own clock (it stops while the thread is
** suspended). */
typedef struct thread_rec {
  const lua_State *L;
  entry *stack;
  int depth, cap;
  int64_t clock, running_since;   /* ns; running_since 0 when stopped */
} thread_rec;

static thread_rec *threads;
static int nthreads, threads_cap;

static int64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now_ns(void) {
  return clock_ns(CLOCK_MONOTONIC);
}

static thread_rec *thread_of(const lua_State *L) {
  static int last;   /* consecutive events mostly come from one thread */
  if (last < nthreads && threads[last].L == L) return &threads[last];
  for (int i = 0; i < nthreads; i++)
    if (threads[i].L == L) return &threads[last = i];
  if (!grow_array((void **)&threads, &threads_cap, nthreads + 1,
                  sizeof *threads))
    return NULL;
  last = nthreads;
  thread_rec *t = &threads[nthreads++];
  memset(t, 0, sizeof *t);
  t->L = L;
  t->running_since = now_ns();
  return t;
}

static int64_t thread_clock(const thread_rec *t) {
  return t->clock + (t->running_since ? now_ns() - t->running_since : 0);
}

static void free_threads(void) {
  for (int i = 0; i < nthreads; i++) free(threads[i].stack);
  free(threads);
  threads = NULL;
  nthreads = threads_cap = 0;
}

static void push_entry(thread_rec *t, int frame_index, int64_t clock) {
  if (!grow_array((void **)&t->stack, &t->cap, t->depth + 1, sizeof *t->stack))
    return;
  int parent = t->depth > 0 ? t->stack[t->depth - 1].node : 0;
  int node = parent;
  if (t->depth >= P.max_depth) {
    /* too deep: its time goes to the marker under the last kept frame */
    if (t->depth == P.max_depth) P.truncated++;
    if (P.node_frame[parent] != 0) node = child(parent, 0);
    if (node < 0) node = parent;
  } else {
    node = child(parent, frame_index);
    if (node < 0) {
      P.overflowed++;
      node = parent;
    }
  }
  entry *e = &t->stack[t->depth++];
  e->node = node;
  e->frame = frame_index;
  e->start = clock;
  e->in_callees = 0;
}

static void pop_entry(thread_rec *t, int64_t clock) {
  entry *e = &t->stack[--t->depth];
  int64_t elapsed = clock - e->start;
  P.weight[e->node] += elapsed - e->in_callees;
  if (t->depth > 0) t->stack[t->depth - 1].in_callees += elapsed;
}

/* A return: pop up to the returning frame (frames an error unwound had
** no return event); a return with no matching entry started before the
** profiler and is ignored. */
static void on_return(thread_rec *t, int frame_index, int64_t clock) {
  int i = t->depth - 1;
  while (i >= 0 && t->stack[i].frame != frame_index) i--;
  if (i < 0) return;
  while (t->depth > i) pop_entry(t, clock);
}

static void call_hook(lua_State *L, lua_Debug *ar) {
  if (!P.active || !P.mode_calls) {   /* stale: the profiler stopped */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  thread_rec *t = thread_of(L);
  if (t == NULL || !lua_getinfo(L, "Snf", ar)) return;
  int f = frame_of(L, ar);
  lua_pop(L, 1);
  if (f < 0) return;
  int64_t clock = thread_clock(t);
  if (ar->event == LUA_HOOKRET) {
    on_return(t, f, clock);
    return;
  }
  if (ar->event == LUA_HOOKTAILCALL && t->depth > 0)
    pop_entry(t, clock);   /* the caller is gone: it ends here */
  P.frames[f].calls++;
  push_entry(t, f, clock);
}

/* linterrupt.c tells when a thread runs; a fresh start (a new or pooled
** coroutine beginning a function) forgets what an error left behind. */
static void on_thread_switch(lua_State *L, int entering) {
  if (!P.active || !P.mode_calls) return;
  thread_rec *t = thread_of(L);
  if (t == NULL) return;
  if (entering) {
    lua_Debug ar;
    if (lua_status(L) == LUA_OK && !lua_getstack(L, 0, &ar)) t->depth = 0;
    t->running_since = now_ns();
  } else if (t->running_since) {
    t->clock += now_ns() - t->running_since;
    t->running_since = 0;
  }
}

/* Idle time: the loop's release and acquire callbacks bracket its poll. */
static void on_loop_release(struct ev_loop *loop) EV_NOEXCEPT {
  (void)loop;
  P.idle_since = ev_time();
}

static void on_loop_acquire(struct ev_loop *loop) EV_NOEXCEPT {
  (void)loop;
  if (P.idle_since > 0) P.idle += ev_time() - P.idle_since;
  P.idle_since = 0;
}

/* The wait sampler's clock: tick() in Lua looks at the parked tasks. The
** timer does not keep the loop alive. */
static void on_tick(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)w;
  (void)revents;
  if (P.tick_ref == LUA_NOREF) return;
  lua_rawgeti(P.L, LUA_REGISTRYINDEX, P.tick_ref);
  evlua_pcall(P.L, 0, 0);
}

static void start_tick(int wait_hz) {
  double every = 1.0 / wait_hz;
  ev_timer_init(&P.tick, on_tick, every, every);
  ev_timer_start(P.loop, &P.tick);
  ev_unref(P.loop);
}

static void stop_tick(void) {
  if (!ev_is_active(&P.tick)) return;
  ev_ref(P.loop);   /* as start_tick took it */
  ev_timer_stop(P.loop, &P.tick);
}

static int optional_function(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return LUA_NOREF;
  luaL_checktype(L, idx, LUA_TFUNCTION);
  lua_pushvalue(L, idx);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

static void release_refs(lua_State *L) {
  luaL_unref(L, LUA_REGISTRYINDEX, P.tag_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, P.tick_ref);
  P.tag_ref = P.tick_ref = LUA_NOREF;
}

/* Start and stop ====================================================== */

static void free_profile(void) {
  for (int i = 0; i < P.nframes; i++) {
    free(P.frames[i].source);
    free(P.frames[i].short_src);
    free(P.frames[i].name);
  }
  free(P.frames);
  free(P.frame_slots);
  free(P.parent);
  free(P.node_frame);
  free(P.weight);
  free(P.edge_slots);
  free_threads();
  memset(&P, 0, sizeof P);
  P.tag_ref = P.tick_ref = LUA_NOREF;
}

static int int_option(lua_State *L, const char *name, int def, int lo, int hi) {
  lua_getfield(L, 1, name);
  int value = def;
  if (!lua_isnil(L, -1)) {
    int ok;
    lua_Integer n = lua_tointegerx(L, -1, &ok);
    if (!ok || n < lo || n > hi) {
      const char *msg = lua_pushfstring(L, "%s must be an integer from %d to %d",
                                        name, lo, hi);
      luaL_argerror(L, 1, msg);
    }
    value = (int)n;
  }
  lua_pop(L, 1);
  return value;
}

/* core.profiler_start({ mode = "samples" | "calls", hz =, max_depth =,
** max_nodes =, wait_hz = } [, tag [, tick]]) -> true | nil, "busy",
** "busy". tag() runs on the sampled thread after each sample
** (evlua.profiler counts samples per coroutine with it); tick() runs
** wait_hz times a second from the loop (it looks at the parked tasks). */
static int l_profiler_start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_getfield(L, 1, "mode");
  const char *mode = luaL_optstring(L, -1, "samples");
  int calls = strcmp(mode, "calls") == 0;
  if (!calls && strcmp(mode, "samples") != 0)
    luaL_argerror(L, 1, "mode must be \"samples\" or \"calls\"");
  lua_pop(L, 1);
  int hz = int_option(L, "hz", 1000, 1, 100000);
  int max_depth = int_option(L, "max_depth", 200, 1, MAX_DEPTH_LIMIT);
  int max_nodes = int_option(L, "max_nodes", 100000, 1, 100000000);
  int wait_hz = int_option(L, "wait_hz", 100, 1, 10000);
  if (P.active) return evlua_fail(L, "busy", "the profiler is already running");
  if (calls && lua_gethook(L) != NULL)
    return evlua_fail(L, "busy", "another hook (the debugger?) holds the slot");
  free_profile();
  P.mode_calls = calls;
  P.hz = hz;
  P.max_depth = max_depth;
  P.max_nodes = max_nodes;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  P.L = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (add_node(0, 0) != 0 || intern_frame(NULL, FRAME_TRUNCATED, NULL,
                                          "(truncated)", "(truncated)") != 0) {
    free_profile();
    return evlua_fail(L, "ENOMEM", "out of memory");
  }
  P.tag_ref = optional_function(L, 2);
  P.tick_ref = optional_function(L, 3);
  c_samples = lua_requests = samples_taken = 0;
  P.loop = evlua_runtime_get(L)->loop;
  P.started = ev_time();
  P.cpu_started = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
  P.active = 1;
  ev_set_loop_release_cb(P.loop, on_loop_release, on_loop_acquire);
  if (P.tick_ref != LUA_NOREF) start_tick(wait_hz);
  if (calls) {
    evlua_set_call_hook(L, call_hook, LUA_MASKCALL | LUA_MASKRET, on_thread_switch);
    return lua_pushboolean(L, 1), 1;
  }
  evlua_set_sampler(sample);
  install_sigprof(1);
  if (set_timer(hz) != 0) {
    int err = errno;
    install_sigprof(0);
    evlua_set_sampler(NULL);
    ev_set_loop_release_cb(P.loop, NULL, NULL);
    stop_tick();
    release_refs(L);
    P.active = 0;
    return evlua_fail_errno(L, err, "setitimer");
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void set_int(lua_State *L, const char *name, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, name);
}

static void set_number(lua_State *L, const char *name, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

static void set_string(lua_State *L, const char *name, const char *s) {
  if (s == NULL) return;
  lua_pushstring(L, s);
  lua_setfield(L, -2, name);
}

/* frames[i] = { name =, source =, line =, c = true?, calls = }, from 1 */
static void push_frames(lua_State *L) {
  lua_createtable(L, P.nframes, 0);
  for (int i = 0; i < P.nframes; i++) {
    const frame *f = &P.frames[i];
    lua_createtable(L, 0, 5);
    set_string(L, "name", f->name);
    set_string(L, "source", f->short_src);
    set_int(L, "line", f->line);
    if (f->line == -1) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "c");
    }
    if (i == 0) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "marker");
    }
    set_int(L, "calls", f->calls);
    lua_rawseti(L, -2, i + 1);
  }
}

/* nodes: parent[i], frame[i], weight[i] for nodes 1..n (0 is the root;
** frames are 1-based in Lua). */
static void push_nodes(lua_State *L) {
  const char *names[3] = { "parent", "frame", "weight" };
  for (int k = 0; k < 3; k++) {
    lua_createtable(L, P.nnodes, 0);
    for (int i = 1; i < P.nnodes; i++) {
      lua_Integer v = k == 0 ? P.parent[i] : k == 1 ? P.node_frame[i] + 1
                                                  : P.weight[i];
      lua_pushinteger(L, v);
      lua_rawseti(L, -2, i);
    }
    lua_setfield(L, -2, names[k]);
  }
}

static void stop_sources(void) {
  if (P.mode_calls) {
    /* the hook goes off this thread and the main one now; every other
    ** thread's hook clears itself at its next event */
    evlua_set_call_hook(P.L, NULL, 0, NULL);
  } else {
    set_timer(0);
    install_sigprof(0);
    evlua_set_sampler(NULL);
  }
  ev_set_loop_release_cb(P.loop, NULL, NULL);
  stop_tick();
  P.active = 0;
}

/* core.profiler_stop() -> { mode =, frames =, parent =, frame =, weight =,
** root =, c_samples =, requested =, taken =, truncated =, overflowed =,
** idle =, elapsed =, cpu = (seconds of process CPU time), hz =,
** max_depth =, max_nodes = } | nil, "not running" */
static int l_profiler_stop(lua_State *L) {
  if (!P.active) return evlua_fail(L, "not_running", "the profiler is not running");
  stop_sources();
  double elapsed = ev_time() - P.started;
  double cpu = (double)(clock_ns(CLOCK_PROCESS_CPUTIME_ID) - P.cpu_started) / 1e9;
  lua_createtable(L, 0, 16);
  lua_pushstring(L, P.mode_calls ? "calls" : "samples");
  lua_setfield(L, -2, "mode");
  push_frames(L);
  lua_setfield(L, -2, "frames");
  push_nodes(L);
  set_int(L, "root", P.weight[0]);
  set_int(L, "c_samples", c_samples);
  set_int(L, "requested", lua_requests);
  set_int(L, "taken", samples_taken);
  set_int(L, "truncated", P.truncated);
  set_int(L, "overflowed", P.overflowed);
  set_int(L, "hz", P.hz);
  set_int(L, "max_depth", P.max_depth);
  set_int(L, "max_nodes", P.max_nodes);
  set_number(L, "idle", P.idle);
  set_number(L, "elapsed", elapsed);
  set_number(L, "cpu", cpu);
  release_refs(L);
  free_profile();
  return 1;
}

/* core.profiler_running() -> boolean */
static int l_profiler_running(lua_State *L) {
  lua_pushboolean(L, P.active);
  return 1;
}

/* gzip ================================================================ */

/* core.gzip(s [, level]) -> the gzip file (RFC 1952) of s */
static int l_gzip(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int level = (int)luaL_optinteger(L, 2, Z_DEFAULT_COMPRESSION);
  luaL_argcheck(L, level >= -1 && level <= 9, 2, "level from -1 to 9 expected");
  z_stream z;
  memset(&z, 0, sizeof z);
  /* windowBits 15 + 16: a gzip header and trailer around the deflate */
  if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return evlua_fail(L, "ENOMEM", "gzip: out of memory");
  uLong bound = deflateBound(&z, (uLong)len);
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, bound);
  z.next_in = (Bytef *)(uintptr_t)s;
  z.avail_in = (uInt)len;
  z.next_out = out;
  z.avail_out = (uInt)bound;
  int rc = deflate(&z, Z_FINISH);
  size_t n = bound - z.avail_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return evlua_fail(L, "ENOMEM", "gzip: failed");
  luaL_pushresultsize(&b, n);
  return 1;
}

void evlua_open_profiler(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "profiler_start", l_profiler_start },
    { "profiler_stop", l_profiler_stop },
    { "profiler_running", l_profiler_running },
    { "gzip", l_gzip },
    { NULL, NULL }
  };
  P.tag_ref = P.tick_ref = LUA_NOREF;
  luaL_setfuncs(L, funcs, 0);   /* into the core table */
}
