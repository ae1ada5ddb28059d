/* Conformance of server.js with Debian's libmongoc: the operations evlua's
 * client has, through the C driver's own API. Prints TAP.
 *
 * usage: conformance_mongoc PORT SMALL_PORT
 *   PORT        a server started with the users of conformance.sh
 *   SMALL_PORT  a server without users started with --max-write-batch 10
 */
#include <mongoc/mongoc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int port, small_port;
static int tap_n, tap_failed;
static char why[1024];

#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      snprintf(why, sizeof why, "%s:%d: %s", __FILE__, __LINE__, #cond);      \
      diag(__VA_ARGS__);                                                      \
      return false;                                                           \
    }                                                                         \
  } while (0)

static char diagbuf[2048];
static void diag(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(diagbuf, sizeof diagbuf, fmt, ap);
  va_end(ap);
}

static void run(const char *name, bool (*fn)(void)) {
  why[0] = diagbuf[0] = 0;
  bool ok = fn();
  tap_n++;
  if (ok) {
    printf("ok %d - mongoc: %s\n", tap_n, name);
  } else {
    tap_failed++;
    printf("not ok %d - mongoc: %s\n  # %s\n  # %s\n", tap_n, name, why, diagbuf);
  }
  fflush(stdout);
}

/* ------------------------------------------------------------ helpers */

static int started_count[8];
static const char *watched[8] = { "insert", "getMore", "killCursors", "count", "aggregate", "find", "update", "delete" };
static int insert_sizes[16], n_insert_sizes;

static void on_started(const mongoc_apm_command_started_t *ev) {
  const char *name = mongoc_apm_command_started_get_command_name(ev);
  for (int i = 0; i < 8; i++) {
    if (strcmp(name, watched[i]) == 0) started_count[i]++;
  }
  if (strcmp(name, "insert") == 0 && n_insert_sizes < 16) {
    const bson_t *cmd = mongoc_apm_command_started_get_command(ev);
    bson_iter_t it, ch;
    int n = 0;
    if (bson_iter_init_find(&it, cmd, "documents") && bson_iter_recurse(&it, &ch)) {
      while (bson_iter_next(&ch)) n++;
    }
    insert_sizes[n_insert_sizes++] = n;
  }
}
static int count_of(const char *name) {
  for (int i = 0; i < 8; i++) {
    if (strcmp(name, watched[i]) == 0) return started_count[i];
  }
  return -1;
}
static void reset_counts(void) {
  memset(started_count, 0, sizeof started_count);
  n_insert_sizes = 0;
}

static mongoc_client_t *client_for(const char *creds, const char *query, int p) {
  char uri[512];
  snprintf(uri, sizeof uri, "mongodb://%s%s127.0.0.1:%d/%s%sserverSelectionTimeoutMS=3000&connectTimeoutMS=3000",
           creds ? creds : "", creds ? "@" : "", p, "?", query ? query : "");
  mongoc_client_t *c = mongoc_client_new(uri);
  if (!c) return NULL;
  mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
  mongoc_apm_callbacks_t *cb = mongoc_apm_callbacks_new();
  mongoc_apm_set_command_started_cb(cb, on_started);
  mongoc_client_set_apm_callbacks(c, cb, NULL);
  mongoc_apm_callbacks_destroy(cb);
  return c;
}

#define ROOT "root:p%40ss%3Aw%2Frd%25"

static mongoc_client_t *root_client(void) { return client_for(ROOT, "authSource=admin&", port); }

static bool ping(mongoc_client_t *c, bson_error_t *err) {
  bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
  bool r = mongoc_client_command_simple(c, "admin", cmd, NULL, NULL, err);
  bson_destroy(cmd);
  return r;
}

static mongoc_collection_t *fresh(mongoc_client_t *c, const char *name) {
  mongoc_collection_t *coll = mongoc_client_get_collection(c, "cconf", name);
  bson_error_t err;
  mongoc_collection_drop_with_opts(coll, NULL, &err);
  return coll;
}

static int64_t get_int(const bson_t *doc, const char *path) {
  bson_iter_t it, f;
  if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &f)) return -999999;
  return bson_iter_as_int64(&f);
}

static bool has_type(const bson_t *doc, const char *path, bson_type_t t) {
  bson_iter_t it, f;
  return bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &f) && bson_iter_type(&f) == t;
}

static const char *get_str(const bson_t *doc, const char *path) {
  bson_iter_t it, f;
  if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &f) || !BSON_ITER_HOLDS_UTF8(&f)) return "";
  return bson_iter_utf8(&f, NULL);
}

static int cursor_count(mongoc_cursor_t *cur, int64_t *ids, int max) {
  const bson_t *d;
  int n = 0;
  while (mongoc_cursor_next(cur, &d)) {
    if (ids && n < max) ids[n] = get_int(d, "_id");
    n++;
  }
  return n;
}

