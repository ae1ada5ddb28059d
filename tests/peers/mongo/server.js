#!/usr/bin/env node
'use strict';
// An in-memory MongoDB wire-protocol server for evlua's tests (issue 17).
// It answers like a standalone mongod 7.0: OP_MSG commands (plus the legacy
// OP_QUERY handshake), SCRAM-SHA-1/SCRAM-SHA-256, CRUD, cursors, indexes and
// aggregation. Documents are kept as typed BSON values (promoteValues: false)
// so every BSON type round-trips; mingo matches and aggregates on a promoted
// "view" of them. See README.md in this folder.

const net = require('net');
const crypto = require('crypto');
const BSON = require('bson');
const mingo = require('mingo');
require('mingo/init/system');

const { Int32, Long, Double, Decimal128, ObjectId, Binary, Timestamp, BSONRegExp, MinKey, MaxKey } = BSON;

// ---------------------------------------------------------------- options
const opts = {
  port: 0, host: '127.0.0.1', users: [], verbose: false, stdinWatch: true,
  maxMessageSize: 48000000, maxBsonSize: 16 * 1024 * 1024, maxWriteBatch: 100000,
};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const next = () => {
    if (i + 1 >= process.argv.length) usage(`${a} needs a value`);
    return process.argv[++i];
  };
  if (a === '--port') opts.port = parseInt(next(), 10);
  else if (a === '--host') opts.host = next();
  else if (a === '--auth') opts.users.push(parseUser(next()));
  else if (a === '--max-message-size') opts.maxMessageSize = parseInt(next(), 10);
  else if (a === '--max-bson-size') opts.maxBsonSize = parseInt(next(), 10);
  else if (a === '--max-write-batch') opts.maxWriteBatch = parseInt(next(), 10);
  else if (a === '--verbose') opts.verbose = true;
  else if (a === '--no-stdin-watch') opts.stdinWatch = false;
  else usage(`unknown option ${a}`);
}
for (const k of ['port', 'maxMessageSize', 'maxBsonSize', 'maxWriteBatch']) {
  if (!Number.isInteger(opts[k]) || opts[k] < 0) usage(`bad value for ${k}`);
}

function usage(msg) {
  process.stderr.write(`server.js: ${msg}\nusage: server.js [--port N] [--auth user:password[:MECH,MECH][@db]]...` +
    ' [--max-message-size N] [--max-bson-size N] [--max-write-batch N] [--verbose] [--no-stdin-watch]\n');
  process.exit(2);
}

// "user:password[:mechs][@db]"; user and password may be percent-encoded.
function parseUser(spec) {
  let db = 'admin';
  const at = spec.lastIndexOf('@');
  if (at > 0) { db = spec.slice(at + 1); spec = spec.slice(0, at); }
  const parts = spec.split(':');
  if (parts.length < 2 || parts.length > 3 || !parts[0]) usage(`bad --auth ${spec}`);
  const mechs = parts[2] ? parts[2].split(',') : ['SCRAM-SHA-1', 'SCRAM-SHA-256'];
  for (const m of mechs) if (m !== 'SCRAM-SHA-1' && m !== 'SCRAM-SHA-256') usage(`unknown mechanism ${m}`);
  return { user: decodeURIComponent(parts[0]), password: decodeURIComponent(parts[1]), mechs, db };
}

const log = opts.verbose ? (...a) => process.stderr.write(a.join(' ') + '\n') : () => {};

// ---------------------------------------------------------------- errors
const CODE_NAMES = {
  1: 'InternalError', 2: 'BadValue', 4: 'NoSuchKey', 9: 'FailedToParse', 13: 'Unauthorized', 14: 'TypeMismatch',
  16: 'InvalidLength', 18: 'AuthenticationFailed', 20: 'IllegalOperation', 26: 'NamespaceNotFound',
  27: 'IndexNotFound', 28: 'PathNotViable', 40: 'ConflictingUpdateOperators', 43: 'CursorNotFound',
  48: 'NamespaceExists', 52: 'DollarPrefixedFieldName', 59: 'CommandNotFound', 66: 'ImmutableField',
  67: 'CannotCreateIndex', 72: 'InvalidOptions', 73: 'InvalidNamespace', 85: 'IndexOptionsConflict',
  86: 'IndexKeySpecsConflict', 334: 'MechanismUnavailable', 352: 'UnsupportedOpQueryCommand',
  10334: 'BSONObjectTooLarge', 11000: 'DuplicateKey', 40414: 'Location40414', 40415: 'Location40415',
  31254: 'Location31254', 31253: 'Location31253', 51024: 'Location51024',
};
class MongoErr extends Error {
  constructor(code, msg, extra) { super(msg); this.code = code; this.extra = extra; }
}
const fail = (code, msg, extra) => { throw new MongoErr(code, msg, extra); };
function errorReply(e) {
  if (e instanceof MongoErr) {
    return Object.assign({ ok: 0, errmsg: e.message, code: e.code, codeName: CODE_NAMES[e.code] || `Location${e.code}` },
      e.extra || {});
  }
  log('internal error', e && e.stack);
  return { ok: 0, errmsg: String(e && e.message || e), code: 1, codeName: 'InternalError' };
}

// ---------------------------------------------------------------- BSON value helpers
const DESER = { promoteValues: false, bsonRegExp: true, promoteBuffers: false, validation: { utf8: true } };
const btype = (v) => (v !== null && typeof v === 'object' && v._bsontype) || null;
const isDoc = (v) => v !== null && typeof v === 'object' && !Array.isArray(v) && !v._bsontype &&
  !(v instanceof Date) && !(v instanceof RegExp) && !(v instanceof Uint8Array);
const isNum = (v) => typeof v === 'number' || ['Int32', 'Double', 'Long', 'Decimal128'].includes(btype(v));

function toNum(v) {
  if (typeof v === 'number') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  switch (btype(v)) {
    case 'Int32': case 'Double': return v.value;
    case 'Long': return v.toNumber();
    case 'Decimal128': return parseFloat(v.toString());
  }
  return NaN;
}
const int32 = (n) => new Int32(n);
const i64 = (n) => Long.fromNumber(n);

// What mingo sees of a Binary, MinKey or MaxKey: mingo compares unknown
// objects by toString(), so this carries ck() (subtype and bytes) there.
class ViewValue {
  constructor(orig) { this.orig = orig; this.key = ck(orig); }
  toString() { return this.key; }
}
// The promoted copy mingo sees: numbers become JS numbers, BSON regexes RegExps.
function view(v) {
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(view);
  switch (btype(v)) {
    case null:
      if (v instanceof Date) return v;
      { const o = {}; for (const k of Object.keys(v)) o[k] = view(v[k]); return o; }
    case 'Int32': case 'Double': case 'Long': case 'Decimal128': return toNum(v);
    case 'BSONRegExp':
      try { return new RegExp(v.pattern, v.options.replace(/[^imsu]/g, '')); } catch { return v; }
    case 'Binary': case 'MinKey': case 'MaxKey': return new ViewValue(v);
    default: return v;
  }
}
// Back from mingo's output to BSON values: integral numbers become int32
// (int64 past the int32 range), the rest doubles.
function unview(v) {
  if (typeof v === 'number') {
    if (Number.isInteger(v) && !Object.is(v, -0)) {
      if (v >= -2147483648 && v <= 2147483647) return int32(v);
      if (Number.isSafeInteger(v)) return i64(v);
    }
    return new Double(v);
  }
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(unview);
  if (v instanceof RegExp) return new BSONRegExp(v.source, v.flags);
  if (v instanceof ViewValue) return v.orig;
  if (isDoc(v)) { const o = {}; for (const k of Object.keys(v)) if (v[k] !== undefined) o[k] = unview(v[k]); return o; }
  return v;
}
function clone(v) {
  if (Array.isArray(v)) return v.map(clone);
  if (v instanceof Date) return new Date(+v);
  if (isDoc(v)) { const o = {}; for (const k of Object.keys(v)) o[k] = clone(v[k]); return o; }
  return v;
}

// mongod's comparison order of BSON types.
function typeRank(v) {
  if (v === undefined || v === null) return 2;
  if (typeof v === 'number' || typeof v === 'bigint') return 3;
  if (typeof v === 'string') return 4;
  if (typeof v === 'boolean') return 9;
  if (Array.isArray(v)) return 6;
  if (v instanceof Date) return 10;
  if (v instanceof RegExp) return 12;
  switch (btype(v)) {
    case 'MinKey': return 1;
    case 'Int32': case 'Double': case 'Long': case 'Decimal128': return 3;
    case 'BSONSymbol': return 4;
    case 'Binary': return 7;
    case 'ObjectId': return 8;
    case 'Timestamp': return 11;
    case 'BSONRegExp': return 12;
    case 'Code': return 13;
    case 'MaxKey': return 127;
    case null: return 5;
    default: return 5;
  }
}
function cmpNum(a, b) {
  if (btype(a) === 'Long' && btype(b) === 'Long') return a.compare(b);
  const x = toNum(a); const y = toNum(b);
  if (Number.isNaN(x)) return Number.isNaN(y) ? 0 : -1;
  if (Number.isNaN(y)) return 1;
  return x < y ? -1 : x > y ? 1 : 0;
}
const cmpStr = (a, b) => { const x = Buffer.from(a); const y = Buffer.from(b); return Buffer.compare(x, y); };
function compare(a, b) {
  const ra = typeRank(a); const rb = typeRank(b);
  if (ra !== rb) return ra < rb ? -1 : 1;
  switch (ra) {
    case 3: return cmpNum(a, b);
    case 4: return cmpStr(String(btype(a) ? a.value : a), String(btype(b) ? b.value : b));
    case 5: {
      const ka = Object.keys(a); const kb = Object.keys(b);
      for (let i = 0; i < Math.min(ka.length, kb.length); i++) {
        const c = compare(a[ka[i]], b[kb[i]]) || cmpStr(ka[i], kb[i]);
        if (c) return c;
      }
      return ka.length - kb.length;
    }
    case 6: {
      for (let i = 0; i < Math.min(a.length, b.length); i++) { const c = compare(a[i], b[i]); if (c) return c; }
      return a.length - b.length;
    }
    case 7:
      if (a.position !== b.position) return a.position - b.position;
      if (a.sub_type !== b.sub_type) return a.sub_type - b.sub_type;
      return Buffer.compare(Buffer.from(a.buffer.subarray(0, a.position)), Buffer.from(b.buffer.subarray(0, b.position)));
    case 8: return cmpStr(a.toHexString(), b.toHexString());
    case 9: return (a ? 1 : 0) - (b ? 1 : 0);
    case 10: return Math.sign(+a - +b);
    case 11: return a.compare(b);
    case 12: return cmpStr(String(a.pattern ?? a.source), String(b.pattern ?? b.source)) ||
      cmpStr(String(a.options ?? a.flags), String(b.options ?? b.flags));
    default: return 0;
  }
}

// A string that is equal for values mongod considers equal (1 == 1.0 == 1L).
function ck(v) {
  if (v === undefined || v === null) return 'z';
  if (typeof v === 'string') return 's' + JSON.stringify(v);
  if (typeof v === 'boolean') return v ? 'T' : 'F';
  if (typeof v === 'number') return 'n' + String(v);
  if (Array.isArray(v)) return '[' + v.map(ck).join(',') + ']';
  if (v instanceof Date) return 'd' + (+v);
  switch (btype(v)) {
    case 'Int32': case 'Double': return 'n' + String(v.value);
    case 'Long': return 'n' + (Number.isSafeInteger(v.toNumber()) ? String(v.toNumber()) : v.toString());
    case 'Decimal128': return 'n' + String(parseFloat(v.toString()));
    case 'ObjectId': return 'o' + v.toHexString();
    case 'Binary': return 'b' + v.sub_type + ':' + Buffer.from(v.buffer.subarray(0, v.position)).toString('base64');
    case 'Timestamp': return 't' + v.toString();
    case 'BSONRegExp': return 'r/' + v.pattern + '/' + v.options;
    case 'MinKey': return 'm-';
    case 'MaxKey': return 'm+';
    case 'BSONSymbol': return 's' + JSON.stringify(v.value);
    case null: return '{' + Object.keys(v).map((k) => JSON.stringify(k) + ':' + ck(v[k])).join(',') + '}';
    default: return v._bsontype + ':' + String(v);
  }
}

