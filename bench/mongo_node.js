// bench/mongo_node.js - the peer of bench/mongo.lua: the same four modes
// with the official MongoDB Node.js driver (npm `mongodb`, installed in
// tests/peers/mongo/node_modules by tests/peers/mongo_setup.sh).
//   node bench/mongo_node.js MODES PORT SECONDS [SERVER_PID]
// MODES is a comma-separated list of (or "all"):
//   insert       insertOne of a new document, awaited, repeat
//   insert_many  insertMany of 100 new documents, awaited, repeat (the
//                figure counts documents)
//   find_one     findOne({ _id: k }) over 1,000 documents, awaited, repeat
//   find_one_50  50 async loops at once, each awaiting findOne({ _id: k })
//                in turn (the driver's pool opens connections as they need)
// One MongoClient for the whole run. Every mode starts on a dropped
// collection (bench.node); the find modes first insert the 1,000
// documents they read. After a warm-up of 0.25 s and a timed run of
// SECONDS, each mode prints one line:
//   "<mode> <ops/s> cpu <F> [server_cpu <F>]"
// F: CPU time (user + system, every thread) over the timed run's wall
// time, for this process and (given its pid) the server.
'use strict';
const fs = require('fs');
const path = require('path');
const { MongoClient } = require(path.join(__dirname, '..', 'tests', 'peers', 'mongo', 'node_modules', 'mongodb'));

const WARMUP = 0.25;
const FIND_DOCS = 1000;
const BATCH = 100;
const NAME = 'n'.repeat(24);

const now = () => performance.now() / 1000;

// CPU seconds of another process, from /proc/PID/stat (fields 14 and 15);
// the clock tick is 100 on Linux, as getconf CLK_TCK says
let ticks = 0;
function cpuSeconds(pid) {
  if (!ticks) {
    try {
      ticks = Number(require('child_process').execFileSync('getconf', ['CLK_TCK']).toString()) || 100;
    } catch (e) {
      ticks = 100;
    }
  }
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}

function selfCpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function fill(coll) {
  await coll.drop();
  for (let first = 0; first < FIND_DOCS; first += BATCH) {
    const docs = [];
    for (let k = 0; k < BATCH; k++) docs.push({ _id: first + k, i: first + k, name: NAME, score: 1.5 });
    await coll.insertMany(docs);
  }
}

function finder(callers) {
  return async (coll, deadline) => {
    let count = 0;
    const loop = async (start) => {
      let k = start;
      do {
        const d = await coll.findOne({ _id: k });
        if (!d || d._id !== k) throw new Error(`findOne: wrong document for _id ${k}`);
        k = (k + 1) % FIND_DOCS;
        count++;
      } while (now() < deadline);
    };
    if (callers === 1) {
      await loop(0);
    } else {
      const tasks = [];
      for (let c = 1; c <= callers; c++) tasks.push(loop((c * 20) % FIND_DOCS));
      await Promise.all(tasks);
    }
    return count;
  };
}

const modes = {
  insert: {
    setup: (coll) => coll.drop(),
    run: async (coll, deadline) => {
      let count = 0;
      do {
        await coll.insertOne({ i: count, name: NAME, score: 1.5 });
        count++;
      } while (now() < deadline);
      return count;
    },
  },
  insert_many: {
    setup: (coll) => coll.drop(),
    run: async (coll, deadline) => {
      let count = 0;
      do {
        const docs = [];
        for (let k = 1; k <= BATCH; k++) docs.push({ i: count + k, name: NAME, score: 1.5 });
        const r = await coll.insertMany(docs);
        if (r.insertedCount !== BATCH) throw new Error(`insertMany: ${r.insertedCount}`);
        count += BATCH;
      } while (now() < deadline);
      return count;
    },
  },
  find_one: { setup: fill, run: finder(1) },
  find_one_50: { setup: fill, run: finder(50) },
};
const ORDER = ['insert', 'insert_many', 'find_one', 'find_one_50'];

async function main() {
  const [list, portArg, secondsArg, serverPid] = process.argv.slice(2);
  const port = Number(portArg);
  const seconds = Number(secondsArg);
  const chosen = list === 'all' ? ORDER : (list || '').split(',').filter((m) => m);
  if (!port || !seconds || !chosen.length || chosen.some((m) => !modes[m])) {
    process.stderr.write('usage: node bench/mongo_node.js all|MODE[,MODE...] PORT SECONDS [SERVER_PID]\n'
                         + `  MODE: ${ORDER.join(', ')}\n`);
    process.exit(2);
  }
  const client = new MongoClient(`mongodb://127.0.0.1:${port}/?appName=bench`);
  await client.connect();
  const coll = client.db('bench').collection('node');
  for (const name of chosen) {
    const m = modes[name];
    await m.setup(coll);
    await m.run(coll, now() + WARMUP);
    const cpu0 = selfCpu();
    const server0 = serverPid && cpuSeconds(serverPid);
    const t0 = now();
    const n = await m.run(coll, t0 + seconds);
    const dt = now() - t0;
    let line = `${name} ${(n / dt).toFixed(0)} cpu ${((selfCpu() - cpu0) / dt).toFixed(2)}`;
    if (serverPid) line += ` server_cpu ${((cpuSeconds(serverPid) - server0) / dt).toFixed(2)}`;
    process.stdout.write(line + '\n');
  }
  await coll.drop();
  await client.close();
}

main().catch((e) => {
  process.stderr.write(`mongo_node.js: ${e && e.stack || e}\n`);
  process.exit(1);
});