/* ------------------------------------------------------------ auth */

static bool t_scram256(void) {
  mongoc_client_t *c = client_for(ROOT, "authSource=admin&authMechanism=SCRAM-SHA-256&", port);
  bson_error_t err;
  bool r = ping(c, &err);
  bson_t *cmd = BCON_NEW("connectionStatus", BCON_INT32(1));
  bson_t reply;
  bool s = mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, &err);
  bool user_ok = s && strcmp(get_str(&reply, "authInfo.authenticatedUsers.0.user"), "root") == 0;
  bson_destroy(&reply);
  bson_destroy(cmd);
  mongoc_client_destroy(c);
  CHECK(r && s, "%s", err.message);
  CHECK(user_ok, "connectionStatus does not name root");
  return true;
}

static bool t_scram1(void) {
  mongoc_client_t *c = client_for(ROOT, "authSource=admin&authMechanism=SCRAM-SHA-1&", port);
  bson_error_t err;
  bool r = ping(c, &err);
  mongoc_client_destroy(c);
  CHECK(r, "%s", err.message);
  c = client_for("sha1only:pw1", NULL, port); /* negotiated through saslSupportedMechs */
  mongoc_collection_t *coll = mongoc_client_get_collection(c, "cconf", "a");
  bson_t *all = bson_new();
  int64_t n = mongoc_collection_count_documents(coll, all, NULL, NULL, NULL, &err);
  bson_destroy(all);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(n >= 0, "%s", err.message);
  return true;
}

static bool t_auth_fail(void) {
  const char *mechs[] = { "authMechanism=SCRAM-SHA-256&", "authMechanism=SCRAM-SHA-1&" };
  for (int i = 0; i < 2; i++) {
    mongoc_client_t *c = client_for("root:wrong", mechs[i], port);
    bson_error_t err;
    bool r = ping(c, &err);
    mongoc_client_destroy(c);
    CHECK(!r, "wrong password accepted");
    CHECK(strstr(err.message, "Authentication failed") != NULL, "message: %s", err.message);
    CHECK(err.code == 18 || err.code == MONGOC_ERROR_CLIENT_AUTHENTICATE, "code %u: %s", err.code, err.message);
  }
  mongoc_client_t *c = client_for("sha256only:pw2", "authMechanism=SCRAM-SHA-1&", port);
  bson_error_t err;
  bool r = ping(c, &err);
  mongoc_client_destroy(c);
  CHECK(!r, "SCRAM-SHA-1 accepted for a SHA-256-only user");
  return true;
}

static bool t_unauthenticated(void) {
  mongoc_client_t *c = client_for(NULL, NULL, port);
  bson_error_t err;
  CHECK(ping(c, &err), "ping without auth: %s", err.message);
  mongoc_collection_t *coll = mongoc_client_get_collection(c, "cconf", "x");
  bson_t *f = bson_new();
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, f, NULL, NULL);
  const bson_t *d;
  bool got = mongoc_cursor_next(cur, &d);
  bool e = mongoc_cursor_error(cur, &err);
  mongoc_cursor_destroy(cur);
  bson_destroy(f);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(!got && e, "find ran without authentication");
  CHECK(err.domain == MONGOC_ERROR_SERVER && err.code == 13, "domain %u code %u: %s", err.domain, err.code, err.message);
  return true;
}

static bool t_authsource(void) {
  mongoc_client_t *c = client_for("appuser:apppw", "authSource=appdb&", port);
  mongoc_collection_t *coll = mongoc_client_get_collection(c, "appdb", "m");
  bson_error_t err;
  bson_t *d = BCON_NEW("k", BCON_INT32(1));
  bool r = mongoc_collection_insert_one(coll, d, NULL, NULL, &err);
  bson_destroy(d);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(r, "%s", err.message);
  return true;
}

/* ------------------------------------------------------------ CRUD */

