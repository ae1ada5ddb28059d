/*
** linterrupt.h - the users of a thread's hook slot besides the interrupt
** (linterrupt.c explains the sharing): the profiler of lprofiler.c.
*/
#ifndef EVLUA_LINTERRUPT_H
#define EVLUA_LINTERRUPT_H

#include <lua.h>

/* Called from the one-shot hook, on the thread that was running when
** evlua_request_sample() was called, at its next instruction (or at the
** return of the C function it was in). */
typedef void (*evlua_sampler)(lua_State *L, lua_Debug *ar);
void evlua_set_sampler(evlua_sampler fn);

/* Async-signal-safe: a sample at the running thread's next instruction.
** Returns 0 when no Lua code runs (the loop is in C). */
int evlua_request_sample(void);

/* on_switch(L, 1) before L starts or resumes, (L, 0) after it yields or
** returns. */
typedef void (*evlua_switch_fn)(lua_State *L, int entering);

/* The exact profiler's hook (NULL: none) goes on every thread whose slot
** is empty: L and the main thread now, the others at their next resume.
** A thread holding a previous call hook keeps it until that hook sees it
** is stale and clears itself. */
void evlua_set_call_hook(lua_State *L, lua_Hook hook, int mask,
                         evlua_switch_fn switch_fn);

#endif
