/*
** clock.c - the loop's time, made current when it has gone stale (see
** clock.h). Deadlines count from it: libev's cached ev_now can lag by
** however long a blocking step took.
*/
#include "clock.h"

#include <time.h>

/* How far ev_now may lag the coarse clock before it is refreshed:
** above the drift between libev's realtime estimate and the kernel's
** clock, well below any timeout worth setting. */
#define STALE_AFTER 1e-3

#ifdef CLOCK_REALTIME_COARSE
#define CHEAP_CLOCK CLOCK_REALTIME_COARSE   /* vDSO, no hardware read */
#else
#define CHEAP_CLOCK CLOCK_REALTIME
#endif

double evlua_clock_now(struct ev_loop *loop) {
  struct timespec ts;
  double now = ev_now(loop);
  clock_gettime(CHEAP_CLOCK, &ts);
  /* ev_now is realtime too (libev's monotonic time plus an offset). A
  ** coarse reading lags the real time by up to one tick, so this sees a
  ** staleness of a tick or more. */
  if ((double)ts.tv_sec + ts.tv_nsec * 1e-9 - now > STALE_AFTER) {
    ev_now_update(loop);
    now = ev_now(loop);
  }
  return now;
}
