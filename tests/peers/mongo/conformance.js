#!/usr/bin/env node
'use strict';
// Conformance of server.js with the official MongoDB Node.js driver (npm
// "mongodb"), plus raw-wire checks of the framing. Prints TAP.
//
// usage: MONGO_PORT=N node conformance.js   (server started by conformance.sh
// with the users listed in USERS below); without MONGO_PORT it starts its own.

const path = require('path');
const net = require('net');
const { spawn } = require('child_process');
const assert = require('assert');
const { MongoClient, Int32, Long, Double, Decimal128, ObjectId, Binary, Timestamp, BSONRegExp, MinKey, MaxKey,
  UUID, BSON } = require('mongodb');

const { serialize, deserialize } = BSON;

const SERVER = path.join(__dirname, 'server.js');
// The users conformance.sh creates (the --auth arguments, percent-encoded).
const USERS = [
  'root:p%40ss%3Aw%2Frd%25', 'sha1only:pw1:SCRAM-SHA-1', 'sha256only:pw2:SCRAM-SHA-256', 'appuser:apppw@appdb',
];
const ROOT_URI_CREDS = 'root:p%40ss%3Aw%2Frd%25';

function startServer(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [SERVER, '--port', '0', ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = /^port (\d+)\n/.exec(out);
      if (m) resolve({ port: parseInt(m[1], 10), proc: p, stop: () => { p.stdin.end(); p.kill('SIGTERM'); } });
    });
    p.on('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
}

let PORT;
const uri = (creds, q = '') => `mongodb://${creds ? creds + '@' : ''}127.0.0.1:${PORT}/${q}`;
const baseOpts = { serverSelectionTimeoutMS: 3000, connectTimeoutMS: 3000 };
async function withClient(u, opts, fn) {
  const c = new MongoClient(u, Object.assign({}, baseOpts, opts));
  try { await c.connect(); return await fn(c); } finally { await c.close(); }
}
let mainClient; let events = [];
const db = () => mainClient.db('conf');
async function fresh(name) { const c = db().collection(name); await c.drop(); return c; }
async function rejects(p, check) {
  let err = null;
  try { await p; } catch (e) { err = e; }
  assert(err, 'expected an error');
  if (check) check(err);
  return err;
}
const started = (name) => events.filter((e) => e.commandName === name);

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

// ------------------------------------------------------------ authentication
test('SCRAM-SHA-256 with percent-encoded user and password and authSource', async () => {
  await withClient(uri(ROOT_URI_CREDS, '?authSource=admin&authMechanism=SCRAM-SHA-256'), {}, async (c) => {
    const r = await c.db('x').command({ ping: 1 });
    assert.strictEqual(r.ok, 1);
    const s = await c.db('admin').command({ connectionStatus: 1 });
    assert.deepStrictEqual(s.authInfo.authenticatedUsers, [{ user: 'root', db: 'admin' }]);
  });
});
test('SCRAM-SHA-1 with percent-encoded password', async () => {
  await withClient(uri(ROOT_URI_CREDS, '?authSource=admin&authMechanism=SCRAM-SHA-1'), {}, async (c) => {
    await c.db('conf').collection('auth1').insertOne({ ok: true });
  });
});
test('mechanism negotiation picks SCRAM-SHA-1 for a SHA-1-only user', async () => {
  await withClient(uri('sha1only:pw1'), {}, async (c) => { await c.db('conf').command({ count: 'auth1' }); });
});
test('SCRAM-SHA-256-only user with SCRAM-SHA-256; SCRAM-SHA-1 refused', async () => {
  await withClient(uri('sha256only:pw2', '?authMechanism=SCRAM-SHA-256'), {}, async (c) => {
    await c.db('conf').command({ count: 'auth1' });
  });
  await rejects(withClient(uri('sha256only:pw2', '?authMechanism=SCRAM-SHA-1'), {}, async () => {}),
    (e) => assert.strictEqual(e.code, 18));
});
test('wrong password fails with code 18 AuthenticationFailed', async () => {
  for (const mech of ['SCRAM-SHA-256', 'SCRAM-SHA-1']) {
    await rejects(withClient(uri('root:wrong', `?authMechanism=${mech}`), {}, async () => {}), (e) => {
      assert.strictEqual(e.code, 18);
      assert.strictEqual(e.codeName, 'AuthenticationFailed');
      assert.match(e.message, /Authentication failed/);
    });
  }
});
test('OP_MSG hello handshake (serverApi) with speculative SCRAM-SHA-256', async () => {
  const seen = [];
  const c = new MongoClient(uri(ROOT_URI_CREDS, '?authSource=admin'), Object.assign({ serverApi: '1', monitorCommands: true }, baseOpts));
  c.on('commandStarted', (e) => seen.push(e.commandName));
  try {
    await c.connect();
    await c.db('conf').collection('api').insertOne({ a: 1 });
    assert.strictEqual((await c.db('conf').collection('api').findOne({}, { projection: { _id: 0 } })).a, 1);
  } finally { await c.close(); }
  assert(seen.includes('insert') && seen.includes('find'));
});
test('unknown user fails with code 18', async () => {
  await rejects(withClient(uri('nobody:x'), {}, async () => {}), (e) => assert.strictEqual(e.code, 18));
});
test('authSource=appdb user', async () => {
  await withClient(uri('appuser:apppw', 'appdb?authSource=appdb'), {}, async (c) => {
    await c.db('appdb').collection('t').insertOne({ a: 1 });
    assert.strictEqual(await c.db('appdb').collection('t').countDocuments(), 1);
  });
  await rejects(withClient(uri('appuser:apppw', '?authSource=admin'), {}, async () => {}), (e) => assert.strictEqual(e.code, 18));
});
test('without credentials: ping and hello work, find gets code 13 Unauthorized', async () => {
  await withClient(uri(null), {}, async (c) => {
    assert.strictEqual((await c.db('admin').command({ ping: 1 })).ok, 1);
    const h = await c.db('admin').command({ hello: 1 });
    assert.strictEqual(h.isWritablePrimary, true);
    await rejects(c.db('conf').collection('x').findOne({}), (e) => {
      assert.strictEqual(e.code, 13);
      assert.strictEqual(e.codeName, 'Unauthorized');
      assert.match(e.message, /requires authentication/);
    });
  });
});
test('hello reply fields like a standalone mongod', async () => {
  const h = await db().command({ hello: 1, saslSupportedMechs: 'admin.root' });
  assert.strictEqual(h.isWritablePrimary, true);
  assert.strictEqual(h.maxBsonObjectSize, 16777216);
  assert.strictEqual(h.maxMessageSizeBytes, 48000000);
  assert.strictEqual(h.maxWriteBatchSize, 100000);
  assert(h.localTime instanceof Date);
  assert.strictEqual(h.logicalSessionTimeoutMinutes, 30);
  assert.strictEqual(h.minWireVersion, 0);
  assert(h.maxWireVersion >= 17);
  assert.strictEqual(h.readOnly, false);
  assert(typeof h.connectionId === 'number');
  assert.deepStrictEqual(h.saslSupportedMechs.sort(), ['SCRAM-SHA-1', 'SCRAM-SHA-256']);
  const im = await db().command({ isMaster: 1 });
  assert.strictEqual(im.ismaster, true);
});

