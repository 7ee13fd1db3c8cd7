package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")
function format_request(e)
  return wrk.format("GET", "/__bench/reference/" .. e.tenant .. "/" .. e.task)
end
function request()
  return pick().request
end
