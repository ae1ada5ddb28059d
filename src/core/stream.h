/*
** stream.h - a buffered, non-blocking byte stream on a file descriptor
** (TCP, unix socket, pipe, tty) driven by libev. Pure C: events go to a
** handler table, the Lua binding (lstream.c) is one such handler.
**
** Reading: bytes are read into `in` while it holds less than max_input;
** at the cap the read watcher stops (the peer is throttled by TCP) and
** resumes once the consumer calls evlua_stream_consumed.
** Writing: small writes (under 16 KiB queued) are coalesced and written
** once per loop iteration, before the loop polls again (the loop's owner
** calls evlua_stream_flush_corked there), so the messages
** one iteration produces share a write(2); larger ones go to the socket
** at once, after what was coalesced, and what the socket does not take is
** queued; above high_water the stream reports itself full until
** the queue drains to low_water (then on_drain runs). The queue's memory
** is released when it empties, unless it went full on the way: a writer
** that keeps the queue full would otherwise regrow it every cycle.
** Send timeout: when queued output makes no progress (no byte written)
** for send_timeout seconds, the stream closes with "send timeout", so a
** peer that stops reading cannot hold its connection and the queue's
** memory forever. The timer is armed only when a write leaves bytes
** queued, and stopped when the queue empties: a stream whose writes go
** out at once never touches it.
** Closing: with flush, queued output is written first (bounded by the
** linger time), then the fd is shut down and closed; on_close always runs
** exactly once with the reason, except for a silent close (GC).
**
** Transports: a stream made with evlua_stream_init_transport has no fd.
** Its transport (a KCP session) delivers input with evlua_stream_deliver
** and takes writes whole (in message mode one evlua_stream_write is one
** message); the bytes it still holds (queued or unacknowledged) stand for
** the output queue: full/drain, the send timeout and a flushing close use
** them as they use `out` for an fd. Input that reaches max_input pauses
** the transport (it stops taking data from its peer, whose window then
** closes) until the consumer has taken some.
*/
#ifndef EVLUA_STREAM_H
#define EVLUA_STREAM_H

#include <ev.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buffer.h"
#include "loop.h"
#include "net.h"

typedef struct evlua_stream evlua_stream;

typedef struct evlua_stream_handler {
  /* Connection attempt done: err is 0 or an errno. On failure the stream
  ** is closed without on_close. */
  void (*on_connect)(evlua_stream *s, int err);
  /* New bytes were appended to s->in. */
  void (*on_data)(evlua_stream *s);
  /* The output queue fell to low_water after having been full. */
  void (*on_drain)(evlua_stream *s);
  /* The stream is closed (fd released); reason is "eof", "reset",
  ** "timeout", "send timeout", "local close" or an error message. */
  void (*on_close)(evlua_stream *s, const char *reason);
  /* With half_close set, the peer's EOF: reading has stopped, writes go
  ** on, and the owner closes when it is done (the reason is "eof"). */
  void (*on_eof)(evlua_stream *s);
} evlua_stream_handler;

/* What a transport does for its stream. Every call comes from the stream
** while it is not closed; close is the last one. */
typedef struct evlua_stream_transport {
  const char *name;         /* for __tostring: "kcp" */
  /* Take the bytes of iov[0..n) (one message in message mode): 0, or -1
  ** with errno (EMSGSIZE: too large for one message; EPIPE). */
  int (*write)(evlua_stream *s, const struct iovec *iov, int n);
  /* Bytes written and not yet acknowledged by the peer. */
  size_t (*pending)(const evlua_stream *s);
  /* Send what this loop iteration wrote (once per iteration, from
  ** evlua_stream_flush_corked). */
  void (*flush)(evlua_stream *s);
  /* Input fell below max_input after a pause: take data again. Called
  ** from the consumer's read, so it must not deliver from inside the
  ** call (schedule it on the loop instead). */
  void (*resume)(evlua_stream *s);
  /* The peer's or our address: 0, or -1 with errno. */
  int (*addr)(evlua_stream *s, int peer, evlua_addr *a);
  /* The stream is closed: let go of it (no call follows). */
  void (*close)(evlua_stream *s);
} evlua_stream_transport;

/* A message-mode stream keeps at most this many unread message ends;
** the transport pauses at it (so empty messages cannot grow the list
** without bound). */
#define EVLUA_STREAM_MAX_MESSAGES 8192