static bool t_insert(void) {
  mongoc_client_t *c = root_client();
  mongoc_collection_t *coll = fresh(c, "ins");
  bson_error_t err;
  bson_t reply;
  bson_t *d = BCON_NEW("name", "a", "n", BCON_INT32(1));
  bool r = mongoc_collection_insert_one(coll, d, NULL, &reply, &err);
  int64_t ic = get_int(&reply, "insertedCount");
  bson_destroy(&reply);
  bson_destroy(d);
  CHECK(r && ic == 1, "%s", err.message);

  bson_t *docs[4];
  for (int i = 0; i < 4; i++) docs[i] = BCON_NEW("_id", BCON_INT32(i == 2 ? 0 : i), "v", BCON_INT32(i));
  r = mongoc_collection_insert_many(coll, (const bson_t **) docs, 4, NULL, &reply, &err);
  int64_t n = get_int(&reply, "insertedCount");
  bson_destroy(&reply);
  CHECK(!r, "duplicate accepted");
  CHECK(err.code == 11000, "code %u: %s", err.code, err.message);
  CHECK(strstr(err.message, "E11000 duplicate key error collection: cconf.ins index: _id_ dup key: { _id: 0 }"), "%s",
        err.message);
  CHECK(n == 2, "ordered insertedCount %lld", (long long) n);

  bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
  bson_t *more[3];
  more[0] = BCON_NEW("_id", BCON_INT32(1));
  more[1] = BCON_NEW("_id", BCON_INT32(10));
  more[2] = BCON_NEW("_id", BCON_INT32(11));
  r = mongoc_collection_insert_many(coll, (const bson_t **) more, 3, opts, &reply, &err);
  n = get_int(&reply, "insertedCount");
  bson_destroy(&reply);
  bson_destroy(opts);
  for (int i = 0; i < 4; i++) bson_destroy(docs[i]);
  for (int i = 0; i < 3; i++) bson_destroy(more[i]);
  CHECK(!r && err.code == 11000, "unordered: %s", err.message);
  CHECK(n == 2, "unordered insertedCount %lld", (long long) n);
  bson_t *all = bson_new();
  int64_t total = mongoc_collection_count_documents(coll, all, NULL, NULL, NULL, &err);
  bson_destroy(all);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(total == 5, "count %lld", (long long) total);
  return true;
}

static mongoc_collection_t *seeded(mongoc_client_t *c, const char *name, int count) {
  mongoc_collection_t *coll = fresh(c, name);
  bson_t **docs = calloc((size_t) count, sizeof *docs);
  for (int i = 0; i < count; i++) {
    docs[i] = BCON_NEW("_id", BCON_INT32(i), "n", BCON_INT32(i % 5), "s", BCON_UTF8("x"), "sub", "{", "a",
                       BCON_INT32(i), "b", BCON_INT32(-i), "}");
  }
  bson_error_t err;
  mongoc_collection_insert_many(coll, (const bson_t **) docs, (size_t) count, NULL, NULL, &err);
  for (int i = 0; i < count; i++) bson_destroy(docs[i]);
  free(docs);
  return coll;
}

static bool t_find(void) {
  mongoc_client_t *c = root_client();
  mongoc_collection_t *coll = seeded(c, "find", 20);
  bson_t *filter = BCON_NEW("n", "{", "$gte", BCON_INT32(2), "}");
  bson_t *opts = BCON_NEW("projection", "{", "sub.a", BCON_INT32(1), "}", "sort", "{", "n", BCON_INT32(-1), "_id",
                          BCON_INT32(1), "}", "skip", BCON_INT64(2), "limit", BCON_INT64(5));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
  const bson_t *d;
  int64_t ids[8];
  int n = 0;
  bool shape = true;
  while (mongoc_cursor_next(cur, &d)) {
    ids[n++] = get_int(d, "_id");
    if (bson_count_keys(d) != 2 || get_int(d, "sub.a") != ids[n - 1] || bson_has_field(d, "sub.b")) shape = false;
  }
  bson_error_t err;
  bool e = mongoc_cursor_error(cur, &err);
  mongoc_cursor_destroy(cur);
  bson_destroy(filter);
  bson_destroy(opts);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(!e, "%s", err.message);
  CHECK(n == 5 && ids[0] == 14 && ids[1] == 19 && ids[2] == 3 && ids[3] == 8 && ids[4] == 13, "got %d docs", n);
  CHECK(shape, "projection not applied");
  return true;
}

static bool t_batches(void) {
  mongoc_client_t *c = root_client();
  mongoc_collection_t *coll = seeded(c, "batches", 25);
  bson_t *filter = bson_new();
  bson_t *opts = BCON_NEW("batchSize", BCON_INT32(10));
  reset_counts();
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
  int64_t ids[25];
  int n = cursor_count(cur, ids, 25);
  bson_error_t err;
  bool e = mongoc_cursor_error(cur, &err);
  mongoc_cursor_destroy(cur);
  int gm = count_of("getMore"), kc = count_of("killCursors");
  bool in_order = true;
  for (int i = 0; i < n && i < 25; i++) if (ids[i] != i) in_order = false;

  /* early destroy: killCursors */
  reset_counts();
  cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
  const bson_t *d;
  bool first = mongoc_cursor_next(cur, &d);
  mongoc_cursor_destroy(cur);
  int kc2 = count_of("killCursors");
  bson_destroy(filter);
  bson_destroy(opts);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(!e, "%s", err.message);
  CHECK(n == 25 && in_order, "got %d", n);
  CHECK(gm == 2 && kc == 0, "getMore %d killCursors %d", gm, kc);
  CHECK(first && kc2 == 1, "killCursors on early destroy: %d", kc2);
  return true;
}

