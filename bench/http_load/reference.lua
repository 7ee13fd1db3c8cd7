package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")
function request()
  local e = pick()
  return wrk.format("GET", "/__bench/reference/" .. e.tenant .. "/" .. e.task)
end