enum evlua_stream_state {
  EVLUA_STREAM_CONNECTING,
  EVLUA_STREAM_OPEN,
  EVLUA_STREAM_CLOSING,     /* flushing before close */
  EVLUA_STREAM_CLOSED
};

/* The fields are ordered, and the small ones narrowed, so that the struct
** has no padding: every connection holds one (issue 16: an idle
** connection's memory). */
struct evlua_stream {
  evlua_loop_state *loop_state;   /* the loop's (evlua_stream_loop), its
                                  ** corked list and block cache */
  int fd;
  short write_error;        /* errno of a failed write, reported by io */
  unsigned char state;      /* enum evlua_stream_state */
  unsigned char full;       /* output above high_water, waiting to drain */
  unsigned char was_full;   /* went full since the queue last emptied */
  unsigned char corked;     /* in the loop's list of streams to flush */
  unsigned char stalled;    /* output waiting since last_write */
  unsigned char is_transport;     /* no fd: the union holds the transport */
  unsigned char input_paused;     /* transport at max_input: resume later */
  unsigned char message_mode;     /* transport input is whole messages */
  unsigned char half_close;       /* a peer's EOF goes to on_eof */
  unsigned char read_eof;         /* it came: no more reading */
  /* An fd's io watcher (EV_READ and/or EV_WRITE, as needed), or a
  ** transport's fields: a stream has one or the other (is_transport). */
  union {
    ev_io io;
    struct {
      const evlua_stream_transport *transport;
      void *transport_data;       /* the transport's */
      /* Message mode: the ends of the unread messages, as absolute input
      ** offsets (bytes_in when each was delivered), a ring of msg_cap
      ** (at most about EVLUA_STREAM_MAX_MESSAGES). */
      uint64_t *msg_end;
      uint64_t msg_base;          /* the end of the last message taken */
      uint32_t msg_head, msg_count, msg_cap;
    };
  };
  /* One timer for every deadline: the idle timeout while open, the send
  ** timeout while stalled, the linger limit while closing. It is armed
  ** at (or before) the earliest; when it fires it closes the stream for
  ** the deadline that passed, or re-arms for the next. */
  ev_timer timer;
  evlua_buffer in, out;
  size_t max_input, high_water, low_water;
  double idle_timeout;      /* 0: none */
  double linger;            /* max seconds to flush on close */
  double send_timeout;      /* 0: none */
  double last_activity;
  double last_write;        /* last byte written, or output queued */
  double linger_end;        /* while closing: when the flush gives up */
  uint64_t bytes_in, bytes_out;
  const char *close_reason; /* reason kept while flushing */
  const evlua_stream_handler *handler;   /* its owner finds itself from s
                                         ** (container_of) */
  evlua_stream *next_corked; /* in the list of streams to flush */
};

/* The loop the stream runs on. */
static inline struct ev_loop *evlua_stream_loop(const evlua_stream *s) {
  return s->loop_state->loop;
}

/* The stream's transport, or NULL for a stream on an fd. */
static inline const evlua_stream_transport *
evlua_stream_transport_of(const evlua_stream *s) {
  return s->is_transport ? s->transport : NULL;
}

/* Defaults for new streams (see docs/channel.md). */
#define EVLUA_STREAM_MAX_INPUT   (1024 * 1024)
#define EVLUA_STREAM_HIGH_WATER  (1024 * 1024)
#define EVLUA_STREAM_LOW_WATER   (256 * 1024)
#define EVLUA_STREAM_LINGER      30.0
#define EVLUA_STREAM_SEND_TIMEOUT 60.0

/* Output corking (stream.c): writes are held for one write per loop
** iteration until a stream holds this many bytes. */
#define EVLUA_STREAM_CORK_MAX    (2 * 1024)

/* Set up a stream on fd (made non-blocking). If connecting, it waits for
** the connection to complete, else it starts reading. loop carries an
** evlua_loop_state (evlua_loop_state_init). */
void evlua_stream_init(evlua_stream *s, struct ev_loop *loop, int fd,
                       int connecting, const evlua_stream_handler *h);

/* The parts one evlua_stream_write takes at most (writev is given
** them, plus the bytes already queued, in one call). */
#define EVLUA_STREAM_MAX_IOV 64

