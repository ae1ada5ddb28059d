/*
** loop_bench.c - the evlua loop benchmarks (bench/loop.lua) written
** against libev in plain C, as the baseline for ratios.
**   switches N K : K tasks re-queued through a ready queue drained in an
**                  ev_prepare (with an ev_idle so the poll does not block),
**                  N resumes in all: what event.sleep(0) does, minus Lua.
**   timers N     : N x (allocate, start, stop, free) of an ev_timer.
**   expiries N   : N one-shot timers due at once, each callback counted.
** Prints "name ops_per_second".
*/
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct ev_loop *loop;

/* switches ------------------------------------------------------------- */
static int *queue, *spare_queue;
static long queued, remaining;
static ev_prepare drain_w;
static ev_idle spin_w;

static void resume_task(int task) {
  if (--remaining > 0) queue[queued++] = task;   /* sleep(0) again */
}

static void on_drain(struct ev_loop *l, ev_prepare *w, int revents) {
  (void)w; (void)revents;
  int *q = queue;
  long n = queued;
  queue = spare_queue;
  spare_queue = q;
  queued = 0;
  for (long i = 0; i < n && remaining > 0; i++) resume_task(q[i]);
  if (queued == 0 || remaining <= 0) {
    ev_prepare_stop(l, &drain_w);
    ev_idle_stop(l, &spin_w);
  }
}

static void on_spin(struct ev_loop *l, ev_idle *w, int revents) {
  (void)l; (void)w; (void)revents;
}

static double bench_switches(long n, int k) {
  queue = calloc((size_t)k, sizeof *queue);
  spare_queue = calloc((size_t)k, sizeof *queue);
  for (int i = 0; i < k; i++) queue[i] = i;
  queued = k;
  remaining = n;
  ev_prepare_init(&drain_w, on_drain);
  ev_idle_init(&spin_w, on_spin);
  ev_prepare_start(loop, &drain_w);
  ev_idle_start(loop, &spin_w);
  double t0 = ev_time();
  ev_run(loop, 0);
  double dt = ev_time() - t0;
  free(queue);
  free(spare_queue);
  return (double)n / dt;
}

/* timers --------------------------------------------------------------- */
static void on_never(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l; (void)w; (void)revents;
  abort();
}

static double bench_timers(long n) {
  double t0 = ev_time();
  for (long i = 0; i < n; i++) {
    ev_timer *t = malloc(sizeof *t);
    ev_timer_init(t, on_never, 0.001, 0.);
    ev_timer_start(loop, t);
    ev_timer_stop(loop, t);
    free(t);
  }
  return (double)n / (ev_time() - t0);
}

/* expiries ------------------------------------------------------------- */
static long fired;

static void on_fire(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l; (void)revents;
  fired++;
  free(w);
}

static double bench_expiries(long n) {
  double t0 = ev_time();
  for (long i = 0; i < n; i++) {
    ev_timer *t = malloc(sizeof *t);
    ev_timer_init(t, on_fire, 0., 0.);
    ev_timer_start(loop, t);
  }
  ev_run(loop, 0);
  double dt = ev_time() - t0;
  if (fired != n) abort();
  return (double)n / dt;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  loop = ev_default_loop(0);
  printf("switches %.0f\n", bench_switches(2 * n, 1000));
  printf("timers %.0f\n", bench_timers(n));
  printf("expiries %.0f\n", bench_expiries(n / 5));
  return 0;
}
