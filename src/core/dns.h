/*
** dns.h - asynchronous name resolution: one c-ares channel driven by a
** libev loop, without threads (pure C, no Lua).
**
** A resolver owns one channel, one ev_io per socket c-ares opens and one
** ev_timer for c-ares' retransmission deadlines. Results always arrive
** through the loop, never inside evlua_dns_resolve, so a caller may start
** a request and only then record it.
*/
#ifndef EVLUA_DNS_H
#define EVLUA_DNS_H

#include <ev.h>
#include <stddef.h>

typedef struct evlua_dns evlua_dns;
typedef struct evlua_dns_req evlua_dns_req;

/* Longest numeric address string, with its NUL (INET6_ADDRSTRLEN). */
#define EVLUA_DNS_ADDRLEN 46

typedef struct evlua_dns_options {
  const char *const *servers;  /* "ip", "ip:port", "[ip6]:port"; NULL or
                               ** nservers 0: from /etc/resolv.conf */
  size_t nservers;
  double timeout;              /* seconds per try; <= 0: default */
  int tries;                   /* tries per server; <= 0: default */
} evlua_dns_options;

/* Effective settings of a resolver, for callers computing deadlines. */
typedef struct evlua_dns_info {
  double timeout;      /* seconds per try, first round */
  int tries;
  int nservers;
  int ndomains;        /* search domains a short name may be tried with */
  double max_wait;     /* upper bound of one request's lifetime, seconds */
  long pending;        /* requests started whose callback has not run */
} evlua_dns_info;

/* Called once per request from the loop: err is NULL on success with the
** n numeric addresses (IPv4 first, then IPv6, no duplicates), or a short
** lowercase message ("not found", "timeout", "refused", "cancelled"...)
** with n == 0. The strings belong to the resolver and live only during
** the call. */
typedef void (*evlua_dns_cb)(void *arg, const char *err,
                             const char *const *addrs, size_t n);

/* Defaults used when neither the caller nor resolv.conf says otherwise. */
#define EVLUA_DNS_DEFAULT_TIMEOUT 2.0
#define EVLUA_DNS_DEFAULT_TRIES 2

/* Why evlua_dns_create failed: the binding's error code depends on it. */
typedef enum evlua_dns_failure {
  EVLUA_DNS_FAIL_RESOLVER,     /* out of memory, c-ares could not start */
  EVLUA_DNS_FAIL_BAD_SERVER    /* a server in opts is not a numeric address */
} evlua_dns_failure;

/* Create a resolver on loop. Returns NULL with a message in err, and the
** kind of failure in *failure (when failure is not NULL), when c-ares
** cannot start or an option is invalid (a server that is not a numeric
** address). The caller owns it; release with evlua_dns_destroy. */
evlua_dns *evlua_dns_create(struct ev_loop *loop,
                            const evlua_dns_options *opts,
                            char *err, size_t errlen,
                            evlua_dns_failure *failure);

/* Cancel every pending request (each callback runs now, inside this call,
** with err "cancelled"), close every socket, stop every watcher, free r.
** Called from inside one of r's callbacks, it takes effect when that
** callback returns: requests completing meanwhile still get their result. */
void evlua_dns_destroy(evlua_dns *r);

/* Start resolving host for family (AF_UNSPEC, AF_INET or AF_INET6): the
** hosts file first, then DNS. Numeric addresses and invalid names are
** answered without c-ares, through the loop as well. Returns a handle
** owned by the resolver, valid until cb runs or evlua_dns_cancel is
** called; NULL if out of memory (cb will not run). */
evlua_dns_req *evlua_dns_resolve(evlua_dns *r, const char *host, int family,
                                 evlua_dns_cb cb, void *arg);

/* Forget a request's callback: it will not run. The request itself ends
** when c-ares gives up on it (bounded by max_wait). */
void evlua_dns_cancel(evlua_dns_req *req);

/* Fill info with r's effective settings. */
void evlua_dns_get_info(evlua_dns *r, evlua_dns_info *info);

/* Write the i-th configured server ("ip:port", "[ip6]:port") into buf.
** Returns 0, or -1 when there is no such server. */
int evlua_dns_server(evlua_dns *r, int i, char *buf, size_t size);

/* If host is a numeric IPv4 or IPv6 address (brackets allowed around
** IPv6), write its canonical form into out (EVLUA_DNS_ADDRLEN bytes) and
** return its family; return 0 otherwise. */
int evlua_dns_numeric(const char *host, char *out);

/* 1 if host may be looked up: 1 to 253 characters, labels of 1 to 63
** characters, no spaces, control characters or address punctuation. */
int evlua_dns_valid_name(const char *host);

#endif