// ------------------------------------------------------------ CRUD
test('insertOne returns insertedId; findOne reads it back', async () => {
  const c = await fresh('ins');
  const r = await c.insertOne({ name: 'a', n: 1 });
  assert(r.acknowledged && r.insertedId instanceof ObjectId);
  const d = await c.findOne({ _id: r.insertedId });
  assert.deepStrictEqual(d, { _id: r.insertedId, name: 'a', n: 1 });
  const r2 = await c.insertOne({ _id: 'custom', x: 1 });
  assert.strictEqual(r2.insertedId, 'custom');
  assert.strictEqual(await c.findOne({ nope: 1 }), null);
});
test('_id moves to the front of a stored document', async () => {
  const c = await fresh('idfirst');
  await c.insertOne({ a: 1, _id: 5, b: 2 });
  const raw = await c.findOne({}, { raw: true });
  assert.deepStrictEqual(Object.keys(deserialize(raw)), ['_id', 'a', 'b']);
});
test('insertMany ordered with a duplicate stops at it (11000, insertedCount)', async () => {
  const c = await fresh('ordered');
  const e = await rejects(c.insertMany([{ _id: 1 }, { _id: 2 }, { _id: 1 }, { _id: 3 }]), (err) => {
    assert.strictEqual(err.code, 11000);
    assert.strictEqual(err.result.insertedCount, 2);
    assert.strictEqual(err.writeErrors.length === undefined ? 1 : err.writeErrors.length, 1);
  });
  const we = Array.isArray(e.writeErrors) ? e.writeErrors[0] : e.writeErrors;
  assert.strictEqual(we.index, 2);
  assert.strictEqual(we.errmsg, 'E11000 duplicate key error collection: conf.ordered index: _id_ dup key: { _id: 1 }');
  assert.strictEqual(await c.countDocuments(), 2);
});
test('insertMany unordered with a duplicate inserts the rest', async () => {
  const c = await fresh('unordered');
  await rejects(c.insertMany([{ _id: 1 }, { _id: 1 }, { _id: 2 }, { _id: 2 }, { _id: 3 }], { ordered: false }), (err) => {
    assert.strictEqual(err.code, 11000);
    assert.strictEqual(err.result.insertedCount, 3);
    assert.deepStrictEqual(err.writeErrors.map((w) => w.index), [1, 3]);
  });
  assert.deepStrictEqual((await c.find().sort({ _id: 1 }).toArray()).map((d) => d._id), [1, 2, 3]);
});
test('find with filter, projection, sort, skip and limit', async () => {
  const c = await fresh('find');
  await c.insertMany(Array.from({ length: 20 }, (_, i) => ({ _id: i, n: i % 5, s: `s${i}`, sub: { a: i, b: -i } })));
  const docs = await c.find({ n: { $gte: 2 } }, { projection: { s: 1, 'sub.a': 1 } }).sort({ n: -1, _id: 1 }).skip(2).limit(5).toArray();
  assert.deepStrictEqual(docs, [
    { _id: 14, s: 's14', sub: { a: 14 } }, { _id: 19, s: 's19', sub: { a: 19 } }, { _id: 3, s: 's3', sub: { a: 3 } },
    { _id: 8, s: 's8', sub: { a: 8 } }, { _id: 13, s: 's13', sub: { a: 13 } }]);
  const ex = await c.find({ _id: 1 }, { projection: { sub: 0, _id: 0 } }).toArray();
  assert.deepStrictEqual(ex, [{ n: 1, s: 's1' }]);
  const q = await c.find({ $or: [{ _id: { $in: [1, 2] } }, { s: /^s1[89]$/ }] }).sort({ _id: -1 }).toArray();
  assert.deepStrictEqual(q.map((d) => d._id), [19, 18, 2, 1]);
  assert.deepStrictEqual((await c.find({ 'sub.b': { $lt: -17 } }).toArray()).map((d) => d._id), [18, 19]);
});
test('find with batchSize runs getMore batches (command monitoring)', async () => {
  const c = await fresh('batches');
  await c.insertMany(Array.from({ length: 25 }, (_, i) => ({ _id: i })));
  events = [];
  const docs = await c.find({}, { batchSize: 10 }).toArray();
  assert.strictEqual(docs.length, 25);
  assert.deepStrictEqual(docs.map((d) => d._id), Array.from({ length: 25 }, (_, i) => i));
  assert.strictEqual(started('getMore').length, 2);
  assert.strictEqual(started('killCursors').length, 0);
  events = [];
  const all = await c.find({}).toArray();
  assert.strictEqual(all.length, 25);
  assert.strictEqual(started('getMore').length, 0);
});
test('default first batch is 101 documents, getMore returns the rest', async () => {
  const c = await fresh('big');
  await c.insertMany(Array.from({ length: 250 }, (_, i) => ({ _id: i })));
  const r = await db().command({ find: 'big' });
  assert.strictEqual(r.cursor.firstBatch.length, 101);
  assert(r.cursor.id instanceof Long || typeof r.cursor.id === 'number' || typeof r.cursor.id === 'bigint');
  assert.strictEqual(r.cursor.ns, 'conf.big');
  const m = await db().command({ getMore: Long.fromValue(r.cursor.id), collection: 'big' });
  assert.strictEqual(m.cursor.nextBatch.length, 149);
  assert.strictEqual(Number(m.cursor.id), 0);
});
test('closing a cursor early sends killCursors; the cursor is gone', async () => {
  const c = await fresh('kill');
  await c.insertMany(Array.from({ length: 30 }, (_, i) => ({ _id: i })));
  events = [];
  const cur = c.find({}, { batchSize: 5 });
  const first = await cur.next();
  assert.strictEqual(first._id, 0);
  const id = cur.id;
  await cur.close();
  const kills = started('killCursors');
  assert.strictEqual(kills.length, 1);
  assert.strictEqual(String(kills[0].command.cursors[0]), String(id));
  await rejects(db().command({ getMore: Long.fromValue(id), collection: 'kill' }), (e) => assert.strictEqual(e.code, 43));
  const r = await db().command({ killCursors: 'kill', cursors: [Long.fromNumber(12345)] });
  assert.strictEqual(r.cursorsNotFound.length, 1);
});
test('updateOne / updateMany / replaceOne with upsert', async () => {
  const c = await fresh('upd');
  await c.insertMany([{ _id: 1, g: 'a', v: 1 }, { _id: 2, g: 'a', v: 2 }, { _id: 3, g: 'b', v: 3 }]);
  let r = await c.updateOne({ g: 'a' }, { $set: { v: 10 } });
  assert.deepStrictEqual([r.matchedCount, r.modifiedCount, r.upsertedCount, r.upsertedId], [1, 1, 0, null]);
  r = await c.updateMany({ g: 'a' }, { $set: { v: 10 } });
  assert.deepStrictEqual([r.matchedCount, r.modifiedCount], [2, 1]);
  r = await c.updateMany({ g: 'zzz' }, { $set: { v: 0 } });
  assert.deepStrictEqual([r.matchedCount, r.modifiedCount], [0, 0]);
  r = await c.updateOne({ g: 'c', k: 7 }, { $set: { v: 5 }, $setOnInsert: { created: true } }, { upsert: true });
  assert.strictEqual(r.upsertedCount, 1);
  assert(r.upsertedId instanceof ObjectId);
  const up = await c.findOne({ _id: r.upsertedId });
  assert.deepStrictEqual(up, { _id: r.upsertedId, g: 'c', k: 7, v: 5, created: true });
  r = await c.replaceOne({ _id: 3 }, { g: 'B', replaced: true });
  assert.deepStrictEqual([r.matchedCount, r.modifiedCount], [1, 1]);
  assert.deepStrictEqual(await c.findOne({ _id: 3 }), { _id: 3, g: 'B', replaced: true });
  r = await c.replaceOne({ _id: 99 }, { fresh: 1 }, { upsert: true });
  assert.strictEqual(r.upsertedId, 99);
  assert.deepStrictEqual(await c.findOne({ _id: 99 }), { _id: 99, fresh: 1 });
  await rejects(c.replaceOne({ _id: 3 }, { _id: 4 }), (e) => assert.strictEqual(e.code, 66));
  await rejects(c.updateOne({ _id: 3 }, { $bogus: { a: 1 } }), (e) => assert.strictEqual(e.code, 9));
});
test('update operators: $set $unset $inc $mul $min $max $push $pull $addToSet $pop $rename', async () => {
  const c = await fresh('ops');
  await c.insertOne({ _id: 1, a: 1, b: 'x', arr: [1, 2, 3, 2], tags: ['t'], nest: { k: 1 }, old: 5 });
  await c.updateOne({ _id: 1 }, {
    $set: { 'nest.deep.x': 1, s: 's' }, $unset: { b: '' }, $inc: { a: 2, cnt: 1 }, $push: { tags: { $each: ['u', 'v'] } },
    $pull: { arr: 2 }, $addToSet: { set: { $each: [1, 1, 2] } }, $rename: { old: 'renamed' }, $max: { hi: 9 }, $min: { lo: -1 },
  });
  assert.deepStrictEqual(await c.findOne({ _id: 1 }), {
    _id: 1, a: 3, arr: [1, 3], tags: ['t', 'u', 'v'], nest: { k: 1, deep: { x: 1 } }, s: 's', cnt: 1, set: [1, 2], renamed: 5, hi: 9, lo: -1,
  });
  await c.updateOne({ _id: 1 }, { $pop: { tags: -1 }, $mul: { a: 2 }, $pull: { set: { $gte: 2 } } });
  const d = await c.findOne({ _id: 1 });
  assert.deepStrictEqual([d.tags, d.a, d.set], [['u', 'v'], 6, [1]]);
  await rejects(c.updateOne({ _id: 1 }, { $inc: { s: 1 } }), (e) => assert.strictEqual(e.code, 14));
  await rejects(c.updateOne({ _id: 1 }, { $set: { a: 1 }, $inc: { a: 1 } }), (e) => assert.strictEqual(e.code, 40));
});
test('pipeline-style update', async () => {
  const c = await fresh('pipe');
  await c.insertOne({ _id: 1, a: 2, b: 3 });
  await c.updateOne({ _id: 1 }, [{ $set: { sum: { $add: ['$a', '$b'] } } }]);
  assert.deepStrictEqual(await c.findOne({ _id: 1 }), { _id: 1, a: 2, b: 3, sum: 5 });
});
test('deleteOne / deleteMany', async () => {
  const c = await fresh('del');
  await c.insertMany([{ g: 1 }, { g: 1 }, { g: 1 }, { g: 2 }]);
  assert.strictEqual((await c.deleteOne({ g: 1 })).deletedCount, 1);
  assert.strictEqual((await c.deleteMany({ g: 1 })).deletedCount, 2);
  assert.strictEqual((await c.deleteMany({ g: 9 })).deletedCount, 0);
  assert.strictEqual(await c.countDocuments(), 1);
});
test('countDocuments and estimatedDocumentCount', async () => {
  const c = await fresh('cnt');
  await c.insertMany(Array.from({ length: 12 }, (_, i) => ({ i })));
  assert.strictEqual(await c.countDocuments(), 12);
  assert.strictEqual(await c.countDocuments({ i: { $lt: 5 } }), 5);
  assert.strictEqual(await c.countDocuments({}, { skip: 3, limit: 4 }), 4);
  assert.strictEqual(await c.countDocuments({ i: 100 }), 0);
  events = [];
  assert.strictEqual(await c.estimatedDocumentCount(), 12);
  assert.strictEqual(started('count').length, 1);
  assert.strictEqual(await db().collection('missing_coll').estimatedDocumentCount(), 0);
});
test('distinct', async () => {
  const c = await fresh('dist');
  await c.insertMany([{ k: 'b', t: [1, 2] }, { k: 'a', t: [2, 3] }, { k: 'b' }, { k: 'c', t: 1 }]);
  assert.deepStrictEqual((await c.distinct('k')).sort(), ['a', 'b', 'c']);
  assert.deepStrictEqual((await c.distinct('t')).sort(), [1, 2, 3]);
  assert.deepStrictEqual(await c.distinct('k', { t: 3 }), ['a']);
});
test('aggregate: $match $group $sort $project $unwind $skip $limit $count', async () => {
  const c = await fresh('agg');
  await c.insertMany([
    { _id: 1, cat: 'x', qty: 5, tags: ['a', 'b'] }, { _id: 2, cat: 'y', qty: 2, tags: ['b'] },
    { _id: 3, cat: 'x', qty: 1, tags: [] }, { _id: 4, cat: 'z', qty: 7, tags: ['a'] }]);
  const g = await c.aggregate([{ $match: { qty: { $gt: 1 } } }, { $group: { _id: '$cat', total: { $sum: '$qty' }, n: { $sum: 1 } } },
    { $sort: { total: -1 } }]).toArray();
  assert.deepStrictEqual(g, [{ _id: 'z', total: 7, n: 1 }, { _id: 'x', total: 5, n: 1 }, { _id: 'y', total: 2, n: 1 }]);
  const u = await c.aggregate([{ $unwind: '$tags' }, { $project: { tags: 1, _id: 0 } }, { $skip: 1 }, { $limit: 2 }]).toArray();
  assert.deepStrictEqual(u, [{ tags: 'b' }, { tags: 'b' }]);
  const n = await c.aggregate([{ $match: { cat: 'x' } }, { $count: 'howMany' }]).toArray();
  assert.deepStrictEqual(n, [{ howMany: 2 }]);
  events = [];
  const b = await c.aggregate([{ $sort: { _id: 1 } }], { batchSize: 1 }).toArray();
  assert.strictEqual(b.length, 4);
  assert.strictEqual(started('getMore').length, 3);
  const comp = await c.aggregate([{ $addFields: { double: { $multiply: ['$qty', 2] } } }, { $match: { double: { $gte: 10 } } },
    { $project: { double: 1 } }, { $sort: { _id: 1 } }]).toArray();
  assert.deepStrictEqual(comp, [{ _id: 1, double: 10 }, { _id: 4, double: 14 }]);
});
test('findOneAndUpdate / findOneAndReplace / findOneAndDelete', async () => {
  const c = await fresh('fam');
  await c.insertMany([{ _id: 1, v: 1, o: 2 }, { _id: 2, v: 1, o: 1 }]);
  let r = await c.findOneAndUpdate({ v: 1 }, { $inc: { v: 1 } }, { sort: { o: 1 }, includeResultMetadata: true });
  assert.deepStrictEqual(r.value, { _id: 2, v: 1, o: 1 });
  assert.strictEqual(r.lastErrorObject.updatedExisting, true);
  assert.strictEqual(r.lastErrorObject.n, 1);
  r = await c.findOneAndUpdate({ _id: 1 }, { $set: { v: 9 } }, { returnDocument: 'after', projection: { v: 1, _id: 0 } });
  assert.deepStrictEqual(r, { v: 9 });
  r = await c.findOneAndUpdate({ _id: 3 }, { $set: { v: 3 } }, { upsert: true, returnDocument: 'after', includeResultMetadata: true });
  assert.deepStrictEqual(r.value, { _id: 3, v: 3 });
  assert.strictEqual(r.lastErrorObject.updatedExisting, false);
  assert.strictEqual(r.lastErrorObject.upserted, 3);
  r = await c.findOneAndReplace({ _id: 3 }, { w: 1 }, { returnDocument: 'after' });
  assert.deepStrictEqual(r, { _id: 3, w: 1 });
  r = await c.findOneAndDelete({ _id: 2 });
  assert.deepStrictEqual(r, { _id: 2, v: 2, o: 1 });
  assert.strictEqual(await c.findOneAndDelete({ _id: 2 }), null);
  assert.strictEqual(await c.findOneAndUpdate({ _id: 42 }, { $set: { a: 1 } }), null);
});
test('createIndex unique -> duplicate key error (insert and update); listIndexes; dropIndex', async () => {
  const c = await fresh('idx');
  assert.strictEqual(await c.createIndex({ name: 1 }, { unique: true }), 'name_1');
  assert.deepStrictEqual(await c.createIndexes([{ key: { a: 1, b: -1 } }, { key: { c: 1 }, name: 'cee' }]), ['a_1_b_-1', 'cee']);
  await c.insertOne({ _id: 1, name: 'x' });
  await rejects(c.insertOne({ _id: 2, name: 'x' }), (e) => {
    assert.strictEqual(e.code, 11000);
    assert.strictEqual(e.errmsg || e.message, 'E11000 duplicate key error collection: conf.idx index: name_1 dup key: { name: "x" }');
    assert.deepStrictEqual(e.keyValue, { name: 'x' });
    assert.deepStrictEqual(e.keyPattern, { name: 1 });
  });
  await c.insertOne({ _id: 2, name: 'y' });
  await rejects(c.updateOne({ _id: 2 }, { $set: { name: 'x' } }), (e) => assert.strictEqual(e.code, 11000));
  await c.updateOne({ _id: 2 }, { $set: { name: 'z' } });
  await c.insertOne({ _id: 3, name: 'y' });
  const ix = await c.listIndexes().toArray();
  assert.deepStrictEqual(ix.map((i) => i.name), ['_id_', 'name_1', 'a_1_b_-1', 'cee']);
  assert.deepStrictEqual(ix[0], { v: 2, key: { _id: 1 }, name: '_id_' });
  assert.strictEqual(ix[1].unique, true);
  assert.deepStrictEqual(ix[2].key, { a: 1, b: -1 });
  assert.strictEqual(await c.indexExists('cee'), true);
  await c.dropIndex('cee');
  assert.strictEqual(await c.indexExists('cee'), false);
  await rejects(c.dropIndex('nope'), (e) => assert.strictEqual(e.code, 27));
  await c.dropIndex('name_1');
  await c.insertOne({ _id: 4, name: 'x' });
  await rejects(c.createIndex({ name: 1 }, { unique: true }), (e) => assert.strictEqual(e.code, 11000));
  await rejects(db().collection('no_such').listIndexes().toArray(), (e) => assert.strictEqual(e.code, 26));
});
test('drop a collection, drop a missing one, dropDatabase', async () => {
  const c = db().collection('todrop');
  await c.insertOne({ a: 1 });
  assert.strictEqual(await c.drop(), true);
  assert.strictEqual(await c.countDocuments(), 0);
  assert.strictEqual(await c.drop(), true);
  const other = mainClient.db('conf_drop');
  await other.collection('z').insertOne({});
  assert.strictEqual(await other.dropDatabase(), true);
  const names = (await mainClient.db('admin').admin().listDatabases()).databases.map((d) => d.name);
  assert(!names.includes('conf_drop'));
});
test('db.command: buildInfo, unknown command (59), create / NamespaceExists (48)', async () => {
  const b = await db().command({ buildInfo: 1 });
  assert.match(b.version, /^7\.0\./);
  await rejects(db().command({ frobnicate: 1 }), (e) => {
    assert.strictEqual(e.code, 59);
    assert.strictEqual(e.codeName, 'CommandNotFound');
    assert.strictEqual(e.message, "no such command: 'frobnicate'");
  });
  await db().collection('created').drop();
  await db().createCollection('created');
  await rejects(db().createCollection('created'), (e) => assert.strictEqual(e.code, 48));
});
test('unknown command fields (40415) and wrong types (14) are refused like mongod', async () => {
  await rejects(db().command({ find: 'x', filtre: {} }), (e) => {
    assert.strictEqual(e.code, 40415);
    assert.strictEqual(e.message, "BSON field 'find.filtre' is an unknown field.");
  });
  await rejects(db().command({ find: 'x', limit: 'ten' }), (e) => {
    assert.strictEqual(e.code, 14);
    assert.strictEqual(e.codeName, 'TypeMismatch');
  });
  await rejects(db().command({ update: 'x', updates: [{ q: {}, u: {}, mutli: true }] }), (e) => {
    assert.strictEqual(e.code, 40415);
    assert.strictEqual(e.message, "BSON field 'update.updates.mutli' is an unknown field.");
  });
  await rejects(db().command({ insert: 'x', documents: [] }), (e) => assert.strictEqual(e.code, 16));
});
test('listCollections with filter and nameOnly', async () => {
  const d = mainClient.db('conf_lc');
  await d.dropDatabase();
  await d.collection('one').insertOne({});
  await d.collection('two').insertOne({});
  const all = await d.listCollections().toArray();
  assert.deepStrictEqual(all.map((x) => x.name).sort(), ['one', 'two']);
  assert.strictEqual(all[0].type, 'collection');
  assert(all[0].info.uuid);
  const f = await d.listCollections({ name: 'two' }).toArray();
  assert.deepStrictEqual(f.map((x) => x.name), ['two']);
  const n = await d.listCollections({}, { nameOnly: true }).toArray();
  assert.deepStrictEqual(Object.keys(n[0]).sort(), ['name', 'type']);
  assert.deepStrictEqual((await d.collections()).map((x) => x.collectionName).sort(), ['one', 'two']);
});
test('admin listDatabases', async () => {
  await mainClient.db('conf_ld').collection('c').insertOne({ x: 'y'.repeat(100) });
  const r = await mainClient.db('admin').admin().listDatabases();
  const e = r.databases.find((d) => d.name === 'conf_ld');
  assert(e, 'conf_ld listed');
  assert(e.sizeOnDisk > 0);
  assert.strictEqual(e.empty, false);
  assert(r.totalSize >= e.sizeOnDisk);
  assert(r.databases.find((d) => d.name === 'admin'));
  const n = await mainClient.db('admin').admin().listDatabases({ nameOnly: true });
  assert(n.databases.every((d) => Object.keys(d).length === 1));
});

