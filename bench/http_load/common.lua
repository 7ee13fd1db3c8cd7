-- Shared by the wrk scripts: loads "token tenant project task" lines, paces requests when a
-- target rate is given, and prints the figures as one JSON line when done.
entries = {}
-- The rate comes from the environment, read when the script loads: wrk asks whether the script
-- has a delay() before any init() runs, and with one it sends every request through a timer,
-- even at a delay of 0. At full speed the script has none.
local rate = tonumber(os.getenv("WRK_RATE") or "0") or 0
local conns = tonumber(os.getenv("WRK_CONNS") or "1") or 1

function load_entries(path)
  for line in io.lines(path) do
    local token, tenant, project, task = line:match("(%S+) (%S+) (%S+) (%S+)")
    if token then
      table.insert(entries, { token = token, tenant = tenant, project = project, task = task })
    end
  end
end

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

function init(args)
  load_entries(args[1])
  -- A script whose requests do not change from one to the next formats each entry's once here,
  -- so wrk's own CPU per request (it shares the cores with the server) is a table lookup.
  if format_request then
    for _, e in ipairs(entries) do
      e.request = format_request(e)
    end
  end
  math.randomseed(os.time() * 1000 + (tid or 0))
end

if rate > 0 then
  -- Each connection waits this long between requests, so that all connections together make
  -- about `rate` requests a second (closed loop; the measured rate is reported).
  function delay()
    return 1000 * conns / rate
  end
end

function pick()
  return entries[math.random(#entries)]
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.2f, "rps": %.1f, "errors": %d, "non_2xx": %d, '
      .. '"p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, secs, summary.requests / secs, errors, summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
