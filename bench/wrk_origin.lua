-- wrk script for bench/origin.py. Environment: BENCH_METHOD (GET | POST), BENCH_BODY,
-- BENCH_TOKEN (sends Authorization when set), BENCH_KEY_PREFIX (a fresh
-- Idempotency-Key per request when set), BENCH_DELAY_MS (pause per connection between
-- requests: paced load below saturation), BENCH_PATHS and BENCH_BODIES (newline-separated,
-- as many of each: requests go round-robin over these paths with the matching body, e.g.
-- creates spread over many orgs). Prints one RESULT line (JSON).
local prefix = os.getenv("BENCH_KEY_PREFIX") or ""
local paths, bodies = {}, {}
for line in string.gmatch(os.getenv("BENCH_PATHS") or "", "[^\n]+") do paths[#paths + 1] = line end
for line in string.gmatch(os.getenv("BENCH_BODIES") or "", "[^\n]+") do bodies[#bodies + 1] = line end
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local token = os.getenv("BENCH_TOKEN") or ""
local thread_count = 0
local counter = 0
thread_id = 0  -- set per thread by setup() (a global: thread:set writes globals)

wrk.method = os.getenv("BENCH_METHOD") or "GET"
if wrk.method == "POST" then
  wrk.body = os.getenv("BENCH_BODY")
  wrk.headers["Content-Type"] = "application/json"
end
if token ~= "" then
  wrk.headers["Authorization"] = "Token " .. token
end

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

function request()
  counter = counter + 1
  if prefix ~= "" then
    wrk.headers["Idempotency-Key"] = prefix .. "-" .. thread_id .. "-" .. counter
  end
  if #paths > 0 then
    local i = (counter * 7 + thread_id) % #paths + 1  -- threads interleave over the targets
    return wrk.format(nil, paths[i], nil, bodies[i])
  end
  return wrk.format()
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p95_ms": %.2f, "p99_ms": %.2f, ' ..
    '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