// ------------------------------------------------------------ BSON types
const SAMPLE = () => ({
  _id: new ObjectId('0123456789abcdef01234567'),
  i32: new Int32(7), i32neg: new Int32(-2147483648), i64: Long.fromString('9007199254740993'), i64small: Long.fromNumber(3),
  dbl: new Double(2), dblfrac: new Double(-0.5), dec: Decimal128.fromString('1234.5678901234567890123'),
  str: 'héllo \u2603', emptyStr: '', t: true, f: false, nul: null,
  date: new Date(1700000000123), ts: new Timestamp({ t: 1700000000, i: 7 }),
  bin: new Binary(Buffer.from([0, 1, 2, 255]), 0), binUser: new Binary(Buffer.from('xyz'), 0x80),
  uuid: new UUID('0123abcd-0123-4567-89ab-0123456789ab').toBinary(),
  re: new BSONRegExp('^a.c$', 'imx'), min: new MinKey(), max: new MaxKey(),
  nested: { z: 1, a: { deep: [new Int32(1), new Double(1), Long.fromNumber(1)] }, m: [] },
  arr: [[1, 2], [], [{ x: null }]], zkey: 'last',
});
test('every BSON type round-trips exactly (raw bytes equal)', async () => {
  const c = await fresh('types');
  const doc = SAMPLE();
  await c.insertOne(doc);
  const raw = await c.findOne({ _id: doc._id }, { raw: true });
  assert(Buffer.from(raw).equals(serialize(doc)), 'stored bytes differ from the inserted ones');
  const d = await c.findOne({ _id: doc._id }, { promoteValues: false, promoteLongs: false, bsonRegExp: true });
  assert(d.i32 instanceof Int32 && d.i64 instanceof Long && d.dbl instanceof Double && d.dec instanceof Decimal128);
  assert.strictEqual(d.i64.toString(), '9007199254740993');
  assert.strictEqual(d.bin.sub_type, 0);
  assert.strictEqual(d.binUser.sub_type, 0x80);
  assert.strictEqual(d.uuid.sub_type, 4);
  assert(d.re instanceof BSONRegExp && d.re.options === 'imx');
  assert(d.ts instanceof Timestamp && d.ts.t === 1700000000 && d.ts.i === 7);
  assert(d.min instanceof MinKey && d.max instanceof MaxKey);
  assert.deepStrictEqual(Object.keys(d), Object.keys(doc));
});
test('types survive updates ($set, $inc keeps int32/int64/double)', async () => {
  const c = await fresh('types2');
  await c.insertOne({ _id: 1, a: new Int32(1), b: Long.fromNumber(1), c: new Double(1), big: new Int32(2147483647) });
  await c.updateOne({ _id: 1 }, { $inc: { a: new Int32(1), b: new Int32(1), c: new Int32(1), big: new Int32(1) }, $set: { d: new Double(5) } });
  const d = await c.findOne({ _id: 1 }, { promoteValues: false });
  assert(d.a instanceof Int32 && d.a.value === 2, 'int32 + int32 stays int32');
  assert(d.b instanceof Long && d.b.toNumber() === 2, 'int64 + int32 is int64');
  assert(d.c instanceof Double && d.c.value === 2, 'double + int32 is double');
  assert(d.big instanceof Long && d.big.toNumber() === 2147483648, 'int32 overflow becomes int64');
  assert(d.d instanceof Double && d.d.value === 5);
  const all = await c.find({}, { raw: true }).toArray();
  assert.strictEqual(all.length, 1);
});
test('queries compare numbers across int32 / int64 / double', async () => {
  const c = await fresh('numcmp');
  await c.insertMany([{ _id: 1, v: new Int32(5) }, { _id: 2, v: Long.fromNumber(5) }, { _id: 3, v: new Double(5) },
    { _id: 4, v: new Double(5.5) }, { _id: 5, v: 'five' }]);
  assert.deepStrictEqual((await c.find({ v: 5 }).toArray()).map((d) => d._id), [1, 2, 3]);
  assert.deepStrictEqual((await c.find({ v: { $gt: Long.fromNumber(5) } }).toArray()).map((d) => d._id), [4]);
  assert.deepStrictEqual((await c.find({}).sort({ v: -1, _id: 1 }).toArray()).map((d) => d._id), [5, 4, 1, 2, 3]);
  const typed = async (t) => (await c.find({ v: { $type: t } }).toArray()).map((d) => d._id);
  assert.deepStrictEqual(await typed('string'), [5]);
  assert.deepStrictEqual(await typed('int'), [1]);
  assert.deepStrictEqual(await typed('long'), [2]);
  assert.deepStrictEqual(await typed('double'), [3, 4]);
  assert.deepStrictEqual(await typed(16), [1]);
  assert.deepStrictEqual(await typed('number'), [1, 2, 3, 4]);
  assert.deepStrictEqual((await c.find({ $and: [{ v: { $type: 'double', $gt: 5 } }] }).toArray()).map((d) => d._id), [4]);
});
test('ObjectId, Date and Binary filters', async () => {
  const c = await fresh('typedq');
  const id = new ObjectId();
  await c.insertMany([{ _id: id, when: new Date(1000), b: new Binary(Buffer.from('ab')) }, { when: new Date(5000) }]);
  assert.strictEqual((await c.findOne({ _id: id })).when.getTime(), 1000);
  assert.strictEqual(await c.countDocuments({ when: { $gt: new Date(2000) } }), 1);
  assert.strictEqual(await c.countDocuments({ _id: { $in: [id] } }), 1);
  assert.strictEqual(await c.countDocuments({ b: new Binary(Buffer.from('ab')) }), 1);
  assert.strictEqual(await c.countDocuments({ b: new Binary(Buffer.from('ab'), 0x80) }), 0, 'the subtype counts');
  await c.insertOne({ _id: 'k', lo: new MinKey(), hi: new MaxKey() });
  assert.strictEqual(await c.countDocuments({ lo: new MinKey() }), 1);
  assert.strictEqual(await c.countDocuments({ hi: new MaxKey() }), 1);
  assert.strictEqual(await c.countDocuments({ hi: new MinKey() }), 0);
});

