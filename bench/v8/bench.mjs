// Time per request of a Proxy-Wasm filter in Node.js's V8 (the engine Envoy Gateway's Envoy
// runs Wasm in), through the ABI shim of shim.mjs. Reads the plan bench/filter_cost.py writes
// and prints one JSON line per case: { runtime: "v8", case, requests, ns_per_request,
// host_calls, calls: { name: per request } }.
//
//   node --no-liftoff bench/v8/bench.mjs PLAN.json
//
// --no-liftoff: Envoy's V8 compiles every Wasm function with TurboFan up front, never with the
// Liftoff baseline compiler (proxy-wasm-cpp-host src/v8/v8.cc, `engine()`: `v8_flags.liftoff =
// false`), so a request is timed as Envoy runs it, not before V8 tiers the code up.
//
// Every request's outcome is checked against the plan (forwarded, no local reply, the headers
// and filter state it must carry) and the filter's request counter must have counted them all,
// so a shim that broke the filter's path cannot report a fast wrong answer.

import { readFileSync } from "node:fs";
import { Host } from "./shim.mjs";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));
const WARMUP = 300;
const ROUNDS = 5;

function prepare(message) {
  return { headers: message.headers.map(([k, v]) => [k, encoder.encode(v)]), body: encoder.encode(message.body) };
}

function check(name, outcome, expect) {
  if (outcome.reply) {
    throw new Error(`${name}: answered ${outcome.reply.status} ${outcome.reply.body}, expected a forward`);
  }
  for (const [header, value] of Object.entries(expect.headers)) {
    const found = outcome.forwarded.find((p) => p[0] === header);
    const text = found && decoder.decode(found[1]);
    if (text !== value) {
      throw new Error(`${name}: forwarded ${header}=${text}, expected ${value}`);
    }
  }
  for (const [key, value] of Object.entries(expect.filterState)) {
    const state = outcome.filterState.get(key);
    const text = state && decoder.decode(state);
    if (text !== value) {
      throw new Error(`${name}: filter state ${key}=${text}, expected ${value}`);
    }
  }
}

// The counter modelgate increments in on_log for a request decided `allowed` (the floor has none).
function allowedCount(host, model) {
  const metric = host.metrics.find((m) => m.name === `modelgate.requests.model.${model}.outcome.allowed`);
  return metric ? Number(metric.value) : null;
}

const hosts = new Map();
for (const [name, plugin] of Object.entries(plan.plugins)) {
  const host = new Host();
  await host.load(readFileSync(plugin.wasm), plugin.config);
  hosts.set(name, host);
}

for (const c of plan.cases) {
  const host = hosts.get(c.plugin);
  const requests = c.requests.map(prepare);
  const response = prepare(c.response);
  const model = c.expect.filterState["wasm.modelgate.model"];
  const n = plan.requests;
  // Distinct requests (a new token each) are each sent once.
  let next = 0;
  const pick = () => requests[c.distinct ? next++ : 0];
  // (A distinct case warms up on its first request, which is then cached, and times the rest.)
  for (let i = 0; i < WARMUP; i++) check(c.name, host.exchange(requests[0], response), c.expect);
  if (c.distinct) next = 1;
  const before = model ? allowedCount(host, model) : 0;
  const callsBefore = new Map(host.calls);
  const count = c.distinct ? Math.min(n, requests.length - 1) : n;
  // Timed in ROUNDS slices; the median slice is the figure (this machine is shared).
  const outcomes = new Array(count);
  const slices = [];
  const per = Math.ceil(count / ROUNDS);
  for (let from = 0; from < count; from += per) {
    const to = Math.min(from + per, count);
    const start = process.hrtime.bigint();
    for (let i = from; i < to; i++) outcomes[i] = host.exchange(pick(), response);
    slices.push(Number(process.hrtime.bigint() - start) / (to - from));
  }
  slices.sort((a, b) => a - b);
  for (const outcome of outcomes) check(c.name, outcome, c.expect);
  if (model && allowedCount(host, model) - before !== count) {
    throw new Error(`${c.name}: the filter counted ${allowedCount(host, model) - before} allowed requests of ${count}`);
  }
  if (host.unimplemented.length) throw new Error(`${c.name}: unimplemented host calls ${host.unimplemented}`);
  const errors = host.logs.filter((l) => l.level === "error" || l.level === "critical");
  if (errors.length) throw new Error(`${c.name}: the filter logged ${errors.map((l) => l.message).join("; ")}`);
  const calls = {};
  let total = 0;
  for (const [name, value] of host.calls) {
    const delta = value - (callsBefore.get(name) || 0);
    if (delta) {
      calls[name] = delta / count;
      total += delta;
    }
  }
  console.log(JSON.stringify({
    runtime: "v8",
    engine: `node ${process.version}`,
    case: c.name,
    requests: count,
    ns_per_request: slices[Math.floor(slices.length / 2)],
    host_calls: total / count,
    calls,
  }));
}
