// tests/peers/dap/session.js - one DAP session against evlua's adapter,
// driven by Microsoft's DebugClient (@vscode/debugadapter-testsupport),
// without mocha. Run by tests/lua/dap_spec.lua:
//   node session.js DAP_PORT TICK_PORT SCRIPT_PATH LINES_JSON
// The debuggee (evlua --dap DAP_PORT SCRIPT) is already running; TICK_PORT
// is its side channel: a line "go" starts the work that hits the
// breakpoints, and every timer tick arrives as a line "tick N". Prints TAP;
// exits 0 when every step passed.
'use strict';
const net = require('net');
const assert = require('assert');
const { DebugClient } = require('@vscode/debugadapter-testsupport');

const [dapPort, tickPort] = [Number(process.argv[2]), Number(process.argv[3])];
const script = process.argv[4];
const lines = JSON.parse(process.argv[5]);

let step = 0;
function ok(what) { step += 1; console.log(`ok ${step} - ${what}`); }

// The side channel: lines from the debuggee, awaited one pattern at a time.
function sideChannel() {
  const sock = net.createConnection(tickPort, '127.0.0.1');
  let buffered = '';
  const seen = [];
  const waiters = [];
  sock.setEncoding('utf8');
  sock.on('data', (chunk) => {
    buffered += chunk;
    let i;
    while ((i = buffered.indexOf('\n')) >= 0) {
      seen.push(buffered.slice(0, i));
      buffered = buffered.slice(i + 1);
    }
    for (const w of waiters.slice()) w();
  });
  return {
    send(line) { sock.write(line + '\n'); },
    // Resolves with the first line from index `from` on matching re.
    waitFor(re, from = 0, ms = 10000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no line matching ${re}: ${seen.join('|')}`)), ms);
        const check = () => {
          for (let k = from; k < seen.length; k++) {
            if (re.test(seen[k])) {
              clearTimeout(timer);
              waiters.splice(waiters.indexOf(check), 1);
              resolve({ line: seen[k], index: k });
              return;
            }
          }
        };
        waiters.push(check);
        check();
      });
    },
    get count() { return seen.length; },
    close() { sock.end(); },
  };
}

function variable(vars, name) {
  const v = vars.find((x) => x.name === name);
  assert.ok(v, `no variable ${name} in ${JSON.stringify(vars.map((x) => x.name))}`);
  return v;
}

async function main() {
  const dc = new DebugClient('unused', 'unused', 'evlua');
  dc.defaultTimeout = 10000;
  await dc.start(dapPort);

  const threadEvents = [];
  dc.on('thread', (e) => threadEvents.push(e.body));
  // The debuggee's main chunk returns early, leaving a listener, a timer
  // and a task: that is no end, and no terminated may come before ours.
  let terminatedEarly = false;
  dc.on('terminated', () => { terminatedEarly = true; });
  const outputs = [];
  const outputWaiters = [];
  dc.on('output', (e) => {
    outputs.push(e.body.output);
    for (const w of outputWaiters.slice()) w();
  });
  // Resolves once an output event matching re has arrived (or had).
  const outputMatching = (re) => new Promise((resolve) => {
    const check = () => {
      if (outputs.some((o) => re.test(o))) {
        const i = outputWaiters.indexOf(check);
        if (i >= 0) outputWaiters.splice(i, 1);
        resolve();
      }
    };
    outputWaiters.push(check);
    check();
  });

  const initialized = dc.waitForEvent('initialized');
  const init = await dc.initializeRequest({ adapterID: 'evlua', linesStartAt1: true,
    columnsStartAt1: true, pathFormat: 'path' });
  assert.ok(init.body.supportsConfigurationDoneRequest);
  assert.ok(init.body.supportsConditionalBreakpoints && init.body.supportsHitConditionalBreakpoints);
  assert.ok(init.body.supportsLogPoints && init.body.supportsSetVariable && init.body.supportsTerminateRequest);
  await initialized;
  ok('initialize: capabilities, then the initialized event');

  await dc.launchRequest({ stopOnEntry: true });
  const set = await dc.setBreakpointsRequest({ source: { path: script }, breakpoints: [
    { line: lines.add },                               // stops
    { line: lines.blank },                             // moves to the next line with code
    { line: lines.loop, condition: 'i == 3' },         // conditional
    { line: lines.log, logMessage: 'logged {i}' },     // log point
    { line: lines.hits, hitCondition: '4' },           // the 4th hit
    { line: lines.ready, logMessage: 'ready' },        // the side channel is open
  ] });
  const bps = set.body.breakpoints;
  assert.strictEqual(bps.length, 6);
  assert.ok(bps.every((b) => b.verified), JSON.stringify(bps));
  assert.strictEqual(bps[0].line, lines.add);
  assert.strictEqual(bps[1].line, lines.moved, JSON.stringify(bps[1]));
  ok('setBreakpoints: verified, a line without code moved');
  const none = await dc.setBreakpointsRequest({ source: { path: script + '.none.lua' }, breakpoints: [] });
  assert.deepStrictEqual(none.body.breakpoints, []);
  ok('setBreakpoints with none: breakpoints is []');
  const entry = dc.waitForEvent('stopped');
  await dc.configurationDoneRequest();
  const atEntry = await entry;
  assert.strictEqual(atEntry.body.reason, 'entry', JSON.stringify(atEntry.body));
  const mainTop = (await dc.stackTraceRequest({ threadId: atEntry.body.threadId })).body.stackFrames[0];
  assert.strictEqual(mainTop.line, 1, JSON.stringify(mainTop));
  await dc.continueRequest({ threadId: atEntry.body.threadId });
  ok('launch with stopOnEntry: stopped before the first line, then continue');

  await outputMatching(/^ready\n/);
  const side = sideChannel();
  const stopping = dc.waitForEvent('stopped');
  side.send('go');
  const stopped = await stopping;
  assert.strictEqual(stopped.body.reason, 'breakpoint');
  const thread = stopped.body.threadId;
  assert.ok(threadEvents.some((e) => e.reason === 'started' && e.threadId === thread),
    JSON.stringify(threadEvents));
  ok(`stopped at a breakpoint in thread ${thread}, announced by a thread event`);

  // The remote property: while this coroutine is parked, the timer ticks.
  const first = await side.waitFor(/^tick \d+$/, side.count);
  await side.waitFor(/^tick \d+$/, first.index + 3);
  ok('other coroutines run while one is stopped (3 more timer ticks)');

  const threads = await dc.threadsRequest();
  assert.ok(threads.body.threads.some((t) => t.id === thread), JSON.stringify(threads.body));
  ok('threads lists the stopped coroutine');

  const st = await dc.stackTraceRequest({ threadId: thread, startFrame: 0, levels: 20 });
  const top = st.body.stackFrames[0];
  assert.strictEqual(top.line, lines.add, JSON.stringify(top));
  assert.ok(top.source.path.endsWith('debuggee.lua'), JSON.stringify(top.source));
  assert.ok(st.body.stackFrames.some((f) => f.name.includes('work')), JSON.stringify(st.body));
  ok('stackTrace: the breakpoint line on top, its caller below');

  const scopes = (await dc.scopesRequest({ frameId: top.id })).body.scopes;
  const names = scopes.map((s) => s.name).join(',');
  assert.ok(/Locals/.test(names) && /Upvalues/.test(names) && /Globals/.test(names), names);
  const locals = scopes.find((s) => s.name === 'Locals');
  let vars = (await dc.variablesRequest({ variablesReference: locals.variablesReference })).body.variables;
  assert.strictEqual(variable(vars, 'a').value, '20');
  const t = variable(vars, 't');
  assert.ok(t.variablesReference > 0, JSON.stringify(t));
  ok('scopes and variables: locals, upvalues, globals');

  const page = (await dc.variablesRequest({ variablesReference: t.variablesReference, start: 0, count: 5 })).body.variables;
  assert.ok(page.length > 0 && page.length <= 5, JSON.stringify(page));
  const items = page.find((v) => v.name === 'items') || variable(
    (await dc.variablesRequest({ variablesReference: t.variablesReference })).body.variables, 'items');
  const rest = (await dc.variablesRequest({ variablesReference: items.variablesReference, start: 10, count: 10 })).body.variables;
  assert.strictEqual(rest.length, 10, JSON.stringify(rest));
  ok('variables: a table expands, paged with start and count');

  const ev = await dc.evaluateRequest({ expression: 'a * 2 + #t.items', frameId: top.id, context: 'repl' });
  assert.strictEqual(ev.body.result, '140');
  await dc.evaluateRequest({ expression: 'error("boom")', frameId: top.id, context: 'repl' }).then(
    () => { throw new Error('an expression that raises answered success'); },
    (err) => assert.ok(/boom/.test(err.message), err.message));
  ok('evaluate: in the frame; an error is an error response');

  const sv = await dc.setVariableRequest({ variablesReference: locals.variablesReference, name: 'b', value: '100' });
  assert.strictEqual(sv.body.value, '100');
  ok('setVariable');

  await Promise.all([dc.nextRequest({ threadId: thread }), dc.waitForEvent('stopped')]);
  let now = (await dc.stackTraceRequest({ threadId: thread })).body.stackFrames[0];
  assert.strictEqual(now.line, lines.add + 1, JSON.stringify(now));
  ok('next');

  await Promise.all([dc.stepOutRequest({ threadId: thread }), dc.waitForEvent('stopped')]);
  now = (await dc.stackTraceRequest({ threadId: thread })).body.stackFrames[0];
  assert.ok(now.name.includes('work') || now.line === lines.call, JSON.stringify(now));
  ok('stepOut');

  await Promise.all([dc.continueRequest({ threadId: thread }), dc.waitForEvent('stopped')]);
  now = (await dc.stackTraceRequest({ threadId: thread })).body.stackFrames[0];
  assert.strictEqual(now.line, lines.moved, JSON.stringify(now));
  ok('continue to the moved breakpoint');

  await Promise.all([dc.stepInRequest({ threadId: thread }), dc.waitForEvent('stopped')]);
  now = (await dc.stackTraceRequest({ threadId: thread })).body.stackFrames[0];
  assert.strictEqual(now.line, lines.inner, JSON.stringify(now));
  ok('stepIn');

  await Promise.all([dc.continueRequest({ threadId: thread }), dc.waitForEvent('stopped')]);
  now = (await dc.stackTraceRequest({ threadId: thread })).body.stackFrames[0];
  assert.strictEqual(now.line, lines.loop);
  const loopScopes = (await dc.scopesRequest({ frameId: now.id })).body.scopes;
  const loopLocals = loopScopes.find((s) => s.name === 'Locals');
  vars = (await dc.variablesRequest({ variablesReference: loopLocals.variablesReference })).body.variables;
  assert.strictEqual(variable(vars, 'i').value, '3');
  ok('a conditional breakpoint stops when its condition holds');

  await Promise.all([dc.continueRequest({ threadId: thread }), dc.waitForEvent('stopped')]);
  now = (await dc.stackTraceRequest({ threadId: thread })).body.stackFrames[0];
  assert.strictEqual(now.line, lines.hits, JSON.stringify(now));
  const hitScopes = (await dc.scopesRequest({ frameId: now.id })).body.scopes;
  vars = (await dc.variablesRequest({ variablesReference: hitScopes.find((s) => s.name === 'Locals').variablesReference })).body.variables;
  assert.strictEqual(variable(vars, 'i').value, '4');
  ok('a hit condition stops at the 4th hit');

  await dc.continueRequest({ threadId: thread });
  const done = await side.waitFor(/^done /);
  assert.strictEqual(done.line, 'done 120', done.line);
  await outputMatching(/logged 5/);
  assert.ok(outputs.some((o) => /logged 1\n/.test(o)), JSON.stringify(outputs));
  ok('the stopped work completes with the value set; log points print');

  const all = (await dc.threadsRequest()).body.threads;
  const pulse = all.find((x) => /pulse/.test(x.name));
  assert.ok(pulse, JSON.stringify(all));
  const paused = dc.waitForEvent('stopped');
  await dc.pauseRequest({ threadId: pulse.id });
  const p = await paused;
  assert.strictEqual(p.body.reason, 'pause', JSON.stringify(p.body));
  assert.strictEqual(p.body.threadId, pulse.id);
  const pulseTop = (await dc.stackTraceRequest({ threadId: pulse.id })).body.stackFrames[0];
  assert.ok(Math.abs(pulseTop.line - lines.pulse) <= 2, JSON.stringify(pulseTop));
  const ticked = side.count;
  await side.waitFor(/^tick/, ticked);
  const continued = dc.waitForEvent('continued');
  await dc.continueRequest({ threadId: pulse.id });
  await continued;
  ok('pause stops a running coroutine (the timer still ticks); continue, and the continued event');

  const unknown = await dc.send('noSuchCommand', {}).then(() => null, (e) => e);
  assert.ok(unknown && /unknown command/.test(unknown.message));
  ok('an unknown command gets an error response');

  assert.ok(!terminatedEarly, 'terminated while the debuggee still serves');
  const terminated = dc.waitForEvent('terminated');
  await dc.terminateRequest({});
  await terminated;
  ok('terminate: the terminated event');
  side.close();
  await dc.disconnectRequest({});
  ok('disconnect after terminate');
  // No dc.stop(): it would send a second disconnect to a process that has
  // ended (the spec checks that it did).
  console.log(`1..${step}`);
}

// A step that never ends fails the run instead of ending it silently.
const watchdog = setTimeout(() => {
  console.log(`not ok ${step + 1} - no progress after 50 s`);
  process.exit(1);
}, 50000);

main().then(() => process.exit(0), (err) => {
  console.log(`not ok ${step + 1} - ${err && err.stack || err}`);
  console.log(`1..${step + 1}`);
  process.exit(1);
});