// ------------------------------------------------------------ concurrency and limits
test('200 concurrent operations on one client', async () => {
  const c = await fresh('conc');
  const ops = [];
  for (let i = 0; i < 100; i++) ops.push(c.insertOne({ _id: i, v: i * 2 }));
  await Promise.all(ops);
  const reads = [];
  for (let i = 0; i < 100; i++) reads.push(c.findOne({ _id: i }).then((d) => d.v === i * 2));
  for (let i = 0; i < 50; i++) reads.push(c.updateOne({ _id: i }, { $inc: { n: 1 } }).then((r) => r.modifiedCount === 1));
  for (let i = 0; i < 50; i++) reads.push(c.countDocuments({ _id: { $lte: i } }).then((n) => n === i + 1));
  const ok = await Promise.all(reads);
  assert(ok.every(Boolean), `${ok.filter((x) => !x).length} wrong answers`);
  assert.strictEqual(await c.countDocuments({ n: 1 }), 50);
});
test('--max-write-batch 10: the driver splits insertMany and the server rejects bigger batches', async () => {
  const s = await startServer(['--max-write-batch', '10', '--max-bson-size', '4096', '--max-message-size', '100000']);
  try {
    const c = new MongoClient(`mongodb://127.0.0.1:${s.port}/`, Object.assign({ monitorCommands: true }, baseOpts));
    const seen = [];
    c.on('commandStarted', (e) => { if (e.commandName === 'insert') seen.push(e.command.documents.length); });
    await c.connect();
    try {
      const h = await c.db('admin').command({ hello: 1 });
      assert.strictEqual(h.maxWriteBatchSize, 10);
      assert.strictEqual(h.maxBsonObjectSize, 4096);
      assert.strictEqual(h.maxMessageSizeBytes, 100000);
      const col = c.db('t').collection('split');
      const r = await col.insertMany(Array.from({ length: 25 }, (_, i) => ({ i })));
      assert.strictEqual(r.insertedCount, 25);
      // The driver cuts a batch before it reaches the limit (9, 9, 7 for 6.x).
      assert(seen.length >= 3 && seen.every((n) => n <= 10), `insert batches ${seen}`);
      assert.strictEqual(seen.reduce((a, b) => a + b, 0), 25);
      assert.strictEqual(await col.countDocuments(), 25);
      await rejects(c.db('t').command({ insert: 'split', documents: Array.from({ length: 11 }, () => ({})) }), (e) => {
        assert.strictEqual(e.code, 16);
        assert.match(e.message, /Write batch sizes must be between 1 and 10\. Got 11 operations\./);
      });
      // A document over maxBsonObjectSize: the driver refuses it itself, the server too.
      await rejects(col.insertOne({ big: 'x'.repeat(5000) }));
      const big = await rawCommand(s.port, { insert: 'split', documents: [{ big: 'x'.repeat(5000) }], $db: 't' });
      assert.strictEqual(big.ok, 1);
      assert.strictEqual(big.n, 0);
      assert.strictEqual(big.writeErrors[0].code, 2);
      assert.match(big.writeErrors[0].errmsg, /^object to insert too large/);
    } finally { await c.close(); }
  } finally { s.stop(); }
});

