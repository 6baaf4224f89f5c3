#!/usr/bin/env node
'use strict';
/*
 * An independent Moat host client, written from proto/ and docs/protocol.md
 * only (no generated code, no libmoat). It speaks the whole protocol to a
 * running moatd and checks what it gets; any mismatch exits non-zero.
 *
 *   node client.js --target 127.0.0.1:PORT --enclave-dir DIR [--target-key HEX]
 *
 * DIR holds test_enclave.so (tests/enclaves/test_enclave.c); moatd must run
 * with --enclave-dir DIR and --allow-upload.
 */
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// ---------------------------------------------------------------- arguments
const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i];
  if (!k.startsWith('--') || i + 1 >= process.argv.length) usage();
  args[k.slice(2)] = process.argv[i + 1];
}
function usage() {
  console.error('usage: client.js --target ADDR --enclave-dir DIR [--target-key HEX] [--proto-dir DIR]\n' +
    '                 [--max-nesting N] [--max-message-bytes N]   (what moatd runs with; default 4 and 2 MiB)');
  process.exit(2);
}
if (!args.target || !args['enclave-dir']) usage();
const PROTO_DIR = args['proto-dir'] || path.resolve(__dirname, '../../../proto');
const IMAGE_NAME = 'test_enclave';
const IMAGE_FILE = path.join(args['enclave-dir'], IMAGE_NAME + '.so');

// ---------------------------------------------------------------- constants (docs/protocol.md, include/moat)
const SEL = { DESTROY: 0, LOG: 1, TIME: 2, SPAWN: 3, DONATE: 4, SPAWN_STATUS: 5, USER: 1024 };
// tests/common/test_enclave.h
const T = {
  ECHO: 1025, ADD: 1026, GLOBAL_SET: 1027, GLOBAL_GET: 1028, FAIL: 1029, EXIT: 1030,
  CONFIG: 1031, THREADS: 1032, INIT_SPAWN: 1033, ON_FINI: 1034, TIME: 1035,
};
const E = {
  OK: 0, EINVAL: -1, ENOENT: -3, EMEASUREMENT: -7, ENOSELECTOR: -10, EHANDLER: -11, ENOHANDLER: -12,
  EPERM: -16, ELIMIT: -17, EPROTO: -19, ETARGET: -24,
};
const ORIGIN = { NONE: 0, API: 1, TRANSPORT: 2, TARGET: 3, ENCLAVE: 4 };
const DEADLINE_MS = 10000;
// What run.sh starts moatd with (--max-nesting, --max-message-bytes).
const MAX_NESTING = Number(args['max-nesting'] || 4);
const MAX_MSG = Number(args['max-message-bytes'] || 2 * 1024 * 1024);

// ---------------------------------------------------------------- checks and output
let checks = 0;
function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}
function check(cond, msg) {
  if (!cond) fail(msg);
  checks++;
}
function eq(got, want, what) {
  const g = Buffer.isBuffer(got) ? got.toString('hex') : String(got);
  const w = Buffer.isBuffer(want) ? want.toString('hex') : String(want);
  if (g !== w) fail(`${what}: got ${g}, want ${w}`);
  checks++;
}
function ok(msg) {
  console.log(`ok   ${msg}`);
}
const deadline = (ms = DEADLINE_MS) => Date.now() + ms;

// ---------------------------------------------------------------- items
const u64 = (v) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)));
  return b;
};
const itemU64 = (b, what) => {
  if (!Buffer.isBuffer(b) || b.length !== 8) fail(`${what}: not an 8-byte item (${b && b.length})`);
  return b.readBigUInt64LE(0);
};
const itemI64 = (b, what) => BigInt.asIntN(64, itemU64(b, what));

// ---------------------------------------------------------------- protos
const loadOpts = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };
const pkgDef = protoLoader.loadSync(['moat/v1/target.proto', 'grpc/health/v1/health.proto'], loadOpts);
const proto = grpc.loadPackageDefinition(pkgDef);
// The LoadReport is a message no method carries: decode it with the same (proto-loader's) protobuf runtime.
const protobuf = require('protobufjs');
const reportRoot = new protobuf.Root();
reportRoot.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_DIR, target));
reportRoot.loadSync('moat/v1/target.proto', { keepCase: true });
const LoadReport = reportRoot.lookupType('moat.v1.LoadReport');

const chanOpts = {
  'grpc.keepalive_time_ms': 1000, // docs/protocol.md "Liveness": moatd accepts pings every 50 ms or more
  'grpc.keepalive_timeout_ms': 2000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.max_receive_message_length': -1,
};
const creds = grpc.credentials.createInsecure();
const target = new proto.moat.v1.Target(args.target, creds, chanOpts);
const health = new proto.grpc.health.v1.Health(args.target, creds, chanOpts);

const moatError = (err) => {
  const v = err && err.metadata ? err.metadata.get('moat-error') : [];
  return v.length ? Number(v[0]) : undefined;
};
const statusName = (c) => Object.keys(grpc.status).find((k) => grpc.status[k] === c) || String(c);