// mongod's display of a value in error messages ({ name: "x" }).
function fmt(v) {
  if (v === undefined || v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return '[ ' + v.map(fmt).join(', ') + ' ]';
  if (v instanceof Date) return `new Date(${+v})`;
  switch (btype(v)) {
    case 'Int32': return String(v.value);
    case 'Double': return Number.isInteger(v.value) ? v.value.toFixed(1) : String(v.value);
    case 'Long': return v.toString();
    case 'Decimal128': return v.toString();
    case 'ObjectId': return `ObjectId('${v.toHexString()}')`;
    case 'Binary': return `BinData(${v.sub_type}, ${Buffer.from(v.buffer.subarray(0, v.position)).toString('hex').toUpperCase()})`;
    case 'Timestamp': return `Timestamp(${v.high >>> 0}, ${v.low >>> 0})`;
    case 'BSONRegExp': return `/${v.pattern}/${v.options}`;
    case 'MinKey': return 'MinKey';
    case 'MaxKey': return 'MaxKey';
    case null: {
      const ks = Object.keys(v);
      return ks.length ? '{ ' + ks.map((k) => `${k}: ${fmt(v[k])}`).join(', ') + ' }' : '{}';
    }
    default: return String(v);
  }
}
function typeName(v) {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return 'double';
  if (Array.isArray(v)) return 'array';
  if (v instanceof Date) return 'date';
  return { Int32: 'int', Double: 'double', Long: 'long', Decimal128: 'decimal', ObjectId: 'objectId', Binary: 'binData',
    Timestamp: 'timestamp', BSONRegExp: 'regex', MinKey: 'minKey', MaxKey: 'maxKey' }[btype(v)] || 'object';
}

// ---------------------------------------------------------------- paths
// All values reached by a dotted path, descending into arrays as mongod does.
function pathValues(doc, path) {
  const parts = path.split('.');
  const out = [];
  const walk = (v, i) => {
    if (i === parts.length) { out.push(v); return; }
    if (Array.isArray(v)) {
      const idx = /^\d+$/.test(parts[i]) ? parseInt(parts[i], 10) : -1;
      if (idx >= 0 && idx < v.length) walk(v[idx], i + 1);
      for (const e of v) if (isDoc(e)) walk(e, i);
      return;
    }
    if (isDoc(v) && Object.prototype.hasOwnProperty.call(v, parts[i])) walk(v[parts[i]], i + 1);
  };
  walk(doc, 0);
  return out;
}
// The single value at a path (no array traversal except numeric indexes).
function getPath(doc, path) {
  let v = doc;
  for (const p of path.split('.')) {
    if (Array.isArray(v) && /^\d+$/.test(p)) v = v[parseInt(p, 10)];
    else if (isDoc(v) && Object.prototype.hasOwnProperty.call(v, p)) v = v[p];
    else return undefined;
  }
  return v;
}

// ---------------------------------------------------------------- matching, sorting, projection
// $type is answered here, from the typed values (mingo sees plain numbers).
const TYPE_ALIASES = { 1: 'double', 2: 'string', 3: 'object', 4: 'array', 5: 'binData', 6: 'undefined', 7: 'objectId',
  8: 'bool', 9: 'date', 10: 'null', 11: 'regex', 13: 'javascript', 14: 'symbol', 16: 'int', 17: 'timestamp', 18: 'long',
  19: 'decimal', '-1': 'minKey', 127: 'maxKey' };
function typeMatcher(spec) {
  const wanted = (Array.isArray(spec) ? spec : [spec]).map((t) => {
    const name = isNum(t) ? TYPE_ALIASES[String(toNum(t))] : t;
    if (typeof name !== 'string' || !(name === 'number' || Object.values(TYPE_ALIASES).includes(name))) {
      fail(2, `Unknown type name alias: ${typeof t === 'string' ? t : fmt(t)}`);
    }
    return name;
  });
  const one = (v) => {
    const n = typeName(v);
    return wanted.includes(n) || (wanted.includes('number') && ['int', 'long', 'double', 'decimal'].includes(n));
  };
  return (vals) => vals.some((v) => one(v) || (Array.isArray(v) && v.some(one)));
}
// Takes the $type conditions out of a filter (top level and $and): returns the rest and the checks.
function splitTypeChecks(filter) {
  const checks = [];
  const rest = {};
  for (const k of Object.keys(filter)) {
    const v = filter[k];
    if (k === '$and' && Array.isArray(v)) {
      const parts = v.map((f) => { if (!isDoc(f)) return f; const r = splitTypeChecks(f); checks.push(...r.checks); return r.rest; })
        .filter((f) => !isDoc(f) || Object.keys(f).length);
      if (parts.length) rest.$and = parts;
      continue;
    }
    if (!k.startsWith('$') && isDoc(v) && v.$type !== undefined) {
      const m = typeMatcher(v.$type);
      checks.push((doc) => m(pathValues(doc, k)));
      const others = Object.assign({}, v);
      delete others.$type;
      if (Object.keys(others).length) rest[k] = others;
      continue;
    }
    rest[k] = v;
  }
  return { rest, checks };
}

const ID_ONLY_TYPES = new Set(['ObjectId', 'Int32', 'Long', 'Double', 'Binary', 'Decimal128']);
function compileFilter(filter) {
  if (filter === undefined || filter === null) filter = {};
  if (!isDoc(filter)) fail(2, `BSON field 'filter' is the wrong type '${typeName(filter)}', expected type 'object'`);
  const keys = Object.keys(filter);
  let idKey = null;
  if (keys.length === 1 && keys[0] === '_id') {
    const v = filter._id;
    if (typeof v === 'string' || ID_ONLY_TYPES.has(btype(v)) || v instanceof Date) idKey = ck(v);
  }
  if (keys.length === 0) return { all: true, test: () => true, idKey: null };
  if (idKey !== null) {
    const want = idKey;
    return { all: false, idKey, test: (rec) => ck(rec.doc._id) === want };
  }
  const { rest, checks } = splitTypeChecks(filter);
  let q = null;
  if (Object.keys(rest).length) {
    try { q = new mingo.Query(view(rest)); } catch (e) { fail(2, e.message); }
  }
  if (!checks.length) return { all: false, idKey, test: (rec) => q.test(recView(rec)) };
  return { all: false, idKey, test: (rec) => checks.every((c) => c(rec.doc)) && (!q || q.test(recView(rec))) };
}
function recView(rec) { if (!rec.view) rec.view = view(rec.doc); return rec.view; }
function matches(coll, filter) {
  const f = compileFilter(filter);
  if (f.idKey !== null) { const r = coll.docs.get(f.idKey); return r ? [r] : []; }
  const out = [];
  for (const r of coll.docs.values()) if (f.test(r)) out.push(r);
  return out;
}

function sortKey(doc, path, dir) {
  const vals = [];
  for (const v of pathValues(doc, path)) {
    if (Array.isArray(v)) { if (v.length === 0) vals.push(undefined); else vals.push(...v); } else vals.push(v);
  }
  if (vals.length === 0) return null;
  let best = vals[0];
  for (const v of vals) if ((dir > 0 ? compare(v, best) < 0 : compare(v, best) > 0)) best = v;
  return best;
}
function sortDocs(docs, spec) {
  if (!spec || !isDoc(spec)) return docs;
  const keys = Object.keys(spec).map((k) => {
    const d = spec[k];
    if (isDoc(d) && d.$meta) return null;
    const n = toNum(d);
    if (n !== 1 && n !== -1) fail(15975, '$sort key ordering must be 1 (for ascending) or -1 (for descending)');
    return [k, n];
  }).filter(Boolean);
  if (!keys.length) return docs;
  const decorated = docs.map((d, i) => ({ d, i, k: keys.map(([p, dir]) => sortKey(d, p, dir)) }));
  decorated.sort((x, y) => {
    for (let j = 0; j < keys.length; j++) {
      const c = compare(x.k[j], y.k[j]);
      if (c) return c * keys[j][1];
    }
    return x.i - y.i;
  });
  return decorated.map((x) => x.d);
}

function projector(spec) {
  if (!spec || !isDoc(spec) || Object.keys(spec).length === 0) return null;
  let simple = true; let include = null; let idSeen;
  const tree = {};
  for (const k of Object.keys(spec)) {
    const v = spec[k];
    if (typeof v !== 'boolean' && !isNum(v)) { simple = false; break; }
    if (k.includes('$')) { simple = false; break; }
    const on = typeof v === 'boolean' ? v : toNum(v) !== 0;
    if (k === '_id') { idSeen = on; continue; }
    if (include === null) include = on;
    else if (include !== on) {
      fail(31254, on ? `Cannot do inclusion on field ${k} in exclusion projection`
        : `Cannot do exclusion on field ${k} in inclusion projection`);
    }
    let t = tree; const parts = k.split('.');
    for (let i = 0; i < parts.length - 1; i++) {
      if (t[parts[i]] === true) break;
      t = t[parts[i]] = t[parts[i]] || {};
    }
    if (t !== true) t[parts[parts.length - 1]] = true;
  }
  if (!simple) {
    const q = new mingo.Query({});
    return (doc) => unview(q.find([view(doc)], view(spec)).next());
  }
  if (include === null) include = idSeen === undefined ? true : false;
  if (include === false && idSeen === undefined && Object.keys(tree).length === 0) return null;
  const keepId = idSeen !== false;
  if (include) {
    const inc = (v, t) => {
      if (Array.isArray(v)) return v.filter((e) => isDoc(e) || Array.isArray(e)).map((e) => inc(e, t));
      const o = {};
      for (const k of Object.keys(v)) {
        if (t[k] === true) o[k] = v[k];
        else if (t[k] && (isDoc(v[k]) || Array.isArray(v[k]))) o[k] = inc(v[k], t[k]);
      }
      return o;
    };
    return (doc) => {
      const o = inc(doc, tree);
      if (keepId && doc._id !== undefined) return Object.assign({ _id: doc._id }, o);
      delete o._id;
      return o;
    };
  }
  const exc = (v, t) => {
    if (Array.isArray(v)) return v.map((e) => (isDoc(e) || Array.isArray(e) ? exc(e, t) : e));
    const o = {};
    for (const k of Object.keys(v)) {
      if (t[k] === true) continue;
      o[k] = t[k] && (isDoc(v[k]) || Array.isArray(v[k])) ? exc(v[k], t[k]) : v[k];
    }
    return o;
  };
  return (doc) => { const o = exc(doc, tree); if (!keepId) delete o._id; return o; };
}

// ---------------------------------------------------------------- update operators on typed documents
function arith(a, b, op) {
  const ta = btype(a) || (typeof a === 'number' ? 'Double' : null);
  const tb = btype(b) || (typeof b === 'number' ? 'Double' : null);
  if (ta === 'Decimal128' || tb === 'Decimal128') {
    const r = op === '+' ? toNum(a) + toNum(b) : toNum(a) * toNum(b);
    return Decimal128.fromString(String(r));
  }
  if (ta === 'Double' || tb === 'Double') return new Double(op === '+' ? toNum(a) + toNum(b) : toNum(a) * toNum(b));
  const la = ta === 'Long' ? a : Long.fromNumber(toNum(a));
  const lb = tb === 'Long' ? b : Long.fromNumber(toNum(b));
  const r = op === '+' ? la.add(lb) : la.multiply(lb);
  if (ta === 'Int32' && tb === 'Int32' && r.lessThanOrEqual(2147483647) && r.greaterThanOrEqual(-2147483648)) {
    return int32(r.toNumber());
  }
  return r;
}

// Walk to the parent of a dotted path, creating documents on the way when create is set.
function walkTo(doc, path, create, fullDoc) {
  const parts = path.split('.');
  let cur = doc;
  for (let i = 0; i < parts.length - 1; i++) {
    const p = parts[i];
    let next;
    if (Array.isArray(cur)) {
      if (!/^\d+$/.test(p)) fail(28, `Cannot create field '${p}' in element {${parts.slice(0, i).join('.')}: ${fmt(cur)}}`);
      next = cur[parseInt(p, 10)];
    } else next = cur[p];
    if (next === undefined || next === null && create) {
      if (!create) return null;
      next = {};
      if (Array.isArray(cur)) { const idx = parseInt(p, 10); while (cur.length < idx) cur.push(null); cur[idx] = next; } else cur[p] = next;
    } else if (!isDoc(next) && !Array.isArray(next)) {
      if (!create) return null;
      fail(28, `Cannot create field '${parts[i + 1]}' in element {${p}: ${fmt(next)}}`);
    }
    cur = next;
  }
  return { parent: cur, key: parts[parts.length - 1] };
}
function setAt(parent, key, value) {
  if (Array.isArray(parent)) {
    if (!/^\d+$/.test(key)) fail(28, `Cannot create field '${key}' in element {${fmt(parent)}}`);
    const idx = parseInt(key, 10);
    while (parent.length < idx) parent.push(null);
    parent[idx] = value;
  } else parent[key] = value;
}
const getAt = (parent, key) => (Array.isArray(parent) ? parent[parseInt(key, 10)] : parent[key]);

const UPDATE_OPS = new Set(['$set', '$unset', '$inc', '$mul', '$min', '$max', '$rename', '$push', '$addToSet', '$pop',
  '$pull', '$pullAll', '$setOnInsert', '$currentDate', '$bit']);

function elementMatcher(cond) {
  if (isDoc(cond)) {
    const keys = Object.keys(cond);
    const opCond = keys.length > 0 && keys.every((k) => k.startsWith('$'));
    const q = new mingo.Query(opCond ? { x: view(cond) } : view(cond));
    return (e) => (opCond ? q.test({ x: view(e) }) : isDoc(e) && q.test(view(e)));
  }
  const key = ck(cond);
  return (e) => ck(e) === key;
}

function applyOperators(doc, update, isInsert) {
  const paths = [];
  for (const op of Object.keys(update)) {
    if (!UPDATE_OPS.has(op)) {
      fail(9, `Unknown modifier: ${op}. Expected a valid update modifier or pipeline-style update specified as an array`);
    }
    const args = update[op];
    if (!isDoc(args)) fail(9, `Modifiers operate on fields but we found type ${typeName(args)} instead. For example: {$mod: {<field>: ...}} not {${op}: ${fmt(args)}}`);
    for (const p of Object.keys(args)) {
      if (p === '') fail(56, 'An empty update path is not valid.');
      paths.push(p);
      if (op === '$rename') paths.push(String(args[p]));
    }
  }
  for (let i = 0; i < paths.length; i++) {
    for (let j = i + 1; j < paths.length; j++) {
      const a = paths[i]; const b = paths[j];
      if (a === b || a.startsWith(b + '.') || b.startsWith(a + '.')) {
        fail(40, `Updating the path '${b}' would create a conflict at '${a.length < b.length ? a : b}'`);
      }
    }
  }
  const idKey = `{_id: ${fmt(doc._id)}}`;
  for (const op of Object.keys(update)) {
    const args = update[op];
    if (op === '$setOnInsert' && !isInsert) continue;
    for (const path of Object.keys(args)) {
      const arg = args[path];
      if (op === '$unset') {
        const w = walkTo(doc, path, false);
        if (w) { if (Array.isArray(w.parent)) setAt(w.parent, w.key, null); else delete w.parent[w.key]; }
        continue;
      }
      if (op === '$rename') {
        const w = walkTo(doc, path, false);
        if (!w || getAt(w.parent, w.key) === undefined) continue;
        const v = getAt(w.parent, w.key);
        delete w.parent[w.key];
        const t = walkTo(doc, String(arg), true);
        setAt(t.parent, t.key, v);
        continue;
      }
      const w = walkTo(doc, path, true);
      const cur = getAt(w.parent, w.key);
      switch (op) {
        case '$set': case '$setOnInsert': setAt(w.parent, w.key, clone(arg)); break;
        case '$inc': case '$mul': {
          if (!isNum(arg)) fail(14, `Cannot ${op === '$inc' ? 'increment' : 'multiply'} with non-numeric argument: {${path}: ${fmt(arg)}}`);
          if (cur === undefined) { setAt(w.parent, w.key, op === '$inc' ? clone(arg) : arith(arg, int32(0), '*')); break; }
          if (!isNum(cur)) {
            fail(14, `Cannot apply ${op} to a value of non-numeric type. ${idKey} has the field '${w.key}' of non-numeric type ${typeName(cur)}`);
          }
          setAt(w.parent, w.key, arith(cur, arg, op === '$inc' ? '+' : '*'));
          break;
        }
        case '$min': case '$max':
          if (cur === undefined || (op === '$min' ? compare(arg, cur) < 0 : compare(arg, cur) > 0)) setAt(w.parent, w.key, clone(arg));
          break;
        case '$currentDate': {
          const ts = isDoc(arg) && arg.$type === 'timestamp';
          setAt(w.parent, w.key, ts ? new Timestamp({ t: Math.floor(Date.now() / 1000), i: 1 }) : new Date());
          break;
        }
        case '$push': case '$addToSet': {
          if (cur !== undefined && !Array.isArray(cur)) {
            fail(2, `The field '${path}' must be an array but is of type ${typeName(cur)} in document ${idKey}`);
          }
          const arr = cur === undefined ? [] : cur;
          const each = isDoc(arg) && arg.$each !== undefined;
          let items = each ? arg.$each : [arg];
          if (!Array.isArray(items)) fail(2, `The argument to $each in ${op} must be an array but it was of type: ${typeName(items)}`);
          items = items.map(clone);
          if (op === '$addToSet') {
            for (const it of items) if (!arr.some((e) => ck(e) === ck(it))) arr.push(it);
          } else {
            if (each && arg.$position !== undefined) {
              let pos = toNum(arg.$position); if (pos < 0) pos = Math.max(0, arr.length + pos);
              arr.splice(Math.min(pos, arr.length), 0, ...items);
            } else arr.push(...items);
            if (each && arg.$sort !== undefined) {
              const s = arg.$sort;
              const sorted = isDoc(s) ? sortDocs(arr.slice(), s) : arr.slice().sort((a, b) => compare(a, b) * toNum(s));
              arr.splice(0, arr.length, ...sorted);
            }
            if (each && arg.$slice !== undefined) {
              const n = toNum(arg.$slice);
              const kept = n >= 0 ? arr.slice(0, n) : arr.slice(Math.max(0, arr.length + n));
              arr.splice(0, arr.length, ...kept);
            }
          }
          setAt(w.parent, w.key, arr);
          break;
        }
        case '$pop':
          if (cur === undefined) break;
          if (!Array.isArray(cur)) fail(14, `Path '${path}' contains an element of non-array type '${typeName(cur)}'`);
          if (toNum(arg) >= 0) cur.pop(); else cur.shift();
          break;
        case '$pull': case '$pullAll': {
          if (cur === undefined) break;
          if (!Array.isArray(cur)) fail(2, 'Cannot apply $pull to a non-array value');
          let test;
          if (op === '$pullAll') {
            if (!Array.isArray(arg)) fail(2, `$pullAll requires an array argument but was given a ${typeName(arg)}`);
            const keys = new Set(arg.map(ck));
            test = (e) => keys.has(ck(e));
          } else test = elementMatcher(arg);
          setAt(w.parent, w.key, cur.filter((e) => !test(e)));
          break;
        }
        case '$bit': {
          if (!isDoc(arg)) fail(9, '$bit needs a document');
          let v = cur === undefined ? int32(0) : cur;
          for (const bop of Object.keys(arg)) {
            const a = Long.fromNumber(toNum(v)); const b = Long.fromNumber(toNum(arg[bop]));
            const r = bop === 'and' ? a.and(b) : bop === 'or' ? a.or(b) : a.xor(b);
            v = btype(v) === 'Long' || btype(arg[bop]) === 'Long' ? r : int32(r.toInt());
          }
          setAt(w.parent, w.key, v);
          break;
        }
      }
    }
  }
  return doc;
}

function isOperatorUpdate(u) {
  const ks = Object.keys(u);
  return ks.length > 0 && ks[0].startsWith('$');
}
function checkReplacement(u) {
  for (const k of Object.keys(u)) if (k.startsWith('$')) fail(52, `The dollar ($) prefixed field '${k}' in '${k}' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith.`);
}

// Apply an update (operators, replacement or pipeline) to a copy of doc.
function applyUpdate(doc, u, isInsert) {
  if (Array.isArray(u)) {
    const out = new mingo.Aggregator(u.map(view)).run([view(doc)]);
    const res = unview(out[0] || {});
    return withIdFirst(res, doc._id);
  }
  if (!isDoc(u)) fail(9, 'Update argument must be either an object or an array');
  if (isOperatorUpdate(u)) {
    const d = applyOperators(clone(doc), u, isInsert);
    return d;
  }
  checkReplacement(u);
  const res = clone(u);
  if (res._id !== undefined && doc._id !== undefined && ck(res._id) !== ck(doc._id)) {
    fail(66, `After applying the update, the (immutable) field '_id' was found to have been altered to _id: ${fmt(res._id)}`);
  }
  return withIdFirst(res, doc._id);
}
function withIdFirst(d, id) {
  if (id === undefined && d._id === undefined) return d;
  const o = { _id: d._id !== undefined ? d._id : id };
  for (const k of Object.keys(d)) if (k !== '_id') o[k] = d[k];
  return o;
}

// The document an upsert starts from: the equality fields of the filter.
function upsertSeed(q) {
  const seed = {};
  const add = (f) => {
    if (!isDoc(f)) return;
    for (const k of Object.keys(f)) {
      if (k === '$and' && Array.isArray(f[k])) { f[k].forEach(add); continue; }
      if (k.startsWith('$')) continue;
      let v = f[k];
      if (isDoc(v)) {
        const ks = Object.keys(v);
        if (ks.length && ks[0].startsWith('$')) { if (ks.length === 1 && ks[0] === '$eq') v = v.$eq; else continue; }
      }
      if (v instanceof RegExp || btype(v) === 'BSONRegExp') continue;
      const w = walkTo(seed, k, true);
      setAt(w.parent, w.key, clone(v));
    }
  };
  add(q);
  return seed;
}

// ---------------------------------------------------------------- storage
const databases = new Map(); // name -> Map(collName -> Collection)
let collUuidCounter = 0;

class Collection {
  constructor(db, name, options) {
    this.db = db; this.name = name; this.ns = `${db}.${name}`;
    this.docs = new Map(); // ck(_id) -> { doc, view }
    this.options = options || {};
    this.uuid = new Binary(crypto.randomBytes(16), 4);
    this.order = ++collUuidCounter;
    this.indexes = [{ name: '_id_', key: { _id: int32(1) }, spec: { v: int32(2), key: { _id: int32(1) }, name: '_id_' }, unique: true, id: true }];
  }
  indexKey(ix, doc) {
    return Object.keys(ix.key).map((f) => {
      const v = getPath(doc, f);
      return ck(v === undefined ? null : v);
    }).join('|');
  }
  dupError(ix, doc) {
    const fields = Object.keys(ix.key);
    const keyValue = {};
    for (const f of fields) { const v = getPath(doc, f); keyValue[f] = v === undefined ? null : v; }
    const shown = fields.map((f) => `${f}: ${fmt(keyValue[f])}`).join(', ');
    return new MongoErr(11000, `E11000 duplicate key error collection: ${this.ns} index: ${ix.name} dup key: { ${shown} }`,
      { keyPattern: ix.key, keyValue });
  }
  // Check unique indexes for doc (replacing old, if any); throws a duplicate key error.
  checkUnique(doc, old) {
    for (const ix of this.indexes) {
      if (!ix.unique) continue;
      const k = ix.id ? ck(doc._id) : this.indexKey(ix, doc);
      if (ix.id) {
        if (this.docs.has(k) && !(old && ck(old._id) === k)) throw this.dupError(ix, doc);
      } else {
        const owner = ix.map.get(k);
        if (owner !== undefined && !(old && owner === ck(old._id))) throw this.dupError(ix, doc);
      }
    }
  }
  insert(doc) {
    this.checkUnique(doc, null);
    if (!rawOf.has(doc)) rawOf.set(doc, BSON.serialize(doc));
    const id = ck(doc._id);
    this.docs.set(id, { doc, view: null });
    for (const ix of this.indexes) if (ix.map) ix.map.set(this.indexKey(ix, doc), id);
  }
  replace(rec, doc) {
    this.checkUnique(doc, rec.doc);
    const id = ck(rec.doc._id);
    for (const ix of this.indexes) {
      if (!ix.map) continue;
      const k = this.indexKey(ix, rec.doc);
      if (ix.map.get(k) === id) ix.map.delete(k);
      ix.map.set(this.indexKey(ix, doc), id);
    }
    if (!rawOf.has(doc)) rawOf.set(doc, BSON.serialize(doc));
    rec.doc = doc; rec.view = null;
  }
  remove(rec) {
    const id = ck(rec.doc._id);
    for (const ix of this.indexes) {
      if (!ix.map) continue;
      const k = this.indexKey(ix, rec.doc);
      if (ix.map.get(k) === id) ix.map.delete(k);
    }
    this.docs.delete(id);
  }
}

function checkName(name, what) {
  if (typeof name !== 'string') fail(2, `collection name has invalid type ${typeName(name)}`);
  if (name === '' || name.includes('\0') || name.startsWith('.') || name.includes('$')) {
    fail(73, `Invalid namespace specified '${what}'`);
  }
}
function getColl(db, name, create) {
  checkName(name, `${db}.${name}`);
  let d = databases.get(db);
  if (!d) { if (!create) return null; d = new Map(); databases.set(db, d); }
  let c = d.get(name);
  if (!c && create) { c = new Collection(db, name); d.set(name, c); }
  return c || null;
}

function prepareInsert(doc, raw) {
  if (!isDoc(doc)) fail(2, 'document to insert must be an object');
  let d = doc;
  if (d._id === undefined) d = Object.assign({ _id: new ObjectId() }, d);
  else if (Object.keys(d)[0] !== '_id') d = withIdFirst(d);
  if (Array.isArray(d._id)) fail(2, `The '_id' value cannot be of type array`);
  if (btype(d._id) === 'BSONRegExp') fail(2, `can't use a regex for _id`);
  const bytes = raw ? storedBytes(raw, d) : BSON.serialize(d);
  if (bytes.length > opts.maxBsonSize) fail(2, `object to insert too large. size in bytes: ${bytes.length}, max size: ${opts.maxBsonSize}`);
  rawOf.set(d, bytes);
  return d;
}

// ---------------------------------------------------------------- cursors
const cursors = new Map(); // id string -> { id, ns, docs, pos, conn }
function makeCursorId() {
  for (;;) {
    const id = Long.fromBits(crypto.randomBytes(4).readInt32LE(0), crypto.randomBytes(4).readUInt32LE(0) & 0x3fffffff);
    if (!id.isZero() && !cursors.has(id.toString())) return id;
  }
}
function takeBatch(docs, pos, n) {
  const out = [];
  let bytes = 0;
  const limit = opts.maxBsonSize;
  while (pos < docs.length && (n <= 0 || out.length < n)) {
    const raw = rawOf.get(docs[pos]);
    const sz = raw ? raw.length : BSON.calculateObjectSize(docs[pos]);
    if (out.length > 0 && bytes + sz > limit) break;
    out.push(docs[pos++]); bytes += sz;
  }
  return { out, pos };
}
// First batch of a cursor-returning command; registers the cursor if docs remain.
function cursorReply(conn, ns, docs, batchSize, singleBatch, field = 'firstBatch') {
  const n = batchSize === undefined ? 101 : batchSize;
  if (n < 0) fail(51024, `BSON field 'batchSize' value must be >= 0, actual value '${n}'`);
  let res;
  if (n === 0 && batchSize !== undefined) res = { out: [], pos: 0 };
  else res = takeBatch(docs, 0, n);
  let id = Long.ZERO;
  if (res.pos < docs.length && !singleBatch) {
    id = makeCursorId();
    cursors.set(id.toString(), { id, ns, docs, pos: res.pos, conn });
    conn.cursors.add(id.toString());
  }
  return { cursor: { [field]: res.out, id, ns }, ok: 1 };
}

// ---------------------------------------------------------------- SCRAM
const users = new Map(); // "db.user" -> { user, db, mechs, creds: {mech: {salt, iter, storedKey, serverKey}} }
const MECH = { 'SCRAM-SHA-1': { hash: 'sha1', len: 20, iter: 10000 }, 'SCRAM-SHA-256': { hash: 'sha256', len: 32, iter: 15000 } };
function saslprep(s) {
  // RFC 4013 for the characters a password holds in practice: non-ASCII spaces
  // map to space, "commonly mapped to nothing" characters go, then NFKC.
  return s.replace(/[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/g, ' ')
    .replace(/[\u00AD\u034F\u1806\u180B-\u180D\u200C\u200D\u2060\uFE00-\uFE0F\uFEFF]/g, '')
    .normalize('NFKC');
}
const hmac = (h, key, data) => crypto.createHmac(h, key).update(data).digest();
const H = (h, data) => crypto.createHash(h).update(data).digest();
function scramPassword(mech, user, password) {
  if (mech === 'SCRAM-SHA-1') return crypto.createHash('md5').update(`${user}:mongo:${password}`).digest('hex');
  return saslprep(password);
}
for (const u of opts.users) {
  const rec = { user: u.user, db: u.db, mechs: u.mechs, creds: {} };
  for (const m of u.mechs) {
    const p = MECH[m];
    const salt = crypto.randomBytes(m === 'SCRAM-SHA-1' ? 16 : 28);
    const salted = crypto.pbkdf2Sync(scramPassword(m, u.user, u.password), salt, p.iter, p.len, p.hash);
    const clientKey = hmac(p.hash, salted, 'Client Key');
    rec.creds[m] = { salt, iter: p.iter, storedKey: H(p.hash, clientKey), serverKey: hmac(p.hash, salted, 'Server Key') };
  }
  users.set(`${u.db}.${u.user}`, rec);
}
const authEnabled = users.size > 0;
const authFailed = () => new MongoErr(18, 'Authentication failed.');

function payloadBytes(p) {
  if (btype(p) === 'Binary') return Buffer.from(p.buffer.subarray(0, p.position));
  if (typeof p === 'string') return Buffer.from(p, 'utf8');
  fail(2, 'payload must be binary');
}
function parseScramAttrs(s) {
  const out = {};
  for (const part of s.split(',')) { const i = part.indexOf('='); if (i > 0) out[part.slice(0, i)] = part.slice(i + 1); }
  return out;
}
function saslStart(conn, cmd, db) {
  const mech = cmd.mechanism;
  if (!MECH[mech]) fail(334, `Received authentication for mechanism ${mech} which is not enabled`);
  const msg = payloadBytes(cmd.payload).toString('utf8');
  const m = /^([ny]|p=[^,]*),(a=[^,]*)?,(.*)$/.exec(msg);
  if (!m) fail(17, 'Invalid SCRAM client-first message');
  if (m[1].startsWith('p')) fail(18, 'Server does not support channel binding');
  const bare = m[3];
  const attrs = parseScramAttrs(bare);
  if (attrs.n === undefined || !attrs.r) fail(17, 'Invalid SCRAM client-first message');
  const user = attrs.n.replace(/=2C/g, ',').replace(/=3D/g, '=');
  const rec = users.get(`${db}.${user}`);
  if (!rec || !rec.creds[mech]) throw authFailed();
  const cred = rec.creds[mech];
  const nonce = attrs.r + crypto.randomBytes(24).toString('base64');
  const serverFirst = `r=${nonce},s=${cred.salt.toString('base64')},i=${cred.iter}`;
  const convId = ++conn.convCounter;
  conn.sasl = { id: convId, mech, rec, cred, bare, serverFirst, nonce, step: 1, db };
  return { conversationId: int32(convId), done: false, payload: new Binary(Buffer.from(serverFirst)), ok: 1 };
}
function saslContinue(conn, cmd) {
  const s = conn.sasl;
  if (!s || toNum(cmd.conversationId) !== s.id) fail(17, 'No SASL session state found');
  const msg = payloadBytes(cmd.payload).toString('utf8');
  if (s.step === 2) {
    conn.sasl = null;
    return { conversationId: int32(s.id), done: true, payload: new Binary(Buffer.alloc(0)), ok: 1 };
  }
  const h = MECH[s.mech].hash;
  const pi = msg.lastIndexOf(',p=');
  if (pi < 0) { conn.sasl = null; throw authFailed(); }
  const withoutProof = msg.slice(0, pi);
  const attrs = parseScramAttrs(withoutProof);
  const proof = Buffer.from(msg.slice(pi + 3), 'base64');
  if (attrs.r !== s.nonce || attrs.c !== 'biws' && attrs.c !== 'eSws') { conn.sasl = null; throw authFailed(); }
  const authMessage = `${s.bare},${s.serverFirst},${withoutProof}`;
  const sig = hmac(h, s.cred.storedKey, authMessage);
  if (proof.length !== sig.length) { conn.sasl = null; throw authFailed(); }
  const clientKey = Buffer.alloc(sig.length);
  for (let i = 0; i < sig.length; i++) clientKey[i] = proof[i] ^ sig[i];
  if (!crypto.timingSafeEqual(H(h, clientKey), s.cred.storedKey)) { conn.sasl = null; throw authFailed(); }
  const serverSig = hmac(h, s.cred.serverKey, authMessage).toString('base64');
  conn.user = s.rec;
  const skip = isDoc(s.options) && s.options.skipEmptyExchange === true;
  if (skip) conn.sasl = null; else s.step = 2;
  log(`conn ${conn.id} authenticated ${s.rec.db}.${s.rec.user} with ${s.mech}`);
  return { conversationId: int32(s.id), done: skip, payload: new Binary(Buffer.from(`v=${serverSig}`)), ok: 1 };
}

// ---------------------------------------------------------------- commands
const RAW_DOCS = Symbol('raw documents'); // the bytes of insert's documents, as received
const startTime = Date.now();
function helloReply(conn, cmd, legacyName) {
  const r = {};
  if (legacyName) r.ismaster = true; else r.isWritablePrimary = true;
  r.maxBsonObjectSize = int32(opts.maxBsonSize);
  r.maxMessageSizeBytes = int32(opts.maxMessageSize);
  r.maxWriteBatchSize = int32(opts.maxWriteBatch);
  r.localTime = new Date();
  r.logicalSessionTimeoutMinutes = int32(30);
  r.connectionId = int32(conn.id);
  r.minWireVersion = int32(0);
  r.maxWireVersion = int32(21);
  r.readOnly = false;
  if (cmd.helloOk === true) r.helloOk = true;
  if (typeof cmd.saslSupportedMechs === 'string') {
    const u = users.get(cmd.saslSupportedMechs);
    if (u) r.saslSupportedMechs = u.mechs.slice();
  }
  if (isDoc(cmd.speculativeAuthenticate)) {
    const sa = cmd.speculativeAuthenticate;
    if (sa.saslStart !== undefined) {
      try {
        const res = saslStart(conn, sa, typeof sa.db === 'string' ? sa.db : 'admin');
        conn.sasl.options = sa.options;
        delete res.ok;
        r.speculativeAuthenticate = res;
      } catch (e) { conn.sasl = null; }
    }
  }
  r.ok = 1;
  return r;
}

const NO_AUTH = new Set(['hello', 'isMaster', 'ismaster', 'saslStart', 'saslContinue', 'ping', 'buildInfo', 'buildinfo',
  'getnonce', 'logout', 'endSessions']);

const truthy = (v) => v === true || (isNum(v) && toNum(v) !== 0);
function num(v, dflt) { return v === undefined || v === null ? dflt : toNum(v); }
function collArg(cmd, name) {
  const c = cmd[name];
  if (typeof c !== 'string') fail(73, `collection name has invalid type ${typeName(c)}`);
  return c;
}

function writeErrorEntry(i, e) {
  const err = e instanceof MongoErr ? e : new MongoErr(1, String(e && e.message));
  return Object.assign({ index: int32(i), code: int32(err.code) }, err.extra || {}, { errmsg: err.message });
}
function checkBatch(arr, field) {
  if (!Array.isArray(arr)) fail(9, `BSON field '${field}' is missing but a required field`);
  if (arr.length === 0 || arr.length > opts.maxWriteBatch) {
    fail(16, `Write batch sizes must be between 1 and ${opts.maxWriteBatch}. Got ${arr.length} operations.`);
  }
}
function finishWrite(res, errors) {
  if (errors.length) res.writeErrors = errors;
  res.ok = 1;
  return res;
}

function doUpdateOne(coll, st, index) {
  const q = st.q === undefined ? {} : st.q;
  const u = st.u;
  if (u === undefined) fail(9, "BSON field 'update.updates.u' is missing but a required field");
  const multi = truthy(st.multi);
  const upsert = truthy(st.upsert);
  if (multi && isDoc(u) && !isOperatorUpdate(u) && Object.keys(u).length) fail(9, 'multi update is not supported for replacement-style update');
  const found = coll ? matches(coll, q) : [];
  const targets = multi ? found : found.slice(0, 1);
  let n = 0; let nModified = 0;
  for (const rec of targets) {
    const nd = applyUpdate(rec.doc, u, false);
    if (ck(nd._id) !== ck(rec.doc._id)) fail(66, `Performing an update on the path '_id' would modify the immutable field '_id'`);
    n++;
    const bytes = BSON.serialize(nd);
    if (!bytes.equals(rawOf.get(rec.doc))) {
      rawOf.set(nd, bytes);
      coll.replace(rec, nd);
      nModified++;
    }
  }
  if (targets.length === 0 && upsert) {
    const seed = upsertSeed(q);
    let nd;
    if (Array.isArray(u) || isOperatorUpdate(u)) nd = applyUpdate(seed, u, true);
    else { checkReplacement(u); nd = clone(u); if (nd._id === undefined && seed._id !== undefined) nd._id = seed._id; }
    nd = prepareInsert(nd);
    getColl(coll ? coll.db : st.__db, coll ? coll.name : st.__coll, true).insert(nd);
    return { n: 1, nModified: 0, upserted: { index: int32(index), _id: nd._id }, doc: nd };
  }
  return { n, nModified };
}

const commands = {
  ping: () => ({ ok: 1 }),
  hello: (c, cmd) => helloReply(c, cmd, false),
  isMaster: (c, cmd) => helloReply(c, cmd, true),
  ismaster: (c, cmd) => helloReply(c, cmd, true),
  buildInfo: () => ({
    version: '7.0.14', gitVersion: 'evlua-mongo-peer', versionArray: [int32(7), int32(0), int32(14), int32(0)],
    bits: int32(64), debug: false, maxBsonObjectSize: int32(opts.maxBsonSize), modules: [], allocator: 'system',
    javascriptEngine: 'none', sysInfo: 'deprecated', storageEngines: ['inMemory'], ok: 1,
  }),
  saslStart: (c, cmd, db) => {
    const r = saslStart(c, cmd, db);
    c.sasl.options = cmd.options;
    return r;
  },
  saslContinue: (c, cmd) => saslContinue(c, cmd),
  logout: (c) => { c.user = null; return { ok: 1 }; },
  endSessions: () => ({ ok: 1 }),
  getParameter: (c, cmd) => {
    const r = {};
    if (cmd.featureCompatibilityVersion !== undefined || cmd.getParameter === '*') r.featureCompatibilityVersion = { version: '7.0' };
    if (cmd.authenticationMechanisms !== undefined || cmd.getParameter === '*') r.authenticationMechanisms = ['SCRAM-SHA-1', 'SCRAM-SHA-256'];
    if (!Object.keys(r).length) fail(72, 'no option found to get');
    r.ok = 1;
    return r;
  },
  connectionStatus: (c) => ({
    authInfo: {
      authenticatedUsers: c.user ? [{ user: c.user.user, db: c.user.db }] : [],
      authenticatedUserRoles: c.user ? [{ role: 'root', db: c.user.db }] : [],
    },
    ok: 1,
  }),
  whatsmyuri: (c) => ({ you: `${c.socket.remoteAddress}:${c.socket.remotePort}`, ok: 1 }),
  serverStatus: (c) => ({
    host: 'localhost', version: '7.0.14', process: 'mongod', pid: Long.fromNumber(process.pid),
    uptime: new Double((Date.now() - startTime) / 1000), localTime: new Date(),
    connections: { current: int32(connections.size), available: int32(1000), totalCreated: int32(connCounter) }, ok: 1,
  }),

  insert: (c, cmd, db) => {
    const name = collArg(cmd, 'insert');
    checkBatch(cmd.documents, 'insert.documents');
    const coll = getColl(db, name, true);
    const ordered = cmd.ordered === undefined || truthy(cmd.ordered);
    let n = 0; const errors = [];
    for (let i = 0; i < cmd.documents.length; i++) {
      try {
        coll.insert(prepareInsert(cmd.documents[i], cmd[RAW_DOCS] && cmd[RAW_DOCS][i]));
        n++;
      } catch (e) {
        errors.push(writeErrorEntry(i, e));
        if (ordered) break;
      }
    }
    return finishWrite({ n: int32(n) }, errors);
  },
  update: (c, cmd, db) => {
    const name = collArg(cmd, 'update');
    checkBatch(cmd.updates, 'update.updates');
    for (const st of cmd.updates) checkStatement('update', 'updates', st);
    const ordered = cmd.ordered === undefined || truthy(cmd.ordered);
    let n = 0; let nModified = 0; const upserted = []; const errors = [];
    for (let i = 0; i < cmd.updates.length; i++) {
      try {
        const st = cmd.updates[i];
        const r = doUpdateOne(getColl(db, name, false), Object.assign({ __db: db, __coll: name }, st), i);
        n += r.n; nModified += r.nModified;
        if (r.upserted) upserted.push(r.upserted);
      } catch (e) {
        errors.push(writeErrorEntry(i, e));
        if (ordered) break;
      }
    }
    const res = { n: int32(n), nModified: int32(nModified) };
    if (upserted.length) res.upserted = upserted;
    return finishWrite(res, errors);
  },
  delete: (c, cmd, db) => {
    const name = collArg(cmd, 'delete');
    checkBatch(cmd.deletes, 'delete.deletes');
    for (const st of cmd.deletes) checkStatement('delete', 'deletes', st);
    const ordered = cmd.ordered === undefined || truthy(cmd.ordered);
    const coll = getColl(db, name, false);
    let n = 0; const errors = [];
    for (let i = 0; i < cmd.deletes.length; i++) {
      try {
        const st = cmd.deletes[i];
        if (st.q === undefined) fail(40414, "BSON field 'delete.deletes.q' is missing but a required field");
        const limit = num(st.limit, 0);
        if (limit !== 0 && limit !== 1) fail(9, `The limit field in delete objects must be 0 or 1. Got ${limit}`);
        if (!coll) continue;
        let found = matches(coll, st.q);
        if (limit === 1) found = found.slice(0, 1);
        for (const rec of found) { coll.remove(rec); n++; }
      } catch (e) {
        errors.push(writeErrorEntry(i, e));
        if (ordered) break;
      }
    }
    return finishWrite({ n: int32(n) }, errors);
  },
  find: (c, cmd, db) => {
    const name = collArg(cmd, 'find');
    const coll = getColl(db, name, false);
    const skip = num(cmd.skip, 0); let limit = num(cmd.limit, 0);
    if (skip < 0) fail(51024, `BSON field 'skip' value must be >= 0, actual value '${skip}'`);
    if (limit < 0) fail(51024, `BSON field 'limit' value must be >= 0, actual value '${limit}'`);
    const proj = projector(cmd.projection);
    let docs = coll ? matches(coll, cmd.filter).map((r) => r.doc) : [];
    docs = sortDocs(docs, cmd.sort);
    docs = docs.slice(skip, limit > 0 ? skip + limit : undefined);
    if (proj) docs = docs.map(proj);
    let batch = cmd.batchSize === undefined ? undefined : num(cmd.batchSize);
    const single = truthy(cmd.singleBatch);
    if (limit > 0 && (batch === undefined || batch > limit)) batch = batch === undefined && limit > 101 ? 101 : limit;
    return cursorReply(c, `${db}.${name}`, docs, batch, single);
  },
  getMore: (c, cmd, db) => {
    const id = cmd.getMore;
    if (btype(id) !== 'Long') fail(14, `Field 'getMore' must be of type long in: ${fmt(cmd)}`);
    const name = collArg(cmd, 'collection');
    const cur = cursors.get(id.toString());
    if (!cur) fail(43, `cursor id ${id.toString()} not found`);
    if (cur.ns !== `${db}.${name}` && !cur.ns.startsWith(`${db}.$cmd`)) {
      fail(13, `Requested getMore on namespace '${db}.${name}', but cursor belongs to a different namespace ${cur.ns}`);
    }
    const bs = num(cmd.batchSize, 0);
    const res = takeBatch(cur.docs, cur.pos, bs);
    cur.pos = res.pos;
    let rid = cur.id;
    if (cur.pos >= cur.docs.length) { cursors.delete(id.toString()); cur.conn.cursors.delete(id.toString()); rid = Long.ZERO; }
    return { cursor: { nextBatch: res.out, id: rid, ns: cur.ns }, ok: 1 };
  },
  killCursors: (c, cmd) => {
    const killed = []; const notFound = [];
    if (!Array.isArray(cmd.cursors)) fail(40414, "BSON field 'killCursors.cursors' is missing but a required field");
    for (const id of cmd.cursors) {
      const key = btype(id) === 'Long' ? id.toString() : String(toNum(id));
      const cur = cursors.get(key);
      if (cur) { cursors.delete(key); cur.conn.cursors.delete(key); killed.push(id); } else notFound.push(id);
    }
    return { cursorsKilled: killed, cursorsNotFound: notFound, cursorsAlive: [], cursorsUnknown: [], ok: 1 };
  },
  count: (c, cmd, db) => {
    const coll = getColl(db, collArg(cmd, 'count'), false);
    if (!coll) return { n: int32(0), ok: 1 };
    const skip = num(cmd.skip, 0); const limit = Math.abs(num(cmd.limit, 0));
    let n = cmd.query && Object.keys(cmd.query).length ? matches(coll, cmd.query).length : coll.docs.size;
    n = Math.max(0, n - skip);
    if (limit > 0) n = Math.min(n, limit);
    return { n: int32(n), ok: 1 };
  },
  distinct: (c, cmd, db) => {
    const coll = getColl(db, collArg(cmd, 'distinct'), false);
    if (typeof cmd.key !== 'string') fail(40414, "BSON field 'distinct.key' is missing but a required field");
    const seen = new Map();
    if (coll) {
      for (const rec of matches(coll, cmd.query)) {
        for (const v of pathValues(rec.doc, cmd.key)) {
          for (const e of Array.isArray(v) ? v : [v]) { const k = ck(e); if (!seen.has(k)) seen.set(k, e); }
        }
      }
    }
    return { values: [...seen.values()].sort(compare), ok: 1 };
  },
  aggregate: (c, cmd, db) => {
    const target = cmd.aggregate;
    if (!Array.isArray(cmd.pipeline)) fail(14, "BSON field 'aggregate.pipeline' is the wrong type, expected type 'array'");
    if (cmd.cursor === undefined && cmd.explain === undefined) fail(9, "The 'cursor' option is required, except for aggregate with the explain argument");
    let docs = [];
    let ns;
    if (typeof target === 'string') {
      const coll = getColl(db, target, false);
      docs = coll ? [...coll.docs.values()].map((r) => r.doc) : [];
      ns = `${db}.${target}`;
    } else ns = `${db}.$cmd.aggregate`;
    docs = runPipeline(docs, cmd.pipeline, db);
    const bs = isDoc(cmd.cursor) && cmd.cursor.batchSize !== undefined ? num(cmd.cursor.batchSize) : undefined;
    return cursorReply(c, ns, docs, bs, false);
  },
  findAndModify: (c, cmd, db) => {
    const name = typeof cmd.findAndModify === 'string' ? cmd.findAndModify : cmd.findandmodify;
    checkName(name, `${db}.${name}`);
    const remove = truthy(cmd.remove);
    const update = cmd.update;
    if (remove && update !== undefined) fail(9, 'Cannot specify both an update and remove=true');
    if (!remove && update === undefined) fail(9, 'Either an update or remove=true must be specified');
    if (remove && truthy(cmd.upsert)) fail(9, 'Cannot specify both upsert=true and remove=true');
    const proj = projector(cmd.fields);
    const out = (d) => (d === null ? null : proj ? proj(d) : d);
    const coll = getColl(db, name, false);
    let found = coll ? matches(coll, cmd.query || {}) : [];
    found = sortRecs(found, cmd.sort).slice(0, 1);
    if (remove) {
      if (!found.length) return { lastErrorObject: { n: int32(0) }, value: null, ok: 1 };
      coll.remove(found[0]);
      return { lastErrorObject: { n: int32(1) }, value: out(found[0].doc), ok: 1 };
    }
    if (found.length) {
      const rec = found[0]; const before = rec.doc;
      const nd = applyUpdate(before, update, false);
      if (ck(nd._id) !== ck(before._id)) fail(66, `Performing an update on the path '_id' would modify the immutable field '_id'`);
      const bytes = BSON.serialize(nd);
      if (!bytes.equals(rawOf.get(before))) { rawOf.set(nd, bytes); coll.replace(rec, nd); }
      return { lastErrorObject: { n: int32(1), updatedExisting: true }, value: out(truthy(cmd.new) ? nd : before), ok: 1 };
    }
    if (truthy(cmd.upsert)) {
      const r = doUpdateOne(null, { q: cmd.query || {}, u: update, upsert: true, __db: db, __coll: name }, 0);
      return { lastErrorObject: { n: int32(1), updatedExisting: false, upserted: r.upserted._id }, value: truthy(cmd.new) ? out(r.doc) : null, ok: 1 };
    }
    return { lastErrorObject: { n: int32(0), updatedExisting: false }, value: null, ok: 1 };
  },
  create: (c, cmd, db) => {
    const name = collArg(cmd, 'create');
    checkName(name, `${db}.${name}`);
    if (getColl(db, name, false)) fail(48, `Collection ${db}.${name} already exists.`);
    const coll = getColl(db, name, true);
    const o = {};
    for (const k of Object.keys(cmd)) {
      if (!['create', '$db', 'lsid', '$clusterTime', 'writeConcern', '$readPreference', 'comment', 'txnNumber', 'apiVersion'].includes(k)) o[k] = cmd[k];
    }
    coll.options = o;
    return { ok: 1 };
  },
  drop: (c, cmd, db) => {
    const name = collArg(cmd, 'drop');
    const coll = getColl(db, name, false);
    if (!coll) return { ok: 1 };
    databases.get(db).delete(name);
    for (const [k, cur] of cursors) if (cur.ns === coll.ns) { cursors.delete(k); cur.conn.cursors.delete(k); }
    return { nIndexesWas: int32(coll.indexes.length), ns: coll.ns, ok: 1 };
  },
  dropDatabase: (c, cmd, db) => {
    databases.delete(db);
    return { dropped: db, ok: 1 };
  },
  createIndexes: (c, cmd, db) => {
    const name = collArg(cmd, 'createIndexes');
    if (!Array.isArray(cmd.indexes) || !cmd.indexes.length) fail(2, 'Must specify at least one index to create');
    const existed = !!getColl(db, name, false);
    const coll = getColl(db, name, true);
    const before = coll.indexes.length;
    const fresh = [];
    for (const spec of cmd.indexes) {
      if (!isDoc(spec) || !isDoc(spec.key) || !Object.keys(spec.key).length) fail(9, "The 'key' field is a required property of an index specification");
      if (typeof spec.name !== 'string' || !spec.name) fail(9, "The 'name' field is a required property of an index specification");
      const sameName = coll.indexes.find((ix) => ix.name === spec.name);
      const sameKey = coll.indexes.find((ix) => ck(ix.key) === ck(spec.key));
      const unique = spec.unique === true || (isNum(spec.unique) && toNum(spec.unique) !== 0);
      if (sameName) {
        if (ck(sameName.key) !== ck(spec.key)) {
          fail(86, `An existing index has the same name as the requested index. When index names are not specified, they are auto generated and can cause conflicts. Please refer to our documentation. Requested index: ${fmt(spec)}, existing index: ${fmt(sameName.spec)}`);
        }
        if (!!sameName.unique !== unique && !sameName.id) fail(86, `An existing index has the same name as the requested index. Requested index: ${fmt(spec)}, existing index: ${fmt(sameName.spec)}`);
        continue;
      }
      if (sameKey && !!sameKey.unique === unique) {
        fail(85, `Index already exists with a different name: ${sameKey.name}`);
      }
      const stored = { v: int32(2) };
      for (const k of Object.keys(spec)) if (k !== 'v' && k !== 'ns') stored[k] = spec[k];
      const ix = { name: spec.name, key: spec.key, spec: stored, unique, map: new Map() };
      for (const rec of coll.docs.values()) {
        const k = coll.indexKey(ix, rec.doc);
        if (unique && ix.map.has(k)) {
          const e = coll.dupError(ix, rec.doc);
          fail(11000, `Index build failed: ${e.message}`, e.extra);
        }
        ix.map.set(k, ck(rec.doc._id));
      }
      fresh.push(ix);
    }
    coll.indexes.push(...fresh);
    const res = { numIndexesBefore: int32(before), numIndexesAfter: int32(coll.indexes.length) };
    if (!fresh.length) res.note = 'all indexes already exist';
    res.createdCollectionAutomatically = !existed;
    res.ok = 1;
    return res;
  },
  listIndexes: (c, cmd, db) => {
    const name = collArg(cmd, 'listIndexes');
    const coll = getColl(db, name, false);
    if (!coll) fail(26, `ns does not exist: ${db}.${name}`);
    const bs = isDoc(cmd.cursor) && cmd.cursor.batchSize !== undefined ? num(cmd.cursor.batchSize) : undefined;
    return cursorReply(c, `${db}.${name}`, coll.indexes.map((ix) => ix.spec), bs, false);
  },
  dropIndexes: (c, cmd, db) => {
    const name = collArg(cmd, 'dropIndexes');
    const coll = getColl(db, name, false);
    if (!coll) fail(26, `ns not found ${db}.${name}`);
    const was = coll.indexes.length;
    const which = cmd.index;
    const dropOne = (pred, label) => {
      const i = coll.indexes.findIndex(pred);
      if (i < 0) fail(27, label);
      if (coll.indexes[i].id) fail(72, 'cannot drop _id index');
      coll.indexes.splice(i, 1);
    };
    if (which === '*') coll.indexes = coll.indexes.filter((ix) => ix.id);
    else if (typeof which === 'string') dropOne((ix) => ix.name === which, `index not found with name [${which}]`);
    else if (Array.isArray(which)) for (const w of which) dropOne((ix) => ix.name === w, `index not found with name [${w}]`);
    else if (isDoc(which)) dropOne((ix) => ck(ix.key) === ck(which), `can't find index with key: ${fmt(which)}`);
    else fail(14, "BSON field 'dropIndexes.index' is the wrong type");
    return { nIndexesWas: int32(was), ok: 1 };
  },
  listCollections: (c, cmd, db) => {
    const d = databases.get(db);
    let infos = d ? [...d.values()].sort((a, b) => a.order - b.order).map((coll) => ({
      name: coll.name, type: 'collection', options: coll.options, info: { readOnly: false, uuid: coll.uuid },
      idIndex: { v: int32(2), key: { _id: int32(1) }, name: '_id_' },
    })) : [];
    if (isDoc(cmd.filter) && Object.keys(cmd.filter).length) {
      const q = new mingo.Query(view(cmd.filter));
      infos = infos.filter((i) => q.test(view(i)));
    }
    if (truthy(cmd.nameOnly)) infos = infos.map((i) => ({ name: i.name, type: i.type }));
    const bs = isDoc(cmd.cursor) && cmd.cursor.batchSize !== undefined ? num(cmd.cursor.batchSize) : undefined;
    return cursorReply(c, `${db}.$cmd.listCollections`, infos, bs, false);
  },
  listDatabases: (c, cmd) => {
    const names = new Set(['admin', 'config', 'local']);
    for (const [n, d] of databases) if (d.size) names.add(n);
    let list = [...names].sort().map((n) => {
      const d = databases.get(n);
      let size = 0;
      if (d) for (const coll of d.values()) for (const r of coll.docs.values()) size += rawOf.get(r.doc).length;
      const sizeOnDisk = size ? Math.ceil((size + 4096) / 4096) * 4096 : (n === 'local' || n === 'admin' || n === 'config') ? 8192 * 5 : 0;
      return { name: n, sizeOnDisk: Long.fromNumber(sizeOnDisk), empty: false };
    });
    if (isDoc(cmd.filter) && Object.keys(cmd.filter).length) {
      const q = new mingo.Query(view(cmd.filter));
      list = list.filter((x) => q.test(view(x)));
    }
    if (truthy(cmd.nameOnly)) return { databases: list.map((x) => ({ name: x.name })), ok: 1 };
    const total = list.reduce((s, x) => s + x.sizeOnDisk.toNumber(), 0);
    return { databases: list, totalSize: Long.fromNumber(total), totalSizeMb: Long.fromNumber(Math.floor(total / 1048576)), ok: 1 };
  },
  collStats: (c, cmd, db) => {
    const name = collArg(cmd, 'collStats');
    const coll = getColl(db, name, false);
    if (!coll) fail(26, `Collection [${db}.${name}] not found.`);
    let size = 0;
    for (const r of coll.docs.values()) size += rawOf.get(r.doc).length;
    const count = coll.docs.size;
    return {
      ns: coll.ns, size: int32(size), count: int32(count), avgObjSize: int32(count ? Math.floor(size / count) : 0),
      storageSize: int32(size), nindexes: int32(coll.indexes.length), totalIndexSize: int32(0),
      indexSizes: Object.fromEntries(coll.indexes.map((ix) => [ix.name, int32(0)])), ok: 1,
    };
  },
  dbStats: (c, cmd, db) => {
    const d = databases.get(db);
    let objects = 0; let size = 0; let indexes = 0;
    if (d) for (const coll of d.values()) { objects += coll.docs.size; indexes += coll.indexes.length; for (const r of coll.docs.values()) size += rawOf.get(r.doc).length; }
    return { db, collections: int32(d ? d.size : 0), views: int32(0), objects: int32(objects), avgObjSize: new Double(objects ? size / objects : 0),
      dataSize: new Double(size), storageSize: new Double(size), indexes: int32(indexes), indexSize: new Double(0), ok: 1 };
  },
};
commands.buildinfo = commands.buildInfo;
commands.findandmodify = commands.findAndModify;

function sortRecs(recs, spec) {
  if (!isDoc(spec) || !Object.keys(spec).length) return recs;
  const byDoc = new Map(recs.map((r) => [r.doc, r]));
  return sortDocs(recs.map((r) => r.doc), spec).map((d) => byDoc.get(d));
}

// Stages that keep BSON types run here; the others go through mingo.
function runPipeline(docs, pipeline, db) {
  let i = 0;
  while (i < pipeline.length) {
    const st = pipeline[i];
    if (!isDoc(st) || Object.keys(st).length !== 1) fail(40323, 'A pipeline stage specification object must contain exactly one field.');
    const op = Object.keys(st)[0]; const arg = st[op];
    if (op === '$match') {
      const f = compileFilter(arg);
      docs = f.all ? docs : docs.filter((d) => f.test({ doc: d, view: null }));
    } else if (op === '$sort') docs = sortDocs(docs, arg);
    else if (op === '$skip') docs = docs.slice(num(arg, 0));
    else if (op === '$limit') {
      const n = num(arg, 0);
      if (n <= 0) fail(15958, 'the limit must be positive');
      docs = docs.slice(0, n);
    } else if (op === '$count') {
      if (typeof arg !== 'string' || !arg) fail(40156, 'the count field must be a non-empty string');
      docs = docs.length ? [{ [arg]: int32(docs.length) }] : [];
    } else if (op === '$project' && (() => { try { return projector(arg); } catch { return undefined; } })() !== undefined &&
      Object.values(arg).every((v) => typeof v === 'boolean' || isNum(v))) {
      const p = projector(arg);
      if (p) docs = docs.map(p);
    } else if (op === '$unwind') {
      const spec = typeof arg === 'string' ? { path: arg } : arg;
      if (!isDoc(spec) || typeof spec.path !== 'string' || !spec.path.startsWith('$')) fail(28650, 'path option to $unwind stage should be prefixed with a \'$\'');
      const path = spec.path.slice(1);
      const keep = spec.preserveNullAndEmptyArrays === true;
      const idxField = spec.includeArrayIndex;
      const out = [];
      for (const d of docs) {
        const v = getPath(d, path);
        const emit = (e, idx) => {
          const nd = clone(d);
          const w = walkTo(nd, path, true);
          if (e === undefined) { if (Array.isArray(w.parent)) w.parent[w.key] = null; else delete w.parent[w.key]; } else setAt(w.parent, w.key, e);
          if (typeof idxField === 'string') nd[idxField] = idx === null ? null : i64(idx);
          out.push(nd);
        };
        if (Array.isArray(v)) {
          if (v.length) v.forEach((e, j) => emit(e, j)); else if (keep) emit(undefined, null);
        } else if (v === undefined || v === null) { if (keep) emit(v, null); } else emit(v, null);
      }
      docs = out;
    } else {
      // Hand the rest of the pipeline from here to mingo, up to the next typed stage run.
      let j = i;
      while (j < pipeline.length && !['$match', '$sort', '$skip', '$limit', '$count', '$unwind'].includes(Object.keys(pipeline[j])[0])) j++;
      if (j === i) j = i + 1;
      const stages = pipeline.slice(i, j);
      for (const s of stages) {
        const k = Object.keys(s)[0];
        if (k === '$out' || k === '$merge') fail(20, `${k} is not supported by this test server`);
      }
      try {
        docs = new mingo.Aggregator(stages.map(view)).run(docs.map(view)).map(unview);
      } catch (e) {
        fail(e instanceof MongoErr ? e.code : 40324, e.message);
      }
      i = j;
      continue;
    }
    i++;
  }
  return docs;
}

// The fields each command takes (mongod rejects others with code 40415), on
// top of the generic ones every command may carry; this server ignores what
// it does not use. Commands not listed take anything.
const GENERIC_FIELDS = new Set(['$db', 'lsid', 'txnNumber', '$clusterTime', '$readPreference', 'readConcern', 'writeConcern',
  'apiVersion', 'apiStrict', 'apiDeprecationErrors', 'comment', 'maxTimeMS', 'autocommit', 'startTransaction', '$client',
  '$audit', 'mayBypassWriteBlocking', 'stmtId', 'stmtIds', '$configServerState', '$gleStats', '$topologyTime', '$oplogQueryData',
  '$replData', 'databaseVersion', 'shardVersion', 'clientOperationKey', 'help', 'rawData']);
const COMMAND_FIELDS = {
  find: ['filter', 'sort', 'projection', 'hint', 'skip', 'limit', 'batchSize', 'singleBatch', 'max', 'min', 'returnKey',
    'showRecordId', 'tailable', 'oplogReplay', 'noCursorTimeout', 'awaitData', 'allowPartialResults', 'collation',
    'allowDiskUse', 'let', 'readOnce', 'term', '$_requestResumeToken', '$_resumeAfter'],
  insert: ['documents', 'ordered', 'bypassDocumentValidation', 'let'],
  update: ['updates', 'ordered', 'bypassDocumentValidation', 'let'],
  delete: ['deletes', 'ordered', 'let'],
  getMore: ['collection', 'batchSize', 'term', 'lastKnownCommittedOpTime'],
  killCursors: ['cursors'],
  count: ['query', 'limit', 'skip', 'hint', 'collation', 'fields'],
  distinct: ['key', 'query', 'collation', 'hint'],
  aggregate: ['pipeline', 'cursor', 'explain', 'allowDiskUse', 'bypassDocumentValidation', 'collation', 'hint', 'let',
    'exchange', 'fromMongos', 'needsMerge', 'isMapReduceCommand'],
  findAndModify: ['query', 'sort', 'remove', 'update', 'new', 'fields', 'upsert', 'bypassDocumentValidation', 'arrayFilters',
    'hint', 'collation', 'let'],
  createIndexes: ['indexes', 'commitQuorum', 'ignoreUnknownIndexOptions'],
  listIndexes: ['cursor', 'includeBuildUUIDs', 'includeIndexBuildInfo'],
  dropIndexes: ['index'],
  drop: [],
  listCollections: ['filter', 'nameOnly', 'authorizedCollections', 'cursor', 'includePendingDrops'],
  listDatabases: ['filter', 'nameOnly', 'authorizedDatabases'],
  endSessions: [],
  ping: [],
  killAllSessions: [],
};
COMMAND_FIELDS.findandmodify = COMMAND_FIELDS.findAndModify;
for (const k of Object.keys(COMMAND_FIELDS)) COMMAND_FIELDS[k] = new Set(COMMAND_FIELDS[k]);
// Statement fields of the write commands.
const STATEMENT_FIELDS = {
  update: new Set(['q', 'u', 'upsert', 'multi', 'arrayFilters', 'collation', 'hint', 'c', 'sort', 'upsertSupplied']),
  delete: new Set(['q', 'limit', 'collation', 'hint']),
};
function checkStatement(cmdName, field, st) {
  if (!isDoc(st)) fail(14, `BSON field '${cmdName}.${field}' is the wrong type '${typeName(st)}', expected type 'object'`);
  for (const k of Object.keys(st)) {
    if (k.startsWith('__')) continue;
    if (!STATEMENT_FIELDS[cmdName].has(k)) fail(40415, `BSON field '${cmdName}.${field}.${k}' is an unknown field.`);
  }
  for (const k of cmdName === 'update' ? ['q', 'u'] : ['q', 'limit']) {
    if (st[k] === undefined) fail(40414, `BSON field '${cmdName}.${field}.${k}' is missing but a required field`);
  }
  if (!isDoc(st.q)) fail(14, `BSON field '${cmdName}.${field}.q' is the wrong type '${typeName(st.q)}', expected type 'object'`);
}
// Types mongod checks on the fields this server reads.
const FIELD_TYPES = {
  find: { filter: 'object', sort: 'object', projection: 'object', skip: 'number', limit: 'number', batchSize: 'number', singleBatch: 'bool' },
  insert: { documents: 'array', ordered: 'bool' },
  update: { updates: 'array', ordered: 'bool' },
  delete: { deletes: 'array', ordered: 'bool' },
  getMore: { collection: 'string', batchSize: 'number' },
  killCursors: { cursors: 'array' },
  count: { query: 'object', limit: 'number', skip: 'number' },
  distinct: { key: 'string', query: 'object' },
  aggregate: { pipeline: 'array', cursor: 'object' },
  findAndModify: { query: 'object', sort: 'object', remove: 'bool', new: 'bool', fields: 'object', upsert: 'bool' },
  createIndexes: { indexes: 'array' },
  listCollections: { filter: 'object', nameOnly: 'bool', cursor: 'object' },
  listDatabases: { filter: 'object', nameOnly: 'bool' },
  listIndexes: { cursor: 'object' },
};
const TYPE_WORDS = { object: "type 'object'", array: "type 'array'", string: "type 'string'", bool: "type 'bool'",
  number: "types '[long, int, decimal, double]'" };
function checkFields(name, cmd) {
  const allowed = COMMAND_FIELDS[name];
  if (!allowed) return;
  const types = FIELD_TYPES[name === 'findandmodify' ? 'findAndModify' : name] || {};
  const keys = Object.keys(cmd);
  for (let i = 1; i < keys.length; i++) {
    const k = keys[i];
    if (!allowed.has(k) && !GENERIC_FIELDS.has(k)) fail(40415, `BSON field '${name}.${k}' is an unknown field.`);
    const t = types[k]; const v = cmd[k];
    if (!t || v === null && (k === 'filter' || k === 'query' || k === 'sort' || k === 'projection' || k === 'fields')) continue;
    const good = t === 'object' ? isDoc(v) : t === 'array' ? Array.isArray(v) : t === 'string' ? typeof v === 'string'
      : t === 'bool' ? typeof v === 'boolean' || isNum(v) : isNum(v);
    if (!good) fail(14, `BSON field '${name}.${k}' is the wrong type '${typeName(v)}', expected ${TYPE_WORDS[t]}`);
  }
}

function runCommand(conn, cmd, db) {
  const name = Object.keys(cmd)[0];
  if (name === undefined) fail(59, 'no such command: \'\'');
  const fn = Object.prototype.hasOwnProperty.call(commands, name) ? commands[name] : null;
  if (!fn) fail(59, `no such command: '${name}'`);
  if (authEnabled && !conn.user && !NO_AUTH.has(name)) fail(13, `command ${name} requires authentication`);
  if (authEnabled && conn.user && conn.user.db !== 'admin' && db !== conn.user.db && !NO_AUTH.has(name)) {
    fail(13, `not authorized on ${db} to execute command { ${name}: ${fmt(cmd[name])} }`);
  }
  if (typeof db !== 'string' || !db) fail(73, 'Invalid database name');
  checkFields(name, cmd);
  return fn(conn, cmd, db);
}


// ---------------------------------------------------------------- raw BSON
// Stored documents keep the bytes they arrived with (rawOf: typed document ->
// Buffer), so replies carry them unchanged, key order included (a JS object
// would put integer-like keys first).
const rawOf = new WeakMap();

// Length of the value of an element of type t at off.
function valueLength(buf, t, off, end) {
  switch (t) {
    case 0x01: case 0x09: case 0x11: case 0x12: return 8;
    case 0x02: case 0x0D: case 0x0E: return 4 + buf.readInt32LE(off);
    case 0x03: case 0x04: case 0x0F: return buf.readInt32LE(off);
    case 0x05: return 5 + buf.readInt32LE(off);
    case 0x06: case 0x0A: case 0xFF: case 0x7F: return 0;
    case 0x07: return 12;
    case 0x08: return 1;
    case 0x0B: { const a = buf.indexOf(0, off); const b = buf.indexOf(0, a + 1); return b + 1 - off; }
    case 0x0C: return 4 + buf.readInt32LE(off) + 12;
    case 0x10: return 4;
    case 0x13: return 16;
    default: throw new ProtocolError(`unknown BSON type ${t}`);
  }
  void end;
}
// The elements of the document at buf[start..]: [{ name, start, valueStart, end, type }].
function elements(buf, start) {
  const len = buf.readInt32LE(start);
  const stop = start + len - 1;
  const out = [];
  let off = start + 4;
  while (off < stop) {
    const t = buf[off];
    const z = buf.indexOf(0, off + 1);
    const name = buf.toString('utf8', off + 1, z);
    const vs = z + 1;
    const e = vs + valueLength(buf, t, vs, stop);
    out.push({ name, start: off, valueStart: vs, end: e, type: t });
    off = e;
  }
  return out;
}
// The raw documents of the array field `field` of the document at buf[start..].
function rawArrayDocs(buf, start, field) {
  const el = elements(buf, start).find((e) => e.name === field);
  if (!el || el.type !== 0x04) return null;
  return elements(buf, el.valueStart).map((e) => (e.type === 0x03 ? buf.subarray(e.valueStart, e.end) : null));
}
// The bytes to store for an inserted document: _id first, added when missing.
function storedBytes(raw, doc) {
  const els = elements(raw, 0);
  if (els.length && els[0].name === '_id') return Buffer.from(raw);
  const id = els.find((e) => e.name === '_id');
  const idBytes = id ? raw.subarray(id.start, id.end) : BSON.serialize({ _id: doc._id }).subarray(4, -1);
  const rest = els.filter((e) => e !== id).map((e) => raw.subarray(e.start, e.end));
  const body = Buffer.concat([idBytes, ...rest]);
  const out = Buffer.alloc(body.length + 5);
  out.writeInt32LE(out.length, 0);
  body.copy(out, 4);
  return out;
}

// Reply encoder: plain documents and arrays are walked here so that stored
// documents can be spliced in as their bytes; other values go through bson.
const cstr = (name) => Buffer.from(name + '\0', 'utf8');
function encodeDoc(doc, isArray, top) {
  const parts = [Buffer.alloc(4)];
  const keys = isArray ? doc.map((_, i) => String(i)) : Object.keys(doc);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    const v = isArray ? doc[i] : doc[k];
    if (v === undefined) continue;
    encodeValue(parts, k, v, top);
  }
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  out.writeInt32LE(out.length, 0);
  return out;
}
function encodeValue(parts, k, v, top) {
  if (v !== null && typeof v === 'object') {
    const raw = rawOf.get(v);
    if (raw) { parts.push(Buffer.from([0x03]), cstr(k), raw); return; }
    if (Array.isArray(v)) { parts.push(Buffer.from([0x04]), cstr(k), encodeDoc(v, true, false)); return; }
    if (isDoc(v)) { parts.push(Buffer.from([0x03]), cstr(k), encodeDoc(v, false, false)); return; }
  }
  if (top && k === 'ok' && typeof v === 'number') v = new Double(v); // mongod sends ok as a double
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8'); const h = Buffer.alloc(4); h.writeInt32LE(b.length + 1);
    parts.push(Buffer.from([0x02]), cstr(k), h, b, Buffer.from([0]));
    return;
  }
  const el = BSON.serialize({ v });
  parts.push(Buffer.from([el[4]]), cstr(k), el.subarray(7, el.length - 1));
}
const encodeReply = (doc) => encodeDoc(doc, false, true);