// ------------------------------------------------------------ raw wire
function frameMsg(requestID, doc, { flags = 0, seq = null, checksum = false, kind0 = true } = {}) {
  const parts = [];
  if (kind0) parts.push(Buffer.from([0]), serialize(doc));
  if (seq) {
    const docs = Buffer.concat(seq.docs.map((d) => serialize(d)));
    const id = Buffer.from(seq.id + '\0');
    const size = Buffer.alloc(4); size.writeInt32LE(4 + id.length + docs.length);
    parts.push(Buffer.from([1]), size, id, docs);
  }
  const body = Buffer.concat(parts);
  const total = 20 + body.length + (checksum ? 4 : 0);
  const h = Buffer.alloc(20);
  h.writeInt32LE(total, 0); h.writeInt32LE(requestID, 4); h.writeInt32LE(0, 8); h.writeInt32LE(2013, 12);
  h.writeUInt32LE(flags | (checksum ? 1 : 0), 16);
  let msg = Buffer.concat([h, body]);
  if (checksum) { const c = Buffer.alloc(4); c.writeUInt32LE(crc32c(msg)); msg = Buffer.concat([msg, c]); }
  return msg;
}
function crc32c(buf) {
  let c = ~0;
  for (const b of buf) { c ^= b; for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82F63B78 : c >>> 1; }
  return (~c) >>> 0;
}
// The field names of the BSON document at buf[at..], in byte order (scalar types only).
function rawNames(buf, at) {
  const names = [];
  let off = at + 4;
  while (buf[off] !== 0) {
    const t = buf[off]; const z = buf.indexOf(0, off + 1);
    names.push(buf.toString('utf8', off + 1, z));
    off = z + 1;
    off += { 0x07: 12, 0x10: 4, 0x08: 1, 0x01: 8, 0x12: 8 }[t] ?? (t === 0x02 ? 4 + buf.readInt32LE(off) : 0);
  }
  return names;
}
class Wire {
  constructor(port) {
    this.sock = net.connect(port, '127.0.0.1');
    this.buf = Buffer.alloc(0); this.waiters = []; this.replies = []; this.closed = false;
    this.sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.pump(); });
    this.sock.on('close', () => { this.closed = true; this.pump(); });
    this.sock.on('error', () => {});
    this.ready = new Promise((r) => this.sock.once('connect', r));
  }
  pump() {
    while (this.buf.length >= 4 && this.buf.length >= this.buf.readInt32LE(0)) {
      const len = this.buf.readInt32LE(0);
      const m = this.buf.subarray(0, len); this.buf = this.buf.subarray(len);
      const op = m.readInt32LE(12);
      const doc = op === 1 ? deserialize(m.subarray(36)) : deserialize(m.subarray(21));
      this.replies.push({ responseTo: m.readInt32LE(8), op, doc, raw: Buffer.from(m) });
    }
    const ws = this.waiters; this.waiters = [];
    for (const w of ws) w();
  }
  next(timeoutMs = 2000) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no reply')), timeoutMs);
      const check = () => {
        if (this.replies.length) { clearTimeout(t); resolve(this.replies.shift()); } else if (this.closed) { clearTimeout(t); resolve(null); } else this.waiters.push(check);
      };
      check();
    });
  }
  untilClosed(timeoutMs = 2000) {
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      const check = () => { if (this.closed) { clearTimeout(t); resolve(true); } else this.waiters.push(check); };
      check();
    });
  }
  send(b) { this.sock.write(b); }
  end() { this.sock.destroy(); }
}
async function rawCommand(port, doc) {
  const w = new Wire(port); await w.ready;
  try { w.send(frameMsg(1, doc)); return (await w.next()).doc; } finally { w.end(); }
}
async function authedWire() {
  // Raw tests run against an auth-free server of their own.
  const s = await startServer([]);
  const w = new Wire(s.port); await w.ready;
  return { s, w };
}
test('wire: many requests in flight on one connection, replies matched by responseTo', async () => {
  const { s, w } = await authedWire();
  try {
    const ids = [];
    let batch = [];
    for (let i = 0; i < 50; i++) {
      const id = 1000 + i * 7;
      ids.push(id);
      batch.push(frameMsg(id, { insert: 'p', documents: [{ _id: i }], $db: 't' }));
    }
    w.send(Buffer.concat(batch));
    for (const id of ids) {
      const r = await w.next();
      assert.strictEqual(r.responseTo, id);
      assert.strictEqual(r.doc.n, 1);
    }
    batch = [frameMsg(7, { count: 'p', $db: 't' })];
    w.send(Buffer.concat(batch));
    assert.strictEqual((await w.next()).doc.n, 50);
  } finally { w.end(); s.stop(); }
});
test('wire: kind-1 document sequence merges into the body; moreToCome gets no reply', async () => {
  const { s, w } = await authedWire();
  try {
    w.send(frameMsg(1, { insert: 'seq', $db: 't' }, { seq: { id: 'documents', docs: [{ _id: 1 }, { _id: 2 }, { _id: 3 }] } }));
    const r = await w.next();
    assert.strictEqual(r.responseTo, 1); assert.strictEqual(r.doc.n, 3);
    w.send(frameMsg(2, { insert: 'seq', documents: [{ _id: 4 }], $db: 't' }, { flags: 2 }));
    w.send(frameMsg(3, { count: 'seq', $db: 't' }));
    const r2 = await w.next();
    assert.strictEqual(r2.responseTo, 3, 'the moreToCome request got no reply');
    assert.strictEqual(r2.doc.n, 4);
  } finally { w.end(); s.stop(); }
});
test('wire: a document without _id gets an ObjectId _id in front, the rest in order', async () => {
  const { s, w } = await authedWire();
  try {
    w.send(frameMsg(1, { insert: 'noid', $db: 't' }, { seq: { id: 'documents', docs: [{ z: 1, a: 'x', 10: true }] } }));
    assert.strictEqual((await w.next()).doc.n, 1);
    w.send(frameMsg(2, { find: 'noid', filter: {}, $db: 't' }));
    const r = await w.next();
    const d = r.doc.cursor.firstBatch[0];
    assert(d._id instanceof ObjectId);
    // The names in byte order, read from the reply's bytes (a JS object would list "10" first).
    const raw = r.raw.subarray(21);
    const at = raw.indexOf(Buffer.from('\x030\x00', 'latin1')) + 3; // firstBatch element "0"
    assert.deepStrictEqual(rawNames(raw, at), ['_id', '10', 'z', 'a']);
  } finally { w.end(); s.stop(); }
});
test('wire: CRC-32C checksum verified (good accepted, bad closes the connection)', async () => {
  const { s, w } = await authedWire();
  try {
    w.send(frameMsg(1, { ping: 1, $db: 'admin' }, { checksum: true }));
    assert.strictEqual((await w.next()).doc.ok, 1);
    const bad = frameMsg(2, { ping: 1, $db: 'admin' }, { checksum: true });
    bad[bad.length - 1] ^= 0xff;
    w.send(bad);
    assert.strictEqual(await w.next(), null);
  } finally { w.end(); s.stop(); }
});
test('wire: legacy OP_QUERY hello on admin.$cmd gets OP_REPLY; other OP_QUERY commands refused', async () => {
  const { s, w } = await authedWire();
  try {
    const q = (id, ns, doc) => {
      const d = serialize(doc); const n = Buffer.from(ns + '\0');
      const h = Buffer.alloc(20); const tail = Buffer.alloc(8);
      tail.writeInt32LE(0, 0); tail.writeInt32LE(-1, 4);
      const total = 20 + n.length + 8 + d.length;
      h.writeInt32LE(total, 0); h.writeInt32LE(id, 4); h.writeInt32LE(0, 8); h.writeInt32LE(2004, 12); h.writeInt32LE(0, 16);
      return Buffer.concat([h, n, tail, d]);
    };
    w.send(q(11, 'admin.$cmd', { isMaster: 1, client: { application: { name: 'x' } } }));
    const r = await w.next();
    assert.strictEqual(r.op, 1); assert.strictEqual(r.responseTo, 11); assert.strictEqual(r.doc.ismaster, true);
    w.send(q(12, 'admin.$cmd', { find: 'x' }));
    const r2 = await w.next();
    assert.strictEqual(r2.doc.ok, 0); assert.strictEqual(r2.doc.code, 352);
  } finally { w.end(); s.stop(); }
});
test('wire: bad length, bad BSON and unknown opcode each close the connection', async () => {
  const s = await startServer(['--max-message-size', '100000']);
  try {
    const cases = [];
    const tooBig = Buffer.alloc(16); tooBig.writeInt32LE(200000, 0); tooBig.writeInt32LE(2013, 12); cases.push(tooBig);
    const tiny = Buffer.alloc(16); tiny.writeInt32LE(8, 0); cases.push(tiny);
    const badBson = frameMsg(1, { ping: 1, $db: 'admin' }); badBson.writeInt32LE(9999, 21); cases.push(badBson);
    const unknown = frameMsg(1, { ping: 1, $db: 'admin' }); unknown.writeInt32LE(4242, 12); cases.push(unknown);
    const compressed = frameMsg(1, { ping: 1, $db: 'admin' }); compressed.writeInt32LE(2012, 12); cases.push(compressed);
    for (const c of cases) {
      const w = new Wire(s.port); await w.ready;
      w.send(c);
      assert.strictEqual(await w.untilClosed(), true);
      assert.strictEqual(w.replies.length, 0);
    }
    const w = new Wire(s.port); await w.ready;
    w.send(frameMsg(5, { ping: 1, $db: 'admin' }));
    assert.strictEqual((await w.next()).doc.ok, 1, 'server still serves new connections');
    w.end();
  } finally { s.stop(); }
});
test('wire: OP_MSG hello with speculativeAuthenticate answers the first SCRAM step', async () => {
  const s = await startServer(['--auth', 'u:p']);
  try {
    const w = new Wire(s.port); await w.ready;
    const payload = new Binary(Buffer.from('n,,n=u,r=abcdefghijklmnop'));
    w.send(frameMsg(1, { hello: 1, helloOk: true, saslSupportedMechs: 'admin.u',
      speculativeAuthenticate: { saslStart: 1, mechanism: 'SCRAM-SHA-256', payload, db: 'admin' }, $db: 'admin' }));
    const r = (await w.next()).doc;
    assert.strictEqual(r.isWritablePrimary, true);
    assert.strictEqual(r.helloOk, true);
    assert.deepStrictEqual(r.saslSupportedMechs.sort(), ['SCRAM-SHA-1', 'SCRAM-SHA-256']);
    const sa = r.speculativeAuthenticate;
    assert(sa && sa.conversationId === 1 && sa.done === false, 'speculativeAuthenticate reply');
    assert.match(Buffer.from(sa.payload.buffer).toString(), /^r=abcdefghijklmnop[^,]+,s=[^,]+,i=15000$/);
    w.send(frameMsg(2, { find: 'x', $db: 't' }));
    assert.strictEqual((await w.next()).doc.code, 13, 'not authenticated before the proof');
    w.end();
  } finally { s.stop(); }
});
test('wire: full SCRAM-SHA-1 and -256 conversations without skipEmptyExchange (closing empty round)', async () => {
  const crypto = require('crypto');
  const s = await startServer(['--auth', 'u:p%C3%A9w']); // password "péw"
  try {
    for (const [mech, h, len] of [['SCRAM-SHA-256', 'sha256', 32], ['SCRAM-SHA-1', 'sha1', 20]]) {
      const w = new Wire(s.port); await w.ready;
      const cnonce = crypto.randomBytes(18).toString('base64');
      const bare = `n=u,r=${cnonce}`;
      w.send(frameMsg(1, { saslStart: 1, mechanism: mech, payload: new Binary(Buffer.from(`n,,${bare}`)), autoAuthorize: 1, $db: 'admin' }));
      const r1 = (await w.next()).doc;
      assert.strictEqual(r1.ok, 1); assert.strictEqual(r1.done, false);
      const first = Buffer.from(r1.payload.buffer).toString();
      const a = Object.fromEntries(first.split(',').map((kv) => [kv[0], kv.slice(2)]));
      assert(a.r.startsWith(cnonce));
      const pw = mech === 'SCRAM-SHA-1' ? crypto.createHash('md5').update('u:mongo:p\u00e9w').digest('hex') : 'p\u00e9w'.normalize('NFKC');
      const salted = crypto.pbkdf2Sync(pw, Buffer.from(a.s, 'base64'), parseInt(a.i, 10), len, h);
      const clientKey = crypto.createHmac(h, salted).update('Client Key').digest();
      const stored = crypto.createHash(h).update(clientKey).digest();
      const without = `c=biws,r=${a.r}`;
      const authMsg = `${bare},${first},${without}`;
      const sig = crypto.createHmac(h, stored).update(authMsg).digest();
      const proof = Buffer.from(clientKey.map((b, i) => b ^ sig[i])).toString('base64');
      w.send(frameMsg(2, { saslContinue: 1, conversationId: r1.conversationId, payload: new Binary(Buffer.from(`${without},p=${proof}`)), $db: 'admin' }));
      const r2 = (await w.next()).doc;
      assert.strictEqual(r2.ok, 1); assert.strictEqual(r2.done, false, `${mech}: a closing round is due`);
      const serverKey = crypto.createHmac(h, salted).update('Server Key').digest();
      const want = crypto.createHmac(h, serverKey).update(authMsg).digest('base64');
      assert.strictEqual(Buffer.from(r2.payload.buffer).toString(), `v=${want}`, `${mech}: server signature`);
      w.send(frameMsg(3, { saslContinue: 1, conversationId: r1.conversationId, payload: new Binary(Buffer.alloc(0)), $db: 'admin' }));
      const r3 = (await w.next()).doc;
      assert.strictEqual(r3.done, true);
      w.send(frameMsg(4, { count: 'x', $db: 't' }));
      assert.strictEqual((await w.next()).doc.ok, 1, `${mech}: authenticated`);
      w.end();
    }
  } finally { s.stop(); }
});
test('server exits when its stdin closes', async () => {
  const s = await startServer([]);
  const exited = new Promise((r) => s.proc.once('exit', (code) => r(code)));
  s.proc.stdin.end();
  assert.strictEqual(await exited, 0);
});

// ------------------------------------------------------------ runner
(async () => {
  let own = null;
  if (process.env.MONGO_PORT) PORT = parseInt(process.env.MONGO_PORT, 10);
  else { own = await startServer(USERS.flatMap((u) => ['--auth', u])); PORT = own.port; }
  mainClient = new MongoClient(uri(ROOT_URI_CREDS, '?authSource=admin'), Object.assign({ monitorCommands: true }, baseOpts));
  mainClient.on('commandStarted', (e) => events.push(e));
  await mainClient.connect();
  let n = 0; let failed = 0;
  for (const t of tests) {
    n++;
    try {
      await t.fn();
      console.log(`ok ${n} - node: ${t.name}`);
    } catch (e) {
      failed++;
      console.log(`not ok ${n} - node: ${t.name}`);
      console.log(('' + (e && e.stack || e)).split('\n').map((l) => `  # ${l}`).join('\n'));
    }
  }
  await mainClient.close();
  if (own) own.stop();
  if (!process.env.TAP_NO_PLAN) console.log(`1..${n}`);
  process.exitCode = failed ? 1 : 0;
})().catch((e) => { console.log(`not ok - node: harness error: ${e && e.stack}`); process.exitCode = 1; });
