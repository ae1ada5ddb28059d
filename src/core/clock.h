/*
** clock.h - the loop's time, made current when it has gone stale.
*/
#ifndef EVLUA_CLOCK_H
#define EVLUA_CLOCK_H

#include <ev.h>

/* The loop's cached time (ev_now), refreshed first when it has fallen
** behind the real time by more than about a millisecond: Lua code that
** blocked (os.execute, a long computation) leaves libev's clock as it was
** when the iteration began, and a deadline or a timer started from that
** would end early by the time lost. The check reads the kernel's coarse
** clock (a few ns, no syscall); the refresh costs one clock read more and
** happens at most once per coarse tick. */
double evlua_clock_now(struct ev_loop *loop);

#endif
