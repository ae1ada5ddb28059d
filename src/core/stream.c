/*
** stream.c - a buffered, non-blocking byte stream driven by libev.
** See stream.h for the reading, writing and closing rules.
*/
#include "stream.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "net.h"
#include "util.h"

/* Output corking: a small write to a stream with nothing queued is only
** appended to its queue, and the stream joins its loop's corked list
** (loop.h); the loop's owner writes the queues once per loop iteration
** with evlua_stream_flush_corked, after the Lua ready queue ran, so the
** messages of one iteration share one write(2). Once the queue would
** reach CORK_MAX bytes it goes out at once: a batch of small messages
** (64 pipelined calls, replies to 50 clients' commands) starts moving
** while the rest of the iteration's work goes on, and the peer works on
** its first part meanwhile. With 16 KiB, two evlua processes trading
** batches of 64 rpc calls took turns, each idle half the time; with 2 KiB
** both stay busy, for 1.3-1.7x the calls/s (bench/README.md). */
#define CORK_MAX EVLUA_STREAM_CORK_MAX

static void flush_corked(evlua_stream *s);

static void uncork(evlua_stream *s) {
  if (!s->corked) return;
  for (evlua_stream **p = &s->loop_state->corked; *p; p = &(*p)->next_corked)
    if (*p == s) {
      *p = s->next_corked;
      break;
    }
  s->corked = 0;
  s->next_corked = NULL;
}

/* Activity and progress are stamped with a current time: after a
** blocking step, ev_now would date them in the past and the idle or send
** timeout would end a busy connection early. */
static void touch(evlua_stream *s) {
  s->last_activity = evlua_clock_now(evlua_stream_loop(s));
}

/* The fd's one io watcher watches the events the stream wants: EV_READ
** while reading, EV_WRITE while output waits (and while connecting or
** closing, and to report a write error from the loop). It is active
** exactly when it watches something. (One watcher rather than one per
** direction: 48 bytes less per connection.) */
static int watching(const evlua_stream *s, int ev) {
  return (s->io.events & ev) != 0;
}

static void watch(evlua_stream *s, int ev, int on) {
  int events = s->io.events & (EV_READ | EV_WRITE);
  int want = on ? events | ev : events & ~ev;
  if (want == events) return;
  ev_io_stop(evlua_stream_loop(s), &s->io);
  ev_io_modify(&s->io, want);
  if (want) ev_io_start(evlua_stream_loop(s), &s->io);
}

static void stop_all(evlua_stream *s) {
  if (!s->is_transport) {
    ev_io_stop(evlua_stream_loop(s), &s->io);
    ev_io_modify(&s->io, 0);
  }
  ev_timer_stop(evlua_stream_loop(s), &s->timer);
  s->stalled = 0;
}

/* Stop everything and release the fd (or let the transport go); input
** stays readable. */
static void release_fd(evlua_stream *s) {
  uncork(s);
  if (s->state == EVLUA_STREAM_CLOSED) return;
  stop_all(s);
  if (s->is_transport) {
    s->state = EVLUA_STREAM_CLOSED;   /* first: close may call nothing back */
    s->transport->close(s);
    s->transport_data = NULL;
  } else {
    if (s->state == EVLUA_STREAM_CLOSING) shutdown(s->fd, SHUT_WR);
    close(s->fd);
  }
  s->fd = -1;
  s->state = EVLUA_STREAM_CLOSED;
  evlua_buffer_free(&s->out);
  evlua_buffer_shrink(&s->in);
}

/* Release the fd and report: the end of every close path from the loop. */
static void close_now(evlua_stream *s, const char *reason) {
  if (s->state == EVLUA_STREAM_CLOSED) return;
  release_fd(s);
  s->handler->on_close(s, reason);
}

static const char *errno_reason(int e) {
  return evlua_net_strerror(e);
}

/* The earliest deadline of the stream, on ev_now's clock, and the reason
** it closes with when that passes: 0 when it has none. The send timeout
** counts only while output waits (stalled) and some is still pending. */
static int next_deadline(evlua_stream *s, double *at, const char **reason) {
  int any = 0;
  if (s->state == EVLUA_STREAM_CLOSING) {
    *at = s->linger_end;
    *reason = s->close_reason;
    any = 1;
  } else if (s->state == EVLUA_STREAM_OPEN && s->idle_timeout > 0) {
    *at = s->last_activity + s->idle_timeout;
    *reason = "timeout";
    any = 1;
  }
  if (s->stalled && s->send_timeout > 0 && evlua_stream_pending(s) > 0) {
    double send_at = s->last_write + s->send_timeout;
    if (!any || send_at < *at) {
      *at = send_at;
      *reason = "send timeout";
      any = 1;
    }
  }
  return any;
}