function unary(client, method, req, md) {
  return new Promise((resolve) => {
    client[method](req, md || new grpc.Metadata(), { deadline: deadline() }, (err, resp) => resolve({ err, resp }));
  });
}
// A unary call that must fail with status code and (when given) moat-error.
async function expectRefused(what, client, method, req, md, code, moatCode, msgPart) {
  const { err } = await unary(client, method, req, md);
  if (!err) fail(`${what}: succeeded, want ${statusName(code)}`);
  eq(statusName(err.code), statusName(code), `${what}: status`);
  if (moatCode !== undefined) eq(moatError(err), moatCode, `${what}: moat-error trailer`);
  if (msgPart) check(err.details.includes(msgPart), `${what}: message "${err.details}" lacks "${msgPart}"`);
  ok(`${what}: ${statusName(err.code)}, moat-error ${moatError(err)}, "${err.details}"`);
  return err;
}

function sessionMd(s, extra) {
  const md = new grpc.Metadata();
  md.set('moat-session', s.id);
  md.set('moat-token', s.tokenHex);
  for (const [k, v] of Object.entries(extra || {})) md.set(k, v);
  return md;
}

// ---------------------------------------------------------------- an Attach stream (one "host thread")
class Attach {
  constructor(md, name) {
    this.name = name;
    this.queue = [];
    this.waiters = [];
    this.status = null;
    this.seq = 0; // our own Calls' numbers
    this.peerSeq = 0; // the target numbers its Calls 1, 2, 3... over the stream's life
    this.depth = 0;
    this.call = target.Attach(md, { deadline: deadline(120000) });
    this.call.on('data', (f) => this._push({ frame: f }));
    this.call.on('error', () => {}); // the status event reports it
    this.call.on('status', (st) => {
      this.status = st;
      this._push({ end: st });
    });
  }
  _push(ev) {
    const w = this.waiters.shift();
    if (w) w(ev);
    else this.queue.push(ev);
  }
  // The target's next frame, or { end: status } once the stream ended.
  next(ms = DEADLINE_MS) {
    if (this.queue.length) {
      const ev = this.queue[0];
      if (!ev.end) this.queue.shift();
      return Promise.resolve(ev);
    }
    if (this.status) return Promise.resolve({ end: this.status });
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        fail(`${this.name}: nothing from the target in ${ms} ms`);
      }, ms);
      const w = (ev) => {
        clearTimeout(t);
        if (ev.end) this.queue.push(ev); // keep the end for later readers
        resolve(ev);
      };
      this.waiters.push(w);
    });
  }
  send(frame) {
    this.call.write(frame);
  }
  // An entry call: send it, answer the enclave's exit calls (which may nest calls of ours), return its Return.
  async enter(selector, items = [], handlers = defaultHandlers) {
    const seq = ++this.seq;
    this.depth++;
    this.send({ call: { seq, selector, items } });
    try {
      for (;;) {
        const ev = await this.next();
        if (ev.end) return { end: ev.end };
        const f = ev.frame;
        if (f.kind === 'ret') {
          if (Number(f.ret.seq) !== seq) fail(`${this.name}: Return seq ${f.ret.seq}, want ${seq}`);
          return { ret: normRet(f.ret) };
        }
        if (f.kind !== 'call') fail(`${this.name}: a frame with neither call nor ret`);
        await this.answer(f.call, handlers);
      }
    } finally {
      this.depth--;
    }
  }
  // Answer one exit call of the enclave with one Return of the same seq.
  async answer(c, handlers) {
    const sel = Number(c.selector);
    eq(Number(c.seq), ++this.peerSeq, `${this.name}: seq of the target's exit call ${sel}`);
    const h = handlers[sel];
    let r;
    if (!h) r = { code: E.ENOHANDLER, message: `no exit handler for selector ${sel}` };
    else r = (await h(c.items, this, sel)) || {};
    const ret = { seq: c.seq, code: r.code || 0, origin: r.code ? ORIGIN.API : 0, message: r.message || '', items: r.items || [] };
    this.send({ ret });
    exitLog.push({ stream: this.name, selector: sel, items: c.items, code: ret.code });
  }
  // Expect the stream's end with the given status (and moat-error).
  async expectEnd(what, code, moatCode, msgPart) {
    const ev = await this.next();
    if (!ev.end) fail(`${what}: got a frame, want the stream's end with ${statusName(code)}`);
    const st = ev.end;
    eq(statusName(st.code), statusName(code), `${what}: status`);
    if (moatCode !== undefined) eq(moatError(st), moatCode, `${what}: moat-error trailer`);
    if (msgPart) check(st.details.includes(msgPart), `${what}: message "${st.details}" lacks "${msgPart}"`);
    ok(`${what}: ${statusName(st.code)}, moat-error ${moatError(st)}, "${st.details}"`);
    return st;
  }
  close() {
    this.call.end();
  }
}