static bool t_update(void) {
  mongoc_client_t *c = root_client();
  mongoc_collection_t *coll = fresh(c, "upd");
  bson_error_t err;
  bson_t reply;
  bson_t *docs[3];
  for (int i = 0; i < 3; i++) docs[i] = BCON_NEW("_id", BCON_INT32(i), "g", i < 2 ? "a" : "b", "v", BCON_INT32(i));
  mongoc_collection_insert_many(coll, (const bson_t **) docs, 3, NULL, NULL, &err);
  for (int i = 0; i < 3; i++) bson_destroy(docs[i]);

  bson_t *q = BCON_NEW("g", "a");
  bson_t *u = BCON_NEW("$set", "{", "v", BCON_INT32(10), "}");
  bool r = mongoc_collection_update_one(coll, q, u, NULL, &reply, &err);
  int64_t m = get_int(&reply, "matchedCount"), mod = get_int(&reply, "modifiedCount");
  bson_destroy(&reply);
  CHECK(r && m == 1 && mod == 1, "update_one %lld %lld %s", (long long) m, (long long) mod, err.message);
  r = mongoc_collection_update_many(coll, q, u, NULL, &reply, &err);
  m = get_int(&reply, "matchedCount");
  mod = get_int(&reply, "modifiedCount");
  bson_destroy(&reply);
  CHECK(r && m == 2 && mod == 1, "update_many %lld %lld %s", (long long) m, (long long) mod, err.message);
  bson_destroy(q);
  bson_destroy(u);

  q = BCON_NEW("g", "c", "k", BCON_INT32(7));
  u = BCON_NEW("$inc", "{", "v", BCON_INT32(1), "}", "$setOnInsert", "{", "new", BCON_BOOL(true), "}");
  bson_t *up = BCON_NEW("upsert", BCON_BOOL(true));
  r = mongoc_collection_update_one(coll, q, u, up, &reply, &err);
  bool has_up = has_type(&reply, "upsertedId", BSON_TYPE_OID);
  int64_t uc = get_int(&reply, "upsertedCount");
  bson_destroy(&reply);
  bson_destroy(q);
  bson_destroy(u);
  CHECK(r && has_up && uc == 1, "upsert: %s", err.message);

  q = BCON_NEW("_id", BCON_INT32(50));
  bson_t *rep = BCON_NEW("fresh", BCON_INT32(1));
  r = mongoc_collection_replace_one(coll, q, rep, up, &reply, &err);
  int64_t upid = get_int(&reply, "upsertedId");
  bson_destroy(&reply);
  bson_destroy(q);
  bson_destroy(rep);
  CHECK(r && upid == 50, "replace upsert: %s", err.message);

  q = BCON_NEW("_id", BCON_INT32(2));
  rep = BCON_NEW("g", "B");
  r = mongoc_collection_replace_one(coll, q, rep, NULL, &reply, &err);
  m = get_int(&reply, "matchedCount");
  bson_destroy(&reply);
  bson_destroy(rep);
  bson_destroy(up);
  CHECK(r && m == 1, "replace: %s", err.message);

  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, q, NULL, NULL);
  const bson_t *d;
  bool got = mongoc_cursor_next(cur, &d);
  bool shape = got && bson_count_keys(d) == 2 && strcmp(get_str(d, "g"), "B") == 0;
  mongoc_cursor_destroy(cur);
  bson_destroy(q);

  bson_t *dq = BCON_NEW("g", "a");
  r = mongoc_collection_delete_one(coll, dq, NULL, &reply, &err);
  int64_t dc = get_int(&reply, "deletedCount");
  bson_destroy(&reply);
  CHECK(r && dc == 1, "delete_one");
  bson_t *all = bson_new();
  r = mongoc_collection_delete_many(coll, all, NULL, &reply, &err);
  dc = get_int(&reply, "deletedCount");
  bson_destroy(&reply);
  bson_destroy(all);
  bson_destroy(dq);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(shape, "replacement document wrong");
  CHECK(r && dc == 4, "delete_many deleted %lld", (long long) dc);
  return true;
}