/* (Re)start the timer at the earliest deadline, or stop it if none. */
static void arm_timer(evlua_stream *s) {
  double at;
  const char *reason;
  ev_timer_stop(evlua_stream_loop(s), &s->timer);
  if (!next_deadline(s, &at, &reason)) return;
  double left = at - ev_now(evlua_stream_loop(s));
  ev_timer_set(&s->timer, left > 0 ? left : 0., 0.);
  ev_timer_start(evlua_stream_loop(s), &s->timer);
}

/* A deadline may have passed. The deadlines are re-checked against the
** last activity and progress instead of restarting the timer on every
** read and write (libev's recommended way): the timer fires at or before
** the earliest, and re-arms for whatever is left. */
static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  evlua_stream *s = container_of(w, evlua_stream, timer);
  double at;
  const char *reason;
  if (!next_deadline(s, &at, &reason)) return;
  if (at <= ev_now(loop)) {
    close_now(s, reason);
    return;
  }
  arm_timer(s);
}

/* Bytes start waiting in the queue: the no-progress clock starts now and
** the timer is brought forward to the send deadline if it is later (the
** stall ends when the queue empties, so an idle stream has none). */
static void start_stall(evlua_stream *s) {
  s->last_write = evlua_clock_now(evlua_stream_loop(s));
  if (s->stalled || s->send_timeout <= 0) {
    s->stalled = 1;
    return;
  }
  s->stalled = 1;
  if (!ev_is_active(&s->timer) ||
      ev_timer_remaining(evlua_stream_loop(s), &s->timer) > s->send_timeout) {
    ev_timer_stop(evlua_stream_loop(s), &s->timer);
    ev_timer_set(&s->timer, s->send_timeout, 0.);
    ev_timer_start(evlua_stream_loop(s), &s->timer);
  }
}

/* The queue emptied: no send deadline; the timer stops unless another
** deadline needs it. */
static void end_stall(evlua_stream *s) {
  if (!s->stalled) return;
  s->stalled = 0;
  double at;
  const char *reason;
  if (!next_deadline(s, &at, &reason))
    ev_timer_stop(evlua_stream_loop(s), &s->timer);
}

/* Output stays queued: wait for the socket to take it. */
static void wait_writable(evlua_stream *s) {
  if (watching(s, EV_WRITE)) return;
  watch(s, EV_WRITE, 1);
  if (s->state != EVLUA_STREAM_CONNECTING) start_stall(s);  /* else at open */
}

static void resume_transport(evlua_stream *s);

static void start_reading(evlua_stream *s) {
  if (s->is_transport) {
    resume_transport(s);
    return;
  }
  if (s->state == EVLUA_STREAM_OPEN && !s->read_eof &&
      evlua_buffer_len(&s->in) < s->max_input)
    watch(s, EV_READ, 1);
}

/* Flush the queue from the loop, then close with reason; the write
** watcher runs even with an empty queue, so on_close always comes from
** the loop. The linger timer bounds the flush. */
static void enter_closing_transport(evlua_stream *s, const char *reason);

static void enter_closing(evlua_stream *s, const char *reason) {
  if (s->is_transport) {
    enter_closing_transport(s, reason);
    return;
  }
  watch(s, EV_READ, 0);
  s->state = EVLUA_STREAM_CLOSING;
  s->close_reason = reason;
  if (evlua_buffer_len(&s->out) > 0) wait_writable(s);   /* may be corked */
  else watch(s, EV_WRITE, 1);
  s->linger_end = ev_now(evlua_stream_loop(s)) + s->linger;
  arm_timer(s);
}

