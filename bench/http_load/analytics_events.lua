-- POST /analytics/events with 1,000-event bodies (one per line of the file in ANALYTICS_BODIES,
-- written by analytics_bodies.py), over the entries' tenants at random.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")
local bodies = {}
for line in io.lines(os.getenv("ANALYTICS_BODIES")) do
  table.insert(bodies, line)
end
function request()
  local e = pick()
  return wrk.format("POST", "/analytics/events",
    { ["Authorization"] = "Bearer " .. e.token, ["Content-Type"] = "application/json" },
    bodies[math.random(#bodies)])
end