// ---------------------------------------------------------------- wire
const OP_REPLY = 1; const OP_QUERY = 2004; const OP_MSG = 2013; const OP_COMPRESSED = 2012;
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82F63B78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();
function crc32c(buf) {
  let c = 0xFFFFFFFF;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xFF] ^ (c >>> 8);
  return (c ^ 0xFFFFFFFF) >>> 0;
}

let connCounter = 0;
let requestCounter = 0;
const connections = new Set();

class ProtocolError extends Error {}

function readDoc(buf, off, end) {
  if (off + 5 > end) throw new ProtocolError('truncated BSON');
  const len = buf.readInt32LE(off);
  if (len < 5 || off + len > end) throw new ProtocolError('invalid BSON length');
  if (buf[off + len - 1] !== 0) throw new ProtocolError('BSON not terminated');
  let doc;
  try { doc = BSON.deserialize(buf.subarray(off, off + len), DESER); } catch (e) { throw new ProtocolError(`invalid BSON: ${e.message}`); }
  return { doc, len };
}
function readCString(buf, off, end) {
  const z = buf.indexOf(0, off);
  if (z < 0 || z >= end) throw new ProtocolError('unterminated cstring');
  return { s: buf.toString('utf8', off, z), next: z + 1 };
}

function sendMsg(conn, responseTo, doc) {
  let body;
  try { body = encodeReply(doc); } catch (e) {
    body = encodeReply(errorReply(new MongoErr(10334, `BSONObj size is invalid: ${e.message}`)));
  }
  const header = Buffer.alloc(21);
  header.writeInt32LE(21 + body.length, 0);
  header.writeInt32LE(++requestCounter | 0, 4);
  header.writeInt32LE(responseTo, 8);
  header.writeInt32LE(OP_MSG, 12);
  header.writeUInt32LE(0, 16);
  header[20] = 0;
  conn.socket.write(Buffer.concat([header, body]));
}
function sendReply(conn, responseTo, doc) {
  const body = encodeReply(doc);
  const header = Buffer.alloc(36);
  header.writeInt32LE(36 + body.length, 0);
  header.writeInt32LE(++requestCounter | 0, 4);
  header.writeInt32LE(responseTo, 8);
  header.writeInt32LE(OP_REPLY, 12);
  header.writeInt32LE(8, 16); // AwaitCapable, as mongod sets
  header.writeBigInt64LE(0n, 20);
  header.writeInt32LE(0, 28);
  header.writeInt32LE(1, 32);
  conn.socket.write(Buffer.concat([header, body]));
}

