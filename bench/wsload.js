// Load generator for the arqond bench: Node's `ws` is fast enough that the client side is not
// what limits a fan-out measurement on a 2-core machine. A nats:// URL drives nats-server the
// same way with Node's NATS client (`nats`): same frames, same processes, same closed loop, so
// a row for NATS compares the servers, not the client libraries.
//
//   node wsload.js sub URL CONNECTIONS EXPECT [JOIN]  subscribers; exit when each connection has
//                                                    EXPECT bench frames (or on idle timeout)
//   node wsload.js pub URL TOTAL RATE WINDOW SIZE    one publisher plus one probe subscriber;
//                                                    RATE 0 = as fast as the probe keeps up,
//                                                    never more than WINDOW frames ahead of it
//   node wsload.js idle URL CONNECTIONS              open CONNECTIONS, print "ready", on a stdin
//                                                    line send one frame and wait for all copies
//
// A bench frame is an ArqonBus envelope whose payload carries {seq, t} with t the send time in
// CLOCK_MONOTONIC nanoseconds (process.hrtime and Python's time.monotonic_ns share that clock).
// Every mode prints one JSON line with its results and its own CPU time on stdout.
// BENCH_WARMUP=N: frames with seq < N are delivered and counted but give no latency sample (the
// first second of a run measures JIT compilation and cold caches on every side, not the server).
"use strict";
const WebSocket = require("ws");

const NATS_SUBJECT = "bench.fanout";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const IDLE_TIMEOUT_MS = Number(process.env.BENCH_IDLE_TIMEOUT_MS || 10000);
const WARMUP = Number(process.env.BENCH_WARMUP || 0);
const MAX_LATENCIES = 100000;  // samples kept per process; evenly thinned beyond that
const CONNECT_BATCH = 200;     // handshakes in flight at once, within a listen backlog

const now = () => Number(process.hrtime.bigint());

function cpuSeconds() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

// CPU spent before the measurement (start-up, handshakes) is not load-generation work.
let cpuBaseline = 0;
const startMeasuring = () => { cpuBaseline = cpuSeconds(); };

function finish(result) {
  result.cpu_s = cpuSeconds() - cpuBaseline;
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
}

function benchPayload(frame) {
  // Welcome frames and acks carry no "seq". Bench frames are read without a full JSON.parse:
  // at 100,000 frames/s the parse would be a large share of the load generator's CPU.
  const at = frame.indexOf('"seq":');
  if (at < 0) return null;
  const t = frame.indexOf('"t":');
  if (t < 0) return null;
  return {seq: parseInt(frame.slice(at + 6, at + 26), 10), t: parseInt(frame.slice(t + 4, t + 30), 10)};
}

function makeFrame(seq, size, room, channel, bare) {
  const env = {type: "message", room, channel, payload: {seq, t: now(), pad: ""}};
  const base = JSON.stringify(env.payload).length;
  env.payload.pad = "x".repeat(Math.max(0, size - base));
  // NATS routes by subject: its frame is the payload alone.
  return JSON.stringify(bare ? env.payload : env);
}

const isNats = (url) => url.startsWith("nats://");

async function openAll(url, count, onMessage) {
  return isNats(url) ? openNats(url, count, onMessage) : openWebSockets(url, count, onMessage);
}

// Each NATS connection stands where a WebSocket would: subscribed to the bench subject, and
// `send` publishes on it. noEcho: a publisher does not get its own frames back (arqond does not
// send a client its own message either).
async function openNats(url, count, onMessage) {
  const {connect} = require("nats");
  const sockets = [];
  let failed = 0;
  for (let i = 0; i < count; i++) {
    try {
      const nc = await connect({servers: url, noEcho: true});
      const conn = {
        send: (text) => nc.publish(NATS_SUBJECT, encoder.encode(text)),
        on: (event, fn) => { if (event === "close") nc.closed().then(fn); },
        flush: () => nc.flush(),
      };
      nc.subscribe(NATS_SUBJECT, {callback: (err, msg) => {
        if (!err) onMessage(conn, decoder.decode(msg.data));
      }});
      sockets.push(conn);
    } catch (err) {
      failed++;
    }
  }
  for (const conn of sockets) await conn.flush();  // subscriptions in place before "ready"
  return {sockets, failed};
}

async function openWebSockets(url, count, onMessage) {
  const sockets = [];
  let failed = 0;
  for (let start = 0; start < count; start += CONNECT_BATCH) {
    const batch = [];
    for (let i = start; i < Math.min(count, start + CONNECT_BATCH); i++) {
      batch.push(new Promise((resolve) => {
        const ws = new WebSocket(url, {perMessageDeflate: false, skipUTF8Validation: true});
        ws.on("open", () => { sockets.push(ws); resolve(); });
        ws.on("error", () => { failed++; resolve(); });
        ws.on("message", (data) => onMessage(ws, data.toString()));
      }));
    }
    await Promise.all(batch);
  }
  return {sockets, failed};
}

