-- The peers benchmark's wrk script (a copy of bench/wrk.lua, so that bench/peers stands
-- alone): the method comes from BENCH_METHOD, cookies from wrk's -H flags. done() prints
-- one machine-readable line so that run.py need not parse wrk's human output.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
if wrk.method == "POST" then
  wrk.body = ""  -- sends Content-Length: 0, as a browser's empty POST does
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