function execute(conn, cmd, db) {
  let reply;
  try {
    reply = runCommand(conn, cmd, db);
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    reply = errorReply(e);
  }
  log(`conn ${conn.id} ${db}.${Object.keys(cmd)[0]} -> ${reply.ok ? 'ok' : `error ${reply.code}`}`);
  return reply;
}

function handleOpMsg(conn, buf, requestID) {
  const end = buf.length;
  const flags = buf.readUInt32LE(16);
  const checksum = (flags & 1) !== 0;
  const moreToCome = (flags & 2) !== 0;
  if (flags & 0xfffc) throw new ProtocolError(`unknown required OP_MSG flag bits ${flags}`);
  let stop = end;
  if (checksum) {
    if (end < 25) throw new ProtocolError('OP_MSG too short for a checksum');
    stop = end - 4;
    const want = buf.readUInt32LE(stop);
    if (crc32c(buf.subarray(0, stop)) !== want) throw new ProtocolError('OP_MSG checksum mismatch');
  }
  let off = 20; let body = null; let bodyAt = 0; const seqs = [];
  while (off < stop) {
    const kind = buf[off++];
    if (kind === 0) {
      if (body) throw new ProtocolError('OP_MSG with two body sections');
      const r = readDoc(buf, off, stop); body = r.doc; bodyAt = off; off += r.len;
    } else if (kind === 1) {
      if (off + 4 > stop) throw new ProtocolError('truncated document sequence');
      const size = buf.readInt32LE(off);
      const secEnd = off + size;
      if (size < 5 || secEnd > stop) throw new ProtocolError('invalid document sequence size');
      const id = readCString(buf, off + 4, secEnd);
      let p = id.next; const docs = [];
      const raws = [];
      while (p < secEnd) { const r = readDoc(buf, p, secEnd); docs.push(r.doc); raws.push(buf.subarray(p, p + r.len)); p += r.len; }
      seqs.push([id.s, docs, raws]);
      off = secEnd;
    } else throw new ProtocolError(`unknown OP_MSG section kind ${kind}`);
  }
  if (!body) throw new ProtocolError('OP_MSG without a body section');
  let reply;
  for (const [id, docs, raws] of seqs) {
    if (Object.prototype.hasOwnProperty.call(body, id)) {
      reply = errorReply(new MongoErr(40, `Duplicate field ${id}: a document sequence and the body both carry it`));
    }
    body[id] = docs;
    if (id === 'documents') body[RAW_DOCS] = raws;
  }
  if (!body[RAW_DOCS] && Object.keys(body)[0] === 'insert' && Array.isArray(body.documents)) {
    body[RAW_DOCS] = rawArrayDocs(buf, bodyAt, 'documents');
  }
  const db = body.$db;
  if (!reply) {
    if (typeof db !== 'string') reply = errorReply(new MongoErr(40571, 'OP_MSG requests require a $db argument'));
    else {
      const size = buf.length;
      if (size > opts.maxMessageSize) throw new ProtocolError('message too large');
      reply = execute(conn, body, db);
    }
  }
  if (!moreToCome) sendMsg(conn, requestID, reply);
}