static bool t_counts(void) {
  mongoc_client_t *c = root_client();
  mongoc_collection_t *coll = seeded(c, "cnt", 12);
  bson_error_t err;
  bson_t *f = BCON_NEW("n", "{", "$lt", BCON_INT32(2), "}");
  int64_t a = mongoc_collection_count_documents(coll, f, NULL, NULL, NULL, &err);
  bson_t *o = BCON_NEW("skip", BCON_INT64(2), "limit", BCON_INT64(3));
  bson_t *none = bson_new();
  int64_t b = mongoc_collection_count_documents(coll, none, o, NULL, NULL, &err);
  reset_counts();
  int64_t e = mongoc_collection_estimated_document_count(coll, NULL, NULL, NULL, &err);
  int cc = count_of("count");
  bson_destroy(f);
  bson_destroy(o);
  bson_destroy(none);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(a == 6, "count_documents %lld", (long long) a);
  CHECK(b == 3, "count_documents skip/limit %lld", (long long) b);
  CHECK(e == 12 && cc == 1, "estimated %lld (count commands %d) %s", (long long) e, cc, err.message);
  return true;
}

static bool t_distinct_aggregate(void) {
  mongoc_client_t *c = root_client();
  mongoc_collection_t *coll = seeded(c, "agg", 20);
  bson_error_t err;
  bson_t reply;
  bson_t *cmd = BCON_NEW("distinct", "agg", "key", "n");
  bool r = mongoc_collection_read_command_with_opts(coll, cmd, NULL, NULL, &reply, &err);
  bson_iter_t it, ch;
  int nv = 0;
  if (r && bson_iter_init_find(&it, &reply, "values") && bson_iter_recurse(&it, &ch)) {
    while (bson_iter_next(&ch)) nv++;
  }
  bson_destroy(&reply);
  bson_destroy(cmd);
  CHECK(r && nv == 5, "distinct %d values %s", nv, err.message);

  bson_t *pipe = BCON_NEW("pipeline", "[", "{", "$match", "{", "n", "{", "$gte", BCON_INT32(3), "}", "}", "}", "{", "$group",
                          "{", "_id", "$n", "total", "{", "$sum", "$sub.a", "}", "c", "{", "$sum", BCON_INT32(1), "}",
                          "}", "}", "{", "$sort", "{", "_id", BCON_INT32(1), "}", "}", "]");
  mongoc_cursor_t *cur = mongoc_collection_aggregate(coll, MONGOC_QUERY_NONE, pipe, NULL, NULL);
  const bson_t *d;
  int n = 0;
  bool vals = true;
  while (mongoc_cursor_next(cur, &d)) {
    int64_t id = get_int(d, "_id");
    /* n = id: _id in {id, id+5, id+10, id+15}, sum = 4*id + 30 */
    if (id != 3 + n || get_int(d, "total") != 4 * id + 30 || get_int(d, "c") != 4) vals = false;
    n++;
  }
  bool e = mongoc_cursor_error(cur, &err);
  mongoc_cursor_destroy(cur);
  bson_destroy(pipe);

  pipe = BCON_NEW("pipeline", "[", "{", "$match", "{", "n", BCON_INT32(0), "}", "}", "{", "$count", "k", "}", "]");
  cur = mongoc_collection_aggregate(coll, MONGOC_QUERY_NONE, pipe, NULL, NULL);
  int64_t k = mongoc_cursor_next(cur, &d) ? get_int(d, "k") : -1;
  mongoc_cursor_destroy(cur);
  bson_destroy(pipe);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(!e, "%s", err.message);
  CHECK(n == 2 && vals, "aggregate groups %d", n);
  CHECK(k == 4, "$count %lld", (long long) k);
  return true;
}

