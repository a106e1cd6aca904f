// A minimal Proxy-Wasm host (ABI 0.2.1) in JavaScript, so a filter runs in Node.js's V8, the
// engine Envoy Gateway's Envoy runs Wasm filters in.
//
// This is a stand-in by necessity: no Envoy runs on this machine. It serves the calls one HTTP
// stream of an HTTP filter makes (header maps, buffers, properties, shared data with
// compare-and-swap, metrics, local replies, the `clear_route_cache` foreign function, logging)
// and WASI's handful, with the semantics REFERENCE.md §1 gives for Envoy (statuses, the pairs
// format, empty data as pointer 0 and length 0). Anything else answers UNIMPLEMENTED and is
// recorded, so a filter that reaches for it fails the bench instead of running a different path.
// It counts every host call by name: bench.mjs reports calls per request.

const OK = 0, NOT_FOUND = 1, BAD_ARGUMENT = 2, CAS_MISMATCH = 8, UNIMPLEMENTED = 12;
const REQUEST_HEADERS = 0, RESPONSE_HEADERS = 2;
const REQUEST_BODY = 0, RESPONSE_BODY = 1, VM_CONFIGURATION = 6, PLUGIN_CONFIGURATION = 7;
const LEVELS = ["trace", "debug", "info", "warn", "error", "critical"];

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class Host {
  constructor() {
    this.calls = new Map();
    this.shared = new Map(); // key -> { value: Uint8Array, cas }
    this.metrics = []; // { name, type, value }
    this.logs = [];
    this.unimplemented = [];
    this.pluginConfig = new Uint8Array();
    this.stream = null;
  }

  count(name) {
    this.calls.set(name, (this.calls.get(name) || 0) + 1);
  }

  async load(bytes, pluginConfig) {
    this.pluginConfig = encoder.encode(pluginConfig);
    const module = await WebAssembly.compile(bytes);
    const instance = await WebAssembly.instantiate(module, this.imports(module));
    this.exports = instance.exports;
    this.memory = instance.exports.memory;
    if (this.exports._initialize) this.exports._initialize();
    this.exports.proxy_on_context_create(1, 0);
    if (!this.exports.proxy_on_vm_start(1, 0)) throw new Error("on_vm_start failed");
    if (!this.exports.proxy_on_configure(1, this.pluginConfig.length)) {
      throw new Error(`on_configure rejected the plugin: ${this.logs.map((l) => l.message).join("; ")}`);
    }
    this.pluginConfig = new Uint8Array(); // readable only during on_configure, as in Envoy
    this.nextContext = 2;
  }

  // --- memory helpers ------------------------------------------------------------------------

  view() {
    if (this._view === undefined || this._view.buffer !== this.memory.buffer) {
      this._view = new DataView(this.memory.buffer);
      this._bytes = new Uint8Array(this.memory.buffer);
    }
    return this._view;
  }

  bytes(ptr, len) {
    this.view();
    return this._bytes.subarray(ptr, ptr + len);
  }

  string(ptr, len) {
    return decoder.decode(this.bytes(ptr, len));
  }

  // Copy `data` into memory the guest allocates, and write its address and size to the
  // return slots. Empty data is pointer 0, length 0, without an allocation.
  give(data, retPtr, retLen) {
    let ptr = 0;
    if (data.length > 0) {
      ptr = this.exports.proxy_on_memory_allocate(data.length);
      this.bytes(ptr, data.length).set(data);
    }
    const view = this.view();
    view.setUint32(retPtr, ptr, true);
    view.setUint32(retLen, data.length, true);
    return OK;
  }

  map(type) {
    if (!this.stream) return null;
    if (type === REQUEST_HEADERS) return this.stream.requestHeaders;
    if (type === RESPONSE_HEADERS) return this.stream.responseHeaders;
    return null;
  }

  buffer(type) {
    if (type === PLUGIN_CONFIGURATION) return this.pluginConfig;
    if (type === VM_CONFIGURATION) return new Uint8Array();
    if (!this.stream) return null;
    if (type === REQUEST_BODY) return this.stream.requestBody;
    if (type === RESPONSE_BODY) return this.stream.responseBody;
    return null;
  }

  // --- imports -------------------------------------------------------------------------------

  imports(module) {
    const host = this;
    const env = {
      proxy_log(level, ptr, len) {
        host.count("proxy_log");
        host.logs.push({ level: LEVELS[level] || String(level), message: host.string(ptr, len) });
        return OK;
      },
      proxy_get_log_level(ret) {
        host.count("proxy_get_log_level");
        host.view().setUint32(ret, 3, true);
        return OK;
      },
      proxy_get_current_time_nanoseconds(ret) {
        host.count("proxy_get_current_time_nanoseconds");
        host.view().setBigUint64(ret, BigInt(Date.now()) * 1000000n, true);
        return OK;
      },
      proxy_set_tick_period_milliseconds() {
        host.count("proxy_set_tick_period_milliseconds");
        return OK;
      },
      proxy_get_header_map_value(type, keyPtr, keyLen, retPtr, retLen) {
        host.count("proxy_get_header_map_value");
        const map = host.map(type);
        if (!map) return BAD_ARGUMENT;
        const key = host.string(keyPtr, keyLen);
        const pair = map.find((p) => p[0] === key);
        if (!pair) return NOT_FOUND;
        return host.give(pair[1], retPtr, retLen);
      },
      proxy_get_header_map_pairs(type, retPtr, retLen) {
        host.count("proxy_get_header_map_pairs");
        const map = host.map(type);
        if (!map) return BAD_ARGUMENT;
        return host.give(serializePairs(map), retPtr, retLen);
      },
      proxy_set_header_map_pairs(type, ptr, len) {
        host.count("proxy_set_header_map_pairs");
        const map = host.map(type);
        if (!map) return BAD_ARGUMENT;
        map.splice(0, map.length, ...parsePairs(host.bytes(ptr, len)));
        return OK;
      },
      proxy_add_header_map_value(type, kp, kl, vp, vl) {
        host.count("proxy_add_header_map_value");
        const map = host.map(type);
        if (!map) return BAD_ARGUMENT;
        map.push([host.string(kp, kl), host.bytes(vp, vl).slice()]);
        return OK;
      },
      proxy_replace_header_map_value(type, kp, kl, vp, vl) {
        host.count("proxy_replace_header_map_value");
        const map = host.map(type);
        if (!map) return BAD_ARGUMENT;
        const key = host.string(kp, kl);
        removeAll(map, key);
        map.push([key, host.bytes(vp, vl).slice()]);
        return OK;
      },
      proxy_remove_header_map_value(type, kp, kl) {
        host.count("proxy_remove_header_map_value");
        const map = host.map(type);
        if (!map) return BAD_ARGUMENT;
        removeAll(map, host.string(kp, kl));
        return OK;
      },
      proxy_get_buffer_bytes(type, start, max, retPtr, retLen) {
        host.count("proxy_get_buffer_bytes");
        const buffer = host.buffer(type);
        if (!buffer) return BAD_ARGUMENT;
        // `max` may be usize::MAX: clamp in 64-bit arithmetic (Numbers here).
        const from = Math.min(start >>> 0, buffer.length);
        const to = Math.min(from + (max >>> 0), buffer.length);
        return host.give(buffer.subarray(from, to), retPtr, retLen);
      },
      proxy_set_buffer_bytes(type, start, size, ptr, len) {
        host.count("proxy_set_buffer_bytes");
        const buffer = host.buffer(type);
        if (!buffer || !host.stream) return BAD_ARGUMENT;
        const data = host.bytes(ptr, len).slice();
        let next;
        if (start === 0) next = concat(data, buffer.subarray(Math.min(size, buffer.length)));
        else if (start >= buffer.length) next = concat(buffer, data);
        else return BAD_ARGUMENT;
        if (type === REQUEST_BODY) host.stream.requestBody = next;
        else host.stream.responseBody = next;
        return OK;
      },
      proxy_get_property(ptr, len, retPtr, retLen) {
        host.count("proxy_get_property");
        const path = host.string(ptr, len).split("\0").filter((s) => s).join(".");
        const value = host.property(path);
        if (value === undefined) return NOT_FOUND;
        return host.give(value, retPtr, retLen);
      },
      proxy_set_property(ptr, len, vp, vl) {
        host.count("proxy_set_property");
        if (!host.stream) return BAD_ARGUMENT;
        // Envoy keeps a Wasm filter's property as filter state `wasm.<path>`.
        host.stream.filterState.set(`wasm.${host.string(ptr, len)}`, host.bytes(vp, vl).slice());
        return OK;
      },
      proxy_get_shared_data(kp, kl, retPtr, retLen, retCas) {
        host.count("proxy_get_shared_data");
        const entry = host.shared.get(host.string(kp, kl));
        if (!entry) return NOT_FOUND;
        host.give(entry.value, retPtr, retLen);
        host.view().setUint32(retCas, entry.cas, true);
        return OK;
      },
      proxy_set_shared_data(kp, kl, vp, vl, cas) {
        host.count("proxy_set_shared_data");
        const key = host.string(kp, kl);
        const entry = host.shared.get(key);
        if (cas !== 0 && (!entry || entry.cas !== cas)) return CAS_MISMATCH;
        const next = entry ? (entry.cas % 0xffffffff) + 1 : 1;
        host.shared.set(key, { value: host.bytes(vp, vl).slice(), cas: next });
        return OK;
      },
      proxy_define_metric(type, ptr, len, ret) {
        host.count("proxy_define_metric");
        host.metrics.push({ name: host.string(ptr, len), type, value: 0n, count: 0 });
        host.view().setUint32(ret, host.metrics.length - 1, true);
        return OK;
      },
      proxy_increment_metric(id, offset) {
        host.count("proxy_increment_metric");
        const metric = host.metrics[id];
        if (!metric) return NOT_FOUND;
        metric.value += BigInt(offset);
        return OK;
      },
      proxy_record_metric(id, value) {
        host.count("proxy_record_metric");
        const metric = host.metrics[id];
        if (!metric) return NOT_FOUND;
        metric.value = metric.type === 2 ? metric.value : metric.value + BigInt(value);
        metric.count += 1;
        return OK;
      },
      proxy_send_local_response(status, dp, dl, bp, bl, hp, hl, grpc) {
        host.count("proxy_send_local_response");
        if (!host.stream) return BAD_ARGUMENT;
        host.stream.localReply = {
          status,
          body: host.string(bp, bl),
          headers: hl ? parsePairs(host.bytes(hp, hl)) : [],
        };
        return OK;
      },
      proxy_call_foreign_function(np, nl, ap, al, retPtr, retLen) {
        host.count("proxy_call_foreign_function");
        const name = host.string(np, nl);
        if (name !== "clear_route_cache") return NOT_FOUND;
        if (host.stream) host.stream.routeCacheCleared = true;
        return host.give(new Uint8Array(), retPtr, retLen);
      },
      proxy_continue_stream() {
        host.count("proxy_continue_stream");
        return OK;
      },
    };
    const wasi = {
      fd_write(fd, iovs, iovsLen, retWritten) {
        host.count("fd_write");
        const view = host.view();
        let written = 0;
        for (let i = 0; i < iovsLen; i++) {
          const ptr = view.getUint32(iovs + i * 8, true);
          const len = view.getUint32(iovs + i * 8 + 4, true);
          host.logs.push({ level: fd === 2 ? "error" : "info", message: host.string(ptr, len) });
          written += len;
        }
        view.setUint32(retWritten, written, true);
        return 0;
      },
      random_get(ptr, len) {
        host.count("random_get");
        crypto.getRandomValues(host.bytes(ptr, Math.min(len, 65536)));
        return 0;
      },
      environ_sizes_get(retCount, retSize) {
        host.count("environ_sizes_get");
        host.view().setUint32(retCount, 0, true);
        host.view().setUint32(retSize, 0, true);
        return 0;
      },
      environ_get() {
        host.count("environ_get");
        return 0;
      },
      clock_time_get(id, precision, ret) {
        host.count("clock_time_get");
        host.view().setBigUint64(ret, BigInt(Date.now()) * 1000000n, true);
        return 0;
      },
      proc_exit(code) {
        throw new Error(`proc_exit(${code})`);
      },
    };
    // Every other import the module names answers UNIMPLEMENTED, recorded.
    const imports = { env: {}, wasi_snapshot_preview1: {} };
    for (const { module: space, name, kind } of WebAssembly.Module.imports(module)) {
      if (kind !== "function") continue;
      const table = space === "env" ? env : wasi;
      imports[space] ??= {};
      imports[space][name] = table[name] ?? (() => {
        host.count(name);
        host.unimplemented.push(name);
        return space === "env" ? UNIMPLEMENTED : 52; // WASI ENOSYS
      });
    }
    return imports;
  }

  property(path) {
    if (path === "source.address") return encoder.encode("127.0.0.1:40000");
    if (path === "destination.address") return encoder.encode("127.0.0.1:18080");
    return undefined;
  }

  // --- one stream, in Envoy's callback order -----------------------------------------------

  // Runs one request through the filter and returns what became of it. `request` and
  // `response` are { headers: [[name, value bytes]...], body: Uint8Array }; header values
  // (and filter state) are bytes, as Envoy holds them.
  exchange(request, response) {
    const id = this.nextContext++;
    const x = this.exports;
    this.stream = {
      requestHeaders: request.headers.map((p) => [p[0], p[1]]),
      requestBody: request.body,
      responseHeaders: null,
      responseBody: new Uint8Array(),
      filterState: new Map(),
      localReply: null,
      routeCacheCleared: false,
    };
    const stream = this.stream;
    x.proxy_on_context_create(id, 1);
    const last = request.body.length === 0;
    x.proxy_on_request_headers(id, stream.requestHeaders.length, last ? 1 : 0);
    // A Pause from the headers is read as Envoy reads it under `allow_on_headers_stop_iteration`
    // (the plugin's holdHeaders): the body still comes; plans that don't hold never pause here.
    if (!stream.localReply && !last) x.proxy_on_request_body(id, request.body.length, 1);
    let forwarded = null;
    if (!stream.localReply) {
      forwarded = stream.requestHeaders;
      stream.responseHeaders = response.headers.map((p) => [p[0], p[1]]);
      stream.responseBody = response.body;
      x.proxy_on_response_headers(id, stream.responseHeaders.length, 0);
      x.proxy_on_response_body(id, response.body.length, 1);
    }
    x.proxy_on_log(id);
    x.proxy_on_done(id);
    x.proxy_on_delete(id);
    this.stream = null;
    return { forwarded, reply: stream.localReply, filterState: stream.filterState };
  }
}