function handleOpQuery(conn, buf, requestID) {
  const end = buf.length;
  const ns = readCString(buf, 20, end);
  let off = ns.next + 8; // numberToSkip, numberToReturn
  const q = readDoc(buf, off, end);
  off += q.len;
  let cmd = q.doc;
  if (isDoc(cmd.$query)) cmd = cmd.$query;
  else if (isDoc(cmd.query) && Object.keys(cmd)[0] === 'query') cmd = cmd.query;
  const dot = ns.s.indexOf('.');
  const db = dot > 0 ? ns.s.slice(0, dot) : ns.s;
  const coll = dot > 0 ? ns.s.slice(dot + 1) : '';
  const name = Object.keys(cmd)[0];
  let reply;
  if (coll !== '$cmd') {
    reply = { $err: 'OP_QUERY is no longer supported. The client driver may require an upgrade.', code: int32(5739101), ok: 0 };
  } else if (name !== 'hello' && name !== 'isMaster' && name !== 'ismaster') {
    reply = errorReply(new MongoErr(352, `Unsupported OP_QUERY command: ${name}. The client driver may require an upgrade. For more details see https://dochub.mongodb.org/core/legacy-opcode-removal`));
  } else reply = execute(conn, cmd, db);
  sendReply(conn, requestID, reply);
}