static void on_readable(evlua_stream *s) {
  size_t room = s->max_input - evlua_buffer_len(&s->in);
  if (room == 0) {                   /* limit lowered meanwhile */
    watch(s, EV_READ, 0);
    return;
  }
  size_t want = room < EVLUA_READ_CHUNK ? room : EVLUA_READ_CHUNK;
  char *p = evlua_buffer_reserve(&s->in, want);
  if (p == NULL) {
    close_now(s, "out of memory");
    return;
  }
  ssize_t r = read(s->fd, p, want);
  if (r > 0) {
    evlua_buffer_commit(&s->in, (size_t)r);
    s->bytes_in += (uint64_t)r;
    touch(s);
    if (evlua_buffer_len(&s->in) >= s->max_input) watch(s, EV_READ, 0);
    s->handler->on_data(s);
    /* What the handler answered goes out now rather than at the end of
    ** the loop iteration, so the peer can work on it while the other
    ** ready streams are served. (s is still valid: the handler's Lua
    ** code has returned, and nothing has run the collector since.) */
    if (s->corked) {
      uncork(s);
      flush_corked(s);
    }
  } else if (r == 0) {
    if (s->half_close && s->handler->on_eof != NULL) {
      /* the peer sends no more but may still read what it is owed */
      watch(s, EV_READ, 0);
      s->read_eof = 1;
      s->handler->on_eof(s);
    } else {
      enter_closing(s, "eof");
    }
  } else if (errno != EAGAIN && errno != EINTR) {
    close_now(s, errno_reason(errno));
  }
}

static void finish_connect(evlua_stream *s) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    release_fd(s);
    s->handler->on_connect(s, err);
    return;
  }
  s->state = EVLUA_STREAM_OPEN;
  touch(s);
  if (evlua_buffer_len(&s->out) == 0) watch(s, EV_WRITE, 0);
  else start_stall(s);   /* written while connecting: its clock starts now */
  start_reading(s);
  arm_timer(s);
  s->handler->on_connect(s, 0);
}

static void on_writable(evlua_stream *s) {
  if (s->state == EVLUA_STREAM_CONNECTING) {
    finish_connect(s);
    return;
  }
  if (s->write_error) {
    close_now(s, errno_reason(s->write_error));
    return;
  }
  size_t len = evlua_buffer_len(&s->out);
  if (len > 0) {
    ssize_t r = write(s->fd, evlua_buffer_peek(&s->out), len);
    if (r < 0) {
      if (errno != EAGAIN && errno != EINTR) close_now(s, errno_reason(errno));
      return;
    }
    evlua_buffer_consume(&s->out, (size_t)r);
    s->bytes_out += (uint64_t)r;
    touch(s);
    if (r > 0) s->last_write = s->last_activity;   /* progress */
    len -= (size_t)r;
  }
  if (len == 0) {
    watch(s, EV_WRITE, 0);
    end_stall(s);
    if (s->was_full) s->was_full = 0;
    else evlua_buffer_free(&s->out);
    if (s->state == EVLUA_STREAM_CLOSING) {
      close_now(s, s->close_reason);
      return;
    }
  }
  if (s->full && len <= s->low_water) {
    s->full = 0;
    s->handler->on_drain(s);
  }
}

/* The fd is readable or writable (or both): the read first. Its handler
** may close the stream; s is still valid then (the handler's Lua code has
** returned, and nothing has run the collector since). */
static void on_io(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  evlua_stream *s = container_of(w, evlua_stream, io);
  if (revents & EV_READ) {
    on_readable(s);
    if (s->state == EVLUA_STREAM_CLOSED) return;
  }
  if ((revents & EV_WRITE) && watching(s, EV_WRITE)) on_writable(s);
}

/* What every stream starts with, on an fd or on a transport (fd -1):
** the defaults of docs/channel.md, buffers from the loop's block cache,
** its watchers set up but stopped, activity stamped now. */
static void init_common(evlua_stream *s, struct ev_loop *loop, int fd,
                        const evlua_stream_handler *h) {
  memset(s, 0, sizeof *s);
  s->loop_state = evlua_loop_state_of(loop);
  s->fd = fd;
  s->handler = h;
  s->max_input = EVLUA_STREAM_MAX_INPUT;
  s->high_water = EVLUA_STREAM_HIGH_WATER;
  s->low_water = EVLUA_STREAM_LOW_WATER;
  s->linger = EVLUA_STREAM_LINGER;
  s->send_timeout = EVLUA_STREAM_SEND_TIMEOUT;
  evlua_buffer_init_cached(&s->in, &s->loop_state->blocks);
  evlua_buffer_init_cached(&s->out, &s->loop_state->blocks);
  if (fd >= 0) ev_io_init(&s->io, on_io, fd, 0);   /* else: a transport */
  ev_init(&s->timer, on_timer);
  touch(s);
}