static bool t_find_and_modify(void) {
  mongoc_client_t *c = root_client();
  mongoc_collection_t *coll = seeded(c, "fam", 3);
  bson_error_t err;
  bson_t reply;
  bson_t *q = BCON_NEW("_id", BCON_INT32(1));
  bson_t *u = BCON_NEW("$set", "{", "s", "changed", "}");
  mongoc_find_and_modify_opts_t *o = mongoc_find_and_modify_opts_new();
  mongoc_find_and_modify_opts_set_update(o, u);
  mongoc_find_and_modify_opts_set_flags(o, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
  bool r = mongoc_collection_find_and_modify_with_opts(coll, q, o, &reply, &err);
  bool ok1 = r && strcmp(get_str(&reply, "value.s"), "changed") == 0 && get_int(&reply, "lastErrorObject.n") == 1;
  bson_destroy(&reply);
  mongoc_find_and_modify_opts_destroy(o);
  bson_destroy(q);
  CHECK(ok1, "update new: %s", err.message);

  q = BCON_NEW("_id", BCON_INT32(77));
  o = mongoc_find_and_modify_opts_new();
  mongoc_find_and_modify_opts_set_update(o, u);
  mongoc_find_and_modify_opts_set_flags(o, MONGOC_FIND_AND_MODIFY_UPSERT | MONGOC_FIND_AND_MODIFY_RETURN_NEW);
  r = mongoc_collection_find_and_modify_with_opts(coll, q, o, &reply, &err);
  bool ok2 = r && get_int(&reply, "value._id") == 77 && get_int(&reply, "lastErrorObject.upserted") == 77;
  bson_destroy(&reply);
  mongoc_find_and_modify_opts_destroy(o);
  CHECK(ok2, "upsert: %s", err.message);

  o = mongoc_find_and_modify_opts_new();
  mongoc_find_and_modify_opts_set_flags(o, MONGOC_FIND_AND_MODIFY_REMOVE);
  r = mongoc_collection_find_and_modify_with_opts(coll, q, o, &reply, &err);
  bool ok3 = r && get_int(&reply, "value._id") == 77;
  bson_destroy(&reply);
  r = mongoc_collection_find_and_modify_with_opts(coll, q, o, &reply, &err);
  bool ok4 = r && has_type(&reply, "value", BSON_TYPE_NULL);
  bson_destroy(&reply);
  mongoc_find_and_modify_opts_destroy(o);
  bson_destroy(q);
  bson_destroy(u);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(ok3, "remove");
  CHECK(ok4, "remove of a missing document gives value null");
  return true;
}

static bool t_indexes(void) {
  mongoc_client_t *c = root_client();
  mongoc_collection_t *coll = fresh(c, "idx");
  mongoc_database_t *db = mongoc_client_get_database(c, "cconf");
  bson_error_t err;
  bson_t reply;
  bson_t *cmd = BCON_NEW("createIndexes", "idx", "indexes", "[", "{", "key", "{", "name", BCON_INT32(1), "}", "name",
                         "name_1", "unique", BCON_BOOL(true), "}", "{", "key", "{", "a", BCON_INT32(1), "b",
                         BCON_INT32(-1), "}", "name", "a_1_b_-1", "}", "]");
  bool r = mongoc_database_write_command_with_opts(db, cmd, NULL, &reply, &err);
  int64_t after = get_int(&reply, "numIndexesAfter");
  bson_destroy(&reply);
  bson_destroy(cmd);
  CHECK(r && after == 3, "createIndexes: %s", err.message);

  bson_t *d1 = BCON_NEW("_id", BCON_INT32(1), "name", "x");
  bson_t *d2 = BCON_NEW("_id", BCON_INT32(2), "name", "x");
  mongoc_collection_insert_one(coll, d1, NULL, NULL, &err);
  r = mongoc_collection_insert_one(coll, d2, NULL, NULL, &err);
  bson_destroy(d1);
  bson_destroy(d2);
  CHECK(!r && err.code == 11000, "unique not enforced: %s", err.message);
  CHECK(strstr(err.message, "E11000 duplicate key error collection: cconf.idx index: name_1 dup key: { name: \"x\" }"),
        "%s", err.message);

  mongoc_cursor_t *cur = mongoc_collection_find_indexes_with_opts(coll, NULL);
  const bson_t *d;
  int n = 0;
  bool names = true;
  const char *want[] = { "_id_", "name_1", "a_1_b_-1" };
  while (mongoc_cursor_next(cur, &d)) {
    if (n < 3 && strcmp(get_str(d, "name"), want[n]) != 0) names = false;
    n++;
  }
  mongoc_cursor_destroy(cur);
  CHECK(n == 3 && names, "listIndexes %d", n);
  r = mongoc_collection_drop_index_with_opts(coll, "name_1", NULL, &err);
  CHECK(r, "dropIndexes: %s", err.message);
  r = mongoc_collection_drop_index_with_opts(coll, "name_1", NULL, &err);
  CHECK(!r && err.code == 27, "second drop: %u %s", err.code, err.message);
  r = mongoc_collection_drop_with_opts(coll, NULL, &err);
  CHECK(r, "drop: %s", err.message);
  r = mongoc_collection_drop_with_opts(coll, NULL, &err);
  CHECK(r || err.code == 26, "drop of a missing collection: %s", err.message);
  mongoc_database_destroy(db);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  return true;
}

static bool t_commands(void) {
  mongoc_client_t *c = root_client();
  bson_error_t err;
  bson_t reply;
  bson_t *cmd = BCON_NEW("buildInfo", BCON_INT32(1));
  bool r = mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, &err);
  bool v = strncmp(get_str(&reply, "version"), "7.0.", 4) == 0;
  bson_destroy(&reply);
  bson_destroy(cmd);
  CHECK(r && v, "buildInfo: %s", err.message);
  cmd = BCON_NEW("frobnicate", BCON_INT32(1));
  r = mongoc_client_command_simple(c, "cconf", cmd, NULL, &reply, &err);
  bson_destroy(&reply);
  bson_destroy(cmd);
  CHECK(!r && err.code == 59 && strcmp(err.message, "no such command: 'frobnicate'") == 0, "%u %s", err.code, err.message);

  mongoc_database_t *db = mongoc_client_get_database(c, "cconf_lc");
  mongoc_database_drop_with_opts(db, NULL, &err);
  mongoc_collection_t *a = mongoc_database_get_collection(db, "one");
  mongoc_collection_t *b = mongoc_database_get_collection(db, "two");
  bson_t *e = bson_new();
  mongoc_collection_insert_one(a, e, NULL, NULL, &err);
  mongoc_collection_insert_one(b, e, NULL, NULL, &err);
  char **names = mongoc_database_get_collection_names_with_opts(db, NULL, &err);
  int nn = 0;
  for (char **p = names; p && *p; p++) nn++;
  bson_strfreev(names);
  bson_t *lo = BCON_NEW("filter", "{", "name", "two", "}");
  mongoc_cursor_t *cur = mongoc_database_find_collections_with_opts(db, lo);
  const bson_t *d;
  int nf = 0;
  bool two = true;
  while (mongoc_cursor_next(cur, &d)) {
    nf++;
    if (strcmp(get_str(d, "name"), "two") != 0) two = false;
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(lo);
  char **dbs = mongoc_client_get_database_names_with_opts(c, NULL, &err);
  bool listed = false;
  for (char **p = dbs; p && *p; p++) if (strcmp(*p, "cconf_lc") == 0) listed = true;
  bson_strfreev(dbs);
  bson_destroy(e);
  mongoc_collection_destroy(a);
  mongoc_collection_destroy(b);
  mongoc_database_destroy(db);
  mongoc_client_destroy(c);
  CHECK(nn == 2, "collection names %d", nn);
  CHECK(nf == 1 && two, "listCollections filter %d", nf);
  CHECK(listed, "listDatabases misses cconf_lc");
  return true;
}

static bool t_types(void) {
  mongoc_client_t *c = root_client();
  mongoc_collection_t *coll = fresh(c, "types");
  bson_t doc = BSON_INITIALIZER, sub, arr;
  bson_oid_t oid;
  bson_oid_init_from_string(&oid, "0123456789abcdef01234567");
  BSON_APPEND_OID(&doc, "_id", &oid);
  BSON_APPEND_INT32(&doc, "i32", -7);
  BSON_APPEND_INT64(&doc, "i64", INT64_C(9007199254740993));
  BSON_APPEND_INT64(&doc, "i64small", 3);
  BSON_APPEND_DOUBLE(&doc, "dbl", 2.0);
  bson_decimal128_t dec;
  bson_decimal128_from_string("1234.5678901234567890123", &dec);
  BSON_APPEND_DECIMAL128(&doc, "dec", &dec);
  BSON_APPEND_UTF8(&doc, "str", "h\xc3\xa9llo");
  BSON_APPEND_INT32(&doc, "7", 7); /* an integer-like key keeps its place */
  BSON_APPEND_BOOL(&doc, "t", true);
  BSON_APPEND_NULL(&doc, "nul");
  BSON_APPEND_DATE_TIME(&doc, "date", INT64_C(1700000000123));
  BSON_APPEND_TIMESTAMP(&doc, "ts", 1700000000, 7);
  const uint8_t bytes[] = { 0, 1, 2, 255 };
  BSON_APPEND_BINARY(&doc, "bin", BSON_SUBTYPE_BINARY, bytes, 4);
  BSON_APPEND_BINARY(&doc, "buser", BSON_SUBTYPE_USER, bytes, 3);
  BSON_APPEND_BINARY(&doc, "uuid", BSON_SUBTYPE_UUID, (const uint8_t *) "0123456789abcdef", 16);
  BSON_APPEND_REGEX(&doc, "re", "^a.c$", "imx");
  BSON_APPEND_MINKEY(&doc, "min");
  BSON_APPEND_MAXKEY(&doc, "max");
  BSON_APPEND_DOCUMENT_BEGIN(&doc, "nested", &sub);
  BSON_APPEND_INT32(&sub, "z", 1);
  BSON_APPEND_ARRAY_BEGIN(&sub, "a", &arr);
  BSON_APPEND_INT32(&arr, "0", 1);
  BSON_APPEND_DOUBLE(&arr, "1", 1.0);
  BSON_APPEND_INT64(&arr, "2", 1);
  bson_append_array_end(&sub, &arr);
  bson_append_document_end(&doc, &sub);
  BSON_APPEND_UTF8(&doc, "last", "end");
  bson_error_t err;
  bool r = mongoc_collection_insert_one(coll, &doc, NULL, NULL, &err);
  CHECK(r, "%s", err.message);
  bson_t *f = BCON_NEW("_id", BCON_OID(&oid));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, f, NULL, NULL);
  const bson_t *d;
  bool got = mongoc_cursor_next(cur, &d);
  bool same = got && d->len == doc.len && memcmp(bson_get_data(d), bson_get_data(&doc), doc.len) == 0;
  char *js = got ? bson_as_canonical_extended_json(d, NULL) : NULL;
  diag("%s", js ? js : "(none)");
  bson_free(js);
  mongoc_cursor_destroy(cur);

  /* numbers compare across types in filters */
  bson_t *q = BCON_NEW("i64small", BCON_DOUBLE(3.0), "dbl", BCON_INT32(2));
  int64_t n = mongoc_collection_count_documents(coll, q, NULL, NULL, NULL, &err);
  bson_destroy(q);
  bson_destroy(f);
  bson_destroy(&doc);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(same, "round-tripped bytes differ");
  CHECK(n == 1, "cross-type numeric match %lld", (long long) n);
  return true;
}

