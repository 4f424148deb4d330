-- wrk script for the edge benchmark: replays requests from a file, round-robin from a
-- per-thread random start, and counts X-Cache HIT/MISS/PASS across all threads.
-- Each line of the file: METHOD<TAB>PATH<TAB>TOKEN[<TAB>JSON BODY]
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  requests, hits, misses, passes, position = {}, 0, 0, 0, 0
  for line in io.lines(args[1]) do
    local method, path, token, body = line:match("^(%u+)\t([^\t]+)\t([^\t]+)\t?(.*)$")
    local headers = {["Authorization"] = "Token " .. token, ["Accept-Encoding"] = "gzip"}
    if body == "" then body = nil else headers["Content-Type"] = "application/json" end
    table.insert(requests, wrk.format(method, path, headers, body))
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  position = math.random(#requests)
end

function request()
  position = position % #requests + 1
  return requests[position]
end

function response(status, headers, body)
  local cache = headers["X-Cache"]
  if cache == "HIT" then hits = hits + 1 elseif cache == "MISS" then misses = misses + 1
  elseif cache == "PASS" then passes = passes + 1 end
end

function done(summary, latency, requests)
  local h, m, p = 0, 0, 0
  for _, thread in ipairs(threads) do
    h = h + thread:get("hits"); m = m + thread:get("misses"); p = p + thread:get("passes")
  end
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT rps=%.1f p50=%.2f p95=%.2f p99=%.2f errors=%d non2xx=%d requests=%d hits=%d misses=%d passes=%d\n",
    summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.requests, h, m, p))
end