void evlua_stream_init(evlua_stream *s, struct ev_loop *loop, int fd,
                       int connecting, const evlua_stream_handler *h) {
  init_common(s, loop, fd, h);
  evlua_net_nonblock(fd);
  if (connecting) {
    s->state = EVLUA_STREAM_CONNECTING;
    watch(s, EV_WRITE, 1);
  } else {
    s->state = EVLUA_STREAM_OPEN;
    start_reading(s);
  }
}

/* Queue iov[0..n) skipping its first `skip` bytes. */
static int queue_rest(evlua_stream *s, const struct iovec *iov, int n,
                      size_t skip) {
  for (int i = 0; i < n; i++) {
    size_t len = iov[i].iov_len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    if (evlua_buffer_append(&s->out, (const char *)iov[i].iov_base + skip,
                            len - skip) != 0)
      return -1;
    skip = 0;
  }
  return 0;
}

/* Write the queue of a stream just taken off the corked list. */
static void flush_corked(evlua_stream *s) {
  if (s->is_transport) {
    if (s->state != EVLUA_STREAM_CLOSED) s->transport->flush(s);
    return;
  }
  if (s->state != EVLUA_STREAM_OPEN || watching(s, EV_WRITE)) return;
  size_t len = evlua_buffer_len(&s->out);
  if (len == 0) return;
  ssize_t r;
  do r = write(s->fd, evlua_buffer_peek(&s->out), len);
  while (r < 0 && errno == EINTR);
  if (r >= 0) {
    evlua_buffer_consume(&s->out, (size_t)r);
    s->bytes_out += (uint64_t)r;
    touch(s);
  } else if (errno != EAGAIN) {
    s->write_error = errno;
  }
  if (s->write_error)
    watch(s, EV_WRITE, 1);
  else if (evlua_buffer_len(&s->out) > 0)
    wait_writable(s);
  else if (!s->was_full)
    evlua_buffer_free(&s->out);
}

void evlua_stream_flush_corked(evlua_loop_state *st) {
  evlua_stream *s;
  while ((s = st->corked) != NULL) {
    st->corked = s->next_corked;
    s->next_corked = NULL;
    s->corked = 0;
    flush_corked(s);
  }
}

static void cork(evlua_stream *s) {
  if (s->corked) return;
  s->corked = 1;
  s->next_corked = s->loop_state->corked;
  s->loop_state->corked = s;
}

static int write_transport(evlua_stream *s, const struct iovec *iov, int n);

int evlua_stream_write(evlua_stream *s, const struct iovec *iov, int n) {
  if (s->state != EVLUA_STREAM_OPEN && s->state != EVLUA_STREAM_CONNECTING) {
    errno = EPIPE;
    return -1;
  }
  if (s->is_transport) return write_transport(s, iov, n);
  size_t written = 0;
  if (s->state == EVLUA_STREAM_OPEN && !watching(s, EV_WRITE) &&
      s->write_error == 0) {
    size_t queued = evlua_buffer_len(&s->out), total = queued;
    for (int i = 0; i < n; i++) total += iov[i].iov_len;
    if (total < CORK_MAX && total < s->high_water) {
      if (queue_rest(s, iov, n, 0) != 0) {
        s->write_error = ENOMEM;
        watch(s, EV_WRITE, 1);
        return 0;
      }
      cork(s);
      return 0;
    }
    /* A large write: the corked bytes and these go out now, in order. */
    struct iovec v[EVLUA_STREAM_MAX_IOV + 1];   /* + the queued bytes */
    int nv = 0;
    if (queued > 0) {
      v[nv].iov_base = s->out.data + s->out.start;
      v[nv++].iov_len = queued;
    }
    for (int i = 0; i < n && nv <= EVLUA_STREAM_MAX_IOV; i++)
      v[nv++] = iov[i];
    ssize_t r;
    do r = writev(s->fd, v, nv); while (r < 0 && errno == EINTR);
    if (r >= 0) {
      size_t done = (size_t)r;
      size_t from_queue = done < queued ? done : queued;
      evlua_buffer_consume(&s->out, from_queue);
      written = done - from_queue;
      s->bytes_out += (uint64_t)r;
      touch(s);
    } else if (errno != EAGAIN) {
      /* Reported from the loop, so a close never runs inside a send. */
      s->write_error = errno;
      watch(s, EV_WRITE, 1);
      return 0;
    }
  }
  if (queue_rest(s, iov, n, written) != 0) {
    s->write_error = ENOMEM;
    watch(s, EV_WRITE, 1);
    return 0;
  }
  if (evlua_buffer_len(&s->out) > 0) {
    wait_writable(s);
    if (evlua_buffer_len(&s->out) >= s->high_water) s->full = s->was_full = 1;
  }
  return 0;
}

