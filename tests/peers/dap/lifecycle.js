// tests/peers/dap/lifecycle.js - the debuggee's life as Microsoft's
// DebugClient sees it: thread events as a coroutine starts and ends,
// exited and terminated when the process ends. Run by tests/lua/dap_spec.lua:
//   node lifecycle.js DAP_PORT SCRIPT_PATH LINE MODE
// `evlua --dap DAP_PORT SCRIPT` is already running. SCRIPT forks a task
// named "worker" whose line LINE has a breakpoint; after the stop there
// the worker ends, and then
//   MODE "end":  the main chunk returns with nothing left to run:
//                terminated (no exited), then disconnect ends the process;
//   MODE "exit": the worker calls os.exit(3): exited with exitCode 3, then
//                terminated.
// Prints TAP; exits 0 when every step passed.
'use strict';
const assert = require('assert');
const { DebugClient } = require('@vscode/debugadapter-testsupport');

const dapPort = Number(process.argv[2]);
const script = process.argv[3];
const line = Number(process.argv[4]);
const mode = process.argv[5];

let step = 0;
function ok(what) { step += 1; console.log(`ok ${step} - ${what}`); }

async function main() {
  const dc = new DebugClient('unused', 'unused', 'evlua');
  dc.defaultTimeout = 10000;
  await dc.start(dapPort);
  // every event from the start, in order of arrival; arrived(pred)
  // resolves with the index of the first one matching, now or once it comes
  const seen = [];
  const waiters = [];
  for (const name of ['thread', 'stopped', 'exited', 'terminated']) {
    dc.on(name, (e) => {
      seen.push({ event: name, body: e.body || {} });
      for (const w of waiters.slice()) w();
    });
  }
  const arrived = (pred) => new Promise((resolve) => {
    const check = () => {
      const i = seen.findIndex(pred);
      if (i < 0) return;
      const k = waiters.indexOf(check);
      if (k >= 0) waiters.splice(k, 1);
      resolve(i);
    };
    waiters.push(check);
    check();
  });

  await Promise.all([dc.initializeRequest({ adapterID: 'evlua' }), dc.waitForEvent('initialized')]);
  await dc.launchRequest({});
  await dc.setBreakpointsRequest({ source: { path: script }, breakpoints: [{ line }] });
  const stopping = dc.waitForEvent('stopped');
  await dc.configurationDoneRequest();
  const stopped = await stopping;
  const worker = stopped.body.threadId;
  const threads = (await dc.threadsRequest()).body.threads;
  assert.ok(threads.some((t) => t.id === worker && /worker/.test(t.name)), JSON.stringify(threads));
  const started = seen.findIndex((e) => e.event === 'thread' && e.body.reason === 'started'
    && e.body.threadId === worker);
  const stop = seen.findIndex((e) => e.event === 'stopped');
  assert.ok(started >= 0 && started < stop, JSON.stringify(seen));
  ok('a thread started event for the worker, before its stop');

  await dc.continueRequest({ threadId: worker });
  if (mode === 'exit') {
    const exited = await arrived((e) => e.event === 'exited');
    assert.strictEqual(seen[exited].body.exitCode, 3, JSON.stringify(seen));
    const terminated = await arrived((e) => e.event === 'terminated');
    assert.ok(terminated > exited, JSON.stringify(seen));
    ok('os.exit(3): the exited event with its code, then terminated');
  } else {
    const gone = await arrived((e) => e.event === 'thread' && e.body.reason === 'exited'
      && e.body.threadId === worker);
    ok('a thread exited event once the worker ended');
    const terminated = await arrived((e) => e.event === 'terminated');
    assert.ok(terminated > gone, JSON.stringify(seen));
    assert.ok(!seen.some((e) => e.event === 'exited'), JSON.stringify(seen));
    ok('the main chunk ended with nothing left to run: terminated');
    await dc.disconnectRequest({});
    ok('disconnect after terminated');
  }
  console.log(`1..${step}`);
}

const watchdog = setTimeout(() => {
  console.log(`not ok ${step + 1} - no progress after 50 s`);
  process.exit(1);
}, 50000);

main().then(() => { clearTimeout(watchdog); process.exit(0); }, (err) => {
  console.log(`not ok ${step + 1} - ${err && err.stack || err}`);
  console.log(`1..${step + 1}`);
  process.exit(1);
});
