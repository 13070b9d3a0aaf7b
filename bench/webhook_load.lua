-- wrk script: POST AdmissionReviews to the webhook at a paced rate, count status classes.
--
-- Environment:
--   BODY_FILES   comma-separated JSON files; requests rotate through them (e.g. an allowed and a denied review)
--   RATE         target requests per second over all threads (0: as fast as the connections allow)
--   WRK_THREADS  the -t given to wrk, so each thread paces RATE / WRK_THREADS
-- Prints one line: RESULT {json} with counts, socket errors and latency percentiles in microseconds.

local bodies = {}
for path in string.gmatch(os.getenv("BODY_FILES") or "", "[^,]+") do
  local f = assert(io.open(path, "rb"))
  table.insert(bodies, f:read("*a"))
  f:close()
end
assert(#bodies > 0, "BODY_FILES names no file")

local rate = tonumber(os.getenv("RATE") or "0")
local wrk_threads = tonumber(os.getenv("WRK_THREADS") or "1")
local gap_ms = rate > 0 and (1000 * wrk_threads / rate) or 0
local threads = {}
local counter = 0
local next_slot = nil

-- wall clock in ms through LuaJIT's FFI (wrk's Lua has no sub-second clock of its own)
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } kubepci_timespec;
  int clock_gettime(int clk_id, kubepci_timespec *tp);
]]
local ts = ffi.new("kubepci_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  ok, client_errors, server_errors = 0, 0, 0
  math.randomseed(os.time() + (id or 0) * 7919)
end

function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

-- Open-loop pacing: each thread owns a Poisson schedule of send slots; a connection that becomes free
-- takes the next unclaimed slot and waits for it, or sends at once when the schedule is behind. A slow
-- response therefore does not lower the offered rate, as a fixed pause after each response would.
function delay()
  if gap_ms <= 0 then return 0 end
  local now = now_ms()
  if next_slot == nil or next_slot < now - 1000 then next_slot = now end  -- never bank more than 1 s
  next_slot = next_slot - gap_ms * math.log(1 - math.random())
  local wait = next_slot - now
  if wait <= 0 then return 0 end
  return math.floor(wait + 0.5)
end

function response(status, headers, body)
  if status >= 500 then server_errors = server_errors + 1
  elseif status >= 400 then client_errors = client_errors + 1
  else ok = ok + 1 end
end

function done(summary, latency, requests)
  local s2, s4, s5 = 0, 0, 0
  for _, t in ipairs(threads) do
    s2 = s2 + t:get("ok"); s4 = s4 + t:get("client_errors"); s5 = s5 + t:get("server_errors")
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"ok":%d,"status_4xx":%d,"status_5xx":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, s2, s4, s5, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
