-- wrk script: every case gets the same request, a KServe V1 predict with one
-- instance and a bearer token, so peers and modelgate do the same work on the
-- wire. The token comes from the environment (minted once per run by keys.py).
-- done() prints one JSON line that bench/run.sh tags and report.py parses.

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/models/sklearn-iris:predict"
wrk.body = '{"instances":[[6.8,2.8,4.8,1.4]]}'
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
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