function normRet(r) {
  return { seq: Number(r.seq), code: r.code, origin: r.origin, message: r.message, enclave_code: BigInt(r.enclave_code), items: r.items };
}
async function entryOk(a, selector, items, what, handlers) {
  const r = await a.enter(selector, items, handlers);
  if (r.end) fail(`${what}: stream ended: ${statusName(r.end.code)} "${r.end.details}" moat-error ${moatError(r.end)}`);
  if (r.ret.code !== 0) fail(`${what}: Return code ${r.ret.code} origin ${r.ret.origin} "${r.ret.message}"`);
  eq(r.ret.origin, 0, `${what}: origin of a success`);
  return r.ret.items;
}

// ---------------------------------------------------------------- exit handlers the host offers
const exitLog = [];
const logLines = [];
const timesGiven = [];
const spawned = new Map(); // task id -> { status: 0 | negative code, done: Promise }
let sessionForSpawn = null;

const defaultHandlers = {
  [SEL.LOG]: (items) => {
    logLines.push(items.length ? items[0].toString() : '');
    return {};
  },
  [SEL.TIME]: () => {
    const ns = BigInt(Date.now()) * 1000000n;
    timesGiven.push(ns);
    return { items: [u64(ns)] };
  },
  // SPAWN: start a "thread" that opens its own Attach stream and enters DONATE with the task id.
  [SEL.SPAWN]: (items) => {
    const task = itemU64(items[0], 'SPAWN task id');
    const rec = { status: 0n, ret: null };
    spawned.set(task, rec);
    const s = sessionForSpawn;
    rec.done = (async () => {
      const a = new Attach(sessionMd(s), `donate-${task}`);
      const r = await a.enter(SEL.DONATE, [u64(task)]);
      if (r.end) rec.status = BigInt(moatError(r.end) ?? E.ETARGET);
      else rec.ret = r.ret;
      a.close();
    })();
    return {};
  },
  [SEL.SPAWN_STATUS]: (items) => {
    const rec = spawned.get(itemU64(items[0], 'SPAWN_STATUS task id'));
    return { items: [u64(rec ? rec.status : 0n)] };
  },
};

// ---------------------------------------------------------------- steps
async function healthChecks() {
  for (const service of ['', 'moat.v1.Target']) {
    const { err, resp } = await unary(health, 'Check', { service });
    if (err) fail(`Health/Check "${service}": ${statusName(err.code)} ${err.details}`);
    eq(resp.status, 'SERVING', `Health/Check "${service}"`);
  }
  ok('Health/Check "" and "moat.v1.Target": SERVING');
  await expectRefused('Health/Check "nosuch"', health, 'Check', { service: 'nosuch' }, null, grpc.status.NOT_FOUND);
  // Watch: the first message is the status; the stream stays open.
  await new Promise((resolve) => {
    const w = health.Watch({ service: 'moat.v1.Target' }, { deadline: deadline() });
    w.on('data', (m) => {
      eq(m.status, 'SERVING', 'Health/Watch first status');
      w.cancel();
    });
    w.on('error', (e) => {
      if (e.code !== grpc.status.CANCELLED) fail(`Health/Watch: ${statusName(e.code)} ${e.details}`);
    });
    w.on('status', resolve);
  });
  ok('Health/Watch "moat.v1.Target": SERVING first');
}

function verifyKey(raw) {
  return crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
}

// Load and check the answer and its signed report per docs/protocol.md.
async function load(image, opts = {}) {
  const nonce = crypto.randomBytes(32);
  const req = { protocol_major: 1, protocol_minor: 0, nonce, config: opts.config || Buffer.alloc(0), ...image };
  if (opts.expectedMeasurement) req.expected_measurement = opts.expectedMeasurement;
  if (opts.expectedTargetKey) req.expected_target_key = opts.expectedTargetKey;
  const { err, resp } = await unary(target, 'Load', req);
  if (err) fail(`Load ${JSON.stringify(image.name || image.sha256.toString('hex'))}: ${statusName(err.code)} moat-error ${moatError(err)} "${err.details}"`);
  eq(resp.protocol_major, 1, 'Load: protocol_major');
  check(/^[0-9a-f]{32}$/.test(resp.session_id), `Load: session_id "${resp.session_id}" is not 32 lower-case hex digits`);
  eq(resp.session_token.length, 32, 'Load: session_token length');
  eq(resp.target_key.length, 32, 'Load: target_key length');
  eq(resp.measurement.length, 32, 'Load: measurement length');
  check(Number(resp.max_message_bytes) > 0, 'Load: max_message_bytes > 0');
  check(resp.max_threads > 0, 'Load: max_threads > 0');
  // The signature: Ed25519 by target_key over the report bytes as sent.
  const key = verifyKey(resp.target_key);
  check(crypto.verify(null, resp.report, key, resp.report_signature), 'Load: report signature does not verify with target_key');
  const bad = Buffer.from(resp.report);
  bad[bad.length - 1] ^= 1;
  check(!crypto.verify(null, bad, key, resp.report_signature), 'Load: a changed report still verifies (the check is void)');
  const rep = LoadReport.toObject(LoadReport.decode(resp.report), { longs: String, defaults: true });
  eq(rep.format, 'moat-simulated-attestation-v1', 'report.format');
  eq(rep.hardware_rooted, false, 'report.hardware_rooted');
  eq(Buffer.from(rep.nonce), nonce, 'report.nonce');
  eq(Buffer.from(rep.measurement), resp.measurement, 'report.measurement');
  eq(rep.session_id, resp.session_id, 'report.session_id');
  eq(Buffer.from(rep.target_key), resp.target_key, 'report.target_key');
  eq(rep.isolation, resp.isolation, 'report.isolation');
  const age = Date.now() * 1e6 - Number(rep.time_unix_ns);
  check(Math.abs(age) < 60e9, `report.time_unix_ns ${rep.time_unix_ns} is not about now`);
  if (opts.targetKeyHex) eq(resp.target_key.toString('hex'), opts.targetKeyHex, 'Load: target_key (moatd printed it)');
  return {
    id: resp.session_id,
    token: resp.session_token,
    tokenHex: resp.session_token.toString('hex'),
    measurement: resp.measurement,
    targetKey: resp.target_key,
    resp,
    report: rep,
  };
}

