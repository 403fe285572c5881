-- wrk script for the reconfiguration runs: counts responses by status and body (the echo
-- backends answer their name, so "200 b2" = answered by b2), then prints one line
-- "JSON {...}" like stats.lua plus "responses": {"<status> <body>": count}.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  local b = (body or ""):sub(1, 60):gsub("[^%w%s%.%:%-_/]", ""):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  local k = tostring(status) .. " " .. b
  counts[k] = (counts[k] or 0) + 1
end

function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts") or {}
    for k, v in pairs(c) do agg[k] = (agg[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(agg) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d},' ..
    '"responses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, table.concat(parts, ",")))
end