/* Queue bytes. Returns 0, or -1 when the stream is not open (EPIPE).
** Errors while writing close the stream with a reason later. */
int evlua_stream_write(evlua_stream *s, const struct iovec *iov, int n);

/* Tell the stream the consumer took bytes from s->in: reading resumes if
** it had stopped at max_input, and the buffer memory is released when
** empty. */
void evlua_stream_consumed(evlua_stream *s);

/* Take the first n bytes of s->in (a decoder has used them) and tell
** the stream: the one way bindings consume input. Inline: it runs once
** per message on every protocol's hot path. */
static inline void evlua_stream_take(evlua_stream *s, size_t n) {
  evlua_buffer_consume(&s->in, n);
  evlua_stream_consumed(s);
}

/* Write the coalesced output of every corked stream of st's loop: once
** per loop iteration, before the loop polls (the runtime's before-sleep
** step, src/lua/runtime.c), and once more before the process exits. */
void evlua_stream_flush_corked(evlua_loop_state *st);

/* Close after sending the queued output (within the linger time); then
** on_close(reason) runs from the loop, never from inside this call.
** Idempotent. */
void evlua_stream_close(evlua_stream *s, const char *reason);

/* Close now, dropping queued output; no callback runs. Unread input stays
** readable. Idempotent. */
void evlua_stream_close_silently(evlua_stream *s);

/* Release the buffers of a closed stream (before freeing its memory). */
void evlua_stream_release(evlua_stream *s);

/* Set up an open stream on a transport (no fd). message_mode: the
** transport delivers whole messages (evlua_stream_next_message). */
void evlua_stream_init_transport(evlua_stream *s, struct ev_loop *loop,
                                 const evlua_stream_transport *t,
                                 void *tdata, int message_mode,
                                 const evlua_stream_handler *h);

/* Transport side. Deliver len bytes (in message mode: one whole message)
** to s->in and run on_data: 0, or -1 when the stream is not open or out
** of memory (the stream is then closed). */
int evlua_stream_deliver(evlua_stream *s, const char *data, size_t len);
/* As evlua_stream_deliver, for len bytes the transport has already
** appended to s->in itself (evlua_buffer_reserve, commit). */
int evlua_stream_delivered(evlua_stream *s, size_t len);
/* The two halves of evlua_stream_delivered, for a transport handing
** over several messages at once: count len committed bytes (one message
** in message mode) without a callback, then run on_data once. */
int evlua_stream_received(evlua_stream *s, size_t len);
void evlua_stream_notify(evlua_stream *s);
/* Have the transport's flush run at the end of this loop iteration (it
** owes the peer acks), as after a write. */
void evlua_stream_want_flush(evlua_stream *s);
/* Room for more input: the stream is open, s->in is under max_input and
** (message mode) under EVLUA_STREAM_MAX_MESSAGES unread messages. When
** there is none, the stream calls resume once there is again. */
int evlua_stream_wants_input(evlua_stream *s);
/* The transport's pending bytes went down (acks): drain, send-timeout
** progress, and the end of a flushing close once nothing is pending. */
void evlua_stream_progress(evlua_stream *s);
/* The transport ends the stream (dead link: "timeout"); on_close runs
** now, so call it from a loop callback. */
void evlua_stream_end(evlua_stream *s, const char *reason);

/* Output waiting: the transport's pending bytes, or the queue's. */
size_t evlua_stream_pending(const evlua_stream *s);
/* The peer's (peer 1) or the local address: 0, or -1 with errno. */
int evlua_stream_addr(evlua_stream *s, int peer, evlua_addr *a);
/* Message mode: the size of the next unread message (what of it is left
** if reads took part of it), or -1 when none is whole. */
long evlua_stream_next_message(evlua_stream *s);
/* Take the next message's bytes (after evlua_stream_next_message). */
void evlua_stream_take_message(evlua_stream *s, size_t n);

/* Change limits and timeouts; they apply from the next event. */
void evlua_stream_set_idle_timeout(evlua_stream *s, double seconds);
void evlua_stream_set_send_timeout(evlua_stream *s, double seconds);
void evlua_stream_set_limits(evlua_stream *s, size_t max_input,
                             size_t high_water, size_t low_water);

#endif
