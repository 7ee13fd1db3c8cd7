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

-- How a paced run spaces its requests (WRK_PACE):
--   even (the default): the thread hands out send times one `1000 / rate` ms apart, in the order
--     its connections become free, so requests leave at an even `rate` whatever the latency, as
--     wrk2's constant-throughput mode sends them. A connection free after its slot has passed
--     sends at once and the missed slot is not made up, so a server that falls behind shows as a
--     lower measured rate, not as a burst.
--   after_response: each connection waits `1000 * conns / rate` ms after its own response. Every
--     connection's first wait starts when it connects, all in the same millisecond, so the
--     connections send in waves of up to `conns` requests at once, and the rate falls short by
--     the latency. The scripts paced this way until 2026-12-07; kept to compare with.
-- Both pace one wrk thread's connections: the paced runs use one (-t1).
local pace = os.getenv("WRK_PACE") or "even"
if rate > 0 and pace == "after_response" then
  function delay()
    return 1000 * conns / rate
  end
elseif rate > 0 then
  -- LuaJIT's ffi is wrk's only wall clock finer than a second.
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_usec; } pace_timeval;
    int gettimeofday(pace_timeval *tv, void *tz);
  ]])
  local tv = ffi.new("pace_timeval")
  local function now_ms()
    ffi.C.gettimeofday(tv, nil)
    return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
  end
  local step = 1000 / rate
  local next_slot = nil
  function delay()
    local now = now_ms()
    if next_slot == nil or next_slot < now then
      next_slot = now
    end
    local wait = next_slot - now
    next_slot = next_slot + step
    return wait
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
