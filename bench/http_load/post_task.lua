package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")
local n = 0
function request()
  local e = pick()
  n = n + 1
  local body = string.format('{"project_id":"%s","title":"load %d-%d-%d"}', e.project, tid or 0, n,
    math.random(1, 1000000000))
  return wrk.format("POST", "/tasks",
    { ["Authorization"] = "Bearer " .. e.token, ["Content-Type"] = "application/json" }, body)
end
