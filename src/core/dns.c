/*
** dns.c - asynchronous name resolution: a c-ares channel on a libev loop.
**
** c-ares tells us which sockets to watch through its socket-state callback
** (one ev_io each) and when it next needs to retransmit or give up through
** ares_timeout (one ev_timer, re-armed after every call into c-ares). Every
** readiness or deadline becomes one ares_process_fd call.
**
** Pitfall: c-ares may finish a request inside ares_getaddrinfo itself (a
** hosts-file hit, a bad argument). Those results, and the answers we make
** without c-ares (numeric addresses, "localhost", invalid names), are
** queued and delivered from a zero-delay timer, so callbacks always run
** from the loop and never inside evlua_dns_resolve.
*/
#include "dns.h"

#include <arpa/inet.h>
#include <ares.h>
#include <assert.h>
#include <ctype.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "util.h"

#define MAX_FIXED 8         /* addresses answered without c-ares */
#define MAX_TRIES 10        /* keeps the backoff bound below in range */
#define SERVER_LEN (EVLUA_DNS_ADDRLEN + 8)   /* "[addr]:port" */

typedef struct sockwatch {
  ev_io w;
  evlua_dns *owner;
  struct sockwatch *next;
} sockwatch;

struct evlua_dns_req {
  evlua_dns *owner;
  evlua_dns_cb cb;            /* NULL once cancelled */
  void *arg;
  int family;
  int starting;               /* inside ares_getaddrinfo */
  int status;                 /* ARES_* result, for queued completions */
  struct ares_addrinfo *res;  /* c-ares result of a queued completion */
  int nfixed;                 /* or addresses we answered ourselves */
  char fixed[MAX_FIXED][EVLUA_DNS_ADDRLEN];
  evlua_dns_req *next;        /* in the done queue */
};

struct evlua_dns {
  struct ev_loop *loop;
  ares_channel channel;
  ev_timer timer;             /* c-ares' next deadline */
  ev_timer flush;             /* delivers the done queue, at once */
  sockwatch *socks;
  evlua_dns_req *done_head, *done_tail;
  long pending;
  int depth;                  /* inside one of our loop callbacks */
  int doomed;                 /* destroy once depth drops to 0 */
  double timeout;
  int tries, ndomains, nservers;
  char (*servers)[SERVER_LEN];
};

/* Names =============================================================== */

int evlua_dns_numeric(const char *host, char *out) {
  unsigned char bin[sizeof(struct in6_addr)];
  char inner[EVLUA_DNS_ADDRLEN];
  size_t len = strlen(host);
  if (inet_pton(AF_INET, host, bin) == 1) {
    inet_ntop(AF_INET, bin, out, EVLUA_DNS_ADDRLEN);
    return AF_INET;
  }
  if (len >= 2 && host[0] == '[' && host[len - 1] == ']' &&
      len - 2 < sizeof inner) {             /* "[::1]" */
    memcpy(inner, host + 1, len - 2);
    inner[len - 2] = '\0';
    host = inner;
  }
  if (inet_pton(AF_INET6, host, bin) == 1) {
    inet_ntop(AF_INET6, bin, out, EVLUA_DNS_ADDRLEN);
    return AF_INET6;
  }
  return 0;
}

int evlua_dns_valid_name(const char *host) {
  size_t len = strlen(host), label = 0;
  if (len > 0 && host[len - 1] == '.') len--;  /* fully qualified */
  if (len == 0 || len > 253) return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)host[i];
    if (c == '.') {
      if (label == 0) return 0;              /* empty label */
      label = 0;
    } else if (isalnum(c) || c == '-' || c == '_') {
      if (++label > 63) return 0;
    } else {
      return 0;
    }
  }
  return label > 0;
}