function onConnection(socket) {
  const conn = { id: ++connCounter, socket, buf: Buffer.alloc(0), cursors: new Set(), user: null, sasl: null, convCounter: 0 };
  connections.add(conn);
  socket.setNoDelay(true);
  log(`conn ${conn.id} open from ${socket.remotePort}`);
  const close = (why) => {
    if (why) log(`conn ${conn.id} closed: ${why}`);
    socket.destroy();
  };
  socket.on('data', (chunk) => {
    conn.buf = conn.buf.length ? Buffer.concat([conn.buf, chunk]) : chunk;
    try {
      while (conn.buf.length >= 4) {
        const len = conn.buf.readInt32LE(0);
        if (len < 16 || len > opts.maxMessageSize) throw new ProtocolError(`message length ${len} is invalid. Min 16 Max: ${opts.maxMessageSize}`);
        if (conn.buf.length < len) break;
        const msg = conn.buf.subarray(0, len);
        conn.buf = conn.buf.subarray(len);
        const requestID = msg.readInt32LE(4);
        const opCode = msg.readInt32LE(12);
        if (opCode === OP_MSG) {
          if (len < 21) throw new ProtocolError('OP_MSG too short');
          handleOpMsg(conn, msg, requestID);
        } else if (opCode === OP_QUERY) handleOpQuery(conn, msg, requestID);
        else if (opCode === OP_COMPRESSED) throw new ProtocolError('OP_COMPRESSED is not supported (no compressor was negotiated)');
        else throw new ProtocolError(`unknown opcode ${opCode}`);
        if (socket.destroyed) return;
      }
    } catch (e) {
      if (e instanceof ProtocolError) close(e.message);
      else { log('internal error', e.stack); close('internal error'); }
    }
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    connections.delete(conn);
    for (const id of conn.cursors) cursors.delete(id);
    conn.cursors.clear();
    log(`conn ${conn.id} gone`);
  });
}

const server = net.createServer(onConnection);
server.on('error', (e) => { process.stderr.write(`server.js: ${e.message}\n`); process.exit(1); });
server.listen(opts.port, opts.host, () => {
  process.stdout.write(`port ${server.address().port}\n`);
});
const shutdown = () => {
  for (const c of connections) c.socket.destroy();
  server.close();
  process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (opts.stdinWatch) {
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}
