-- wrk script for bench/limiter_keys.sh: every request carries a rate-limit key that was
-- never sent before (x-caller: <LIMITER_PREFIX>-<thread>-<n>), and each thread stops once
-- LIMITER_PER_THREAD responses have come back and says so by creating the file
-- <LIMITER_DONE>-<thread> (wrk itself runs on until -d or SIGINT, which the driver sends). done() prints one JSON line with the
-- responses by kind: 200, 429 because the key's window of slots was full ("too many
-- active callers", the documented answer at the table's bound), 429 for any other reason
-- (a fresh key must never get one), anything else.

wrk.method = "GET"
wrk.path = os.getenv("LIMITER_PATH") or "/v1/models/sklearn-iris"
local prefix = os.getenv("LIMITER_PREFIX") or "k"
local per_thread = tonumber(os.getenv("LIMITER_PER_THREAD") or "1000")
local done_file = os.getenv("LIMITER_DONE")

local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

sent, ok, full, limited, other = 0, 0, 0, 0, 0

function request()
  sent = sent + 1
  return wrk.format(nil, nil, {["x-caller"] = prefix .. "-" .. id .. "-" .. sent})
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 429 and body:find("too many active callers", 1, true) then
    full = full + 1
  elseif status == 429 then
    limited = limited + 1
  else
    other = other + 1
  end
  if ok + full + limited + other == per_thread then
    if done_file then
      io.open(done_file .. "-" .. id, "w"):close()
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local t = {sent = 0, ok = 0, full = 0, limited = 0, other = 0}
  for _, thread in ipairs(threads) do
    for name in pairs(t) do
      t[name] = t[name] + thread:get(name)
    end
  end
  io.write(string.format(
    '{"sent":%d,"ok":%d,"full":%d,"limited":%d,"other":%d,"duration_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d}\n',
    t.sent, t.ok, t.full, t.limited, t.other, summary.duration,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