static bool t_bulk_split(void) {
  mongoc_client_t *c = client_for(NULL, NULL, small_port);
  mongoc_collection_t *coll = mongoc_client_get_collection(c, "t", "split");
  bson_error_t err;
  bson_t reply;
  reset_counts();
  bson_t *docs[25];
  for (int i = 0; i < 25; i++) docs[i] = BCON_NEW("i", BCON_INT32(i));
  bool r = mongoc_collection_insert_many(coll, (const bson_t **) docs, 25, NULL, &reply, &err);
  int64_t n = get_int(&reply, "insertedCount");
  bson_destroy(&reply);
  for (int i = 0; i < 25; i++) bson_destroy(docs[i]);
  int sum = 0, biggest = 0;
  for (int i = 0; i < n_insert_sizes; i++) {
    sum += insert_sizes[i];
    if (insert_sizes[i] > biggest) biggest = insert_sizes[i];
  }
  int batches = n_insert_sizes;
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  CHECK(r && n == 25, "%s", err.message);
  CHECK(batches >= 3 && biggest <= 10 && sum == 25, "%d insert commands, biggest %d", batches, biggest);
  return true;
}

static bool t_many_ops(void) {
  /* one client, many operations back to back on its one connection */
  mongoc_client_t *c = root_client();
  mongoc_collection_t *coll = fresh(c, "many");
  bson_error_t err;
  for (int i = 0; i < 200; i++) {
    bson_t *d = BCON_NEW("_id", BCON_INT32(i), "v", BCON_INT32(i * 3));
    bool r = mongoc_collection_insert_one(coll, d, NULL, NULL, &err);
    bson_destroy(d);
    CHECK(r, "insert %d: %s", i, err.message);
  }
  for (int i = 0; i < 200; i += 7) {
    bson_t *f = BCON_NEW("_id", BCON_INT32(i));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, f, NULL, NULL);
    const bson_t *d;
    bool got = mongoc_cursor_next(cur, &d);
    int64_t v = got ? get_int(d, "v") : -1;
    mongoc_cursor_destroy(cur);
    bson_destroy(f);
    CHECK(v == i * 3, "find %d", i);
  }
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(c);
  return true;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s PORT SMALL_PORT\n", argv[0]);
    return 2;
  }
  port = atoi(argv[1]);
  small_port = atoi(argv[2]);
  mongoc_init();
  mongoc_log_set_handler(NULL, NULL);
  run("SCRAM-SHA-256 with percent-encoded credentials", t_scram256);
  run("SCRAM-SHA-1 (explicit and negotiated)", t_scram1);
  run("wrong password / wrong mechanism fail", t_auth_fail);
  run("unauthenticated: ping works, find gets 13", t_unauthenticated);
  run("authSource=appdb user", t_authsource);
  run("insert_one / insert_many ordered and unordered with duplicates", t_insert);
  run("find_with_opts projection sort skip limit", t_find);
  run("cursor batches, getMore count, killCursors on early destroy", t_batches);
  run("update_one / update_many / replace_one / upsert / delete_one / delete_many", t_update);
  run("count_documents / estimated_document_count", t_counts);
  run("distinct and aggregate", t_distinct_aggregate);
  run("find_and_modify_with_opts update / upsert / remove", t_find_and_modify);
  run("createIndexes unique -> 11000, listIndexes, dropIndexes, drop", t_indexes);
  run("command_simple, unknown command, listCollections, listDatabases", t_commands);
  run("BSON types round-trip byte for byte", t_types);
  run("--max-write-batch 10 makes insert_many split", t_bulk_split);
  run("200 operations on one client", t_many_ops);
  if (!getenv("TAP_NO_PLAN")) printf("1..%d\n", tap_n);
  mongoc_cleanup();
  return tap_failed ? 1 : 0;
}