static void prune_messages(evlua_stream *s);

void evlua_stream_consumed(evlua_stream *s) {
  evlua_buffer_shrink(&s->in);
  if (s->is_transport && s->msg_count) prune_messages(s);
  start_reading(s);
}

void evlua_stream_close(evlua_stream *s, const char *reason) {
  if (s->state == EVLUA_STREAM_CLOSED || s->state == EVLUA_STREAM_CLOSING)
    return;
  if (s->state == EVLUA_STREAM_CONNECTING) {
    evlua_stream_close_silently(s);
    return;
  }
  enter_closing(s, s->read_eof ? "eof" : reason);   /* the peer's end first */
}

void evlua_stream_close_silently(evlua_stream *s) {
  release_fd(s);
}

void evlua_stream_release(evlua_stream *s) {
  evlua_stream_close_silently(s);
  evlua_buffer_free(&s->in);
  if (s->is_transport) {
    free(s->msg_end);
    s->msg_end = NULL;
    s->msg_count = s->msg_cap = 0;
  }
}

void evlua_stream_set_idle_timeout(evlua_stream *s, double seconds) {
  s->idle_timeout = seconds;
  if (s->state == EVLUA_STREAM_OPEN) arm_timer(s);
}

void evlua_stream_set_send_timeout(evlua_stream *s, double seconds) {
  s->send_timeout = seconds;
  if (s->state == EVLUA_STREAM_CLOSED) return;
  int stalled = s->is_transport ? evlua_stream_pending(s) > 0
                                : watching(s, EV_WRITE) &&
                                  evlua_buffer_len(&s->out) > 0;
  /* a stall under way (while connecting, the clock starts at open) */
  s->stalled = stalled && s->state != EVLUA_STREAM_CONNECTING;
  arm_timer(s);
}

void evlua_stream_set_limits(evlua_stream *s, size_t max_input,
                             size_t high_water, size_t low_water) {
  s->max_input = max_input;
  s->high_water = high_water;
  s->low_water = low_water;
  if (s->is_transport) {
    if (!evlua_stream_wants_input(s)) s->input_paused = 1;
    else start_reading(s);
  } else if (evlua_buffer_len(&s->in) >= max_input) {
    watch(s, EV_READ, 0);
  } else {
    start_reading(s);
  }
}

/* Transports ========================================================== */

void evlua_stream_init_transport(evlua_stream *s, struct ev_loop *loop,
                                 const evlua_stream_transport *t,
                                 void *tdata, int message_mode,
                                 const evlua_stream_handler *h) {
  init_common(s, loop, -1, h);   /* no io watchers */
  s->state = EVLUA_STREAM_OPEN;
  s->is_transport = 1;
  s->transport = t;
  s->transport_data = tdata;
  s->message_mode = message_mode != 0;
}

size_t evlua_stream_pending(const evlua_stream *s) {
  if (s->is_transport && s->state != EVLUA_STREAM_CLOSED)
    return s->transport->pending(s);
  return evlua_buffer_len(&s->out);
}

int evlua_stream_addr(evlua_stream *s, int peer, evlua_addr *a) {
  if (s->state == EVLUA_STREAM_CLOSED) return errno = EBADF, -1;
  if (s->is_transport) return s->transport->addr(s, peer, a);
  return peer ? evlua_net_peername(s->fd, a) : evlua_net_sockname(s->fd, a);
}

int evlua_stream_wants_input(evlua_stream *s) {
  return s->state == EVLUA_STREAM_OPEN &&
         evlua_buffer_len(&s->in) < s->max_input &&
         (!s->is_transport || s->msg_count < EVLUA_STREAM_MAX_MESSAGES);
}

static void resume_transport(evlua_stream *s) {
  if (s->input_paused && evlua_stream_wants_input(s)) {
    s->input_paused = 0;
    s->transport->resume(s);
  }
}

/* Remember where the message just delivered ends. */
static int push_message_end(evlua_stream *s) {
  if (s->msg_count == s->msg_cap) {
    size_t cap = s->msg_cap ? s->msg_cap * 2 : 16;
    uint64_t *p = malloc(cap * sizeof *p);
    if (!p) return -1;
    for (size_t i = 0; i < s->msg_count; i++)   /* unwrap the ring */
      p[i] = s->msg_end[(s->msg_head + i) % s->msg_cap];
    free(s->msg_end);
    s->msg_end = p;
    s->msg_cap = cap;
    s->msg_head = 0;
  }
  s->msg_end[(s->msg_head + s->msg_count) % s->msg_cap] = s->bytes_in;
  s->msg_count++;
  return 0;
}