function removeAll(map, key) {
  for (let i = map.length - 1; i >= 0; i--) if (map[i][0] === key) map.splice(i, 1);
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

// The pairs wire format: u32 count, count x (u32 key length, u32 value length), then
// `key\0value\0` for each pair.
const names = new Map(); // header name -> its bytes: a map's names repeat on every request

function nameBytes(name) {
  let bytes = names.get(name);
  if (bytes === undefined) {
    bytes = encoder.encode(name);
    names.set(name, bytes);
  }
  return bytes;
}

function serializePairs(pairs) {
  const encoded = pairs.map(([k, v]) => [nameBytes(k), v]);
  let size = 4 + encoded.length * 8;
  for (const [k, v] of encoded) size += k.length + v.length + 2;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, encoded.length, true);
  let at = 4 + encoded.length * 8;
  encoded.forEach(([k, v], i) => {
    view.setUint32(4 + i * 8, k.length, true);
    view.setUint32(8 + i * 8, v.length, true);
    out.set(k, at);
    at += k.length + 1;
    out.set(v, at);
    at += v.length + 1;
  });
  return out;
}

function parsePairs(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(0, true);
  const pairs = [];
  let at = 4 + count * 8;
  for (let i = 0; i < count; i++) {
    const kl = view.getUint32(4 + i * 8, true);
    const vl = view.getUint32(8 + i * 8, true);
    const key = decoder.decode(bytes.subarray(at, at + kl));
    at += kl + 1;
    const value = bytes.slice(at, at + vl);
    at += vl + 1;
    pairs.push([key, value]);
  }
  return pairs;
}
