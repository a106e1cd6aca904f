-- wrk script of the scale benchmark (bench/scale/scale.py): a KServe V1 predict like
-- bench/request.lua's, where each request may spread over many models, callers and tokens.
-- Environment (each optional):
--   SCALE_MODELS        models named model-0000 … to cycle through (default: sklearn-iris only)
--   SCALE_CALLERS       distinct x-caller values (the policy's rate-limit key) to cycle through
--   SCALE_CALLER_START  first caller number of this run, so successive runs send new callers
--   SCALE_TOKENS        file of bearer tokens, one a line, to cycle through (else BENCH_TOKEN)
--   SCALE_BODY          file holding the request body (else one instance)
-- Each thread starts at its own offset and steps by the thread count, so the threads of one run
-- send disjoint callers and tokens. done() prints bench/request.lua's JSON summary.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if line ~= "" then table.insert(lines, line) end
  end
  return lines
end

local id, nthreads, models, callers, caller_start, tokens, body, i

function init(args)
  id = tonumber(wrk.thread:get("id")) or 0
  nthreads = tonumber(os.getenv("SCALE_THREADS") or "2")
  models = tonumber(os.getenv("SCALE_MODELS") or "0")
  callers = tonumber(os.getenv("SCALE_CALLERS") or "0")
  caller_start = tonumber(os.getenv("SCALE_CALLER_START") or "0")
  local token_file = os.getenv("SCALE_TOKENS")
  if token_file and token_file ~= "" then
    tokens = read_lines(token_file)
  else
    tokens = { os.getenv("BENCH_TOKEN") }
  end
  local body_file = os.getenv("SCALE_BODY")
  if body_file and body_file ~= "" then
    local f = assert(io.open(body_file, "rb"))
    body = f:read("*a")
    f:close()
  else
    body = '{"instances":[[6.8,2.8,4.8,1.4]]}'
  end
  i = id
end

-- Requests already formatted, when the run has few distinct ones (a large body is then not
-- copied for every request, which would load the client, not the proxy).
local memo, memo_size = {}, 0

function request()
  local n = i
  i = i + nthreads
  local m = models > 0 and n % models or -1
  local c = callers > 0 and (caller_start + n) % callers or -1
  local t = (n % #tokens) + 1
  local key = m .. "/" .. c .. "/" .. t
  local cached = memo[key]
  if cached then return cached end
  local model = m >= 0 and string.format("model-%04d", m) or "sklearn-iris"
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[t],
  }
  if c >= 0 then headers["x-caller"] = "caller-" .. c end
  local req = wrk.format("POST", "/v1/models/" .. model .. ":predict", headers, body)
  if memo_size < 64 then
    memo[key] = req
    memo_size = memo_size + 1
  end
  return req
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