/* 1 for "localhost" and names under it (RFC 6761): they never go to DNS. */
static int is_localhost(const char *host) {
  size_t len = strlen(host);
  if (len > 0 && host[len - 1] == '.') len--;
  if (len == 9) return strncasecmp(host, "localhost", 9) == 0;
  return len > 10 && strncasecmp(host + len - 10, ".localhost", 10) == 0;
}

/* Settings ============================================================ */

/* Apply "timeout:N" and "attempts:N" words of a resolv.conf options line
** (or of RES_OPTIONS), capped as glibc caps them. */
static void parse_options(const char *s, double *timeout, int *tries) {
  const char *p;
  if ((p = strstr(s, "timeout:")) != NULL) {
    int v = atoi(p + 8);
    if (v > 0) *timeout = v > 30 ? 30 : v;
  }
  if ((p = strstr(s, "attempts:")) != NULL) {
    int v = atoi(p + 9);
    if (v > 0) *tries = v > 5 ? 5 : v;
  }
}

/* The system's per-try timeout and tries, or ours where it says nothing:
** c-ares' own defaults (5 s, 4 tries per server, doubling each round)
** could keep a caller waiting a minute. */
static void system_defaults(double *timeout, int *tries) {
  *timeout = EVLUA_DNS_DEFAULT_TIMEOUT;
  *tries = EVLUA_DNS_DEFAULT_TRIES;
  FILE *f = fopen("/etc/resolv.conf", "r");
  if (f != NULL) {
    char line[512];
    while (fgets(line, sizeof line, f) != NULL)
      if (strncmp(line, "options", 7) == 0 && isspace((unsigned char)line[7]))
        parse_options(line + 7, timeout, tries);
    fclose(f);
  }
  const char *env = getenv("RES_OPTIONS");
  if (env != NULL) parse_options(env, timeout, tries);
}

/* Parse "ip", "ip:port", "[ip6]", "[ip6]:port" or a bare IPv6 address
** into node. Returns 0, or -1 if it is not a numeric address and port. */
static int parse_server(const char *s, struct ares_addr_port_node *node) {
  char host[EVLUA_DNS_ADDRLEN];
  const char *end, *colon = strrchr(s, ':');
  long port = 53;
  if (s[0] == '[') {
    end = strchr(s, ']');
    if (end == NULL) return -1;
    s++;
    if (end[1] == ':') colon = end + 1;
    else if (end[1] == '\0') colon = NULL;
    else return -1;
  } else if (colon != NULL && strchr(s, ':') != colon) {
    end = s + strlen(s);                     /* bare IPv6, no port */
    colon = NULL;
  } else {
    end = colon != NULL ? colon : s + strlen(s);
  }
  if (colon != NULL) {
    char *stop;
    port = strtol(colon + 1, &stop, 10);
    if (colon[1] == '\0' || *stop != '\0' || port < 1 || port > 65535)
      return -1;
  }
  if ((size_t)(end - s) >= sizeof host) return -1;
  memcpy(host, s, (size_t)(end - s));
  host[end - s] = '\0';
  memset(node, 0, sizeof *node);
  if (inet_pton(AF_INET, host, &node->addr.addr4) == 1) {
    node->family = AF_INET;
  } else if (inet_pton(AF_INET6, host, &node->addr.addr6) == 1) {
    node->family = AF_INET6;
  } else {
    return -1;
  }
  node->udp_port = node->tcp_port = (int)port;
  return 0;
}

/* Set the caller's servers on r's channel. Returns 0, or -1 with err
** and *failure. */
static int set_servers(evlua_dns *r, const evlua_dns_options *opts,
                       char *err, size_t errlen,
                       evlua_dns_failure *failure) {
  struct ares_addr_port_node *nodes = calloc(opts->nservers, sizeof *nodes);
  int status;
  if (nodes == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < opts->nservers; i++) {
    if (parse_server(opts->servers[i], &nodes[i]) != 0) {
      snprintf(err, errlen, "bad server address '%s'", opts->servers[i]);
      *failure = EVLUA_DNS_FAIL_BAD_SERVER;
      free(nodes);
      return -1;
    }
    nodes[i].next = i + 1 < opts->nservers ? &nodes[i + 1] : NULL;
  }
  status = ares_set_servers_ports(r->channel, nodes);
  free(nodes);
  if (status != ARES_SUCCESS) {
    snprintf(err, errlen, "cannot set servers: %s", ares_strerror(status));
    return -1;
  }
  return 0;
}