function openLease(s) {
  const call = target.Attach(sessionMd(s, { 'moat-stream': 'lease' }), { deadline: deadline(300000) });
  const lease = { call, status: null };
  call.on('data', () => fail('lease stream: the target sent a frame'));
  call.on('error', () => {});
  call.on('status', (st) => (lease.status = st));
  return lease;
}

const sha256 = (b) => crypto.createHash('sha256').update(b).digest();

function upload(image, sha, total, chunk = 32 * 1024) {
  return new Promise((resolve) => {
    const call = target.Upload({ deadline: deadline(30000) }, (err, resp) => resolve({ err, resp }));
    for (let off = 0; chunk && (off === 0 || off < image.length); off += chunk) {
      const m = { data: image.subarray(off, off + chunk) };
      if (off === 0) Object.assign(m, { sha256: sha, total_size: total });
      call.write(m);
    }
    call.end();
  });
}

async function main() {
  console.log(`node ${process.version}, @grpc/grpc-js ${require('@grpc/grpc-js/package.json').version}, ` +
    `@grpc/proto-loader ${require('@grpc/proto-loader/package.json').version}, target ${args.target}`);
  const imageBytes = fs.readFileSync(IMAGE_FILE);
  const imageSha = sha256(imageBytes);
  const targetKeyHex = args['target-key'];

  // 1. Health.
  await healthChecks();

  // 2. Load by name, pinned to the key moatd printed and to the image's SHA-256; check the signed report.
  const config = Buffer.from('interop-config\x00\xff');
  const s = await load({ name: IMAGE_NAME }, {
    config,
    expectedMeasurement: imageSha,
    expectedTargetKey: targetKeyHex ? Buffer.from(targetKeyHex, 'hex') : undefined,
    targetKeyHex,
  });
  eq(s.measurement, imageSha, 'measurement is the SHA-256 of the image file');
  ok(`Load "${IMAGE_NAME}": session ${s.id}, measurement ${s.measurement.toString('hex').slice(0, 16)}..., ` +
    `isolation 0x${s.resp.isolation.toString(16)}, max_message_bytes ${s.resp.max_message_bytes}, max_threads ${s.resp.max_threads}`);
  eq(s.resp.max_message_bytes, MAX_MSG, 'Load: max_message_bytes (moatd --max-message-bytes)');
  ok(`report: ${s.report.format}, backend ${s.report.backend}, hardware_rooted ${s.report.hardware_rooted}, ` +
    `Ed25519 signature by ${s.targetKey.toString('hex').slice(0, 16)}... verified, nonce and session match`);
  sessionForSpawn = s;

  // 3. The lease, and one Attach stream for this "thread".
  const lease = openLease(s);
  const a = new Attach(sessionMd(s), 'main');

  // 4. Entry calls.
  const echoIn = [Buffer.from('hello moat'), Buffer.alloc(0), crypto.randomBytes(1000)];
  const echoOut = await entryOk(a, T.ECHO, echoIn, 'T_ECHO');
  eq(echoOut.length, 3, 'T_ECHO: item count');
  echoIn.forEach((b, i) => eq(echoOut[i], b, `T_ECHO item ${i}`));
  ok('T_ECHO: 3 items (text, empty, 1000 random bytes) came back the same');
  const big = crypto.randomBytes(1 << 20);
  eq((await entryOk(a, T.ECHO, [big], 'T_ECHO 1 MiB'))[0], big, 'T_ECHO 1 MiB item');
  ok('T_ECHO: a 1 MiB item came back the same');
  eq((await entryOk(a, T.CONFIG, [], 'T_CONFIG'))[0], config, 'T_CONFIG: config bytes init received');
  ok('T_CONFIG: init got the LoadRequest.config bytes');
  let r = await entryOk(a, T.ADD, [u64(7), u64(5)], 'T_ADD');
  r = await entryOk(a, T.ADD, [u64(7), u64(6)], 'T_ADD');
  eq(itemU64(r[0], 'T_ADD id'), 7n, 'T_ADD id');
  eq(itemU64(r[1], 'T_ADD sum'), 11n, 'T_ADD: state kept in the enclave between calls');
  ok('T_ADD twice: enclave state 11');

  // 5. Exit calls the runtime makes and the host answers: TIME and LOG.
  const before = timesGiven.length;
  r = await entryOk(a, T.TIME, [], 'T_TIME');
  eq(timesGiven.length, before + 1, 'T_TIME: exit calls TIME answered');
  eq(itemU64(r[0], 'T_TIME result'), timesGiven[before], 'T_TIME: the enclave got the host time we sent');
  ok(`T_TIME: enclave made exit call TIME (2), got our ${timesGiven[before]} ns`);
  const line = `interop log line ${crypto.randomBytes(4).toString('hex')}`;
  r = await entryOk(a, T.EXIT, [u64(SEL.LOG), Buffer.from(line)], 'T_EXIT(LOG)');
  eq(itemI64(r[0], 'T_EXIT result'), 0n, 'T_EXIT(LOG): exit call result');
  eq(logLines[logLines.length - 1], line, 'LOG exit call: the line');
  ok(`T_EXIT(LOG): host got log line "${line}"`);
  r = await entryOk(a, T.EXIT, [u64(7777), Buffer.from('x')], 'T_EXIT(7777)');
  eq(itemI64(r[0], 'T_EXIT result'), BigInt(E.ENOHANDLER), 'T_EXIT(unknown selector): what the enclave saw');
  eq(r.length, 1, 'T_EXIT(unknown selector): no reply items');
  ok('T_EXIT(7777): host answered -12 (ENOHANDLER), the enclave saw -12');

  // 6. Nested calls: a host exit handler that calls back into the enclave, three levels deep.
  const NEST = 5000;
  const nestHandlers = {
    ...defaultHandlers,
    [NEST]: async (items, stream) => {
      const level = Number(itemU64(items[0], 'nest level'));
      if (level < 3) {
        // Call into the enclave again: T_EXIT makes exit call NEST with level+1.
        const inner = await entryOk(stream, T.EXIT, [u64(NEST), u64(level + 1)], `nested T_EXIT level ${level + 1}`, nestHandlers);
        eq(itemI64(inner[0], 'inner result'), 0n, 'nested exit result');
        const echoed = await entryOk(stream, T.ECHO, inner.slice(1), 'nested T_ECHO', nestHandlers);
        return { items: [...echoed, Buffer.from(`level ${level} depth ${stream.depth}`)] };
      }
      return { items: [Buffer.from(`level ${level} depth ${stream.depth}`)] };
    },
  };
  r = await entryOk(a, T.EXIT, [u64(NEST), u64(1)], 'T_EXIT(nest)', nestHandlers);
  eq(itemI64(r[0], 'T_EXIT result'), 0n, 'nested: outer exit result');
  const got = r.slice(1).map((b) => b.toString());
  eq(JSON.stringify(got), JSON.stringify(['level 3 depth 3', 'level 2 depth 2', 'level 1 depth 1']), 'nested: items');
  ok(`nested: entry -> exit 5000 -> entry -> exit -> entry -> exit, answered LIFO: ${JSON.stringify(got)}`);

  // Deeper than moatd's --max-nesting: the innermost entry call is answered -17 by the target, not run.
  let refused = null;
  let deepest = 0;
  const DEEP = 5002;
  const deepHandlers = {
    ...defaultHandlers,
    [DEEP]: async (_items, stream) => {
      deepest = Math.max(deepest, stream.depth);
      const inner = await stream.enter(T.EXIT, [u64(DEEP)], deepHandlers);
      if (inner.end) fail('deep nesting: stream ended');
      if (inner.ret.code !== 0) refused = { ...inner.ret, depth: stream.depth + 1 };
      return {};
    },
  };
  r = await entryOk(a, T.EXIT, [u64(DEEP)], 'T_EXIT(deep)', deepHandlers);
  check(refused, 'deep nesting: no call was refused');
  eq(refused.code, E.ELIMIT, 'too deep: code');
  eq(refused.origin, ORIGIN.TARGET, 'too deep: origin');
  eq(refused.depth, MAX_NESTING + 1, 'too deep: the refused entry call\'s depth');
  check(refused.message.includes('--max-nesting'), `too deep: message "${refused.message}" does not name --max-nesting`);
  ok(`nesting: ${deepest} entry calls nested ran; call ${refused.depth} answered ${refused.code}, origin ${refused.origin} (target): "${refused.message}"`);

  // A host's failed Return to an exit call: the enclave sees the code only (items dropped, origin not passed on).
  const HFAIL = 5001;
  r = await entryOk(a, T.EXIT, [u64(HFAIL)], 'T_EXIT(host fails)', {
    ...defaultHandlers,
    [HFAIL]: () => ({ code: E.ENOENT, message: 'host says no', items: [Buffer.from('dropped')] }),
  });
  eq(itemI64(r[0], 'T_EXIT result'), BigInt(E.ENOENT), 'host failure: what the enclave saw');
  eq(r.length, 1, 'host failure: reply items reach the enclave');
  ok('exit call answered code -3 with an item: the enclave saw -3 and no item');

  // A frame larger than max_message_bytes: gRPC refuses it (RESOURCE_EXHAUSTED, no moat-error), ending that stream.
  const huge = new Attach(sessionMd(s), 'oversized');
  huge.send({ call: { seq: 1, selector: T.ECHO, items: [Buffer.alloc(MAX_MSG)] } });
  await huge.expectEnd(`a Call frame of ${MAX_MSG}+ bytes`, grpc.status.RESOURCE_EXHAUSTED, undefined);
  eq(itemU64((await entryOk(a, T.ADD, [u64(7), u64(0)], 'T_ADD after the oversized frame'))[1], 'sum'), 11n, 'session after oversized frame');

  // 7. Errors carried in a Return.
  let e = await a.enter(9999, []);
  if (e.end) fail('unknown selector: stream ended');
  eq(e.ret.code, E.ENOSELECTOR, 'unknown entry selector: code');
  eq(e.ret.origin, ORIGIN.ENCLAVE, 'unknown entry selector: origin');
  ok(`unknown selector 9999: Return code ${e.ret.code} (ENOSELECTOR), origin ${e.ret.origin} (enclave), "${e.ret.message}"`);
  e = await a.enter(T.FAIL, [u64(42), Buffer.from('x')]);
  eq(e.ret.code, E.EHANDLER, 'T_FAIL(42): code');
  eq(e.ret.origin, ORIGIN.ENCLAVE, 'T_FAIL(42): origin');
  eq(e.ret.enclave_code, 42n, 'T_FAIL(42): enclave_code');
  eq(e.ret.items.length, 0, 'T_FAIL(42): no items (the partial reply is dropped)');
  ok(`T_FAIL(42): Return code ${e.ret.code} (EHANDLER), origin ${e.ret.origin}, enclave_code ${e.ret.enclave_code}, no items`);
  e = await a.enter(T.FAIL, [u64(-1)]);
  ok(`T_FAIL(-1): Return code ${e.ret.code}, origin ${e.ret.origin}, enclave_code ${e.ret.enclave_code}, "${e.ret.message}"`);
  eq(e.ret.code, E.EHANDLER, 'T_FAIL(-1) (a handler returning a Moat code): code');
  eq(e.ret.enclave_code, -1n, 'T_FAIL(-1): enclave_code');
  eq(e.ret.origin, ORIGIN.ENCLAVE, 'T_FAIL(-1): origin');

  e = await a.enter(SEL.TIME, []);
  eq(e.ret.code, E.EINVAL, 'reserved selector 2 as an entry call: code');
  eq(e.ret.origin, ORIGIN.API, 'reserved selector 2 as an entry call: origin');
  ok(`reserved selector 2 as an entry call: Return code ${e.ret.code}, origin ${e.ret.origin} (api), "${e.ret.message}"`);
  e = await a.enter(SEL.DONATE, [u64(123456)]);
  eq(e.ret.code, E.EHANDLER, 'DONATE of an unknown task: code');
  ok(`DONATE of a task never queued: Return code ${e.ret.code}, enclave_code ${e.ret.enclave_code}`);

  // A host that cannot start a thread answers SPAWN -17: moat_thread_start fails with it (T_THREADS returns it).
  e = await a.enter(T.THREADS, [u64(2)], { ...defaultHandlers, [SEL.SPAWN]: () => ({ code: E.ELIMIT }) });
  eq(e.ret.code, E.EHANDLER, 'T_THREADS with SPAWN refused: code');
  eq(e.ret.enclave_code, BigInt(E.ELIMIT), 'T_THREADS with SPAWN refused: what moat_thread_start returned');
  ok(`SPAWN answered -17: the enclave's thread start failed with -17 (Return ${e.ret.code}, enclave_code ${e.ret.enclave_code})`);

  // 8. Threads: the enclave starts 3, the host gets SPAWN exit calls and donates a stream each.
  r = await entryOk(a, T.THREADS, [u64(3)], 'T_THREADS(3)');
  eq(itemU64(r[0], 'started'), 3n, 'T_THREADS: started');
  eq(itemU64(r[1], 'finished'), 3n, 'T_THREADS: finished');
  await Promise.all([...spawned.values()].map((x) => x.done));
  for (const [task, rec] of spawned) {
    check(rec.ret && rec.ret.code === 0, `DONATE task ${task}: ${rec.ret ? rec.ret.code : 'stream ended ' + rec.status}`);
  }
  ok(`T_THREADS(3): 3 SPAWN exit calls, 3 DONATE streams returned 0, enclave saw 3 started / 3 finished ` +
    `(SPAWN_STATUS asked ${exitLog.filter((x) => x.selector === SEL.SPAWN_STATUS).length} times)`);

  // 9. Refusals of the target.
  const wrong = { ...s, tokenHex: (s.tokenHex[0] === '0' ? '1' : '0') + s.tokenHex.slice(1) };
  await new Attach(sessionMd(wrong), 'wrong-token').expectEnd('Attach with a wrong token', grpc.status.PERMISSION_DENIED, E.EPERM);
  const noTok = new grpc.Metadata();
  noTok.set('moat-session', s.id);
  await new Attach(noTok, 'no-token').expectEnd('Attach without a token', grpc.status.PERMISSION_DENIED, E.EPERM);
  await expectRefused('Destroy with a wrong token', target, 'Destroy', {}, sessionMd(wrong), grpc.status.PERMISSION_DENIED, E.EPERM);
  const upper = { ...s, tokenHex: s.tokenHex.toUpperCase() };
  const au = new Attach(sessionMd(upper), 'upper-token');
  eq(itemU64((await entryOk(au, T.ADD, [u64(7), u64(0)], 'T_ADD, upper-case token'))[1], 'sum'), 11n, 'session still alive after wrong tokens');
  au.close();
  ok('the session still answers after the wrong tokens (and takes its token in upper-case hex too)');
  const ghost = { id: '0'.repeat(32), tokenHex: '0'.repeat(64) };
  await new Attach(sessionMd(ghost), 'unknown-session').expectEnd('Attach to an unknown session', grpc.status.NOT_FOUND, E.ETARGET);
  await expectRefused('Load with protocol_major 2', target, 'Load', { protocol_major: 2, name: IMAGE_NAME, nonce: crypto.randomBytes(32) }, null,
    grpc.status.FAILED_PRECONDITION, E.EPROTO, 'protocol');
  await expectRefused('Load of a missing name', target, 'Load', { protocol_major: 1, name: 'no_such_enclave', nonce: crypto.randomBytes(32) }, null,
    grpc.status.NOT_FOUND, E.ENOENT, 'no_such_enclave');
  await expectRefused('Load with a wrong expected_measurement', target, 'Load',
    { protocol_major: 1, name: IMAGE_NAME, nonce: crypto.randomBytes(32), expected_measurement: Buffer.alloc(32, 1) }, null,
    grpc.status.FAILED_PRECONDITION, E.EMEASUREMENT);
  await expectRefused('Load with a wrong expected_target_key', target, 'Load',
    { protocol_major: 1, name: IMAGE_NAME, nonce: crypto.randomBytes(32), expected_target_key: Buffer.alloc(32, 1) }, null,
    grpc.status.PERMISSION_DENIED, -21);
  // The name may carry the .so suffix too.
  const s3 = await load({ name: IMAGE_NAME + '.so' }, { targetKeyHex });
  eq(s3.measurement, imageSha, 'Load "test_enclave.so": measurement');
  const { err: d3 } = await unary(target, 'Destroy', {}, sessionMd(s3));
  if (d3) fail(`Destroy: ${statusName(d3.code)} "${d3.details}"`);
  ok(`Load "${IMAGE_NAME}.so": the same image; its session destroyed at once (no lease, no Attach)`);
  // A protocol error: a Return when no exit call waits.
  const pe = new Attach(sessionMd(s), 'protocol-error');
  pe.send({ ret: { seq: 1, code: 0 } });
  await pe.expectEnd('a Return that answers nothing', grpc.status.FAILED_PRECONDITION, E.EPROTO, 'protocol error');

  // 10. Destroy from the stream (selector 0): the finalizer's exit call comes back on this stream first.
  const FINI = 6000;
  await entryOk(a, T.ON_FINI, [u64(FINI)], 'T_ON_FINI');
  let finiSeen = null;
  const destroyHandlers = { ...defaultHandlers, [FINI]: (items) => ((finiSeen = itemI64(items[0], 'fini item')), {}) };
  e = await a.enter(SEL.DESTROY, [], destroyHandlers);
  if (e.end) fail(`destroy call: stream ended ${statusName(e.end.code)} "${e.end.details}"`);
  eq(e.ret.code, 0, 'destroy call: Return code');
  check(finiSeen !== null, 'destroy: the finalizer\'s exit call did not reach this stream');
  ok(`destroy (Call selector 0): finalizer's exit call ${FINI} answered (thread start in finalizer gave ${finiSeen}), Return 0`);
  await a.expectEnd('the destroying Attach stream after its Return', grpc.status.OK);
  const gone = new Attach(sessionMd(s), 'after-destroy');
  await gone.expectEnd('Attach after destroy', grpc.status.NOT_FOUND, E.ETARGET);
  await waitFor(() => lease.status, 'the lease ended by destroy');
  eq(statusName(lease.status.code), 'CANCELLED', 'lease after destroy: status');
  eq(moatError(lease.status), undefined, 'lease after destroy: moat-error');
  ok(`lease stream ended by the destroy: ${statusName(lease.status.code)}, no moat-error, "${lease.status.details}"`);

  // 11. Upload an image and load it by SHA-256; then the unary Destroy.
  const up = await upload(imageBytes, imageSha, imageBytes.length);
  if (up.err) fail(`Upload: ${statusName(up.err.code)} moat-error ${moatError(up.err)} "${up.err.details}"`);
  eq(up.resp.sha256, imageSha, 'Upload: sha256 repeated');
  eq(up.resp.size, imageBytes.length, 'Upload: size repeated');
  ok(`Upload ${imageBytes.length} bytes in ${Math.ceil(imageBytes.length / 32768)} chunks: sha256 ${imageSha.toString('hex').slice(0, 16)}... stored`);
  const s2 = await load({ sha256: imageSha }, { expectedMeasurement: imageSha, targetKeyHex });
  eq(s2.measurement, imageSha, 'Load by sha256: measurement');
  ok(`Load by sha256: session ${s2.id}, report verified`);
  sessionForSpawn = s2;
  const lease2 = openLease(s2);
  const b = new Attach(sessionMd(s2), 'main2');
  eq((await entryOk(b, T.ECHO, [Buffer.from('uploaded')], 'T_ECHO (uploaded image)'))[0].toString(), 'uploaded', 'echo from uploaded image');
  eq((await entryOk(b, T.CONFIG, [], 'T_CONFIG (empty)')).length, 1, 'T_CONFIG item count');
  b.close();
  await b.expectEnd('half-close between calls', grpc.status.OK);
  const { err: dErr } = await unary(target, 'Destroy', {}, sessionMd(s2));
  if (dErr) fail(`Destroy: ${statusName(dErr.code)} "${dErr.details}"`);
  ok('Destroy (unary): OK');
  await expectRefused('Destroy again', target, 'Destroy', {}, sessionMd(s2), grpc.status.NOT_FOUND, E.ETARGET);
  await waitFor(() => lease2.status, 'the second lease ended by Destroy');
  eq(statusName(lease2.status.code), 'CANCELLED', 'lease after unary Destroy: status');
  ok(`lease stream ended by the unary Destroy: ${statusName(lease2.status.code)}, no moat-error`);

  // Upload refusals: a hash that does not match, a size that does not match; Load of an unknown hash.
  const bad = await upload(Buffer.from('not really an image'), Buffer.alloc(32), 19);
  check(bad.err, 'Upload with a wrong SHA-256 succeeded');
  ok(`Upload with a wrong SHA-256: ${statusName(bad.err.code)}, moat-error ${moatError(bad.err)}, "${bad.err.details}"`);
  eq(statusName(bad.err.code), 'FAILED_PRECONDITION', 'Upload with a wrong SHA-256: status');
  eq(moatError(bad.err), E.EMEASUREMENT, 'Upload with a wrong SHA-256: moat-error');
  const upErr = async (what, res, code, moatCode) => {
    if (!res.err) fail(`${what}: succeeded`);
    eq(statusName(res.err.code), code, `${what}: status`);
    eq(moatError(res.err), moatCode, `${what}: moat-error`);
    ok(`${what}: ${statusName(res.err.code)}, moat-error ${moatError(res.err)}, "${res.err.details}"`);
  };
  await upErr('Upload with total_size one more than sent', await upload(imageBytes, imageSha, imageBytes.length + 1), 'FAILED_PRECONDITION', E.EMEASUREMENT);
  await upErr('Upload with total_size one less than sent', await upload(imageBytes, imageSha, imageBytes.length - 1), 'RESOURCE_EXHAUSTED', E.ELIMIT);
  await upErr('Upload without a chunk', await upload(Buffer.alloc(0), null, 0, 0), 'FAILED_PRECONDITION', E.EPROTO);
  await upErr('Upload whose first chunk has a 5-byte sha256', await upload(imageBytes, imageSha.subarray(0, 5), imageBytes.length), 'FAILED_PRECONDITION', E.EPROTO);
  await upErr(`Upload in one ${MAX_MSG + 1000}-byte chunk (over max_message_bytes)`, await upload(crypto.randomBytes(MAX_MSG + 1000), imageSha, MAX_MSG + 1000, MAX_MSG + 1000), 'RESOURCE_EXHAUSTED', undefined);
  await expectRefused('Load of an unknown sha256', target, 'Load', { protocol_major: 1, sha256: Buffer.alloc(32, 7), nonce: crypto.randomBytes(32) }, null,
    grpc.status.NOT_FOUND, E.ENOENT);

  console.log(`PASS: ${checks} checks; ${exitLog.length} exit calls answered ` +
    `(${[...new Set(exitLog.map((x) => x.selector))].sort((x, y) => x - y).join(', ')})`);
  target.close();
  health.close();
}

function waitFor(cond, what, ms = 5000) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const tick = () => {
      if (cond()) return resolve();
      if (Date.now() - t0 > ms) fail(`timed out waiting for ${what}`);
      setTimeout(tick, 20);
    };
    tick();
  });
}

const overall = setTimeout(() => fail('the whole run took more than 120 s'), 120000);
overall.unref();
main().then(
  () => process.exit(0),
  (err) => fail(err && err.stack ? err.stack : String(err)),
);