int evlua_stream_received(evlua_stream *s, size_t len) {
  if (s->state != EVLUA_STREAM_OPEN) return -1;
  s->bytes_in += (uint64_t)len;
  if (s->message_mode && push_message_end(s) != 0) {
    close_now(s, "out of memory");
    return -1;
  }
  if (!evlua_stream_wants_input(s)) s->input_paused = 1;
  return 0;
}

void evlua_stream_notify(evlua_stream *s) {
  if (s->state != EVLUA_STREAM_OPEN) return;
  touch(s);
  s->handler->on_data(s);
}

int evlua_stream_delivered(evlua_stream *s, size_t len) {
  if (evlua_stream_received(s, len) != 0) return -1;
  evlua_stream_notify(s);
  return 0;
}

void evlua_stream_want_flush(evlua_stream *s) {
  if (s->state != EVLUA_STREAM_CLOSED) cork(s);
}

int evlua_stream_deliver(evlua_stream *s, const char *data, size_t len) {
  if (s->state != EVLUA_STREAM_OPEN) return -1;
  if (len > 0 && evlua_buffer_append(&s->in, data, len) != 0) {
    close_now(s, "out of memory");
    return -1;
  }
  return evlua_stream_delivered(s, len);
}

/* The absolute offset of the first unread input byte. */
static uint64_t consumed_offset(const evlua_stream *s) {
  return s->bytes_in - evlua_buffer_len(&s->in);
}

/* Drop the message ends that reads other than take_message passed: a
** message is gone once every byte of it was read (an empty one once a
** byte after it was). */
static void prune_messages(evlua_stream *s) {
  uint64_t at = consumed_offset(s);
  while (s->msg_count) {
    uint64_t end = s->msg_end[s->msg_head];
    if (end > at || (end == at && s->msg_base == end)) break;
    s->msg_base = end;
    s->msg_head = (s->msg_head + 1) % s->msg_cap;
    s->msg_count--;
  }
}

long evlua_stream_next_message(evlua_stream *s) {
  prune_messages(s);
  if (s->msg_count == 0) return -1;
  return (long)(s->msg_end[s->msg_head] - consumed_offset(s));
}

void evlua_stream_take_message(evlua_stream *s, size_t n) {
  evlua_buffer_consume(&s->in, n);
  if (s->is_transport && s->msg_count) {
    s->msg_base = s->msg_end[s->msg_head];
    s->msg_head = (s->msg_head + 1) % s->msg_cap;
    s->msg_count--;
  }
  evlua_stream_consumed(s);
}

static int write_transport(evlua_stream *s, const struct iovec *iov, int n) {
  if (s->state != EVLUA_STREAM_OPEN) return errno = EPIPE, -1;
  if (s->transport->write(s, iov, n) != 0) return -1;
  for (int i = 0; i < n; i++) s->bytes_out += iov[i].iov_len;
  size_t pending = s->transport->pending(s);
  if (pending > 0) start_stall(s);
  if (pending >= s->high_water) s->full = s->was_full = 1;
  cork(s);   /* the transport sends once per loop iteration */
  return 0;
}

void evlua_stream_progress(evlua_stream *s) {
  if (s->state == EVLUA_STREAM_CLOSED) return;
  size_t pending = s->transport->pending(s);
  s->last_write = evlua_clock_now(evlua_stream_loop(s));
  if (pending == 0) {
    end_stall(s);
    if (s->state == EVLUA_STREAM_CLOSING) {
      close_now(s, s->close_reason);
      return;
    }
  }
  if (s->full && pending <= s->low_water) {
    s->full = 0;
    s->handler->on_drain(s);
  }
}

/* As for an fd: wait for the transport to send everything, within the
** linger time; with nothing pending, close from the loop at once. */
static void enter_closing_transport(evlua_stream *s, const char *reason) {
  s->state = EVLUA_STREAM_CLOSING;
  s->close_reason = reason;
  cork(s);
  int idle = s->transport->pending(s) == 0;
  s->linger_end = ev_now(evlua_stream_loop(s)) + (idle ? 0. : s->linger);
  arm_timer(s);
}

void evlua_stream_end(evlua_stream *s, const char *reason) {
  close_now(s, reason);
}