function joinCommand(target) {
  const [room, channel] = target.split(":");
  return JSON.stringify({type: "command", command: "join_channel", args: {room, channel}});
}

async function sub(url, count, expect, join) {
  const latencies = [];
  let received = 0, first = 0, last = 0, seen = 0, done = 0, closed = 0;
  const perSocket = new Map();
  const total = count * expect;
  const stride = Math.max(1, Math.ceil(total / MAX_LATENCIES));
  let idleTimer = null;
  const report = () => finish({received, first_ns: first, last_ns: last, latencies_ns: latencies,
                               connections: count, closed, failed: opened.failed});
  const armIdle = () => {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(report, IDLE_TIMEOUT_MS);
  };
  const onMessage = (ws, frame) => {
    const payload = benchPayload(frame);
    if (payload === null) return;
    const t = now();
    if (received === 0) first = t;
    last = t;
    received++;
    if (payload.seq >= WARMUP && seen++ % stride === 0) latencies.push(t - payload.t);
    const mine = (perSocket.get(ws) || 0) + 1;
    perSocket.set(ws, mine);
    if (mine === expect && ++done === count) { clearTimeout(idleTimer); report(); return; }
    if (received % 1000 === 0) armIdle();
  };
  const opened = await openAll(url, count, onMessage);
  for (const ws of opened.sockets) ws.on("close", () => closed++);
  if (join && !isNats(url)) {
    for (const ws of opened.sockets) ws.send(joinCommand(join));
    await new Promise((resolve) => setTimeout(resolve, 300));  // let the joins land first
  }
  startMeasuring();
  console.log("ready");
  armIdle();
}

async function pub(url, total, rate, window, size, target) {
  const [room, channel] = (target || "science:general").split(":");
  let probed = 0, sent = 0, started = 0;
  let pump = null, probe = null;
  const opened = await openAll(url, 2, (ws, frame) => {
    if (ws !== probe || benchPayload(frame) === null) return;
    probed++;
    if (probed === total) {
      finish({sent, probed, started_ns: started, ended_ns: now()});
    } else if (rate === 0) {
      pump();
    }
  });
  const publisher = opened.sockets[0];
  probe = opened.sockets[1];
  const bare = isNats(url);
  if (join && !bare) probe.send(joinCommand(target));
  await new Promise((resolve) => setTimeout(resolve, 200));
  startMeasuring();
  started = now();
  if (rate === 0) {
    pump = () => {
      while (sent < total && sent - probed < window) {
        publisher.send(makeFrame(sent++, size, room, channel, bare));
      }
    };
    pump();
  } else {
    // Paced: catch up with the schedule every millisecond, never in bursts beyond it.
    const interval = 1e9 / rate;
    const tick = () => {
      const due = Math.min(total, Math.floor((now() - started) / interval) + 1);
      while (sent < due) publisher.send(makeFrame(sent++, size, room, channel, bare));
      if (sent < total) setTimeout(tick, 1);
    };
    tick();
  }
  setTimeout(() => finish({sent, probed, started_ns: started, ended_ns: now(), timeout: true}),
             Math.max(60000, (total / Math.max(rate, 1)) * 2000));
}

async function idle(url, count) {
  let received = 0, sender = null;
  const onMessage = (ws, frame) => {
    if (ws === sender || benchPayload(frame) === null) return;
    if (++received === opened.sockets.length - 1) report();
  };
  const opened = await openAll(url, count, onMessage);
  let closed = 0;
  for (const ws of opened.sockets) ws.on("close", () => closed++);
  // A connection the server closes right after opening it (a quota) is not connected.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const report = () => finish({connected: opened.sockets.length - closed, failed: opened.failed,
                               received, closed});
  console.log(JSON.stringify({ready: opened.sockets.length - closed, failed: opened.failed,
                              closed}));
  process.stdin.once("data", () => {
    sender = opened.sockets[0];
    sender.send(makeFrame(0, 200, "science", "general"));
    setTimeout(report, IDLE_TIMEOUT_MS);
  });
}

const [mode, url, ...rest] = process.argv.slice(2);
const join = process.env.BENCH_JOIN || "";
if (mode === "sub") sub(url, Number(rest[0]), Number(rest[1]), rest[2] || join);
else if (mode === "pub") pub(url, Number(rest[0]), Number(rest[1]), Number(rest[2]), Number(rest[3]), join);
else if (mode === "idle") idle(url, Number(rest[0]));
else { console.error("usage: wsload.js sub|pub|idle URL ..."); process.exit(2); }