/* Cache the server list and search domains c-ares ended up with. */
static int load_info(evlua_dns *r) {
  struct ares_addr_port_node *list = NULL, *n;
  struct ares_options o;
  int mask, i = 0;
  char addr[EVLUA_DNS_ADDRLEN];
  if (ares_save_options(r->channel, &o, &mask) != ARES_SUCCESS) return -1;
  r->ndomains = o.ndomains;
  ares_destroy_options(&o);
  if (ares_get_servers_ports(r->channel, &list) != ARES_SUCCESS) return -1;
  for (n = list; n != NULL; n = n->next) i++;
  r->servers = calloc(i > 0 ? (size_t)i : 1, sizeof *r->servers);
  if (r->servers == NULL) {
    ares_free_data(list);
    return -1;
  }
  r->nservers = i;
  for (n = list, i = 0; n != NULL; n = n->next, i++) {
    int port = n->udp_port != 0 ? n->udp_port : 53;
    inet_ntop(n->family, &n->addr, addr, sizeof addr);
    snprintf(r->servers[i], SERVER_LEN, n->family == AF_INET6 ? "[%s]:%d"
             : "%s:%d", addr, port);
  }
  ares_free_data(list);
  return 0;
}

void evlua_dns_get_info(evlua_dns *r, evlua_dns_info *info) {
  int servers = r->nservers > 0 ? r->nservers : 1;
  info->timeout = r->timeout;
  info->tries = r->tries;
  info->nservers = r->nservers;
  info->ndomains = r->ndomains;
  /* c-ares tries each server once per round and doubles the per-try
  ** timeout each round; a short name may also be tried with every search
  ** domain. One second covers scheduling. */
  info->max_wait = r->timeout * servers * (double)((1 << r->tries) - 1) *
                   (r->ndomains + 1) + 1.0;
  info->pending = r->pending;
}

int evlua_dns_server(evlua_dns *r, int i, char *buf, size_t size) {
  if (i < 0 || i >= r->nservers) return -1;
  snprintf(buf, size, "%s", r->servers[i]);
  return 0;
}

/* Watchers ============================================================ */

/* Arm the timer for c-ares' next deadline, or stop it when none is due:
** an idle resolver must not keep the loop alive. */
static void rearm(evlua_dns *r) {
  struct timeval tv, *tvp = ares_timeout(r->channel, NULL, &tv);
  ev_timer_stop(r->loop, &r->timer);
  if (tvp != NULL) {
    ev_timer_set(&r->timer, (double)tv.tv_sec + tv.tv_usec / 1e6, 0.0);
    ev_timer_start(r->loop, &r->timer);
  }
}

static void destroy_now(evlua_dns *r);

/* Every loop callback brackets its work with enter/leave, so that a
** destroy asked for by a request callback waits until c-ares and our own
** loops are no longer walking r's data. */
static void enter(evlua_dns *r) {
  r->depth++;
}

