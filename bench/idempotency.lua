-- wrk script for bench/idempotency.py. Environment: BENCH_TOKEN, BENCH_BODY, BENCH_MODE
-- (none | fresh | replay), BENCH_KEY_PREFIX, BENCH_REPLAY_KEYS.
local mode = os.getenv("BENCH_MODE")
local prefix = os.getenv("BENCH_KEY_PREFIX") or "bench"
local replay_keys = tonumber(os.getenv("BENCH_REPLAY_KEYS") or "100")
local thread_count = 0
local counter = 0
thread_id = 0  -- set per thread by setup() (a global: thread:set writes globals)

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Token " .. os.getenv("BENCH_TOKEN")

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

function request()
  counter = counter + 1
  if mode == "fresh" then
    wrk.headers["Idempotency-Key"] = prefix .. "-" .. thread_id .. "-" .. counter
  elseif mode == "replay" then
    wrk.headers["Idempotency-Key"] = prefix .. "-" .. (counter % replay_keys)
  end
  return wrk.format()
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p95_ms": %.2f, "p99_ms": %.2f, ' ..
    '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, seconds, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