static void leave(evlua_dns *r) {
  if (--r->depth > 0) return;
  if (r->doomed) destroy_now(r);
  else rearm(r);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  sockwatch *s = container_of(w, sockwatch, w);
  evlua_dns *r = s->owner;
  int fd = w->fd;
  /* s may be freed inside: c-ares closes sockets as queries end */
  enter(r);
  ares_process_fd(r->channel, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
                  (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
  leave(r);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop; (void)revents;
  evlua_dns *r = container_of(w, evlua_dns, timer);
  enter(r);
  ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  leave(r);
}

/* c-ares' socket-state callback: watch fd for what it asks, or forget it
** (c-ares calls this before it closes the socket). Out of memory leaves
** the socket unwatched: its queries then end by timeout. */
static void on_sock_state(void *data, ares_socket_t fd, int readable,
                          int writable) {
  evlua_dns *r = data;
  sockwatch **link = &r->socks, *s;
  int events = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
  while ((s = *link) != NULL && s->w.fd != fd) link = &s->next;
  if (s != NULL) {
    ev_io_stop(r->loop, &s->w);
    if (events == 0) {
      *link = s->next;
      free(s);
      return;
    }
  } else {
    if (events == 0) return;
    s = malloc(sizeof *s);
    if (s == NULL) return;
    s->owner = r;
    s->next = r->socks;
    r->socks = s;
  }
  ev_io_init(&s->w, on_io, fd, events);
  ev_io_start(r->loop, &s->w);
}

/* Requests ============================================================ */

static const char *status_message(int status) {
  switch (status) {
    case ARES_SUCCESS: return NULL;
    case ARES_ENODATA: case ARES_ENOTFOUND: case ARES_ENONAME:
      return "not found";
    case ARES_ETIMEOUT: return "timeout";
    case ARES_ECONNREFUSED: case ARES_EREFUSED: return "refused";
    case ARES_ESERVFAIL: return "server failure";
    case ARES_EBADNAME: return "bad name";
    case ARES_EFORMERR: case ARES_EBADRESP: return "bad response";
    case ARES_ENOMEM: return "out of memory";
    case ARES_ECANCELLED: case ARES_EDESTRUCTION: return "cancelled";
    case ARES_EBADFAMILY: case ARES_ENOTIMP: return "bad family";
    default: return "resolver error";
  }
}

/* Collect the addresses of res in list (n slots), IPv4 before IPv6,
** without duplicates. Returns how many were stored. */
static size_t collect(const struct ares_addrinfo *res, char **list,
                      size_t n) {
  static const int order[2] = { AF_INET, AF_INET6 };
  size_t count = 0;
  for (int k = 0; k < 2; k++) {
    for (const struct ares_addrinfo_node *a = res->nodes; a != NULL;
         a = a->ai_next) {
      const void *bin;
      if (a->ai_family != order[k] || count >= n) continue;
      if (a->ai_family == AF_INET)
        bin = &((const struct sockaddr_in *)(const void *)a->ai_addr)->sin_addr;
      else
        bin = &((const struct sockaddr_in6 *)(const void *)a->ai_addr)->sin6_addr;
      inet_ntop(a->ai_family, bin, list[count], EVLUA_DNS_ADDRLEN);
      size_t i = 0;
      while (i < count && strcmp(list[i], list[count]) != 0) i++;
      if (i == count) count++;
    }
  }
  return count;
}

/* Deliver q's result (status, res or its fixed addresses), then free q. */
static void complete(evlua_dns_req *q, int status, struct ares_addrinfo *res) {
  evlua_dns *r = q->owner;
  const char *err = status_message(status);
  char *fixed[MAX_FIXED], **list = NULL;
  size_t n = 0;
  if (err == NULL && q->nfixed > 0) {
    for (int i = 0; i < q->nfixed; i++) fixed[i] = q->fixed[i];
    list = fixed;
    n = (size_t)q->nfixed;
  } else if (err == NULL && q->cb != NULL) {
    size_t max = 0;
    for (const struct ares_addrinfo_node *a = res ? res->nodes : NULL;
         a != NULL; a = a->ai_next) max++;
    /* one block: the pointers, then the strings they point into */
    list = malloc(max * (sizeof *list + EVLUA_DNS_ADDRLEN) + 1);
    if (list == NULL) {
      err = "out of memory";
    } else {
      for (size_t i = 0; i < max; i++)
        list[i] = (char *)(list + max) + i * EVLUA_DNS_ADDRLEN;
      n = collect(res, list, max);
      if (n == 0) err = "not found";
    }
  }
  if (res != NULL) ares_freeaddrinfo(res);
  r->pending--;
  if (q->cb != NULL) q->cb(q->arg, err, (const char *const *)list, err ? 0 : n);
  if (list != fixed) free(list);
  free(q);
}

/* Queue q to complete from the loop with status. */
static void defer(evlua_dns_req *q, int status) {
  evlua_dns *r = q->owner;
  q->status = status;
  q->next = NULL;
  if (r->done_tail != NULL) r->done_tail->next = q;
  else r->done_head = q;
  r->done_tail = q;
  if (!ev_is_active(&r->flush)) ev_timer_start(r->loop, &r->flush);
}

static void on_flush(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop; (void)revents;
  evlua_dns *r = container_of(w, evlua_dns, flush);
  evlua_dns_req *last = r->done_tail;  /* callbacks may queue more: later */
  enter(r);
  while (r->done_head != NULL && !r->doomed) {
    evlua_dns_req *q = r->done_head;
    int was_last = q == last;
    r->done_head = q->next;
    if (r->done_head == NULL) r->done_tail = NULL;
    complete(q, q->status, q->res);
    if (was_last) break;
  }
  if (r->done_head != NULL && !r->doomed && !ev_is_active(&r->flush))
    ev_timer_start(r->loop, &r->flush);
  leave(r);
}

static void on_addrinfo(void *arg, int status, int timeouts,
                        struct ares_addrinfo *res) {
  (void)timeouts;
  evlua_dns_req *q = arg;
  if (q->starting) {
    q->res = res;
    defer(q, status);
  } else {
    complete(q, status, res);
  }
}

/* Answer "localhost" from the hosts file, or with the loopback addresses
** when the file does not name it. Never asks DNS. */
static void answer_localhost(evlua_dns *r, evlua_dns_req *q, const char *host) {
  static const int order[2] = { AF_INET, AF_INET6 };
  char name[256];
  size_t len = strlen(host);     /* a valid name: at most 254 */
  if (host[len - 1] == '.') len--;  /* the file has no trailing dots */
  memcpy(name, host, len);
  name[len] = '\0';
  for (int k = 0; k < 2; k++) {
    struct hostent *he = NULL;
    if (q->family != AF_UNSPEC && q->family != order[k]) continue;
    if (ares_gethostbyname_file(r->channel, name, order[k], &he) != ARES_SUCCESS)
      continue;
    for (char **a = he->h_addr_list; *a != NULL && q->nfixed < MAX_FIXED; a++)
      inet_ntop(order[k], *a, q->fixed[q->nfixed++], EVLUA_DNS_ADDRLEN);
    ares_free_hostent(he);
  }
  if (q->nfixed == 0) {
    if (q->family != AF_INET6) strcpy(q->fixed[q->nfixed++], "127.0.0.1");
    if (q->family != AF_INET) strcpy(q->fixed[q->nfixed++], "::1");
  }
}

evlua_dns_req *evlua_dns_resolve(evlua_dns *r, const char *host, int family,
                                 evlua_dns_cb cb, void *arg) {
  evlua_dns_req *q = calloc(1, sizeof *q);
  if (q == NULL) return NULL;
  q->owner = r;
  q->cb = cb;
  q->arg = arg;
  q->family = family;
  r->pending++;
  int numeric = evlua_dns_numeric(host, q->fixed[0]);
  if (numeric != 0) {
    if (family != AF_UNSPEC && family != numeric) {
      defer(q, ARES_ENOTFOUND);
    } else {
      q->nfixed = 1;
      defer(q, ARES_SUCCESS);
    }
  } else if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) {
    defer(q, ARES_EBADFAMILY);
  } else if (!evlua_dns_valid_name(host)) {
    defer(q, ARES_EBADNAME);
  } else if (is_localhost(host)) {
    answer_localhost(r, q, host);
    defer(q, ARES_SUCCESS);
  } else {
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;   /* one node per address */
    hints.ai_flags = ARES_AI_NOSORT;   /* we order: IPv4 first */
    q->starting = 1;
    ares_getaddrinfo(r->channel, host, NULL, &hints, on_addrinfo, q);
    q->starting = 0;
    rearm(r);
  }
  return q;
}

void evlua_dns_cancel(evlua_dns_req *q) {
  q->cb = NULL;
}

/* Life cycle ========================================================== */

evlua_dns *evlua_dns_create(struct ev_loop *loop,
                            const evlua_dns_options *opts,
                            char *err, size_t errlen,
                            evlua_dns_failure *failure) {
  struct ares_options o;
  int status, tries;
  double timeout;
  evlua_dns_failure ignored;
  evlua_dns *r;
  if (failure == NULL) failure = &ignored;
  *failure = EVLUA_DNS_FAIL_RESOLVER;   /* every failure but a bad server */
  r = calloc(1, sizeof *r);
  if (r == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  status = ares_library_init(ARES_LIB_INIT_ALL);
  if (status != ARES_SUCCESS) {
    snprintf(err, errlen, "cannot start c-ares: %s", ares_strerror(status));
    free(r);
    return NULL;
  }
  system_defaults(&timeout, &tries);
  if (opts != NULL && opts->timeout > 0) timeout = opts->timeout;
  if (opts != NULL && opts->tries > 0) tries = opts->tries;
  r->loop = loop;
  r->timeout = timeout;
  r->tries = tries > MAX_TRIES ? MAX_TRIES : tries;
  ev_init(&r->timer, on_timer);
  ev_timer_init(&r->flush, on_flush, 0.0, 0.0);
  memset(&o, 0, sizeof o);
  o.timeout = (int)(r->timeout * 1000 + 0.5);
  if (o.timeout < 1) o.timeout = 1;
  o.tries = r->tries;
  o.lookups = (char *)"fb";          /* hosts file, then DNS */
  o.sock_state_cb = on_sock_state;
  o.sock_state_cb_data = r;
  status = ares_init_options(&r->channel, &o, ARES_OPT_TIMEOUTMS |
                             ARES_OPT_TRIES | ARES_OPT_LOOKUPS |
                             ARES_OPT_SOCK_STATE_CB);
  if (status != ARES_SUCCESS) {
    snprintf(err, errlen, "cannot start c-ares: %s", ares_strerror(status));
    ares_library_cleanup();
    free(r);
    return NULL;
  }
  /* Before any query, so the system's servers never see one. */
  if ((opts != NULL && opts->nservers > 0 &&
       set_servers(r, opts, err, errlen, failure) != 0))
    goto fail;
  if (load_info(r) != 0) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  return r;
fail:
  ares_destroy(r->channel);
  ares_library_cleanup();
  free(r->servers);
  free(r);
  return NULL;
}

void evlua_dns_destroy(evlua_dns *r) {
  if (r->depth > 0) r->doomed = 1;    /* from a callback: leave() does it */
  else destroy_now(r);
}

static void destroy_now(evlua_dns *r) {
  ares_destroy(r->channel);   /* runs pending callbacks with "cancelled" */
  while (r->done_head != NULL) {
    evlua_dns_req *q = r->done_head;
    r->done_head = q->next;
    complete(q, ARES_ECANCELLED, q->res);
  }
  ev_timer_stop(r->loop, &r->timer);
  ev_timer_stop(r->loop, &r->flush);
  while (r->socks != NULL) {         /* c-ares closed them all already */
    sockwatch *s = r->socks;
    r->socks = s->next;
    ev_io_stop(r->loop, &s->w);
    free(s);
  }
  assert(r->pending == 0);
  ares_library_cleanup();
  free(r->servers);
  free(r);
}

